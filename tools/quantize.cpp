// `qtlab quantize --checkpoint RUN_DIR/model.safetensors`: simulated W`b`A`b` post-training
// quantization (method.md §4; quant/quantized_model.h). Builds the model from the run config
// stored in the checkpoint, evaluates it in FP, quantizes a copy (weights in place; activations at
// the §4.3 points), calibrates on random training batches, evaluates the quantized copy on the same
// validation batches and prints both figures side by side. The calibrated ranges are saved as
// JSON (default RUN_DIR/quant-ranges-w<b>a<b>.json) for integer inference, and the result (the
// object --json prints) as RUN_DIR/quantize-w<b>a<b>.json, which `qtlab report` puts into its
// Table 2 columns.
//
// Defaults per family are the paper's (method.md §4.4): BERT / ViT min-max weights and running
// min-max activations; OPT MSE weights and running 99.999th-percentile activations; FP head for
// BERT and OPT, quantized classifier for ViT. 16 calibration batches (the paper; the repo's README
// uses 4 for OPT).
#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include <cstdio>
#include <filesystem>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "models/config.h"
#include "models/evaluation.h"
#include "models/model.h"
#include "models/run_data.h"
#include "models/saved_model.h"
#include "optim/distributed.h"
#include "quant/calibrated_ranges.h"
#include "quant/integer_evaluation.h"
#include "quant/integer_model.h"
#include "quant/quantization_setup.h"
#include "quant/quantized_model.h"
#include "tensor/atomic_file.h"
#include "tensor/error.h"
#include "tensor/threads.h"
#include "tensor/version.h"
#include "tools/commands.h"
#include "tools/quantization_spec.h"

namespace {

struct QuantizeArguments {
  std::string checkpoint;
  std::vector<std::string> assignments;
  int weight_bits = 8;
  int activation_bits = 8;
  std::string weight_range;      // "" = the family's default
  std::string activation_range;  // "" = the family's default
  std::string head;              // "" = the family's default; fp | quantized
  int layer_norm_bits = 0;
  int final_layer_norm_bits = 0;
  int64_t calibration_batches = 16;
  int64_t calibration_batch_size = 0;
  uint64_t seed = 2000;
  int64_t eval_batches = 0;
  int64_t batch_size = 0;
  std::string ranges_out;
  std::string results_out;
  std::string sweep;  // "W8A8,W6A8:mse,...": FP once, then each configuration
  int threads = 0;
  bool json = false;
  bool integer = false;  // also run the integer-only model (quant/integer_model.h)
};

void check_bits_flag(int bits, const char* flag) {
  QT_CHECK(bits >= qt::quant::kMinBits && bits <= qt::quant::kMaxBits,
           "quantize: {} {} must lie in [{}, {}]", flag, bits, qt::quant::kMinBits,
           qt::quant::kMaxBits);
}

// The options from the family's paper defaults and the flags.
qt::quant::QuantizationOptions quantization_options(const QuantizeArguments& a,
                                                    const qt::models::Model& model) {
  check_bits_flag(a.weight_bits, "--wbits");
  check_bits_flag(a.activation_bits, "--abits");
  if (a.layer_norm_bits != 0) check_bits_flag(a.layer_norm_bits, "--ln-bits");
  if (a.final_layer_norm_bits != 0) check_bits_flag(a.final_layer_norm_bits, "--final-ln-bits");
  qt::quant::QuantizationOptions o = qt::quant::paper_quantization_options(model);
  o.weight_bits = a.weight_bits;
  o.activation_bits = a.activation_bits;
  o.layer_norm_bits = a.layer_norm_bits;
  o.final_layer_norm_bits = a.final_layer_norm_bits;
  if (a.weight_range == "minmax") {
    o.weight_range = qt::quant::RangeMethod::current_min_max;
  } else if (a.weight_range == "mse") {
    o.weight_range = qt::quant::RangeMethod::mse_grid;
  } else {
    QT_CHECK(a.weight_range.empty(), "quantize: unknown --weight-range '{}' (use minmax or mse)",
             a.weight_range);
  }
  const std::string percentile_prefix = "percentile:";
  if (a.activation_range == "running-minmax") {
    o.activation_percentile.reset();
  } else if (a.activation_range.rfind(percentile_prefix, 0) == 0) {
    const std::string value = a.activation_range.substr(percentile_prefix.size());
    size_t used = 0;
    double p = 0;
    try {
      p = std::stod(value, &used);
    } catch (const std::exception&) {
      used = 0;
    }
    QT_CHECK(used > 0 && used == value.size() && p >= 50.0 && p < 100.0,
             "quantize: --act-range '{}': the percentile must be a number in [50, 100), e.g. "
             "percentile:99.999",
             a.activation_range);
    o.activation_percentile = p;
  } else {
    QT_CHECK(a.activation_range.empty(),
             "quantize: unknown --act-range '{}' (use running-minmax or percentile:P, e.g. "
             "percentile:99.999)",
             a.activation_range);
  }
  if (a.head == "fp") {
    o.head_quantized = false;
  } else if (a.head == "quantized") {
    o.head_quantized = true;
  } else {
    QT_CHECK(a.head.empty(), "quantize: unknown --head '{}' (use fp or quantized)", a.head);
  }
  return o;
}

// RUN_DIR/<prefix>-w<b>a<b>.json beside the checkpoint.
std::string default_output_path(const std::string& checkpoint, const char* prefix, int weight_bits,
                                int activation_bits) {
  const std::filesystem::path dir = std::filesystem::path(checkpoint).parent_path();
  return (dir / fmt::format("{}-w{}a{}.json", prefix, weight_bits, activation_bits)).string();
}

// A progress line on stderr (stdout keeps the results, and --json output stays one object): a
// full-split evaluation takes a minute or more, calibration a few seconds.
void progress(const std::string& text) {
  if (qt::distributed::rank() != 0) return;
  std::fprintf(stderr, "quantize: %s\n", text.c_str());
  std::fflush(stderr);
}

std::string validation_text(int64_t eval_batches) {
  return eval_batches > 0 ? fmt::format("{} validation batches", eval_batches)
                          : std::string("the whole validation split");
}

// One quantized configuration of the model, calibrated and evaluated: the JSON object --json
// prints (and RUN_DIR/quantize-w<b>a<b>.json holds), plus the quantized figures.
struct QuantizedEvaluation {
  nlohmann::json record;
  qt::models::EvaluationResult quantized;
  std::string label;  // "W8A8"
  std::string weight_range, activation_range;
  bool head_quantized = false;
  int64_t calibration_batches = 0, calibration_batch_size = 0;
  size_t activation_points = 0, weights = 0, weights_at_lookup = 0;
  std::optional<qt::quant::IntegerEvaluation> integer;
};

nlohmann::json evaluation_json(const qt::models::EvaluationResult& r, bool vit) {
  nlohmann::json out = {{"loss", r.loss}};
  if (vit)
    out["accuracy"] = r.accuracy;
  else
    out["perplexity"] = r.perplexity;
  return out;
}

// Quantizes a copy of `model` with `options`, calibrates it on training batches and evaluates it
// on the validation batches `fp` was measured on. Rank 0 saves the calibrated ranges to
// `ranges_path` (empty: not saved).
QuantizedEvaluation quantize_and_evaluate(const qt::models::Model& model,
                                          const qt::models::RunConfig& config,
                                          const qt::models::RunData& data,
                                          const qt::quant::QuantizationOptions& options,
                                          const qt::models::EvaluationResult& fp,
                                          const QuantizeArguments& a,
                                          const std::string& ranges_path) {
  const std::string family = qt::models::family_name(config.model.family);
  const int64_t batch_size = a.batch_size > 0 ? a.batch_size : config.train.batch_size;
  qt::quant::QuantizedModel quantized(qt::quant::copy_model(model),
                                      qt::quant::quantization_setup(model, options));
  qt::quant::CalibrationOptions calibration;
  calibration.batches = a.calibration_batches;
  calibration.batch_size =
      a.calibration_batch_size > 0 ? a.calibration_batch_size : config.train.batch_size;
  calibration.seed = a.seed;
  progress(fmt::format("calibrating W{}A{} on {} training batches of {}", options.weight_bits,
                       options.activation_bits, calibration.batches, calibration.batch_size));
  quantized.calibrate(data, calibration);
  progress(fmt::format("evaluating W{}A{} on {}", options.weight_bits, options.activation_bits,
                       validation_text(a.eval_batches)));
  QuantizedEvaluation out;
  out.quantized = quantized.evaluate(data, batch_size, a.eval_batches);
  qt::models::require_finite_evaluation(
      out.quantized,
      fmt::format("quantize: {} ({})", a.checkpoint,
                  fmt::format("W{}A{}", options.weight_bits, options.activation_bits)));
  if (!ranges_path.empty() && qt::distributed::rank() == 0)
    qt::quant::save_calibrated_ranges(ranges_path, quantized.ranges());
  if (a.integer) {
    // The integer-only model lowered from these ranges, on the same validation batches.
    QT_CHECK(options.weight_bits == 8 && options.activation_bits == 8,
             "quantize: --integer runs the W8A8 integer model; drop --wbits/--abits {}/{}",
             options.weight_bits, options.activation_bits);
    qt::quant::IntegerModelOptions integer_options;
    integer_options.integer_head = options.head_quantized ? 1 : 0;
    const qt::quant::IntegerModel integer =
        qt::quant::build_integer_model(model, quantized.ranges(), integer_options);
    progress(fmt::format("evaluating the integer-only model ({} ops) on {}", integer.ops.size(),
                         validation_text(a.eval_batches)));
    out.integer = qt::quant::evaluate_integer(integer, quantized, data, batch_size, a.eval_batches);
  }

  const qt::quant::QuantizationSetup& setup = quantized.setup();
  for (const auto& [name, weight] : setup.weights)
    out.weights_at_lookup += !weight.lookup_point.empty();
  out.label = fmt::format("W{}A{}", options.weight_bits, options.activation_bits);
  out.weight_range = qt::quant::range_method_name(options.weight_range);
  out.activation_range = qt::quant::activation_range_name(options);
  out.head_quantized = options.head_quantized;
  out.calibration_batches = quantized.calibration_batches();
  out.calibration_batch_size = calibration.batch_size;
  out.activation_points = setup.activations.size();
  out.weights = setup.weights.size();
  const bool vit = config.model.family == qt::models::Family::vit;
  out.record = {{"checkpoint", a.checkpoint},
                {"qtlab_version", std::string(qt::qtlab_version())},
                {"family", family},
                {"label", out.label},
                {"weight_bits", options.weight_bits},
                {"activation_bits", options.activation_bits},
                {"weight_range", out.weight_range},
                {"activation_range", out.activation_range},
                {"head_quantized", options.head_quantized},
                {"calibration_batches", out.calibration_batches},
                {"calibration_seed", a.seed},
                {"activation_points", out.activation_points},
                {"weights", out.weights},
                {"weights_at_lookup", out.weights_at_lookup},
                {"samples", fp.samples},
                {"labels", fp.labels},
                {"fp", evaluation_json(fp, vit)},
                {"quantized", evaluation_json(out.quantized, vit)}};
  if (out.integer) {
    out.record["integer"] = evaluation_json(out.integer->result, vit);
    nlohmann::json agreement = nlohmann::json::array();
    for (const qt::quant::TensorAgreement& t : out.integer->agreement)
      agreement.push_back(
          {{"tensor", t.name},
           {"elements", t.elements},
           {"exact", static_cast<double>(t.exact) / static_cast<double>(t.elements)},
           {"within_1_lsb", static_cast<double>(t.within_one) / static_cast<double>(t.elements)},
           {"mean_abs_lsb", t.mean_abs()},
           {"max_abs_lsb", t.max_abs}});
    out.record["integer_agreement"] = {{"batches", out.integer->agreement_batches},
                                       {"tensors", agreement}};
  }
  return out;
}

// "perplexity 520.171 (+0.13%)" / "accuracy 98.91% (-0.20 points)" of a quantized result vs FP.
std::string quality_change(const qt::models::EvaluationResult& fp,
                           const qt::models::EvaluationResult& q, bool vit) {
  if (vit) return fmt::format("{:+.2f} points", 100 * (q.accuracy - fp.accuracy));
  return fmt::format("{:+.2f}%", 100 * (q.perplexity / fp.perplexity - 1));
}

void print_figures(const std::string& name, const qt::models::EvaluationResult& r, bool vit,
                   const std::string& change) {
  if (vit)
    std::printf("  %-10s %10.4f %11.2f%%  %s\n", name.c_str(), r.loss, 100 * r.accuracy,
                change.c_str());
  else
    std::printf("  %-10s %10.4f %12.3f  %s\n", name.c_str(), r.loss, r.perplexity, change.c_str());
}

// --sweep: FP once, then every listed bit-width configuration on the same validation batches;
// one JSON line per configuration in --results-out (default RUN_DIR/quantize-sweep.jsonl).
void run_sweep(const QuantizeArguments& a, const qt::models::RunConfig& config,
               const qt::models::Model& model, const qt::models::RunData& data,
               const qt::models::EvaluationResult& fp) {
  const std::vector<qt::tools::QuantizationSpec> specs =
      qt::tools::parse_quantization_specs(a.sweep);
  const std::string family = qt::models::family_name(config.model.family);
  const bool vit = config.model.family == qt::models::Family::vit;
  const std::string results_path =
      a.results_out.empty()
          ? (std::filesystem::path(a.checkpoint).parent_path() / "quantize-sweep.jsonl").string()
          : a.results_out;
  std::string lines;
  if (!a.json && qt::distributed::rank() == 0) {
    std::printf("%s\n", fmt::format("{}: {} sweep over {} configurations, {} validation {} ({} "
                                    "labelled)",
                                    a.checkpoint, family, specs.size(), fp.samples,
                                    vit ? "images" : "sequences", fp.labels)
                            .c_str());
    std::printf("  %-10s %10s %12s\n", "", "loss", vit ? "accuracy" : "perplexity");
    print_figures("FP32", fp, vit, "");
    std::fflush(stdout);
  }
  for (const qt::tools::QuantizationSpec& spec : specs) {
    QuantizeArguments one = a;
    one.weight_bits = spec.weight_bits;
    one.activation_bits = spec.activation_bits;
    if (!spec.weight_range.empty()) one.weight_range = spec.weight_range;
    const qt::quant::QuantizationOptions options = quantization_options(one, model);
    QuantizedEvaluation q = quantize_and_evaluate(model, config, data, options, fp, one, "");
    q.record["spec"] = spec.text;
    lines += q.record.dump() + "\n";
    if (qt::distributed::rank() != 0) continue;
    if (a.json) {
      std::printf("%s\n", q.record.dump().c_str());
    } else {
      print_figures(
          spec.text, q.quantized, vit,
          fmt::format("{}  (weights {}, activations {})", quality_change(fp, q.quantized, vit),
                      q.weight_range, q.activation_range));
    }
    std::fflush(stdout);
  }
  if (qt::distributed::rank() != 0) return;
  qt::write_text_atomically(results_path, lines);
  if (!a.json) std::printf("  results saved to %s\n", results_path.c_str());
}

void run_quantize(const QuantizeArguments& a) {
  if (a.threads > 0) qt::set_num_threads(a.threads);
  QT_CHECK(a.calibration_batches >= 1, "quantize: --calib-batches must be >= 1, got {}",
           a.calibration_batches);
  const auto [config, model] = qt::models::load_saved_model(a.checkpoint, a.assignments);
  const std::string family = qt::models::family_name(config.model.family);
  if (!a.sweep.empty()) {
    QT_CHECK(a.ranges_out.empty(), "quantize: --ranges-out does not go with --sweep");
    qt::tools::parse_quantization_specs(a.sweep);  // reject a bad list before the evaluations
  }
  const qt::quant::QuantizationOptions options = quantization_options(a, *model);
  const qt::models::RunData data = qt::models::load_run_data(config);
  const int64_t batch_size = a.batch_size > 0 ? a.batch_size : config.train.batch_size;

  progress(fmt::format("evaluating FP32 on {}", validation_text(a.eval_batches)));
  const qt::models::EvaluationResult fp =
      qt::models::evaluate(*model, data, batch_size, a.eval_batches);
  qt::models::require_finite_evaluation(fp, "quantize: " + a.checkpoint + " (FP32)");
  if (!a.sweep.empty()) return run_sweep(a, config, *model, data, fp);

  const std::string ranges_path =
      a.ranges_out.empty() ? default_output_path(a.checkpoint, "quant-ranges", options.weight_bits,
                                                 options.activation_bits)
                           : a.ranges_out;
  const std::string results_path =
      a.results_out.empty() ? default_output_path(a.checkpoint, "quantize", options.weight_bits,
                                                  options.activation_bits)
                            : a.results_out;
  QuantizedEvaluation q = quantize_and_evaluate(*model, config, data, options, fp, a, ranges_path);
  if (qt::distributed::rank() != 0) return;
  q.record["ranges"] = ranges_path;
  q.record["results"] = results_path;
  qt::write_text_atomically(results_path, q.record.dump(2) + "\n");
  if (a.json) {
    std::printf("%s\n", q.record.dump().c_str());
    return;
  }
  const bool vit = config.model.family == qt::models::Family::vit;
  std::printf("%s\n", fmt::format("{}: {} {} (weights {}, activations {}, {} head), calibrated on "
                                  "{} training batches of {} (seed {})",
                                  a.checkpoint, family, q.label, q.weight_range, q.activation_range,
                                  q.head_quantized ? "quantized" : "FP", q.calibration_batches,
                                  q.calibration_batch_size, a.seed)
                          .c_str());
  std::printf("%s\n", fmt::format("  quantized: {} activation points, {} weights ({} at their "
                                  "lookups)",
                                  q.activation_points, q.weights, q.weights_at_lookup)
                          .c_str());
  std::printf("%s\n", fmt::format("  evaluated on {} validation {} ({} labelled)", fp.samples,
                                  vit ? "images" : "sequences", fp.labels)
                          .c_str());
  std::printf("  %-12s %10s %12s\n", "", "loss", vit ? "accuracy" : "perplexity");
  std::vector<std::pair<std::string, qt::models::EvaluationResult>> rows = {{"FP32", fp},
                                                                            {q.label, q.quantized}};
  if (q.integer) rows.push_back({"integer " + q.label, q.integer->result});
  for (const auto& [name, r] : rows) {
    if (vit)
      std::printf("  %-12s %10.4f %11.2f%%\n", name.c_str(), r.loss, 100 * r.accuracy);
    else
      std::printf("  %-12s %10.4f %12.3f\n", name.c_str(), r.loss, r.perplexity);
  }
  if (q.integer) {
    int64_t elements = 0, exact = 0, within = 0;
    double worst = 0;
    for (const qt::quant::TensorAgreement& t : q.integer->agreement) {
      elements += t.elements;
      exact += t.exact;
      within += t.within_one;
      worst = std::max(worst, t.mean_abs());
    }
    std::printf("%s\n", fmt::format("  integer vs simulated codes over {} tensors ({} batches): "
                                    "{:.2f}% identical, {:.2f}% within 1 LSB, worst tensor mean "
                                    "|d| {:.3f} LSB",
                                    q.integer->agreement.size(), q.integer->agreement_batches,
                                    100.0 * exact / std::max<int64_t>(elements, 1),
                                    100.0 * within / std::max<int64_t>(elements, 1), worst)
                            .c_str());
  }
  std::printf("  ranges saved to %s\n  results saved to %s\n", ranges_path.c_str(),
              results_path.c_str());
}

}  // namespace

void add_quantize_command(CLI::App& app) {
  auto arguments = std::make_shared<QuantizeArguments>();
  CLI::App* cmd = app.add_subcommand(
      "quantize", "W8A8 post-training quantization: FP vs quantized perplexity / accuracy");
  cmd->add_option("--checkpoint", arguments->checkpoint, "RUN_DIR/model.safetensors")->required();
  cmd->add_option("--wbits", arguments->weight_bits, "weight bits (default 8)");
  cmd->add_option("--abits", arguments->activation_bits, "activation bits (default 8)");
  cmd->add_option("--weight-range", arguments->weight_range,
                  "minmax | mse (default: mse for OPT, minmax otherwise)");
  cmd->add_option("--act-range", arguments->activation_range,
                  "running-minmax | percentile:P (default: percentile:99.999 for OPT, "
                  "running-minmax otherwise)");
  cmd->add_option("--head", arguments->head,
                  "fp | quantized (default: fp for BERT/OPT, quantized for ViT)");
  cmd->add_option("--ln-bits", arguments->layer_norm_bits,
                  "bits of every LayerNorm output (e.g. 16; default: --abits)");
  cmd->add_option("--final-ln-bits", arguments->final_layer_norm_bits,
                  "bits of the LayerNorm output feeding the head (e.g. 16)");
  cmd->add_option("--calib-batches", arguments->calibration_batches,
                  "calibration batches from the training split (default 16)");
  cmd->add_option("--calib-batch-size", arguments->calibration_batch_size,
                  "default: the run's train.batch_size");
  cmd->add_option("--seed", arguments->seed, "calibration sample seed (default 2000)");
  cmd->add_option("--eval-batches", arguments->eval_batches, "validation batches (default: all)");
  cmd->add_option("--batch-size", arguments->batch_size,
                  "validation batch size (default: the run's train.batch_size)");
  cmd->add_option("--ranges-out", arguments->ranges_out,
                  "calibrated ranges JSON (default RUN_DIR/quant-ranges-w<b>a<b>.json)");
  cmd->add_option("--results-out", arguments->results_out,
                  "result JSON (default RUN_DIR/quantize-w<b>a<b>.json)");
  cmd->add_option("--sweep", arguments->sweep,
                  "bit-width sweep, e.g. W8A8,W6A8:mse,W4A8:mse,W8A4 (:mse / :minmax sets the "
                  "weight range): FP once, then each; JSON lines to --results-out (default "
                  "RUN_DIR/quantize-sweep.jsonl)");
  cmd->add_option("--set", arguments->assignments, "override a stored key, e.g. data.dir=...");
  cmd->add_option("--threads", arguments->threads, "OpenMP threads (default: all)");
  cmd->add_flag("--integer", arguments->integer,
                "also evaluate the integer-only W8A8 model built from the calibrated ranges, and "
                "compare its tensors with the simulation's");
  cmd->add_flag("--json", arguments->json,
                "one JSON object (with --sweep: one per line) instead of text");
  cmd->callback([arguments] { run_quantize(*arguments); });
}
