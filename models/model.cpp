#include "models/model.h"

#include "models/bert.h"
#include "models/opt.h"
#include "models/vit.h"
#include "tensor/create.h"
#include "tensor/error.h"
#include "tensor/shape.h"
#include "tensor/view.h"

namespace qt::models {

Model::Model(const ModelConfig& config, uint64_t seed)
    : config(config), dropout_state(std::make_shared<nn::DropoutState>()) {
  dropout_state->seed = seed;
}

ModuleGroup& ModuleGroup::group(const std::string& name) {
  for (const auto& [existing, child] : groups_)
    if (existing == name) return *child;
  auto child = add(name, std::make_shared<ModuleGroup>());
  groups_.emplace_back(name, child);
  return *child;
}

ModuleGroup& Model::group_at(const std::string& path) {
  // "a.b.c" -> components a, b, c: a is a child group of the model, b of a, c of b.
  std::vector<std::string> parts;
  for (size_t begin = 0;;) {
    const size_t end = path.find('.', begin);
    parts.push_back(path.substr(begin, end == std::string::npos ? end : end - begin));
    if (end == std::string::npos) break;
    begin = end + 1;
  }
  ModuleGroup* group = nullptr;
  for (const auto& [existing, child] : groups_)
    if (existing == parts[0]) group = child.get();
  if (group == nullptr) {
    auto child = register_module(parts[0], std::make_shared<ModuleGroup>());
    groups_.emplace_back(parts[0], child);
    group = child.get();
  }
  for (size_t i = 1; i < parts.size(); ++i) group = &group->group(parts[i]);
  return *group;
}

Tensor Model::register_parameter_at(const std::string& path, Tensor value) {
  const size_t dot = path.rfind('.');
  if (dot == std::string::npos) return register_parameter(path, std::move(value));
  return group_at(path.substr(0, dot)).add_parameter(path.substr(dot + 1), std::move(value));
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
  switch (config.family) {
    case Family::bert:
      return std::make_shared<Bert>(config, seed);
    case Family::opt:
      return std::make_shared<Opt>(config, seed);
    case Family::vit:
      return std::make_shared<Vit>(config, seed);
  }
  fail("model: unknown family {}", static_cast<int>(config.family));
}

void check_input_ids(const Tensor& input_ids, const ModelConfig& config, const char* model) {
  QT_CHECK(input_ids.defined(), "{}: the batch has no input_ids", model);
  QT_CHECK(input_ids.dim() == 2 && input_ids.dtype() == DType::i64,
           "{}: input_ids must be i64 [B, T], got {} {}", model, dtype_name(input_ids.dtype()),
           shape_str(input_ids.shape()));
  const int64_t T = input_ids.size(1);
  QT_CHECK(input_ids.size(0) >= 1 && T >= 1, "{}: input_ids {} is empty", model,
           shape_str(input_ids.shape()));
  QT_CHECK(T <= config.max_length, "{}: sequence length {} exceeds model.max_length = {}", model, T,
           config.max_length);
  const Tensor dense = ops::contiguous(input_ids);
  const int64_t* ids = dense.data<int64_t>();
  for (int64_t i = 0; i < dense.numel(); ++i) {
    QT_CHECK(ids[i] >= 0 && ids[i] < config.vocab_size,
             "{}: input_ids {} holds token id {} at flat position {}, outside the vocabulary "
             "[0, model.vocab_size = {})",
             model, shape_str(input_ids.shape()), ids[i], i, config.vocab_size);
  }
}

void check_text_labels(const Tensor& labels, const Tensor& input_ids, const char* model) {
  QT_CHECK(labels.defined(), "{}: the batch has no labels", model);
  QT_CHECK(labels.dtype() == DType::i64 && labels.shape() == input_ids.shape(),
           "{}: labels must be i64 with the shape of input_ids {}, got {} {}", model,
           shape_str(input_ids.shape()), dtype_name(labels.dtype()), shape_str(labels.shape()));
}

nn::BlockOptions block_options(const ModelConfig& config, int64_t layer) {
  nn::BlockOptions block;
  nn::AttentionOptions& attention = block.attention;
  attention.hidden = config.hidden;
  attention.heads = config.heads;
  // The alpha / T form needs the sequence length: text T, ViT the patches plus CLS.
  const int64_t length =
      config.family == Family::vit
          ? (config.image_size / config.patch_size) * (config.image_size / config.patch_size) + 1
          : config.max_length;
  attention.softmax = nn::resolve_softmax_clip(config.softmax, config.gamma, config.zeta,
                                               config.alpha, length, config.alpha_per_row);
  attention.sink = nn::attention_sink_of(config.softmax);
  attention.gate = config.gate;
  attention.gate_pi_init = config.gate_pi_init;
  attention.gate_mlp_hidden = config.gate_mlp_hidden;
  attention.causal = config.family == Family::opt;
  attention.probability_dropout = static_cast<float>(config.attention_dropout);
  block.ffn = config.ffn;
  block.activation = config.family == Family::opt ? nn::Activation::relu : nn::Activation::gelu;
  block.pre_layer_norm = config.family != Family::bert;
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
