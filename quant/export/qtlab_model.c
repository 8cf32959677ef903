/* qtlab_model.c: the hand-written half of an exported integer model (see qtlab_model.h): the
 * weights reader, the model-level ops and main.
 *
 *   model run   INPUT_DIR OUT_DIR   read the input tensor (input_ids s32 [B, T], or the image
 *                                   codes u8 [B, N, patch_dim]) from a tensor dump, run the
 *                                   forward, dump every tensor (and the ops) to OUT_DIR
 *   model check VECTOR_DIR ...      for each test vector: run its input, compare every tensor
 *                                   with the vector's bit for bit; exit 1 on any difference
 *
 * Both read weights.safetensors from the current directory (or $QTLAB_WEIGHTS). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "qtlab_model.h"

/* ======================================================================== weights */

/* safetensors: an 8-byte little-endian header length n, n bytes of JSON
 * {"name": {"dtype": "I8", "shape": [...], "data_offsets": [begin, end]}, ...}, then the data.
 * The reader looks a name up in the header text; it accepts only what qtlab writes (and any writer
 * that puts each tensor's fields in one flat object), and fails clearly otherwise. */
static unsigned char* qt_weights_file;
static long qt_weights_size;
static const char* qt_weights_header;
static uint64_t qt_weights_header_size;

static void qt_model_fail(const char* what, const char* name) {
  fprintf(stderr, "model: %s%s%s\n", what, name != NULL ? ": " : "", name != NULL ? name : "");
  exit(2);
}

static void qt_load_weights(const char* path) {
  FILE* f = fopen(path, "rb");
  uint64_t n = 0;
  int i;
  if (f == NULL) qt_model_fail("cannot open the weights file", path);
  if (fseek(f, 0, SEEK_END) != 0 || (qt_weights_size = ftell(f)) < 8 || fseek(f, 0, SEEK_SET) != 0)
    qt_model_fail("the weights file is too short", path);
  qt_weights_file = (unsigned char*)malloc((size_t)qt_weights_size + 1);
  if (qt_weights_file == NULL ||
      fread(qt_weights_file, 1, (size_t)qt_weights_size, f) != (size_t)qt_weights_size)
    qt_model_fail("cannot read the weights file", path);
  fclose(f);
  for (i = 7; i >= 0; --i) n = (n << 8) | qt_weights_file[i];
  if (n > (uint64_t)qt_weights_size - 8) qt_model_fail("the weights header is truncated", path);
  qt_weights_header_size = n;
  qt_weights_header = (const char*)qt_weights_file + 8;
}

/* The position just after `"name"` followed by ':' in the header, or NULL. */
static const char* qt_find_key(const char* begin, const char* end, const char* name) {
  const size_t len = strlen(name);
  const char* p = begin;
  while (p + len + 2 < end) {
    if (p[0] == '"' && strncmp(p + 1, name, len) == 0 && p[len + 1] == '"') {
      const char* q = p + len + 2;
      while (q < end && (*q == ' ' || *q == '\n')) ++q;
      if (q < end && *q == ':') return q + 1;
    }
    ++p;
  }
  return NULL;
}

static const void* qt_weight(const char* name, const char* dtype, int64_t numel, int size) {
  const char* end = qt_weights_header + qt_weights_header_size;
  const char *entry = qt_find_key(qt_weights_header, end, name), *close, *field;
  long long begin = -1, stop = -1;
  char want[16];
  if (entry == NULL) qt_model_fail("weights.safetensors has no tensor", name);
  close = entry;
  while (close < end && *close != '}') ++close;
  field = qt_find_key(entry, close, "dtype");
  sprintf(want, "\"%s\"", dtype);
  while (field != NULL && field < close && *field == ' ') ++field;
  if (field == NULL || strncmp(field, want, strlen(want)) != 0)
    qt_model_fail("weight has the wrong dtype (expected another)", name);
  field = qt_find_key(entry, close, "data_offsets");
  if (field == NULL || sscanf(field, " [ %lld , %lld ]", &begin, &stop) != 2)
    qt_model_fail("weight has no data_offsets", name);
  if (begin < 0 || stop - begin != numel * size ||
      (uint64_t)stop > (uint64_t)qt_weights_size - 8 - qt_weights_header_size)
    qt_model_fail("weight has the wrong size for its op", name);
  return qt_weights_file + 8 + qt_weights_header_size + begin;
}

const int8_t* qt_weight_s8(const char* name, int64_t numel) {
  return (const int8_t*)qt_weight(name, "I8", numel, 1);
}
const int32_t* qt_weight_s32(const char* name, int64_t numel) {
  return (const int32_t*)qt_weight(name, "I32", numel, 4);
}
const uint8_t* qt_weight_u8(const char* name, int64_t numel) {
  return (const uint8_t*)qt_weight(name, "U8", numel, 1);
}

/* ======================================================================== model-level ops */

static void* qt_alloc(size_t n) {
  void* p = calloc(n > 0 ? n : 1, 1);
  if (p == NULL) qt_model_fail("out of memory", NULL);
  return p;
}

void qt_model_text_embedding(const qt_rescale_sum* sum, const int8_t* tokens, int64_t token_rows,
                             const int8_t* positions, int64_t position_rows, int64_t offset,
                             const int32_t* ids, int64_t B, int64_t T, int64_t d, uint8_t* out) {
  int64_t* token_ids = (int64_t*)qt_alloc((size_t)(B * T) * sizeof(int64_t));
  int64_t* position_ids = (int64_t*)qt_alloc((size_t)(B * T) * sizeof(int64_t));
  qt_embedding_term terms[2];
  int64_t i;
  if (offset + T > position_rows) qt_model_fail("more tokens than position rows", NULL);
  for (i = 0; i < B * T; ++i) {
    token_ids[i] = ids[i];
    position_ids[i] = offset + i % T;
  }
  terms[0].table = tokens;
  terms[0].rows = token_rows;
  terms[0].ids = token_ids;
  terms[0].dense = NULL;
  terms[1].table = positions;
  terms[1].rows = position_rows;
  terms[1].ids = position_ids;
  terms[1].dense = NULL;
  qt_embedding_sum(sum, terms, B * T, d, out);
  free(token_ids);
  free(position_ids);
}

/* Row 0 of each image: cls + position 0; rows 1..N: patch i + position i. */
void qt_model_image_embedding(const qt_rescale_sum* first_sum, const qt_rescale_sum* sum,
                              const int8_t* cls, const int8_t* positions, const uint8_t* patches,
                              int64_t B, int64_t N, int64_t d, uint8_t* out) {
  int64_t* ids = (int64_t*)qt_alloc((size_t)(N + 1) * sizeof(int64_t));
  qt_embedding_term terms[2];
  int64_t b, i;
  for (i = 0; i <= N; ++i) ids[i] = i;
  for (b = 0; b < B; ++b) {
    terms[0].table = cls;
    terms[0].rows = 1;
    terms[0].ids = ids; /* ids[0] = 0 */
    terms[0].dense = NULL;
    terms[1].table = positions;
    terms[1].rows = N + 1;
    terms[1].ids = ids;
    terms[1].dense = NULL;
    qt_embedding_sum(first_sum, terms, 1, d, out + b * (N + 1) * d);
    terms[0].table = NULL;
    terms[0].rows = 0;
    terms[0].ids = NULL;
    terms[0].dense = patches + b * N * d;
    terms[1].ids = ids + 1;
    qt_embedding_sum(sum, terms, N, d, out + (b * (N + 1) + 1) * d);
  }
  free(ids);
}

void qt_model_linear_lut(const qt_linear_params* p, const qt_requantizer* to_input,
                         int64_t to_input_count, const uint8_t* table, const uint8_t* x,
                         int64_t rows, uint8_t* y) {
  int32_t* acc = (int32_t*)qt_alloc((size_t)(rows * p->out_features) * sizeof(int32_t));
  qt_linear_accumulators(p, x, rows, 0, acc);
  qt_apply_lut_activation(to_input, to_input_count, table, acc, rows, p->out_features, y);
  free(acc);
}

/* Per head h: acc = sum_k (q - Zq)(k - Zk) over the head's d_h features, requantized. */
void qt_model_attention_scores(const uint8_t* q, int32_t q_zero_point, const uint8_t* k,
                               int32_t k_zero_point, int64_t B, int64_t T, int64_t H, int64_t dh,
                               const qt_requantizer* r, uint8_t* out) {
  const int64_t d = H * dh;
  int32_t* acc = (int32_t*)qt_alloc((size_t)(B * T * T) * sizeof(int32_t));
  int64_t h, b, i;
  for (h = 0; h < H; ++h) {
    qt_u8_matrix A, K;
    A.data = q + h * dh;
    A.ld = d;
    A.batch_stride = T * d;
    A.zero_point = q_zero_point;
    K.data = k + h * dh;
    K.ld = d;
    K.batch_stride = T * d;
    K.zero_point = k_zero_point;
    qt_matmul_u8u8(B, T, T, dh, &A, &K, QT_B_NK, acc);
    for (b = 0; b < B; ++b)
      for (i = 0; i < T * T; ++i)
        out[(b * H + h) * T * T + i] = (uint8_t)qt_requantize(acc[b * T * T + i], r);
  }
  free(acc);
}

void qt_model_softmax(const qt_softmax_params* p, const uint8_t* scores, int64_t B, int64_t H,
                      int64_t T, int causal, uint8_t* out) {
  uint8_t* keep = NULL;
  int64_t i, j, bh;
  if (causal) {
    keep = (uint8_t*)qt_alloc((size_t)(T * T));
    for (i = 0; i < T; ++i)
      for (j = 0; j <= i; ++j) keep[i * T + j] = 1;
  }
  for (bh = 0; bh < B * H; ++bh)
    qt_softmax_u8(p, scores + bh * T * T, T, T, keep, causal ? T : 0, out + bh * T * T);
  free(keep);
}

/* Per head h: acc = sum_j p_j (v_j - Zv), requantized into the head's columns. */
void qt_model_attention_context(const uint8_t* probabilities, const uint8_t* v,
                                int32_t v_zero_point, int64_t B, int64_t T, int64_t H, int64_t dh,
                                const qt_requantizer* r, uint8_t* out) {
  const int64_t d = H * dh;
  int32_t* acc = (int32_t*)qt_alloc((size_t)(B * T * dh) * sizeof(int32_t));
  int64_t h, row, n;
  for (h = 0; h < H; ++h) {
    qt_u8_matrix P, V;
    P.data = probabilities + h * T * T;
    P.ld = T;
    P.batch_stride = H * T * T;
    P.zero_point = 0;
    V.data = v + h * dh;
    V.ld = d;
    V.batch_stride = T * d;
    V.zero_point = v_zero_point;
    qt_matmul_u8u8(B, T, dh, T, &P, &V, QT_B_KN, acc);
    for (row = 0; row < B * T; ++row)
      for (n = 0; n < dh; ++n)
        out[row * d + h * dh + n] = (uint8_t)qt_requantize(acc[row * dh + n], r);
  }
  free(acc);
}

/* logit[r, h] = sum_k (x[r, h dh + k] - Zx) w[h, k] + b[h]; pi = table(to_input[h](logit)). */
void qt_model_gate_per_head(const int8_t* weight, const int32_t* bias, int32_t x_zero_point,
                            const qt_requantizer* to_input, const uint8_t* table, const uint8_t* x,
                            int64_t R, int64_t H, int64_t dh, uint8_t* out) {
  int32_t* acc = (int32_t*)qt_alloc((size_t)(R * H) * sizeof(int32_t));
  int32_t* head = (int32_t*)qt_alloc((size_t)R * sizeof(int32_t));
  const qt_requantizer unused = {{0, 0}, 0, 0, 255, QT_DOUBLE_ROUNDING};
  int64_t h, r;
  for (h = 0; h < H; ++h) {
    qt_linear_params p;
    p.in_features = dh;
    p.out_features = 1;
    p.weight = weight + h * dh;
    p.bias = bias + h;
    p.input_zero_point = x_zero_point;
    p.output = &unused;
    p.output_count = 1;
    qt_linear_accumulators(&p, x + h * dh, R, H * dh, head);
    for (r = 0; r < R; ++r) acc[r * H + h] = head[r];
  }
  qt_apply_lut_activation(to_input, H, table, acc, R, H, out);
  free(head);
  free(acc);
}

/* Per head: hidden = ReLU(W1_h x_h + b1_h) requantized to u8, logit = w2_h . hidden + b2_h. */
void qt_model_gate_mlp(const int8_t* hidden_weight, const int32_t* hidden_bias,
                       const qt_requantizer* hidden_output, int32_t x_zero_point, int64_t n_hid,
                       const int8_t* output_weight, const int32_t* output_bias,
                       int32_t hidden_zero_point, const qt_requantizer* to_input,
                       const uint8_t* table, const uint8_t* x, int64_t R, int64_t H, int64_t dh,
                       uint8_t* out) {
  int32_t* acc = (int32_t*)qt_alloc((size_t)(R * H) * sizeof(int32_t));
  int32_t* head = (int32_t*)qt_alloc((size_t)R * sizeof(int32_t));
  uint8_t* hidden = (uint8_t*)qt_alloc((size_t)(R * n_hid));
  const qt_requantizer unused = {{0, 0}, 0, 0, 255, QT_DOUBLE_ROUNDING};
  int64_t h, r;
  for (h = 0; h < H; ++h) {
    qt_linear_params p1, p2;
    p1.in_features = dh;
    p1.out_features = n_hid;
    p1.weight = hidden_weight + h * n_hid * dh;
    p1.bias = hidden_bias + h * n_hid;
    p1.input_zero_point = x_zero_point;
    p1.output = hidden_output + h;
    p1.output_count = 1;
    qt_linear_relu(&p1, x + h * dh, R, H * dh, hidden);
    p2.in_features = n_hid;
    p2.out_features = 1;
    p2.weight = output_weight + h * n_hid;
    p2.bias = output_bias + h;
    p2.input_zero_point = hidden_zero_point;
    p2.output = &unused;
    p2.output_count = 1;
    qt_linear_accumulators(&p2, hidden, R, 0, head);
    for (r = 0; r < R; ++r) acc[r * H + h] = head[r];
  }
  qt_apply_lut_activation(to_input, H, table, acc, R, H, out);
  free(hidden);
  free(head);
  free(acc);
}

void qt_model_gate_all_heads(const qt_linear_params* p, const qt_requantizer* to_input,
                             const uint8_t* table, const uint8_t* x, int64_t R, int64_t H,
                             uint8_t* out) {
  qt_model_linear_lut(p, to_input, H, table, x, R, out);
}

void qt_model_gate_constant(const uint8_t* codes, int64_t R, int64_t H, uint8_t* out) {
  int64_t r;
  for (r = 0; r < R; ++r) memcpy(out + r * H, codes, (size_t)H);
}

void qt_model_first_token(const uint8_t* x, int64_t B, int64_t T, int64_t d, uint8_t* out) {
  int64_t b;
  for (b = 0; b < B; ++b) memcpy(out + b * d, x + b * T * d, (size_t)d);
}

/* ======================================================================== tensors */

static int qt_shape(const qt_model_state* s, int t, int64_t shape[4]) {
  const qt_model_tensor* info = &qt_model_tensors[t];
  switch (info->layout) {
    case QT_LAYOUT_TOKENS:
      shape[0] = s->batch * s->length;
      shape[1] = info->width;
      return 2;
    case QT_LAYOUT_ATTENTION:
      shape[0] = s->batch;
      shape[1] = qt_model_heads;
      shape[2] = s->length;
      shape[3] = s->length;
      return 4;
    case QT_LAYOUT_TOKEN_IDS:
      shape[0] = s->batch;
      shape[1] = s->length;
      return 2;
    case QT_LAYOUT_IMAGES:
      shape[0] = s->batch;
      shape[1] = qt_model_patches;
      shape[2] = info->width;
      return 3;
    case QT_LAYOUT_FIRST_ROWS:
      shape[0] = s->batch;
      shape[1] = info->width;
      return 2;
  }
  return 0;
}

static int64_t qt_numel(const qt_model_state* s, int t) {
  int64_t shape[4], n = 1;
  int i, rank = qt_shape(s, t, shape);
  for (i = 0; i < rank; ++i) n *= shape[i];
  return n;
}

static int qt_size(qt_dtype dtype) {
  return dtype == QT_S32 ? 4 : dtype == QT_S16 ? 2 : 1;
}

/* The input's shape, read from DIR/manifest.json (the "shape" after the input's "name"). */
static void qt_input_shape(const char* dir, int64_t shape[3], int rank) {
  char path[1400], key[256];
  FILE* f;
  long n;
  char *text, *p;
  int i;
  sprintf(path, "%.1300s/manifest.json", dir);
  f = fopen(path, "rb");
  if (f == NULL) qt_model_fail("cannot open", path);
  fseek(f, 0, SEEK_END);
  n = ftell(f);
  fseek(f, 0, SEEK_SET);
  text = (char*)qt_alloc((size_t)n + 1);
  if (fread(text, 1, (size_t)n, f) != (size_t)n) qt_model_fail("cannot read", path);
  fclose(f);
  text[n] = '\0';
  sprintf(key, "\"%.200s\"", qt_model_tensors[qt_model_input].name);
  p = strstr(text, key);
  if (p != NULL) p = strstr(p, "\"shape\"");
  if (p == NULL) qt_model_fail("the manifest has no shape for the input tensor", path);
  p = strchr(p, '[');
  for (i = 0; i < rank; ++i) {
    char* next;
    if (p == NULL) qt_model_fail("cannot parse the input shape in", path);
    shape[i] = strtoll(p + 1, &next, 10);
    p = strchr(next, i + 1 < rank ? ',' : ']');
  }
  free(text);
}

static void qt_run_input(qt_model_state* s, const char* dir) {
  int64_t shape[3] = {0, 0, 0};
  int t;
  const int images = qt_model_patches > 0;
  qt_input_shape(dir, shape, images ? 3 : 2);
  s->batch = shape[0];
  s->length = images ? qt_model_patches + 1 : shape[1];
  if (s->batch < 1 ||
      (images ? shape[1] != qt_model_patches : s->length < 1 || s->length > qt_model_max_length))
    qt_model_fail("the input's shape does not fit the model", dir);
  for (t = 0; t < qt_model_tensor_count; ++t)
    s->buffer[t] = qt_alloc((size_t)(qt_numel(s, t) * qt_size(qt_model_tensors[t].dtype)));
  if (qt_dump_read(dir, qt_model_tensors[qt_model_input].name,
                   qt_model_tensors[qt_model_input].dtype, qt_numel(s, qt_model_input),
                   s->buffer[qt_model_input]) != 0)
    qt_model_fail("cannot read the input tensor from", dir);
  if (!images) {
    const int32_t* ids = (const int32_t*)s->buffer[qt_model_input];
    int64_t i;
    for (i = 0; i < s->batch * s->length; ++i)
      if (ids[i] < 0 || ids[i] >= qt_model_vocab_size)
        qt_model_fail("a token id is out of range", dir);
  }
  qt_model_forward(s);
}

static void qt_free_state(qt_model_state* s) {
  int t;
  for (t = 0; t < qt_model_tensor_count; ++t) free(s->buffer[t]);
}

static int qt_dump_all(const qt_model_state* s, const char* dir) {
  static qt_dump_writer w;
  int t, o;
  if (qt_dump_begin(&w, dir) != 0) return -1;
  for (t = 0; t < qt_model_tensor_count; ++t) {
    int64_t shape[4];
    const int rank = qt_shape(s, t, shape);
    const qt_model_tensor* info = &qt_model_tensors[t];
    if (qt_dump_tensor(&w, info->name, info->dtype, rank, shape, info->scale, info->zero_point,
                       s->buffer[t]) != 0)
      return -1;
  }
  for (o = 0; o < qt_model_op_count; ++o) {
    const qt_model_op* op = &qt_model_ops[o];
    const char* inputs[3] = {NULL, NULL, NULL};
    const char* outputs[2] = {NULL, NULL};
    int i;
    for (i = 0; i < op->n_inputs; ++i) inputs[i] = qt_model_tensors[op->inputs[i]].name;
    outputs[0] = qt_model_tensors[op->output].name;
    if (qt_dump_op(&w, op->name, op->kind, op->rounding, inputs, outputs) != 0) return -1;
  }
  return qt_dump_finish(&w);
}

/* Code i of a u8 or s32 tensor. */
static long qt_code(qt_dtype dtype, const void* codes, int64_t i) {
  return dtype == QT_S32 ? (long)((const int32_t*)codes)[i] : (long)((const uint8_t*)codes)[i];
}

/* Compares every tensor with DIR's; prints the first difference of each differing tensor. */
static int qt_check_vector(const qt_model_state* s, const char* dir) {
  int t, failed = 0;
  for (t = 0; t < qt_model_tensor_count; ++t) {
    const qt_model_tensor* info = &qt_model_tensors[t];
    const int64_t n = qt_numel(s, t);
    const int size = qt_size(info->dtype);
    void* expected = qt_alloc((size_t)(n * size));
    int64_t i, mismatches = 0, first = -1;
    if (qt_dump_read(dir, info->name, info->dtype, n, expected) != 0) {
      printf("  %-56s missing or wrong size in %s\n", info->name, dir);
      failed = 1;
      free(expected);
      continue;
    }
    for (i = 0; i < n; ++i)
      if (qt_code(info->dtype, s->buffer[t], i) != qt_code(info->dtype, expected, i)) {
        if (first < 0) first = i;
        ++mismatches;
      }
    if (mismatches > 0) {
      const long a = qt_code(info->dtype, s->buffer[t], first);
      const long b = qt_code(info->dtype, expected, first);
      printf(
          "  %-56s %lld of %lld codes differ; first at flat index %lld: vector %ld, this "
          "program %ld\n",
          info->name, (long long)mismatches, (long long)n, (long long)first, b, a);
      failed = 1;
    }
    free(expected);
  }
  return failed;
}

int main(int argc, char** argv) {
  const char* weights = getenv("QTLAB_WEIGHTS");
  qt_model_state s;
  int i, failed = 0;
  if (argc < 3 || (strcmp(argv[1], "run") == 0 ? argc != 4 : strcmp(argv[1], "check") != 0)) {
    fprintf(stderr,
            "usage: %s run INPUT_DIR OUT_DIR | %s check VECTOR_DIR...\n"
            "  (weights: ./weights.safetensors or $QTLAB_WEIGHTS)\n",
            argv[0], argv[0]);
    return 2;
  }
  qt_load_weights(weights != NULL ? weights : "weights.safetensors");
  if (qt_model_tensor_count > QT_MODEL_MAX_TENSORS) qt_model_fail("too many tensors", NULL);
  if (strcmp(argv[1], "run") == 0) {
    memset(&s, 0, sizeof s);
    qt_run_input(&s, argv[2]);
    failed = qt_dump_all(&s, argv[3]) != 0;
    qt_free_state(&s);
    return failed ? 2 : 0;
  }
  for (i = 2; i < argc; ++i) {
    int bad;
    memset(&s, 0, sizeof s);
    qt_run_input(&s, argv[i]);
    bad = qt_check_vector(&s, argv[i]);
    printf("%s: %s (%d tensors, B = %lld, T = %lld)\n", argv[i],
           bad ? "MISMATCH" : "all tensors bit-identical", qt_model_tensor_count,
           (long long)s.batch, (long long)s.length);
    failed |= bad;
    qt_free_state(&s);
  }
  return failed;
}
