// `qtlab results DIR`: the tables (and, with --plots, the growth-curve plots) of an experiment
// plan, from its committed results files alone (DIR/<run>.jsonl, written by `qtlab experiment`;
// no checkpoint, no retraining). `make results` runs it on docs/results/table2.
//
// Per group (the same model size and data), variant (the attention) and evaluation step, over the
// seeds that reached that step: mean ± sample standard deviation (n − 1; one seed: the value) of
//   FP           validation perplexity (text) or accuracy (images) of the FP32 model, full split
//   W8A8         the same after simulated W8A8 (the quantize record "W8A8")
//   W8A8 gap     text: W8A8 / FP − 1 in %; images: W8A8 − FP accuracy in points
//   max ∞-norm, avg kurtosis   the Table 2 columns (qtlab analyze: quant/outlier_analysis.h)
//   safe A bits  the lowest activation bit width b of the sweep's W8A<b> entries whose quantized
//                figure stays within 1% (relative) of FP, with every wider W8A<b'> also within
//                1%; the sharper measure of quantizability at this scale (W8A8 forgives a lot)
//   delim. outl. the share of the 6σ outliers of the FFN and block outputs that sit on a delimiter
//                token (BERT [CLS] [SEP] . ,; OPT </s>; ViT the CLS position): exact for analyses
//                of version 2 (quant/outlier_analysis.h), among each point's ten most frequent
//                tokens for version 1
//   max delim. attention   the largest per-head attention mass on delimiter keys over all layers
//   min gate     gated runs: the smallest per-head mean gate probability π over all layers
// and per run and step, the no-op mechanism (quant/attention_mechanism.h) of each token set S
// (text: delimiters; images: CLS, background patches): the share of tokens and of 6σ outliers on
// S, the correlation over heads of the attention mass on S with the value-norm ratio on / off S,
// and the heads with most mass on S with their ratio and gates.
//
// When a step has several analysis records (`qtlab experiment --reanalyze` adds a newer one in
// <run>.reanalysis.jsonl), the highest analysis version counts; of equal versions, the one read
// last (files in name order).
//
// --rows prints instead one plain-text line per run and evaluation step (run, seed, step and the
// Table 2 columns), the form `make demo` prints beside its own rows.
#include <fmt/format.h>

#include <algorithm>
#include <array>
#include <cctype>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <map>
#include <nlohmann/json.hpp>
#include <set>
#include <string>
#include <vector>

#include "tensor/atomic_file.h"
#include "tensor/error.h"
#include "tools/commands.h"
#include "tools/gnuplot.h"

namespace fs = std::filesystem;
using nlohmann::json;

namespace {

struct ResultsArguments {
  std::string dir;
  std::string out;        // "": stdout
  std::string plots_dir;  // "": no plots
  bool rows = false;      // plain-text rows per run and step instead of the Markdown
};

// What one run measured at one evaluation step.
struct StepMeasurement {
  std::map<std::string, double> value;  // column key -> value (absent: not measured)
  std::string run;                      // the plan's run name
  int analysis_version = 0;             // of the analysis counted (0: none yet)
  json mechanism;                       // its "mechanism" object (null: version 1)
  // Adopted by a run retrained on another machine without reproducing its training records
  // ("reproduced": false, tools/experiment.cpp): the seed's steps then come from two trajectories.
  bool other_trajectory = false;
};

// group -> variant -> step -> seed -> measurement
using Table =
    std::map<std::string,
             std::map<std::string, std::map<int64_t, std::map<uint64_t, StepMeasurement>>>>;

struct Columns {
  bool images = false;
  std::vector<std::string> sweep;  // spec texts in the order first seen
};

double metric_of(const json& evaluation, bool images) {
  return images ? 100 * evaluation.at("accuracy").get<double>()
                : evaluation.at("perplexity").get<double>();
}

// Relative change in % for perplexity, points for accuracy.
double gap(double fp, double quantized, bool images) {
  return images ? quantized - fp : 100 * (quantized / fp - 1);
}

bool within_one_percent(double fp, double quantized, bool images) {
  // images: a 1% relative drop in accuracy; text: 1% relative rise in perplexity
  return images ? quantized >= fp * 0.99 : quantized <= fp * 1.01;
}

void add_analysis(StepMeasurement& m, const json& a) {
  const int version = a.value("version", 1);
  if (version < m.analysis_version) return;  // a newer analysis of this step is counted
  m.analysis_version = version;
  m.mechanism = a.value("mechanism", json());
  m.value.erase("delimiter_outliers");
  m.value.erase("min_gate");
  m.value["max_inf_norm"] = a.at("headline").at("max_inf_norm").get<double>();
  m.value["avg_kurtosis"] = a.at("headline").at("avg_kurtosis").get<double>();
  std::set<std::string> delimiters;
  for (const json& name : a.value("delimiter_names", json::array()))
    delimiters.insert(name.get<std::string>());
  int64_t on_delimiters = 0, counted = 0;
  for (const json& point : a.value("outliers", json::array()))
    for (const json& token : point.value("tokens", json::array())) {
      const int64_t count = token.value("count", int64_t{0});
      counted += count;
      if (delimiters.count(token.value("text", std::string())) == 1) on_delimiters += count;
    }
  if (m.mechanism.is_object() && !m.mechanism.at("token_sets").empty()) {
    // exact: every outlier, not only the top tokens'
    const json& first = m.mechanism.at("token_sets").at(0);
    on_delimiters = first.at("outliers_on").get<int64_t>();
    counted = first.at("outliers").get<int64_t>();
  }
  if (counted > 0) m.value["delimiter_outliers"] = 100.0 * on_delimiters / counted;
  double max_mass = 0;
  for (const json& layer : a.value("delimiter_attention", json::array()))
    for (const json& head : layer) max_mass = std::max(max_mass, head.get<double>());
  m.value["delimiter_attention"] = max_mass;
  const json gates = a.value("gates", json::array());
  if (!gates.empty()) {
    double min_gate = 1;
    for (const json& layer : gates)
      for (const json& head : layer) min_gate = std::min(min_gate, head.at("mean").get<double>());
    m.value["min_gate"] = min_gate;
  }
}

// Reads every DIR/*.jsonl into the table.
Table read_results(const std::string& dir, std::map<std::string, Columns>& group_columns) {
  QT_CHECK(fs::is_directory(dir), "results: {} is not a directory", dir);
  std::vector<fs::path> files;
  for (const auto& entry : fs::directory_iterator(dir))
    if (entry.path().extension() == ".jsonl") files.push_back(entry.path());
  std::sort(files.begin(), files.end());
  QT_CHECK(!files.empty(), "results: {} holds no .jsonl results files", dir);
  Table table;
  std::map<std::string, std::set<std::string>> sweep_seen;  // per group
  for (const fs::path& file : files) {
    std::ifstream in(file);
    std::string line;
    int64_t number = 0;
    // per (step): FP figure and the quantized figure per spec
    std::map<int64_t, std::map<std::string, double>> quantized;
    std::map<int64_t, double> fp;
    std::string group, variant;
    uint64_t seed = 0;
    while (std::getline(in, line)) {
      ++number;
      if (line.empty()) continue;
      const json r = json::parse(line, nullptr, false);
      QT_CHECK(!r.is_discarded() && r.is_object(), "results: {} line {} is not a JSON object",
               file.string(), number);
      try {
        group = r.at("group").get<std::string>();
        variant = r.at("variant").get<std::string>();
        seed = r.at("seed").get<uint64_t>();
        const int64_t step = r.at("step").get<int64_t>();
        const std::string kind = r.at("kind").get<std::string>();
        StepMeasurement& m = table[group][variant][step][seed];
        m.run = r.value("run", file.stem().string());
        if (r.value("reproduced", true) == false) m.other_trajectory = true;
        Columns& columns = group_columns[group];
        if (kind == "quantize") {
          const json& result = r.at("result");
          columns.images = result.at("family").get<std::string>() == "vit";
          const std::string spec = r.at("spec").get<std::string>();
          if (sweep_seen[group].insert(spec).second) columns.sweep.push_back(spec);
          fp[step] = metric_of(result.at("fp"), columns.images);
          quantized[step][spec] = metric_of(result.at("quantized"), columns.images);
          m.value["fp"] = fp[step];
          m.value["q:" + spec] = quantized[step][spec];
        } else if (kind == "analysis") {
          add_analysis(m, r.at("analysis"));
        }
      } catch (const nlohmann::json::exception& e) {
        qt::fail("results: {} line {}: {}", file.string(), number, e.what());
      }
    }
    // derived columns: the W8A8 gap and the lowest safe activation bit width
    const Columns& columns = group_columns[group];
    for (const auto& [step, specs] : quantized) {
      StepMeasurement& m = table[group][variant][step][seed];
      const double f = fp[step];
      if (specs.count("W8A8") == 1) m.value["w8a8_gap"] = gap(f, specs.at("W8A8"), columns.images);
      int safe = 0;
      for (int bits = 16; bits >= 2; --bits) {
        const auto it = specs.find(fmt::format("W8A{}", bits));
        if (it == specs.end()) continue;
        if (!within_one_percent(f, it->second, columns.images)) break;
        safe = bits;
      }
      if (safe > 0) m.value["safe_bits"] = safe;
    }
  }
  return table;
}

struct Summary {
  int n = 0;
  double mean = 0, std = 0;
};

Summary summarize(const std::map<uint64_t, StepMeasurement>& seeds, const std::string& key) {
  std::vector<double> values;
  for (const auto& [seed, m] : seeds) {
    const auto it = m.value.find(key);
    if (it != m.value.end()) values.push_back(it->second);
  }
  Summary s;
  s.n = static_cast<int>(values.size());
  if (s.n == 0) return s;
  for (double v : values) s.mean += v;
  s.mean /= s.n;
  if (s.n > 1) {
    double sum = 0;
    for (double v : values) sum += (v - s.mean) * (v - s.mean);
    s.std = std::sqrt(sum / (s.n - 1));
  }
  return s;
}

std::string cell(const Summary& s, int decimals, bool sign = false) {
  if (s.n == 0) return "–";
  const std::string value =
      sign ? fmt::format("{:+.{}f}", s.mean, decimals) : fmt::format("{:.{}f}", s.mean, decimals);
  if (s.n == 1) return value;
  return fmt::format("{} ± {:.{}f}", value, s.std, decimals);
}

// The seeds, each marked "*" where its step was measured on another trajectory of that seed.
std::string seeds_text(const std::map<uint64_t, StepMeasurement>& seeds) {
  std::string out;
  for (const auto& [seed, m] : seeds)
    out += (out.empty() ? "" : ", ") + std::to_string(seed) + (m.other_trajectory ? "*" : "");
  return out;
}

std::string optional_number(const json& value, const char* format) {
  return value.is_number() ? fmt::format(fmt::runtime(format), value.get<double>()) : "–";
}

// One token set's heads with most attention mass: "L<l>.H<h> <mass> ‖v‖×<ratio>[ π <in>/<out>]".
std::string top_heads_text(const json& set) {
  std::string out;
  for (const json& h : set.at("top_heads")) {
    out += fmt::format("{}L{}.H{} {:.2f} ‖v‖×{}", out.empty() ? "" : "; ", h.at("layer").get<int>(),
                       h.at("head").get<int>(), h.at("mass").get<double>(),
                       optional_number(h.value("value_norm_ratio", json()), "{:.2f}"));
    if (h.value("gate_in", json()).is_number() || h.value("gate_out", json()).is_number())
      out += fmt::format(" π {}/{}", optional_number(h.value("gate_in", json()), "{:.2f}"),
                         optional_number(h.value("gate_out", json()), "{:.2f}"));
  }
  return out.empty() ? "–" : out;
}

// The no-op mechanism table of one group: one row per step, variant, seed and token set.
std::string mechanism_markdown(
    const std::map<std::string, std::map<int64_t, std::map<uint64_t, StepMeasurement>>>& variants) {
  std::string rows;
  for (const auto& [variant, by_step] : variants)
    for (const auto& [step, seeds] : by_step)
      for (const auto& [seed, m] : seeds) {
        if (!m.mechanism.is_object()) continue;
        for (const json& set : m.mechanism.at("token_sets")) {
          const auto share = [](int64_t part, int64_t whole) {
            return whole > 0 ? fmt::format("{:.1f}", 100.0 * static_cast<double>(part) /
                                                         static_cast<double>(whole))
                             : std::string("–");
          };
          rows += fmt::format(
              "| {} | {} | {} | {} | {} | {} | {} | {} |\n", step, variant, seed,
              set.at("name").get<std::string>(),
              share(set.at("tokens").get<int64_t>(), set.at("all_tokens").get<int64_t>()),
              share(set.at("outliers_on").get<int64_t>(), set.at("outliers").get<int64_t>()),
              optional_number(set.value("mass_value_ratio_correlation", json()), "{:+.2f}"),
              top_heads_text(set));
        }
      }
  std::string md =
      "\nNo-op mechanism (paper §3) per run and step, token set S (text: the delimiters; images: "
      "the CLS token and the background patches): % of the analysed tokens in S (attention "
      "spread uniformly would put about this share on S), % of the 6σ outliers (FFN and block "
      "outputs) on S, the correlation over all heads of the attention mass on S with the "
      "value-norm ratio ‖v‖ on S / off S (the paper predicts < 0), and the "
      "three heads with most mass on S: layer.head, mass, ‖v‖ ratio, gate π on S / off S (gated "
      "runs).\n\n";
  if (rows.empty())
    return md +
           "No analysis of version 2 yet (older analyses lack these fields; `qtlab experiment "
           "PLAN --reanalyze` adds them from the snapshots).\n";
  return md +
         "| step | variant | seed | S | tokens in S % | outliers on S % | corr(mass, ‖v‖ ratio) | "
         "top heads by mass on S |\n|---|---|---|---|---|---|---|---|\n" +
         rows;
}

// --rows: one line per run and step, labelled as committed long-run results.
std::string rows_text(const Table& table, const std::map<std::string, Columns>& group_columns,
                      const std::string& dir) {
  struct Row {
    std::string run, seed, step, fp, max_inf_norm, avg_kurtosis, w8a8, safe_bits;
  };
  std::vector<Row> rows = {
      {"run", "seed", "step", "FP", "max inf norm", "avg kurtosis", "W8A8", "safe A bits"}};
  const auto number = [](const StepMeasurement& m, const char* key, int decimals) {
    const auto it = m.value.find(key);
    return it == m.value.end() ? std::string("-") : fmt::format("{:.{}f}", it->second, decimals);
  };
  for (const auto& [group, variants] : table)
    for (const auto& [variant, by_step] : variants)
      for (const auto& [step, seeds] : by_step)
        for (const auto& [seed, m] : seeds) {
          const bool images = group_columns.at(group).images;
          rows.push_back({m.run, std::to_string(seed), std::to_string(step),
                          number(m, "fp", 2) + (images ? "%" : ""), number(m, "max_inf_norm", 2),
                          number(m, "avg_kurtosis", 2),
                          number(m, "q:W8A8", 2) + (images ? "%" : ""), number(m, "safe_bits", 0)});
        }
  std::array<size_t, 8> width{};
  for (const Row& r : rows) {
    const std::array<const std::string*, 8> cells = {
        &r.run, &r.seed, &r.step, &r.fp, &r.max_inf_norm, &r.avg_kurtosis, &r.w8a8, &r.safe_bits};
    for (size_t c = 0; c < cells.size(); ++c) width[c] = std::max(width[c], cells[c]->size());
  }
  std::string text = fmt::format(
      "committed long-run results ({}; FP and W8A8: perplexity for text, accuracy for images; "
      "safe A bits: the lowest W8A<b> within 1% of FP):\n",
      dir);
  for (const Row& r : rows)
    text +=
        fmt::format("  {:<{}}  {:>{}}  {:>{}}  {:>{}}  {:>{}}  {:>{}}  {:>{}}  {:>{}}\n", r.run,
                    width[0], r.seed, width[1], r.step, width[2], r.fp, width[3], r.max_inf_norm,
                    width[4], r.avg_kurtosis, width[5], r.w8a8, width[6], r.safe_bits, width[7]);
  return text;
}

std::string markdown(const Table& table, const std::map<std::string, Columns>& group_columns,
                     const std::string& dir) {
  std::string md = fmt::format(
      "<!-- generated by `qtlab results {}` from the committed results files; do not edit -->\n\n",
      dir);
  for (const auto& [group, variants] : table) {
    const Columns& columns = group_columns.at(group);
    const std::string metric = columns.images ? "accuracy %" : "perplexity";
    md += fmt::format("## {}\n\n", group);
    // Table 2 at each step
    md += fmt::format(
        "Table 2 columns per evaluation step (mean ± std over the seeds listed; FP and W8A8 {} on "
        "the full validation split). Safe A bits: the lowest W8A<b> within 1% of FP. Delim. "
        "outl.: % of the 6σ outliers on delimiter tokens (analyses of version 1: among the top "
        "tokens). A seed marked * was measured on another trajectory of the same seed than its "
        "later steps (the run was retrained on a machine with another GEMM kernel and adopted "
        "this step's published evaluation, `\"reproduced\": false` in its results file).\n\n",
        metric);
    md +=
        "| step | variant | seeds | FP | max ∞-norm | avg kurtosis | W8A8 | W8A8 gap | safe A "
        "bits | delim. outl. % | max delim. attention | min gate π |\n";
    md += "|---|---|---|---|---|---|---|---|---|---|---|---|\n";
    std::set<int64_t> steps;
    for (const auto& [variant, by_step] : variants)
      for (const auto& [step, seeds] : by_step) steps.insert(step);
    for (const int64_t step : steps)
      for (const auto& [variant, by_step] : variants) {
        const auto it = by_step.find(step);
        if (it == by_step.end()) continue;
        const auto& seeds = it->second;
        md += fmt::format(
            "| {} | {} | {} | {} | {} | {} | {} | {}{} | {} | {} | {} | {} |\n", step, variant,
            seeds_text(seeds), cell(summarize(seeds, "fp"), 2),
            cell(summarize(seeds, "max_inf_norm"), 2), cell(summarize(seeds, "avg_kurtosis"), 2),
            cell(summarize(seeds, "q:W8A8"), 2), cell(summarize(seeds, "w8a8_gap"), 2, true),
            columns.images ? " pt" : "%", cell(summarize(seeds, "safe_bits"), 1),
            cell(summarize(seeds, "delimiter_outliers"), 1),
            cell(summarize(seeds, "delimiter_attention"), 3),
            cell(summarize(seeds, "min_gate"), 3));
      }
    // the sweep at the last step each variant reached
    md += fmt::format(
        "\nBit-width sweep ({}; weights below 8 bits with MSE ranges) at the last "
        "evaluated step of each variant:\n\n| variant | step | FP |",
        metric);
    for (const std::string& spec : columns.sweep) md += fmt::format(" {} |", spec);
    md += "\n|---|---|---|";
    for (size_t i = 0; i < columns.sweep.size(); ++i) md += "---|";
    md += "\n";
    for (const auto& [variant, by_step] : variants) {
      const auto& [step, seeds] = *by_step.rbegin();
      md += fmt::format("| {} | {} | {} |", variant, step, cell(summarize(seeds, "fp"), 2));
      for (const std::string& spec : columns.sweep)
        md += fmt::format(" {} |", cell(summarize(seeds, "q:" + spec), 2));
      md += "\n";
    }
    md += mechanism_markdown(variants);
    md += "\n";
  }
  return md;
}

std::string safe_file_name(const std::string& text) {
  std::string out;
  for (const char c : text) out += std::isalnum(static_cast<unsigned char>(c)) ? c : '-';
  return out;
}

// Growth curves per group: max ∞-norm, avg kurtosis, W8A8 gap and safe A bits vs step, one line
// per variant (the seed mean), as SVG through gnuplot.
void write_plots(const Table& table, const std::map<std::string, Columns>& group_columns,
                 const fs::path& out) {
  fs::create_directories(out);
  struct Panel {
    const char* key;
    const char* title;
    bool log_scale;
  };
  for (const auto& [group, variants] : table) {
    const bool images = group_columns.at(group).images;
    const std::vector<Panel> panels = {
        {"max_inf_norm", "max inf-norm (Table 2 definition)", true},
        {"avg_kurtosis", "avg kurtosis", true},
        {"w8a8_gap", images ? "W8A8 - FP accuracy (points)" : "W8A8 / FP perplexity - 1 (%)",
         false},
        {"safe_bits", "lowest activation bits within 1% of FP (W8)", false}};
    const std::string name = safe_file_name(group);
    std::string script = fmt::format(
        "set terminal svg size 1100,800 dynamic font 'sans,11'\nset output '{}.svg'\n"
        "set multiplot layout 2,2 title '{}: growth with training step (mean over seeds)'\n",
        name, group);
    for (const Panel& panel : panels) {
      std::string plot;
      for (const auto& [variant, by_step] : variants) {
        const std::string data_file =
            fmt::format("{}-{}-{}.dat", name, safe_file_name(variant), panel.key);
        std::string data = "# step mean std n\n";
        int points = 0;
        for (const auto& [step, seeds] : by_step) {
          const Summary s = summarize(seeds, panel.key);
          if (s.n == 0) continue;
          data += fmt::format("{} {} {} {}\n", step, s.mean, s.std, s.n);
          ++points;
        }
        qt::write_text_atomically((out / data_file).string(), data);
        if (points == 0) continue;
        plot += fmt::format("{}'{}' using 1:2 with linespoints title '{}'",
                            plot.empty() ? "plot " : ", ", data_file, variant);
      }
      script += "reset\nset grid\nset key top left\nset xlabel 'training step'\n";
      script += fmt::format("set title '{}'\n", panel.title);
      script += panel.log_scale ? "set logscale y\nset format y '%g'\n" : "unset logscale y\n";
      script += plot.empty() ? "plot 0 notitle\n" : plot + "\n";
    }
    script += "unset multiplot\n";
    const fs::path script_file = out / (name + ".gp");
    qt::write_text_atomically(script_file.string(), script);
    std::string output;
    const int status =
        qt::tools::run_shell("cd " + qt::tools::shell_quote(out.string()) + " && " +
                                 qt::tools::shell_quote(qt::tools::gnuplot_program()) + " " +
                                 qt::tools::shell_quote(name + ".gp"),
                             output);
    QT_CHECK(status == 0,
             "results: gnuplot failed on {} (exit {}; is gnuplot installed, or "
             "QTLAB_GNUPLOT set?): {}",
             script_file.string(), status, output.substr(0, 2000));
  }
}

void run_results(const ResultsArguments& a) {
  std::map<std::string, Columns> columns;
  const Table table = read_results(a.dir, columns);
  const std::string md =
      a.rows ? rows_text(table, columns, a.dir) : markdown(table, columns, a.dir);
  if (a.out.empty())
    std::printf("%s", md.c_str());
  else
    qt::write_text_atomically(a.out, md);
  if (!a.plots_dir.empty()) write_plots(table, columns, a.plots_dir);
}

}  // namespace

void add_results_command(CLI::App& app) {
  auto arguments = std::make_shared<ResultsArguments>();
  CLI::App* cmd = app.add_subcommand(
      "results",
      "tables (Table 2 per step, bit-width sweep, mean ± std over seeds) and growth-curve plots "
      "from an experiment's committed results files");
  cmd->add_option("dir", arguments->dir, "the results directory, e.g. docs/results/table2")
      ->required();
  cmd->add_option("--out", arguments->out, "write the Markdown here (default: print it)");
  cmd->add_option("--plots", arguments->plots_dir, "write SVG growth curves (gnuplot) here");
  cmd->add_flag("--rows", arguments->rows,
                "print one plain-text line per run and evaluation step instead (make demo)");
  cmd->callback([arguments] { run_results(*arguments); });
}
