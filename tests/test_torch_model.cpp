// tools/torch_model.py, qtlab's models in PyTorch (issue 16), run as a researcher would: tiny BERT,
// OPT and ViT models trained by `qtlab pretrain` with every attention variant (vanilla, clipped
// softmax with gamma / zeta, the alpha form, each gate kind of model.gate) load into PyTorch and
// give qtlab's logits on the same batch (`--check`, via `qtlab logits`). The truth is independent
// of qtlab's C++: PyTorch's own LayerNorm, softmax, GEMMs and autograd-free forward in float64.
// The check is shown to be sensitive (one weight changed in the PyTorch copy of each model makes it
// fail), and bad input fails with a message naming the problem.
//
// Needs Debian's python3-torch (`make test` installs it through tools/install_deps.sh
// --with-torch); where it is missing the cases skip with a message.
#include <doctest/doctest.h>

#include <algorithm>

#include <filesystem>
#include <fstream>
#include <map>
#include <nlohmann/json.hpp>
#include <sstream>
#include <string>
#include <vector>

#include "tensor/safetensors.h"
#include "tests/test_util.h"

namespace {

const char* kPython = "/usr/bin/python3";

bool torch_available() {
  static const bool available =
      qt::test::run_command(std::string(kPython) + " -c 'import torch'").status == 0;
  return available;
}

#define SKIP_WITHOUT_TORCH()                                                         \
  if (!torch_available()) {                                                          \
    MESSAGE(                                                                         \
        "skipped: /usr/bin/python3 cannot import torch (install python3-torch with " \
        "tools/install_deps.sh --with-torch)");                                      \
    return;                                                                          \
  }

std::string qtlab(const std::string& arguments) {
  return std::string(QTLAB_BINARY) + " " + arguments;
}

// torch_model.py with qtlab's binary and one thread; T = 12 of the configured 16 tokens, so that
// the alpha form's gamma = -alpha / 16 differs from -alpha / T.
std::string torch_model(const std::string& arguments) {
  return std::string(kPython) + " " + QTLAB_SOURCE_DIR + "/tools/torch_model.py --qtlab " +
         QTLAB_BINARY + " --threads 1 --tokens 12 " + arguments;
}

// tests/test_quantize_command.cpp's tiny run: 1 layer x 32, 2 heads (d_h = 16), synthetic data,
// 10 steps.
const char* kTiny =
    "--dataset synthetic --threads 1 --steps 10 --set model.layers=1 --set model.hidden=32 "
    "--set model.heads=2 --set model.ffn=64 --set model.vocab_size=64 --set model.max_length=16 "
    "--set model.image_size=16 --set model.patch_size=4 --set train.batch_size=8 --set "
    "train.eval_batches=1 --set train.eval_every=1000 --quiet ";

struct Variant {
  std::string name;      // family-variant
  std::string preset;    // bert-mini, opt-mini, vit-tiny
  std::string settings;  // extra --set flags
  std::string corrupt;   // the layer-0 tensor, relative to "attention.", that the negative check
                         // changes: one the variant's forward depends on whatever the data
  bool clipped = false;
};

// The clip thresholds -gamma / (zeta - gamma) sit near the uniform attention weight 1/T of these
// barely trained models (T = 12 tokens; ViT 16 patches + CLS), so that part, not all, of P is
// clipped: gamma = -0.09, zeta = 1.05 (threshold 0.079; P >= 0.957 clips to 1) for text, -0.06
// (0.055) for ViT; alpha = 1: gamma = -1/16 (text), -1/17 (ViT).
std::vector<Variant> variants() {
  std::vector<Variant> out;
  for (const std::string family : {"bert", "opt", "vit"}) {
    const std::string preset = family == "bert"  ? "bert-mini"
                               : family == "opt" ? "opt-mini"
                                                 : "vit-tiny";
    const std::string gamma = family == "vit" ? "-0.06" : "-0.09";
    // ViT's vanilla model also has the optional patch LayerNorm (paper Table 7).
    out.push_back({family + "-vanilla", preset,
                   family == "vit" ? "--set model.patch_layer_norm=true " : "", "value.weight"});
    out.push_back(
        {family + "-clipped", preset,
         "--set model.softmax=clipped --set model.gamma=" + gamma + " --set model.zeta=1.05 ",
         "value.weight", true});
    out.push_back({family + "-alpha", preset, "--set model.alpha=1 ", "value.weight", true});
    // Beyond the paper (docs/method.md §9): the sink column, fixed at 0 or learned per head.
    out.push_back({family + "-softmax1", preset, "--set model.softmax=softmax1 ", "value.weight"});
    out.push_back({family + "-sink", preset, "--set model.softmax=sink ", "sink"});
    out.push_back({family + "-gate-linear", preset,
                   "--set model.gate=linear --set model.gate_pi_init=0.25 ", "gate.bias"});
    // OPT's MLP gate is square (n_hid = d_h = 16, the repo's --attn_gate_mlp2): a transposed
    // hidden_weight would load without a shape error there, so only the values can tell.
    out.push_back({family + "-gate-mlp", preset,
                   family == "opt" ? "--set model.gate=mlp --set model.gate_mlp_hidden=16 "
                                   : "--set model.gate=mlp ",
                   "gate.output_bias"});
    out.push_back({family + "-gate-all-heads-linear", preset, "--set model.gate=all-heads-linear ",
                   "gate.bias"});
    out.push_back(
        {family + "-gate-unconditional", preset, "--set model.gate=unconditional ", "gate.logit"});
    out.push_back({family + "-gate-conditional-per-head", preset,
                   "--set model.gate=conditional-per-head --set model.gate_pi_init=0.25 ",
                   "gate.bias"});
  }
  return out;
}

std::filesystem::path scratch() {
  return qt::test::scratch_directory("torch_model");
}

// The model file of a variant, trained once per test process.
std::string checkpoint(const Variant& v) {
  const std::filesystem::path dir = scratch() / v.name;
  const std::filesystem::path model = dir / "model.safetensors";
  if (!std::filesystem::exists(model)) {
    const auto r = qt::test::run_command(qtlab("pretrain --model " + v.preset + " " + kTiny +
                                               v.settings + "--run-dir " + dir.string()));
    REQUIRE_MESSAGE(r.status == 0, r.output);
  }
  return model.string();
}

// A copy of `source` with the tensor whose name ends in "attention." + suffix changed: element 0
// += 1 (one weight), or with its stored config replaced by `config` when given.
std::string changed_copy(const std::string& source, const std::string& target,
                         const std::string& suffix, const std::string& config = "") {
  qt::SafeTensors file = qt::load_safetensors(source);
  if (!config.empty()) file.metadata["config"] = config;
  bool found = suffix.empty();
  for (auto& [name, tensor] : file.tensors) {
    const std::string end = "attention." + suffix;
    if (suffix.empty() || name.size() < end.size() ||
        name.compare(name.size() - end.size(), end.size(), end) != 0)
      continue;
    tensor.data<float>()[0] += 1.0f;
    found = true;
  }
  REQUIRE_MESSAGE(found, source << " has no tensor ending in attention." << suffix);
  qt::save_safetensors(target, file.tensors, file.metadata);
  return target;
}

// The lines of `output` that start with `prefix`.
std::vector<std::string> lines_starting(const std::string& output, const std::string& prefix) {
  std::vector<std::string> out;
  std::istringstream in(output);
  for (std::string line; std::getline(in, line);)
    if (line.rfind(prefix, 0) == 0) out.push_back(line);
  return out;
}

// "... clipped to 0: 12.5%, ..." -> 12.5 (-1 when absent).
double percent_after(const std::string& line, const std::string& label) {
  const size_t at = line.find(label);
  return at == std::string::npos ? -1.0 : std::stod(line.substr(at + label.size()));
}

}  // namespace

TEST_CASE("test_torch_model: every family and attention variant agrees with qtlab") {
  SKIP_WITHOUT_TORCH();
  const std::vector<Variant> all = variants();
  std::string originals, copies, pairs;
  for (const Variant& v : all) {
    const std::string model = checkpoint(v);
    originals += "--checkpoint " + model + " ";
    const std::string copy = (scratch() / v.name / "changed.safetensors").string();
    copies += "--checkpoint " + changed_copy(model, copy, v.corrupt) + " ";
    pairs += "--qtlab-checkpoint " + model + " ";
  }

  // Every model: qtlab and PyTorch agree, within the stated tolerance.
  const auto good = qt::test::run_command(torch_model("--check " + originals));
  REQUIRE_MESSAGE(good.status == 0, good.output);
  for (const Variant& v : all) {
    const auto lines = lines_starting(good.output, checkpoint(v) + ": ");
    REQUIRE_MESSAGE(lines.size() == 1, v.name << "\n" << good.output);
    const std::string& line = lines[0];
    CHECK_MESSAGE(line.find(": agree") != std::string::npos, line);
    CHECK_MESSAGE(line.find("tolerance") != std::string::npos, line);
    CHECK_MESSAGE(
        line.find(v.name.substr(0, v.name.find('-')) + " 1x32, 2 heads") != std::string::npos,
        line);
    if (v.clipped) {
      // The clip acts on part of P, so the comparison covers clipped and unclipped entries.
      const double zeros = percent_after(line, "clipped to 0: ");
      CHECK_MESSAGE(zeros > 0.0, line);
      CHECK_MESSAGE(zeros < 100.0, line);
    } else {
      CHECK_MESSAGE(line.find("clipped") == std::string::npos, line);
    }
    const size_t gate = v.name.find("-gate-");
    if (gate != std::string::npos) {
      CHECK_MESSAGE(line.find(", gate " + v.name.substr(gate + 6) + ";") != std::string::npos,
                    line);
      CHECK_MESSAGE(line.find("mean gate") != std::string::npos, line);
    }
  }

  // PyTorch on a copy with one weight changed, qtlab on the original: every check fails.
  const auto bad = qt::test::run_command(torch_model("--check " + copies + pairs));
  CHECK_MESSAGE(bad.status == 1, bad.output);
  for (const Variant& v : all) {
    const std::string copy = (scratch() / v.name / "changed.safetensors").string();
    const auto lines = lines_starting(bad.output, copy + " (qtlab on " + checkpoint(v) + "): ");
    REQUIRE_MESSAGE(lines.size() == 1, v.name << "\n" << bad.output);
    CHECK_MESSAGE(lines[0].find(": DISAGREE") != std::string::npos, lines[0]);
  }
}

TEST_CASE("test_torch_model: the model keys and choices are qtlab's") {
  SKIP_WITHOUT_TORCH();
  // `qtlab pretrain --list-keys` lines: "model.hidden   model width d (default 256)".
  const auto keys = qt::test::run_command(qtlab("pretrain --list-keys"));
  REQUIRE_MESSAGE(keys.status == 0, keys.output);
  std::map<std::string, std::string> qtlab_defaults;
  for (const std::string& line : lines_starting(keys.output, "model.")) {
    const size_t open = line.rfind("(default ");
    REQUIRE(open != std::string::npos);
    qtlab_defaults[line.substr(0, line.find(' '))] = line.substr(open + 9, line.size() - open - 10);
  }
  // torch_model.py --list-keys lines: "model.hidden   default 256" (+ "  (one of ...)").
  const auto listed = qt::test::run_command(torch_model("--list-keys"));
  REQUIRE_MESSAGE(listed.status == 0, listed.output);
  std::map<std::string, std::string> python_defaults, python_choices;
  for (const std::string& line : lines_starting(listed.output, "model.")) {
    const std::string key = line.substr(0, line.find(' '));
    const size_t at = line.find(" default ") + 9;
    const size_t end = line.find("  ", at);
    python_defaults[key] = line.substr(at, end == std::string::npos ? end : end - at);
    const size_t one_of = line.find("(one of ");
    if (one_of != std::string::npos)
      python_choices[key] = line.substr(one_of + 8, line.size() - one_of - 9);
  }
  CHECK(qtlab_defaults.size() > 20);
  CHECK(python_defaults == qtlab_defaults);
  // qtlab names its choices when a value is not one of them.
  REQUIRE(python_choices.size() == 3);
  for (const auto& [key, choices] : python_choices) {
    const auto r = qt::test::run_command(qtlab("pretrain --set " + key + "=bogus --steps 1"));
    CHECK(r.status != 0);
    CHECK_MESSAGE(r.output.find("expected one of " + choices + "\n") != std::string::npos,
                  key << ": " << choices << "\n"
                      << r.output);
  }
}

TEST_CASE("test_torch_model: bad input gives errors naming it") {
  SKIP_WITHOUT_TORCH();
  const Variant bert = variants()[0];
  const std::string model = checkpoint(bert);
  const auto load = [](const std::string& path) {
    return qt::test::run_command(torch_model("--check --checkpoint " + path));
  };
  const auto fails = [&](const std::string& path, const std::string& message) {
    const auto r = load(path);
    CHECK(r.status == 2);
    CHECK_MESSAGE(r.output.find(message) != std::string::npos, message << "\n" << r.output);
  };
  fails("/nonexistent/model.safetensors", "error: /nonexistent/model.safetensors does not exist");
  // A safetensors file without a run configuration (a golden fixture), and a text file.
  const std::string fixture = std::string(QTLAB_TEST_DATA_DIR) + "/model_bert_vanilla.safetensors";
  fails(fixture, fixture + " is not a qtlab model file");
  const std::string json = (scratch() / bert.name / "config.json").string();
  fails(json, json + " is not a safetensors file");

  // The stored config edited: an unknown key, an unknown gate kind, a model the tensors do not fit.
  const nlohmann::json config =
      nlohmann::json::parse(qt::load_safetensors_metadata(model).at("config"));
  const auto with = [&](const std::string& file, const std::string& key,
                        const nlohmann::json& value) {
    nlohmann::json edited = config;
    edited["model"][key] = value;
    return changed_copy(model, (scratch() / bert.name / file).string(), "", edited.dump());
  };
  fails(with("unknown_key.safetensors", "gate_temperature", 2.0),
        "unknown config key model.gate_temperature");
  fails(with("unknown_gate.safetensors", "gate", "softplus"),
        "model.gate = \"softplus\" is not valid: expected one of none, linear, mlp, "
        "all-heads-linear, unconditional, conditional-per-head");
  fails(with("two_layers.safetensors", "layers", 2),
        "missing tensor encoder.layer.1.attention.query.weight [32, 32]");
  fails(with("gated.safetensors", "gate", "linear"),
        "missing tensor encoder.layer.0.attention.gate.weight [2, 16]");
}

TEST_CASE("test_qtlab_logits: bad batches give errors naming them") {
  const std::vector<Variant> all = variants();
  const auto first_vit =
      std::find_if(all.begin(), all.end(), [](const Variant& v) { return v.preset == "vit-tiny"; });
  REQUIRE(first_vit != all.end());
  const Variant vit = *first_vit;
  const std::string model = checkpoint(vit);
  const std::string batch = (scratch() / "text_batch.safetensors").string();
  qt::save_safetensors(batch, {{"input_ids", qt::test::random_ids({2, 4}, 0, 63, 1)}});
  const std::string out = (scratch() / "logits.safetensors").string();
  const auto wrong = qt::test::run_command(
      qtlab("logits --checkpoint " + model + " --batch " + batch + " --out " + out));
  CHECK(wrong.status != 0);
  CHECK_MESSAGE(
      wrong.output.find("has no tensor 'images' (a vit model reads 'images')") != std::string::npos,
      wrong.output);
  const auto missing = qt::test::run_command(
      qtlab("logits --checkpoint " + model + " --batch /nonexistent/b.safetensors --out " + out));
  CHECK(missing.status != 0);
  CHECK_MESSAGE(missing.output.find("batch file /nonexistent/b.safetensors does not exist") !=
                    std::string::npos,
                missing.output);
  CHECK(!std::filesystem::exists(out));
}
