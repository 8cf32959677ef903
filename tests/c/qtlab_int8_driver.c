/* The test driver for quant/export/qtlab_int8.c (tests/test_c_export.cpp): reads cases from
 * stdin as whitespace-separated integers, each an op name and its parameters and inputs, runs the
 * C op and prints its outputs, one line per case. The C++ test writes the same cases through the
 * C++ ops and requires bit-identical output. Layouts are dense unless a stride is given. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "qtlab_int8.h"

static long long rd(void) {
  long long v;
  if (scanf("%lld", &v) != 1) {
    fprintf(stderr, "driver: truncated input\n");
    exit(3);
  }
  return v;
}
static void* alloc(long long n, size_t size) {
  void* p = calloc((size_t)(n > 0 ? n : 1), size);
  if (p == NULL) exit(4);
  return p;
}
#define READ_ARRAY(type, name, count)                       \
  type* name = (type*)alloc((count), sizeof(type));         \
  do {                                                      \
    long long i_;                                           \
    for (i_ = 0; i_ < (count); ++i_) name[i_] = (type)rd(); \
  } while (0)
#define PRINT_ARRAY(name, count)                                           \
  do {                                                                     \
    long long i_;                                                          \
    for (i_ = 0; i_ < (count); ++i_) printf("%lld ", (long long)name[i_]); \
    printf("\n");                                                          \
  } while (0)

static qt_multiplier rd_multiplier(void) {
  qt_multiplier m;
  m.multiplier = (int32_t)rd();
  m.shift = (int)rd();
  return m;
}
/* M0 shift zero_point qmin qmax mode */
static qt_requantizer rd_requantizer(void) {
  qt_requantizer r;
  r.m = rd_multiplier();
  r.zero_point = (int32_t)rd();
  r.qmin = (int32_t)rd();
  r.qmax = (int32_t)rd();
  r.mode = (qt_requant)rd();
  return r;
}

int main(void) {
  char op[32];
  while (scanf("%31s", op) == 1) {
    if (strcmp(op, "rsr") == 0) {
      const long long x = rd(), e = rd(), r = rd();
      printf("%lld\n", (long long)qt_rounding_shift_right(x, (int)e, (qt_rounding)r));
    } else if (strcmp(op, "rdbpot") == 0) {
      const long long x = rd(), e = rd();
      printf("%lld\n", (long long)qt_rounding_divide_by_pot((int32_t)x, (int)e));
    } else if (strcmp(op, "srdhm") == 0) {
      const long long a = rd(), b = rd();
      printf("%lld\n", (long long)qt_saturating_rounding_doubling_high_mul((int32_t)a, (int32_t)b));
    } else if (strcmp(op, "requant") == 0) {
      const long long x = rd();
      const qt_requantizer r = rd_requantizer();
      printf("%lld\n", (long long)qt_requantize((int32_t)x, &r));
    } else if (strcmp(op, "linear") == 0) { /* kind 0 linear, 1 relu, 2 accumulators */
      const long long kind = rd(), rows = rd(), in = rd(), out = rd(), stride = rd(), za = rd();
      const long long nreq = rd(), has_bias = rd();
      qt_linear_params p;
      long long i;
      qt_requantizer* req = (qt_requantizer*)alloc(nreq, sizeof(qt_requantizer));
      for (i = 0; i < nreq; ++i) req[i] = rd_requantizer();
      {
        READ_ARRAY(int32_t, bias, out);
        READ_ARRAY(int8_t, w, out * in);
        READ_ARRAY(uint8_t, x, rows * (stride == 0 ? in : stride));
        p.in_features = in;
        p.out_features = out;
        p.weight = w;
        p.bias = has_bias ? bias : NULL;
        p.input_zero_point = (int32_t)za;
        p.output = req;
        p.output_count = nreq;
        if (kind == 2) {
          int32_t* acc = (int32_t*)alloc(rows * out, sizeof(int32_t));
          qt_linear_accumulators(&p, x, rows, stride, acc);
          PRINT_ARRAY(acc, rows * out);
          free(acc);
        } else {
          uint8_t* y = (uint8_t*)alloc(rows * out, 1);
          if (kind == 1)
            qt_linear_relu(&p, x, rows, stride, y);
          else
            qt_linear(&p, x, rows, stride, y);
          PRINT_ARRAY(y, rows * out);
          free(y);
        }
        free(bias);
        free(w);
        free(x);
      }
      free(req);
    } else if (strcmp(op, "matmul") == 0) {
      const long long batch = rd(), M = rd(), N = rd(), K = rd(), layout = rd(), za = rd(),
                      zb = rd();
      READ_ARRAY(uint8_t, a, batch * M * K);
      READ_ARRAY(uint8_t, b, batch * N * K);
      int32_t* c = (int32_t*)alloc(batch * M * N, sizeof(int32_t));
      qt_u8_matrix A, B;
      A.data = a;
      A.ld = K;
      A.batch_stride = M * K;
      A.zero_point = (int32_t)za;
      B.data = b;
      B.ld = layout == QT_B_NK ? K : N;
      B.batch_stride = N * K;
      B.zero_point = (int32_t)zb;
      qt_matmul_u8u8(batch, M, N, K, &A, &B, (qt_b_layout)layout, c);
      PRINT_ARRAY(c, batch * M * N);
      free(a);
      free(b);
      free(c);
    } else if (strcmp(op, "exp") == 0) {
      printf("%lld\n", (long long)qt_exp_q31(rd()));
    } else if (strcmp(op, "softmax") == 0) { /* type 0 u8, 1 s32 */
      const long long type = rd(), rows = rd(), n = rd();
      qt_softmax_params p;
      long long keep_stride, has_keep;
      p.exponent = rd_multiplier();
      p.stretch = rd();
      p.offset = rd();
      keep_stride = rd();
      has_keep = rd();
      {
        const long long keep_count = has_keep ? (keep_stride == 0 ? n : rows * keep_stride) : 0;
        READ_ARRAY(uint8_t, keep, keep_count);
        READ_ARRAY(int32_t, x, rows * n);
        uint8_t* x8 = (uint8_t*)alloc(rows * n, 1);
        uint8_t* y = (uint8_t*)alloc(rows * n, 1);
        long long i;
        for (i = 0; i < rows * n; ++i) x8[i] = (uint8_t)x[i];
        if (type == 0)
          qt_softmax_u8(&p, x8, rows, n, has_keep ? keep : NULL, keep_stride, y);
        else
          qt_softmax_s32(&p, x, rows, n, has_keep ? keep : NULL, keep_stride, y);
        PRINT_ARRAY(y, rows * n);
        free(keep);
        free(x);
        free(x8);
        free(y);
      }
    } else if (strcmp(op, "lut8") == 0) {
      const long long input_min = rd(), size = rd();
      READ_ARRAY(uint8_t, table, size);
      {
        const long long n = rd();
        READ_ARRAY(uint8_t, x, n);
        uint8_t* y = (uint8_t*)alloc(n, 1);
        qt_apply_lut_u8(table, (int32_t)input_min, x, n, y);
        PRINT_ARRAY(y, n);
        free(x);
        free(y);
      }
      free(table);
    } else if (strcmp(op, "lutact") == 0) {
      const long long rows = rd(), channels = rd(), count = rd();
      long long i;
      qt_requantizer* req = (qt_requantizer*)alloc(count, sizeof(qt_requantizer));
      for (i = 0; i < count; ++i) req[i] = rd_requantizer();
      {
        READ_ARRAY(uint8_t, table, 65536);
        READ_ARRAY(int32_t, acc, rows * channels);
        uint8_t* y = (uint8_t*)alloc(rows * channels, 1);
        qt_apply_lut_activation(req, count, table, acc, rows, channels, y);
        PRINT_ARRAY(y, rows * channels);
        free(table);
        free(acc);
        free(y);
      }
      free(req);
    } else if (strcmp(op, "relu") == 0) {
      const long long n = rd(), zp = rd();
      READ_ARRAY(uint8_t, x, n);
      uint8_t* y = (uint8_t*)alloc(n, 1);
      qt_relu_u8(x, n, (int32_t)zp, y);
      PRINT_ARRAY(y, n);
      free(x);
      free(y);
    } else if (strcmp(op, "gate") == 0) {
      const long long tokens = rd(), heads = rd(), dim = rd(), zc = rd();
      const qt_requantizer r = rd_requantizer();
      READ_ARRAY(uint8_t, c, tokens * heads * dim);
      READ_ARRAY(uint8_t, g, tokens * heads);
      uint8_t* y = (uint8_t*)alloc(tokens * heads * dim, 1);
      qt_gate_multiply(c, g, tokens, heads, dim, (int32_t)zc, &r, y);
      PRINT_ARRAY(y, tokens * heads * dim);
      free(c);
      free(g);
      free(y);
    } else if (strcmp(op, "isqrt") == 0) {
      unsigned long long n;
      if (scanf("%llu", &n) != 1) exit(3);
      printf("%llu\n", (unsigned long long)qt_integer_sqrt(n));
    } else if (strcmp(op, "ln") == 0) { /* type 0 u8, 1 s16, 2 s32 */
      const long long type = rd(), rows = rd(), C = rd();
      qt_layer_norm_params p;
      p.channels = C;
      p.output = rd_requantizer();
      p.eps_term = rd();
      {
        READ_ARRAY(int8_t, gamma, C);
        READ_ARRAY(int32_t, beta, C);
        READ_ARRAY(int32_t, x, rows * C);
        uint8_t* x8 = (uint8_t*)alloc(rows * C, 1);
        int16_t* x16 = (int16_t*)alloc(rows * C, sizeof(int16_t));
        uint8_t* y = (uint8_t*)alloc(rows * C, 1);
        long long i;
        for (i = 0; i < rows * C; ++i) {
          x8[i] = (uint8_t)x[i];
          x16[i] = (int16_t)x[i];
        }
        p.gamma = gamma;
        p.beta = beta;
        if (type == 0)
          qt_layer_norm_u8(&p, x8, rows, y);
        else if (type == 1)
          qt_layer_norm_s16(&p, x16, rows, y);
        else
          qt_layer_norm_s32(&p, x, rows, y);
        PRINT_ARRAY(y, rows * C);
        free(gamma);
        free(beta);
        free(x);
        free(x8);
        free(x16);
        free(y);
      }
    } else if (strcmp(op, "add") == 0 || strcmp(op, "emb") == 0) {
      /* add: type(0 u8, 1 s16) n; emb: terms tokens dim. Then per term (M0 shift zp), the output
       * requantizer, then the inputs. */
      const int is_add = strcmp(op, "add") == 0;
      const long long first = rd(), second = rd(), third = is_add ? 0 : rd();
      qt_rescale_sum s;
      int i;
      s.terms = is_add ? 2 : (int)first;
      for (i = 0; i < s.terms; ++i) {
        s.input[i] = rd_multiplier();
        s.zero_point[i] = (int32_t)rd();
      }
      s.output = rd_requantizer();
      if (is_add) {
        const long long n = second;
        READ_ARRAY(uint8_t, a, n);
        READ_ARRAY(uint8_t, b, n);
        if (first == 0) {
          uint8_t* y = (uint8_t*)alloc(n, 1);
          qt_add_u8(&s, a, b, n, y);
          PRINT_ARRAY(y, n);
          free(y);
        } else {
          int16_t* y = (int16_t*)alloc(n, sizeof(int16_t));
          qt_add_s16(&s, a, b, n, y);
          PRINT_ARRAY(y, n);
          free(y);
        }
        free(a);
        free(b);
      } else {
        const long long tokens = second, dim = third;
        qt_embedding_term terms[QT_MAX_SUM_TERMS];
        uint8_t* y = (uint8_t*)alloc(tokens * dim, 1);
        for (i = 0; i < s.terms; ++i) { /* kind 1: rows table[rows*dim] ids[tokens]; 0: dense */
          const long long kind = rd();
          memset(&terms[i], 0, sizeof terms[i]);
          if (kind == 1) {
            const long long rows = rd();
            READ_ARRAY(int8_t, table, rows * dim);
            READ_ARRAY(int64_t, ids, tokens);
            terms[i].table = table;
            terms[i].rows = rows;
            terms[i].ids = ids;
          } else {
            READ_ARRAY(uint8_t, dense, tokens * dim);
            terms[i].dense = dense;
          }
        }
        qt_embedding_sum(&s, terms, tokens, dim, y);
        PRINT_ARRAY(y, tokens * dim);
        for (i = 0; i < s.terms; ++i) {
          free((void*)terms[i].table);
          free((void*)terms[i].ids);
          free((void*)terms[i].dense);
        }
        free(y);
      }
    } else {
      fprintf(stderr, "driver: unknown op %s\n", op);
      return 2;
    }
  }
  return 0;
}
