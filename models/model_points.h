// The points of a model that post-training quantization and the outlier analysis look at, as one
// table in graph order that each model gives about itself (Model::points(), built in models/bert,
// opt, vit). quant/ iterates over this table and never names a model class or a family: the
// simulated W8A8 setup (quant/quantization_setup.h), the outlier analysis
// (quant/outlier_analysis.h) and the integer reference all read the same rows.
//
// A row is either
//   a weight      `name` is a parameter name ("encoder.layer.0.attention.query.weight"), or
//   an activation `name` is an activation tap point ("encoder.layer.0.attention.query:output",
//                 nn/activation_tap.h): the tensor the module passes to tap(*module, what, x).
// Rows come in the order the forward pass produces them (a weight just before the output of the
// op that reads it), so a consumer that walks the table walks the graph. Only points that are
// quantized or analysed are listed: biases, LayerNorm betas and gate parameters stay FP and are
// absent (read them from named_parameters()).
//
// Where the points are and why: docs/method.md, "Quantization points" and "Outlier metrics".
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace qt::models {

enum class PointKind { weight, activation };

// Which bit width a quantized point takes (quant::QuantizationOptions):
//   standard          weight_bits for weights, activation_bits for activations;
//   layer_norm        a LayerNorm output: layer_norm_bits (the repo's "+int16_all_LN");
//   final_layer_norm  the LayerNorm whose output feeds the head: final_layer_norm_bits
//                     ("+int16_final_LN"; BERT: the last block's output LN; OPT, ViT: the final
//                     LN). A LayerNorm's gamma keeps weight_bits.
enum class PointBits { standard, layer_norm, final_layer_norm };

// What the outlier analysis reads at a point. Per transformer layer:
//   ffn_output            W_2 act(W_1 z + b_1) + b_2 (BERT output.dense, OPT fc2)
//   residual_sum          FFN output + residual (BERT: the input of output.LayerNorm)
//   block_output          the layer's output (pre-LN: the same tensor as residual_sum)
//   attention_output      the attention output projection (OPT out_proj)
//   attention_layer_norm  the first LayerNorm's output (OPT self_attn_layer_norm)
//   ffn_layer_norm        the second LayerNorm's output (OPT final_layer_norm, BERT output LN)
//   probabilities         attention probabilities [B, H, T, T], before dropout
//   gate                  the gate's pi [B, T, H]
//   value                 the value projection x W_v^T + b_v [B, T, d] (head h: columns
//                         [h d_h, (h+1) d_h)), for the value norms of the no-op mechanism
// and model level: final_layer_norm (the decoder's final LN).
enum class AnalysisRole {
  none,
  ffn_output,
  residual_sum,
  block_output,
  attention_output,
  attention_layer_norm,
  ffn_layer_norm,
  probabilities,
  gate,
  value,
  final_layer_norm,
};

struct ModelPoint {
  std::string name;  // parameter name (weight) or tap point (activation)
  PointKind kind = PointKind::activation;
  int64_t layer = -1;  // the transformer block it belongs to; -1: embeddings, final LN, head

  // Quantization. A quantized point gets a fake quantizer: weights symmetric per-tensor,
  // activations asymmetric per-tensor with a running range.
  bool quantized = false;
  PointBits bits = PointBits::standard;
  // Part of the head: quantized only when QuantizationOptions::head_quantized is set.
  bool in_head = false;
  // A table tied to the head (BERT decoder, OPT lm_head): while the head stays FP, the table stays
  // FP in the model and its lookups are quantized at this tap point instead, with the table's own
  // quantizer (gathering rows commutes with a per-tensor quantizer). Empty for untied weights.
  std::string tied_lookup_point;

  // Analysis.
  AnalysisRole role = AnalysisRole::none;
  bool metrics = false;         // its per-row inf norm and kurtosis enter the outlier metrics
  bool rows_per_token = false;  // metrics rows are tokens [B·T, d] (HF runs OPT fc2 / LN so)
                                // instead of sequences [B, T·d]
};

// A set of tap points whose largest average inf norm is one headline number.
struct NormSet {
  std::string key;  // the name in quant::Headline::extra
  std::vector<std::string> points;
};

// How the Table 2 columns are computed from the per-point metrics (docs/method.md, "Outlier
// metrics"). Point lists are in the order their values are averaged (the order fixes the last
// bits of the mean).
struct HeadlineDefinition {
  std::vector<NormSet> extra_max_inf_norms;  // reported beside the headline
  std::vector<std::string> max_inf_norm_points;
  std::string max_inf_norm_definition;
  std::vector<std::string> kurtosis_points;
  std::string kurtosis_definition;
};

// Model-level choices of the analysis.
struct AnalysisDescription {
  // Batches (from 0) whose rows enter the kurtosis averages; -1: all (the repo's validate
  // scripts: BERT batch_idx <= 256, OPT <= 100).
  int64_t kurtosis_batches = -1;
  // Images: rows are patch positions, position 0 is the CLS token, and it is the delimiter whose
  // attention mass is measured. Text: rows are tokens, the delimiters are token ids.
  bool image_positions = false;
  // Text delimiters: these special ids, plus every vocabulary token whose text stripped of white
  // space is one of `delimiter_texts` (without a vocabulary: the byte tokens of the one-character
  // texts).
  std::vector<int64_t> delimiter_special_ids;
  std::vector<std::string> delimiter_texts;
  HeadlineDefinition headline;
};

// What W8A8 uses by default for this model (the paper and its repo, docs/method.md
// "Quantization settings").
struct QuantizationDefaults {
  bool mse_weights = false;            // MSE-grid weight ranges (OPT) instead of min-max
  double activation_percentile = 0.0;  // > 0: running percentile ranges (OPT: 99.999)
  bool head_quantized = false;         // ViT: true; BERT, OPT: the head stays FP
};

// The parts of the graph the point rows alone do not spell out, for the integer engine
// (quant/integer_model.h), which rebuilds the forward pass from this table:
//   text embedding   a token table (the weight row with a tied lookup, or `token_table`) and a
//                    position table looked up at positions position_offset .. position_offset+T-1,
//                    summed at `embedding_sum`, optionally followed by a LayerNorm (BERT);
//   image embedding  the patch linear (`patch_linear`, its input is the tap point `images`), an
//                    optional LayerNorm, then [cls_token; patches] + position table at
//                    `embedding_sum` (ViT);
//   blocks           models::block_options(config, l) says pre- or post-LN, the activation, the
//                    attention variant; the rows name the tensors;
//   final LayerNorm  `final_layer_norm` ("" for BERT, whose last block ends in its LayerNorm);
//   head             first_token: the head reads position 0 (ViT's CLS); transform +
//                    transform_layer_norm: BERT's dense + GELU + LayerNorm; the decoder's weight
//                    and bias ("" for none) and the logits tap point.
struct GraphDescription {
  bool image = false;
  std::string token_table, position_table, embedding_sum, embedding_layer_norm;
  int64_t position_offset = 0;
  std::string images, patch_linear, patch_layer_norm, cls_token;
  std::string final_layer_norm;
  bool first_token = false;
  std::string transform, transform_layer_norm;  // modules ("head.transform"), "" for none
  std::string decoder_weight, decoder_bias, decoder_module, logits;
};

struct ModelPoints {
  std::string family;  // "bert", "opt", "vit": names the model in messages and result files
  int64_t layers = 0, heads = 0;
  std::vector<ModelPoint> points;  // graph order
  GraphDescription graph;
  AnalysisDescription analysis;
  QuantizationDefaults quantization;
};

const char* analysis_role_name(AnalysisRole role);
// The row with `role` in `layer` (-1: model level); throws naming the role when there is none.
const ModelPoint& point_with_role(const ModelPoints& points, int64_t layer, AnalysisRole role);
// The names of the rows with `role`, in layer (graph) order.
std::vector<std::string> points_with_role(const ModelPoints& points, AnalysisRole role);

}  // namespace qt::models
