/* qtlab_model.h: what an exported integer model (`qtlab export-int`) is made of, in C99.
 *
 * model.c is one file: qtlab_int8.{h,c} (the ops), qtlab_dump.{h,c} (the tensor dump), this
 * header and qtlab_model.c (the weights reader, the model-level ops that slice tensors into rows,
 * heads and sequences, and main), then the generated part: the tensor table, the op table and
 * qt_model_forward, one call per op in execution order with every integer parameter written out.
 *
 * Layouts (a forward on B sequences of T tokens): tokens [B*T, width], attention [B, H, T, T],
 * token ids [B, T] (s32), images [B, N, width], first rows [B, width]. */
#ifndef QTLAB_MODEL_H
#define QTLAB_MODEL_H

#include <stdint.h>

#include "qtlab_dump.h"
#include "qtlab_int8.h"

typedef enum {
  QT_LAYOUT_TOKENS = 0,
  QT_LAYOUT_ATTENTION = 1,
  QT_LAYOUT_TOKEN_IDS = 2,
  QT_LAYOUT_IMAGES = 3,
  QT_LAYOUT_FIRST_ROWS = 4
} qt_layout;

typedef struct {
  const char* name; /* the dump name */
  qt_dtype dtype;   /* QT_U8, or QT_S32 for token ids */
  qt_layout layout;
  int64_t width;
  double scale;
  int32_t zero_point;
} qt_model_tensor;

typedef struct {
  const char* name;
  const char* kind;
  const char* rounding;
  int n_inputs;
  int inputs[2];
  int output;
} qt_model_op;

#define QT_MODEL_MAX_TENSORS 1024

typedef struct {
  int64_t batch, length; /* B, and the token count T (ViT: N + 1) */
  void* buffer[QT_MODEL_MAX_TENSORS];
} qt_model_state;

/* The generated part. */
extern const char* const qt_model_family;
extern const int qt_model_tensor_count, qt_model_op_count, qt_model_input, qt_model_output;
extern const int64_t qt_model_heads, qt_model_max_length, qt_model_vocab_size, qt_model_patches;
extern const qt_model_tensor qt_model_tensors[];
extern const qt_model_op qt_model_ops[];
void qt_model_forward(qt_model_state* s);

/* Weights, by name, from weights.safetensors (loaded by main); aborts naming the tensor when it
 * is missing or has another dtype or size. */
const int8_t* qt_weight_s8(const char* name, int64_t numel);
const int32_t* qt_weight_s32(const char* name, int64_t numel);
const uint8_t* qt_weight_u8(const char* name, int64_t numel);

/* The model-level ops (qtlab_model.c). */
void qt_model_text_embedding(const qt_rescale_sum* sum, const int8_t* tokens, int64_t token_rows,
                             const int8_t* positions, int64_t position_rows, int64_t offset,
                             const int32_t* ids, int64_t B, int64_t T, int64_t d, uint8_t* out);
void qt_model_image_embedding(const qt_rescale_sum* first_sum, const qt_rescale_sum* sum,
                              const int8_t* cls, const int8_t* positions, const uint8_t* patches,
                              int64_t B, int64_t N, int64_t d, uint8_t* out);
void qt_model_linear_lut(const qt_linear_params* p, const qt_requantizer* to_input,
                         int64_t to_input_count, const uint8_t* table, const uint8_t* x,
                         int64_t rows, uint8_t* y);
void qt_model_attention_scores(const uint8_t* q, int32_t q_zero_point, const uint8_t* k,
                               int32_t k_zero_point, int64_t B, int64_t T, int64_t H, int64_t dh,
                               const qt_requantizer* r, uint8_t* out);
void qt_model_softmax(const qt_softmax_params* p, const uint8_t* scores, int64_t B, int64_t H,
                      int64_t T, int causal, uint8_t* out);
void qt_model_attention_context(const uint8_t* probabilities, const uint8_t* v,
                                int32_t v_zero_point, int64_t B, int64_t T, int64_t H, int64_t dh,
                                const qt_requantizer* r, uint8_t* out);
/* Gates: pi codes [R, H] at 1/256 from x [R, H * dh]. */
void qt_model_gate_per_head(const int8_t* weight, const int32_t* bias, int32_t x_zero_point,
                            const qt_requantizer* to_input, const uint8_t* table, const uint8_t* x,
                            int64_t R, int64_t H, int64_t dh, uint8_t* out);
void qt_model_gate_mlp(const int8_t* hidden_weight, const int32_t* hidden_bias,
                       const qt_requantizer* hidden_output, int32_t x_zero_point, int64_t n_hid,
                       const int8_t* output_weight, const int32_t* output_bias,
                       int32_t hidden_zero_point, const qt_requantizer* to_input,
                       const uint8_t* table, const uint8_t* x, int64_t R, int64_t H, int64_t dh,
                       uint8_t* out);
void qt_model_gate_all_heads(const qt_linear_params* p, const qt_requantizer* to_input,
                             const uint8_t* table, const uint8_t* x, int64_t R, int64_t H,
                             uint8_t* out);
void qt_model_gate_constant(const uint8_t* codes, int64_t R, int64_t H, uint8_t* out);
void qt_model_first_token(const uint8_t* x, int64_t B, int64_t T, int64_t d, uint8_t* out);

#endif /* QTLAB_MODEL_H */
