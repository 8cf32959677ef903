// `qtlab experiment PLAN` (tools/experiment.cpp) and `qtlab results DIR` (tools/results.cpp), run
// as a user runs them: a tiny plan on the built-in synthetic data trains, quantizes (a bit-width
// sweep) and analyses at every evaluation step; an interrupted plan resumes and reaches the same
// numbers as an uninterrupted one; a second run of a finished plan does nothing; the tables are
// regenerated from the published results files alone. Plan errors name the file, run and key.
#include <doctest/doctest.h>

#include <filesystem>
#include <fstream>
#include <map>
#include <nlohmann/json.hpp>
#include <sstream>
#include <string>
#include <vector>

#include "tests/test_util.h"

namespace fs = std::filesystem;
using nlohmann::json;

namespace {

std::string qtlab(const std::string& arguments) {
  return std::string(QTLAB_BINARY) + " " + arguments;
}

std::string read_file(const fs::path& path) {
  std::ifstream in(path);
  std::stringstream text;
  text << in.rdbuf();
  return text.str();
}

void write_file(const fs::path& path, const std::string& text) {
  std::ofstream out(path);
  out << text;
}

std::vector<json> json_lines(const fs::path& path) {
  std::vector<json> out;
  std::ifstream in(path);
  std::string line;
  while (std::getline(in, line))
    if (!line.empty()) out.push_back(json::parse(line));
  return out;
}

// Two tiny BERTs (vanilla, clipped softmax), 6 steps, evaluated at steps 3 and 6.
const char* kTinyPlan = R"({
  "name": "tiny",
  "description": "test plan",
  "defaults": {
    "preset": "bert-mini", "steps": 6, "evaluate_at": [3, 6],
    "sweep": ["W8A8", "W8A6", "W4A8:mse", "W8A4"], "calibration_batches": 2, "analyze_batches": 1,
    "set": {"data.dataset": "synthetic", "model.layers": 1, "model.hidden": 32, "model.heads": 2,
            "model.ffn": 64, "model.vocab_size": 64, "model.max_length": 16,
            "train.batch_size": 8, "train.eval_batches": 1, "train.eval_every": 1000,
            "train.checkpoint_every": 1}
  },
  "runs": [
    {"name": "vanilla", "group": "tiny-bert", "variant": "vanilla"},
    {"name": "clipped", "group": "tiny-bert", "variant": "clipped", "seed": 7,
     "set": {"model.softmax": "clipped", "model.gamma": -0.1}}
  ]
})";

struct PlanDir {
  fs::path root, plan, runs, publish;
};

PlanDir plan_dir(const std::string& name, const std::string& plan_text = kTinyPlan) {
  PlanDir d;
  d.root = qt::test::scratch_directory("experiment_command") / name;
  fs::remove_all(d.root);
  fs::create_directories(d.root);
  d.plan = d.root / "plan.json";
  d.runs = d.root / "runs";
  d.publish = d.root / "published";
  write_file(d.plan, plan_text);
  return d;
}

std::string experiment(const PlanDir& d, const std::string& extra = "") {
  return qtlab("experiment " + d.plan.string() + " --runs-dir " + d.runs.string() + " --publish " +
               d.publish.string() + " --progress-every 1 " + extra);
}

// `text` with every run of spaces replaced by one space.
std::string collapse(const std::string& text) {
  std::string out;
  for (char c : text)
    if (!(c == ' ' && !out.empty() && out.back() == ' ')) out += c;
  return out;
}

// The records that do not depend on timing: quantize and analysis results.
std::vector<json> measured(const fs::path& results) {
  std::vector<json> out;
  for (const json& r : json_lines(results))
    if (r["kind"] != "training") out.push_back(r);
  return out;
}

}  // namespace

TEST_CASE("test_experiment_command: a tiny plan trains, sweeps and analyses every step") {
  const PlanDir d = plan_dir("complete");
  const auto r = qt::test::run_command(experiment(d, "--parallel 2"));
  REQUIRE_MESSAGE(r.status == 0, r.output);
  CHECK(r.output.find("all 2 runs done") != std::string::npos);
  for (const std::string run : {"vanilla", "clipped"}) {
    const fs::path dir = d.runs / "tiny" / run;
    const std::vector<json> records = json_lines(dir / "results.jsonl");
    // per step: 1 training + 4 quantize + 1 analysis record
    REQUIRE(records.size() == 12);
    int quantize = 0, analysis = 0, training = 0;
    for (const json& rec : records) {
      CHECK(rec["plan"] == "tiny");
      CHECK(rec["run"] == run);
      CHECK((rec["step"] == 3 || rec["step"] == 6));
      CHECK(rec["seed"] == (run == "clipped" ? 7 : 1000));
      if (rec["kind"] == "quantize") {
        ++quantize;
        const json& q = rec["result"];
        CHECK(q["spec"] == rec["spec"]);
        CHECK(q["fp"]["perplexity"].get<double>() > 1.0);
        CHECK(q["quantized"]["perplexity"].get<double>() > 1.0);
        if (rec["spec"] == "W4A8:mse") {
          CHECK(q["weight_bits"] == 4);
          CHECK(q["weight_range"] == "MSE");
        }
      }
      if (rec["kind"] == "analysis") {
        ++analysis;
        CHECK(rec["analysis"]["headline"]["max_inf_norm"].get<double>() > 0);
        CHECK_FALSE(rec["analysis"].contains("attention_matrix"));  // plot data stays out
        CHECK_FALSE(rec["analysis"].contains("histogram"));
      }
      if (rec["kind"] == "training") {
        ++training;
        CHECK(rec["metrics"]["step"] == rec["step"]);
        CHECK(rec["metrics"].contains("val_perplexity"));
      }
    }
    CHECK(quantize == 8);
    CHECK(analysis == 2);
    CHECK(training == 2);
    // The FP figure of every sweep entry of a step is the same evaluation.
    CHECK(records[1]["result"]["fp"] == records[2]["result"]["fp"]);
    // the published copy is the run's results file; the snapshots stay in the run directory
    CHECK(read_file(d.publish / (run + ".jsonl")) == read_file(dir / "results.jsonl"));
    CHECK(fs::exists(dir / "snapshots" / "step-3.safetensors"));
    CHECK(fs::exists(dir / "model.safetensors"));
  }
  CHECK(read_file(d.publish / "plan.json") == kTinyPlan);
  // The clipped run used its own config keys on top of the defaults'.
  const json config = json::parse(read_file(d.runs / "tiny" / "clipped" / "config.json"));
  CHECK(config["model"]["softmax"] == "clipped");
  CHECK(config["model"]["hidden"] == 32);
  CHECK(config["train"]["seed"] == 7);

  {  // a finished plan is not run again
    const std::string log = read_file(d.runs / "tiny" / "vanilla" / "log.txt");
    const std::string results = read_file(d.runs / "tiny" / "vanilla" / "results.jsonl");
    const auto again = qt::test::run_command(experiment(d));
    REQUIRE_MESSAGE(again.status == 0, again.output);
    CHECK(read_file(d.runs / "tiny" / "vanilla" / "log.txt") == log);
    CHECK(read_file(d.runs / "tiny" / "vanilla" / "results.jsonl") == results);
    const auto status = qt::test::run_command(experiment(d, "--status"));
    CHECK(status.output.find("evaluations 2/2  done") != std::string::npos);
  }
  {  // qtlab results regenerates the same tables from the published files alone
    const fs::path plots = d.root / "plots";
    const auto first = qt::test::run_command(
        qtlab("results " + d.publish.string() + " --plots " + plots.string()));
    REQUIRE_MESSAGE(first.status == 0, first.output);
    const auto second = qt::test::run_command(qtlab("results " + d.publish.string()));
    REQUIRE(second.status == 0);
    CHECK(first.output == second.output);
    CHECK(first.output.find("## tiny-bert") != std::string::npos);
    CHECK(first.output.find("| 6 | clipped | 7 |") != std::string::npos);
    CHECK(fs::exists(plots / "tiny-bert.svg"));
  }
}

TEST_CASE("test_experiment_command: an interrupted plan resumes to the uninterrupted numbers") {
  const PlanDir straight = plan_dir("straight");
  const auto r = qt::test::run_command(experiment(straight, "--only vanilla"));
  REQUIRE_MESSAGE(r.status == 0, r.output);

  // The same plan, with the training process crashing at step 4 (after evaluation step 3).
  const PlanDir broken = plan_dir("interrupted");
  const auto crashed =
      qt::test::run_command("QTLAB_FAULT_INJECT=0:4 " + experiment(broken, "--only vanilla"));
  CHECK(crashed.status != 0);
  CHECK(crashed.output.find("vanilla FAILED") != std::string::npos);
  CHECK(crashed.output.find("1 run(s) failed: vanilla") != std::string::npos);
  const fs::path dir = broken.runs / "tiny" / "vanilla";
  CHECK(json_lines(dir / "results.jsonl").size() == 6);  // step 3 only
  CHECK(read_file(dir / "log.txt").find("simulated crash at step 4") != std::string::npos);

  const auto resumed = qt::test::run_command(experiment(broken, "--only vanilla"));
  REQUIRE_MESSAGE(resumed.status == 0, resumed.output);
  CHECK(read_file(dir / "log.txt").find("resumed") != std::string::npos);
  // Bit-identical training: the same quantized figures and analysis at both steps.
  CHECK(measured(dir / "results.jsonl") ==
        measured(straight.runs / "tiny" / "vanilla" / "results.jsonl"));
}

TEST_CASE(
    "test_experiment_command: a retrained run adopts the published evaluations it reproduces") {
  const PlanDir d = plan_dir("adopt");
  const auto first = qt::test::run_command(experiment(d, "--only vanilla"));
  REQUIRE_MESSAGE(first.status == 0, first.output);
  const fs::path published = d.publish / "vanilla.jsonl";
  const std::vector<json> evaluated = json_lines(published);
  REQUIRE(evaluated.size() == 12);

  // A new machine: runs/ is empty. A crash at step 4 (after evaluation step 3) keeps the
  // published step 6 in the published file although the run has not reached it again.
  fs::remove_all(d.runs);
  const auto crashed =
      qt::test::run_command("QTLAB_FAULT_INJECT=0:4 " + experiment(d, "--only vanilla"));
  CHECK(crashed.status != 0);
  CHECK(json_lines(published).size() == 12);
  const auto resumed = qt::test::run_command(experiment(d, "--only vanilla"));
  REQUIRE_MESSAGE(resumed.status == 0, resumed.output);
  const fs::path dir = d.runs / "tiny" / "vanilla";
  const std::string log = read_file(dir / "log.txt");
  CHECK(log.find("step 3: training reproduced the published record bit for bit") !=
        std::string::npos);
  CHECK(log.find("step 6: training reproduced") != std::string::npos);
  CHECK(log.find("qtlab quantize") == std::string::npos);  // no evaluation was repeated
  CHECK(log.find("qtlab analyze") == std::string::npos);
  const std::vector<json> adopted = json_lines(published);
  REQUIRE(adopted.size() == evaluated.size());
  for (size_t i = 0; i < adopted.size(); ++i) {
    CHECK(adopted[i]["adopted"] == true);
    json without = adopted[i];
    without.erase("adopted");
    CHECK(without == evaluated[i]);
  }

  // Published results of another trajectory (here: a changed validation loss) are not adopted.
  std::string text;
  for (json r : evaluated) {
    if (r["kind"] == "training" && r["step"] == 3) r["metrics"]["val_loss"] = 1.5;
    text += r.dump() + "\n";
  }
  write_file(published, text);
  fs::remove_all(d.runs);
  const auto refused = qt::test::run_command(experiment(d, "--only vanilla"));
  CHECK(refused.status != 0);
  const std::string refusal = read_file(dir / "log.txt");
  CHECK(refusal.find("retrained to step 3, its val_loss is") != std::string::npos);
  CHECK(refusal.find("--no-adopt") != std::string::npos);
  // --adopt-unreproduced keeps them, marked, with this machine's training record beside them.
  fs::remove_all(d.runs);
  const auto kept = qt::test::run_command(experiment(d, "--only vanilla --adopt-unreproduced"));
  REQUIRE_MESSAGE(kept.status == 0, kept.output);
  for (const json& r : json_lines(published)) {
    CHECK(r["adopted"] == true);
    CHECK(r.contains("reproduced") == (r["step"] == 3));
    if (r["step"] == 3 && r["kind"] == "training") {
      CHECK(r["metrics"]["val_loss"] == 1.5);
      CHECK(r["retrained_metrics"]["val_loss"] != 1.5);
    }
  }
  {  // the results table marks the seed of the step that came from the other trajectory
    const auto table = qt::test::run_command(qtlab("results " + d.publish.string()));
    REQUIRE_MESSAGE(table.status == 0, table.output);
    CHECK(table.output.find("| 3 | vanilla | 1000* |") != std::string::npos);
    CHECK(table.output.find("| 6 | vanilla | 1000 |") != std::string::npos);
  }
  fs::remove_all(d.runs);
  const auto fresh = qt::test::run_command(experiment(d, "--only vanilla --no-adopt"));
  REQUIRE_MESSAGE(fresh.status == 0, fresh.output);
  CHECK(measured(published) == measured(d.runs / "tiny" / "vanilla" / "results.jsonl"));
  for (const json& r : json_lines(published)) CHECK_FALSE(r.contains("adopted"));
}

TEST_CASE("test_experiment_command: a second driver on the same run refuses") {
  const PlanDir d = plan_dir("locked");
  const fs::path dir = d.runs / "tiny" / "vanilla";
  fs::create_directories(dir);
  // Hold the run's lock from a shell (flock(1) takes the same kind of lock as the driver).
  const auto r = qt::test::run_command("flock " + (dir / ".lock").string() + " " +
                                       experiment(d, "--only vanilla"));
  CHECK(r.status != 0);
  CHECK(r.output.find("is being run by another process") != std::string::npos);
}

TEST_CASE("test_experiment_command: plan errors name the file, the run and the key") {
  const auto error_of = [](const std::string& text) {
    const PlanDir d = plan_dir("errors", text);
    const auto r = qt::test::run_command(experiment(d, "--dry-run"));
    CHECK(r.status != 0);
    return r.output;
  };
  const std::string run =
      R"("group": "g", "variant": "v", "preset": "bert-mini", "steps": 6, "evaluate_at": [3, 6], "sweep": ["W8A8"])";
  CHECK(error_of(R"({"name": "p", "runs": [{"name": "a", "stepz": 3, )" + run + "}]}")
            .find("unknown key 'stepz'") != std::string::npos);
  CHECK(error_of(R"({"name": "p", "runs": [{"name": "a", )" + run + "}, {\"name\": \"a\", " + run +
                 "}]}")
            .find("the run name 'a' is used twice") != std::string::npos);
  CHECK(
      error_of(
          R"({"name": "p", "runs": [{"name": "a", "group": "g", "variant": "v", "preset": "bert-mini", "steps": 6, "evaluate_at": [3, 5], "sweep": ["W8A8"]}]})")
          .find("the last evaluation must be the last step 6") != std::string::npos);
  CHECK(
      error_of(
          R"({"name": "p", "runs": [{"name": "a", "group": "g", "variant": "v", "preset": "bert-mini", "steps": 6, "evaluate_at": [3, 6], "sweep": ["W8X8"]}]})")
          .find("quantization 'W8X8'") != std::string::npos);
  CHECK(
      error_of(R"({"name": "p", "runs": [{"name": "a", "set": {"model.hiden": 3}, )" + run + "}]}")
          .find("run 'a'") != std::string::npos);
  CHECK(error_of(R"({"name": "p", "runs": [{"name": "a", "set": {"train.seed": 3}, )" + run + "}]}")
            .find("'train.seed' is set by the plan's own keys") != std::string::npos);
  CHECK(error_of(R"({"name": "../p", "runs": []})").find("may hold only letters") !=
        std::string::npos);
  CHECK(error_of("{not json").find("not valid JSON") != std::string::npos);
}

TEST_CASE("test_experiment_command: results aggregate seeds as mean and sample std") {
  // Two seeds measured by hand: FP perplexity 100 and 110; W8A8 100.5 and 110.55 (+0.5% both);
  // W8A6 100.9 / 111.0 (within 1%); W8A4 +20% / +30%. Mean FP 105, sample std
  // sqrt((25 + 25) / 1) = 7.07; W8A8 mean 105.525, std 5.025 * sqrt(2) = 7.106; safe activation
  // bits 6 for both (W8A4 is more than 1% worse); 3 of the 4 outliers on [SEP] = 75%.
  const fs::path dir = qt::test::scratch_directory("experiment_command") / "aggregate";
  fs::remove_all(dir);
  fs::create_directories(dir);
  const auto write_seed = [&](uint64_t seed, double fp, double w8a8, double w8a6, double w8a4,
                              double inf_norm) {
    std::string text;
    const auto identity = [&](const std::string& kind) {
      return json{
          {"group", "g"}, {"variant", "vanilla"}, {"seed", seed}, {"step", 100}, {"kind", kind}};
    };
    for (const auto& [spec, q] : std::vector<std::pair<std::string, double>>{
             {"W8A8", w8a8}, {"W8A6", w8a6}, {"W8A4", w8a4}}) {
      json r = identity("quantize");
      r["spec"] = spec;
      r["result"] = {
          {"family", "bert"}, {"fp", {{"perplexity", fp}}}, {"quantized", {{"perplexity", q}}}};
      text += r.dump() + "\n";
    }
    json a = identity("analysis");
    a["analysis"] = {
        {"headline", {{"max_inf_norm", inf_norm}, {"avg_kurtosis", 3.0}}},
        {"delimiter_names", {"[SEP]"}},
        {"outliers",
         {{{"tokens", {{{"text", "[SEP]"}, {"count", 3}}, {{"text", "x"}, {"count", 1}}}}}}},
        {"delimiter_attention", {{0.25, 0.5}}}};
    text += a.dump() + "\n";
    write_file(dir / ("run-" + std::to_string(seed) + ".jsonl"), text);
  };
  write_seed(1, 100, 100.5, 100.9, 120, 10);
  write_seed(2, 110, 110.55, 111.0, 143, 20);
  const auto r = qt::test::run_command(qtlab("results " + dir.string()));
  REQUIRE_MESSAGE(r.status == 0, r.output);
  // step, variant, seeds, FP, max inf-norm, avg kurtosis, W8A8, gap, safe bits, delimiters, mass
  CHECK_MESSAGE(r.output.find("| 100 | vanilla | 1, 2 | 105.00 ± 7.07 | 15.00 ± 7.07 | 3.00 ± 0.00 "
                              "| 105.53 ± 7.11 | +0.50 ± 0.00% | 6.0 ± 0.0 | 75.0 ± 0.0 | "
                              "0.500 ± 0.000 | – |") != std::string::npos,
                r.output);
  // a torn line is an error naming the file and line
  write_file(dir / "run-3.jsonl", "{\"group\": ");
  const auto torn = qt::test::run_command(qtlab("results " + dir.string()));
  CHECK(torn.status != 0);
  CHECK(torn.output.find("run-3.jsonl line 1") != std::string::npos);
}

TEST_CASE("test_experiment_command: --reanalyze recomputes analyses from snapshots beside a run") {
  const PlanDir d = plan_dir("reanalyze");
  const auto r = qt::test::run_command(experiment(d, "--only vanilla"));
  REQUIRE_MESSAGE(r.status == 0, r.output);
  const fs::path dir = d.runs / "tiny" / "vanilla";
  const std::string results = read_file(dir / "results.jsonl");
  const std::string published = read_file(d.publish / "vanilla.jsonl");
  std::map<int64_t, json> evaluated;  // step -> the driver's analysis
  for (const json& rec : json_lines(dir / "results.jsonl"))
    if (rec["kind"] == "analysis") evaluated[rec["step"].get<int64_t>()] = rec["analysis"];

  // With the run's lock held, as by a driver that is training the run, the re-analysis runs: it
  // reads only the snapshots and leaves the run's own files alone.
  const std::string lock_run = "flock " + (dir / ".lock").string() + " ";
  const auto first = qt::test::run_command(lock_run + experiment(d, "--only vanilla --reanalyze"));
  REQUIRE_MESSAGE(first.status == 0, first.output);
  CHECK(first.output.find("re-analysed: 3, 6; already current: none; no snapshot: none") !=
        std::string::npos);
  const std::vector<json> records = json_lines(dir / "reanalysis.jsonl");
  REQUIRE(records.size() == 2);
  for (const json& rec : records) {
    const int64_t step = rec["step"].get<int64_t>();
    CAPTURE(step);
    CHECK(rec["kind"] == "analysis");
    CHECK(rec["reanalysis"] == true);
    CHECK(rec["run"] == "vanilla");
    CHECK(rec["analysis"]["version"] == 2);
    CHECK(rec["analysis"].contains("mechanism"));
    // The same snapshot and options as the driver's own analysis: the same numbers.
    CHECK(rec["analysis"] == evaluated.at(step));
  }
  CHECK(read_file(d.publish / "vanilla.reanalysis.jsonl") == read_file(dir / "reanalysis.jsonl"));
  CHECK(read_file(dir / "results.jsonl") == results);
  CHECK(read_file(d.publish / "vanilla.jsonl") == published);

  // Again: everything is current, nothing is rewritten.
  const std::string reanalysis = read_file(dir / "reanalysis.jsonl");
  const auto again = qt::test::run_command(experiment(d, "--only vanilla --reanalyze"));
  REQUIRE_MESSAGE(again.status == 0, again.output);
  CHECK(again.output.find("re-analysed: none; already current: 3, 6") != std::string::npos);
  CHECK(read_file(dir / "reanalysis.jsonl") == reanalysis);

  // A record of an older analysis version is recomputed (the others are kept).
  std::string older;
  for (json rec : records) {
    if (rec["step"] == 3) rec["analysis"]["version"] = 1;
    older += rec.dump() + "\n";
  }
  write_file(dir / "reanalysis.jsonl", older);
  fs::remove(dir / "reanalysis" / "step-3" / "analysis.json");
  const auto update = qt::test::run_command(experiment(d, "--only vanilla --reanalyze"));
  REQUIRE_MESSAGE(update.status == 0, update.output);
  CHECK(update.output.find("re-analysed: 3; already current: 6") != std::string::npos);
  CHECK(read_file(dir / "reanalysis.jsonl") == reanalysis);

  // Two re-analyses of one run exclude each other.
  const auto locked = qt::test::run_command("flock " + (dir / ".reanalysis.lock").string() + " " +
                                            experiment(d, "--only vanilla --reanalyze"));
  CHECK(locked.status != 0);
  CHECK(locked.output.find("the re-analysis of run 'vanilla' is being run by another process") !=
        std::string::npos);
  // A run without snapshots has nothing to re-analyse.
  const auto clipped = qt::test::run_command(experiment(d, "--only clipped --reanalyze"));
  REQUIRE_MESSAGE(clipped.status == 0, clipped.output);
  CHECK(clipped.output.find("no snapshot: any step") != std::string::npos);

  // The tables read both files; the analyses agree, so the Table 2 rows are those without it.
  const auto table = qt::test::run_command(qtlab("results " + d.publish.string()));
  REQUIRE_MESSAGE(table.status == 0, table.output);
  CHECK(table.output.find("No-op mechanism") != std::string::npos);
  CHECK(table.output.find("| 6 | vanilla | 1000 | delimiters |") != std::string::npos);
  fs::remove(d.publish / "vanilla.reanalysis.jsonl");
  const auto without = qt::test::run_command(qtlab("results " + d.publish.string()));
  CHECK(without.output == table.output);
}

TEST_CASE("test_experiment_command: results count the newest analysis and print the mechanism") {
  const fs::path dir = qt::test::scratch_directory("experiment_command") / "versions";
  fs::remove_all(dir);
  fs::create_directories(dir);
  const json identity = {{"group", "g"}, {"variant", "vanilla"}, {"seed", 1},
                         {"step", 100},  {"run", "run-x"},       {"kind", "analysis"}};
  // Version 2 (read first): 3 of 4 outliers on the delimiters, exactly.
  json newer = identity;
  newer["analysis"] = {{"version", 2},
                       {"headline", {{"max_inf_norm", 12.0}, {"avg_kurtosis", 4.0}}},
                       {"delimiter_names", {"[SEP]"}},
                       {"outliers", json::array()},
                       {"delimiter_attention", {{0.8, 0.1}}},
                       {"mechanism",
                        {{"token_sets",
                          {{{"name", "delimiters"},
                            {"tokens", 10},
                            {"all_tokens", 100},
                            {"outliers_on", 3},
                            {"outliers", 4},
                            {"mass_value_ratio_correlation", -0.5},
                            {"top_heads",
                             {{{"layer", 1},
                               {"head", 2},
                               {"mass", 0.8},
                               {"value_norm_ratio", 0.25},
                               {"gate_in", nullptr},
                               {"gate_out", nullptr}},
                              {{"layer", 0},
                               {"head", 0},
                               {"mass", 0.1},
                               {"value_norm_ratio", nullptr},
                               {"gate_in", 0.05},
                               {"gate_out", 0.5}}}}}}}}}};
  write_file(dir / "a.jsonl", newer.dump() + "\n");
  // Version 1 (read last, must not count): other numbers, 1 of 2 top-token outliers on [SEP].
  json older = identity;
  older["analysis"] = {
      {"headline", {{"max_inf_norm", 99.0}, {"avg_kurtosis", 9.0}}},
      {"delimiter_names", {"[SEP]"}},
      {"outliers",
       {{{"tokens", {{{"text", "[SEP]"}, {"count", 1}}, {{"text", "x"}, {"count", 1}}}}}}},
      {"delimiter_attention", {{0.3, 0.1}}}};
  json quantize = identity;
  quantize["kind"] = "quantize";
  quantize["spec"] = "W8A8";
  quantize["result"] = {
      {"family", "bert"}, {"fp", {{"perplexity", 50.0}}}, {"quantized", {{"perplexity", 51.0}}}};
  write_file(dir / "b.jsonl", older.dump() + "\n" + quantize.dump() + "\n");
  const auto r = qt::test::run_command(qtlab("results " + dir.string()));
  REQUIRE_MESSAGE(r.status == 0, r.output);
  CHECK_MESSAGE(r.output.find("| 100 | vanilla | 1 | 50.00 | 12.00 | 4.00 | 51.00 | +2.00% | – | "
                              "75.0 | 0.800 | – |") != std::string::npos,
                r.output);
  CHECK_MESSAGE(r.output.find("| 100 | vanilla | 1 | delimiters | 10.0 | 75.0 | -0.50 | L1.H2 0.80 "
                              "‖v‖×0.25; L0.H0 0.10 ‖v‖×– π 0.05/0.50 |") != std::string::npos,
                r.output);
  // --rows: one labelled line per run and step.
  const auto rows = qt::test::run_command(qtlab("results --rows " + dir.string()));
  REQUIRE_MESSAGE(rows.status == 0, rows.output);
  CHECK(rows.output.find("committed long-run results") != std::string::npos);
  CHECK_MESSAGE(
      collapse(rows.output).find(" run-x 1 100 50.00 12.00 4.00 51.00 -\n") != std::string::npos,
      rows.output);
}
