// OPT, a pre-LN decoder for causal language modelling (method.md §3.2):
//
//   h0 = E_tok[ids] + E_pos[pos + 2]              (learned positions with OPT's offset of 2)
//   h_l = TransformerBlock_l(h_{l-1})            (pre-LN, causal attention, ReLU FFN)
//   logits = LN_final(h_L) E_tok^T               (tied, no bias)
//
// Labels come from data/ already shifted (label at t = token at t+1, -100 at the end), so the
// loss is a plain cross-entropy over the labelled positions.
//
// Parameter names (HF's layout; block names in nn/transformer_block.h):
//   decoder.embed_tokens.weight [V, d]   decoder.embed_positions.weight [max_length + 2, d]
//   decoder.layers.<l>.*                 decoder.final_layer_norm.{weight, bias}
// Tested against a plain-PyTorch re-statement (tools/make_model_fixtures.py,
// tests/test_models.cpp).
#pragma once

#include <memory>
#include <vector>

#include "models/model.h"
#include "nn/embedding.h"
#include "nn/layer_norm.h"

namespace qt::models {

class Opt : public Model {
 public:
  Opt(const ModelConfig& config, uint64_t seed);

  Tensor loss(const Batch& batch, double label_smoothing = 0.0) const override;
  Tensor logits(const Batch& batch) const override;
  Tensor head_logits(const Tensor& hidden) const override;
  ModelPoints points() const override;
  Tensor decode(const Tensor& input_ids) const;  // LN_final(h_L) [B, T, d]

  static constexpr int64_t kPositionOffset = 2;

  std::shared_ptr<nn::Embedding> token_embeddings, position_embeddings;
  std::vector<std::shared_ptr<nn::TransformerBlock>> layers;
  std::shared_ptr<nn::LayerNorm> final_layer_norm;
};

}  // namespace qt::models
