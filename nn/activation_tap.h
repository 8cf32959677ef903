// Activation taps: named points in a model's forward pass where a tool may look at an activation
// or replace it. Nothing else in the forward pass changes, so one model serves three purposes:
//   training / FP evaluation    no tap installed: tap() returns its input (one pointer test);
//   quantized evaluation        quant/ installs fake quantizers at the points of method.md §4.3;
//   outlier analysis            the analysis records infinity norms, kurtosis, outlier positions
//                               and attention probabilities at the points of method.md §5.
// (The paper's repository does the same by "hijacking" module outputs with forward hooks.)
//
// A point is named "<module path>:<what>", the module path being the dotted name of the module
// that owns the point in its model ("encoder.layer.0.attention.query:output"). Points in qtlab:
//   Linear, LayerNorm                   <path>:output
//   TransformerBlock                    <path>:ffn_activation      act(W_1 z + b_1), the FFN
//                                                                  intermediate after GELU / ReLU
//                                       <path>:attention_residual  the sum attention + residual
//                                       <path>:ffn_residual        the sum FFN + residual
//                                       <path>:output              the block's output
//   Attention (composed path)           <path>:scores              Q K^T / sqrt(d_h), before masks
//                                       <path>:probabilities       softmax / clipped softmax
//                                       output,
//                                                                  before dropout  [B, H, T, T]
//                                       <path>:context             P V, heads concatenated, before
//                                                                  the gate  [B, T, d]
//                                       <path>:gate                gate probabilities pi
//                                       <path>:gated_context       the output projection's input
//   models (models/*.cpp; the model is the root, path "", so its own points start with ':')
//     BERT  embeddings.word_embeddings:output, embeddings.position_embeddings:output  the lookups
//           :embedding_sum      word + position embeddings, before the embedding LayerNorm
//           :logits             the MLM head's logits (the rows the head runs on)
//     OPT   decoder.embed_tokens:output, decoder.embed_positions:output              the lookups
//           :embedding_sum      token + position embeddings
//           :logits             the lm_head's logits (loss(): the labelled rows only)
//     ViT   :embedding_sum      [CLS; patch embeddings] + position embeddings
//     LayerNorm / Linear points of the models (embedding LN, final LN, heads) as above.
// While taps are installed, Attention takes its composed path (the fused kernel never forms the
// scores and probabilities as tensors).
//
// Taps are installed per thread for the lifetime of a TapScope.
#pragma once

#include <string>

#include "tensor/tensor.h"

namespace qt::nn {

class Module;

class ActivationTaps {
 public:
  virtual ~ActivationTaps() = default;
  // Called at every point during a forward pass; returns the tensor the model continues with
  // (`x` itself to only observe).
  virtual Tensor at(const std::string& point, const Tensor& x) = 0;
};

// Installs `taps` for the current thread until destruction (scopes nest; the innermost wins).
class TapScope {
 public:
  explicit TapScope(ActivationTaps* taps);
  ~TapScope();
  TapScope(const TapScope&) = delete;
  TapScope& operator=(const TapScope&) = delete;

 private:
  ActivationTaps* previous_;
};

bool taps_active();

// x unchanged when no taps are installed; otherwise the taps' result for "<module path>:<what>".
Tensor tap(const Module& module, const char* what, const Tensor& x);

}  // namespace qt::nn
