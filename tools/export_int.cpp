// `qtlab export-int --checkpoint RUN/model.safetensors --out DIR`: the integer-only model as a
// self-contained C99 program with seeded test vectors (quant/integer_export.h).
//
// The model is calibrated exactly as `qtlab quantize` does (same options, batches and seed), or
// its ranges are read from --calibration (a quant-ranges JSON that `quantize` wrote). Test
// vectors are validation samples drawn with --seed: --vectors of them, each a batch of
// --vector-batch sequences (or images) cut to --vector-length tokens.
#include <fmt/format.h>
#include <algorithm>
#include <cstdio>
#include <numeric>
#include <random>

#include "models/run_data.h"
#include "models/saved_model.h"
#include "quant/calibrated_ranges.h"
#include "quant/integer_export.h"
#include "quant/integer_model.h"
#include "quant/quantization_setup.h"
#include "quant/quantized_model.h"
#include "tensor/error.h"
#include "tensor/threads.h"
#include "tensor/view.h"
#include "tools/commands.h"

namespace {

struct ExportArguments {
  std::string checkpoint, out, calibration, rounding = "double_rounding";
  std::vector<std::string> assignments;
  int64_t vectors = 2, vector_batch = 2, vector_length = 32, calibration_batches = 16;
  uint64_t seed = 1, calibration_seed = 2000;
  bool per_channel = false;
  std::string head;  // "" default, "fp", "integer"
  int threads = 0;
};

qt::quant::Requant parse_requant(const std::string& name) {
  for (auto mode : {qt::quant::Requant::double_rounding, qt::quant::Requant::single_half_up,
                    qt::quant::Requant::single_half_away, qt::quant::Requant::single_half_even})
    if (qt::quant::requant_id(mode) == name) return mode;
  qt::fail(
      "export-int: --rounding must be double_rounding, single_half_up, single_half_away or "
      "single_half_even, got '{}'",
      name);
}

void run_export(const ExportArguments& a) {
  if (a.threads > 0) qt::set_num_threads(a.threads);
  QT_CHECK(a.vectors >= 1 && a.vector_batch >= 1 && a.vector_length >= 1,
           "export-int: --vectors, --vector-batch and --vector-length must be >= 1");
  QT_CHECK(a.head.empty() || a.head == "fp" || a.head == "integer",
           "export-int: --head must be fp or integer, got '{}'", a.head);
  const auto [config, model] = qt::models::load_saved_model(a.checkpoint, a.assignments);
  const qt::models::RunData data = qt::models::load_run_data(config);
  qt::quant::IntegerModelOptions options;
  options.rounding = parse_requant(a.rounding);
  options.per_channel_weights = a.per_channel;
  if (!a.head.empty()) options.integer_head = a.head == "integer" ? 1 : 0;
  qt::quant::CalibratedRanges ranges;
  if (!a.calibration.empty()) {
    ranges = qt::quant::load_calibrated_ranges(a.calibration);
  } else {
    qt::quant::QuantizationOptions q = qt::quant::paper_quantization_options(*model, 8);
    if (options.integer_head >= 0) q.head_quantized = options.integer_head == 1;
    qt::quant::QuantizedModel quantized(qt::quant::copy_model(*model),
                                        qt::quant::quantization_setup(*model, q));
    qt::quant::CalibrationOptions calibration;
    calibration.batches = a.calibration_batches;
    calibration.batch_size = config.train.batch_size;
    calibration.seed = a.calibration_seed;
    std::fprintf(stderr, "export-int: calibrating W8A8 on %lld training batches of %lld\n",
                 static_cast<long long>(calibration.batches),
                 static_cast<long long>(calibration.batch_size));
    quantized.calibrate(data, calibration);
    ranges = quantized.ranges();
  }
  const qt::quant::IntegerModel integer = qt::quant::build_integer_model(*model, ranges, options);
  // Seeded validation samples, cut to the vector length (text).
  QT_CHECK(data.validation_samples >= a.vector_batch,
           "export-int: the validation split has {} samples, a vector needs {}",
           data.validation_samples, a.vector_batch);
  std::mt19937_64 generator(a.seed);
  std::vector<int64_t> order(static_cast<size_t>(data.validation_samples));
  std::iota(order.begin(), order.end(), int64_t{0});
  for (size_t k = order.size(); k > 1; --k) std::swap(order[k - 1], order[generator() % k]);
  std::vector<qt::models::Batch> vectors;
  for (int64_t v = 0; v < a.vectors; ++v) {
    std::vector<int64_t> indices;
    for (int64_t i = 0; i < a.vector_batch; ++i)
      indices.push_back(
          order[static_cast<size_t>((v * a.vector_batch + i) % data.validation_samples)]);
    const qt::data::Batch b = data.validation_batch(indices, 0);
    qt::models::Batch batch{b.input_ids, b.images, b.labels};
    if (batch.input_ids.defined() && batch.input_ids.size(1) > a.vector_length)
      batch.input_ids =
          qt::ops::contiguous(qt::ops::narrow(batch.input_ids, 1, 0, a.vector_length));
    vectors.push_back(batch);
  }
  qt::quant::ExportDescription description;
  description.checkpoint = a.checkpoint;
  description.ranges = a.calibration.empty() ? "calibrated by export-int" : a.calibration;
  qt::quant::export_integer_model(integer, vectors, a.out, description);
  std::printf("%s\n",
              fmt::format("export-int: {} integer model ({} ops, {} tensors, {} head, {}) "
                          "with {} test vectors -> {}\n  check it: make -C {} check",
                          integer.family, integer.ops.size(), integer.tensors.size(),
                          integer.integer_head ? "integer" : "FP",
                          qt::quant::requant_id(integer.rounding), vectors.size(), a.out, a.out)
                  .c_str());
}

}  // namespace

void add_export_int_command(CLI::App& app) {
  auto a = std::make_shared<ExportArguments>();
  CLI::App* cmd = app.add_subcommand(
      "export-int", "the integer-only model as one C99 file with test vectors and `make check`");
  cmd->add_option("--checkpoint", a->checkpoint, "RUN_DIR/model.safetensors")->required();
  cmd->add_option("--out", a->out, "the export directory (replaced if it is an earlier export)")
      ->required();
  cmd->add_option("--calibration", a->calibration,
                  "ranges JSON written by `qtlab quantize` (default: calibrate as quantize does)");
  cmd->add_option("--calib-batches", a->calibration_batches, "calibration batches (default 16)");
  cmd->add_option("--calib-seed", a->calibration_seed, "calibration sample seed (default 2000)");
  cmd->add_option("--rounding", a->rounding,
                  "double_rounding (default) | single_half_up | single_half_away | "
                  "single_half_even");
  cmd->add_flag("--per-channel", a->per_channel, "s8 weights per output channel");
  cmd->add_option("--head", a->head, "fp | integer (default: fp for BERT/OPT, integer for ViT)");
  cmd->add_option("--vectors", a->vectors, "test vectors (default 2)");
  cmd->add_option("--vector-batch", a->vector_batch, "samples per vector (default 2)");
  cmd->add_option("--vector-length", a->vector_length, "tokens per text sample (default 32)");
  cmd->add_option("--seed", a->seed, "test vector sample seed (default 1)");
  cmd->add_option("--set", a->assignments, "override a stored key, e.g. data.dir=...");
  cmd->add_option("--threads", a->threads, "OpenMP threads (default: all)");
  cmd->callback([a] { run_export(*a); });
}
