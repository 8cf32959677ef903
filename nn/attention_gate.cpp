// The attention gates of method.md §2.2 (layout and PyTorch mapping in attention_gate.h).
//
// Every variant is composed from differentiable ops, so gradients reach both x and the gate
// parameters through the autograd graph. Per-head networks are evaluated for all heads at once on
// the [B, T, H, d_h] view of x (head i = feature slice [i*d_h, (i+1)*d_h)), with the stacked
// parameters broadcast over (B, T).
#include "nn/attention_gate.h"

#include "nn/activation_tap.h"

#include <algorithm>
#include <cmath>

#include "autograd/functions.h"
#include "nn/linear.h"

namespace qt::nn {

double gate_logit(double p) {
  // The repo's helper: p = clip(p, eps, 1 - eps); logit = -log(1/p - 1).
  constexpr double kEps = 1e-16;
  p = std::min(std::max(p, kEps), 1.0 - kEps);
  return -std::log(1.0 / p - 1.0);
}

const std::vector<GateKindName>& gate_kind_table() {
  static const std::vector<GateKindName> table = {
      {GateKind::none, "none"},
      {GateKind::linear_per_head, "linear"},
      {GateKind::mlp_per_head, "mlp"},
      {GateKind::all_heads_linear, "all-heads-linear"},
      {GateKind::unconditional_per_head, "unconditional"},
      {GateKind::conditional_per_head, "conditional-per-head"},
  };
  return table;
}

std::vector<std::string> gate_kind_names() {
  std::vector<std::string> names;
  for (const GateKindName& entry : gate_kind_table()) names.emplace_back(entry.name);
  return names;
}

GateKind parse_gate_kind(const std::string& name) {
  for (const GateKindName& entry : gate_kind_table())
    if (name == entry.name) return entry.kind;
  fail("attention: unknown gate kind '{}' (expected one of {})", name,
       fmt::join(gate_kind_names(), ", "));
}

const char* gate_kind_name(GateKind kind) {
  for (const GateKindName& entry : gate_kind_table())
    if (kind == entry.kind) return entry.name;
  fail("attention: gate kind {} has no name", static_cast<int>(kind));
}

AttentionGate::AttentionGate(GateKind kind_, int64_t hidden_, int64_t heads_, double pi_init,
                             int64_t mlp_hidden_, InitRng& rng)
    : kind(kind_), hidden(hidden_), heads(heads_), head_dim(0), mlp_hidden(0) {
  QT_CHECK(kind != GateKind::none, "AttentionGate: kind 'none' has no gate to build");
  QT_CHECK(hidden > 0 && heads > 0 && hidden % heads == 0,
           "AttentionGate: hidden size {} is not divisible by heads = {}", hidden, heads);
  head_dim = hidden / heads;
  switch (kind) {
    case GateKind::linear_per_head:
    case GateKind::conditional_per_head: {
      QT_CHECK(std::isfinite(pi_init) && pi_init > 0.0 && pi_init < 1.0,
               "AttentionGate: pi_init = {} (expected a probability in (0, 1))", pi_init);
      // H x nn.Linear(d_h, 1): weight U(+-1/sqrt(d_h)), bias = logit(pi_init).
      weight = register_parameter("weight", rng.linear_default({heads, head_dim}, head_dim));
      bias = register_parameter("bias", ops::full({heads}, gate_logit(pi_init)));
      break;
    }
    case GateKind::mlp_per_head: {
      mlp_hidden = mlp_hidden_ == 0 ? head_dim / 4 : mlp_hidden_;
      QT_CHECK(mlp_hidden >= 1,
               "AttentionGate: MLP hidden width {} (head size {}; d_h / 4 must be >= 1 or pass "
               "gate_mlp_hidden)",
               mlp_hidden, head_dim);
      // H x [nn.Linear(d_h, n_hid), ReLU, nn.Linear(n_hid, 1)], all PyTorch default init.
      hidden_weight = register_parameter(
          "hidden_weight", rng.linear_default({heads, mlp_hidden, head_dim}, head_dim));
      hidden_bias =
          register_parameter("hidden_bias", rng.linear_default({heads, mlp_hidden}, head_dim));
      output_weight =
          register_parameter("output_weight", rng.linear_default({heads, mlp_hidden}, mlp_hidden));
      output_bias = register_parameter("output_bias", rng.linear_default({heads}, mlp_hidden));
      break;
    }
    case GateKind::all_heads_linear: {
      // nn.Linear(d, H), default init (no bias override).
      weight = register_parameter("weight", rng.linear_default({heads, hidden}, hidden));
      bias = register_parameter("bias", rng.linear_default({heads}, hidden));
      break;
    }
    case GateKind::unconditional_per_head: {
      logit = register_parameter("logit", ops::zeros({heads}));  // pi = sigmoid(0) = 0.5
      break;
    }
    case GateKind::none:
      break;
  }
}

Tensor AttentionGate::forward(const Tensor& x) const {
  check_defined(x, "AttentionGate");
  QT_CHECK(x.dim() == 3 && x.shape()[2] == hidden,
           "AttentionGate: input must be [B, T, {}], got {}", hidden, shape_str(x.shape()));
  const int64_t B = x.shape()[0], L = x.shape()[1], H = heads, dh = head_dim;
  switch (kind) {
    case GateKind::linear_per_head:
    case GateKind::conditional_per_head: {
      check_same_dtype(x, weight, "AttentionGate");
      // logits[b, t, i] = x[b, t, i, :] . weight[i, :] + bias[i]     ([B, T, H])
      const Tensor per_head = reshape(x, {B, L, H, dh});
      const Tensor logits = add(sum(mul(per_head, weight), {-1}), bias);
      if (kind == GateKind::linear_per_head) return sigmoid(logits);
      // conditional_per_head: the mean of the logits over the T tokens (padding included), then
      // the sigmoid, one value per (b, head) broadcast over the tokens.
      return expand(sigmoid(mean(logits, {1}, true)), {B, L, H});
    }
    case GateKind::mlp_per_head: {
      check_same_dtype(x, hidden_weight, "AttentionGate");
      // Rows of all tokens per head: [H, B*T, d_h]
      const Tensor rows = permute(reshape(x, {B * L, H, dh}), {1, 0, 2});
      // hidden = ReLU(x_i W1_i^T + b1_i)     [H, B*T, n_hid]
      // (the tap point "<gate>:hidden" lets calibration see them: an integer gate needs a grid)
      const Tensor hidden_units =
          tap(*this, "hidden",
              relu(add(matmul(rows, transpose(hidden_weight, -1, -2)), unsqueeze(hidden_bias, 1))));
      // logit = hidden . w2_i + b2_i          [H, B*T]
      const Tensor logits =
          add(sum(mul(hidden_units, unsqueeze(output_weight, 1)), {-1}), unsqueeze(output_bias, 1));
      return sigmoid(reshape(transpose(logits, 0, 1), {B, L, H}));
    }
    case GateKind::all_heads_linear: {
      check_same_dtype(x, weight, "AttentionGate");
      return sigmoid(linear(x, weight, bias));  // [B, T, H]
    }
    case GateKind::unconditional_per_head: {
      check_same_dtype(x, logit, "AttentionGate");
      return expand(view(sigmoid(logit), {1, 1, H}), {B, L, H});
    }
    case GateKind::none:
      break;
  }
  fail("AttentionGate: no gate for kind 'none'");
}

}  // namespace qt::nn
