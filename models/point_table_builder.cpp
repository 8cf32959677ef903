#include "models/point_table_builder.h"

#include "models/model_points.h"
#include "tensor/error.h"

namespace qt::models {

std::string PointTableBuilder::tap_point(const nn::Module& module, const char* what) {
  return module.path() + ":" + what;
}

std::string PointTableBuilder::parameter(const nn::Module& module, const char* name) {
  return module.path().empty() ? std::string(name) : module.path() + "." + name;
}

ModelPoints PointTableBuilder::empty_table(const char* family, int64_t layers, int64_t heads) {
  ModelPoints table;
  table.family = family;
  table.layers = layers;
  table.heads = heads;
  return table;
}

ModelPoint& PointTableBuilder::row(const std::string& name, PointKind kind, int64_t layer) {
  ModelPoint p;
  p.name = name;
  p.kind = kind;
  p.layer = layer;
  table_.points.push_back(p);
  return table_.points.back();
}

ModelPoint& PointTableBuilder::weight(const std::string& name, int64_t layer) {
  ModelPoint& p = row(name, PointKind::weight, layer);
  p.quantized = true;
  return p;
}

ModelPoint& PointTableBuilder::activation(const std::string& name, int64_t layer) {
  ModelPoint& p = analysed(name, layer, AnalysisRole::none);
  p.quantized = true;
  return p;
}

ModelPoint& PointTableBuilder::analysed(const std::string& name, int64_t layer, AnalysisRole role) {
  ModelPoint& p = row(name, PointKind::activation, layer);
  p.role = role;
  return p;
}

void PointTableBuilder::linear(const nn::Linear& layer, int64_t index, bool in_head) {
  weight(parameter(layer, "weight"), index).in_head = in_head;
  activation(tap_point(layer, "output"), index).in_head = in_head;
}

ModelPoint& PointTableBuilder::layer_norm(const nn::LayerNorm& norm, PointBits bits, int64_t index,
                                          bool in_head) {
  weight(parameter(norm, "weight"), index).in_head = in_head;
  ModelPoint& output = activation(tap_point(norm, "output"), index);
  output.bits = bits;
  output.in_head = in_head;
  return output;
}

void PointTableBuilder::text_embeddings(const nn::Embedding& tokens, const nn::Embedding& positions,
                                        const nn::Module& model) {
  weight(parameter(tokens, "weight")).tied_lookup_point = tap_point(tokens, "output");
  weight(parameter(positions, "weight"));
  activation(tap_point(model, "embedding_sum"));
}

void PointTableBuilder::block(const nn::TransformerBlock& b, int64_t l,
                              const BlockPointOptions& options) {
  const nn::Attention& attention = *b.attention;
  const bool metrics = options.sublayer_metrics;
  const auto attention_layer_norm = [&] {
    ModelPoint& p = layer_norm(*b.attention_layer_norm, PointBits::layer_norm, l);
    p.role = AnalysisRole::attention_layer_norm;
    p.metrics = metrics;
  };
  const auto ffn_layer_norm = [&] {
    ModelPoint& p = layer_norm(*b.ffn_layer_norm, options.ffn_layer_norm_bits, l);
    p.role = AnalysisRole::ffn_layer_norm;
    p.metrics = p.rows_per_token = metrics;
  };
  const bool pre_layer_norm = b.options.pre_layer_norm;

  if (pre_layer_norm) attention_layer_norm();
  // Attention: the gate reads the block's input beside the projections (gates stay FP).
  if (attention.gate) analysed(tap_point(attention, "gate"), l, AnalysisRole::gate);
  linear(*attention.query, l);
  linear(*attention.key, l);
  linear(*attention.value, l);
  table_.points.back().role = AnalysisRole::value;
  activation(tap_point(attention, "scores"), l);  // Q K^T / sqrt(d_h), before the mask
  activation(tap_point(attention, "probabilities"), l).role = AnalysisRole::probabilities;
  activation(tap_point(attention,
                       options.context == ContextPoint::after_gate ? "gated_context" : "context"),
             l);
  linear(*attention.output, l);
  ModelPoint& out_proj = table_.points.back();
  out_proj.role = AnalysisRole::attention_output;
  out_proj.metrics = metrics;
  activation(tap_point(b, "attention_residual"), l);
  if (!pre_layer_norm) attention_layer_norm();

  // FFN: the input dense and its activation are fused, so only the activation is quantized.
  if (pre_layer_norm) ffn_layer_norm();
  weight(parameter(*b.ffn_in, "weight"), l);
  activation(tap_point(b, "ffn_activation"), l);
  linear(*b.ffn_out, l);
  ModelPoint& ffn_output = table_.points.back();
  ffn_output.role = AnalysisRole::ffn_output;
  ffn_output.metrics = true;
  ffn_output.rows_per_token = metrics;
  ModelPoint& residual = activation(tap_point(b, "ffn_residual"), l);
  residual.role = AnalysisRole::residual_sum;
  residual.metrics = true;
  if (!pre_layer_norm) ffn_layer_norm();
  // The block output: the same tensor as the second LN's output (post-LN) or as the FFN residual
  // (pre-LN), so it carries no second quantizer.
  ModelPoint& output = analysed(tap_point(b, "output"), l, AnalysisRole::block_output);
  output.metrics = true;
}

const char* analysis_role_name(AnalysisRole role) {
  switch (role) {
    case AnalysisRole::none:
      return "none";
    case AnalysisRole::ffn_output:
      return "ffn_output";
    case AnalysisRole::residual_sum:
      return "residual_sum";
    case AnalysisRole::block_output:
      return "block_output";
    case AnalysisRole::attention_output:
      return "attention_output";
    case AnalysisRole::attention_layer_norm:
      return "attention_layer_norm";
    case AnalysisRole::ffn_layer_norm:
      return "ffn_layer_norm";
    case AnalysisRole::probabilities:
      return "probabilities";
    case AnalysisRole::gate:
      return "gate";
    case AnalysisRole::value:
      return "value";
    case AnalysisRole::final_layer_norm:
      return "final_layer_norm";
  }
  return "?";
}

const ModelPoint& point_with_role(const ModelPoints& table, int64_t layer, AnalysisRole role) {
  for (const ModelPoint& p : table.points)
    if (p.layer == layer && p.role == role) return p;
  fail("model points: the {} model has no {} point in layer {}", table.family,
       analysis_role_name(role), layer);
}

std::vector<std::string> points_with_role(const ModelPoints& table, AnalysisRole role) {
  std::vector<std::string> names;
  for (const ModelPoint& p : table.points)
    if (p.role == role) names.push_back(p.name);
  return names;
}

}  // namespace qt::models
