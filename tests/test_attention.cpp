// Tests for nn/attention.* and nn/attention_core.*: multi-head attention with vanilla / clipped
// softmax, gates, causal and key-padding masks, attention-probability dropout.
// Truth:
//  * a naive float64 reference of the whole module written out in loops (projections, scores,
//    masks, softmax, clip, P V, gate, output projection) — method.md §1, §2, §8.1;
//  * hand-computed attention probabilities read out through an identity V (clip values, exact
//    zeros at masked keys, the dropout mask drawn with nn::dropout_keep at the documented flat
//    index into [B, H, T, T], the 1/(1-p) rescale after the clip);
//  * central finite differences (gradcheck, f64) of the composed path and of the fused path
//    w.r.t. x and every parameter;
//  * the fused path against the composed path (forward and every gradient) for every softmax x
//    gate x mask x dropout combination, in f32;
//  * bit-identical results with 1 and 2 threads;
//  * the one-GEMM Q/K/V projection of the fused module path (attention_core_projected) against
//    three nn::linear calls feeding attention_core (f64), forward and all eight gradients.
#include <doctest/doctest.h>

#include <cmath>
#include <limits>
#include <memory>
#include <string>
#include <vector>

#include "autograd/functions.h"
#include "autograd/gradcheck.h"
#include "nn/attention.h"
#include "nn/attention_core.h"
#include "nn/attention_gate.h"
#include "nn/dropout.h"
#include "tensor/ops.h"
#include "tensor/threads.h"
#include "tests/test_util.h"

using namespace qt;
using namespace qt::test;
using nn::GateKind;
using nn::SoftmaxKind;

namespace {

const std::vector<GateKind> kGates = {GateKind::none,
                                      GateKind::linear_per_head,
                                      GateKind::mlp_per_head,
                                      GateKind::all_heads_linear,
                                      GateKind::unconditional_per_head,
                                      GateKind::conditional_per_head};

const char* gate_name(GateKind kind) {
  switch (kind) {
    case GateKind::none:
      return "none";
    case GateKind::linear_per_head:
      return "linear";
    case GateKind::mlp_per_head:
      return "mlp";
    case GateKind::all_heads_linear:
      return "all-heads-linear";
    case GateKind::unconditional_per_head:
      return "unconditional";
    case GateKind::conditional_per_head:
      return "conditional-per-head";
  }
  return "?";
}

// Softmax settings used across the tests.
struct SoftmaxSetting {
  const char* name;
  SoftmaxKind kind;
  double gamma, zeta, alpha;
  bool per_row = false;  // NCS: gamma = -alpha / (keys the row sees)
};
const std::vector<SoftmaxSetting> kSoftmaxes = {
    {"vanilla", SoftmaxKind::vanilla, 0.0, 1.0, 0.0},
    {"clipped(-0.1:1.05)", SoftmaxKind::clipped, -0.1, 1.05, 0.0},
    {"alpha=1.5/T=8", SoftmaxKind::vanilla, 0.0, 1.0, 1.5},  // gamma = -0.1875, zeta = 1
    {"softmax1", SoftmaxKind::softmax1, 0.0, 1.0, 0.0},
    {"sink", SoftmaxKind::sink, 0.0, 1.0, 0.0},
    {"per-row alpha=1.5", SoftmaxKind::clipped, 0.0, 1.0, 1.5, true},
};
const SoftmaxSetting& kSink = kSoftmaxes[4];
const SoftmaxSetting& kPerRow = kSoftmaxes[5];

// Learned sink logits away from their 0 init (so that sink differs from softmax1): a_h = -1, 0.5,
// 2, ... for head h.
void set_sink_logits(nn::Attention& a) {
  if (!a.sink.defined()) return;
  std::vector<double> values;
  for (int64_t h = 0; h < a.options.heads; ++h)
    values.push_back(h == 0 ? -1.0 : 0.5 + 1.5 * (h - 1));
  ops::copy_into(a.sink, ops::to(ops::from_vector(values, {a.options.heads}), a.sink.dtype()));
}

nn::AttentionOptions make_options(int64_t d, int64_t H, const SoftmaxSetting& s, GateKind gate,
                                  bool causal, float dropout, bool fused) {
  nn::AttentionOptions o;
  o.hidden = d;
  o.heads = H;
  o.softmax = nn::resolve_softmax_clip(s.kind, s.gamma, s.zeta, s.alpha, 8, s.per_row);
  o.sink = nn::attention_sink_of(s.kind);
  o.gate = gate;
  o.gate_pi_init = 0.4;
  o.gate_mlp_hidden = gate == GateKind::mlp_per_head ? 3 : 0;
  o.causal = causal;
  o.probability_dropout = dropout;
  o.fused = fused;
  o.dropout_layer_id = 5;
  return o;
}

std::shared_ptr<nn::DropoutState> make_state(uint64_t seed = 99, uint64_t step = 3) {
  auto state = std::make_shared<nn::DropoutState>();
  state->seed = seed;
  state->step = step;
  return state;
}

// Replaces every parameter tensor the module computes with by an f64 leaf holding the same values
// (scaled up by `scale` so that the attention is far from uniform), and returns the leaves in
// named_parameters() order.
std::vector<Tensor> convert_to_f64(nn::Attention& a, double scale = 1.0) {
  std::vector<Tensor*> slots;
  for (auto* linear : {a.query.get(), a.key.get(), a.value.get(), a.output.get()}) {
    slots.push_back(&linear->weight);
    slots.push_back(&linear->bias);
  }
  if (a.gate) {
    auto* g = static_cast<nn::AttentionGate*>(a.gate.get());
    for (Tensor* t : {&g->weight, &g->bias, &g->hidden_weight, &g->hidden_bias, &g->output_weight,
                      &g->output_bias, &g->logit})
      if (t->defined()) slots.push_back(t);
  }
  if (a.sink.defined()) slots.push_back(&a.sink);
  std::vector<Tensor> leaves;
  for (Tensor* t : slots) {
    *t = ops::mul_scalar(ops::to(*t, DType::f64), scale);
    t->set_requires_grad(true);
    leaves.push_back(*t);
  }
  return leaves;
}

// Flags [B * T]: 1 = real token.
Tensor padding_mask(const std::vector<uint8_t>& flags, int64_t B, int64_t L) {
  return ops::from_vector(flags, {B, L});
}

// ---- the naive float64 reference of the whole module (eval mode: no dropout)
std::vector<double> reference_attention(const nn::Attention& a, const Tensor& x,
                                        const std::vector<uint8_t>& key_ok) {
  const int64_t B = x.shape()[0], L = x.shape()[1], d = a.options.hidden, H = a.options.heads;
  const int64_t dh = d / H;
  auto project = [&](const nn::Linear& lin) {
    std::vector<double> out(B * L * d);
    for (int64_t b = 0; b < B; ++b)
      for (int64_t t = 0; t < L; ++t)
        for (int64_t o = 0; o < d; ++o) {
          double acc = lin.bias.at({o});
          for (int64_t i = 0; i < d; ++i) acc += lin.weight.at({o, i}) * x.at({b, t, i});
          out[(b * L + t) * d + o] = acc;
        }
    return out;
  };
  const std::vector<double> q = project(*a.query), k = project(*a.key), v = project(*a.value);
  // The resolved softmax (resolve_softmax_clip is checked against its formula separately).
  const bool clipped = a.options.softmax.clipped;
  const double gamma = a.options.softmax.gamma;
  const double zeta = a.options.softmax.zeta;
  const auto* gate = static_cast<const nn::AttentionGate*>(a.gate.get());
  std::vector<double> context(B * L * d, 0.0);
  for (int64_t b = 0; b < B; ++b)
    for (int64_t h = 0; h < H; ++h)
      for (int64_t i = 0; i < L; ++i) {
        std::vector<double> s(L);
        bool any_visible = false;
        int64_t visible_keys = 0;
        for (int64_t j = 0; j < L; ++j) {
          double dot = 0;
          for (int64_t c = 0; c < dh; ++c)
            dot += q[(b * L + i) * d + h * dh + c] * k[(b * L + j) * d + h * dh + c];
          const bool visible = key_ok[b * L + j] && !(a.options.causal && j > i);
          any_visible = any_visible || visible;
          visible_keys += visible ? 1 : 0;
          s[j] = visible ? dot / std::sqrt(double(dh)) : -INFINITY;
        }
        std::vector<double> p(L);
        double m = -INFINITY, total = 0;
        for (int64_t j = 0; j < L; ++j) m = std::max(m, s[j]);
        // the sink column e^{a_h} in the denominator (softmax1: a_h = 0); an all-masked row then
        // gives the sink everything
        const bool has_sink = a.options.sink != nn::AttentionSink::none;
        const double sink = a.options.sink == nn::AttentionSink::learned ? a.sink.at({h}) : 0.0;
        if (has_sink) {
          m = std::max(m, sink);
          total = std::exp(sink - m);
          any_visible = true;
        }
        for (int64_t j = 0; j < L; ++j) total += any_visible ? std::exp(s[j] - m) : 1.0;
        // per-row clip (NCS): gamma = -alpha / (keys the row sees; all L when it sees none)
        const bool per_row = a.options.softmax.per_row;
        const double row_gamma =
            per_row ? -a.options.softmax.alpha / double(visible_keys > 0 ? visible_keys : L)
                    : gamma;
        const double row_zeta = per_row ? 1.0 : zeta;
        for (int64_t j = 0; j < L; ++j) {
          p[j] = (any_visible ? std::exp(s[j] - m) : 1.0) / total;  // all masked: uniform (HF)
          if (clipped)
            p[j] = std::min(1.0, std::max(0.0, (row_zeta - row_gamma) * p[j] + row_gamma));
        }
        // gate pi for (b, i, h)
        double pi = 1.0;
        if (gate && gate->kind == GateKind::linear_per_head) {
          double z = gate->bias.at({h});
          for (int64_t c = 0; c < dh; ++c) z += gate->weight.at({h, c}) * x.at({b, i, h * dh + c});
          pi = 1.0 / (1.0 + std::exp(-z));
        } else if (gate && gate->kind == GateKind::unconditional_per_head) {
          pi = 1.0 / (1.0 + std::exp(-gate->logit.at({h})));
        } else if (gate) {
          FAIL("reference_attention: gate kind not covered");
        }
        for (int64_t c = 0; c < dh; ++c) {
          double acc = 0;
          for (int64_t j = 0; j < L; ++j) acc += p[j] * v[(b * L + j) * d + h * dh + c];
          context[(b * L + i) * d + h * dh + c] = pi * acc;
        }
      }
  std::vector<double> out(B * L * d);
  for (int64_t r = 0; r < B * L; ++r)
    for (int64_t o = 0; o < d; ++o) {
      double acc = a.output->bias.at({o});
      for (int64_t i = 0; i < d; ++i) acc += a.output->weight.at({o, i}) * context[r * d + i];
      out[r * d + o] = acc;
    }
  return out;
}

double max_error(const std::vector<double>& a, const std::vector<double>& b) {
  REQUIRE(a.size() == b.size());
  double worst = 0;
  for (size_t i = 0; i < a.size(); ++i) {
    const double e = std::abs(a[i] - b[i]);
    worst = std::isnan(e) ? INFINITY : std::max(worst, e);
  }
  return worst;
}

// max|a - b| <= tol * (1 + max|b|)
bool close(const Tensor& a, const Tensor& b, double tol, double* error = nullptr) {
  const double diff = ops::max_abs_diff(a, b);
  double largest = 0;
  for (double v : elements(b)) largest = std::max(largest, std::abs(v));
  if (error) *error = diff / (1 + largest);
  return diff <= tol * (1 + largest);
}

struct RunResult {
  Tensor output, x_grad;
  std::vector<Tensor> param_grads;
};

// Forward + backward of L = sum(out * upstream) through the module.
RunResult run(const nn::Attention& a, const Tensor& x_value, const Tensor& mask,
              const Tensor& upstream) {
  Tensor x = ops::clone(x_value);
  x.set_requires_grad(true);
  const Tensor out = a.forward(x, mask);
  backward(out, upstream);
  RunResult r{out.detach(), x.grad(), {}};
  for (const auto& [name, p] : a.named_parameters()) r.param_grads.push_back(p.grad());
  return r;
}

bool bit_identical(const Tensor& a, const Tensor& b) {
  return a.shape() == b.shape() && ops::max_abs_diff(a, b) == 0.0;
}

}  // namespace

// ------------------------------------------------------------------------------------------------
TEST_CASE("Attention: parameter names, shapes, init order and PyTorch default init") {
  nn::InitRng rng{42, 0};
  auto opts = make_options(16, 4, kSoftmaxes[0], GateKind::linear_per_head, false, 0.0f, true);
  nn::Attention a(opts, make_state(), rng);
  std::vector<std::string> names;
  for (const auto& [name, t] : a.named_parameters()) names.push_back(name);
  CHECK(names == std::vector<std::string>{"query.weight", "query.bias", "key.weight", "key.bias",
                                          "value.weight", "value.bias", "output.weight",
                                          "output.bias", "gate.weight", "gate.bias"});
  CHECK(a.query->weight.shape() == Shape{16, 16});
  CHECK(a.output->bias.shape() == Shape{16});
  for (const auto& [name, t] : a.named_parameters())
    if (name.rfind("gate", 0) != 0)
      for (double w : elements(t)) CHECK(std::abs(w) <= 0.25);  // U(+-1/sqrt(16))
  // The draws follow the registration order: query.weight is the first stream of the seed.
  nn::InitRng fresh{42, 0};
  const Tensor first = fresh.linear_default({16, 16}, 16);
  CHECK(bit_identical(first, a.query->weight));
  // Without a gate there is no "gate" child.
  nn::InitRng rng2{42, 0};
  nn::Attention plain(make_options(16, 4, kSoftmaxes[0], GateKind::none, false, 0.0f, true),
                      make_state(), rng2);
  CHECK(plain.named_parameters().size() == 8);
  CHECK(plain.gate == nullptr);
  // The learned sink registers "sink" [H] (zeros: it starts as softmax1); softmax1 registers none.
  nn::InitRng rng3{42, 0}, rng4{42, 0};
  nn::Attention with_sink(make_options(16, 4, kSink, GateKind::linear_per_head, false, 0.0f, true),
                          make_state(), rng3);
  const auto named = with_sink.named_parameters();
  REQUIRE(named.size() == 11);
  CHECK(named.front().first == "sink");  // a module's own parameters come before its children's
  CHECK(named.front().second.shape() == Shape{4});
  for (double a : elements(named.front().second)) CHECK(a == 0.0);
  CHECK(bit_identical(with_sink.query->weight, a.query->weight));  // no extra draws before it
  nn::Attention off_by_one(make_options(16, 4, kSoftmaxes[3], GateKind::none, false, 0.0f, true),
                           make_state(), rng4);
  CHECK(off_by_one.named_parameters().size() == 8);
}

TEST_CASE("attention_core: the per-row clipped softmax uses each causal row's own length (NCS)") {
  // q = k = 0 and causal: row i sees n = i + 1 keys, each with p = 1 / n, and its gamma is
  // -alpha / n (zeta = 1): y = clip((1 + alpha / n) / n - alpha / n, 0, 1). With one fixed gamma
  // = -alpha / T instead, short rows would keep mass the per-row clip removes.
  const int64_t B = 1, L = 5, H = 1, d = L;
  const double alpha = 0.6;
  Tensor v = ops::zeros({B, L, d}, DType::f64);
  for (int64_t j = 0; j < L; ++j) v.data<double>()[j * d + j] = 1.0;
  const Tensor zero = ops::zeros({B, L, d}, DType::f64);
  for (bool fused : {true, false}) {
    CAPTURE(fused);
    nn::AttentionCoreOptions o;
    o.heads = H;
    o.causal = true;
    o.softmax = nn::resolve_softmax_clip(SoftmaxKind::clipped, 0, 1, alpha, L, true);
    CHECK(o.softmax.per_row);
    const Tensor c = fused ? nn::attention_core(zero, zero, v, Tensor(), Tensor(), o)
                           : nn::attention_core_composed(zero, zero, v, Tensor(), Tensor(), o);
    for (int64_t i = 0; i < L; ++i) {
      const double n = static_cast<double>(i + 1);
      const double y = std::min(1.0, std::max(0.0, (1 + alpha / n) / n - alpha / n));
      for (int64_t j = 0; j < L; ++j) {
        CAPTURE(i);
        CAPTURE(j);
        CHECK(c.at({0, i, j}) == doctest::Approx(j <= i ? y : 0.0).epsilon(1e-12));
      }
    }
  }
  CHECK_THROWS_WITH_AS(nn::resolve_softmax_clip(SoftmaxKind::clipped, 0, 1, 0, L, true),
                       doctest::Contains("needs alpha > 0"), Error);
}

TEST_CASE("attention_core: a sink column takes the mass a head does not give its keys") {
  // q = k = 0: every visible score is 0, so with a sink logit a each visible key gets
  // 1 / (n + e^a) and the sink e^a / (n + e^a) (n = visible keys). An identity V reads P out.
  const int64_t B = 1, L = 4, H = 2, d = H * L;
  Tensor v = ops::zeros({B, L, d}, DType::f64);
  for (int64_t j = 0; j < L; ++j)
    for (int64_t h = 0; h < H; ++h) v.data<double>()[j * d + h * L + j] = 1.0;
  const Tensor zero = ops::zeros({B, L, d}, DType::f64);
  const std::vector<double> logits = {0.0, std::log(3.0)};  // softmax1, and e^a = 3
  const Tensor sink = ops::from_vector(logits, {H});
  // Causal, and key 0 padded: query 0 sees no key, so the sink takes all of its mass.
  const Tensor mask = ops::from_vector(std::vector<uint8_t>{0, 1, 1, 1}, {B, L});
  for (bool fused : {true, false}) {
    CAPTURE(fused);
    nn::AttentionCoreOptions o;
    o.heads = H;
    o.causal = true;
    const Tensor c = fused ? nn::attention_core(zero, zero, v, Tensor(), mask, o, sink)
                           : nn::attention_core_composed(zero, zero, v, Tensor(), mask, o, sink);
    for (int64_t h = 0; h < H; ++h)
      for (int64_t i = 0; i < L; ++i) {
        const int visible = static_cast<int>(i);  // keys 1..i
        for (int64_t j = 0; j < L; ++j) {
          const double expected = (j >= 1 && j <= i) ? 1.0 / (visible + std::exp(logits[h])) : 0.0;
          CAPTURE(h);
          CAPTURE(i);
          CAPTURE(j);
          CHECK(c.at({0, i, h * L + j}) == doctest::Approx(expected).epsilon(1e-12));
        }
      }
  }
  // Bad sink logits name the problem.
  nn::AttentionCoreOptions o;
  o.heads = H;
  CHECK_THROWS_WITH_AS(
      nn::attention_core(zero, zero, v, Tensor(), Tensor(), o, ops::zeros({3}, DType::f64)),
      doctest::Contains("sink logits must be [H] = [2], got [3]"), Error);
  CHECK_THROWS_WITH_AS(nn::attention_core(zero, zero, v, Tensor(), Tensor(), o,
                                          ops::from_vector(std::vector<double>{0.0, NAN}, {2})),
                       doctest::Contains("sink logit of head 1 is nan"), Error);
  o.softmax = nn::SoftmaxClip{true, -0.1, 1.0};
  CHECK_THROWS_WITH_AS(nn::attention_core(zero, zero, v, Tensor(), Tensor(), o, sink),
                       doctest::Contains("not the clipped one"), Error);
}

TEST_CASE("Attention: parse_softmax_kind / parse_gate_kind, errors name the unknown value") {
  CHECK(nn::parse_softmax_kind("vanilla") == SoftmaxKind::vanilla);
  CHECK(nn::parse_softmax_kind("clipped") == SoftmaxKind::clipped);
  CHECK(nn::parse_softmax_kind("softmax1") == SoftmaxKind::softmax1);
  CHECK(nn::parse_softmax_kind("sink") == SoftmaxKind::sink);
  for (const std::string& name : nn::softmax_kind_names())
    CHECK(nn::softmax_kind_name(nn::parse_softmax_kind(name)) == name);
  CHECK(nn::attention_sink_of(SoftmaxKind::softmax1) == nn::AttentionSink::zero);
  CHECK(nn::attention_sink_of(SoftmaxKind::sink) == nn::AttentionSink::learned);
  CHECK(nn::attention_sink_of(SoftmaxKind::clipped) == nn::AttentionSink::none);
  for (GateKind kind : kGates) CHECK(nn::parse_gate_kind(gate_name(kind)) == kind);
  try {
    nn::parse_softmax_kind("clipped(-.025:1)");
    FAIL("no throw");
  } catch (const Error& e) {
    CHECK(std::string(e.what()).find("'clipped(-.025:1)'") != std::string::npos);
  }
  try {
    nn::parse_gate_kind("sigmoid");
    FAIL("no throw");
  } catch (const Error& e) {
    CHECK(std::string(e.what()).find("'sigmoid'") != std::string::npos);
  }
}

TEST_CASE(
    "Attention: resolve_softmax_clip: alpha gives gamma = -alpha / T, zeta = 1 (method.md §1.3)") {
  // alpha wins over the kind and over gamma / zeta, silently (method.md §8.3).
  nn::SoftmaxClip c = nn::resolve_softmax_clip(SoftmaxKind::clipped, -0.3, 1.2, 12, 512);
  CHECK(c.clipped);
  CHECK(c.gamma == -12.0 / 512);
  CHECK(c.gamma == -0.0234375);
  CHECK(c.zeta == 1.0);
  c = nn::resolve_softmax_clip(SoftmaxKind::vanilla, -0.3, 1.2, 12, 512);
  CHECK(c.clipped);
  CHECK(c.gamma == -0.0234375);
  // Without alpha: vanilla is the plain softmax (0, 1); clipped keeps its own values.
  c = nn::resolve_softmax_clip(SoftmaxKind::vanilla, -0.3, 1.2, 0, 512);
  CHECK(!c.clipped);
  CHECK(c.gamma == 0.0);
  CHECK(c.zeta == 1.0);
  c = nn::resolve_softmax_clip(SoftmaxKind::clipped, -0.3, 1.2, 0, 512);
  CHECK(c.clipped);
  CHECK(c.gamma == -0.3);
  CHECK(c.zeta == 1.2);
  // Bad values name themselves.
  CHECK_THROWS_WITH_AS(nn::resolve_softmax_clip(SoftmaxKind::vanilla, 0, 1, -1, 8),
                       doctest::Contains("alpha = -1"), Error);
  CHECK_THROWS_WITH_AS(nn::resolve_softmax_clip(SoftmaxKind::clipped, 0.1, 1, 0, 8),
                       doctest::Contains("gamma = 0.1"), Error);
  CHECK_THROWS_WITH_AS(nn::resolve_softmax_clip(SoftmaxKind::clipped, -0.1, 0.5, 0, 8),
                       doctest::Contains("zeta = 0.5"), Error);
}

TEST_CASE("Attention: forward equals a naive float64 reference (softmaxes, masks, gates)") {
  const int64_t B = 2, L = 6, d = 12, H = 3;
  const std::vector<uint8_t> all_real(B * L, 1);
  const std::vector<uint8_t> padded = {1, 1, 1, 1, 1, 1, /* batch 1: */ 1, 1, 1, 1, 0, 0};
  for (const SoftmaxSetting& s : kSoftmaxes)
    for (GateKind gate :
         {GateKind::none, GateKind::linear_per_head, GateKind::unconditional_per_head})
      for (bool causal : {false, true})
        for (bool pad : {false, true})
          for (bool fused : {true, false}) {
            CAPTURE(s.name);
            CAPTURE(gate_name(gate));
            CAPTURE(causal);
            CAPTURE(pad);
            CAPTURE(fused);
            nn::InitRng rng{7, 0};
            nn::Attention a(make_options(d, H, s, gate, causal, 0.3f, fused), make_state(), rng);
            a.eval();                // dropout off
            convert_to_f64(a, 3.0);  // sharper attention: more entries clipped
            set_sink_logits(a);
            if (gate == GateKind::unconditional_per_head) {
              auto* g = static_cast<nn::AttentionGate*>(a.gate.get());
              g->logit = ops::from_vector(std::vector<double>{-1.0, 0.5, 2.0}, {3});
            }
            const Tensor x = random_tensor({B, L, d}, DType::f64, 17);
            const std::vector<uint8_t>& flags = pad ? padded : all_real;
            const Tensor mask = pad ? padding_mask(flags, B, L) : Tensor();
            const Tensor out = a.forward(x, mask);
            CHECK(out.shape() == Shape{B, L, d});
            CHECK(max_error(elements(out), reference_attention(a, x, flags)) < 1e-12);
            // f32: the module as constructed (f32 parameters, default init) against the reference
            // evaluated in double on the same f32 values.
            nn::InitRng rng32{7, 0};
            nn::Attention a32(make_options(d, H, s, gate, causal, 0.3f, fused), make_state(),
                              rng32);
            a32.eval();
            set_sink_logits(a32);
            const Tensor x32 = ops::to(x, DType::f32);
            CHECK(max_error(elements(a32.forward(x32, mask)),
                            reference_attention(a32, x32, flags)) < 2e-6);
          }
}

TEST_CASE("attention_core: probabilities read out through an identity V (masks, clip, dropout)") {
  // q = k = 0 makes every visible score 0, so P is uniform over the visible keys: 1 / (number of
  // visible keys). With d_h = T and V_h = identity, the output C[b, i, h*d_h + c] is exactly
  // Y~[b, h, i, c]: the attention probabilities after clip and dropout.
  const int64_t B = 2, L = 6, H = 2, d = H * L;
  const double gamma = -0.2, zeta = 1.0;
  const float p_drop = 0.3f;
  const uint64_t seed = 1234, stream = nn::dropout_stream(7, 11);
  Tensor v = ops::zeros({B, L, d}, DType::f64);
  for (int64_t b = 0; b < B; ++b)
    for (int64_t j = 0; j < L; ++j)
      for (int64_t h = 0; h < H; ++h) v.data<double>()[(b * L + j) * d + h * L + j] = 1.0;
  const Tensor zero = ops::zeros({B, L, d}, DType::f64);
  const std::vector<uint8_t> flags = {1, 1, 1, 1, 1, 1,
                                      1, 1, 1, 0, 1, 0};  // batch 1: keys 3, 5 padded
  const Tensor mask = ops::from_vector(flags, {B, L});
  for (bool fused : {true, false})
    for (bool with_dropout : {false, true}) {
      CAPTURE(fused);
      CAPTURE(with_dropout);
      nn::AttentionCoreOptions o;
      o.heads = H;
      o.softmax = nn::SoftmaxClip{true, gamma, zeta};
      o.causal = true;
      o.dropout = with_dropout ? p_drop : 0.0f;
      o.dropout_seed = seed;
      o.dropout_stream = stream;
      const Tensor c = fused ? nn::attention_core(zero, zero, v, Tensor(), mask, o)
                             : nn::attention_core_composed(zero, zero, v, Tensor(), mask, o);
      int dropped = 0, kept_nonzero = 0;
      for (int64_t b = 0; b < B; ++b)
        for (int64_t h = 0; h < H; ++h)
          for (int64_t i = 0; i < L; ++i) {
            int visible_count = 0;
            for (int64_t j = 0; j <= i; ++j) visible_count += flags[b * L + j];
            for (int64_t j = 0; j < L; ++j) {
              const bool visible = flags[b * L + j] && j <= i;
              // s = (zeta - gamma) / n + gamma = 1.2 / n - 0.2: n = 1 -> 1, 2 -> 0.4, 3 -> 0.2,
              // 4 -> 0.1, 5 -> 0.04, 6 -> 0 (the boundary); masked keys: p = 0 -> s = -0.2 -> 0.
              double y = visible ? std::min(1.0, std::max(0.0, 1.2 / visible_count - 0.2)) : 0.0;
              if (with_dropout) {
                const uint64_t index = ((b * H + h) * L + i) * L + j;
                const bool keep = nn::dropout_keep(seed, stream, index, p_drop);
                dropped += !keep;
                y = keep ? y / (1.0 - p_drop) : 0.0;  // the clipped 1 becomes 1/(1-p)
                kept_nonzero += keep && y > 0;
              }
              CHECK(c.at({b, i, h * L + j}) == doctest::Approx(y).epsilon(1e-12));
            }
          }
      if (with_dropout) {
        CHECK(dropped > 10);
        CHECK(kept_nonzero > 10);
      }
    }
}

TEST_CASE("attention_core: a row whose keys are all masked is uniform over all keys (as HF)") {
  // Causal with key 0 padded: query 0 sees no key at all. HF's dtype-min mask makes every score
  // of that row equal, hence a uniform row; the gradient w.r.t. the masked scores is zero.
  const int64_t B = 1, L = 4, H = 1, d = 4;
  Tensor v = ops::zeros({B, L, d}, DType::f64);
  for (int64_t j = 0; j < L; ++j) v.data<double>()[j * d + j] = 1.0;  // identity V
  const Tensor q = random_tensor({B, L, d}, DType::f64, 3);
  const Tensor k = random_tensor({B, L, d}, DType::f64, 4);
  const Tensor mask = ops::from_vector(std::vector<int64_t>{0, 1, 1, 1}, {B, L});
  nn::AttentionCoreOptions o;
  o.heads = H;
  o.causal = true;
  for (bool fused : {true, false}) {
    Tensor qq = ops::clone(q);
    qq.set_requires_grad(true);
    const Tensor c = fused ? nn::attention_core(qq, k, v, Tensor(), mask, o)
                           : nn::attention_core_composed(qq, k, v, Tensor(), mask, o);
    for (int64_t j = 0; j < L; ++j) CHECK(c.at({0, 0, j}) == doctest::Approx(0.25));
    CHECK(c.at({0, 1, 0}) == 0.0);  // row 1 sees key 1 only
    CHECK(c.at({0, 1, 1}) == doctest::Approx(1.0));
    backward(c, random_tensor({B, L, d}, DType::f64, 5));
    for (int64_t c0 = 0; c0 < d; ++c0) CHECK(qq.grad().at({0, 0, c0}) == 0.0);  // row 0: constant
    CHECK(qq.grad().at({0, 1, 0}) == 0.0);  // a single visible key: softmax is constant 1
  }
}

TEST_CASE("Attention: fused equals composed, forward and every gradient, all variants (f32)") {
  // Every softmax x gate x mask x dropout combination; both paths draw the same dropout masks.
  const int64_t B = 2, L = 7, d = 12, H = 3;
  const Tensor x = random_tensor({B, L, d}, DType::f32, 31, 0.0, 1.5);
  const Tensor upstream = random_tensor({B, L, d}, DType::f32, 32);
  const std::vector<uint8_t> padded = {1, 1, 1, 1, 1, 1, 1, /* batch 1: */ 1, 1, 0, 1, 1, 0, 0};
  const Tensor mask = ops::from_vector(std::vector<int32_t>(padded.begin(), padded.end()), {B, L});
  int combinations = 0;
  for (const SoftmaxSetting& s : kSoftmaxes)
    for (GateKind gate : kGates)
      for (int mask_kind = 0; mask_kind < 4; ++mask_kind)  // none, causal, padding, both
        for (float dropout : {0.0f, 0.25f}) {
          const bool causal = mask_kind & 1, pad = mask_kind & 2;
          CAPTURE(s.name);
          CAPTURE(gate_name(gate));
          CAPTURE(causal);
          CAPTURE(pad);
          CAPTURE(dropout);
          nn::InitRng rng_fused{5, 0}, rng_composed{5, 0};
          nn::Attention fused(make_options(d, H, s, gate, causal, dropout, true), make_state(),
                              rng_fused);
          nn::Attention composed(make_options(d, H, s, gate, causal, dropout, false), make_state(),
                                 rng_composed);
          set_sink_logits(fused);
          set_sink_logits(composed);
          const RunResult a = run(fused, x, pad ? mask : Tensor(), upstream);
          const RunResult b = run(composed, x, pad ? mask : Tensor(), upstream);
          double error = 0;
          CHECK_MESSAGE(close(a.output, b.output, 1e-5, &error), "output error " << error);
          CHECK_MESSAGE(close(a.x_grad, b.x_grad, 1e-5, &error), "x grad error " << error);
          REQUIRE(a.param_grads.size() == b.param_grads.size());
          const auto names = fused.named_parameters();
          for (size_t i = 0; i < a.param_grads.size(); ++i) {
            CAPTURE(names[i].first);
            REQUIRE(a.param_grads[i].defined());
            REQUIRE(b.param_grads[i].defined());
            CHECK_MESSAGE(close(a.param_grads[i], b.param_grads[i], 1e-5, &error),
                          "grad error " << error);
          }
          ++combinations;
        }
  CHECK(combinations == 6 * 6 * 4 * 2);
}

TEST_CASE("Attention: gradcheck (f64) of x and every parameter, composed and fused paths") {
  // Tiny shapes; clipped softmax with both masks and dropout on, so the clip mask, the masked
  // keys and the dropout mask are all inside the checked function (they are fixed given the seed).
  const int64_t B = 2, L = 3, d = 4, H = 2;
  const std::vector<int64_t> flags = {1, 1, 1, 1, 0, 1};
  const Tensor mask = ops::from_vector(flags, {B, L});
  // The sink softmax (learned logits, away from 0) with the same masks and dropout, ungated and
  // with the per-head linear gate.
  std::vector<std::pair<const SoftmaxSetting*, GateKind>> cases;
  for (GateKind gate : kGates) cases.push_back({&kSoftmaxes[1], gate});
  cases.push_back({&kSink, GateKind::none});
  cases.push_back({&kSink, GateKind::linear_per_head});
  cases.push_back({&kPerRow, GateKind::none});
  for (const auto& [softmax, gate] : cases)
    for (bool fused : {false, true}) {
      CAPTURE(softmax->name);
      CAPTURE(gate_name(gate));
      CAPTURE(fused);
      nn::InitRng rng{13, 0};
      auto opts = make_options(d, H, *softmax, gate, true, 0.3f, fused);
      opts.gate_mlp_hidden = gate == GateKind::mlp_per_head ? 2 : 0;
      nn::Attention a(opts, make_state(), rng);
      std::vector<Tensor> params = convert_to_f64(a, 2.0);
      set_sink_logits(a);
      Tensor x = random_tensor({B, L, d}, DType::f64, 14);
      x.set_requires_grad(true);
      std::vector<Tensor> inputs = {x};
      inputs.insert(inputs.end(), params.begin(), params.end());
      const GradcheckResult r =
          gradcheck([&](const std::vector<Tensor>& in) { return a.forward(in[0], mask); }, inputs);
      CHECK_MESSAGE(r.ok, r.message);
    }
  // A vanilla, unmasked, gated case without dropout, on the fused core alone (all four inputs).
  Tensor q = random_tensor({1, 4, 6}, DType::f64, 40), k = random_tensor({1, 4, 6}, DType::f64, 41);
  Tensor v = random_tensor({1, 4, 6}, DType::f64, 42),
         g = ops::rand({1, 4, 3}, 43, 0, DType::f64, 0.1, 0.9);
  for (Tensor* t : {&q, &k, &v, &g}) t->set_requires_grad(true);
  nn::AttentionCoreOptions o;
  o.heads = 3;
  const GradcheckResult r = gradcheck(
      [&](const std::vector<Tensor>& in) {
        return nn::attention_core(in[0], in[1], in[2], in[3], Tensor(), o);
      },
      {q, k, v, g});
  CHECK_MESSAGE(r.ok, r.message);
}

TEST_CASE("Attention: dropout is identity in eval mode, keyed by (seed, layer id, step) in train") {
  const int64_t B = 2, L = 5, d = 8, H = 2;
  const Tensor x = random_tensor({B, L, d}, DType::f32, 50);
  for (bool fused : {true, false}) {
    CAPTURE(fused);
    auto state = make_state(7, 1);
    nn::InitRng r1{3, 0}, r2{3, 0};
    nn::Attention with(make_options(d, H, kSoftmaxes[1], GateKind::none, false, 0.4f, fused), state,
                       r1);
    nn::Attention without(make_options(d, H, kSoftmaxes[1], GateKind::none, false, 0.0f, fused),
                          state, r2);
    with.eval();
    CHECK(bit_identical(with.forward(x), without.forward(x)));
    with.train();
    const Tensor step1 = with.forward(x);
    CHECK(!bit_identical(step1, without.forward(x)));
    CHECK(bit_identical(step1, with.forward(x)));  // same step: same masks
    state->step = 2;
    CHECK(!bit_identical(step1, with.forward(x)));  // new step: new masks
    state->step = 1;
    state->seed = 8;
    CHECK(!bit_identical(step1, with.forward(x)));  // new seed: new masks
  }
}

TEST_CASE("Attention: fused forward and backward are bit-identical with 1 and 2 threads") {
  // Large enough that the B*H loop runs in parallel (B*H*T*T*d_h > 2^16).
  const int64_t B = 2, L = 40, d = 32, H = 2;
  const Tensor x = random_tensor({B, L, d}, DType::f32, 60);
  const Tensor upstream = random_tensor({B, L, d}, DType::f32, 61);
  const std::vector<uint8_t> flags(B * L, 1);
  const int saved = num_threads();
  for (const auto& [softmax, gate] : std::vector<std::pair<const SoftmaxSetting*, GateKind>>{
           {&kSoftmaxes[1], GateKind::none},
           {&kSoftmaxes[1], GateKind::linear_per_head},
           {&kSoftmaxes[1], GateKind::mlp_per_head},
           {&kSink, GateKind::none},
           {&kPerRow, GateKind::none}}) {
    CAPTURE(softmax->name);
    CAPTURE(gate_name(gate));
    std::vector<RunResult> results;
    for (int threads : {1, 2}) {
      set_num_threads(threads);
      nn::InitRng rng{9, 0};
      nn::Attention a(make_options(d, H, *softmax, gate, true, 0.1f, true), make_state(), rng);
      set_sink_logits(a);
      results.push_back(run(a, x, Tensor(), upstream));
    }
    CHECK(bit_identical(results[0].output, results[1].output));
    CHECK(bit_identical(results[0].x_grad, results[1].x_grad));
    for (size_t i = 0; i < results[0].param_grads.size(); ++i)
      CHECK(bit_identical(results[0].param_grads[i], results[1].param_grads[i]));
  }
  set_num_threads(saved);
}

TEST_CASE("Attention / attention_core: bad options and inputs throw naming the problem") {
  nn::InitRng rng{1, 0};
  auto expect_message = [](auto&& f, const std::string& part) {
    try {
      f();
      FAIL("no throw");
    } catch (const Error& e) {
      CHECK_MESSAGE(std::string(e.what()).find(part) != std::string::npos, e.what());
    }
  };
  nn::AttentionOptions o;
  o.hidden = 10;
  o.heads = 3;
  expect_message([&] { nn::Attention(o, make_state(), rng); }, "not divisible by heads = 3");
  o.heads = 2;
  o.softmax = nn::SoftmaxClip{true, 0.1, 1.0};
  expect_message([&] { nn::Attention(o, make_state(), rng); }, "gamma = 0.1");
  o.softmax = nn::SoftmaxClip{true, -0.1, 0.5};
  expect_message([&] { nn::Attention(o, make_state(), rng); }, "zeta = 0.5");
  o.softmax = nn::SoftmaxClip{};
  o.probability_dropout = 1.0f;
  CHECK_THROWS_AS(nn::Attention(o, make_state(), rng), Error);
  o.probability_dropout = 0.1f;
  CHECK_THROWS_AS(nn::Attention(o, nullptr, rng), Error);
  o.probability_dropout = 0;
  nn::Attention a(o, make_state(), rng);
  expect_message([&] { a.forward(ops::zeros({2, 3, 8})); }, "[2, 3, 8]");
  expect_message([&] { a.forward(ops::zeros({3, 10})); }, "Attention");
  expect_message(
      [&] {
        a.forward(ops::zeros({2, 3, 10}), ops::ones({2, 4}, DType::u8));
      },
      "key_padding_mask must be [B, T] = [2, 3], got [2, 4]");
  expect_message(
      [&] {
        a.forward(ops::zeros({2, 3, 10}), ops::ones({2, 3}, DType::f32));
      },
      "u8, i32 or i64");
  // The core checks its own inputs.
  nn::AttentionCoreOptions co;
  co.heads = 2;
  const Tensor t = ops::zeros({2, 3, 4});
  expect_message(
      [&] {
        nn::attention_core(t, ops::zeros({2, 4, 4}), t, Tensor(), Tensor(), co);
      },
      "q, k, v shapes differ");
  expect_message(
      [&] {
        nn::attention_core(t, t, t, ops::zeros({2, 2, 3}), Tensor(), co);
      },
      "gate must be [B, T, H] = [2, 3, 2], got [2, 2, 3]");
  expect_message(
      [&] {
        nn::attention_core(t, t, ops::zeros({2, 3, 4}, DType::f64), Tensor(), Tensor(), co);
      },
      "attention_core");
  co.heads = 3;
  expect_message([&] { nn::attention_core_composed(t, t, t, Tensor(), Tensor(), co); },
                 "not divisible by heads = 3");
  co.heads = 2;
  co.dropout = 1.5f;
  expect_message([&] { nn::attention_core(t, t, t, Tensor(), Tensor(), co); }, "dropout");
}

TEST_CASE("attention_core_projected: equals linear projections + attention_core (f64), all grads") {
  // The one-GEMM Q/K/V projection (weights stacked [3d, d]) against three separate nn::linear
  // calls feeding attention_core, in float64 so that only rounding-level differences remain;
  // clipped softmax, causal + padding masks, dropout and a gate, so every backward branch runs.
  const int64_t B = 2, L = 5, d = 6, H = 2;
  const Tensor x0 = random_tensor({B, L, d}, DType::f64, 70);
  std::vector<Tensor> params0;
  for (unsigned i = 0; i < 6; ++i)
    params0.push_back(random_tensor(i % 2 == 0 ? Shape{d, d} : Shape{d}, DType::f64, 71 + i));
  const Tensor gate0 = ops::rand({B, L, H}, 80, 0, DType::f64, 0.1, 0.9);
  const Tensor mask = ops::from_vector(std::vector<uint8_t>{1, 1, 1, 1, 1, 1, 1, 0, 1, 0}, {B, L});
  const Tensor upstream = random_tensor({B, L, d}, DType::f64, 81);
  nn::AttentionCoreOptions o;
  o.heads = H;
  o.softmax = nn::SoftmaxClip{true, -0.1, 1.05};
  o.causal = true;
  o.dropout = 0.2f;
  o.dropout_seed = 5;
  o.dropout_stream = 6;
  auto leaves = [&] {
    std::vector<Tensor> all = {ops::clone(x0)};
    for (const Tensor& p : params0) all.push_back(ops::clone(p));
    all.push_back(ops::clone(gate0));
    for (Tensor& t : all) t.set_requires_grad(true);
    return all;
  };
  const std::vector<Tensor> a = leaves(), b = leaves();
  const Tensor projected = nn::attention_core_projected(
      a[0], nn::QkvWeights{a[1], a[2], a[3], a[4], a[5], a[6]}, a[7], mask, o);
  const Tensor reference =
      nn::attention_core(nn::linear(b[0], b[1], b[2]), nn::linear(b[0], b[3], b[4]),
                         nn::linear(b[0], b[5], b[6]), b[7], mask, o);
  CHECK(ops::max_abs_diff(projected, reference) < 1e-13);
  backward(projected, upstream);
  backward(reference, upstream);
  for (size_t i = 0; i < a.size(); ++i) {
    CAPTURE(i);
    REQUIRE(a[i].grad().defined());
    CHECK(ops::max_abs_diff(a[i].grad(), b[i].grad()) < 1e-12);
  }
}

TEST_CASE("attention_core_projected: bit-identical with 1 and 2 threads above every threshold") {
  // 320 rows x 3d = 288 columns: the bias rows, the stacked bias gradient (two 256-row chunks) and
  // the B*H loop all run in parallel with 2 threads.
  const int64_t B = 5, L = 64, d = 96, H = 3;
  const Tensor x0 = random_tensor({B, L, d}, DType::f32, 90);
  const Tensor upstream = random_tensor({B, L, d}, DType::f32, 91);
  std::vector<Tensor> params0;
  for (unsigned i = 0; i < 6; ++i)
    params0.push_back(
        random_tensor(i % 2 == 0 ? Shape{d, d} : Shape{d}, DType::f32, 92 + i, 0.0, 0.2));
  nn::AttentionCoreOptions o;
  o.heads = H;
  o.dropout = 0.1f;
  o.dropout_seed = 3;
  const int saved = num_threads();
  std::vector<std::vector<Tensor>> results;
  for (int threads : {1, 2}) {
    set_num_threads(threads);
    std::vector<Tensor> leaves = {ops::clone(x0)};
    for (const Tensor& p : params0) leaves.push_back(ops::clone(p));
    for (Tensor& t : leaves) t.set_requires_grad(true);
    const Tensor c = nn::attention_core_projected(
        leaves[0], nn::QkvWeights{leaves[1], leaves[2], leaves[3], leaves[4], leaves[5], leaves[6]},
        Tensor(), Tensor(), o);
    backward(c, upstream);
    std::vector<Tensor> out = {c.detach()};
    for (const Tensor& t : leaves) out.push_back(t.grad());
    results.push_back(out);
  }
  set_num_threads(saved);
  for (size_t i = 0; i < results[0].size(); ++i) {
    CAPTURE(i);
    CHECK(bit_identical(results[0][i], results[1][i]));
  }
}

TEST_CASE("attention_core_projected: bad weights and inputs throw naming the problem") {
  const Tensor x = ops::zeros({2, 3, 4});
  const Tensor w = ops::zeros({4, 4}), bias = ops::zeros({4});
  nn::AttentionCoreOptions o;
  o.heads = 2;
  auto message = [](auto&& f) -> std::string {
    try {
      f();
    } catch (const Error& e) {
      return e.what();
    }
    return "no throw";
  };
  const std::string wrong_key = message([&] {
    nn::attention_core_projected(x, {w, bias, ops::zeros({4, 3}), bias, w, bias}, Tensor(),
                                 Tensor(), o);
  });
  CHECK(wrong_key.find("attention_core_projected") != std::string::npos);
  CHECK(wrong_key.find("key.weight must be [4, 4]") != std::string::npos);
  CHECK(wrong_key.find("[4, 3]") != std::string::npos);
  CHECK(message([&] {
          nn::attention_core_projected(x, {w, bias, w, bias, w, ops::zeros({5})}, Tensor(),
                                       Tensor(), o);
        }).find("value.bias must be [4]") != std::string::npos);
  CHECK(message([&] {
          nn::attention_core_projected(x, {w, Tensor(), w, bias, w, bias}, Tensor(), Tensor(), o);
        }).find("attention_core_projected") != std::string::npos);
  CHECK(message([&] {
          nn::attention_core_projected(x, {ops::zeros({4, 4}, DType::f64), bias, w, bias, w, bias},
                                       Tensor(), Tensor(), o);
        }).find("attention_core_projected") != std::string::npos);
  CHECK(message([&] {
          nn::attention_core_projected(ops::zeros({3, 4}), {w, bias, w, bias, w, bias}, Tensor(),
                                       Tensor(), o);
        }).find("x must be [B, T, d], got [3, 4]") != std::string::npos);
  o.heads = 3;
  CHECK(message([&] {
          nn::attention_core_projected(x, {w, bias, w, bias, w, bias}, Tensor(), Tensor(), o);
        }).find("not divisible by heads = 3") != std::string::npos);
  o.heads = 2;
  CHECK(message([&] {
          nn::attention_core_projected(x, {w, bias, w, bias, w, bias}, ops::zeros({2, 3, 3}),
                                       Tensor(), o);
        }).find("gate must be [B, T, H] = [2, 3, 2]") != std::string::npos);
}
