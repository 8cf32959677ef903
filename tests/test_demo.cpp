// The main job, tools/demo.sh (`make demo`), run end to end on a tiny BERT and the built-in
// synthetic text: three runs that differ only in their attention, each quantized to W8A8, and the
// report's Table 2 columns, printed beside the committed long-run rows. Checked against what each
// step wrote (config.json, quantize-w8a8.json, analysis.json), and that a second run reuses the
// finished runs.
#include <doctest/doctest.h>

#include <fmt/format.h>

#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>
#include <string>

#include "quant/outlier_analysis.h"
#include "tests/test_util.h"

namespace {

namespace fs = std::filesystem;

nlohmann::json read_json(const fs::path& path) {
  std::ifstream in(path);
  REQUIRE_MESSAGE(in.good(), path.string());
  return nlohmann::json::parse(in);
}

// `committed`: the directory of the long runs' results files the demo prints beside its rows.
std::string demo_command(const fs::path& dir, const fs::path& committed, int steps = 4) {
  return fmt::format(
      "DEMO_COMMITTED_RESULTS={} QTLAB={} DEMO_DIR={} DEMO_STEPS={} DEMO_THREADS=1 "
      "DEMO_CALIBRATION_BATCHES=2 "
      "DEMO_FLAGS='--dataset synthetic --quiet --set model.layers=2 --set model.hidden=32 "
      "--set model.heads=2 --set model.ffn=64 --set model.vocab_size=64 "
      "--set model.max_length=16 --set train.batch_size=8 --set train.eval_batches=2' "
      "bash {}/tools/demo.sh",
      committed.string(), QTLAB_BINARY, dir.string(), steps, QTLAB_SOURCE_DIR);
}

// The demo's directory for `name` ("vanilla", ..., "report") of a non-default configuration:
// <name>-<steps>steps-<hash of DEMO_FLAGS> (tools/demo.sh); the one match, or an empty path.
fs::path demo_path(const fs::path& dir, const std::string& name, int steps = 4) {
  const std::string prefix = name + "-" + std::to_string(steps) + "steps-";
  fs::path found;
  int matches = 0;
  for (const auto& entry : fs::directory_iterator(dir))
    if (entry.path().filename().string().rfind(prefix, 0) == 0) {
      found = entry.path();
      ++matches;
    }
  CHECK_MESSAGE(matches == 1, prefix);
  return found;
}

// `text` with every run of spaces replaced by one space.
std::string collapse_spaces(const std::string& text) {
  std::string out;
  for (char c : text)
    if (!(c == ' ' && !out.empty() && out.back() == ' ')) out += c;
  return out;
}

}  // namespace

TEST_CASE("test_demo: three attention variants, W8A8, and the Table 2 columns") {
  if (qt::test::run_command("gnuplot --version").status != 0) {
    MESSAGE("gnuplot is not installed: the demo's report cannot run; skipped");
    return;
  }
  const fs::path dir = qt::test::scratch_directory("demo") / "runs";
  fs::remove_all(dir);
  // One committed long-run result: run "bert-long", seed 5, step 1000, FP 50, W8A8 51,
  // max inf-norm 12, avg kurtosis 4.
  const fs::path committed = qt::test::scratch_directory("demo") / "committed";
  fs::create_directories(committed);
  {
    const nlohmann::json identity = {
        {"group", "g"}, {"variant", "vanilla"}, {"seed", 5}, {"step", 1000}, {"run", "bert-long"}};
    nlohmann::json q = identity, a = identity;
    q["kind"] = "quantize";
    q["spec"] = "W8A8";
    q["result"] = {
        {"family", "bert"}, {"fp", {{"perplexity", 50.0}}}, {"quantized", {{"perplexity", 51.0}}}};
    a["kind"] = "analysis";
    a["analysis"] = {{"headline", {{"max_inf_norm", 12.0}, {"avg_kurtosis", 4.0}}}};
    std::ofstream(committed / "bert-long.jsonl") << q.dump() << "\n" << a.dump() << "\n";
  }
  const auto first = qt::test::run_command(demo_command(dir, committed));
  REQUIRE_MESSAGE(first.status == 0, first.output);

  // The three runs differ only in the attention options of method.md §1-2.
  const nlohmann::json vanilla = read_json(demo_path(dir, "vanilla") / "config.json");
  const nlohmann::json clipped = read_json(demo_path(dir, "clipped") / "config.json");
  const nlohmann::json gated = read_json(demo_path(dir, "gated") / "config.json");
  CHECK(vanilla["model"]["softmax"] == "vanilla");
  CHECK(vanilla["model"]["gate"] == "none");
  CHECK(clipped["model"]["softmax"] == "clipped");
  CHECK(clipped["model"]["gamma"].get<double>() == -0.025);
  CHECK(clipped["model"]["zeta"].get<double>() == 1.0);
  CHECK(gated["model"]["softmax"] == "vanilla");
  CHECK(gated["model"]["gate"] == "mlp");
  nlohmann::json same_clipped = clipped, same_gated = gated;
  for (nlohmann::json* c : {&same_clipped, &same_gated}) {
    (*c)["model"]["softmax"] = "vanilla";
    (*c)["model"]["gamma"] = vanilla["model"]["gamma"];
    (*c)["model"]["gate"] = "none";
    (*c)["train"]["run_dir"] = vanilla["train"]["run_dir"];
    CHECK((*c)["model"] == vanilla["model"]);
    CHECK((*c)["train"] == vanilla["train"]);
    CHECK((*c)["data"] == vanilla["data"]);
  }

  // Each variant's printed Table 2 row carries its quantize result and its analysis.
  const std::string printed = collapse_spaces(first.output);
  for (const std::string variant : {"vanilla", "clipped", "gated"}) {
    CAPTURE(variant);
    const nlohmann::json q = read_json(demo_path(dir, variant) / "quantize-w8a8.json");
    CHECK(q["weight_bits"] == 8);
    CHECK(q["activation_bits"] == 8);
    CHECK(q["calibration_batches"] == 2);
    const fs::path run = demo_path(dir, variant);
    const auto a = qt::quant::analysis_from_json(read_json(run / "analysis.json"));
    const std::string row =
        fmt::format("{}  bert  4  {:.3f}  {:.3f}  {:.3f}  {:.3f}", run.filename().string(),
                    q["fp"]["perplexity"].get<double>(), a.headline.max_inf_norm,
                    a.headline.avg_kurtosis, q["quantized"]["perplexity"].get<double>());
    // The terminal table pads columns; compare with runs of spaces collapsed.
    CHECK_MESSAGE(printed.find(collapse_spaces(row)) != std::string::npos, first.output);
  }
  // Beside them, the committed long-run rows, labelled as such.
  CHECK(first.output.find("the committed long runs (not this demo's)") != std::string::npos);
  CHECK_MESSAGE(printed.find(" bert-long 5 1000 50.00 12.00 4.00 51.00 -\n") != std::string::npos,
                first.output);
  CHECK(fs::exists(demo_path(dir, "report") / "report.md"));
  CHECK(fs::exists(demo_path(dir, "report") / "inf_norm_per_layer.png"));

  // A second demo reuses the finished runs: no training step is repeated (a repeated step would
  // log a different elapsed time).
  const auto read_text = [](const fs::path& path) {
    std::ifstream in(path);
    std::stringstream text;
    text << in.rdbuf();
    return text.str();
  };
  const std::string log = read_text(demo_path(dir, "gated") / "metrics.jsonl");
  CHECK(log.find("elapsed_s") != std::string::npos);
  const auto second = qt::test::run_command(demo_command(dir, committed));
  REQUIRE_MESSAGE(second.status == 0, second.output);
  CHECK(read_text(demo_path(dir, "gated") / "metrics.jsonl") == log);
  // ... and does not quantize again what is up to date.
  CHECK(second.output.find("W8A8 result up to date") != std::string::npos);
  CHECK(second.output.find("qtlab quantize (W8A8") == std::string::npos);
  // A longer demo after a finished one trains runs of its own beside the first ones.
  const auto longer = qt::test::run_command(demo_command(dir, committed, 6));
  REQUIRE_MESSAGE(longer.status == 0, longer.output);
  const nlohmann::json six = read_json(demo_path(dir, "vanilla", 6) / "config.json");
  CHECK(six["train"]["steps"] == 6);
  CHECK(fs::exists(demo_path(dir, "report", 6) / "report.md"));
  CHECK(read_text(demo_path(dir, "gated") / "metrics.jsonl") == log);
}
