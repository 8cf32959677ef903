// The core of multi-head attention, between the Q/K/V projections and the output projection
// (method.md §8.1 order of operations), for every head h of every batch entry b:
//
//   S   = Q_h K_h^T / sqrt(d_h)                      [T, T]
//   S   = lowest float where the key is masked        (causal: key j > query i; padding: key j
//                                                     is a padding token). As HF's additive
//                                                     dtype-min mask: a masked key gets p = 0
//                                                     exactly; a row whose keys are ALL masked
//                                                     becomes uniform (all scores equal).
//   P   = softmax(S)                                  (row-wise, along the keys)
//         or, with a sink logit a_h (softmax1: a_h = 0; sink: learned; nn/clipped_softmax.h),
//         P_ij = e^{S_ij} / (e^{a_h} + sum_k e^{S_ik}): the softmax over [S_i, a_h] with the sink
//         column dropped (computed stably with m = max(max_k S_ik, a_h)). A row's sink share
//         P_i,sink = 1 - sum_j P_ij is what the head "did not attend to"; a row whose keys are
//         all masked gives the sink everything (P_i = 0, so the head outputs 0).
//   Y   = P  or  clip((zeta - gamma) P + gamma, 0, 1) (clipped softmax, nn/clipped_softmax.h)
//   Y~  = Y * keep / (1 - p_drop)                     (attention-probability dropout AFTER the
//                                                     clip; keep = nn::dropout_keep(seed, stream,
//                                                     flat index into [B, H, T, T], p_drop))
//   O_h = Y~ V_h                                      [T, d_h]
//   C_h = pi_h * O_h                                  (gate probabilities, one per token and head)
//
// Layout: q, k, v and the result are [B, T, d] with head h in columns [h*d_h, (h+1)*d_h) (the
// concatenated-heads layout the projections produce and the output projection consumes), so no
// transposes are needed: every per-head block is a strided matrix with leading dimension d.
//
// Two implementations with the same contract:
//   attention_core           fused: one pass per (b, h) block with a hand-written backward.
//                            Threaded over B*H; per-thread T x T scratch. It stores P (before the
//                            clip; [B, H, T, T]) and, when gated, the ungated O [B, T, d]; the
//                            backward recomputes Y and the clip mask from P. The dropout mask is
//                            kept in P's sign bit (P >= 0, so the bit is free: a dropped entry is
//                            stored as -P), so it costs neither memory nor a second Philox pass.
//   attention_core_composed  the same math from differentiable ops (matmul, softmax,
//                            clipped_softmax, dropout, mul, ...): the readable reference the fused
//                            one is tested against.
//
// Backward of the fused core, per (b, h) block, given dC = dL/dC:
//   dpi[t]  = sum_j dC[t, j] O[t, j]                   (gate)
//   dO      = pi * dC
//   dV_h    = Y~^T dO
//   dY~     = dO V_h^T
//   dY      = dY~ * keep / (1 - p_drop)
//   g^      = (zeta - gamma) * m * dY, m = [0 <= (zeta - gamma) P + gamma <= 1]   (clip)
//   dS      = P * (g^ - rowsum(g^ * P)); dS = 0 at masked keys (masked scores are constants)
//   da_h    = - sum_{b, i} P_i,sink rowsum(g^ * P)_i   (sink: the softmax backward of the dropped
//             column, whose upstream gradient is 0; summed over b in order: thread-independent)
//   dQ_h    = dS K_h / sqrt(d_h);  dK_h = dS^T Q_h / sqrt(d_h)
#pragma once

#include <cstdint>

#include "nn/clipped_softmax.h"
#include "tensor/tensor.h"

namespace qt::nn {

class Module;

struct AttentionCoreOptions {
  int64_t heads = 1;
  SoftmaxClip softmax;   // clipped with (gamma, zeta), or the plain softmax
  bool causal = false;   // query i attends to keys j <= i only
  float dropout = 0.0f;  // attention-probability dropout (0: none; callers pass 0 in eval mode)
  uint64_t dropout_seed = 0;
  uint64_t dropout_stream = 0;
  // The composed path only: the module whose activation taps (nn/activation_tap.h) see the points
  // "scores", "probabilities" and "context" (null: no taps). Attention sets it while taps are
  // installed.
  const Module* tap_owner = nullptr;
};

// q, k, v: [B, T, d] (f32 or f64, same dtype; d divisible by heads).
// gate: undefined, or gate probabilities [B, T, H] (same dtype; any layout).
// key_padding_mask: undefined, or [B, T] (u8 / i32 / i64; nonzero = real token, 0 = padding).
// sink: undefined (the plain softmax), or the sink logits a [H] (same dtype; with the plain
// softmax only, not the clipped one).
// Returns C [B, T, d] (heads concatenated), differentiable w.r.t. q, k, v, gate and sink.
Tensor attention_core(const Tensor& q, const Tensor& k, const Tensor& v, const Tensor& gate,
                      const Tensor& key_padding_mask, const AttentionCoreOptions& options,
                      const Tensor& sink = Tensor());

// The Q/K/V projections fused with the core: Q, K, V = x W^T + b for the three Linear layers'
// parameters (as nn::linear computes them), then attention_core. Same result as
//   attention_core(linear(x, Wq, bq), linear(x, Wk, bk), linear(x, Wv, bv), gate, mask, options)
// up to rounding, but the three projections are ONE GEMM against the weights stacked [3d, d]
// (copied per call, 3 d^2 values), whose [B, T, 3d] result the core reads in place (row stride 3d,
// no transposes); the backward writes dQ, dK, dV into one [B, T, 3d] buffer and needs one GEMM
// for dx (K = 3d: no sum of three partial dx) and one for the three weight gradients.
// One autograd node with inputs x, query.weight, query.bias, key.weight, key.bias, value.weight,
// value.bias, gate, sink. x [B, T, d] (f32 / f64); weights [d, d] and biases [d] of x's dtype.
struct QkvWeights {
  Tensor query_weight, query_bias, key_weight, key_bias, value_weight, value_bias;
};
Tensor attention_core_projected(const Tensor& x, const QkvWeights& weights, const Tensor& gate,
                                const Tensor& key_padding_mask, const AttentionCoreOptions& options,
                                const Tensor& sink = Tensor());

// The sink column is the concatenation [S, a_h] before softmax and a narrow after it.
Tensor attention_core_composed(const Tensor& q, const Tensor& k, const Tensor& v,
                               const Tensor& gate, const Tensor& key_padding_mask,
                               const AttentionCoreOptions& options, const Tensor& sink = Tensor());

}  // namespace qt::nn
