/* qtlab_int8.c: qtlab's integer ops in C99 (see qtlab_int8.h). Each function mirrors the C++ op
 * named beside it, step for step and with the same bit widths. Portability notes: right shifts
 * of negative values are implementation-defined in C99 and left shifts of negative values are
 * undefined, so floors use qt_floor_shift and scalings by 2^k use multiplication; int64_t is two's
 * complement by definition (C99 7.18.1.1), so masks on negative values are well defined. */
#include "qtlab_int8.h"

#include <stdio.h>
#include <stdlib.h>

#define QT_INT32_MIN (-2147483647 - 1)
#define QT_INT32_MAX 2147483647
#define QT_ONE(k) ((int64_t)1 << (k)) /* 2^k for 0 <= k <= 62 */

/* A violated bound: name the op and the values, then stop (the C++ throws a qt::Error). */
static void qt_check(int condition, const char* op, const char* what, long long a, long long b) {
  if (condition) return;
  fprintf(stderr, "qtlab_int8: %s: %s (%lld, %lld)\n", op, what, a, b);
  abort();
}

/* floor(x / 2^e) for 0 <= e <= 62, |x| < 2^63: an arithmetic right shift, written portably. */
static int64_t qt_floor_shift(int64_t x, int e) {
  if (x >= 0) return x >> e;
  return -(((-(x + 1)) >> e) + 1);
}

static int64_t qt_clamp64(int64_t x, int64_t lo, int64_t hi) {
  return x < lo ? lo : x > hi ? hi : x;
}

/* ======================================================================== requantization
 * (quant/integer_requantize.cpp) */

/* rounding_shift_right: round(x / 2^e) under `rounding`, exact for 0 <= e <= 62.
 *   floor = floor(x / 2^e), remainder = x - floor 2^e in [0, 2^e), half = 2^(e-1)
 *   half up:    floor + (remainder >= half)
 *   half away:  floor + (x >= 0 ? remainder >= half : remainder > half)
 *   half even:  floor + (remainder > half || (remainder == half && floor is odd)) */
int64_t qt_rounding_shift_right(int64_t x, int exponent, qt_rounding rounding) {
  int64_t floor, remainder, half;
  qt_check(exponent >= 0 && exponent <= 62, "rounding_shift_right", "exponent outside [0, 62]",
           exponent, 0);
  if (exponent == 0) return x;
  floor = qt_floor_shift(x, exponent);
  remainder = x - floor * QT_ONE(exponent);
  half = QT_ONE(exponent - 1);
  switch (rounding) {
    case QT_HALF_UP:
      return floor + (remainder >= half);
    case QT_HALF_AWAY_FROM_ZERO:
      return floor + (x >= 0 ? remainder >= half : remainder > half);
    case QT_HALF_TO_EVEN:
      return floor + (remainder > half || (remainder == half && (floor & 1) != 0));
  }
  return floor;
}

/* gemmlowp RoundingDivideByPOT: round(x / 2^e), ties away from zero, 0 <= e <= 31, in the mask /
 * threshold form: mask = 2^e - 1, remainder = x & mask, threshold = mask / 2 + (x < 0). */
int32_t qt_rounding_divide_by_pot(int32_t x, int exponent) {
  int64_t mask, remainder, threshold;
  qt_check(exponent >= 0 && exponent <= 31, "rounding_divide_by_pot", "exponent outside [0, 31]",
           exponent, 0);
  mask = QT_ONE(exponent) - 1;
  remainder = (int64_t)x & mask;
  threshold = (mask >> 1) + (x < 0 ? 1 : 0);
  return (int32_t)(qt_floor_shift((int64_t)x, exponent) + (remainder > threshold));
}

/* gemmlowp SaturatingRoundingDoublingHighMul: (a b + nudge) / 2^31 truncated toward zero, with
 * nudge 2^30 (product >= 0) or 1 - 2^30: ties toward +infinity. INT32_MIN^2 saturates. */
int32_t qt_saturating_rounding_doubling_high_mul(int32_t a, int32_t b) {
  int64_t product, nudge;
  if (a == b && a == QT_INT32_MIN) return QT_INT32_MAX;
  product = (int64_t)a * (int64_t)b;
  nudge = product >= 0 ? QT_ONE(30) : 1 - QT_ONE(30);
  return (int32_t)((product + nudge) / QT_ONE(31)); /* C99 division truncates toward zero */
}

/* x M rounded by mode. Double rounding: left = max(shift, 0), right = max(-shift, 0); x 2^left
 * must fit int32 (checked); RDBPOT(SRDHM(x 2^left, M0), right). Single rounding: the exact int64
 * product x M0 (|.| <= 2^62) shifted right by 31 - shift with one rounding, saturated to int32. */
int32_t qt_multiply_by_quantized_multiplier(int32_t x, qt_multiplier m, qt_requant mode) {
  qt_rounding rounding;
  int64_t product, y;
  if (mode == QT_DOUBLE_ROUNDING) {
    const int left = m.shift > 0 ? m.shift : 0, right = m.shift < 0 ? -m.shift : 0;
    const int64_t shifted = (int64_t)x * QT_ONE(left);
    qt_check(shifted >= QT_INT32_MIN && shifted <= QT_INT32_MAX, "multiply_by_quantized_multiplier",
             "x * 2^left overflows int32", x, left);
    return qt_rounding_divide_by_pot(
        qt_saturating_rounding_doubling_high_mul((int32_t)shifted, m.multiplier), right);
  }
  rounding = mode == QT_SINGLE_HALF_UP     ? QT_HALF_UP
             : mode == QT_SINGLE_HALF_AWAY ? QT_HALF_AWAY_FROM_ZERO
                                           : QT_HALF_TO_EVEN;
  product = (int64_t)x * m.multiplier;
  y = qt_rounding_shift_right(product, 31 - m.shift, rounding);
  return (int32_t)qt_clamp64(y, QT_INT32_MIN, QT_INT32_MAX);
}

/* Requantizer: clamp(x M + Z, qmin, qmax), the zero point added in int64. */
int32_t qt_requantize(int32_t x, const qt_requantizer* r) {
  const int64_t y = (int64_t)qt_multiply_by_quantized_multiplier(x, r->m, r->mode) + r->zero_point;
  return (int32_t)qt_clamp64(y, r->qmin, r->qmax);
}

/* ======================================================================== linear
 * (quant/integer_linear.cpp, integer_linear_ref): acc = bias[n] + sum_k (x - Z_a) w[n, k] in
 * int64, which qtlab bounds when it builds the layer (255 * 128 * K + |bias| <= 2^31 - 1): the
 * result is checked to fit int32 and equals the C++ fast path's int32 GEMM + folded bias. */

/* acc[m, n], checked to fit int32. */
static int32_t qt_linear_accumulator(const qt_linear_params* p, const uint8_t* x, int64_t lda,
                                     int64_t m, int64_t n) {
  const int64_t K = p->in_features;
  int64_t sum = p->bias != NULL ? p->bias[n] : 0, k;
  for (k = 0; k < K; ++k)
    sum += ((int64_t)x[m * lda + k] - p->input_zero_point) * p->weight[n * K + k];
  qt_check(sum >= QT_INT32_MIN && sum <= QT_INT32_MAX, "linear", "accumulator beyond int32", sum,
           n);
  return (int32_t)sum;
}

/* The input's row stride (0: dense), checked. */
static int64_t qt_linear_stride(const qt_linear_params* p, int64_t rows, int64_t x_stride) {
  const int64_t lda = x_stride == 0 ? p->in_features : x_stride;
  qt_check(lda >= p->in_features && rows >= 0, "linear", "bad row stride or row count", lda, rows);
  qt_check(p->output_count == 1 || p->output_count == p->out_features, "linear",
           "requantizers for channels", p->output_count, p->out_features);
  return lda;
}

void qt_linear_accumulators(const qt_linear_params* p, const uint8_t* x, int64_t rows,
                            int64_t x_stride, int32_t* acc) {
  const int64_t N = p->out_features, lda = qt_linear_stride(p, rows, x_stride);
  int64_t m, n;
  for (m = 0; m < rows; ++m)
    for (n = 0; n < N; ++n) acc[m * N + n] = qt_linear_accumulator(p, x, lda, m, n);
}

static void qt_linear_forward(const qt_linear_params* p, const uint8_t* x, int64_t rows,
                              int64_t x_stride, uint8_t* y, int relu) {
  const int64_t N = p->out_features, lda = qt_linear_stride(p, rows, x_stride);
  int64_t m, n;
  for (m = 0; m < rows; ++m)
    for (n = 0; n < N; ++n) {
      int32_t acc = qt_linear_accumulator(p, x, lda, m, n);
      if (relu && acc < 0) acc = 0; /* relu(S acc) = S max(acc, 0): exact */
      y[m * N + n] = (uint8_t)qt_requantize(acc, &p->output[p->output_count == 1 ? 0 : n]);
    }
}
void qt_linear(const qt_linear_params* p, const uint8_t* x, int64_t rows, int64_t x_stride,
               uint8_t* y) {
  qt_linear_forward(p, x, rows, x_stride, y, 0);
}
void qt_linear_relu(const qt_linear_params* p, const uint8_t* x, int64_t rows, int64_t x_stride,
                    uint8_t* y) {
  qt_linear_forward(p, x, rows, x_stride, y, 1);
}

/* ======================================================================== u8 x u8 matmul
 * (integer_matmul_u8u8_ref): C[b][m, n] = sum_k (a - Z_a)(b - Z_b) in int64; |.| <= 255^2 K, so
 * K <= 33025 keeps it in int32 (checked). B element (n, k) is B[n * ld + k] (NK) or B[k * ld + n]
 * (KN). */
void qt_matmul_u8u8(int64_t batch, int64_t M, int64_t N, int64_t K, const qt_u8_matrix* A,
                    const qt_u8_matrix* B, qt_b_layout layout, int32_t* C) {
  int64_t b, m, n, k;
  qt_check(K <= QT_INT32_MAX / (255 * 255), "matmul_u8u8", "K beyond 33025", K, 0);
  for (b = 0; b < batch; ++b)
    for (m = 0; m < M; ++m)
      for (n = 0; n < N; ++n) {
        int64_t acc = 0;
        for (k = 0; k < K; ++k) {
          const uint8_t a = A->data[b * A->batch_stride + m * A->ld + k];
          const uint8_t v =
              B->data[b * B->batch_stride + (layout == QT_B_NK ? n * B->ld + k : k * B->ld + n)];
          acc += ((int64_t)a - A->zero_point) * ((int64_t)v - B->zero_point);
        }
        C[b * M * N + m * N + n] = (int32_t)acc;
      }
}

/* ======================================================================== softmax
 * (quant/integer_softmax.cpp). exp(-m / 2^26) = prod over the set bits j of m of E_j, with
 * E_j = round(exp(-2^(j-26)) 2^31) (computed once in long double by qtlab; listed here). Each
 * product rounds half up: p = (p E_j + 2^30) >> 31 (p, E_j <= 2^31, so p E_j <= 2^62). */
static const int64_t qt_exp_constants[31] = {
    2147483616, 2147483584, 2147483520, 2147483392, 2147483136, 2147482624, 2147481600, 2147479552,
    2147475456, 2147467264, 2147450880, 2147418113, 2147352580, 2147221520, 2146959424, 2146435328,
    2145387520, 2143293437, 2139111403, 2130771798, 2114190000, 2081412522, 2017374191, 1895147668,
    1672461947, 1302514674, 790015084,  290630308,  39332535,   720401,     242};

int64_t qt_exp_q31(int64_t m) {
  int64_t p = QT_ONE(31); /* 1.0 in Q0.31 */
  int j;
  qt_check(m >= 0, "exp_q31", "negative exponent", m, 0);
  if (m >= QT_ONE(31)) return 0; /* exp(-32) 2^31 < 0.03 */
  for (j = 30; j >= 0; --j)
    if ((m >> j) & 1) p = (p * qt_exp_constants[j] + QT_ONE(30)) >> 31;
  return p;
}

/* Per row, over the kept keys (a fully masked row gives zeros):
 *   d_j = max - x_j (int64, < 2^32);  m_j = round_half_up(d_j M0 / 2^(31 - shift))  (Q5.26)
 *   e_j = exp_q31(m_j);  sum = sum e_j  (int64, n <= 2^20, sum < 2^51)
 *   P_j = (e_j 2^30 + sum / 2) / sum  (Q0.30, half up)
 *   v_j = A P_j + G 2^30;  out_j = round_half_even(clamp(v_j, 0, 255 2^50) / 2^50) */
static void qt_softmax_rows(const qt_softmax_params* p, const uint8_t* x8, const int32_t* x32,
                            int64_t rows, int64_t n, const uint8_t* keep, int64_t keep_stride,
                            uint8_t* out) {
  const int64_t upper = 255 * QT_ONE(50);
  int64_t r, j;
  int64_t* e;
  qt_check(rows >= 0 && n >= 1 && n <= QT_ONE(20), "softmax", "bad shape", rows, n);
  qt_check(keep == NULL || keep_stride >= 0, "softmax", "negative mask stride", keep_stride, 0);
  e = (int64_t*)malloc((size_t)n * sizeof(int64_t));
  qt_check(e != NULL, "softmax", "out of memory", n, 0);
  for (r = 0; r < rows; ++r) {
    const uint8_t* kr = keep == NULL ? NULL : keep + r * keep_stride;
    uint8_t* yr = out + r * n;
    int any = 0;
    int64_t max = 0, sum = 0;
#define QT_X(j) (x8 != NULL ? (int64_t)x8[r * n + (j)] : (int64_t)x32[r * n + (j)])
    for (j = 0; j < n; ++j)
      if (kr == NULL || kr[j] != 0) {
        if (!any || QT_X(j) > max) max = QT_X(j);
        any = 1;
      }
    if (!any) {
      for (j = 0; j < n; ++j) yr[j] = 0;
      continue;
    }
    for (j = 0; j < n; ++j) {
      int64_t d, m;
      if (kr != NULL && kr[j] == 0) {
        e[j] = 0;
        continue;
      }
      d = max - QT_X(j);
      m = qt_rounding_shift_right(d * p->exponent.multiplier, 31 - p->exponent.shift, QT_HALF_UP);
      e[j] = qt_exp_q31(m);
      sum += e[j];
    }
#undef QT_X
    for (j = 0; j < n; ++j) {
      const int64_t prob = (e[j] * QT_ONE(30) + sum / 2) / sum;
      const int64_t v = p->stretch * prob + p->offset * QT_ONE(30);
      yr[j] = (uint8_t)qt_rounding_shift_right(qt_clamp64(v, 0, upper), 50, QT_HALF_TO_EVEN);
    }
  }
  free(e);
}
void qt_softmax_u8(const qt_softmax_params* p, const uint8_t* x, int64_t rows, int64_t n,
                   const uint8_t* keep, int64_t keep_stride, uint8_t* out) {
  qt_softmax_rows(p, x, NULL, rows, n, keep, keep_stride, out);
}
void qt_softmax_s32(const qt_softmax_params* p, const int32_t* x, int64_t rows, int64_t n,
                    const uint8_t* keep, int64_t keep_stride, uint8_t* out) {
  qt_softmax_rows(p, NULL, x, rows, n, keep, keep_stride, out);
}

/* ======================================================================== tables, ReLU, gate
 * (quant/integer_lut.cpp, integer_gelu.cpp, integer_sigmoid.cpp) */

void qt_apply_lut_u8(const uint8_t* table, int32_t input_min, const uint8_t* in, int64_t n,
                     uint8_t* out) {
  int64_t i;
  qt_check(input_min <= 0, "apply_lut", "table does not cover u8", input_min, 0);
  for (i = 0; i < n; ++i) out[i] = table[(int64_t)in[i] - input_min];
}

/* The fused form: the int32 accumulator requantized onto the int16 grid (scale S_mid), then one
 * lookup in the 65536-entry table; the requantizer's grid is [-32768, 32767] (checked). */
void qt_apply_lut_activation(const qt_requantizer* to_input, int64_t to_input_count,
                             const uint8_t* table, const int32_t* acc, int64_t rows,
                             int64_t channels, uint8_t* out) {
  int64_t m, c;
  qt_check(to_input_count == 1 || to_input_count == channels, "apply_lut_activation",
           "scales for channels", to_input_count, channels);
  for (c = 0; c < to_input_count; ++c)
    qt_check(to_input[c].qmin >= -32768 && to_input[c].qmax <= 32767, "apply_lut_activation",
             "requantizer grid outside int16", to_input[c].qmin, to_input[c].qmax);
  for (m = 0; m < rows; ++m)
    for (c = 0; c < channels; ++c) {
      const int32_t q =
          qt_requantize(acc[m * channels + c], &to_input[to_input_count == 1 ? 0 : c]);
      out[m * channels + c] = table[q + 32768];
    }
}

/* ReLU on u8 codes with an unchanged scale: max(q, Z). */
void qt_relu_u8(const uint8_t* x, int64_t n, int32_t zero_point, uint8_t* out) {
  int64_t i;
  for (i = 0; i < n; ++i) out[i] = (uint8_t)(x[i] > zero_point ? x[i] : zero_point);
}

/* Gate multiply: out = requant((c - Z_c) g) with g the u8 gate code (scale 1/256) of the token's
 * head; |(c - Z_c) g| <= 255^2 is exact in int32. context [tokens, heads * head_dim], gate
 * [tokens, heads]. */
void qt_gate_multiply(const uint8_t* context, const uint8_t* gate, int64_t tokens, int64_t heads,
                      int64_t head_dim, int32_t context_zero_point, const qt_requantizer* r,
                      uint8_t* out) {
  const int64_t width = heads * head_dim;
  int64_t t, h, j;
  for (t = 0; t < tokens; ++t)
    for (h = 0; h < heads; ++h) {
      const int32_t g = gate[t * heads + h];
      for (j = 0; j < head_dim; ++j) {
        const int64_t i = t * width + h * head_dim + j;
        out[i] = (uint8_t)qt_requantize(((int32_t)context[i] - context_zero_point) * g, r);
      }
    }
}

/* ======================================================================== LayerNorm
 * (quant/integer_sqrt.cpp, integer_layer_norm.cpp) */

/* floor(sqrt(n)), digit by digit in base 4: at most 32 compare / subtract / shift steps. */
uint64_t qt_integer_sqrt(uint64_t n) {
  uint64_t result = 0, bit = (uint64_t)1 << 62;
  while (bit > n) bit >>= 2;
  while (bit != 0) {
    if (n >= result + bit) {
      n -= result + bit;
      result = (result >> 1) + bit;
    } else {
      result >>= 1;
    }
    bit >>= 2;
  }
  return result;
}

static int qt_bit_width(uint64_t w) {
  int bits = 0;
  while (w != 0) {
    ++bits;
    w >>= 1;
  }
  return bits;
}

/* Per row of C codes q (|q| <= 2^15):
 *   S = sum q, Q = sum q^2 (int64); V = C Q - S^2 in [0, 2^54]; W = V + E
 *   s = max(0, (61 - bit_width(W)) / 2) puts W 4^s in [2^59, 2^61); D = isqrt(W 4^s) ~ 2^30
 *   y_i = C q_i - S (|.| <= 2^28);  z_i = round(|y_i| 2^(15 + s) / D) with y_i's sign (ties away
 *   from zero; |z_i| <= 2^21); a_i = g_i z_i + b_i (|.| < 2^31); out = requant(a_i). W = 0 gives
 *   z = 0. */
static void qt_layer_norm_rows(const qt_layer_norm_params* p, const uint8_t* x8, const int16_t* x16,
                               const int32_t* x32, int64_t rows, uint8_t* out) {
  const int64_t C = p->channels;
  int64_t r, i;
  qt_check(C >= 1 && C <= 4096 && rows >= 0, "layer_norm", "channels outside [1, 4096]", C, rows);
  for (r = 0; r < rows; ++r) {
    int64_t sum = 0, sum_squares = 0, variance, w, d;
    int shift = 0;
    uint8_t* y = out + r * C;
#define QT_Q(i)                              \
  (x8 != NULL    ? (int64_t)x8[r * C + (i)]  \
   : x16 != NULL ? (int64_t)x16[r * C + (i)] \
                 : (int64_t)x32[r * C + (i)])
    for (i = 0; i < C; ++i) {
      const int64_t v = QT_Q(i);
      qt_check(v >= -32768 && v <= 32768, "layer_norm", "input code beyond 2^15", v, i);
      sum += v;
      sum_squares += v * v;
    }
    variance = C * sum_squares - sum * sum;
    qt_check(variance >= 0 && variance <= QT_ONE(54), "layer_norm", "C Q - S^2 outside [0, 2^54]",
             variance, r);
    w = variance + p->eps_term;
    if (w > 0) shift = (61 - qt_bit_width((uint64_t)w)) / 2;
    if (shift < 0) shift = 0;
    d = (int64_t)qt_integer_sqrt((uint64_t)w << (2 * shift));
    for (i = 0; i < C; ++i) {
      int64_t z = 0, a;
      if (d > 0) {
        const int64_t centered = C * QT_Q(i) - sum;
        const int64_t magnitude_in = centered < 0 ? -centered : centered;
        const int64_t numerator = magnitude_in * QT_ONE(15 + shift);
        const int64_t magnitude = (numerator + d / 2) / d;
        qt_check(magnitude <= QT_ONE(21), "layer_norm", "|z| exceeds 2^21", magnitude, i);
        z = centered < 0 ? -magnitude : magnitude;
      }
      a = (int64_t)p->gamma[i] * z + p->beta[i];
      y[i] = (uint8_t)qt_requantize((int32_t)a, &p->output);
    }
#undef QT_Q
  }
}
void qt_layer_norm_u8(const qt_layer_norm_params* p, const uint8_t* x, int64_t rows, uint8_t* out) {
  qt_layer_norm_rows(p, x, NULL, NULL, rows, out);
}
void qt_layer_norm_s16(const qt_layer_norm_params* p, const int16_t* x, int64_t rows,
                       uint8_t* out) {
  qt_layer_norm_rows(p, NULL, x, NULL, rows, out);
}
void qt_layer_norm_s32(const qt_layer_norm_params* p, const int32_t* x, int64_t rows,
                       uint8_t* out) {
  qt_layer_norm_rows(p, NULL, NULL, x, rows, out);
}

/* ======================================================================== rescaled sums
 * (quant/integer_add.cpp, integer_embedding.cpp). With C = n max S_i:
 *   x_i = (q_i - Z_i) 2^20 (|q_i - Z_i| <= 1023, checked, so |x_i| < 2^30)
 *   s_i = x_i (S_i / C);  y = clamp((sum s_i) (C / (2^20 S_o)) + Z_o, qmin, qmax)
 * every product rounded by the output's mode; |sum s_i| < 2^30. */
int32_t qt_rescale_sum_apply(const qt_rescale_sum* s, const int32_t* q) {
  int32_t total = 0;
  int i;
  for (i = 0; i < s->terms; ++i) {
    const int32_t centered = q[i] - s->zero_point[i];
    qt_check(centered >= -1023 && centered <= 1023, "rescale_sum", "q - Z outside [-1023, 1023]",
             q[i], s->zero_point[i]);
    total += qt_multiply_by_quantized_multiplier(centered * (1 << 20), s->input[i], s->output.mode);
  }
  return qt_requantize(total, &s->output);
}

void qt_add_u8(const qt_rescale_sum* s, const uint8_t* a, const uint8_t* b, int64_t n,
               uint8_t* out) {
  int64_t i;
  qt_check(s->terms == 2 && s->output.qmin >= 0 && s->output.qmax <= 255, "add_u8",
           "needs 2 terms and a u8 grid", s->terms, s->output.qmax);
  for (i = 0; i < n; ++i) {
    const int32_t q[2] = {a[i], b[i]};
    out[i] = (uint8_t)qt_rescale_sum_apply(s, q);
  }
}
void qt_add_s16(const qt_rescale_sum* s, const uint8_t* a, const uint8_t* b, int64_t n,
                int16_t* out) {
  int64_t i;
  qt_check(s->terms == 2 && s->output.qmin >= -32768 && s->output.qmax <= 32767, "add_s16",
           "needs 2 terms and an int16 grid", s->terms, s->output.qmax);
  for (i = 0; i < n; ++i) {
    const int32_t q[2] = {a[i], b[i]};
    out[i] = (int16_t)qt_rescale_sum_apply(s, q);
  }
}

void qt_embedding_sum(const qt_rescale_sum* s, const qt_embedding_term* terms, int64_t tokens,
                      int64_t dim, uint8_t* out) {
  int32_t q[QT_MAX_SUM_TERMS];
  int64_t k, j;
  int i;
  qt_check(
      s->terms >= 1 && s->terms <= QT_MAX_SUM_TERMS && s->output.qmin >= 0 && s->output.qmax <= 255,
      "embedding_sum", "needs 1 to 4 terms and a u8 grid", s->terms, s->output.qmax);
  for (i = 0; i < s->terms; ++i)
    if (terms[i].table != NULL)
      for (k = 0; k < tokens; ++k)
        qt_check(terms[i].ids[k] >= 0 && terms[i].ids[k] < terms[i].rows, "embedding_sum",
                 "token id outside the table", terms[i].ids[k], terms[i].rows);
  for (k = 0; k < tokens; ++k)
    for (j = 0; j < dim; ++j) {
      for (i = 0; i < s->terms; ++i)
        q[i] = terms[i].table != NULL ? (int32_t)terms[i].table[terms[i].ids[k] * dim + j]
                                      : (int32_t)terms[i].dense[k * dim + j];
      out[k * dim + j] = (uint8_t)qt_rescale_sum_apply(s, q);
    }
}
