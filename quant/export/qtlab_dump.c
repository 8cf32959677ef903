/* qtlab_dump.c: the integer tensor dump in C99 (see qtlab_dump.h). */
#include "qtlab_dump.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ======================================================================== SHA-256, FIPS 180-4
 * §6.2: pad with 0x80, zeros and the bit length (big-endian u64) to a multiple of 64 bytes, then
 * the 64-round compression per block. */
static const uint32_t qt_sha_k[64] = {
    0x428a2f98, 0x71374491, 0xb5c0fbcf, 0xe9b5dba5, 0x3956c25b, 0x59f111f1, 0x923f82a4, 0xab1c5ed5,
    0xd807aa98, 0x12835b01, 0x243185be, 0x550c7dc3, 0x72be5d74, 0x80deb1fe, 0x9bdc06a7, 0xc19bf174,
    0xe49b69c1, 0xefbe4786, 0x0fc19dc6, 0x240ca1cc, 0x2de92c6f, 0x4a7484aa, 0x5cb0a9dc, 0x76f988da,
    0x983e5152, 0xa831c66d, 0xb00327c8, 0xbf597fc7, 0xc6e00bf3, 0xd5a79147, 0x06ca6351, 0x14292967,
    0x27b70a85, 0x2e1b2138, 0x4d2c6dfc, 0x53380d13, 0x650a7354, 0x766a0abb, 0x81c2c92e, 0x92722c85,
    0xa2bfe8a1, 0xa81a664b, 0xc24b8b70, 0xc76c51a3, 0xd192e819, 0xd6990624, 0xf40e3585, 0x106aa070,
    0x19a4c116, 0x1e376c08, 0x2748774c, 0x34b0bcb5, 0x391c0cb3, 0x4ed8aa4a, 0x5b9cca4f, 0x682e6ff3,
    0x748f82ee, 0x78a5636f, 0x84c87814, 0x8cc70208, 0x90befffa, 0xa4506ceb, 0xbef9a3f7, 0xc67178f2};

#define QT_ROTR(x, n) (((x) >> (n)) | ((x) << (32 - (n))))

static void qt_sha_block(uint32_t h[8], const unsigned char* b) {
  uint32_t w[64], a, bb, c, d, e, f, g, k, t1, t2;
  int t;
  for (t = 0; t < 16; ++t)
    w[t] = ((uint32_t)b[4 * t] << 24) | ((uint32_t)b[4 * t + 1] << 16) |
           ((uint32_t)b[4 * t + 2] << 8) | (uint32_t)b[4 * t + 3];
  for (t = 16; t < 64; ++t) {
    const uint32_t s0 = QT_ROTR(w[t - 15], 7) ^ QT_ROTR(w[t - 15], 18) ^ (w[t - 15] >> 3);
    const uint32_t s1 = QT_ROTR(w[t - 2], 17) ^ QT_ROTR(w[t - 2], 19) ^ (w[t - 2] >> 10);
    w[t] = w[t - 16] + s0 + w[t - 7] + s1;
  }
  a = h[0], bb = h[1], c = h[2], d = h[3], e = h[4], f = h[5], g = h[6], k = h[7];
  for (t = 0; t < 64; ++t) {
    t1 = k + (QT_ROTR(e, 6) ^ QT_ROTR(e, 11) ^ QT_ROTR(e, 25)) + ((e & f) ^ (~e & g)) +
         qt_sha_k[t] + w[t];
    t2 = (QT_ROTR(a, 2) ^ QT_ROTR(a, 13) ^ QT_ROTR(a, 22)) + ((a & bb) ^ (a & c) ^ (bb & c));
    k = g, g = f, f = e, e = d + t1, d = c, c = bb, bb = a, a = t1 + t2;
  }
  h[0] += a, h[1] += bb, h[2] += c, h[3] += d, h[4] += e, h[5] += f, h[6] += g, h[7] += k;
}

void qt_sha256_hex(const void* data, size_t n, char hex[65]) {
  uint32_t h[8] = {0x6a09e667, 0xbb67ae85, 0x3c6ef372, 0xa54ff53a,
                   0x510e527f, 0x9b05688c, 0x1f83d9ab, 0x5be0cd19};
  const unsigned char* bytes = (const unsigned char*)data;
  unsigned char tail[128];
  const size_t full = n / 64, rest = n % 64, tail_size = rest < 56 ? 64 : 128;
  const uint64_t bits = (uint64_t)n * 8;
  size_t i;
  int j;
  for (i = 0; i < full; ++i) qt_sha_block(h, bytes + 64 * i);
  memset(tail, 0, sizeof tail);
  if (rest > 0) memcpy(tail, bytes + 64 * full, rest);
  tail[rest] = 0x80;
  for (j = 0; j < 8; ++j) tail[tail_size - 1 - j] = (unsigned char)(bits >> (8 * j));
  for (i = 0; i < tail_size; i += 64) qt_sha_block(h, tail + i);
  for (j = 0; j < 8; ++j) sprintf(hex + 8 * j, "%08lx", (unsigned long)h[j]);
  hex[64] = '\0';
}

/* ======================================================================== files */

static const char* const qt_dtype_names[] = {"u8", "s8", "s16", "s32"};
static const int qt_dtype_sizes[] = {1, 1, 2, 4};

static int qt_valid_name(const char* name) {
  size_t i, n = strlen(name);
  if (n == 0 || n > QT_DUMP_MAX_NAME || name[0] == '.') return 0;
  for (i = 0; i < n; ++i) {
    const char c = name[i];
    if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_' ||
          c == '.' || c == '-'))
      return 0;
  }
  return 1;
}

static int qt_path(char* out, size_t size, const char* dir, const char* file) {
  const int n = snprintf(out, size, "%s/%s", dir, file);
  return n > 0 && (size_t)n < size ? 0 : -1;
}

int qt_dump_read(const char* dir, const char* name, qt_dtype dtype, int64_t numel, void* out) {
  char path[1400], file[QT_DUMP_MAX_NAME + 8];
  const int size = qt_dtype_sizes[dtype];
  unsigned char* bytes;
  int64_t i, got;
  FILE* f;
  sprintf(file, "%.200s.bin", name);
  if (!qt_valid_name(name) || qt_path(path, sizeof path, dir, file) != 0) {
    fprintf(stderr, "qtlab_dump: bad tensor name or path \"%s\"\n", name);
    return -1;
  }
  f = fopen(path, "rb");
  if (f == NULL) {
    fprintf(stderr, "qtlab_dump: tensor \"%s\": cannot open %s\n", name, path);
    return -1;
  }
  bytes = (unsigned char*)malloc((size_t)(numel * size + 1));
  got = bytes == NULL ? -1 : (int64_t)fread(bytes, 1, (size_t)(numel * size + 1), f);
  fclose(f);
  if (got != numel * size) {
    fprintf(stderr, "qtlab_dump: tensor \"%s\": %s has %lld bytes, %s needs %lld\n", name, path,
            (long long)got, qt_dtype_names[dtype], (long long)(numel * size));
    free(bytes);
    return -1;
  }
  /* Little-endian bytes -> codes, independent of the host's byte order. */
  for (i = 0; i < numel; ++i) {
    const unsigned char* b = bytes + i * size;
    switch (dtype) {
      case QT_U8:
        ((uint8_t*)out)[i] = b[0];
        break;
      case QT_S8:
        ((int8_t*)out)[i] = (int8_t)(b[0] < 128 ? (int)b[0] : (int)b[0] - 256);
        break;
      case QT_S16: {
        const long v = (long)b[0] | ((long)b[1] << 8);
        ((int16_t*)out)[i] = (int16_t)(v < 32768 ? v : v - 65536);
        break;
      }
      case QT_S32: {
        const uint32_t v = (uint32_t)b[0] | ((uint32_t)b[1] << 8) | ((uint32_t)b[2] << 16) |
                           ((uint32_t)b[3] << 24);
        ((int32_t*)out)[i] =
            v < 0x80000000u ? (int32_t)v : (int32_t)(v - 0x80000000u) - 2147483647 - 1;
        break;
      }
    }
  }
  free(bytes);
  return 0;
}

int qt_dump_begin(qt_dump_writer* w, const char* dir) {
  if (strlen(dir) >= sizeof w->dir) {
    fprintf(stderr, "qtlab_dump: directory name too long\n");
    return -1;
  }
  strcpy(w->dir, dir);
  w->n_tensors = 0;
  w->n_ops = 0;
  return 0;
}

int qt_dump_tensor(qt_dump_writer* w, const char* name, qt_dtype dtype, int rank,
                   const int64_t* shape, double scale, int64_t zero_point, const void* codes) {
  char path[1400], file[QT_DUMP_MAX_NAME + 8];
  const int size = qt_dtype_sizes[dtype];
  qt_dump_tensor_entry* t;
  unsigned char* bytes;
  int64_t numel = 1, i;
  int d, b;
  FILE* f;
  if (!qt_valid_name(name) || w->n_tensors >= QT_DUMP_MAX_TENSORS || rank < 0 ||
      rank > QT_DUMP_MAX_RANK) {
    fprintf(stderr, "qtlab_dump: tensor \"%s\": bad name, rank or too many tensors\n", name);
    return -1;
  }
  t = &w->tensors[w->n_tensors];
  strcpy(t->name, name);
  t->dtype = dtype;
  t->rank = rank;
  for (d = 0; d < rank; ++d) numel *= t->shape[d] = shape[d];
  t->scale = scale;
  t->zero_point = zero_point;
  bytes = (unsigned char*)malloc((size_t)(numel * size + 1));
  if (bytes == NULL) return -1;
  for (i = 0; i < numel; ++i) { /* codes -> little-endian bytes */
    uint32_t v = 0;
    switch (dtype) {
      case QT_U8:
        v = ((const uint8_t*)codes)[i];
        break;
      case QT_S8:
        v = (uint32_t)(int32_t)((const int8_t*)codes)[i];
        break;
      case QT_S16:
        v = (uint32_t)(int32_t)((const int16_t*)codes)[i];
        break;
      case QT_S32:
        v = (uint32_t)((const int32_t*)codes)[i];
        break;
    }
    for (b = 0; b < size; ++b) bytes[i * size + b] = (unsigned char)((v >> (8 * b)) & 0xff);
  }
  qt_sha256_hex(bytes, (size_t)(numel * size), t->sha256);
  sprintf(file, "%.200s.bin", name);
  if (qt_path(path, sizeof path, w->dir, file) != 0 || (f = fopen(path, "wb")) == NULL) {
    fprintf(stderr, "qtlab_dump: tensor \"%s\": cannot create %s/%s\n", name, w->dir, file);
    free(bytes);
    return -1;
  }
  if (fwrite(bytes, 1, (size_t)(numel * size), f) != (size_t)(numel * size) || fclose(f) != 0) {
    fprintf(stderr, "qtlab_dump: tensor \"%s\": error writing %s\n", name, path);
    free(bytes);
    return -1;
  }
  free(bytes);
  ++w->n_tensors;
  return 0;
}

static int qt_copy_names(char (*out)[QT_DUMP_MAX_NAME + 1], int* count, const char* const* names,
                         const char* op) {
  *count = 0;
  for (; names != NULL && *names != NULL; ++names) {
    if (*count >= QT_DUMP_MAX_OP_TENSORS || !qt_valid_name(*names)) {
      fprintf(stderr, "qtlab_dump: op \"%s\": bad tensor name or too many\n", op);
      return -1;
    }
    strcpy(out[(*count)++], *names);
  }
  return 0;
}

int qt_dump_op(qt_dump_writer* w, const char* name, const char* kind, const char* rounding,
               const char* const* inputs, const char* const* outputs) {
  qt_dump_op_entry* op;
  if (!qt_valid_name(name) || !qt_valid_name(kind) || strlen(rounding) >= 32 ||
      w->n_ops >= QT_DUMP_MAX_OPS) {
    fprintf(stderr, "qtlab_dump: op \"%s\": bad name, kind or rounding, or too many ops\n", name);
    return -1;
  }
  op = &w->ops[w->n_ops];
  strcpy(op->name, name);
  strcpy(op->kind, kind);
  strcpy(op->rounding, rounding);
  if (qt_copy_names(op->inputs, &op->n_inputs, inputs, name) != 0 ||
      qt_copy_names(op->outputs, &op->n_outputs, outputs, name) != 0)
    return -1;
  ++w->n_ops;
  return 0;
}

static void qt_names_json(FILE* f, char (*names)[QT_DUMP_MAX_NAME + 1], int count) {
  int i;
  fputc('[', f);
  for (i = 0; i < count; ++i) fprintf(f, "%s\"%s\"", i ? ", " : "", names[i]);
  fputc(']', f);
}

/* Names are [A-Za-z0-9_.-]+ (checked when recorded), so no JSON escaping is needed; scales are
 * printed with 17 significant digits, which round-trips every double. */
int qt_dump_finish(const qt_dump_writer* w) {
  char path[1400];
  FILE* f;
  int i, d;
  if (qt_path(path, sizeof path, w->dir, "manifest.json") != 0 || (f = fopen(path, "w")) == NULL) {
    fprintf(stderr, "qtlab_dump: cannot create %s/manifest.json\n", w->dir);
    return -1;
  }
  fprintf(f, "{\n \"format\": \"qtlab-int-dump\",\n \"version\": 1,\n \"tensors\": [\n");
  for (i = 0; i < w->n_tensors; ++i) {
    const qt_dump_tensor_entry* t = &w->tensors[i];
    fprintf(f, "  {\"name\": \"%s\", \"dtype\": \"%s\", \"shape\": [", t->name,
            qt_dtype_names[t->dtype]);
    for (d = 0; d < t->rank; ++d) fprintf(f, "%s%lld", d ? ", " : "", (long long)t->shape[d]);
    fprintf(
        f,
        "], \"scale\": %.17g, \"zero_point\": %lld, \"file\": \"%s.bin\", \"sha256\": \"%s\"}%s\n",
        t->scale, (long long)t->zero_point, t->name, t->sha256, i + 1 < w->n_tensors ? "," : "");
  }
  fprintf(f, " ],\n \"ops\": [\n");
  for (i = 0; i < w->n_ops; ++i) {
    const qt_dump_op_entry* op = &w->ops[i];
    fprintf(f,
            "  {\"name\": \"%s\", \"kind\": \"%s\", \"rounding\": \"%s\", \"inputs\": ", op->name,
            op->kind, op->rounding);
    qt_names_json(f, (char(*)[QT_DUMP_MAX_NAME + 1]) op->inputs, op->n_inputs);
    fprintf(f, ", \"outputs\": ");
    qt_names_json(f, (char(*)[QT_DUMP_MAX_NAME + 1]) op->outputs, op->n_outputs);
    fprintf(f, "}%s\n", i + 1 < w->n_ops ? "," : "");
  }
  fprintf(f, " ]\n}\n");
  if (fclose(f) != 0) {
    fprintf(stderr, "qtlab_dump: error writing %s\n", path);
    return -1;
  }
  return 0;
}
