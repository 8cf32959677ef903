/* qtlab_dump.h: reading and writing qtlab's integer tensor dump (docs/integer-reference.md) in
 * C99, libc only, so that an exported model or a third-party kernel can produce a dump that
 * `qtlab check` compares with the reference.
 *
 *   DIR/<name>.bin     the codes, row-major, little-endian, no header
 *   DIR/manifest.json  format "qtlab-int-dump", version 1, the tensors (dtype, shape, scale,
 *                      zero point, sha256) and the ops in execution order
 *
 * Every function returns 0 on success, or prints what is wrong (the file and the tensor) to
 * stderr and returns -1. */
#ifndef QTLAB_DUMP_H
#define QTLAB_DUMP_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef enum { QT_U8 = 0, QT_S8 = 1, QT_S16 = 2, QT_S32 = 3 } qt_dtype;

/* SHA-256 (FIPS 180-4) of n bytes as 64 lowercase hex digits and a terminating NUL. */
void qt_sha256_hex(const void* data, size_t n, char hex[65]);

/* Reads DIR/<name>.bin into `out` (numel codes of dtype, host order). Fails unless the file has
 * exactly numel * size(dtype) bytes. */
int qt_dump_read(const char* dir, const char* name, qt_dtype dtype, int64_t numel, void* out);

#define QT_DUMP_MAX_TENSORS 1024
#define QT_DUMP_MAX_OPS 1024
#define QT_DUMP_MAX_RANK 8
#define QT_DUMP_MAX_NAME 200
#define QT_DUMP_MAX_OP_TENSORS 8

typedef struct {
  char name[QT_DUMP_MAX_NAME + 1];
  qt_dtype dtype;
  int rank;
  int64_t shape[QT_DUMP_MAX_RANK];
  double scale;
  int64_t zero_point;
  char sha256[65];
} qt_dump_tensor_entry;

typedef struct {
  char name[QT_DUMP_MAX_NAME + 1], kind[QT_DUMP_MAX_NAME + 1], rounding[32];
  int n_inputs, n_outputs;
  char inputs[QT_DUMP_MAX_OP_TENSORS][QT_DUMP_MAX_NAME + 1];
  char outputs[QT_DUMP_MAX_OP_TENSORS][QT_DUMP_MAX_NAME + 1];
} qt_dump_op_entry;

/* A dump being written: tensors and ops are recorded in order, the manifest at qt_dump_finish. */
typedef struct {
  char dir[1024];
  int n_tensors, n_ops;
  qt_dump_tensor_entry tensors[QT_DUMP_MAX_TENSORS];
  qt_dump_op_entry ops[QT_DUMP_MAX_OPS];
} qt_dump_writer;

/* DIR must exist. */
int qt_dump_begin(qt_dump_writer* w, const char* dir);
/* Writes DIR/<name>.bin (little-endian) and records its entry. name: [A-Za-z0-9_.-]+. */
int qt_dump_tensor(qt_dump_writer* w, const char* name, qt_dtype dtype, int rank,
                   const int64_t* shape, double scale, int64_t zero_point, const void* codes);
/* Records an op; inputs / outputs are NULL-terminated lists of tensor names. rounding: one of
 * double_rounding, single_half_up, single_half_away, single_half_even, none. */
int qt_dump_op(qt_dump_writer* w, const char* name, const char* kind, const char* rounding,
               const char* const* inputs, const char* const* outputs);
/* Writes DIR/manifest.json. */
int qt_dump_finish(const qt_dump_writer* w);

#ifdef __cplusplus
}
#endif

#endif /* QTLAB_DUMP_H */
