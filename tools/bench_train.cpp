// `qtlab bench train`: full training steps — forward, MLM / LM / classification loss, backward,
// gradient clipping, AdamW — on synthetic data, timed like the other benchmarks. The PyTorch
// baseline with the same model, batches and work per step is tools/bench_train_torch.py;
// `make bench` runs both in one go and prints the ratio.
//
// Synthetic batch (text): ids uniform in [5, vocab), 15% of positions selected (labels = the ids
// there, -100 elsewhere) — the shape of a BERT MLM batch; OPT takes next-token labels instead.
// Model FLOPs per step (the formula of the PyTorch script, so that the GFLOP/s compare):
//   6 * dense_parameters * tokens           dense = layers (4 d^2 + 2 d ffn) + d^2 (head transform)
// + layers * 3 * 4 * B * T^2 * d            attention scores and P V, forward and backward
// + 6 * V * d * labelled_rows               the tied output projection on the labelled rows
#include <fmt/format.h>
#include <sys/resource.h>

#include <memory>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "autograd/engine.h"
#include "models/config.h"
#include "models/model.h"
#include "optim/adamw.h"
#include "optim/clip_grad.h"
#include "optim/parameter_groups.h"
#include "tensor/cpu_peak.h"
#include "tensor/error.h"
#include "tensor/random.h"
#include "tensor/threads.h"
#include "tools/bench.h"

namespace {

struct Options {
  std::string model = "bert-mini";
  int64_t batch = 32, seq = 128;
  int64_t layers = 0, hidden = 0, heads = 0, ffn = 0, vocab = 0;  // 0: the preset's
  int steps = 10, warmup = 2, threads = 0;
  bool json = false;
};

double peak_rss_mb() {
  rusage usage{};
  getrusage(RUSAGE_SELF, &usage);
  return static_cast<double>(usage.ru_maxrss) / 1024.0;  // Linux: kilobytes
}

void run_bench_train(const Options& opt) {
  QT_CHECK(opt.steps >= 1 && opt.warmup >= 0,
           "bench train: --steps must be >= 1 and --warmup >= 0");
  if (opt.threads > 0) qt::set_num_threads(opt.threads);
  qt::models::RunConfig config = qt::models::preset(opt.model);
  qt::models::ModelConfig& m = config.model;
  QT_CHECK(m.family != qt::models::Family::vit,
           "bench train: --model {} is a ViT; the benchmark covers text models", opt.model);
  if (opt.layers > 0) m.layers = opt.layers;
  if (opt.hidden > 0) m.hidden = opt.hidden;
  if (opt.heads > 0) m.heads = opt.heads;
  if (opt.ffn > 0) m.ffn = opt.ffn;
  if (opt.vocab > 0) m.vocab_size = opt.vocab;
  m.max_length = opt.seq;
  config.data.dataset = "synthetic";
  qt::models::validate(config);

  auto model = qt::models::build_model(m, 0);
  model->train();
  qt::optim::WeightDecayRule rule;
  rule.weight_decay = 0.01;
  qt::optim::AdamW optimizer(qt::optim::weight_decay_groups(model->named_parameters(), rule), {});
  const std::vector<qt::Tensor> parameters = model->parameters();

  qt::models::Batch batch;
  batch.input_ids = qt::Tensor::empty({opt.batch, opt.seq}, qt::DType::i64);
  batch.labels = qt::Tensor::empty({opt.batch, opt.seq}, qt::DType::i64);
  int64_t* ids = batch.input_ids.data<int64_t>();
  int64_t* labels = batch.labels.data<int64_t>();
  const bool causal = m.family == qt::models::Family::opt;
  for (int64_t i = 0; i < opt.batch * opt.seq; ++i)
    ids[i] = 5 + static_cast<int64_t>(qt::random_uniform_f64(1, 0, 2 * i) * (m.vocab_size - 5));
  for (int64_t i = 0; i < opt.batch * opt.seq; ++i) {
    if (causal)
      labels[i] = (i + 1) % opt.seq == 0 ? qt::models::kIgnoreIndex : ids[i + 1];
    else
      labels[i] =
          qt::random_uniform_f64(1, 0, 2 * i + 1) < 0.15 ? ids[i] : qt::models::kIgnoreIndex;
  }
  const int64_t labelled = qt::models::Model::count_labels(batch.labels);

  int64_t step = 0;
  auto train_step = [&] {
    model->dropout_state->step = static_cast<uint64_t>(step++);
    const qt::Tensor loss = model->loss(batch);
    qt::backward(loss);
    qt::optim::clip_grad_norm(parameters, 1.0);
    optimizer.step(1e-4);
    optimizer.zero_grad();
  };
  for (int i = 0; i < opt.warmup; ++i) train_step();
  std::vector<double> ms;
  for (int i = 0; i < opt.steps; ++i) ms.push_back(time_ms(train_step));
  const Timing timing = summarize(ms);

  int64_t parameter_count = 0;
  for (const qt::Tensor& p : parameters) parameter_count += p.numel();
  const double tokens = static_cast<double>(opt.batch * opt.seq);
  const double dense =
      static_cast<double>(m.layers * (4 * m.hidden * m.hidden + 2 * m.hidden * m.ffn) +
                          (causal ? 0 : m.hidden * m.hidden));
  const double flops =
      6 * dense * tokens +
      static_cast<double>(m.layers) * 3 * 4 * opt.batch * opt.seq * opt.seq * m.hidden +
      6.0 * m.vocab_size * m.hidden * static_cast<double>(labelled);
  const double seconds = timing.median_ms / 1e3;
  nlohmann::json result = {{"framework", "qtlab"},
                           {"model", opt.model},
                           {"threads", qt::num_threads()},
                           {"layers", m.layers},
                           {"hidden", m.hidden},
                           {"heads", m.heads},
                           {"ffn", m.ffn},
                           {"vocab", m.vocab_size},
                           {"seq", opt.seq},
                           {"batch", opt.batch},
                           {"steps", opt.steps},
                           {"parameters", parameter_count},
                           {"step_ms_median", timing.median_ms},
                           {"step_ms_best", timing.best_ms},
                           {"tokens_per_s", tokens / seconds},
                           {"gflops", flops / seconds / 1e9},
                           {"peak_rss_mb", peak_rss_mb()}};
  // The fraction of this CPU's fp32 FMA peak, measured now on the same threads.
  const double peak = qt::cpu::measure_fp32_fma_peak(qt::num_threads()).gops;
  result["fp32_peak_gflops"] = peak;
  result["fraction_of_peak"] = flops / seconds / 1e9 / peak;
  if (opt.json) {
    fmt::print("{}\n", result.dump());
    return;
  }
  fmt::print(
      "qtlab {} (B={}, T={}, {} threads): {:.0f} tokens/s, {:.1f} ms/step (best {:.1f}), "
      "{:.1f} GFLOP/s ({:.2f} of the {:.0f} GFLOP/s fp32 peak), peak RSS {:.0f} MB\n",
      opt.model, opt.batch, opt.seq, qt::num_threads(), tokens / seconds, timing.median_ms,
      timing.best_ms, flops / seconds / 1e9, flops / seconds / 1e9 / peak, peak, peak_rss_mb());
}

}  // namespace

void add_bench_train(CLI::App* bench) {
  auto opt = std::make_shared<Options>();
  CLI::App* cmd = bench->add_subcommand("train", "full training steps (forward, backward, AdamW)");
  cmd->add_option("--model", opt->model, "preset: bert-mini, bert-small, opt-mini");
  cmd->add_option("--batch", opt->batch, "sequences per step");
  cmd->add_option("--seq", opt->seq, "sequence length");
  cmd->add_option("--layers", opt->layers, "override the preset");
  cmd->add_option("--hidden", opt->hidden, "override the preset");
  cmd->add_option("--heads", opt->heads, "override the preset");
  cmd->add_option("--ffn", opt->ffn, "override the preset");
  cmd->add_option("--vocab", opt->vocab, "override the preset");
  cmd->add_option("--steps", opt->steps, "timed steps (median reported)");
  cmd->add_option("--warmup", opt->warmup, "untimed steps first");
  cmd->add_option("--threads", opt->threads, "OpenMP threads (default: all)");
  cmd->add_flag("--json", opt->json, "one JSON object");
  cmd->callback([opt] { run_bench_train(*opt); });
}
