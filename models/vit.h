// Vision Transformer for classification (method.md §3.3), sized for 28x28 images:
//
//   x = patches W_p^T + b_p                        ([B, N, p*p*C] -> [B, N, d]; = a stride-p conv)
//   x = LN_patch(x)                                (optional: the paper's "patch LN", Table 7)
//   x = [CLS; x] + E_pos                           ([B, N+1, d])
//   x = TransformerBlock_l(x)                      (pre-LN, GELU)
//   logits = head(LN_final(x)[:, 0])
//
// Parameter names (block names in nn/transformer_block.h):
//   patch_embedding.{weight [d, p*p*C], bias}   patch_layer_norm.{weight, bias} (if enabled)
//   cls_token [1, 1, d]   position_embeddings [1, N+1, d]   layers.<l>.*
//   layer_norm.{weight, bias} (final)           head.{weight [classes, d], bias}
// Tested against a plain-PyTorch re-statement (tools/make_model_fixtures.py,
// tests/test_models.cpp).
#pragma once

#include <memory>
#include <vector>

#include "models/model.h"
#include "nn/layer_norm.h"
#include "nn/linear.h"

namespace qt::models {

class Vit : public Model {
 public:
  Vit(const ModelConfig& config, uint64_t seed);

  Tensor loss(const Batch& batch, double label_smoothing = 0.0) const override;
  Tensor logits(const Batch& batch) const override;
  Tensor head_logits(const Tensor& hidden) const override;
  ModelPoints points() const override;
  Tensor encode(const Tensor& patches) const;  // LN_final(x_L) [B, N+1, d]

  int64_t num_patches() const;
  int64_t patch_dim() const;

  std::shared_ptr<nn::Linear> patch_embedding;
  std::shared_ptr<nn::LayerNorm> patch_layer_norm;  // null unless config.patch_layer_norm
  Tensor cls_token;                                 // [1, 1, d]
  Tensor position_embeddings;                       // [1, N+1, d]
  std::vector<std::shared_ptr<nn::TransformerBlock>> layers;
  std::shared_ptr<nn::LayerNorm> final_layer_norm;
  std::shared_ptr<nn::Linear> classifier;
};

}  // namespace qt::models
