// `qtlab analyze --checkpoint FILE`: the outlier analysis of a trained model (paper §3, §5;
// quant/outlier_analysis.h) on validation batches. Prints a per-layer table (inf norm and kurtosis
// of the FFN output, the residual sum FFN + residual and the block output), the Table 2 headline
// numbers, where the outliers sit (hidden dims, tokens), the attention mass on delimiter tokens,
// the no-op mechanism per token set (mass, value norms, gates; quant/attention_mechanism.h) and the
// gate statistics; writes everything, with the data of the plots (`qtlab report`), to
// OUT/analysis.json (OUT: the checkpoint's directory unless --out is given).
#include <fmt/format.h>

#include <algorithm>
#include <cstdio>
#include <filesystem>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "data/tokenizer.h"
#include "models/model.h"
#include "models/run_data.h"
#include "models/saved_model.h"
#include "quant/outlier_analysis.h"
#include "tensor/atomic_file.h"
#include "tensor/error.h"
#include "tensor/threads.h"
#include "tools/commands.h"

namespace {

struct AnalyzeArguments {
  std::string checkpoint;
  std::string out_dir;
  std::vector<std::string> assignments;
  int64_t batches = 8;
  int64_t batch_size = 0;
  int64_t layer = -1;
  int64_t head = 0;
  std::string histogram_point;
  int threads = 0;
  bool json = false;
};

// Token id -> text (valid UTF-8, for the table and analysis.json) for the run's vocabulary: the
// run's tokenizer (RunData, or RUN_DIR/tokenizer.json beside the checkpoint); without one
// (synthetic data) the byte-only tokenizer names the special and byte tokens and the rest print
// as "#<id>".
std::vector<std::string> token_strings(const qt::models::RunConfig& config,
                                       const qt::models::RunData& data,
                                       const std::string& checkpoint) {
  if (config.model.family == qt::models::Family::vit) return {};
  std::string path = data.tokenizer_path;
  const std::filesystem::path beside =
      std::filesystem::path(checkpoint).parent_path() / "tokenizer.json";
  if (path.empty() && std::filesystem::exists(beside)) path = beside.string();
  const qt::data::Tokenizer tokenizer =
      path.empty() ? qt::data::Tokenizer() : qt::data::Tokenizer::load(path);
  std::vector<std::string> strings;
  for (int64_t id = 0; id < config.model.vocab_size; ++id)
    strings.push_back(id < tokenizer.vocab_size() ? tokenizer.token_text(static_cast<int32_t>(id))
                                                  : "#" + std::to_string(id));
  return strings;
}

// A token string for a one-line table: control characters escaped, quoted.
std::string printable(const std::string& text) {
  std::string out = "'";
  for (const char c : text) {
    if (c == '\n')
      out += "\\n";
    else if (c == '\t')
      out += "\\t";
    else if (static_cast<unsigned char>(c) < 0x20)
      out += fmt::format("\\x{:02x}", static_cast<unsigned char>(c));
    else
      out += c;
  }
  return out + "'";
}

qt::quant::AnalysisResult analyze(const AnalyzeArguments& a) {
  const auto [config, model] = qt::models::load_saved_model(a.checkpoint, a.assignments);
  const qt::models::RunData data = qt::models::load_run_data(config);
  qt::quant::AnalysisOptions options;
  options.token_strings = token_strings(config, data, a.checkpoint);
  options.delimiter_ids = qt::quant::delimiter_token_ids(model->points(), options.token_strings);
  options.attention_layer = a.layer;
  options.attention_head = a.head;
  options.histogram_point = a.histogram_point;
  const int64_t batch_size = a.batch_size > 0 ? a.batch_size : config.train.batch_size;
  return qt::quant::analyze_model(*model, data, options, batch_size, a.batches);
}

std::string write_json(const qt::quant::AnalysisResult& result, const std::string& checkpoint,
                       const std::string& out_dir) {
  const std::filesystem::path dir = out_dir.empty()
                                        ? std::filesystem::path(checkpoint).parent_path()
                                        : std::filesystem::path(out_dir);
  if (!dir.empty()) std::filesystem::create_directories(dir);
  const std::string path = (dir / "analysis.json").string();
  nlohmann::json json = qt::quant::to_json(result);
  json["checkpoint"] = checkpoint;
  const std::string text = json.dump(1) + "\n";
  qt::write_text_atomically(path, text);
  return path;
}

// The no-op mechanism (quant/attention_mechanism.h): per token set and head, the attention mass
// on the set, the value-norm ratio on / off it and, gated, the gate on / off it.
void print_mechanism(const qt::quant::MechanismResult& mechanism) {
  for (const auto& set : mechanism.token_sets) {
    const double share = set.outliers > 0 ? 100.0 * static_cast<double>(set.outliers_on) /
                                                static_cast<double>(set.outliers)
                                          : 0.0;
    std::printf(
        "%s\n",
        fmt::format("\n  no-op mechanism, token set '{}' ({} of {} tokens; {} of {} "
                    "6-sigma outliers = {:.1f}% on it); corr(mass, value-norm "
                    "ratio) over heads = {}",
                    set.name, set.tokens, set.all_tokens, set.outliers_on, set.outliers, share,
                    set.mass_value_ratio_correlation
                        ? fmt::format("{:+.3f}", *set.mass_value_ratio_correlation)
                        : std::string("-"))
            .c_str());
    std::printf("  per head: mass on the set | ||v|| on / off it%s\n",
                set.gate_in.empty() ? "" : " | gate pi on / off it");
    for (size_t l = 0; l < set.mass.size(); ++l) {
      std::string row;
      for (size_t h = 0; h < set.mass[l].size(); ++h) {
        const double out = set.value_norm_out[l][h];
        row += fmt::format("  h{} {:.3f} | {}", h, set.mass[l][h],
                           set.tokens > 0 && out > 0
                               ? fmt::format("{:.2f}x", set.value_norm_in[l][h] / out)
                               : std::string("-"));
        if (!set.gate_in.empty())
          row += fmt::format(" | {:.2f}/{:.2f}", set.gate_in[l][h], set.gate_out[l][h]);
      }
      std::printf("  layer %zu:%s\n", l, row.c_str());
    }
  }
}

void print_table(const qt::quant::AnalysisResult& r, const std::string& checkpoint) {
  std::printf("%s\n", fmt::format("{}: {} with {} layers x {} heads, {} validation batches ({} "
                                  "sequences)",
                                  checkpoint, r.family, r.layers, r.heads, r.batches, r.sequences)
                          .c_str());
  std::printf(
      "\n  inf norm = per-row max|x| averaged over rows; kurtosis = Pearson, per row, "
      "averaged\n");
  std::printf("  layer | FFN output          | FFN + residual      | block output\n");
  std::printf("        |  inf norm  kurtosis |  inf norm  kurtosis |  inf norm  kurtosis\n");
  for (size_t l = 0; l < r.layer_metrics.size(); ++l) {
    const auto& m = r.layer_metrics[l];
    std::printf("%s\n", fmt::format("  {:5} | {:9.3f} {:9.2f} | {:9.3f} {:9.2f} | {:9.3f} {:9.2f}",
                                    l, m.ffn_output.inf_norm, m.ffn_output.kurtosis,
                                    m.residual_sum.inf_norm, m.residual_sum.kurtosis,
                                    m.block_output.inf_norm, m.block_output.kurtosis)
                            .c_str());
  }
  std::printf("\n%s\n", fmt::format("  max inf norm   {:.3f}   ({})", r.headline.max_inf_norm,
                                    r.headline.max_inf_norm_definition)
                            .c_str());
  std::printf("%s\n", fmt::format("  avg kurtosis   {:.3f}   ({})", r.headline.avg_kurtosis,
                                  r.headline.avg_kurtosis_definition)
                          .c_str());
  for (const auto& [name, value] : r.headline.extra)
    std::printf("%s\n", fmt::format("  {:<26} {:.3f}", name, value).c_str());
  std::printf("\n  6-sigma outliers (top hidden dims and tokens):\n");
  for (const auto& p : r.outliers) {
    std::string dims, tokens;
    for (const auto& d : p.hidden_dims) dims += fmt::format(" {}({})", d.index, d.count);
    for (const auto& t : p.tokens) tokens += fmt::format(" {}({})", printable(t.text), t.count);
    std::printf("%s\n",
                fmt::format("  {:<40} {:7} of {:9}  dims:{}  tokens:{}", p.point, p.count,
                            p.elements, dims.empty() ? " -" : dims, tokens.empty() ? " -" : tokens)
                    .c_str());
  }
  std::string names;
  for (const auto& n : r.delimiter_names) names += " " + printable(n);
  std::printf("\n  attention mass on delimiter keys (%s ), mean over queries, per head:\n",
              names.c_str());
  for (size_t l = 0; l < r.delimiter_attention.size(); ++l) {
    std::string row;
    for (double m : r.delimiter_attention[l]) row += fmt::format(" {:6.3f}", m);
    std::printf("  layer %zu:%s\n", l, row.c_str());
  }
  // The sink's share: printed for softmax1 / sink models (elsewhere it is rounding, ~1e-8).
  double largest_sink_share = 0;
  for (const auto& layer : r.sink_attention)
    for (double share : layer) largest_sink_share = std::max(largest_sink_share, share);
  if (largest_sink_share > 1e-4) {
    std::printf(
        "\n  attention mass on the sink column (1 - sum of the row), mean over queries, "
        "per head:\n");
    for (size_t l = 0; l < r.sink_attention.size(); ++l) {
      std::string row;
      for (double m : r.sink_attention[l]) row += fmt::format(" {:6.3f}", m);
      std::printf("  layer %zu:%s\n", l, row.c_str());
    }
  }
  print_mechanism(r.mechanism);
  if (!r.gates.empty()) {
    std::printf("\n  gate probability per head (mean [min, max]):\n");
    for (size_t l = 0; l < r.gates.size(); ++l) {
      std::string row;
      for (const auto& g : r.gates[l])
        row += fmt::format("  {:.3f} [{:.3f}, {:.3f}]", g.mean, g.min, g.max);
      std::printf("  layer %zu:%s\n", l, row.c_str());
    }
  }
}

void run_analyze(const AnalyzeArguments& a) {
  if (a.threads > 0) qt::set_num_threads(a.threads);
  const qt::quant::AnalysisResult result = analyze(a);
  const std::string path = write_json(result, a.checkpoint, a.out_dir);
  if (a.json) {
    nlohmann::json json = qt::quant::to_json(result);
    json["checkpoint"] = a.checkpoint;
    std::printf("%s\n", json.dump().c_str());
    return;
  }
  print_table(result, a.checkpoint);
  std::printf("\n  wrote %s\n", path.c_str());
}

}  // namespace

std::string write_checkpoint_analysis(const std::string& checkpoint, const std::string& out_dir,
                                      int64_t batches) {
  AnalyzeArguments a;
  a.checkpoint = checkpoint;
  a.out_dir = out_dir;
  a.batches = batches;
  return write_json(analyze(a), checkpoint, out_dir);
}

void add_analyze_command(CLI::App& app) {
  auto arguments = std::make_shared<AnalyzeArguments>();
  CLI::App* cmd = app.add_subcommand(
      "analyze",
      "outlier metrics (inf norm, kurtosis), outlier positions, attention on delimiters");
  cmd->add_option("--checkpoint", arguments->checkpoint,
                  "RUN_DIR/model.safetensors or RUN_DIR/checkpoint.safetensors")
      ->required();
  cmd->add_option("--batches", arguments->batches, "validation batches (default 8; 0: all)");
  cmd->add_option("--batch-size", arguments->batch_size, "default: the run's train.batch_size");
  cmd->add_option("--out", arguments->out_dir,
                  "directory of analysis.json (default: the checkpoint's directory)");
  cmd->add_option("--layer", arguments->layer,
                  "layer of the dumped attention matrix (default: the last)");
  cmd->add_option("--head", arguments->head, "head of the dumped attention matrix (default 0)");
  cmd->add_option("--histogram", arguments->histogram_point,
                  "tap point of the histogram (default: the last layer's FFN output, e.g. "
                  "encoder.layer.3.ffn_out:output)");
  cmd->add_option("--set", arguments->assignments, "override a stored key, e.g. data.dir=...");
  cmd->add_option("--threads", arguments->threads, "OpenMP threads (default: all)");
  cmd->add_flag("--json", arguments->json, "print the analysis JSON instead of the tables");
  cmd->callback([arguments] { run_analyze(*arguments); });
}
