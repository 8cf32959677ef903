// The `qtlab analyze` and `qtlab report` commands (tools/analyze.cpp, tools/report.cpp), run as a
// user would on two tiny runs trained with `qtlab pretrain`: analysis.json and its agreement with
// the printed table, the report's data files, images and report.md, and the error messages.
#include <doctest/doctest.h>

#include <fmt/format.h>

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>
#include <string>

#include "quant/outlier_analysis.h"
#include "tests/test_util.h"

namespace {

namespace fs = std::filesystem;

std::string qtlab(const std::string& arguments) {
  return std::string(QTLAB_BINARY) + " " + arguments;
}

const char* kTiny =
    "--dataset synthetic --threads 1 --set model.layers=2 --set model.hidden=32 "
    "--set model.heads=2 --set model.ffn=64 --set model.vocab_size=64 --set model.max_length=16 "
    "--set train.batch_size=8 --set train.eval_batches=2 --set train.eval_every=2 "
    "--set train.log_every=1 --set train.steps=4 ";

fs::path fresh(const std::string& name) {
  const fs::path dir = qt::test::scratch_directory("report_command") / name;
  fs::remove_all(dir);
  return dir;
}

std::string read_file(const fs::path& path) {
  std::ifstream in(path);
  std::stringstream text;
  text << in.rdbuf();
  return text.str();
}

// Two runs shared by the test cases (trained once per process).
struct Runs {
  fs::path opt, bert;
  Runs() {
    opt = fresh("opt-vanilla");
    bert = fresh("bert-gated");
    for (const auto& [dir, flags] :
         {std::pair{opt, std::string("--model opt-mini --quiet ")},
          std::pair{bert, std::string("--model bert-mini --quiet --gate linear ")}}) {
      const auto r =
          qt::test::run_command(qtlab("pretrain " + flags + kTiny + "--run-dir " + dir.string()));
      REQUIRE_MESSAGE(r.status == 0, r.output);
    }
  }
};
const Runs& runs() {
  static const Runs shared;
  return shared;
}

bool gnuplot_available() {
  return qt::test::run_command("gnuplot --version").status == 0;
}

}  // namespace

TEST_CASE("test_report_command: analyze writes analysis.json matching its printed table") {
  const fs::path& run = runs().bert;
  const fs::path out = fresh("analysis-out");
  const auto r = qt::test::run_command(
      qtlab("analyze --threads 1 --batches 2 --batch-size 4 --layer 0 --head 1 --out " +
            out.string() + " --checkpoint " + (run / "model.safetensors").string()));
  REQUIRE_MESSAGE(r.status == 0, r.output);
  REQUIRE(fs::exists(out / "analysis.json"));
  const nlohmann::json json = nlohmann::json::parse(read_file(out / "analysis.json"));
  CHECK(json["checkpoint"] == (run / "model.safetensors").string());
  const qt::quant::AnalysisResult a = qt::quant::analysis_from_json(json);
  CHECK(a.family == "bert");
  CHECK(a.batches == 2);
  CHECK(a.sequences == 8);
  CHECK(a.attention.layer == 0);
  CHECK(a.attention.head == 1);
  CHECK(a.attention.length == 16);
  CHECK(a.gates.size() == 2);  // gated run: gate statistics per layer
  CHECK(a.delimiter_names.size() >= 2);
  CHECK(a.histogram.point == "encoder.layer.1.ffn_out:output");
  // The printed table shows the same numbers.
  CHECK(r.output.find(fmt::format("{:.3f}", a.headline.max_inf_norm)) != std::string::npos);
  CHECK(r.output.find(fmt::format("{:.3f}", a.headline.avg_kurtosis)) != std::string::npos);
  CHECK(r.output.find(fmt::format("{:9.3f}", a.layer_metrics[1].ffn_output.inf_norm)) !=
        std::string::npos);
  CHECK(r.output.find("gate probability") != std::string::npos);
  // --json prints the same analysis (the default out dir is the run directory).
  const auto j =
      qt::test::run_command(qtlab("analyze --json --threads 1 --batches 2 --batch-size "
                                  "4 --layer 0 --head 1 --checkpoint " +
                                  (run / "model.safetensors").string()));
  REQUIRE_MESSAGE(j.status == 0, j.output);
  const nlohmann::json printed = nlohmann::json::parse(j.output.substr(j.output.find('{')));
  CHECK(printed == json);
  CHECK(fs::exists(run / "analysis.json"));
  fs::remove(run / "analysis.json");  // the report test below must compute it itself
}

TEST_CASE("test_report_command: report writes plots, data files and report.md") {
  const Runs& r = runs();
  // The OPT run gets its analysis beforehand; the BERT run's is computed by the report.
  fs::remove(r.bert / "analysis.json");
  const auto analysed = qt::test::run_command(qtlab(
      "analyze --threads 1 --batches 2 --checkpoint " + (r.opt / "model.safetensors").string()));
  REQUIRE_MESSAGE(analysed.status == 0, analysed.output);
  // The BERT run is quantized: its FP and W8A8 perplexities join the table.
  const auto quantized = qt::test::run_command(
      qtlab("quantize --json --integer --threads 1 --calib-batches 2 --eval-batches 2 "
            "--checkpoint " +
            (r.bert / "model.safetensors").string()));
  REQUIRE_MESSAGE(quantized.status == 0, quantized.output);
  const nlohmann::json q =
      nlohmann::json::parse(quantized.output.substr(quantized.output.find('{')));
  const fs::path out = fresh("report-out");
  const auto rep =
      qt::test::run_command(qtlab("report --threads 1 --batches 2 --out " + out.string() + " " +
                                  r.opt.string() + " " + r.bert.string() + "/"));
  if (!gnuplot_available()) {
    MESSAGE("gnuplot is not installed: only the error message is checked");
    CHECK(rep.status != 0);
    CHECK(rep.output.find("gnuplot not found") != std::string::npos);
    return;
  }
  REQUIRE_MESSAGE(rep.status == 0, rep.output);
  CHECK(fs::exists(r.bert / "analysis.json"));  // computed on the way
  const std::string md = read_file(out / "report.md");
  // Every image exists, is not empty and is referenced by report.md.
  for (const std::string image :
       {"inf_norm_per_layer.png", "kurtosis_per_layer.png", "loss.png", "histogram_opt-vanilla.png",
        "histogram_bert-gated.png", "attention_opt-vanilla.png", "attention_bert-gated.png"}) {
    CAPTURE(image);
    CHECK(fs::exists(out / image));
    if (fs::exists(out / image)) CHECK(fs::file_size(out / image) > 1000);
    CHECK(md.find("(" + image + ")") != std::string::npos);
  }
  // The headline table carries each run's analysis numbers and final validation loss.
  for (const auto& [dir, name] : {std::pair{r.opt, std::string("opt-vanilla")},
                                  std::pair{r.bert, std::string("bert-gated")}}) {
    const auto a =
        qt::quant::analysis_from_json(nlohmann::json::parse(read_file(dir / "analysis.json")));
    const std::string inf_norm = fmt::format("{:.3f}", a.headline.max_inf_norm);
    const std::string kurtosis = fmt::format("{:.3f}", a.headline.avg_kurtosis);
    const std::string row = "| " + name + " | " + a.family + " | 4 | ";
    const size_t at = md.find(row);
    REQUIRE(at != std::string::npos);
    const std::string line = md.substr(at, md.find('\n', at) - at);
    CAPTURE(line);
    if (name == "bert-gated") {
      // FP and W8A8 from quantize-w8a8.json, then the two outlier metrics.
      const std::string fp = fmt::format("{:.3f}", q["fp"]["perplexity"].get<double>());
      const std::string w8a8 = fmt::format("{:.3f}", q["quantized"]["perplexity"].get<double>());
      // ... and the integer-only model's (quantize --integer) in the next column.
      const std::string integer = fmt::format("{:.3f}", q["integer"]["perplexity"].get<double>());
      CHECK(line.find(fp + " | " + inf_norm + " | " + kurtosis + " | " + w8a8 + " | " + integer +
                      " |") != std::string::npos);
      CHECK(q["integer_agreement"]["tensors"].size() > 10);
      // The terminal table shows the same row.
      CHECK(rep.output.find(w8a8) != std::string::npos);
    } else {
      // Not quantized: FP from the training log, no W8A8.
      CHECK(line.find("(log) | " + inf_norm + " | " + kurtosis + " | - | - |") !=
            std::string::npos);
    }
    CHECK(rep.output.find(inf_norm) != std::string::npos);
    // Data files: one line per layer, the loss curve one line per logged step.
    const std::string layers = read_file(out / (name + ".layers.dat"));
    CHECK(std::count(layers.begin(), layers.end(), '\n') == 1 + 2);
    CHECK(layers.find(fmt::format("1 {:.9g} ", a.layer_metrics[1].ffn_output.inf_norm)) !=
          std::string::npos);
    const std::string loss = read_file(out / (name + ".loss.dat"));
    CHECK(std::count(loss.begin(), loss.end(), '\n') == 1 + 4);
    const std::string attention = read_file(out / (name + ".attention.dat"));
    CHECK(std::count(attention.begin(), attention.end(), '\n') == 16);
  }
  CHECK(md.find("gate probability per head") != std::string::npos);  // the gated run
  CHECK(fs::exists(out / "report.gp"));
  // Readable plots: labelled y axes, plain numbers on the log axes, one-bin-wide histogram boxes,
  // a log colour scale for the attention maps; delimiter tokens each in a code span.
  const std::string script = read_file(out / "report.gp");
  CHECK(script.find("set ylabel 'mean over rows of max |x| (log scale)'") != std::string::npos);
  CHECK(script.find("set format y '%g'") != std::string::npos);
  CHECK(script.find("set boxwidth") != std::string::npos);
  CHECK(script.find("set logscale cb") != std::string::npos);
  CHECK(md.find("(delimiters: `") != std::string::npos);

  // SVG on request.
  const fs::path svg = fresh("report-svg");
  const auto s = qt::test::run_command(
      qtlab("report --format svg --out " + svg.string() + " " + r.opt.string()));
  REQUIRE_MESSAGE(s.status == 0, s.output);
  CHECK(fs::exists(svg / "loss.svg"));
  CHECK(read_file(svg / "report.md").find("(loss.svg)") != std::string::npos);
}

TEST_CASE("test_report_command: bad input is an error naming it") {
  const fs::path missing = fresh("nowhere") / "model.safetensors";
  auto r = qt::test::run_command(qtlab("analyze --checkpoint " + missing.string()));
  CHECK(r.status != 0);
  CHECK(r.output.find(missing.string()) != std::string::npos);
  CHECK(r.output.find("does not exist") != std::string::npos);

  // A run directory without metrics.jsonl.
  const fs::path bare = fresh("bare-run");
  fs::create_directories(bare);
  r = qt::test::run_command(
      qtlab("report --out " + fresh("bad-out").string() + " " + bare.string()));
  CHECK(r.status != 0);
  if (gnuplot_available()) {
    CHECK(r.output.find("metrics.jsonl") != std::string::npos);
    CHECK(r.output.find(bare.string()) != std::string::npos);
  }
  // A run directory that does not exist.
  r = qt::test::run_command(qtlab("report " + (bare / "missing").string()));
  CHECK(r.status != 0);
  if (gnuplot_available()) CHECK(r.output.find("does not exist") != std::string::npos);
  // Metrics but no model and no analysis.
  {
    std::ofstream(bare / "metrics.jsonl") << R"({"step": 1, "loss": 2.5})"
                                          << "\n";
  }
  r = qt::test::run_command(
      qtlab("report --out " + fresh("bad-out2").string() + " " + bare.string()));
  CHECK(r.status != 0);
  if (gnuplot_available())
    CHECK(r.output.find("neither analysis.json nor a model") != std::string::npos);
  // gnuplot missing: a clear message.
  r = qt::test::run_command("QTLAB_GNUPLOT=/nonexistent/gnuplot " +
                            qtlab("report " + runs().opt.string()));
  CHECK(r.status != 0);
  CHECK(r.output.find("gnuplot not found") != std::string::npos);
  // An unknown format.
  r = qt::test::run_command(qtlab("report --format jpg " + runs().opt.string()));
  CHECK(r.status != 0);
  CHECK(r.output.find("unknown --format 'jpg'") != std::string::npos);
}
