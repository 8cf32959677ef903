// `qtlab report RUN_DIR... [--out DIR]`: plots and a Markdown report comparing training runs.
//
// For each run directory it reads analysis.json (running `qtlab analyze` on the run's model first
// when the file is missing), metrics.jsonl (the training log, models/trainer.h) and, when present,
// quantize-w8a8.json (`qtlab quantize`), prints the paper's Table 2 columns (FP perplexity or
// accuracy, max inf norm, average kurtosis, W8A8 perplexity or accuracy) and writes to
// DIR (default "report"):
//   <run>.layers.dat, <run>.histogram.dat, <run>.attention.dat, <run>.loss.dat, <run>.val.dat
//                                     the plotted numbers, as whitespace-separated columns
//   report.gp                         the gnuplot script that draws every image from them
//   inf_norm_per_layer.<ext>          per-layer inf norm (FFN output, block output), runs side by
//   kurtosis_per_layer.<ext>          side, log y; the same for the kurtosis
//   loss.<ext>                        training loss (lines) and validation loss (points) per step
//   histogram_<run>.<ext>             the analysed activation's histogram, log y
//   attention_<run>.<ext>             the dumped attention probabilities (heatmap)
//   report.md                         the headline table (paper Table 2 columns) and the images
// <ext> is png (gnuplot's pngcairo terminal) or svg (--format svg, or when pngcairo is missing).
// gnuplot is found as $QTLAB_GNUPLOT or "gnuplot" on PATH; without it the command fails with a
// message saying so (before writing anything).
#include <fmt/format.h>

#include <algorithm>
#include <array>
#include <cctype>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <set>
#include <sstream>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "models/config.h"
#include "quant/outlier_analysis.h"
#include "tensor/atomic_file.h"
#include "tensor/error.h"
#include "tensor/json_parse.h"
#include "tensor/threads.h"
#include "tools/commands.h"
#include "tools/gnuplot.h"

namespace {

namespace fs = std::filesystem;
using qt::tools::gnuplot_program;
using qt::tools::run_shell;
using qt::tools::shell_quote;

struct ReportArguments {
  std::vector<std::string> run_dirs;
  std::string out_dir = "report";
  std::string format = "png";
  int64_t batches = 8;
  int threads = 0;
};

// One point of the training log.
struct LogPoint {
  int64_t step = 0;
  double value = 0;
};

struct Run {
  std::string name;  // file-name-safe, unique among the runs
  fs::path dir;
  qt::quant::AnalysisResult analysis;
  std::vector<LogPoint> loss, validation_loss;
  nlohmann::json last_validation;  // the last log line with val_loss (null if none)
  nlohmann::json quantized;        // quantize-w8a8.json (null if the run was not quantized)
};

// A label gnuplot can print verbatim inside single quotes: printable ASCII only.
std::string plot_label(const std::string& text) {
  std::string out;
  for (const char c : text) {
    const auto u = static_cast<unsigned char>(c);
    if (c == '\'')
      out += "''";  // gnuplot's escape inside single quotes
    else if (c == '\n')
      out += "\\n";  // single quotes: gnuplot prints the backslash verbatim
    else if (u < 0x20 || u >= 0x7f)
      out += '?';
    else
      out += c;
  }
  return out;
}

std::string safe_name(const std::string& text) {
  std::string out;
  for (const char c : text)
    out += std::isalnum(static_cast<unsigned char>(c)) || c == '-' || c == '_' ? c : '_';
  return out.empty() ? std::string("run") : out;
}

void write_text(const fs::path& path, const std::string& text) {
  qt::write_text_atomically(path.string(), text);
}

// The training log of a run directory: train loss per logged step, validation loss where logged.
void read_metrics(Run& run) {
  const fs::path path = run.dir / "metrics.jsonl";
  QT_CHECK(fs::exists(path),
           "report: run directory {} has no metrics.jsonl (not written by qtlab pretrain?)",
           run.dir.string());
  std::ifstream in(path);
  std::string line;
  int64_t number = 0;
  while (std::getline(in, line)) {
    ++number;
    if (line.empty()) continue;
    const nlohmann::json j =
        qt::parse_json(line, fmt::format("report: {} line {}", path.string(), number));
    QT_CHECK(j.is_object() && j.contains("step") && j.at("step").is_number_integer(),
             "report: {} line {} is not a JSON object with a step", path.string(), number);
    const int64_t step = j.at("step").get<int64_t>();
    if (j.contains("loss") && j.at("loss").is_number())
      run.loss.push_back(LogPoint{step, j.at("loss").get<double>()});
    if (j.contains("val_loss") && j.at("val_loss").is_number()) {
      run.validation_loss.push_back(LogPoint{step, j.at("val_loss").get<double>()});
      run.last_validation = j;
    }
  }
  QT_CHECK(!run.loss.empty(), "report: {} holds no training loss", path.string());
}

// analysis.json of the run, computed from the run's model when absent.
void read_analysis(Run& run, int64_t batches) {
  fs::path path = run.dir / "analysis.json";
  if (!fs::exists(path)) {
    fs::path model = run.dir / "model.safetensors";
    if (!fs::exists(model)) model = run.dir / "checkpoint.safetensors";
    QT_CHECK(fs::exists(model),
             "report: run directory {} has neither analysis.json nor a model "
             "(model.safetensors / checkpoint.safetensors) to analyse",
             run.dir.string());
    std::fprintf(stderr, "report: analysing %s ...\n", model.string().c_str());
    path = write_checkpoint_analysis(model.string(), run.dir.string(), batches);
  }
  const nlohmann::json j = qt::parse_json_file(path.string(), "report: " + path.string());
  try {
    run.analysis = qt::quant::analysis_from_json(j);
  } catch (const qt::Error& e) {
    qt::fail("report: {}: {}", path.string(), e.what());
  }
}

// quantize-w8a8.json of the run, if `qtlab quantize` wrote one.
void read_quantization(Run& run) {
  const fs::path path = run.dir / "quantize-w8a8.json";
  if (!fs::exists(path)) return;
  const nlohmann::json j = qt::parse_json_file(path.string(), "report: " + path.string());
  const char* metric = qt::models::parse_family(run.analysis.family) == qt::models::Family::vit
                           ? "accuracy"
                           : "perplexity";
  QT_CHECK(!j.is_discarded() && j.contains("fp") && j.contains("quantized") &&
               j["fp"].contains(metric) && j["quantized"].contains(metric),
           "report: {} is not a `qtlab quantize` result (expected fp.{} and quantized.{})",
           path.string(), metric, metric);
  run.quantized = j;
}

// One row of the paper's Table 2 columns. FP quality comes from the quantize result when there
// is one (the whole validation split, same batches as the W8A8 figure), else from the last
// validation of the training log (its eval_batches); "-" where neither exists.
struct TableRow {
  std::string run, family, step, fp, max_inf_norm, avg_kurtosis, w8a8;
  std::string integer = "-";  // the integer-only model (quantize --integer), if it was run
};

TableRow table_row(const Run& run) {
  const bool vit = qt::models::parse_family(run.analysis.family) == qt::models::Family::vit;
  const auto quality = [vit](double value) {
    return vit ? fmt::format("{:.2f}%", 100 * value) : fmt::format("{:.3f}", value);
  };
  const char* metric = vit ? "accuracy" : "perplexity";
  TableRow row{run.name,
               run.analysis.family,
               "-",
               "-",
               fmt::format("{:.3f}", run.analysis.headline.max_inf_norm),
               fmt::format("{:.3f}", run.analysis.headline.avg_kurtosis),
               "-"};
  if (!run.last_validation.is_null()) {
    row.step = std::to_string(run.last_validation.at("step").get<int64_t>());
    const char* key = vit ? "val_accuracy" : "val_perplexity";
    if (run.last_validation.contains(key))
      row.fp = quality(run.last_validation.at(key).get<double>()) + " (log)";
  }
  if (!run.quantized.is_null()) {
    row.fp = quality(run.quantized["fp"][metric].get<double>());
    row.w8a8 = quality(run.quantized["quantized"][metric].get<double>());
    if (run.quantized.contains("integer") && run.quantized["integer"].contains(metric))
      row.integer = quality(run.quantized["integer"][metric].get<double>());
  }
  return row;
}

// The table as aligned plain text, for the terminal.
std::string table_text(const std::vector<Run>& runs) {
  const bool vit = !runs.empty() && qt::models::parse_family(runs.front().analysis.family) ==
                                        qt::models::Family::vit;
  std::vector<TableRow> rows = {{"run", "family", "step", vit ? "FP acc" : "FP ppl", "max inf norm",
                                 "avg kurtosis", vit ? "W8A8 acc" : "W8A8 ppl"}};
  rows[0].integer = vit ? "integer W8A8 acc" : "integer W8A8 ppl";
  bool any_integer = false;
  for (const Run& run : runs) {
    rows.push_back(table_row(run));
    any_integer |= rows.back().integer != "-";
  }
  std::array<size_t, 8> width{};
  for (const TableRow& r : rows) {
    const std::array<const std::string*, 8> cells = {
        &r.run, &r.family, &r.step, &r.fp, &r.max_inf_norm, &r.avg_kurtosis, &r.w8a8, &r.integer};
    for (size_t c = 0; c < cells.size(); ++c) width[c] = std::max(width[c], cells[c]->size());
  }
  std::string text;
  for (const TableRow& r : rows) {
    text += fmt::format("{:<{}}  {:<{}}  {:>{}}  {:>{}}  {:>{}}  {:>{}}  {:>{}}", r.run, width[0],
                        r.family, width[1], r.step, width[2], r.fp, width[3], r.max_inf_norm,
                        width[4], r.avg_kurtosis, width[5], r.w8a8, width[6]);
    // The integer column only when some run has it (quantize --integer).
    if (any_integer) text += fmt::format("  {:>{}}", r.integer, width[7]);
    text += "\n";
  }
  return text;
}

void write_data_files(const Run& run, const fs::path& out) {
  const qt::quant::AnalysisResult& a = run.analysis;
  std::string layers =
      "# layer ffn_inf ffn_kurtosis residual_inf residual_kurtosis block_inf block_kurtosis\n";
  for (size_t l = 0; l < a.layer_metrics.size(); ++l) {
    const auto& m = a.layer_metrics[l];
    layers +=
        fmt::format("{} {:.9g} {:.9g} {:.9g} {:.9g} {:.9g} {:.9g}\n", l, m.ffn_output.inf_norm,
                    m.ffn_output.kurtosis, m.residual_sum.inf_norm, m.residual_sum.kurtosis,
                    m.block_output.inf_norm, m.block_output.kurtosis);
  }
  write_text(out / (run.name + ".layers.dat"), layers);
  // Histogram: bin centre and count; empty bins are left out (log y).
  const qt::quant::Histogram& h = a.histogram;
  std::string histogram = "# bin_centre count (" + h.point + ")\n";
  const double width = (h.high - h.low) / static_cast<double>(h.counts.size());
  for (size_t b = 0; b < h.counts.size(); ++b)
    if (h.counts[b] > 0)
      histogram +=
          fmt::format("{:.9g} {}\n", h.low + (static_cast<double>(b) + 0.5) * width, h.counts[b]);
  write_text(out / (run.name + ".histogram.dat"), histogram);
  // Attention matrix: T rows of T values (gnuplot "matrix" format; row = query, column = key).
  std::string attention;
  const qt::quant::AttentionMatrix& m = a.attention;
  for (int64_t i = 0; i < m.length; ++i) {
    for (int64_t j = 0; j < m.length; ++j)
      attention += fmt::format("{}{:.6g}", j ? " " : "", m.probabilities[i * m.length + j]);
    attention += "\n";
  }
  write_text(out / (run.name + ".attention.dat"), attention);
  std::string loss = "# step loss\n", validation = "# step val_loss\n";
  for (const LogPoint& p : run.loss) loss += fmt::format("{} {:.9g}\n", p.step, p.value);
  for (const LogPoint& p : run.validation_loss)
    validation += fmt::format("{} {:.9g}\n", p.step, p.value);
  write_text(out / (run.name + ".loss.dat"), loss);
  write_text(out / (run.name + ".val.dat"), validation);
}

std::string gnuplot_script(const std::vector<Run>& runs, const std::string& terminal,
                           const std::string& ext) {
  std::string s;
  // Every image starts from gnuplot's defaults (`reset`), so no setting of one plot (log scale,
  // tics, ranges) leaks into the next. noenhanced: names like "ffn_out" print verbatim.
  const auto output = [&](const std::string& file) {
    return fmt::format(
        "reset\nset grid\nset key outside right\nset terminal {} noenhanced size "
        "900,540\nset output '{}.{}'\n",
        terminal, file, ext);
  };
  const auto per_layer = [&](const std::string& file, const std::string& title,
                             const std::string& y_label, int ffn_column, int block_column) {
    std::string p = output(file);
    // Log base 2 with plain numbers (1, 2, 4, ... 64) so that values can be read off the axis.
    p += fmt::format(
        "set title '{}'\nset xlabel 'layer'\nset ylabel '{} (log scale)'\nset logscale y 2\n"
        "set format y '%g'\nset xtics 1\n",
        title, y_label);
    p += "plot ";
    for (size_t r = 0; r < runs.size(); ++r) {
      const std::string data = plot_label(runs[r].name) + ".layers.dat";
      const std::string name = plot_label(runs[r].name);
      p += fmt::format(
          "{}'{}' using 1:{} with linespoints lc {} lw 2 title '{} FFN output', "
          "'{}' using 1:{} with linespoints lc {} dt 2 title '{} block output'",
          r ? ", " : "", data, ffn_column, r + 1, name, data, block_column, r + 1, name);
    }
    return p + "\n";
  };
  s += per_layer("inf_norm_per_layer", "inf norm per layer (per-row max |x|, averaged)",
                 "mean over rows of max |x|", 2, 6);
  s += per_layer("kurtosis_per_layer", "kurtosis per layer (per row, averaged)",
                 "mean over rows of the kurtosis", 3, 7);
  s += output("loss");
  s += "set title 'training loss (lines) and validation loss (points)'\nset xlabel 'step'\n"
       "set ylabel 'cross-entropy loss'\nplot ";
  for (size_t r = 0; r < runs.size(); ++r) {
    const std::string name = plot_label(runs[r].name);
    s += fmt::format("{}'{}.loss.dat' using 1:2 with lines lc {} title '{} train'", r ? ", " : "",
                     name, r + 1, name);
    if (!runs[r].validation_loss.empty())
      s += fmt::format(", '{}.val.dat' using 1:2 with points pt 7 lc {} title '{} validation'",
                       name, r + 1, name);
  }
  s += "\n";
  for (const Run& run : runs) {
    const std::string name = plot_label(run.name);
    const qt::quant::AnalysisResult& a = run.analysis;
    const double bin_width = (a.histogram.high - a.histogram.low) /
                             static_cast<double>(std::max<size_t>(1, a.histogram.counts.size()));
    s += output("histogram_" + run.name);
    s += fmt::format(
        "set title '{}: {} ({} values)'\nset xlabel 'value'\nset ylabel 'count (log scale)'\n"
        "set logscale y\nset format y '%g'\nset style fill solid 0.6\n"
        // Every box one bin wide: empty bins are not in the file (log scale), and gnuplot would
        // otherwise widen their neighbours to fill the gap.
        "set boxwidth {:.9g} absolute\nset xrange [{:.9g}:{:.9g}]\n"
        "plot '{}.histogram.dat' using 1:2 with boxes notitle\n",
        name, plot_label(a.histogram.point), a.histogram.values, bin_width,
        a.histogram.low - bin_width, a.histogram.high + bin_width, name);
    const qt::quant::AttentionMatrix& m = a.attention;
    s += output("attention_" + run.name);
    s += fmt::format(
        "set title '{}: attention probabilities, layer {} head {} (first sequence)'\n"
        "set xlabel 'key'\nset ylabel 'query'\nset yrange [{}:-0.5] reverse\n"
        // A log colour scale from 1e-4 to 1: a near-uniform head (every entry ~ 1/T) shows as
        // an even mid tone instead of a blank square, and sharp heads keep their structure.
        "set xrange [-0.5:{}]\nset logscale cb\nset cbrange [1e-4:1]\nset format cb '%g'\n"
        "set cblabel 'probability (log scale; < 1e-4 shown as 1e-4)'\n"
        "set palette defined (0 'white', 0.5 'light-blue', 1 'dark-blue')\n",
        name, m.layer, m.head, m.length - 0.5, m.length - 0.5);
    if (m.length <= 40) {
      // Token labels on both axes (the paper's figures mark [SEP], '.', ',').
      std::string tics;
      for (int64_t t = 0; t < m.length; ++t)
        tics += fmt::format("{}'{}' {}", t ? ", " : "", plot_label(m.tokens[t]), t);
      s += fmt::format("set xtics ({}) rotate by 90 font ',8'\nset ytics ({}) font ',8'\n", tics,
                       tics);
    }
    s += fmt::format(
        "plot '{}.attention.dat' matrix using 1:2:($3 < 1e-4 ? 1e-4 : $3) with image notitle\n",
        name);
  }
  return s;
}

std::string markdown(const std::vector<Run>& runs, const std::string& ext) {
  std::string md = "# qtlab outlier report\n\n";
  md +=
      "Outlier metrics as in paper §5 (method.md §5): inf norm = per-row max|x| averaged over "
      "the validation rows; kurtosis = per-row Pearson kurtosis averaged. The headline columns "
      "follow paper Table 2.\n\n";
  md +=
      "| run | family | step | FP perplexity / accuracy | max inf norm | avg kurtosis | W8A8 "
      "perplexity / accuracy | integer W8A8 | analysed batches "
      "|\n|---|---|---|---|---|---|---|---|---|\n";
  for (const Run& run : runs) {
    const TableRow r = table_row(run);
    md +=
        fmt::format("| {} | {} | {} | {} | {} | {} | {} | {} | {} |\n", r.run, r.family, r.step,
                    r.fp, r.max_inf_norm, r.avg_kurtosis, r.w8a8, r.integer, run.analysis.batches);
  }
  md +=
      "\nFP and W8A8 come from `qtlab quantize` (quantize-w8a8.json: the whole validation split, "
      "the same batches for both); where a run has no such file, FP is the training log's last "
      "validation (marked \"(log)\") and W8A8 is \"-\". Integer W8A8 is the integer-only model "
      "(`qtlab quantize --integer`, docs/integer-reference.md) on the same batches.\n";
  md += "\nDefinitions:\n\n";
  for (const Run& run : runs) {
    md += fmt::format("* {}: max inf norm = {}; avg kurtosis = {}.", run.name,
                      run.analysis.headline.max_inf_norm_definition,
                      run.analysis.headline.avg_kurtosis_definition);
    for (const auto& [key, value] : run.analysis.headline.extra)
      md += fmt::format(" {} = {:.3f};", key, value);
    md += "\n";
  }
  md +=
      fmt::format("\n## Inf norm per layer\n\n![inf norm per layer](inf_norm_per_layer.{})\n", ext);
  md +=
      fmt::format("\n## Kurtosis per layer\n\n![kurtosis per layer](kurtosis_per_layer.{})\n", ext);
  md += fmt::format("\n## Training loss\n\n![training loss](loss.{})\n", ext);
  md += "\n## Activation histograms\n";
  for (const Run& run : runs)
    md += fmt::format("\n### {}: {}\n\n![histogram {}](histogram_{}.{})\n", run.name,
                      run.analysis.histogram.point, run.name, run.name, ext);
  md += "\n## Attention probabilities\n";
  for (const Run& run : runs)
    md += fmt::format("\n### {}: layer {}, head {}\n\n![attention {}](attention_{}.{})\n", run.name,
                      run.analysis.attention.layer, run.analysis.attention.head, run.name, run.name,
                      ext);
  md += "\n## Attention mass on delimiter tokens (mean over queries; per layer, heads in order)\n";
  for (const Run& run : runs) {
    std::string names;
    // Each token in a code span, spaces shown as U+2420 (a token " ," would otherwise vanish
    // into the list's own punctuation).
    for (const auto& n : run.analysis.delimiter_names) {
      std::string visible;
      for (char c : n) visible += c == ' ' ? std::string("\u2420") : std::string(1, c);
      names += (names.empty() ? "`" : " `") + visible + "`";
    }
    md +=
        fmt::format("\n{} (delimiters: {})\n\n| layer | per head |\n|---|---|\n", run.name, names);
    for (size_t l = 0; l < run.analysis.delimiter_attention.size(); ++l) {
      std::string row;
      for (double m : run.analysis.delimiter_attention[l]) row += fmt::format(" {:.3f}", m);
      md += fmt::format("| {} |{} |\n", l, row);
    }
    if (!run.analysis.gates.empty()) {
      md += fmt::format(
          "\n{} gate probability per head, mean [min, max]\n\n| layer | per head "
          "|\n|---|---|\n",
          run.name);
      for (size_t l = 0; l < run.analysis.gates.size(); ++l) {
        std::string row;
        for (const auto& g : run.analysis.gates[l])
          row += fmt::format(" {:.3f} [{:.3f}, {:.3f}]", g.mean, g.min, g.max);
        md += fmt::format("| {} |{} |\n", l, row);
      }
    }
  }
  return md;
}

void run_report(const ReportArguments& a) {
  if (a.threads > 0) qt::set_num_threads(a.threads);
  QT_CHECK(a.format == "png" || a.format == "svg", "report: unknown --format '{}' (png or svg)",
           a.format);
  const std::string gnuplot = gnuplot_program();
  std::string probe;
  QT_CHECK(run_shell(shell_quote(gnuplot) + " --version", probe) == 0,
           "report: gnuplot not found ('{}' --version failed: {}); install it (Debian: apt-get "
           "install gnuplot-nox) or point QTLAB_GNUPLOT at it",
           gnuplot, probe.empty() ? "no output" : probe.substr(0, probe.find('\n')));
  std::string terminal = "svg", ext = "svg";
  if (a.format == "png") {
    std::string ignored;
    if (run_shell(shell_quote(gnuplot) + " -e \"set terminal pngcairo\"", ignored) == 0) {
      terminal = "pngcairo";
      ext = "png";
    } else {
      std::fprintf(stderr, "report: gnuplot has no pngcairo terminal; writing SVG\n");
    }
  }
  std::vector<Run> runs;
  std::set<std::string> names;
  for (const std::string& dir : a.run_dirs) {
    QT_CHECK(fs::is_directory(dir), "report: run directory {} does not exist", dir);
    Run run;
    run.dir = dir;
    fs::path normal = fs::path(dir).lexically_normal();
    if (normal.filename().empty()) normal = normal.parent_path();  // "runs/a/" -> "runs/a"
    const std::string base = safe_name(normal.filename().string());
    std::string name = base;
    for (int suffix = 2; names.count(name) != 0; ++suffix)
      name = base + "_" + std::to_string(suffix);
    names.insert(name);
    run.name = name;
    read_metrics(run);
    read_analysis(run, a.batches);
    read_quantization(run);
    runs.push_back(std::move(run));
  }
  const fs::path out = a.out_dir;
  fs::create_directories(out);
  for (const Run& run : runs) write_data_files(run, out);
  write_text(out / "report.gp", gnuplot_script(runs, terminal, ext));
  std::string output;
  const int status = run_shell(
      "cd " + shell_quote(out.string()) + " && " + shell_quote(gnuplot) + " report.gp", output);
  QT_CHECK(status == 0, "report: gnuplot failed on {} (exit {}): {}", (out / "report.gp").string(),
           status, output);
  write_text(out / "report.md", markdown(runs, ext));
  std::printf("%s", table_text(runs).c_str());
  std::printf("report: %zu runs -> %s\n", runs.size(), (out / "report.md").string().c_str());
}

}  // namespace

void add_report_command(CLI::App& app) {
  auto arguments = std::make_shared<ReportArguments>();
  CLI::App* cmd = app.add_subcommand(
      "report", "plots (gnuplot) and report.md comparing runs: outlier metrics, loss curves");
  cmd->add_option("run_dirs", arguments->run_dirs, "run directories (of qtlab pretrain)")
      ->required();
  cmd->add_option("--out", arguments->out_dir, "output directory (default: report)");
  cmd->add_option("--format", arguments->format, "png (default) or svg");
  cmd->add_option("--batches", arguments->batches,
                  "validation batches when a run still needs its analysis (default 8)");
  cmd->add_option("--threads", arguments->threads, "OpenMP threads (default: all)");
  cmd->callback([arguments] { run_report(*arguments); });
}
