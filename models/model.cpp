#include "models/model.h"

#include "models/bert.h"
#include "models/opt.h"
#include "models/vit.h"
#include "tensor/create.h"
#include "tensor/error.h"
#include "tensor/view.h"

namespace qt::models {

Model::Model(const ModelConfig& config, uint64_t seed)
    : config(config), dropout_state(std::make_shared<nn::DropoutState>()) {
  dropout_state->seed = seed;
}

int64_t Model::count_labels(const Tensor& labels) {
  QT_CHECK(labels.dtype() == DType::i64, "model: labels must be i64, not {}",
           dtype_name(labels.dtype()));
  const Tensor dense = ops::contiguous(labels);
  const int64_t* values = dense.data<int64_t>();
  int64_t count = 0;
  for (int64_t i = 0; i < dense.numel(); ++i) count += values[i] != kIgnoreIndex;
  return count;
}

std::shared_ptr<Model> build_model(const ModelConfig& config, uint64_t seed) {
  if (config.family == "bert") return std::make_shared<Bert>(config, seed);
  if (config.family == "opt") return std::make_shared<Opt>(config, seed);
  if (config.family == "vit") return std::make_shared<Vit>(config, seed);
  fail("model: unknown family '{}' (expected bert, opt or vit)", config.family);
}

nn::BlockOptions block_options(const ModelConfig& config, int64_t layer) {
  nn::BlockOptions block;
  nn::AttentionOptions& attention = block.attention;
  attention.hidden = config.hidden;
  attention.heads = config.heads;
  attention.softmax = nn::parse_softmax_kind(config.softmax);
  attention.gamma = config.gamma;
  attention.zeta = config.zeta;
  attention.alpha = config.alpha;
  attention.max_length =
      config.family == "vit"
          ? (config.image_size / config.patch_size) * (config.image_size / config.patch_size) + 1
          : config.max_length;
  attention.gate = nn::parse_gate_kind(config.gate);
  attention.gate_pi_init = config.gate_pi_init;
  attention.gate_mlp_hidden = config.gate_mlp_hidden;
  attention.causal = config.family == "opt";
  attention.probability_dropout = static_cast<float>(config.attention_dropout);
  block.ffn = config.ffn;
  block.activation = config.family == "opt" ? nn::Activation::relu : nn::Activation::gelu;
  block.pre_layer_norm = config.family != "bert";
  block.layer_norm_eps = config.layer_norm_eps;
  block.hidden_dropout = static_cast<float>(config.hidden_dropout);
  // Dropout stream ids: 0..15 for the embeddings and heads, 16 per block after that.
  block.dropout_layer_id = 16 + 16 * static_cast<uint64_t>(layer);
  return block;
}

void init_normal(const Tensor& parameter, double std, nn::InitRng& rng) {
  ops::copy_into(parameter, rng.normal(parameter.shape(), std, parameter.dtype()));
}

void init_zeros(const Tensor& parameter) {
  ops::copy_into(parameter, ops::zeros(parameter.shape(), parameter.dtype()));
}

}  // namespace qt::models
