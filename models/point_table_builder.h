// Helpers the models use to write their point table (models/model_points.h) from their own
// modules: names come from the modules' paths, so a renamed member fails to build, and a renamed
// tap point fails test_model_points (every activation row must fire in a forward pass).
#pragma once

#include <string>

#include "models/model_points.h"
#include "nn/embedding.h"
#include "nn/layer_norm.h"
#include "nn/linear.h"
#include "nn/module.h"
#include "nn/transformer_block.h"

namespace qt::models {

// Which attention tensor carries the context quantizer: BERT, ViT quantize the input of the
// output projection (the context after gating and head concatenation); OPT quantizes P V before
// the gate, and the gated context enters out_proj without re-quantization.
enum class ContextPoint { after_gate, before_gate };

struct BlockPointOptions {
  ContextPoint context = ContextPoint::after_gate;
  PointBits ffn_layer_norm_bits = PointBits::layer_norm;  // the block's second LN output
  // The HF decoder analysis set (OPT): out_proj and both LayerNorm outputs also enter the metrics,
  // and the FFN output and second LN are measured per token.
  bool sublayer_metrics = false;
};

class PointTableBuilder {
 public:
  explicit PointTableBuilder(ModelPoints& table) : table_(table) {}

  // A table with no rows yet, for a model of `family` with `layers` blocks of `heads` heads.
  static ModelPoints empty_table(const char* family, int64_t layers, int64_t heads);
  // "<module path>:<what>", the tap point name of nn::tap(module, what, x).
  static std::string tap_point(const nn::Module& module, const char* what);
  // "<module path>.<parameter>".
  static std::string parameter(const nn::Module& module, const char* name);

  ModelPoint& weight(const std::string& name, int64_t layer = -1);
  ModelPoint& activation(const std::string& name, int64_t layer = -1);
  ModelPoint& analysed(const std::string& name, int64_t layer, AnalysisRole role);

  // Weight, then output, both quantized (the bias stays FP).
  void linear(const nn::Linear& layer, int64_t index = -1, bool in_head = false);
  // Gamma quantized (beta FP), output quantized with `bits`.
  ModelPoint& layer_norm(const nn::LayerNorm& norm, PointBits bits, int64_t index = -1,
                         bool in_head = false);
  // A token table tied to the head (with an FP head its lookups are quantized instead), a position
  // table, and their sum ":embedding_sum" of `model`.
  void text_embeddings(const nn::Embedding& tokens, const nn::Embedding& positions,
                       const nn::Module& model);
  // One transformer block, in its forward order (post-LN or pre-LN).
  void block(const nn::TransformerBlock& block, int64_t index, const BlockPointOptions& options);

 private:
  ModelPoint& row(const std::string& name, PointKind kind, int64_t layer);
  ModelPoints& table_;
};

}  // namespace qt::models
