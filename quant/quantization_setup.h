// What a W`b`A`b` post-training quantization of a qtlab model quantizes (method.md §4.3, §4.4):
// the activation points (nn/activation_tap.h names) that get an asymmetric per-tensor fake
// quantizer with a running min-max range, and the weights that get a symmetric per-tensor one.
// Everything not listed stays in floating point.
//
// The setup is the quantized rows of the model's own point table (Model::points(),
// models/model_points.h), which each model writes from the §4.3 tables. Per transformer block:
//
//   point                               BERT (post-LN)            OPT / ViT (pre-LN)
//   <block>.attention.{query,key,value}:output   Q, K, V projection outputs
//   <block>.attention:scores            Q K^T / sqrt(d_h), before the mask is added
//   <block>.attention:probabilities     softmax / clipped softmax output, before dropout
//   <block>.attention:gated_context     BERT, ViT: the context after gating and head
//                                       concatenation = the input of the output projection
//   <block>.attention:context           OPT: P V before the gate (the gated context then enters
//                                       out_proj without re-quantization)
//   <block>.attention.output:output     the attention output projection
//   <block>:attention_residual          the residual sum after attention
//   <block>.attention_layer_norm:output LN_1 (BERT)                self_attn_layer_norm (OPT)
//   <block>:ffn_activation              after GELU / ReLU (the FFN input dense and its
//                                       activation are fused: the pre-activation is NOT quantized)
//   <block>.ffn_out:output              the FFN output dense
//   <block>:ffn_residual                the residual sum after the FFN
//   <block>.output_layer_norm:output    LN_2 (BERT)                final_layer_norm of the block
//   not quantized: <block>.ffn_in:output (fused with the activation), <block>:output (the same
//   tensor as LN_2's output in BERT and as the FFN residual in pre-LN), the gate (:gate) — gates
//   stay FP.
//   weights: query, key, value, output, ffn_in, ffn_out weights and both LayerNorm gammas
//   (LayerNorm betas, every bias and the gate parameters stay FP).
//
// Model level:
//   BERT  :embedding_sum (word + position [+ type: a constant the position table absorbs], so
//         the paper's two sums (word + type), (+ position) are one point here),
//         embeddings.layer_norm:output;
//         tables word/position and the embedding LN gamma. The MLM head (transform, GELU, LN,
//         tied decoder) stays FP (head_quantized = false, the repo); with head_quantized the
//         transform and head LN get weight + output quantizers and the logits (":logits") one.
//   OPT   :embedding_sum (tokens + positions), decoder.final_layer_norm:output (its bits:
//         final_layer_norm_bits, the repo's "+int16_final_LN"); tables and gammas. lm_head:
//         FP by default ("fp32_head", as the paper); head_quantized = the repo's "all" setup:
//         the tied weight and the logits (":logits") are quantized.
//   ViT   (no code in the repo; placement inferred by analogy — see method.md §4.3):
//         patch_embedding:output (the stride-p convolution), patch_layer_norm:output if present,
//         :embedding_sum ([CLS; patches] + positions), layer_norm:output (final LN),
//         head:output (the classifier: quantized by default, the paper's "all weights and
//         activations ... are quantized, except the final linear layer for BERT and OPT");
//         weights: patch embedding, patch LN gamma, cls_token, position_embeddings, block
//         weights, final LN gamma, classifier weight. The context point is the gated context
//         (as BERT: the output projection's input is quantized) [inferred].
//
// Tied tables. The text heads reuse the token table (BERT decoder, OPT lm_head). In the repo weight
// quantizers act on the fly, so a table can be quantized for the lookup while the FP head reads
// the FP parameter. Here weights are quantized in place, so a table tied to an FP head stays FP in
// the model and its lookups are quantized instead, at the point "<table>:output" with the table's
// own quantizer: gathering rows commutes with an elementwise per-tensor quantizer, so this is
// exactly a lookup into the quantized table. (WeightPoint::lookup_point names it.)
//
// Bits: weight_bits for every weight; activation_bits for every point except LayerNorm outputs,
// which use layer_norm_bits (repo "+int16_all_LN") and, for the LayerNorm that feeds the head,
// final_layer_norm_bits (repo "+int16_final_LN"; BERT: the last block's output LN; OPT, ViT: the
// final LN). Only the LN output quantizer changes bits, its gamma keeps weight_bits [inferred].
#pragma once

#include <map>
#include <optional>
#include <string>

#include "models/model.h"
#include "quant/range_estimators.h"

namespace qt::quant {

struct QuantizationOptions {
  int weight_bits = 8;
  int activation_bits = 8;
  // Weights: current_min_max (BERT, ViT) or mse_grid (OPT), symmetric per-tensor.
  RangeMethod weight_range = RangeMethod::current_min_max;
  // Activations: running min-max with this momentum; with a percentile (e.g. 99.999, OPT) the
  // per-batch range is (P(100 − p), P(p)) instead of (min, max).
  double activation_momentum = 0.9;
  std::optional<double> activation_percentile;
  bool head_quantized = false;    // BERT / OPT: false (FP head); ViT: true
  int layer_norm_bits = 0;        // 0: activation_bits
  int final_layer_norm_bits = 0;  // 0: layer_norm_bits
};

// The paper's settings (docs/method.md, "Quantization settings") for the model at `bits` (weights
// and activations), from the model's own defaults (models::QuantizationDefaults): BERT / ViT:
// min-max weights, running min-max activations; OPT: MSE-grid weights, running 99.999th-percentile
// activations; BERT / OPT: FP head; ViT: quantized classifier head.
QuantizationOptions paper_quantization_options(const models::ModelPoints& points, int bits = 8);
QuantizationOptions paper_quantization_options(const models::Model& model, int bits = 8);

struct ActivationPoint {
  int bits = 8;
  RangeEstimatorOptions estimator;  // running_min_max, per-tensor
};

struct WeightPoint {
  int bits = 8;
  RangeMethod method = RangeMethod::current_min_max;
  // "" : the parameter is fake-quantized in place. Otherwise the table stays FP (a tied FP head
  // reads it) and its lookups are quantized at this tap point (see "Tied tables" above).
  std::string lookup_point;
};

struct QuantizationSetup {
  std::string family;
  QuantizationOptions options;
  std::map<std::string, ActivationPoint> activations;  // tap point -> quantizer
  std::map<std::string, WeightPoint> weights;          // parameter name -> quantizer
};

// The setup for `model`: the quantized rows of model.points(). Throws for invalid bits, a
// percentile out of range, a weight range other than current_min_max / mse_grid, or a listed
// weight the model does not have.
QuantizationSetup quantization_setup(const models::Model& model,
                                     const QuantizationOptions& options);

}  // namespace qt::quant
