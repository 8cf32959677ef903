#include <doctest/doctest.h>

#include <cstdio>
#include <fstream>
#include <nlohmann/json.hpp>
#include <string>

#include "models/config.h"
#include "tensor/error.h"
#include "tests/mutations.h"
#include "tests/test_util.h"

using namespace qt;
using namespace qt::models;

namespace {

// The message of the qt::Error `f` throws ("" if it does not throw).
template <typename F>
std::string error_of(F&& f) {
  try {
    f();
  } catch (const Error& e) {
    return e.what();
  }
  return "";
}

std::string write_temp(const std::string& name, const std::string& text) {
  const std::string path = (test::scratch_directory("config") / name).string();
  std::ofstream(path) << text;
  return path;
}

}  // namespace

TEST_CASE("config: presets have the documented shapes") {
  const RunConfig bert = preset("bert-mini");
  CHECK(bert.model.family == qt::models::Family::bert);
  CHECK(bert.model.layers == 4);
  CHECK(bert.model.hidden == 256);
  CHECK(bert.model.heads == 4);
  const RunConfig opt = preset("opt-mini");
  CHECK(opt.model.family == qt::models::Family::opt);
  CHECK(opt.train.beta2 == 0.95);
  CHECK(opt.model.attention_dropout == 0.0);
  CHECK(preset("vit-tiny").data.dataset == "mnist");
  for (const std::string& name : preset_names()) CHECK_NOTHROW(validate(preset(name)));
  CHECK(error_of([] { preset("bert-huge"); }).find("unknown preset 'bert-huge'") !=
        std::string::npos);
}

TEST_CASE("config: --set parses by field type and rejects bad values naming the key") {
  RunConfig c = preset("bert-mini");
  set_assignment(c, "model.hidden=384");
  set_assignment(c, "train.lr=2e-3");
  set_assignment(c, "model.softmax=clipped");
  set_assignment(c, "model.gamma=-0.025");
  set_assignment(c, "train.weight_decay_layer_norm=true");
  set_assignment(c, "train.run_dir=123");  // a string field keeps digits as text
  CHECK(c.model.hidden == 384);
  CHECK(c.train.lr == 2e-3);
  CHECK(c.model.softmax == qt::nn::SoftmaxKind::clipped);
  CHECK(c.model.gamma == -0.025);
  CHECK(c.train.weight_decay_layer_norm);
  CHECK(c.train.run_dir == "123");

  const std::string unknown = error_of([&] { set_assignment(c, "model.hiden=3"); });
  CHECK(unknown.find("unknown key 'model.hiden'") != std::string::npos);
  CHECK(unknown.find("model.hidden") != std::string::npos);  // the suggestion
  CHECK(error_of([&] { set_assignment(c, "model.hidden=3.5"); }).find("model.hidden") !=
        std::string::npos);
  CHECK(error_of([&] { set_assignment(c, "model.gamma=0.1"); }).find("model.gamma") !=
        std::string::npos);
  CHECK(error_of([&] { set_assignment(c, "model.gate=sometimes"); }).find("one of none") !=
        std::string::npos);
  CHECK(error_of([&] { set_assignment(c, "train.lr=fast"); }).find("train.lr") !=
        std::string::npos);
  CHECK(error_of([&] { set_assignment(c, "train.lr=nan"); }).find("train.lr") != std::string::npos);
  CHECK(error_of([&] { set_assignment(c, "noequals"); }).find("key=value") != std::string::npos);
  CHECK(c.model.hidden == 384);  // failed sets change nothing
}

TEST_CASE("config: JSON files, nested or dotted, strict about unknown keys") {
  const std::string good = write_temp(
      "good.json",
      R"({"preset": "opt-mini", "model": {"layers": 2, "gate": "linear"}, "train.steps": 50.0})");
  const RunConfig c = load_config_file(good);
  CHECK(c.model.family == qt::models::Family::opt);  // from the preset
  CHECK(c.model.layers == 2);
  CHECK(c.model.gate == qt::nn::GateKind::linear_per_head);
  CHECK(c.train.steps == 50);

  const std::string typo = write_temp("typo.json", R"({"model": {"layerz": 2}})");
  const std::string message = error_of([&] { load_config_file(typo); });
  CHECK(message.find("model.layerz") != std::string::npos);
  CHECK(message.find(typo) != std::string::npos);
  CHECK(error_of([&] {
          load_config_file(write_temp("bad.json", "{\"model\": "));
        }).find("not valid JSON") != std::string::npos);
  CHECK(error_of([&] { load_config_file("/nonexistent/qtlab.json"); }).find("cannot open") !=
        std::string::npos);
}

TEST_CASE("config: to_json / from_json round-trips every key") {
  RunConfig c = preset("vit-tiny");
  set_assignment(c, "model.patch_layer_norm=true");
  set_assignment(c, "train.seed=77");
  const RunConfig back = from_json(to_json(c));
  CHECK(to_json(back) == to_json(c));
  CHECK(back.train.seed == 77);
  CHECK(back.model.patch_layer_norm);
  CHECK(to_json(c).size() == 3);  // model, train, data
  CHECK(config_keys().size() ==
        to_json(c)["model"].size() + to_json(c)["train"].size() + to_json(c)["data"].size());
}

TEST_CASE("config: cross-field validation") {
  RunConfig c = preset("bert-mini");
  c.model.heads = 3;
  CHECK(error_of([&] { validate(c); }).find("not divisible by model.heads") != std::string::npos);
  RunConfig v = preset("vit-tiny");
  v.model.patch_size = 5;
  CHECK(error_of([&] { validate(v); }).find("does not divide") != std::string::npos);
  RunConfig t = preset("bert-mini");
  t.data.dataset = "mnist";
  CHECK(error_of([&] { validate(t); }).find("needs data.dataset = text") != std::string::npos);
}

TEST_CASE("config: settings the chosen variant ignores are refused, naming both keys and flags") {
  RunConfig c = preset("bert-mini");
  c.model.gamma = -0.1;  // --attn vanilla --gamma -0.1
  const std::string vanilla = error_of([&] { validate(c); });
  CHECK(vanilla.find("model.gamma = -0.1") != std::string::npos);
  CHECK(vanilla.find("--attn vanilla") != std::string::npos);
  c.model.softmax = qt::nn::SoftmaxKind::clipped;
  CHECK(error_of([&] { validate(c); }).empty());
  c.model.alpha = 12;  // alpha sets gamma itself
  CHECK(error_of([&] { validate(c); }).find("--alpha") != std::string::npos);
  RunConfig g = preset("bert-mini");
  g.model.gate_pi_init = 0.25;  // --pi-init without --gate
  CHECK(error_of([&] { validate(g); }).find("model.gate = none") != std::string::npos);
  g.model.gate = qt::nn::GateKind::linear_per_head;
  CHECK(error_of([&] { validate(g); }).empty());
}

TEST_CASE("config: seeds cover all of uint64; out-of-range numbers are reported as written") {
  RunConfig c;
  set_assignment(c, "train.seed=9223372036854775808");  // 2^63, once rejected as "negative"
  CHECK(c.train.seed == 9223372036854775808ull);
  set_assignment(c, "train.seed=18446744073709551615");
  CHECK(c.train.seed == 18446744073709551615ull);
  apply_json(c, nlohmann::json::parse(R"({"train": {"seed": 18446744073709551615}})"));
  CHECK(c.train.seed == 18446744073709551615ull);
  CHECK(error_of([&] { set_assignment(c, "train.seed=-1"); }).find("train.seed = -1") !=
        std::string::npos);
  CHECK(error_of([&] {
          set_assignment(c, "train.seed=18446744073709551616");
        }).find("train.seed") != std::string::npos);
  // 1e30 reached an undefined double -> int64 cast and was reported as some other number.
  const std::string huge = error_of(
      [&] { load_config_file(write_temp("huge.json", R"({"model": {"layers": 1e30}})")); });
  CHECK(huge.find("model.layers = 1e+30") != std::string::npos);
  CHECK(error_of([&] {
          load_config_file(write_temp("negative-huge.json", R"({"train": {"steps": -1e19}})"));
        }).find("train.steps = -1e+19") != std::string::npos);
}

TEST_CASE("config: a deeply nested config file is an error, not a stack overflow") {
  const std::string deep = write_temp(
      "deep.json", "{\"model\": " + std::string(100000, '{') + std::string(100000, '}') + "}");
  CHECK(error_of([&] { load_config_file(deep); }).find("nests 100001 levels") != std::string::npos);
  // A key of 3 MB is quoted in part.
  const std::string long_key =
      write_temp("long-key.json", "{\"" + std::string(3'000'000, 'k') + "\": 1}");
  const std::string message = error_of([&] { load_config_file(long_key); });
  CHECK(message.find("unknown key") != std::string::npos);
  CHECK(message.size() < 1000);
  // The error for an unknown key suggests a command that exists (`pretrain --list-keys`).
  RunConfig c;
  CHECK(error_of([&] { set_assignment(c, "model.hiden=1"); }).find("--list-keys") !=
        std::string::npos);
}

TEST_CASE("config: fuzz — 300 mutations of a valid config file load or throw qt::Error") {
  const std::string valid = to_json(preset("opt-mini")).dump(2);
  const qt::test::FuzzOutcome outcome =
      qt::test::fuzz_reader(valid, (test::scratch_directory("config") / "fuzz.json").string(), 300,
                            7, [](const std::string& file) { validate(load_config_file(file)); });
  CHECK(outcome.rejected > 100);
}
