// BERT for masked-language modelling (method.md §3.1): post-LN encoder, MLM head tied to the word
// embeddings.
//
//   h0 = Dropout(LN_emb(E_word[ids] + E_pos[0..T-1]))
//   h_l = TransformerBlock_l(h_{l-1})                 (post-LN, GELU)
//   logits = LN_head(GELU(h_L W_t^T + b_t)) E_word^T + b_dec
//
// The loss is taken only at the labelled (masked) positions; the head runs only on those rows,
// which is where most of a small model's time would otherwise go (V x d per token).
// Not modelled: token-type embeddings (every token has type 0 in the paper's pipeline, so the type
// embedding is a constant vector the position embedding absorbs) and the pooler (absent in
// BertForMaskedLM).
//
// Parameter names (HF's layout; block names in nn/transformer_block.h):
//   embeddings.word_embeddings.weight [V, d]   embeddings.position_embeddings.weight [max_length,
//   d] embeddings.layer_norm.{weight, bias}       encoder.layer.<l>.* head.transform.{weight, bias}
//   head.layer_norm.{weight, bias}     head.bias [V]
// Tested against a plain-PyTorch re-statement (tools/make_model_fixtures.py,
// tests/test_models.cpp).
#pragma once

#include <memory>
#include <vector>

#include "models/model.h"
#include "nn/embedding.h"
#include "nn/layer_norm.h"
#include "nn/linear.h"

namespace qt::models {

class Bert : public Model {
 public:
  Bert(const ModelConfig& config, uint64_t seed);

  Tensor loss(const Batch& batch, double label_smoothing = 0.0) const override;
  Tensor logits(const Batch& batch) const override;
  Tensor head_logits(const Tensor& hidden) const override;
  ModelPoints points() const override;
  // The encoder output h_L [B, T, d]. attention_mask: undefined, or [B, T] (u8/i32/i64) as HF's
  // attention_mask, nonzero = a real token, 0 = padding: padded keys get attention probability 0
  // in every layer, so the outputs at real tokens do not depend on what the padding holds. (The
  // training pipelines never pad — fixed-length blocks — so Batch carries no mask.)
  Tensor encode(const Tensor& input_ids, const Tensor& attention_mask = Tensor()) const;
  // The MLM head on hidden rows [N, d] -> logits [N, V].
  Tensor head(const Tensor& hidden_rows) const;

  std::shared_ptr<nn::Embedding> word_embeddings, position_embeddings;
  std::shared_ptr<nn::LayerNorm> embedding_layer_norm;
  std::shared_ptr<nn::Dropout> embedding_dropout;
  std::vector<std::shared_ptr<nn::TransformerBlock>> layers;
  std::shared_ptr<nn::Linear> head_transform;
  std::shared_ptr<nn::LayerNorm> head_layer_norm;
  Tensor head_bias;  // b_dec [V]
};

// Rows of [N, ...] where labels != -100, and those labels: the positions a loss is taken at.
struct LabelledRows {
  Tensor index;   // i64 [n]: flat positions into the B*T rows
  Tensor labels;  // i64 [n]
};
LabelledRows labelled_rows(const Tensor& labels);

}  // namespace qt::models
