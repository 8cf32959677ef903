// Multi-head self-attention with the paper's two fixes as options (method.md §1, §2, §8.1):
//
//   Q, K, V = x W_{q,k,v}^T + b                    (each d -> d, split into H heads of d_h = d/H)
//   S       = Q_i K_i^T / sqrt(d_h) + mask          (causal and/or key padding; masked p = 0)
//   P       = softmax(S)  or  clip((zeta - gamma) * softmax(S) + gamma, 0, 1)     (clipped softmax)
//             or e^{S} / (e^{a_h} + sum e^{S}): a sink column (softmax1: a_h = 0; sink: learned)
//   C_i     = Dropout(P) V_i                        (attention-probability dropout, after clipping)
//   C_i     = sigmoid(G_i(x)) * C_i                 (gated attention; x = the same input as Q/K/V)
//   out     = concat_i(C_i) W_o^T + b_o
//
// The core (S -> P -> dropout -> P V -> gate) has a fused forward and hand-written backward
// (nn/attention_core.*), which in the module also computes the Q/K/V projections with one GEMM
// against the three weights stacked (the parameters stay the three Linear children); the same
// computation composed from autograd ops (three Linear layers, matmul, softmax, ...) is kept for
// cross-checking (`AttentionOptions::fused = false`).
#pragma once

#include <cstdint>
#include <memory>
#include <string>

#include "nn/attention_gate.h"
#include "nn/clipped_softmax.h"
#include "nn/dropout.h"
#include "nn/init.h"
#include "nn/linear.h"
#include "nn/module.h"

namespace qt::nn {

struct AttentionOptions {
  int64_t hidden = 256;  // d
  int64_t heads = 4;     // H; d_h = hidden / heads
  // Plain or clipped with (gamma, zeta), already resolved from the config (resolve_softmax_clip:
  // the alpha / T form is turned into gamma there); passed unchanged to the core.
  SoftmaxClip softmax;
  AttentionSink sink =
      AttentionSink::none;  // softmax1 / sink (attention_sink_of the config's kind)
  GateKind gate = GateKind::none;
  double gate_pi_init = 0.5;    // linear_per_head / conditional_per_head: bias = logit(pi_init)
  int64_t gate_mlp_hidden = 0;  // mlp_per_head: n_hid (0 -> d_h / 4, the repo's choice)
  bool causal = false;          // OPT
  float probability_dropout = 0.0f;
  bool fused = true;              // false: the composed-ops reference path
  uint64_t dropout_layer_id = 0;  // this site's dropout stream id
};

class Attention : public Module {
 public:
  // Parameter names (children): "query", "key", "value", "output" (Linear, d -> d), and for gated
  // variants "gate" (see attention_gate.h for its layout).
  //
  // Registered parameters, in this order (the InitRng draws follow the same order), and the
  // PyTorch reference names they correspond to (BERT: prefix attention.self. / attention.output.;
  // OPT: prefix self_attn.):
  //   query.weight  [d, d], query.bias  [d]    BERT self.query.*    OPT q_proj.*
  //   key.weight    [d, d], key.bias    [d]    BERT self.key.*      OPT k_proj.*
  //   value.weight  [d, d], value.bias  [d]    BERT self.value.*    OPT v_proj.*
  //   output.weight [d, d], output.bias [d]    BERT output.dense.*  OPT out_proj.*
  //   gate.*                                   BERT / OPT: the attention module's `alpha`
  //                                            (layout and mapping in attention_gate.h)
  //   sink          [H]                        sink only: the learned sink logits a_h, init 0
  //                                            (gpt-oss `sinks`); decayed, as the gate logits
  // All four projections get PyTorch's default nn.Linear init U(+-1/sqrt(d)) for weight and bias,
  // as the repo's replacement attention module does (method.md §3.1, §8.4); models re-initialise
  // `output` where their spec says so (HF BERT keeps N(0, 0.02) on attention.output.dense).
  // The head split is PyTorch's: head h uses rows [h*d_h, (h+1)*d_h) of the query/key/value
  // weights and reads / writes columns [h*d_h, (h+1)*d_h) of the [B, T, d] activations.
  //
  // Scaling: the scores are (Q K^T) / sqrt(d_h) as BERT computes them; OPT scales Q by
  // d_h^(-1/2) before the product instead (same value up to rounding).
  Attention(const AttentionOptions& options, std::shared_ptr<DropoutState> dropout_state,
            InitRng& rng);

  // x [B, T, d]; key_padding_mask: undefined, or [B, T] (u8/i32/i64; nonzero = a real token,
  // 0 = padding, as HF's attention_mask). Returns [B, T, d].
  // Masked keys (padding, and keys after the query when causal) get probability exactly 0 before
  // the clip (so s = gamma, clipped to 0, zero gradient), as HF's dtype-min additive mask does; a
  // query row whose keys are all masked becomes uniform over all T keys (HF behaves the same).
  // Attention-probability dropout (train mode only) draws nn::dropout_keep(state->seed,
  // dropout_stream(options.dropout_layer_id, state->step), flat index into [B, H, T, T], p).
  Tensor forward(const Tensor& x, const Tensor& key_padding_mask = Tensor()) const;

  AttentionOptions options;
  std::shared_ptr<DropoutState> dropout_state;
  std::shared_ptr<Linear> query, key, value, output;
  std::shared_ptr<AttentionGate> gate;  // null unless gated
  Tensor sink;                          // [H], defined for AttentionSink::learned only
};

}  // namespace qt::nn
