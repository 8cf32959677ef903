// The `qtlab pretrain` and `qtlab eval` commands (tools/pretrain.cpp, tools/eval.cpp), run as a
// user would: flags, --set, config files, error messages and exit codes.
#include <doctest/doctest.h>

#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <string>

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
           {"pretrain --attn softmax1 --run-dir " + dir, "model.softmax"},
           {"pretrain --model bert-huge --run-dir " + dir, "bert-huge"},
           {"pretrain --config /nonexistent/config.json --run-dir " + dir,
            "/nonexistent/config.json"},
           {"pretrain --gamma 0.5 --run-dir " + dir, "model.gamma"},
           {"eval --checkpoint /nonexistent/model.safetensors", "/nonexistent/model.safetensors"},
       }) {
    CAPTURE(c.arguments);
    const auto r = qt::test::run_command(qtlab(c.arguments));
    CHECK(r.status != 0);
    CHECK_MESSAGE(r.output.find(c.expected) != std::string::npos, r.output);
    CHECK(r.output.find("error") != std::string::npos);
  }
}
