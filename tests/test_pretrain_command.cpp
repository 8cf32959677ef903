// The `qtlab pretrain` and `qtlab eval` commands (tools/pretrain.cpp, tools/eval.cpp), run as a
// user would: flags, --set, config files, error messages and exit codes.
#include <doctest/doctest.h>

#include <cmath>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <random>
#include <string>
#include <vector>

#include "data/text_corpus.h"
#include "data/tokenizer.h"
#include "tensor/safetensors.h"
#include "tests/test_util.h"

namespace {

std::string qtlab(const std::string& arguments) {
  return std::string(QTLAB_BINARY) + " " + arguments;
}

const char* kTiny =
    "--dataset synthetic --threads 1 --set model.layers=1 --set model.hidden=32 "
    "--set model.heads=2 --set model.ffn=64 --set model.vocab_size=64 --set model.max_length=16 "
    "--set train.batch_size=8 --set train.eval_batches=4 --set train.eval_every=1000 ";

std::filesystem::path fresh(const std::string& name) {
  const std::filesystem::path dir = qt::test::scratch_directory("pretrain_command") / name;
  std::filesystem::remove_all(dir);
  return dir;
}

}  // namespace

TEST_CASE("test_pretrain_command: flags, config file, --set, progress and eval") {
  const auto dir = fresh("run");
  const auto config_file = dir.parent_path() / "run-config.json";
  {
    std::ofstream out(config_file);
    out << R"({"preset": "opt-mini", "train": {"steps": 4, "log_every": 2}, "model.softmax": "clipped"})";
  }
  const auto r =
      qt::test::run_command(qtlab("pretrain --config " + config_file.string() + " " + kTiny +
                                  "--gamma -0.03 --gate linear --pi-init 0.25 "
                                  "--run-dir " +
                                  dir.string()));
  REQUIRE_MESSAGE(r.status == 0, r.output);
  // Progress lines (not a terminal: one line per log step) and the final summary.
  CHECK(r.output.find("step 2/4") != std::string::npos);
  CHECK(r.output.find("tok/s") != std::string::npos);
  CHECK(r.output.find("eta") != std::string::npos);
  // Every validation figure names its data; the end is a readable summary, not JSON.
  CHECK(r.output.find("(32 of 256 validation sequences") != std::string::npos);
  CHECK(r.output.find("summary: trained 4 steps (to step 4)") != std::string::npos);
  CHECK(r.output.find("{\"") == std::string::npos);
  std::ifstream stored(dir / "config.json");
  const nlohmann::json config = nlohmann::json::parse(stored);
  CHECK(config["model"]["family"] == "opt");       // from the file's preset
  CHECK(config["model"]["softmax"] == "clipped");  // from the file
  CHECK(config["model"]["gamma"] == -0.03);        // flag
  CHECK(config["model"]["gate"] == "linear");      // flag
  CHECK(config["model"]["gate_pi_init"] == 0.25);  // flag
  CHECK(config["model"]["hidden"] == 32);          // --set
  // eval reads the config from the model file and scores the validation split.
  const auto e = qt::test::run_command(
      qtlab("eval --json --threads 1 --checkpoint " + (dir / "model.safetensors").string()));
  REQUIRE_MESSAGE(e.status == 0, e.output);
  const nlohmann::json result = nlohmann::json::parse(e.output.substr(e.output.find('{')));
  CHECK(result["family"] == "opt");
  CHECK(result["samples"] == 256);  // the whole synthetic validation split
  CHECK(result["perplexity"].get<double>() ==
        doctest::Approx(std::exp(result["loss"].get<double>())));
  // Resume with no other flags takes the stored config; the run is complete, so nothing to do.
  const auto resumed =
      qt::test::run_command(qtlab("pretrain --quiet --resume --run-dir " + dir.string()));
  CHECK_MESSAGE(resumed.status == 0, resumed.output);
}

TEST_CASE("test_pretrain_command: bad input gives an error that names it") {
  struct Case {
    std::string arguments, expected;
  };
  const auto dir = fresh("bad").string();
  for (const Case& c : std::vector<Case>{
           {"pretrain --set model.hiden=64 --run-dir " + dir, "model.hiden"},
           {"pretrain --set model.hidden=abc --run-dir " + dir, "model.hidden"},
           {"pretrain --attn softmax2 --run-dir " + dir, "model.softmax"},
           // A sink column does not go with gamma / zeta or alpha.
           {"pretrain --attn sink --gamma -0.1 --run-dir " + dir, "--attn sink"},
           {"pretrain --attn softmax1 --alpha 4 --run-dir " + dir, "model.softmax = softmax1"},
           {"pretrain --model bert-huge --run-dir " + dir, "bert-huge"},
           {"pretrain --config /nonexistent/config.json --run-dir " + dir,
            "/nonexistent/config.json"},
           {"pretrain --gamma 0.5 --run-dir " + dir, "model.gamma"},
           {"eval --checkpoint /nonexistent/model.safetensors", "/nonexistent/model.safetensors"},
           // Values that used to wrap or mean something else silently.
           {"pretrain --seed -1 --run-dir " + dir, "train.seed = -1"},
           {"pretrain --threads -3 --run-dir " + dir, "--threads"},
           {"eval --threads 0 --checkpoint x.safetensors", "--threads"},
           // Contradictory flags: refused, naming both.
           {"pretrain --attn vanilla --gamma -0.1 --run-dir " + dir, "--attn vanilla"},
           {"pretrain --pi-init 0.3 --run-dir " + dir, "model.gate = none"},
       }) {
    CAPTURE(c.arguments);
    const auto r = qt::test::run_command(qtlab(c.arguments));
    CHECK(r.status != 0);
    CHECK_MESSAGE(r.output.find(c.expected) != std::string::npos, r.output);
    CHECK(r.output.find("error") != std::string::npos);
  }
}

namespace {

// A finished tiny run (2 steps) in `dir`.
void train_tiny(const std::filesystem::path& dir, const std::string& extra = "") {
  const auto r = qt::test::run_command(qtlab("pretrain --quiet " + std::string(kTiny) +
                                             "--steps 2 --run-dir " + dir.string() + " " + extra));
  REQUIRE_MESSAGE(r.status == 0, r.output);
}

std::string read_file(const std::filesystem::path& path) {
  std::ifstream in(path, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(in), {});
}

}  // namespace

TEST_CASE("test_pretrain_command: --resume on a copied run directory writes only the copy") {
  const auto original = fresh("original"), copy = fresh("copy");
  train_tiny(original, "--stop-at 1");
  std::filesystem::copy(original, copy, std::filesystem::copy_options::recursive);
  const std::string before = read_file(original / "checkpoint.safetensors");
  // The copy's config.json still names the original directory as train.run_dir.
  const auto r =
      qt::test::run_command(qtlab("pretrain --quiet --resume --run-dir " + copy.string()));
  REQUIRE_MESSAGE(r.status == 0, r.output);
  CHECK(read_file(original / "checkpoint.safetensors") == before);
  CHECK_FALSE(std::filesystem::exists(original / "model.safetensors"));
  CHECK(std::filesystem::exists(copy / "model.safetensors"));
  const nlohmann::json config = nlohmann::json::parse(read_file(copy / "config.json"));
  CHECK(config["train"]["run_dir"] == copy.string());
}

TEST_CASE("test_pretrain_command: messages say only what happened") {
  const auto dir = fresh("messages");
  const auto stopped = qt::test::run_command(
      qtlab("pretrain " + std::string(kTiny) + "--steps 2 --stop-at 0 --run-dir " + dir.string()));
  REQUIRE_MESSAGE(stopped.status == 0, stopped.output);
  CHECK_MESSAGE(stopped.output.find("nothing to do") != std::string::npos, stopped.output);
  CHECK(stopped.output.find("done:") == std::string::npos);
  CHECK_FALSE(std::filesystem::exists(dir / "model.safetensors"));
  std::filesystem::remove_all(dir);
  train_tiny(dir);
  const auto again = qt::test::run_command(qtlab("pretrain --resume --run-dir " + dir.string()));
  REQUIRE_MESSAGE(again.status == 0, again.output);
  CHECK_MESSAGE(again.output.find("nothing to do: the run is at step 2 of 2") != std::string::npos,
                again.output);
  CHECK(again.output.find("done:") == std::string::npos);
  // The suggested command for the config keys exists.
  CHECK(qt::test::run_command(qtlab("pretrain --list-keys")).status == 0);
}

TEST_CASE("test_pretrain_command: eval refuses NaN weights, model overrides and mismatched data") {
  const auto dir = fresh("eval-refusals");
  train_tiny(dir);
  const std::string model = (dir / "model.safetensors").string();
  for (const auto& [arguments, expected] : std::vector<std::pair<std::string, std::string>>{
           {"--set data.dataset=mnist", "needs data.dataset = text or synthetic"},
           {"--set model.softmax=clipped", "--set model.softmax=\"clipped\""},
           {"--set model.layers=2", "only data.* and train.* keys"},
       }) {
    CAPTURE(arguments);
    const auto r =
        qt::test::run_command(qtlab("eval --threads 1 --checkpoint " + model + " " + arguments));
    CHECK(r.status != 0);
    CHECK_MESSAGE(r.output.find(expected) != std::string::npos, r.output);
  }
  // A model whose weights hold a NaN: "loss nan perplexity nan" and exit 0 before; now an error.
  qt::SafeTensors file = qt::load_safetensors(model);
  for (auto& [name, tensor] : file.tensors)
    if (name == "embeddings.layer_norm.weight") tensor.data<float>()[3] = std::nanf("");
  const std::string poisoned = (dir / "poisoned.safetensors").string();
  qt::save_safetensors(poisoned, file.tensors, file.metadata);
  const auto r = qt::test::run_command(qtlab("eval --threads 1 --checkpoint " + poisoned));
  CHECK(r.status != 0);
  CHECK_MESSAGE(r.output.find("'embeddings.layer_norm.weight' holds nan") != std::string::npos,
                r.output);
  // Finite weights so large that the forward pass overflows: the loss is not a measurement.
  for (auto& [name, tensor] : file.tensors)
    if (name == "embeddings.layer_norm.weight")
      for (int64_t i = 0; i < tensor.numel(); ++i) tensor.data<float>()[i] = 3e38f;
  qt::save_safetensors(poisoned, file.tensors, file.metadata);
  const auto overflow = qt::test::run_command(qtlab("eval --threads 1 --checkpoint " + poisoned));
  CHECK(overflow.status != 0);
  CHECK_MESSAGE(overflow.output.find("computes non-finite values") != std::string::npos,
                overflow.output);
  // quantize evaluates too: the same model is refused there, before any quantized figure.
  const auto quantized = qt::test::run_command(
      qtlab("quantize --threads 1 --calib-batches 1 --eval-batches 1 --checkpoint " + poisoned));
  CHECK(quantized.status != 0);
  CHECK_MESSAGE(quantized.output.find("computes non-finite values") != std::string::npos,
                quantized.output);
}

TEST_CASE("test_pretrain_command: deeply nested JSON inputs are errors, not crashes") {
  const auto dir = fresh("deep");
  std::filesystem::create_directories(dir);
  { std::ofstream(dir / "deep.json") << std::string(200000, '[') << std::string(200000, ']'); }
  const auto r = qt::test::run_command(qtlab("pretrain --config " + (dir / "deep.json").string() +
                                             " --run-dir " + (dir / "run").string()));
  CHECK(r.status == 1);  // an error, not a signal (128 + 11)
  CHECK_MESSAGE(r.output.find("nests 200000 levels") != std::string::npos, r.output);
  // A model file whose config metadata nests deeply.
  train_tiny(dir / "run");
  const std::string model = (dir / "run" / "model.safetensors").string();
  qt::SafeTensors file = qt::load_safetensors(model);
  file.metadata["config"] =
      "{\"model\": " + std::string(100000, '{') + std::string(100000, '}') + "}";
  const std::string deep_model = (dir / "deep.safetensors").string();
  qt::save_safetensors(deep_model, file.tensors, file.metadata);
  const auto e = qt::test::run_command(qtlab("eval --checkpoint " + deep_model));
  CHECK(e.status == 1);
  CHECK_MESSAGE(e.output.find("nests 100001 levels") != std::string::npos, e.output);
  CHECK(e.output.size() < 2000);
}

namespace {

// A miniature text corpus (the layout of DATA_DIR/text: a training book, the two held-out books,
// Brown samples with the held-out genre L) of pseudo-random sentences over a small vocabulary.
void write_corpus(const std::filesystem::path& data_dir, unsigned seed) {
  const char* words[] = {"the",  "cat",  "sat",  "on", "a",   "mat",  "and",  "dog",   "ran", "far",
                         "away", "from", "home", "it", "was", "very", "cold", "night", "sun"};
  std::mt19937 rng(seed);
  const auto text = [&](int sentences) {
    std::string out;
    for (int s = 0; s < sentences; ++s) {
      for (int w = 0; w < 8; ++w) out += std::string(words[rng() % 19]) + " ";
      out += ".\n\n";
    }
    return out;
  };
  for (const std::string book : {"gutenberg/austen-emma", "gutenberg/austen-persuasion",
                                 "gutenberg/chesterton-thursday", "brown/ca01", "brown/cl01"}) {
    const std::filesystem::path file = data_dir / "text" / (book + ".txt");
    std::filesystem::create_directories(file.parent_path());
    std::ofstream(file) << text(book == "gutenberg/austen-emma" ? 400 : 60);
  }
}

}  // namespace

TEST_CASE("test_pretrain_command: a text model refuses a data directory with another tokenizer") {
  const auto dir = fresh("tokenizer-check");
  const auto data_dir = dir / "data";
  write_corpus(data_dir, 1);
  const std::string text_run =
      "--quiet --threads 1 --dataset text --set data.dir=" + data_dir.string() +
      " --set model.layers=1 --set model.hidden=32 --set model.heads=2 --set model.ffn=64 "
      "--set model.vocab_size=300 --set model.max_length=16 --set train.batch_size=8 "
      "--set train.eval_batches=2 --steps 2 ";
  const auto r =
      qt::test::run_command(qtlab("pretrain " + text_run + "--run-dir " + (dir / "run").string()));
  REQUIRE_MESSAGE(r.status == 0, r.output);
  const std::string model = (dir / "run" / "model.safetensors").string();
  const std::string eval = "eval --threads 1 --checkpoint " + model;
  REQUIRE(qt::test::run_command(qtlab(eval)).status == 0);
  // Another valid tokenizer of the same size in the data directory (trained on other text): eval
  // silently reported another loss; now it names both fingerprints and files.
  const auto tokenizer_file = data_dir / "tokenizer-300.json";
  const std::string recorded = qt::data::Tokenizer::load(tokenizer_file.string()).fingerprint();
  const auto other_data = dir / "other";
  write_corpus(other_data, 2);
  std::vector<std::string> texts;
  for (const auto& document :
       qt::data::load_text_documents(other_data.string(), qt::data::Split::train))
    texts.push_back(document.text);
  const qt::data::Tokenizer other = qt::data::Tokenizer::train(texts, 300);
  REQUIRE(other.fingerprint() != recorded);
  other.save(tokenizer_file.string());
  const auto mismatch = qt::test::run_command(qtlab(eval));
  CHECK(mismatch.status != 0);
  CHECK_MESSAGE(mismatch.output.find("trained with tokenizer " + recorded) != std::string::npos,
                mismatch.output);
  CHECK(mismatch.output.find(other.fingerprint()) != std::string::npos);
  CHECK(mismatch.output.find(tokenizer_file.string()) != std::string::npos);
  // No tokenizer at all: refused too (a new one would be trained), pointing at the run's copy.
  std::filesystem::remove(tokenizer_file);
  const auto missing = qt::test::run_command(qtlab(eval));
  CHECK(missing.status != 0);
  CHECK_MESSAGE(missing.output.find("tokenizer.json") != std::string::npos, missing.output);
}

TEST_CASE("test_pretrain_command: --version, and the version and format in the model file") {
  const auto version = qt::test::run_command(qtlab("--version"));
  REQUIRE_MESSAGE(version.status == 0, version.output);
  // "qtlab <git describe>": a commit hash (12 hex digits, maybe "-dirty") or "unknown".
  REQUIRE(version.output.rfind("qtlab ", 0) == 0);
  std::string described = version.output.substr(6);
  while (!described.empty() && (described.back() == '\n' || described.back() == '\r'))
    described.pop_back();
  CHECK((described == "unknown" || described.size() >= 12));
  const auto dir = fresh("version");
  const auto r = qt::test::run_command(qtlab("pretrain --json --model bert-mini --steps 1 " +
                                             std::string(kTiny) + "--run-dir " + dir.string()));
  REQUIRE_MESSAGE(r.status == 0, r.output);
  // --json: the final figures as one JSON line.
  const nlohmann::json printed = nlohmann::json::parse(r.output.substr(r.output.find('{')));
  CHECK(printed["steps"] == 1);
  CHECK(printed["val_samples"] == 32);
  CHECK(printed.contains("val_perplexity"));
  // Read with the plain safetensors reader: what any other reader sees.
  const auto metadata = qt::load_safetensors_metadata((dir / "model.safetensors").string());
  CHECK(metadata.at("format") == "qtlab.model");
  CHECK(metadata.at("format_version") == "1");
  CHECK(metadata.at("qtlab_version") == described);
  CHECK(nlohmann::json::parse(metadata.at("config"))["model"]["family"] == "bert");
}
