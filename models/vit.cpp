#include "models/vit.h"

#include <string>

#include "autograd/functions.h"
#include "models/point_table_builder.h"
#include "nn/activation_tap.h"
#include "nn/cross_entropy.h"
#include "tensor/error.h"
#include "tensor/shape.h"

namespace qt::models {

int64_t Vit::num_patches() const {
  const int64_t side = config.image_size / config.patch_size;
  return side * side;
}

int64_t Vit::patch_dim() const {
  return config.patch_size * config.patch_size * config.channels;
}

Vit::Vit(const ModelConfig& c, uint64_t seed) : Model(c, seed) {
  QT_CHECK(c.image_size % c.patch_size == 0, "vit: patch_size {} does not divide image_size {}",
           c.patch_size, c.image_size);
  nn::InitRng rng{seed, 0};
  patch_embedding = register_module_at(
      "patch_embedding", std::make_shared<nn::Linear>(patch_dim(), c.hidden, true, rng));
  if (c.patch_layer_norm)
    patch_layer_norm = register_module_at(
        "patch_layer_norm", std::make_shared<nn::LayerNorm>(c.hidden, c.layer_norm_eps));
  cls_token = register_parameter_at("cls_token", rng.normal({1, 1, c.hidden}, c.init_std));
  position_embeddings = register_parameter_at(
      "position_embeddings", rng.normal({1, num_patches() + 1, c.hidden}, c.init_std));
  for (int64_t l = 0; l < c.layers; ++l) {
    auto block = std::make_shared<nn::TransformerBlock>(block_options(c, l), dropout_state, rng);
    layers.push_back(register_module_at("layers." + std::to_string(l), block));
  }
  final_layer_norm =
      register_module_at("layer_norm", std::make_shared<nn::LayerNorm>(c.hidden, c.layer_norm_eps));
  classifier =
      register_module_at("head", std::make_shared<nn::Linear>(c.hidden, c.num_classes, true, rng));
  // timm-style init: N(0, init_std = 0.02) (timm truncates at 2 std) for the CLS token, the
  // positions, the FFN and the head, zero biases; the patch embedding keeps the default (timm's
  // conv init: U(+-1/sqrt(fan_in))), attention as nn/attention.h.
  for (const auto& block : layers) {
    for (const auto& linear : {block->ffn_in, block->ffn_out}) {
      init_normal(linear->weight, c.init_std, rng);
      init_zeros(linear->bias);
    }
  }
  init_normal(classifier->weight, c.init_std, rng);
  init_zeros(classifier->bias);
}

ModelPoints Vit::points() const {
  using B = PointTableBuilder;
  ModelPoints table = B::empty_table("vit", config.layers, config.heads);
  PointTableBuilder add(table);
  // The official code has no ViT; the placement follows BERT by analogy [inferred].
  add.linear(*patch_embedding);  // the stride-p convolution
  if (patch_layer_norm) add.layer_norm(*patch_layer_norm, PointBits::layer_norm);
  add.weight("cls_token");
  add.weight("position_embeddings");
  add.activation(B::tap_point(*this, "embedding_sum"));  // [CLS; patches] + positions
  BlockPointOptions block;
  block.context = ContextPoint::after_gate;
  for (size_t l = 0; l < layers.size(); ++l) add.block(*layers[l], static_cast<int64_t>(l), block);
  add.layer_norm(*final_layer_norm, PointBits::final_layer_norm);
  // The classifier: quantized by default ("all weights and activations ... except the final
  // linear layer for BERT and OPT").
  add.linear(*classifier, -1, /*in_head=*/true);

  GraphDescription& graph = table.graph;
  graph.image = true;
  graph.images = B::tap_point(*this, "images");
  graph.patch_linear = patch_embedding->path();
  if (patch_layer_norm) graph.patch_layer_norm = patch_layer_norm->path();
  graph.cls_token = "cls_token";
  graph.position_table = "position_embeddings";
  graph.embedding_sum = B::tap_point(*this, "embedding_sum");
  graph.final_layer_norm = final_layer_norm->path();
  graph.first_token = true;
  graph.decoder_module = classifier->path();
  graph.decoder_weight = B::parameter(*classifier, "weight");
  graph.decoder_bias = B::parameter(*classifier, "bias");
  graph.logits = B::tap_point(*classifier, "output");

  AnalysisDescription& analysis = table.analysis;
  analysis.kurtosis_batches = -1;
  analysis.image_positions = true;
  HeadlineDefinition& headline = analysis.headline;
  const auto block_outputs = points_with_role(table, AnalysisRole::block_output);
  headline.extra_max_inf_norms = {
      {"max_ffn_output_inf_norm", points_with_role(table, AnalysisRole::ffn_output)}};
  headline.max_inf_norm_points = block_outputs;
  headline.max_inf_norm_definition = "max over the block outputs";
  headline.kurtosis_points = block_outputs;
  headline.kurtosis_definition = "mean over the block outputs";
  table.quantization.head_quantized = true;
  return table;
}

Tensor Vit::encode(const Tensor& patches) const {
  QT_CHECK(patches.defined(), "vit: the batch has no images");
  QT_CHECK(patches.dim() == 3 && patches.size(0) >= 1 && patches.size(1) == num_patches() &&
               patches.size(2) == patch_dim() && patches.dtype() == DType::f32,
           "vit: images must be patchified f32 [B, {}, {}] ({}x{} image, {}x{} patches, {} "
           "channels), got {} {}",
           num_patches(), patch_dim(), config.image_size, config.image_size, config.patch_size,
           config.patch_size, config.channels, dtype_name(patches.dtype()),
           shape_str(patches.shape()));
  const int64_t B = patches.size(0);
  // ":images", the patchified input (not quantized in the simulation; its range gives the
  // integer engine its input grid).
  Tensor x = patch_embedding->forward(nn::tap(*this, "images", patches));
  if (patch_layer_norm) x = patch_layer_norm->forward(x);
  x = qt::cat({qt::expand(cls_token, {B, 1, config.hidden}), x}, 1);
  // The embedding sum [CLS; patches] + positions is the activation tap point ":embedding_sum".
  x = nn::tap(*this, "embedding_sum", qt::add(x, position_embeddings));
  for (const auto& block : layers) x = block->forward(x);
  return final_layer_norm->forward(x);
}

Tensor Vit::logits(const Batch& batch) const {
  return head_logits(encode(batch.images));
}

Tensor Vit::head_logits(const Tensor& hidden) const {
  QT_CHECK(hidden.defined() && hidden.dim() == 3 && hidden.size(2) == config.hidden,
           "vit: head_logits takes hidden states [B, N+1, {}], got {}", config.hidden,
           hidden.defined() ? shape_str(hidden.shape()) : std::string("nothing"));
  return classifier->forward(qt::select(hidden, 1, 0));
}

Tensor Vit::loss(const Batch& batch, double label_smoothing) const {
  QT_CHECK(batch.labels.defined(), "vit: the batch has no labels");
  const Tensor scores = logits(batch);
  QT_CHECK(batch.labels.dtype() == DType::i64 && batch.labels.dim() == 1 &&
               batch.labels.size(0) == scores.size(0),
           "vit: labels must be i64 [B] = [{}], got {} {}", scores.size(0),
           dtype_name(batch.labels.dtype()), shape_str(batch.labels.shape()));
  return nn::cross_entropy(scores, batch.labels, kIgnoreIndex, label_smoothing);
}

}  // namespace qt::models
