// Gated attention (paper Eq. 5-7; method.md §2): each head's output is multiplied by a gate
// probability pi = sigmoid(G(x)) in (0, 1), so a head can learn to "do nothing" by closing its gate
// instead of producing attention outliers.
//
//   GatedAttn(x)_i = sigmoid(G_i(x)) * (Dropout(P_i) V_i)        (per head i, per token t)
//
// The gate reads the SAME x that feeds the Q/K/V projections (BERT: the layer input; OPT / ViT:
// the LayerNorm-ed input). Per-head gates read raw input features, not projections: head i sees
// the contiguous slice x[b, t, i*d_h : (i+1)*d_h]. The product is applied after dropout(P)·V and
// before the output projection (attention_core.h does the multiplication).
//
// Variants (method.md §2.2, GateKind below), with the parameters this module registers. Names
// are relative to the gate module, which the Attention module registers as child "gate" (so the
// full names are "gate.weight", ...). Per-head networks are stored STACKED over heads; the right
// column says where each PyTorch parameter of the reference repo (attribute `alpha` of
// BertSelfAttentionWithExtras / OPTAttentionWithExtras) goes:
//
//   linear_per_head (repo: conditional_per_token, per-head nn.Linear(d_h, 1))
//     weight [H, d_h]   U(-1/sqrt(d_h), 1/sqrt(d_h))    weight[i, :] = alpha.{i}.weight[0, :]
//     bias   [H]        logit(pi_init)                  bias[i]      = alpha.{i}.bias[0]
//     pi[b, t, i] = sigmoid(x[b, t, i*d_h:(i+1)*d_h] . weight[i] + bias[i])
//
//   mlp_per_head (repo: conditional_per_token + --attn_gate_mlp, n_hid = d_h / 4 by default;
//                 --attn_gate_mlp2 is the same with n_hid = d_h)
//     hidden_weight [H, n_hid, d_h]  U(+-1/sqrt(d_h))    hidden_weight[i] = alpha.{i}.0.weight
//     hidden_bias   [H, n_hid]       U(+-1/sqrt(d_h))    hidden_bias[i]   = alpha.{i}.0.bias
//     output_weight [H, n_hid]       U(+-1/sqrt(n_hid))  output_weight[i] = alpha.{i}.2.weight[0]
//     output_bias   [H]              U(+-1/sqrt(n_hid))  output_bias[i]   = alpha.{i}.2.bias[0]
//     pi[b, t, i] = sigmoid(output_weight[i] . ReLU(hidden_weight[i] x_i + hidden_bias[i])
//                           + output_bias[i])        (no bias override: pi_init is ignored)
//
//   all_heads_linear (repo: --attn_gate_linear_all_features, one nn.Linear(d, H))
//     weight [H, d]     U(+-1/sqrt(d))                  weight = alpha.weight
//     bias   [H]        U(+-1/sqrt(d))                  bias   = alpha.bias
//     pi[b, t, :] = sigmoid(weight x[b, t, :] + bias)   (always per token, never pooled)
//
//   unconditional_per_head (repo: unconditional_per_head, nn.Parameter zeros(H))
//     logit  [H]        0  (pi = 0.5; pi_init ignored)  logit = alpha
//     pi[b, t, i] = sigmoid(logit[i])                   (input-independent)
//
//   conditional_per_head (repo: conditional_per_head with per-head nn.Linear(d_h, 1))
//     weight [H, d_h], bias [H]: exactly as linear_per_head (bias = logit(pi_init)), but the logits
//     are averaged over the T tokens (padding included, as the repo does) before the sigmoid:
//     pi[b, t, i] = sigmoid(mean_t'(x[b, t', i*d_h:(i+1)*d_h] . weight[i] + bias[i]))
//
// logit(p) = -ln(1/p - 1) with p clipped to [1e-16, 1 - 1e-16] (the repo's helper); pi_init = 0.5
// gives bias 0, pi_init = 0.25 gives ln(1/3) = -1.098612.
//
// Weight decay (method.md §2.5): biases have "bias" in their names and are excluded from decay by
// the usual rule; "weight", "hidden_weight", "output_weight" and the unconditional "logit" are
// decayed.
//
// Initialisation order (draws from InitRng streams, in this order): linear_per_head and
// conditional_per_head: weight (bias is a constant); mlp_per_head: hidden_weight, hidden_bias,
// output_weight, output_bias; all_heads_linear: weight, bias; unconditional_per_head: nothing.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "nn/init.h"
#include "nn/module.h"

namespace qt::nn {

enum class GateKind {
  none,
  linear_per_head,   // conditional per token: H x Linear(d_h -> 1), bias = logit(pi_init)
  mlp_per_head,      // conditional per token: H x [Linear(d_h -> n_hid), ReLU, Linear(n_hid -> 1)]
  all_heads_linear,  // conditional per token: one Linear(d -> H) on the full input
  unconditional_per_head,  // a free logit per head, initialised to 0 (pi = 0.5)
  conditional_per_head,    // per-head Linear(d_h -> 1) logits, mean over T, then sigmoid
};

// The config / CLI name of each gate kind, in one table (the order of the enum):
// none, linear, mlp, all-heads-linear, unconditional, conditional-per-head.
struct GateKindName {
  GateKind kind;
  const char* name;
};
const std::vector<GateKindName>& gate_kind_table();
std::vector<std::string> gate_kind_names();
// An unknown name throws naming it and listing the known ones.
GateKind parse_gate_kind(const std::string& name);
const char* gate_kind_name(GateKind kind);

// logit(p) = ln(p / (1 - p)) with p clipped to [1e-16, 1 - 1e-16], as the reference repo.
double gate_logit(double p);

class AttentionGate : public Module {
 public:
  // kind != GateKind::none; hidden = d, heads = H (d divisible by H); pi_init in (0, 1) is used by
  // linear_per_head and conditional_per_head; mlp_hidden = n_hid for mlp_per_head (0 -> d_h / 4).
  AttentionGate(GateKind kind, int64_t hidden, int64_t heads, double pi_init, int64_t mlp_hidden,
                InitRng& rng);

  // x [B, T, d] -> gate probabilities pi [B, T, H] (pi[b, t, h] multiplies head h's output at
  // token t). Input-independent or pooled variants return a broadcast (expanded) view. Built from
  // differentiable ops, so gradients reach x and every gate parameter.
  Tensor forward(const Tensor& x) const;

  GateKind kind;
  int64_t hidden, heads, head_dim, mlp_hidden;
  // Which of these are defined depends on `kind` (see the table above).
  Tensor weight, bias;                                            // linear, conditional, all-heads
  Tensor hidden_weight, hidden_bias, output_weight, output_bias;  // mlp
  Tensor logit;                                                   // unconditional
};

}  // namespace qt::nn
