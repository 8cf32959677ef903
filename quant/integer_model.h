// The integer-only model (issue 13): a calibrated BERT, OPT or ViT lowered to a flat list of
// integer ops (quant/integer_*.h) that runs with no float anywhere between its integer input and
// its integer output, plus the record of every tensor it produces (a tensor dump,
// quant/tensor_dump.h) for checking other implementations against it.
//
// Lowering (build_integer_model, quant/integer_model_build.cpp) walks the model's point table
// (models/model_points.h, graph order) and its GraphDescription; nothing here names a model
// class. The simulated W8A8 model (quant/quantized_model.h) fixes every grid: each activation
// point's calibrated (scale, zero point) is the grid of the integer tensor of the same name, and
// each weight's symmetric range gives its s8 codes. Where the simulation keeps a tensor in
// floating point, the integer model needs a grid of its own, chosen as follows (and written in the
// manifest of an export):
//
//   tensor                            simulation            integer model
//   ViT input images                  f32                   u8 on the calibrated range of ":images"
//   FFN pre-activation (GELU)         f32 (fused)           int16, S = max(|act max|, 8) / 32767
//                                                           inside the GELU table op (lut.h)
//   attention context, gated models   f32 before the gate   u8 on V's grid (P V is a convex
//     whose context point is after                          combination of V's rows; clipped
//     the gate (BERT, ViT)                                  softmax's row sums stay <= zeta)
//   gate logits                       f32                   int16 over [-16, 16] in the sigmoid
//   table gate probabilities pi             f32                   u8, scale 1/256
//   (integer_sigmoid.h) MLP gate hidden units             f32                   u8 on the observed
//   range of
//                                                           "<gate>:hidden" (calibration)
//   gate weights and biases           f32                   s8 per head (min-max), s32 bias
//   attention probabilities           u8 calibrated grid    u8, scale 1/255 (integer_softmax.h)
//   BERT head GELU output (integer    f32                   u8 on [GELU(min), max] of the
//     head only)                                            transform's grid
//
// Layout: token tensors are [B*T, width] row-major ([tokens, features]); attention scores and
// probabilities [B, H, T, T]; gate probabilities [B*T, H]; token ids s32 [B, T]; image codes u8
// [B, N, patch_dim].
//
// The head: BERT and OPT keep it in floating point by default (the paper's W8A8 does), ViT
// quantizes it. With the FP head the integer model ends at the hidden states the head reads (BERT:
// the last block's output, OPT: the final LayerNorm); their dequantized values feed
// Model::head_logits. IntegerModelOptions::integer_head runs the head on integers as well.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "models/model.h"
#include "quant/calibrated_ranges.h"
#include "quant/integer_add.h"
#include "quant/integer_layer_norm.h"
#include "quant/integer_linear.h"
#include "quant/integer_lut.h"
#include "quant/integer_requantize.h"
#include "quant/integer_softmax.h"
#include "quant/tensor_dump.h"

namespace qt::quant {

struct IntegerModelOptions {
  Requant rounding = Requant::double_rounding;  // every requantization of the model
  bool per_channel_weights = false;             // s8 weights per output channel (default: tensor)
  // -1: the model's default (ViT: integer head; BERT, OPT: FP head as the paper); 0 / 1: forced.
  int integer_head = -1;
};

// How a tensor's rows are laid out (the shape of a forward on B sequences of T tokens).
enum class IntegerLayout {
  tokens,      // [B*T, width]
  attention,   // [B, H, T, T]
  token_ids,   // [B, T] (s32)
  images,      // [B, N, width]
  first_rows,  // [B, width]: one row per sequence (ViT's CLS rows, the classifier)
};

struct IntegerTensor {
  std::string name;
  DumpDType dtype = DumpDType::u8;
  IntegerLayout layout = IntegerLayout::tokens;
  int64_t width = 0;  // features per row (tokens, images, first_rows)
  double scale = 1;
  int32_t zero_point = 0;
};

enum class IntegerOpKind {
  text_embedding,     // ids -> token row + position row -> sum (integer_embedding.h)
  image_embedding,    // [cls; patches] + positions -> sum
  linear,             // u8 -> u8 (integer_linear)
  linear_relu,        // u8 -> u8, ReLU fused in the output stage
  linear_gelu,        // u8 -> s32 accumulators -> int16 -> GELU table -> u8
  gelu_table,         // u8 -> u8 table (BERT's integer head)
  layer_norm,         // u8 -> u8
  add,                // u8 + u8 -> u8 (residual)
  attention_scores,   // (Q, K) u8 -> per head Q K^T -> requantized u8 scores [B, H, T, T]
  softmax,            // scores u8 -> probabilities u8 (1/255), causal mask when set
  attention_context,  // (P, V) -> per head P V -> u8 [B*T, d]
  gate,               // x u8 -> pi u8 [B*T, H] (1/256)
  gate_multiply,      // (context, pi) -> u8
  first_token,        // [B*T, d] -> [B, d]: row 0 of each sequence
};
const char* integer_op_kind_name(IntegerOpKind kind);

// The gate's integer parameters (per head unless all_heads).
struct IntegerGateParameters {
  // linear_per_head / mlp output layer: heads x IntegerLinear (in d_h or n_hid, out 1);
  // all_heads_linear: one IntegerLinear (d -> H). mlp_per_head: `hidden` (heads x d_h -> n_hid,
  // ReLU) feeds `logit`. unconditional: `constant` codes.
  std::vector<IntegerLinear> hidden, logit;
  IntegerLutActivation sigmoid;   // per head accumulator scale -> int16 -> pi code
  std::vector<uint8_t> constant;  // unconditional_per_head: one code per head
  bool all_heads = false;
  int64_t head_dim = 0, hidden_width = 0;
  int32_t hidden_zero_point = 0;
};

struct IntegerOp {
  IntegerOpKind kind = IntegerOpKind::linear;
  std::string name;         // the module path, or the tap point it produces
  std::vector<int> inputs;  // tensor indices (activations only; parameters live in the op)
  int output = -1;
  std::vector<std::string>
      parameters;  // the weights it holds, by parameter name (for the manifest)

  IntegerLinear linear;                  // linear, linear_relu, linear_gelu
  IntegerLutActivation activation;       // linear_gelu
  IntegerLut table;                      // gelu_table
  IntegerLayerNorm layer_norm;           // layer_norm
  IntegerRescaleSum sum;                 // add, text_embedding; image_embedding: the patch rows
  IntegerRescaleSum first_sum;           // image_embedding: row 0 (cls + position 0)
  std::vector<int8_t> table_a, table_b;  // embeddings: token (or cls) table, position table
  int64_t table_a_rows = 0, table_b_rows = 0, position_offset = 0;
  Requantizer requant;  // scores, context, gate multiply
  IntegerSoftmax softmax;
  bool causal = false;
  int64_t heads = 0, head_dim = 0;
  IntegerGateParameters gate;
};

struct IntegerModel {
  std::string family;
  Requant rounding = Requant::double_rounding;
  bool per_channel_weights = false, integer_head = false;
  int64_t hidden = 0, heads = 0, layers = 0;
  int64_t max_length = 0, vocab_size = 0;  // text
  int64_t patches = 0, patch_dim = 0;      // images (N, patch*patch*C)
  std::vector<IntegerTensor> tensors;
  std::vector<IntegerOp> ops;      // execution order
  int input = -1, output = -1;     // tensor indices
  std::vector<std::string> notes;  // what the lowering decided where the simulation is silent

  int tensor_index(const std::string& name) const;  // -1 if absent
};

// Lowers `model` with the ranges of a calibrated QuantizedModel (QuantizedModel::ranges(); the
// `observed` ranges are needed for ViT images and MLP gates). Throws, naming the point, for a
// missing range, a bit width other than 8 (W8A8 only), or an attention variant the integer engine
// does not implement (conditional_per_head).
IntegerModel build_integer_model(const models::Model& model, const CalibratedRanges& ranges,
                                 const IntegerModelOptions& options = {});

// The integer input of a batch: token ids (text) or the images quantized to the input grid (the
// one float -> integer step, at the model's boundary like tokenisation).
struct IntegerInput {
  int64_t batch = 0, length = 0;  // B, T (images: T = N + 1 tokens, length = N patches)
  std::vector<int32_t> ids;       // [B, T]
  std::vector<uint8_t> images;    // [B, N, patch_dim]
};
IntegerInput integer_input(const IntegerModel& model, const models::Batch& batch);

// Every tensor's codes after one forward (index = tensor index), u8 tensors in `u8`, s32 in `s32`.
struct IntegerActivations {
  int64_t batch = 0, length = 0;  // B and the token count T
  std::vector<std::vector<uint8_t>> u8;
  std::vector<std::vector<int32_t>> s32;
  std::vector<double> op_ms;     // wall time of each op (index = op index), for `bench infer`
  std::vector<int32_t> scratch;  // the attention ops' per-head accumulators (reused)
  // Shape of tensor i in this forward.
  Shape shape(const IntegerModel& model, int tensor) const;
};

// The integer forward pass. Nothing in it reads a float.
IntegerActivations run_integer_model(const IntegerModel& model, const IntegerInput& input);
// The same into `activations`, reusing its buffers: what a loop over batches calls, so that
// from the second batch of a shape on nothing is allocated (the FP32 path gets the same from the
// tensor allocator's block cache). The result equals a fresh run's bit for bit (tested).
void run_integer_model(const IntegerModel& model, const IntegerInput& input,
                       IntegerActivations& activations);
// The same forward through the plain-loop reference kernels (integer_linear_ref,
// integer_matmul_u8u8_ref): bit-identical by contract, tested.
IntegerActivations run_integer_model_ref(const IntegerModel& model, const IntegerInput& input);

// The forward as a tensor dump: the input, every op output, in execution order, with the ops'
// integer attributes (multipliers, shifts, zero points); weights are named in the op attributes
// ("parameters"), not stored (an export keeps them in its weights file).
TensorDump integer_model_dump(const IntegerModel& model, const IntegerActivations& activations);

// The manifest's name of a rounding mode: "double_rounding", "single_half_up",
// "single_half_away", "single_half_even" (kDumpRoundings, in enum order).
std::string requant_id(Requant mode);

// A tensor's name in a dump: the tap point with ':' written as '.' (dump names are
// [A-Za-z0-9_.-]+).
std::string integer_dump_name(const std::string& tensor);

// The real values of the output tensor, [B, T, width] (tokens) or [B, width] (first rows), f32:
// the bridge to the FP head and to the loss.
Tensor dequantize_output(const IntegerModel& model, const IntegerActivations& activations);

}  // namespace qt::quant
