// `qtlab bench infer`: inference throughput of the FP32 model and of the integer-only model
// (quant/integer_model.h) built from it, side by side in one process, on the same batch of
// synthetic tokens (B = 32, T = 128 by default, bert-mini). Measured, per forward:
//   fp32 model        Model::logits (encoder + head)
//   fp32 head         Model::head_logits on the encoder's output alone
//   fp32 encoder      the difference of the two (the part the integer model replaces)
//   integer encoder   run_integer_model: every op of the integer model, to the hidden states
//   integer + FP head the integer encoder, dequantized, then the FP head (what --integer reports)
// The model has random weights, calibrated on two synthetic batches: speed does not depend on
// what the weights have learned. The int8 GEMM's share: GOP/s of the model's largest integer GEMM
// (the FFN's, B*T x ffn x d) as a fraction of the VNNI peak, measured at the start on the same
// threads (tensor/cpu_peak.h, as `bench peak`; --peak-gops overrides it).
#include <fmt/format.h>

#include <map>
#include <memory>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "autograd/node.h"
#include "models/config.h"
#include "models/model.h"
#include "models/run_data.h"
#include "quant/integer_evaluation.h"
#include "quant/integer_linear.h"
#include "quant/integer_model.h"
#include "quant/quantization_setup.h"
#include "quant/quantized_model.h"
#include "tensor/blas/gemm.h"
#include "tensor/cpu_peak.h"
#include "tensor/error.h"
#include "tensor/random.h"
#include "tensor/threads.h"
#include "tools/bench.h"

namespace {

struct Options {
  std::string model = "bert-mini";
  int64_t batch = 32, seq = 128;
  int repeats = 5, threads = 0;
  double peak_gops = 0;  // 0: measured (tensor/cpu_peak.h)
  bool json = false;
};

void run_bench_infer(const Options& opt) {
  QT_CHECK(opt.repeats >= 1, "bench infer: --repeats must be >= 1");
  if (opt.threads > 0) qt::set_num_threads(opt.threads);
  const int threads = qt::num_threads();
  const double peak =
      opt.peak_gops > 0 ? opt.peak_gops : qt::cpu::measure_int8_vnni_peak(threads).gops;
  qt::models::RunConfig config = qt::models::preset(opt.model);
  QT_CHECK(config.model.family != qt::models::Family::vit,
           "bench infer: --model {} is a ViT; the benchmark covers text models", opt.model);
  config.model.max_length = opt.seq;
  config.data.dataset = "synthetic";
  config.train.batch_size = opt.batch;
  const auto model = qt::models::build_model(config.model, 0);
  model->eval();
  const qt::models::RunData data = qt::models::load_run_data(config);
  qt::quant::QuantizedModel quantized(
      qt::quant::copy_model(*model),
      qt::quant::quantization_setup(*model, qt::quant::paper_quantization_options(*model, 8)));
  qt::quant::CalibrationOptions calibration;
  calibration.batches = 2;
  calibration.batch_size = opt.batch;
  quantized.calibrate(data, calibration);
  const qt::quant::IntegerModel integer =
      qt::quant::build_integer_model(*model, quantized.ranges());

  qt::models::Batch batch;
  batch.input_ids = qt::Tensor::empty({opt.batch, opt.seq}, qt::DType::i64);
  int64_t* ids = batch.input_ids.data<int64_t>();
  for (int64_t i = 0; i < opt.batch * opt.seq; ++i)
    ids[i] = 5 + static_cast<int64_t>(qt::random_uniform_f64(1, 0, 2 * i) *
                                      static_cast<double>(config.model.vocab_size - 5));
  const qt::quant::IntegerInput input = qt::quant::integer_input(integer, batch);
  qt::NoGradGuard no_grad;
  const qt::Tensor hidden =
      qt::quant::dequantize_output(integer, qt::quant::run_integer_model(integer, input));

  // The integer forward reuses its activation buffers across rounds, as an inference loop would
  // (the FP32 forward's tensors come from the allocator's block cache in the same way).
  qt::quant::IntegerActivations activations;
  std::vector<double> fp_ms, head_ms, int_ms, int_head_ms;
  for (int r = 0; r < opt.repeats + 1; ++r) {  // the first round warms up
    const double fp = time_ms([&] { (void)model->logits(batch); });
    const double head = time_ms([&] { (void)model->head_logits(hidden); });
    const double in = time_ms([&] { qt::quant::run_integer_model(integer, input, activations); });
    const double in_head =
        time_ms([&] { (void)qt::quant::integer_logits(integer, *model, batch); });
    if (r == 0) continue;
    fp_ms.push_back(fp);
    head_ms.push_back(head);
    int_ms.push_back(in);
    int_head_ms.push_back(in_head);
  }
  const Timing fp = summarize(fp_ms), head = summarize(head_ms), in = summarize(int_ms),
               in_head = summarize(int_head_ms);
  const double tokens = static_cast<double>(opt.batch * opt.seq);
  const double fp_encoder = fp.median_ms - head.median_ms;
  // The int8 GEMM alone at the FFN's shape.
  const int64_t M = opt.batch * opt.seq, N = config.model.ffn, K = config.model.hidden;
  std::vector<uint8_t> a(static_cast<size_t>(M * K), 3);
  std::vector<int8_t> b(static_cast<size_t>(N * K), -2);
  std::vector<int32_t> c(static_cast<size_t>(M * N));
  std::vector<double> gemm_ms;
  for (int r = 0; r < opt.repeats + 1; ++r) {
    const double ms =
        time_ms([&] { qt::blas::gemm_u8s8s32(M, N, K, a.data(), K, b.data(), K, c.data(), N); });
    if (r > 0) gemm_ms.push_back(ms);
  }
  const double gops = 2.0 * M * N * K / (summarize(gemm_ms).median_ms * 1e6);
  const nlohmann::json record = {{"model", opt.model},
                                 {"batch", opt.batch},
                                 {"seq", opt.seq},
                                 {"threads", threads},
                                 {"fp32_model_ms", fp.median_ms},
                                 {"fp32_head_ms", head.median_ms},
                                 {"fp32_encoder_ms", fp_encoder},
                                 {"integer_encoder_ms", in.median_ms},
                                 {"integer_with_fp_head_ms", in_head.median_ms},
                                 {"encoder_speedup", fp_encoder / in.median_ms},
                                 {"int8_gemm_gops", gops},
                                 {"int8_gemm_fraction_of_peak", peak > 0 ? gops / peak : 0.0},
                                 {"peak_gops", peak}};
  if (opt.json) {
    fmt::print("{}\n", record.dump());
    return;
  }
  fmt::print("bench infer: {} B={} T={}, {} thread(s), median of {} runs\n", opt.model, opt.batch,
             opt.seq, threads, opt.repeats);
  const auto row = [&](const char* what, double ms) {
    fmt::print("  {:<28} {:9.1f} ms {:12.0f} tok/s\n", what, ms, tokens / (ms / 1e3));
  };
  row("fp32 model (encoder + head)", fp.median_ms);
  row("fp32 head alone", head.median_ms);
  row("fp32 encoder (difference)", fp_encoder);
  row("integer encoder", in.median_ms);
  row("integer encoder + fp32 head", in_head.median_ms);
  fmt::print("  integer / fp32 encoder: {:.2f}x the tokens/s\n", fp_encoder / in.median_ms);
  // Where the integer forward's time goes, per op kind (one more forward).
  const qt::quant::IntegerActivations profiled = qt::quant::run_integer_model(integer, input);
  std::map<std::string, double> by_kind;
  double total = 0;
  for (size_t i = 0; i < integer.ops.size(); ++i) {
    by_kind[qt::quant::integer_op_kind_name(integer.ops[i].kind)] += profiled.op_ms[i];
    total += profiled.op_ms[i];
  }
  fmt::print("  integer forward by op kind ({:.1f} ms):\n", total);
  for (const auto& [kind, ms] : by_kind)
    fmt::print("    {:<20} {:9.1f} ms {:6.1f}%\n", kind, ms, 100 * ms / total);
  if (peak > 0)
    fmt::print("  int8 GEMM {}x{}x{}: {:.0f} GOP/s = {:.2f} of the VNNI peak ({:.0f} GOP/s)\n", M,
               N, K, gops, gops / peak, peak);
  else
    fmt::print("  int8 GEMM {}x{}x{}: {:.0f} GOP/s (no VNNI peak on this CPU)\n", M, N, K, gops);
}

}  // namespace

void add_bench_infer(CLI::App* bench) {
  auto opt = std::make_shared<Options>();
  CLI::App* cmd = bench->add_subcommand(
      "infer", "FP32 vs integer-only inference tokens/s (bert-mini, B=32, T=128)");
  cmd->add_option("--model", opt->model, "text preset (default bert-mini)");
  cmd->add_option("--batch", opt->batch, "sequences (default 32)");
  cmd->add_option("--seq", opt->seq, "tokens per sequence (default 128)");
  cmd->add_option("--repeats", opt->repeats, "timed runs (default 5)");
  cmd->add_option("--threads", opt->threads, "threads (default: all)");
  cmd->add_option("--peak-gops", opt->peak_gops,
                  "int8 VNNI peak to compare with (default: measured now, as `bench peak`)");
  cmd->add_flag("--json", opt->json, "one JSON object");
  cmd->callback([opt] { run_bench_infer(*opt); });
}
