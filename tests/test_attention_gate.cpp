// Tests for nn/attention_gate.*: the five gate variants of method.md §2.2.
// Truth: parameter names/shapes/initial values from the spec table (hand-computed logit values,
// PyTorch's default-init bounds), naive double loops over the per-head formulas of
// attention_gate.h, and central finite differences (f64) for the gradients of x and of every
// gate parameter.
#include <doctest/doctest.h>

#include <cmath>
#include <string>
#include <vector>

#include "autograd/functions.h"
#include "autograd/gradcheck.h"
#include "nn/attention_gate.h"
#include "tensor/ops.h"
#include "tests/test_util.h"

using namespace qt;
using namespace qt::test;
using nn::GateKind;

namespace {

const std::vector<GateKind> kAllGates = {
    GateKind::linear_per_head, GateKind::mlp_per_head, GateKind::all_heads_linear,
    GateKind::unconditional_per_head, GateKind::conditional_per_head};

const char* gate_name(GateKind kind) {
  switch (kind) {
    case GateKind::linear_per_head:
      return "linear_per_head";
    case GateKind::mlp_per_head:
      return "mlp_per_head";
    case GateKind::all_heads_linear:
      return "all_heads_linear";
    case GateKind::unconditional_per_head:
      return "unconditional_per_head";
    case GateKind::conditional_per_head:
      return "conditional_per_head";
    case GateKind::none:
      return "none";
  }
  return "?";
}

double sigmoid(double z) {
  return 1.0 / (1.0 + std::exp(-z));
}

// Replaces every gate tensor by a random f64 leaf (so that the test does not depend on the
// initial values and the gradient check can run in double). Returns the new leaves.
std::vector<Tensor> randomize_f64(nn::AttentionGate& gate, unsigned seed) {
  std::vector<Tensor> leaves;
  for (Tensor* t : {&gate.weight, &gate.bias, &gate.hidden_weight, &gate.hidden_bias,
                    &gate.output_weight, &gate.output_bias, &gate.logit}) {
    if (!t->defined()) continue;
    *t = random_tensor(t->shape(), DType::f64, seed++, 0.0, 0.7);
    t->set_requires_grad(true);
    leaves.push_back(*t);
  }
  return leaves;
}

// pi[b, t, h] by naive loops over the formulas in attention_gate.h.
std::vector<double> reference_gate(const nn::AttentionGate& gate, const Tensor& x) {
  const int64_t B = x.shape()[0], L = x.shape()[1], H = gate.heads, dh = gate.head_dim;
  std::vector<double> logits(B * L * H), out(B * L * H);
  for (int64_t b = 0; b < B; ++b)
    for (int64_t t = 0; t < L; ++t)
      for (int64_t h = 0; h < H; ++h) {
        double z = 0;
        switch (gate.kind) {
          case GateKind::linear_per_head:
          case GateKind::conditional_per_head:
            for (int64_t j = 0; j < dh; ++j) z += x.at({b, t, h * dh + j}) * gate.weight.at({h, j});
            z += gate.bias.at({h});
            break;
          case GateKind::mlp_per_head:
            for (int64_t u = 0; u < gate.mlp_hidden; ++u) {
              double a = gate.hidden_bias.at({h, u});
              for (int64_t j = 0; j < dh; ++j)
                a += gate.hidden_weight.at({h, u, j}) * x.at({b, t, h * dh + j});
              z += gate.output_weight.at({h, u}) * std::max(a, 0.0);
            }
            z += gate.output_bias.at({h});
            break;
          case GateKind::all_heads_linear:
            for (int64_t j = 0; j < gate.hidden; ++j) z += gate.weight.at({h, j}) * x.at({b, t, j});
            z += gate.bias.at({h});
            break;
          case GateKind::unconditional_per_head:
            z = gate.logit.at({h});
            break;
          case GateKind::none:
            break;
        }
        logits[(b * L + t) * H + h] = z;
      }
  for (int64_t b = 0; b < B; ++b)
    for (int64_t h = 0; h < H; ++h) {
      double mean = 0;
      for (int64_t t = 0; t < L; ++t) mean += logits[(b * L + t) * H + h] / L;
      for (int64_t t = 0; t < L; ++t) {
        const double z =
            gate.kind == GateKind::conditional_per_head ? mean : logits[(b * L + t) * H + h];
        out[(b * L + t) * H + h] = sigmoid(z);
      }
    }
  return out;
}

std::vector<std::string> names_of(const nn::Module& m) {
  std::vector<std::string> names;
  for (const auto& [name, tensor] : m.named_parameters()) names.push_back(name);
  return names;
}

}  // namespace

TEST_CASE("gate_logit: the repo's logit with p clipped to [1e-16, 1 - 1e-16]") {
  CHECK(nn::gate_logit(0.5) == 0.0);
  CHECK(nn::gate_logit(0.25) == doctest::Approx(std::log(1.0 / 3.0)).epsilon(1e-15));
  CHECK(nn::gate_logit(0.25) == doctest::Approx(-1.098612).epsilon(1e-6));
  CHECK(nn::gate_logit(0.9) == doctest::Approx(std::log(9.0)).epsilon(1e-14));
  // p = 0 is clipped to 1e-16: -log(1e16 - 1) ~ -36.84
  CHECK(nn::gate_logit(0.0) == doctest::Approx(-std::log(1e16 - 1)).epsilon(1e-12));
  CHECK(std::isfinite(nn::gate_logit(1.0)));
}

TEST_CASE(
    "AttentionGate: parameter names, shapes and initial values per variant (method.md §2.2)") {
  nn::InitRng rng{7, 0};
  const int64_t d = 64, H = 4, dh = 16;
  {
    nn::AttentionGate g(GateKind::linear_per_head, d, H, 0.25, 0, rng);
    CHECK(names_of(g) == std::vector<std::string>{"weight", "bias"});
    CHECK(g.weight.shape() == Shape{H, dh});
    CHECK(g.bias.shape() == Shape{H});
    for (int64_t h = 0; h < H; ++h) CHECK(g.bias.at({h}) == doctest::Approx(-1.0986122886681098));
    const double bound = 1.0 / std::sqrt(double(dh));  // 0.25
    double largest = 0;
    for (double w : elements(g.weight)) {
      CHECK(std::abs(w) <= bound);
      largest = std::max(largest, std::abs(w));
    }
    CHECK(largest > 0.8 * bound);  // spread over the whole U(-bound, bound), not a tiny init
    CHECK(g.parameter_count() == H * (dh + 1));  // paper Table 4: H (d_h + 1)
  }
  {
    nn::AttentionGate g(GateKind::conditional_per_head, d, H, 0.5, 0, rng);
    CHECK(names_of(g) == std::vector<std::string>{"weight", "bias"});
    for (int64_t h = 0; h < H; ++h) CHECK(g.bias.at({h}) == 0.0);
  }
  {
    nn::AttentionGate g(GateKind::mlp_per_head, d, H, 0.25, 0, rng);
    CHECK(names_of(g) ==
          std::vector<std::string>{"hidden_weight", "hidden_bias", "output_weight", "output_bias"});
    CHECK(g.mlp_hidden == dh / 4);  // the repo's --attn_gate_mlp width
    CHECK(g.hidden_weight.shape() == Shape{H, dh / 4, dh});
    CHECK(g.hidden_bias.shape() == Shape{H, dh / 4});
    CHECK(g.output_weight.shape() == Shape{H, dh / 4});
    CHECK(g.output_bias.shape() == Shape{H});
    // PyTorch default init everywhere, no bias override (pi_init is ignored): the output bias is
    // uniform in +-1/sqrt(n_hid) = +-0.5, so not all equal to logit(0.25).
    for (double w : elements(g.hidden_weight)) CHECK(std::abs(w) <= 0.25);
    for (double w : elements(g.hidden_bias)) CHECK(std::abs(w) <= 0.25);
    for (double w : elements(g.output_weight)) CHECK(std::abs(w) <= 0.5);
    for (double w : elements(g.output_bias)) CHECK(std::abs(w) <= 0.5);
    CHECK(g.output_bias.at({0}) != g.output_bias.at({1}));
    // paper Table 4: H (n_hid (d_h + 2) + 1)
    CHECK(g.parameter_count() == H * (dh / 4 * (dh + 2) + 1));
    nn::AttentionGate wide(GateKind::mlp_per_head, d, H, 0.5, dh, rng);  // --attn_gate_mlp2
    CHECK(wide.hidden_weight.shape() == Shape{H, dh, dh});
  }
  {
    nn::AttentionGate g(GateKind::all_heads_linear, d, H, 0.25, 0, rng);
    CHECK(names_of(g) == std::vector<std::string>{"weight", "bias"});
    CHECK(g.weight.shape() == Shape{H, d});
    for (double w : elements(g.weight)) CHECK(std::abs(w) <= 1.0 / 8);
    for (double w : elements(g.bias)) CHECK(std::abs(w) <= 1.0 / 8);
    CHECK(g.bias.at({0}) != g.bias.at({1}));  // default init, not logit(pi_init)
    CHECK(g.parameter_count() == H * (d + 1));
  }
  {
    nn::AttentionGate g(GateKind::unconditional_per_head, d, H, 0.25, 0, rng);
    CHECK(names_of(g) == std::vector<std::string>{"logit"});        // no "bias": weight-decayed
    for (int64_t h = 0; h < H; ++h) CHECK(g.logit.at({h}) == 0.0);  // pi = 0.5
  }
  // Every bias name contains "bias"; every other name does not (the weight-decay rule).
  for (GateKind kind : kAllGates) {
    nn::AttentionGate g(kind, d, H, 0.5, 0, rng);
    for (const auto& [name, t] : g.named_parameters()) {
      const bool is_bias =
          t.is_same(g.bias) || t.is_same(g.hidden_bias) || t.is_same(g.output_bias);
      CHECK((name.find("bias") != std::string::npos) == is_bias);
    }
  }
}

TEST_CASE("AttentionGate: the same seed gives the same gate; initial pi for the Linear gate") {
  nn::InitRng a{3, 0}, b{3, 0};
  nn::AttentionGate g1(GateKind::mlp_per_head, 32, 2, 0.5, 0, a);
  nn::AttentionGate g2(GateKind::mlp_per_head, 32, 2, 0.5, 0, b);
  CHECK(ops::max_abs_diff(g1.hidden_weight, g2.hidden_weight) == 0.0);
  // With x = 0 the per-head Linear gate outputs exactly sigmoid(bias) = pi_init.
  nn::InitRng c{3, 0};
  nn::AttentionGate lin(GateKind::linear_per_head, 32, 2, 0.25, 0, c);
  const Tensor pi = lin.forward(ops::zeros({2, 3, 32}));
  for (double v : elements(pi)) CHECK(v == doctest::Approx(0.25).epsilon(1e-6));
}

TEST_CASE("AttentionGate: forward matches naive loops for every variant, shape [B, T, H]") {
  const int64_t B = 2, L = 5, d = 24, H = 3;
  for (GateKind kind : kAllGates) {
    CAPTURE(gate_name(kind));
    nn::InitRng rng{11, 0};
    nn::AttentionGate gate(kind, d, H, 0.3, kind == GateKind::mlp_per_head ? 3 : 0, rng);
    randomize_f64(gate, 100);
    const Tensor x = random_tensor({B, L, d}, DType::f64, 5);
    const Tensor pi = gate.forward(x);
    CHECK(pi.shape() == Shape{B, L, H});
    const std::vector<double> expected = reference_gate(gate, x);
    const std::vector<double> got = elements(pi);
    double worst = 0;
    for (size_t i = 0; i < got.size(); ++i) worst = std::max(worst, std::abs(got[i] - expected[i]));
    CHECK(worst < 1e-14);
    // f32 with the module's own f32 parameters: same formulas, single precision.
    nn::InitRng rng32{11, 0};
    nn::AttentionGate gate32(kind, d, H, 0.3, kind == GateKind::mlp_per_head ? 3 : 0, rng32);
    const Tensor x32 = ops::to(x, DType::f32);
    const std::vector<double> expected32 = reference_gate(gate32, x32);
    const std::vector<double> got32 = elements(gate32.forward(x32));
    worst = 0;
    for (size_t i = 0; i < got32.size(); ++i)
      worst = std::max(worst, std::abs(got32[i] - expected32[i]));
    CHECK(worst < 1e-6);
  }
}

TEST_CASE("AttentionGate: head i reads exactly the features [i*d_h, (i+1)*d_h)") {
  // Perturbing feature f changes only head f / d_h for per-head gates.
  const int64_t B = 1, L = 2, d = 12, H = 3, dh = 4;
  for (GateKind kind : {GateKind::linear_per_head, GateKind::mlp_per_head}) {
    nn::InitRng rng{4, 0};
    nn::AttentionGate gate(kind, d, H, 0.5, kind == GateKind::mlp_per_head ? 4 : 0, rng);
    randomize_f64(gate, 60);
    Tensor x = random_tensor({B, L, d}, DType::f64, 9);
    const Tensor before = ops::clone(gate.forward(x));
    for (int64_t f = 0; f < d; ++f) {
      Tensor moved = ops::clone(x);
      moved.data<double>()[f] += 3.0;  // token 0, feature f
      const Tensor after = gate.forward(moved);
      for (int64_t h = 0; h < H; ++h) {
        const bool changed = after.at({0, 0, h}) != before.at({0, 0, h});
        CHECK(changed == (h == f / dh));
        CHECK(after.at({0, 1, h}) == before.at({0, 1, h}));  // other token untouched
      }
    }
  }
}

TEST_CASE("AttentionGate: gradcheck (f64) of x and every gate parameter, every variant") {
  const int64_t B = 2, L = 3, d = 8, H = 2;
  for (GateKind kind : kAllGates) {
    CAPTURE(gate_name(kind));
    nn::InitRng rng{21, 0};
    nn::AttentionGate gate(kind, d, H, 0.3, kind == GateKind::mlp_per_head ? 3 : 0, rng);
    std::vector<Tensor> params = randomize_f64(gate, 200);
    Tensor x = random_tensor({B, L, d}, DType::f64, 22);
    x.set_requires_grad(true);
    std::vector<Tensor> inputs = {x};
    inputs.insert(inputs.end(), params.begin(), params.end());
    const GradcheckResult r =
        gradcheck([&](const std::vector<Tensor>& in) { return gate.forward(in[0]); }, inputs);
    CHECK_MESSAGE(r.ok, r.message);
  }
}

TEST_CASE("AttentionGate: bad construction and bad inputs throw naming the problem") {
  nn::InitRng rng{1, 0};
  CHECK_THROWS_AS(nn::AttentionGate(GateKind::none, 8, 2, 0.5, 0, rng), Error);
  CHECK_THROWS_AS(nn::AttentionGate(GateKind::linear_per_head, 10, 3, 0.5, 0, rng), Error);
  CHECK_THROWS_AS(nn::AttentionGate(GateKind::linear_per_head, 8, 2, 0.0, 0, rng), Error);
  CHECK_THROWS_AS(nn::AttentionGate(GateKind::linear_per_head, 8, 2, 1.5, 0, rng), Error);
  // d_h = 2: d_h / 4 = 0 hidden units is an error unless a width is given.
  CHECK_THROWS_AS(nn::AttentionGate(GateKind::mlp_per_head, 4, 2, 0.5, 0, rng), Error);
  CHECK_NOTHROW(nn::AttentionGate(GateKind::mlp_per_head, 4, 2, 0.5, 2, rng));
  nn::AttentionGate gate(GateKind::linear_per_head, 8, 2, 0.5, 0, rng);
  try {
    gate.forward(ops::zeros({2, 3, 6}));
    FAIL("no throw");
  } catch (const Error& e) {
    const std::string message = e.what();
    CHECK(message.find("AttentionGate") != std::string::npos);
    CHECK(message.find("[2, 3, 6]") != std::string::npos);
  }
  CHECK_THROWS_AS(gate.forward(ops::zeros({3, 8})), Error);
  CHECK_THROWS_AS(gate.forward(ops::zeros({1, 3, 8}, DType::f64)), Error);  // dtype mismatch
}
