// The models qtlab trains — BERT (masked LM), OPT (causal LM), ViT (image classification) — behind
// one small interface the trainer, evaluator and quantizer use. Layouts and inits follow
// method.md §3; every attention option of nn/attention.h is selectable through ModelConfig.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "models/config.h"
#include "models/model_points.h"
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

// A module that only groups others under a name. nn::Module names contain no '.', so a model that
// wants dotted, HF-like paths ("encoder.layer.3.ffn_in.weight") registers the block as child "3"
// of the group "layer" of the group "encoder" (Model::register_module_at does the walking).
class ModuleGroup : public nn::Module {
 public:
  // The child group `name`, created and registered on first use.
  ModuleGroup& group(const std::string& name);
  template <typename M>
  std::shared_ptr<M> add(const std::string& name, std::shared_ptr<M> child) {
    return register_module(name, std::move(child));
  }
  Tensor add_parameter(const std::string& name, Tensor value) {
    return register_parameter(name, std::move(value));
  }

 private:
  std::vector<std::pair<std::string, std::shared_ptr<ModuleGroup>>> groups_;
};

class Model : public nn::Module {
 public:
  Model(const ModelConfig& config, uint64_t seed);

  // Mean cross-entropy over the batch's labelled positions (scalar).
  virtual Tensor loss(const Batch& batch, double label_smoothing = 0.0) const = 0;
  // Text: logits [B, T, V] at every position; ViT: [B, classes].
  virtual Tensor logits(const Batch& batch) const = 0;
  // The head alone, on the hidden states the encoder ends with (BERT: the last block's output;
  // OPT, ViT: the final LayerNorm's output), [B, T, d] -> what logits() returns. The integer
  // engine runs everything before it on integers and, where the paper keeps the head in floating
  // point, hands its dequantized output to this.
  virtual Tensor head_logits(const Tensor& hidden) const = 0;
  // The model's quantization and analysis points in graph order (models/model_points.h).
  virtual ModelPoints points() const = 0;
  // Number of labelled positions (the denominator of loss()).
  static int64_t count_labels(const Tensor& labels);

  ModelConfig config;
  // Shared by every dropout site: the trainer sets `step` before each forward (nn/dropout.h).
  std::shared_ptr<nn::DropoutState> dropout_state;

 protected:
  // Register a child module / a parameter under a dotted path ("encoder.layer.3",
  // "head.bias"): every component but the last names a ModuleGroup, created on first use, so the
  // parameter names come out as the path plus the child's own names.
  template <typename M>
  std::shared_ptr<M> register_module_at(const std::string& path, std::shared_ptr<M> child) {
    const size_t dot = path.rfind('.');
    if (dot == std::string::npos) return register_module(path, std::move(child));
    return group_at(path.substr(0, dot)).add(path.substr(dot + 1), std::move(child));
  }
  Tensor register_parameter_at(const std::string& path, Tensor value);

 private:
  ModuleGroup& group_at(const std::string& path);  // "a.b.c": group c of group b of group a
  std::vector<std::pair<std::string, std::shared_ptr<ModuleGroup>>> groups_;
};

std::shared_ptr<Model> build_model(const ModelConfig& config, uint64_t seed);

// Input checks shared by the text models; `model` names the model in the message ("bert", "opt").
// input_ids: defined, i64 [B, T] with B >= 1, 1 <= T <= config.max_length and every id in
// [0, config.vocab_size). labels: defined, i64, the shape of input_ids.
void check_input_ids(const Tensor& input_ids, const ModelConfig& config, const char* model);
void check_text_labels(const Tensor& labels, const Tensor& input_ids, const char* model);

// The block options of one layer from the model config (attention variant, LN placement, FFN).
nn::BlockOptions block_options(const ModelConfig& config, int64_t layer);

// Overwrites a parameter in place with N(0, std^2) draws (models re-initialise layers as HF does).
void init_normal(const Tensor& parameter, double std, nn::InitRng& rng);
void init_zeros(const Tensor& parameter);

}  // namespace qt::models
