/* qtlab_int8.h: the integer ops of qtlab (quant/integer_*.h) in dependency-free C99, libc only.
 *
 * One function per op, bit-identical to the C++ ops (tests/test_c_export.cpp compiles this file
 * with cc -std=c99 -O2 -Wall -Wextra -Werror -pedantic and compares both on random and edge
 * cases). This file holds only the integer forward pass. The conversions that need floating point,
 * such as real multiplier -> (M0, shift), table construction and the LayerNorm eps term, are done
 * once by qtlab and arrive here as integers.
 *
 * A bound the C++ checks with a qt::Error is checked here too. On failure it prints the op and
 * the values to stderr and calls abort(), so a wrong value is never produced silently.
 *
 * Conventions (docs/integer-ops.md): activations u8 (S, Z); weights s8 symmetric; biases and
 * accumulators int32; attention probabilities u8 at 1/255, gate probabilities u8 at 1/256. A real
 * multiplier M is M0 * 2^(shift - 31) with M0 in [2^30, 2^31) (or 0) and shift in [-31, 30]. */
#ifndef QTLAB_INT8_H
#define QTLAB_INT8_H

#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* How a value exactly halfway between two integers is rounded. */
typedef enum {
  QT_HALF_UP = 0,             /* toward +infinity: floor(x + 1/2) */
  QT_HALF_AWAY_FROM_ZERO = 1, /* sign(x) floor(|x| + 1/2) */
  QT_HALF_TO_EVEN = 2         /* to the even neighbour */
} qt_rounding;

/* The four requantization modes (the manifest's "rounding" names). */
typedef enum {
  QT_DOUBLE_ROUNDING = 0,  /* gemmlowp: RDBPOT(SRDHM(x 2^left, M0), right) */
  QT_SINGLE_HALF_UP = 1,   /* TFLITE_SINGLE_ROUNDING */
  QT_SINGLE_HALF_AWAY = 2, /* one rounding of x M0 2^(shift-31), ties away from zero */
  QT_SINGLE_HALF_EVEN = 3  /* one rounding, ties to even */
} qt_requant;

typedef struct {
  int32_t multiplier; /* M0 in [2^30, 2^31), or 0 */
  int shift;          /* in [-31, 30] */
} qt_multiplier;

/* clamp(x * M (rounded by mode) + zero_point, qmin, qmax). */
typedef struct {
  qt_multiplier m;
  int32_t zero_point, qmin, qmax;
  qt_requant mode;
} qt_requantizer;

/* ---- requantization */
int64_t qt_rounding_shift_right(int64_t x, int exponent, qt_rounding rounding); /* 0..62 */
int32_t qt_rounding_divide_by_pot(int32_t x, int exponent);                     /* 0..31 */
int32_t qt_saturating_rounding_doubling_high_mul(int32_t a, int32_t b);
int32_t qt_multiply_by_quantized_multiplier(int32_t x, qt_multiplier m, qt_requant mode);
int32_t qt_requantize(int32_t x, const qt_requantizer* r);

/* ---- linear: y[rows, out] = requant[n](sum_k (x[m, k] - Z_a) w[n, k] + bias[n]) */
typedef struct {
  int64_t in_features, out_features;
  const int8_t* weight; /* [out, in] */
  const int32_t* bias;  /* [out], or NULL */
  int32_t input_zero_point;
  const qt_requantizer* output; /* 1 (per tensor) or out_features (per channel) */
  int64_t output_count;
} qt_linear_params;

/* x row m at x + m * x_stride (x_stride 0: dense). */
void qt_linear_accumulators(const qt_linear_params* p, const uint8_t* x, int64_t rows,
                            int64_t x_stride, int32_t* acc);
void qt_linear(const qt_linear_params* p, const uint8_t* x, int64_t rows, int64_t x_stride,
               uint8_t* y);
void qt_linear_relu(const qt_linear_params* p, const uint8_t* x, int64_t rows, int64_t x_stride,
                    uint8_t* y);

/* ---- u8 x u8 matmul (Q K^T with B [N, K]; P V with B [K, N]) */
typedef struct {
  const uint8_t* data;
  int64_t ld, batch_stride;
  int32_t zero_point;
} qt_u8_matrix;
typedef enum { QT_B_NK = 0, QT_B_KN = 1 } qt_b_layout;
void qt_matmul_u8u8(int64_t batch, int64_t M, int64_t N, int64_t K, const qt_u8_matrix* A,
                    const qt_u8_matrix* B, qt_b_layout layout, int32_t* C);

/* ---- softmax and clipped softmax (u8 output at scale 1/255) */
int64_t qt_exp_q31(int64_t m); /* exp(-m / 2^26) in Q0.31, m >= 0 */
typedef struct {
  qt_multiplier exponent; /* S_in 2^26 */
  int64_t stretch;        /* A = round(255 (zeta - gamma) 2^20) */
  int64_t offset;         /* G = round(255 gamma 2^20) */
} qt_softmax_params;
/* keep: NULL or u8 flags, keep[r * keep_stride + j] != 0 keeps key j of row r. */
void qt_softmax_u8(const qt_softmax_params* p, const uint8_t* x, int64_t rows, int64_t n,
                   const uint8_t* keep, int64_t keep_stride, uint8_t* out);
void qt_softmax_s32(const qt_softmax_params* p, const int32_t* x, int64_t rows, int64_t n,
                    const uint8_t* keep, int64_t keep_stride, uint8_t* out);

/* ---- lookup tables (GELU, sigmoid), ReLU, the gate multiply */
/* out[i] = table[in[i] - input_min]; the table covers [input_min, input_min + 255] at least. */
void qt_apply_lut_u8(const uint8_t* table, int32_t input_min, const uint8_t* in, int64_t n,
                     uint8_t* out);
/* out[m, c] = table[to_input[c](acc[m, c]) + 32768]; table has 65536 entries (int16 grid). */
void qt_apply_lut_activation(const qt_requantizer* to_input, int64_t to_input_count,
                             const uint8_t* table, const int32_t* acc, int64_t rows,
                             int64_t channels, uint8_t* out);
void qt_relu_u8(const uint8_t* x, int64_t n, int32_t zero_point, uint8_t* out);
void qt_gate_multiply(const uint8_t* context, const uint8_t* gate, int64_t tokens, int64_t heads,
                      int64_t head_dim, int32_t context_zero_point, const qt_requantizer* r,
                      uint8_t* out);

/* ---- LayerNorm */
uint64_t qt_integer_sqrt(uint64_t n); /* floor(sqrt(n)) */
typedef struct {
  int64_t channels;      /* C in [1, 4096] */
  const int8_t* gamma;   /* [C] s8 codes */
  const int32_t* beta;   /* [C] b_i = round(beta_i 2^15 / S_g) */
  int64_t eps_term;      /* E = round(eps C^2 / S_in^2) */
  qt_requantizer output; /* M = S_g / (2^15 S_out), u8 */
} qt_layer_norm_params;
void qt_layer_norm_u8(const qt_layer_norm_params* p, const uint8_t* x, int64_t rows, uint8_t* out);
void qt_layer_norm_s16(const qt_layer_norm_params* p, const int16_t* x, int64_t rows, uint8_t* out);
void qt_layer_norm_s32(const qt_layer_norm_params* p, const int32_t* x, int64_t rows, uint8_t* out);

/* ---- residual add and embedding sums: y = clamp(sum_i s_i * M_out + Z_o, qmin, qmax) */
#define QT_MAX_SUM_TERMS 4
typedef struct {
  int terms;                             /* 1..4 */
  qt_multiplier input[QT_MAX_SUM_TERMS]; /* S_i / C */
  int32_t zero_point[QT_MAX_SUM_TERMS];  /* Z_i */
  qt_requantizer output;                 /* C / (2^20 S_o); its mode rounds every step */
} qt_rescale_sum;
int32_t qt_rescale_sum_apply(const qt_rescale_sum* s, const int32_t* q);
void qt_add_u8(const qt_rescale_sum* s, const uint8_t* a, const uint8_t* b, int64_t n,
               uint8_t* out);
void qt_add_s16(const qt_rescale_sum* s, const uint8_t* a, const uint8_t* b, int64_t n,
                int16_t* out);
/* A term is an s8 table lookup (table [rows, dim], ids [tokens]) or a dense u8 input [tokens,
 * dim] (table NULL). */
typedef struct {
  const int8_t* table;
  int64_t rows;
  const int64_t* ids;
  const uint8_t* dense;
} qt_embedding_term;
void qt_embedding_sum(const qt_rescale_sum* s, const qt_embedding_term* terms, int64_t tokens,
                      int64_t dim, uint8_t* out);

#ifdef __cplusplus
}
#endif

#endif /* QTLAB_INT8_H */
