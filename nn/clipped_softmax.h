// Clipped softmax (paper Eq. 4; method.md §1): a softmax that can output exact zeros (and ones).
//
//   p = softmax(x)                    along `axis`
//   s = (zeta - gamma) * p + gamma     stretch (0, 1) to (gamma, zeta)
//   y = clip(s, 0, 1)
//
// gamma <= 0 and zeta >= 1; gamma = 0, zeta = 1 is the plain softmax. With gamma < 0 every
// probability below -gamma / (zeta - gamma) becomes exactly 0, so a head can attend to nothing
// without pushing its logits to infinity. Rows are not renormalised (they may sum to less than 1).
//
// Backward (method.md §1.2). With m_i = 1 where 0 <= s_i <= 1 (boundaries pass, as PyTorch's clamp)
// and 0 where the clip is strictly active, and g = dL/dy:
//   g^_i    = (zeta - gamma) * m_i * g_i
//   dL/dx_j = p_j * (g^_j - sum_i g^_i p_i)          (the softmax backward applied to g^)
// so clipped entries pass no gradient: the paper's reason why outliers stop growing.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "tensor/tensor.h"

namespace qt::nn {

// The attention softmax a config asks for: "vanilla", "clipped", or one of the no-op mechanisms
// that add a column to the softmax's denominator (issue 15; method.md "Beyond the paper"):
//   softmax1  p_j = e^{s_j} / (1 + sum_k e^{s_k})        (E. Miller, "Attention is off by one",
//                                                        2023): a sink logit fixed at 0
//   sink      p_j = e^{s_j} / (e^{a_h} + sum_k e^{s_k})  (gpt-oss, 2025): a learned sink logit a_h
//                                                        per head, the parameter "sink" [H]
// A row's probabilities then sum to 1 - (the sink's share), so a head can attend to nothing by
// giving its mass to the sink instead of to a delimiter token.
enum class SoftmaxKind { vanilla, clipped, softmax1, sink };

// The config / CLI names of the softmax kinds, in one list; parse throws naming an unknown name.
const std::vector<std::string>& softmax_kind_names();
SoftmaxKind parse_softmax_kind(const std::string& name);
const char* softmax_kind_name(SoftmaxKind kind);

// The sink column of the attention softmax (nn/attention_core.h): none, a logit fixed at 0
// (softmax1), or a learned logit per head (sink).
enum class AttentionSink { none, zero, learned };
AttentionSink attention_sink_of(SoftmaxKind kind);

// The attention softmax with its parameters resolved: plain (clipped = false, gamma = 0, zeta = 1)
// or clipped with (gamma, zeta). Computed once from the config (resolve_softmax_clip) and passed
// unchanged to the kernels.
struct SoftmaxClip {
  bool clipped = false;
  double gamma = 0.0;  // <= 0
  double zeta = 1.0;   // >= 1
  // Per-row gamma (NCS, Liao & Monz 2024): clipped with gamma_i = -alpha / n_i and zeta = 1, n_i
  // the number of keys query row i sees (causal rows see fewer; a row that sees none is uniform
  // over all T keys and uses n_i = T). `gamma` / `zeta` above are then unused.
  bool per_row = false;
  double alpha = 0.0;
};

// The (stretch scale zeta - gamma, gamma) of a row that sees `visible` of its `length` keys.
struct RowClip {
  double scale, gamma;
};
inline RowClip row_clip(const SoftmaxClip& clip, int64_t visible, int64_t length) {
  if (!clip.per_row) return {clip.zeta - clip.gamma, clip.gamma};
  const double gamma = -clip.alpha / static_cast<double>(visible > 0 ? visible : length);
  return {1.0 - gamma, gamma};
}

// The config's choices resolved (docs/method.md, "Clipped softmax"): alpha > 0 overrides the kind
// and gives gamma = -alpha / max_length, zeta = 1 (the repo's "alpha / T" form, with T the
// configured sequence length); otherwise `kind` clipped uses (gamma, zeta), and vanilla, softmax1
// and sink are the plain softmax (their sink column is attention_sink_of's business) whatever
// gamma and zeta say. Throws for alpha < 0, alpha > 0 with max_length <= 0,
// or a clipped (gamma, zeta) out of range.
// per_row (needs alpha > 0): NCS, gamma from each row's own number of visible keys instead of
// max_length.
SoftmaxClip resolve_softmax_clip(SoftmaxKind kind, double gamma, double zeta, double alpha,
                                 int64_t max_length, bool per_row = false);

// Throws unless gamma <= 0 and zeta >= 1 (names the offending value); `op` prefixes the message.
void check_clip_range(double gamma, double zeta, const char* op);

// The stretch s = (zeta - gamma) * p + gamma, written once so that every user (this op, its
// backward, the fused attention kernel) computes it by the same expression: the clip mask m of the
// backward pass is then recomputed from p exactly as the forward pass saw it.
template <typename T>
inline T clip_stretch(T p, T scale, T gamma) {
  return p * scale + gamma;
}

// Differentiable clipped softmax (f32 or f64, any rank, any axis).
Tensor clipped_softmax(const Tensor& x, double gamma, double zeta, int64_t axis = -1);

}  // namespace qt::nn
