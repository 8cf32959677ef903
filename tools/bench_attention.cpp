// `qtlab bench attention`: forward + backward time of the whole Attention module (Q/K/V/output
// projections, gate, core), the fused path against the composed-ops reference, for vanilla
// softmax, clipped softmax and gated attention. The fused module computes Q, K, V with one GEMM
// against the stacked weights and runs the core on them in place (nn::attention_core_projected);
// the composed one uses three Linear layers and autograd ops.
//
// A pair of rows times the core alone (attention_core vs attention_core_composed, vanilla, on
// fixed q, k, v). The module rows also contain the four d x d projections, which are the same
// FLOPs in both paths (4 x 3 GEMMs of 2*B*T*d*d FLOPs forward + backward, 6.4 GFLOP at the default
// sizes, against 1.6 GFLOP for the core's 6 GEMMs of 2*B*H*T*T*d_h): GEMM time bounds the module
// speedup well below the core's.
//
// Last, two rows time the GEMMs alone (module, core), with the shapes, layouts and threading the
// fused path uses and nothing else (no softmax, masks, gate, bias, allocation): the floor under any
// implementation built on this GEMM. composed / floor is the largest speedup a fused path could
// possibly show over the composed one; when it is below 2 for the module, a 2x module speedup is
// out of reach whatever the fusion does.
//
// Also reported: minor page faults per step (first-touch of fresh memory; the caching allocator
// of tensor/storage.h should make them ~0 in the steady state) and the GEMM backend.
//
// Method: as `bench gemm`: warm-up rounds first (every configuration once per round, at least
// one round and 300 ms), then `repeats` rounds in which every configuration is timed once
// (interleaved, so frequency or neighbour noise hits all of them alike). Reported: best and
// median milliseconds per forward + backward, and the composed / fused ratio of both.
// The module runs in train mode, so attention-probability dropout (--dropout) is on.
#include <fmt/format.h>
#include <omp.h>
#include <sys/resource.h>

#include <algorithm>
#include <chrono>
#include <functional>
#include <memory>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "autograd/functions.h"
#include "nn/attention.h"
#include "nn/attention_core.h"
#include "tensor/blas/gemm.h"
#include "tensor/error.h"
#include "tensor/threads.h"
#include "tools/bench.h"

namespace {

struct Options {
  bool json = false;
  int64_t batch = 32, seq = 128, heads = 4, hidden = 256;
  int repeats = 4;
  float dropout = 0.0f;
  double gamma = -0.025;
  int threads = 0;
};

struct Variant {
  std::string name;  // "vanilla", "clipped", "gated" (whole module) or "core" (core only)
  bool fused;
  std::function<void()> step;  // one forward + backward
  std::vector<double> ms;
  long page_faults = 0;  // minor faults over the timed rounds
};

// The GEMMs of one module forward + backward (fused-path shapes), on scratch buffers allocated
// by the caller. Projections: forward Y = X W^T, backward dX = dY W and dW = dY^T X, for Q, K, V
// and the output (threaded GEMMs over [B*T, d]). Core, per (batch, head) block with one thread
// each: S = Q K^T, O = P V; dV = P^T dO, dP = dO V^T, dQ = dS K, dK = dS^T Q.
struct GemmFloor {
  int64_t batch, seq, heads, hidden;
  std::vector<float> x, weight, y, score;  // [B*T, d], [d, d], [B*T, d], [threads, T, T]
  GemmFloor(const Options& o)
      : batch(o.batch),
        seq(o.seq),
        heads(o.heads),
        hidden(o.hidden),
        x(o.batch * o.seq * o.hidden, 0.01f),
        weight(o.hidden * o.hidden, 0.01f),
        y(o.batch * o.seq * o.hidden, 0.0f),
        score(static_cast<size_t>(qt::num_threads()) * o.seq * o.seq, 0.01f) {}

  void projections() {
    using qt::blas::Trans;
    const int64_t rows = batch * seq, d = hidden;
    for (int p = 0; p < 4; ++p) {
      qt::blas::sgemm(Trans::no, Trans::yes, rows, d, d, 1.0f, x.data(), d, weight.data(), d, 0.0f,
                      y.data(), d);  // forward
      qt::blas::sgemm(Trans::no, Trans::no, rows, d, d, 1.0f, y.data(), d, weight.data(), d, 0.0f,
                      x.data(), d);  // dX
      qt::blas::sgemm(Trans::yes, Trans::no, d, d, rows, 1.0f, y.data(), d, x.data(), d, 0.0f,
                      weight.data(), d);  // dW
    }
  }

  void core() {
    using qt::blas::Trans;
    const int64_t T = seq, d = hidden, dh = hidden / heads, blocks = batch * heads;
#pragma omp parallel for schedule(static)
    for (int64_t bh = 0; bh < blocks; ++bh) {
      float* s = score.data() + static_cast<size_t>(omp_get_thread_num()) * T * T;
      const int64_t offset = (bh / heads) * T * d + (bh % heads) * dh;
      const float* q = x.data() + offset;
      float* o = y.data() + offset;
      qt::blas::sgemm(Trans::no, Trans::yes, T, T, dh, 1.0f, q, d, q, d, 0.0f, s, T);  // S
      qt::blas::sgemm(Trans::no, Trans::no, T, dh, T, 1.0f, s, T, q, d, 0.0f, o, d);   // O
      qt::blas::sgemm(Trans::yes, Trans::no, T, dh, T, 1.0f, s, T, q, d, 0.0f, o, d);  // dV
      qt::blas::sgemm(Trans::no, Trans::yes, T, T, dh, 1.0f, o, d, q, d, 0.0f, s, T);  // dP
      qt::blas::sgemm(Trans::no, Trans::no, T, dh, T, 1.0f, s, T, q, d, 0.0f, o, d);   // dQ
      qt::blas::sgemm(Trans::yes, Trans::no, T, dh, T, 1.0f, s, T, q, d, 0.0f, o, d);  // dK
    }
  }
};

long minor_page_faults() {
  rusage usage{};
  getrusage(RUSAGE_SELF, &usage);
  return usage.ru_minflt;
}

void run_bench_attention(const Options& opt) {
  QT_CHECK(opt.repeats >= 1, "bench attention: --repeats {} (expected >= 1)", opt.repeats);
  QT_CHECK(opt.batch >= 1 && opt.seq >= 1 && opt.heads >= 1 && opt.hidden >= 1,
           "bench attention: sizes must be positive (batch {}, seq {}, heads {}, hidden {})",
           opt.batch, opt.seq, opt.heads, opt.hidden);
  if (opt.threads > 0) qt::set_num_threads(opt.threads);

  auto state = std::make_shared<qt::nn::DropoutState>();
  state->seed = 1;
  const qt::Tensor x_value =
      qt::ops::randn({opt.batch, opt.seq, opt.hidden}, 11, 0, qt::DType::f32);
  const qt::Tensor upstream =
      qt::ops::randn({opt.batch, opt.seq, opt.hidden}, 12, 0, qt::DType::f32);

  std::vector<Variant> variants;
  for (const std::string name : {"vanilla", "clipped", "gated"})
    for (bool fused : {true, false}) {
      qt::nn::AttentionOptions o;
      o.hidden = opt.hidden;
      o.heads = opt.heads;
      o.probability_dropout = opt.dropout;
      o.fused = fused;
      if (name == "clipped") {
        o.softmax = qt::nn::SoftmaxClip{true, opt.gamma, 1.0};
      }
      if (name == "gated") o.gate = qt::nn::GateKind::linear_per_head;
      qt::nn::InitRng rng{7, 0};
      auto module = std::make_shared<qt::nn::Attention>(o, state, rng);
      variants.push_back({name,
                          fused,
                          [module, &x_value, &upstream] {
                            module->zero_grad();
                            qt::Tensor x = qt::ops::clone(x_value);
                            x.set_requires_grad(true);
                            qt::backward(module->forward(x), upstream);
                          },
                          {}});
    }
  // The core alone (scores -> softmax -> dropout -> P V), vanilla, on fixed q, k, v.
  std::vector<qt::Tensor> qkv;
  for (uint64_t seed : {21, 22, 23}) {
    qkv.push_back(qt::ops::randn({opt.batch, opt.seq, opt.hidden}, seed, 0, qt::DType::f32));
    qkv.back().set_requires_grad(true);
  }
  for (bool fused : {true, false})
    variants.push_back({"core",
                        fused,
                        [fused, &qkv, &upstream, &opt, state] {
                          qt::nn::AttentionCoreOptions o;
                          o.heads = opt.heads;
                          o.dropout = opt.dropout;
                          o.dropout_seed = state->seed;
                          o.dropout_stream = state->step;
                          for (const qt::Tensor& t : qkv) t.set_grad(qt::Tensor());
                          const qt::Tensor c =
                              fused ? qt::nn::attention_core(qkv[0], qkv[1], qkv[2], qt::Tensor(),
                                                             qt::Tensor(), o)
                                    : qt::nn::attention_core_composed(
                                          qkv[0], qkv[1], qkv[2], qt::Tensor(), qt::Tensor(), o);
                          qt::backward(c, upstream);
                        },
                        {}});

  // The GEMM floors of the module and of the core (one timing column: "fused").
  auto floor = std::make_shared<GemmFloor>(opt);
  variants.push_back({"module floor",
                      true,
                      [floor] {
                        floor->projections();
                        floor->core();
                      },
                      {}});
  variants.push_back({"core floor", true, [floor] { floor->core(); }, {}});

  // Warm-up: at least one round and 300 ms.
  double warm = 0;
  for (int round = 0; round < 1 || warm < 300.0; ++round)
    for (Variant& v : variants) warm += time_ms(v.step);
  for (int round = 0; round < opt.repeats; ++round)
    for (Variant& v : variants) {
      state->step = static_cast<uint64_t>(round);  // fresh dropout masks every round
      const long faults_before = minor_page_faults();
      v.ms.push_back(time_ms(v.step));
      v.page_faults += minor_page_faults() - faults_before;
    }

  struct Row {
    std::string name;
    Timing fused, composed;
    long fused_faults, composed_faults;  // per step
  };
  std::vector<Row> rows;
  const size_t paired = variants.size() - 2;  // the last two are the floors
  for (size_t i = 0; i < paired; i += 2)
    rows.push_back({variants[i].name, summarize(variants[i].ms), summarize(variants[i + 1].ms),
                    variants[i].page_faults / opt.repeats,
                    variants[i + 1].page_faults / opt.repeats});
  const Timing module_floor = summarize(variants[paired].ms);
  const Timing core_floor = summarize(variants[paired + 1].ms);
  const Row& vanilla = rows[0];
  const Row& core = rows[3];
  // The largest composed / fused ratio any fused path on this GEMM could reach.
  const double module_ceiling = vanilla.composed.best_ms / module_floor.best_ms;
  const double core_ceiling = core.composed.best_ms / core_floor.best_ms;

  if (opt.json) {
    nlohmann::json out = nlohmann::json::array();
    out.push_back({{"variant", "gemm_floor"},
                   {"module_ms", module_floor.best_ms},
                   {"core_ms", core_floor.best_ms},
                   {"module_speedup_ceiling", module_ceiling},
                   {"core_speedup_ceiling", core_ceiling}});
    for (const Row& r : rows)
      out.push_back({{"variant", r.name},
                     {"batch", opt.batch},
                     {"seq", opt.seq},
                     {"heads", opt.heads},
                     {"hidden", opt.hidden},
                     {"dropout", opt.dropout},
                     {"fused_ms", r.fused.best_ms},
                     {"fused_ms_median", r.fused.median_ms},
                     {"composed_ms", r.composed.best_ms},
                     {"composed_ms_median", r.composed.median_ms},
                     {"speedup", r.composed.best_ms / r.fused.best_ms},
                     {"speedup_median", r.composed.median_ms / r.fused.median_ms},
                     {"fused_page_faults_per_step", r.fused_faults},
                     {"composed_page_faults_per_step", r.composed_faults},
                     {"gemm_backend", qt::blas::backend_name(qt::blas::backend())},
                     {"threads", qt::num_threads()}});
    fmt::print("{}\n", out.dump(2));
    return;
  }
  fmt::print(
      "Attention forward + backward, B={} T={} H={} d={}, dropout {}, {} threads, GEMM {}, best "
      "of {} (median in parentheses), ms\n",
      opt.batch, opt.seq, opt.heads, opt.hidden, opt.dropout, qt::num_threads(),
      qt::blas::backend_name(qt::blas::backend()), opt.repeats);
  fmt::print("{:<16} {:>20} {:>20} {:>20} {:>16}\n", "variant", "fused", "composed",
             "composed/fused", "faults/step f|c");
  for (const Row& r : rows)
    fmt::print("{:<16} {:>20} {:>20} {:>20} {:>16}\n",
               r.name == "core" ? std::string("core only") : "module " + r.name,
               fmt::format("{:.2f} ({:.2f})", r.fused.best_ms, r.fused.median_ms),
               fmt::format("{:.2f} ({:.2f})", r.composed.best_ms, r.composed.median_ms),
               fmt::format("{:.2f}x ({:.2f}x)", r.composed.best_ms / r.fused.best_ms,
                           r.composed.median_ms / r.fused.median_ms),
               fmt::format("{}|{}", r.fused_faults, r.composed_faults));
  // The two floors: the GEMMs of the whole module (projections + attention core) and of the
  // attention core alone (Q K^T and P V), with nothing else; no fusion can go below them.
  fmt::print("{:<16} {:>20} {:>20} {:>20}\n", "module GEMMs",
             fmt::format("{:.2f} ({:.2f})", module_floor.best_ms, module_floor.median_ms), "",
             "floor of module");
  fmt::print("{:<16} {:>20} {:>20} {:>20}\n", "core GEMMs",
             fmt::format("{:.2f} ({:.2f})", core_floor.best_ms, core_floor.median_ms), "",
             "floor of core");
  fmt::print(
      "largest composed/fused any fusion could reach (composed / its GEMMs, vanilla): module "
      "{:.2f}x, core {:.2f}x\n",
      module_ceiling, core_ceiling);
  fmt::print("fused clipped / vanilla: {:.2f}x   fused gated / vanilla: {:.2f}x\n",
             rows[1].fused.best_ms / vanilla.fused.best_ms,
             rows[2].fused.best_ms / vanilla.fused.best_ms);
}

}  // namespace

void add_bench_attention(CLI::App* bench) {
  auto opt = std::make_shared<Options>();
  CLI::App* cmd = bench->add_subcommand(
      "attention",
      "Attention module forward+backward: fused core vs composed ops; vanilla, clipped, gated");
  cmd->add_flag("--json", opt->json, "print one JSON list instead of the table");
  cmd->add_option("--batch", opt->batch, "batch size B")->capture_default_str();
  cmd->add_option("--seq", opt->seq, "sequence length T")->capture_default_str();
  cmd->add_option("--heads", opt->heads, "attention heads H")->capture_default_str();
  cmd->add_option("--hidden", opt->hidden, "model width d")->capture_default_str();
  cmd->add_option("--repeats", opt->repeats, "timed rounds (after warm-up)")->capture_default_str();
  cmd->add_option("--dropout", opt->dropout, "attention-probability dropout (train mode)")
      ->capture_default_str();
  cmd->add_option("--gamma", opt->gamma, "clipped softmax gamma (zeta = 1)")->capture_default_str();
  cmd->add_option("--threads", opt->threads,
                  "thread count (default: QTLAB_NUM_THREADS or all cores)");
  cmd->callback([opt] { run_bench_attention(*opt); });
}
