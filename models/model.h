// The models qtlab trains — BERT (masked LM), OPT (causal LM), ViT (image classification) — behind
// one small interface the trainer, evaluator and quantizer use. Layouts and inits follow
// paper-spec §3; every attention option of nn/attention.h is selectable through ModelConfig.
#pragma once

#include <cstdint>
#include <memory>
#include <string>

#include "models/config.h"
#include "nn/attention.h"
#include "nn/dropout.h"
#include "nn/init.h"
#include "nn/module.h"
#include "nn/transformer_block.h"
#include "tensor/tensor.h"

namespace qt::models {

// One batch. Text: input_ids i64 [B, T]; labels i64 [B, T] with -100 where no loss is taken (BERT:
// unmasked positions; OPT: the last position). ViT: images f32 [B, N, patch*patch*C] (already
// patchified, data/), labels i64 [B].
struct Batch {
  Tensor input_ids;
  Tensor images;
  Tensor labels;
};

constexpr int64_t kIgnoreIndex = -100;

class Model : public nn::Module {
 public:
  Model(const ModelConfig& config, uint64_t seed);

  // Mean cross-entropy over the batch's labelled positions (scalar).
  virtual Tensor loss(const Batch& batch, double label_smoothing = 0.0) const = 0;
  // Text: logits [B, T, V] at every position; ViT: [B, classes].
  virtual Tensor logits(const Batch& batch) const = 0;
  // Number of labelled positions (the denominator of loss()).
  static int64_t count_labels(const Tensor& labels);

  ModelConfig config;
  // Shared by every dropout site: the trainer sets `step` before each forward (nn/dropout.h).
  std::shared_ptr<nn::DropoutState> dropout_state;
};

std::shared_ptr<Model> build_model(const ModelConfig& config, uint64_t seed);

// The block options of one layer from the model config (attention variant, LN placement, FFN).
nn::BlockOptions block_options(const ModelConfig& config, int64_t layer);

// Overwrites a parameter in place with N(0, std^2) draws (models re-initialise layers as HF does).
void init_normal(const Tensor& parameter, double std, nn::InitRng& rng);
void init_zeros(const Tensor& parameter);

}  // namespace qt::models
