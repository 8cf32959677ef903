/* qtlab_example_graph.c: one op graph run with qtlab_int8.c and dumped with qtlab_dump.c, the
 * shape of what the model exporter generates. The graph (quant/example_graph.h):
 *
 *   x [ROWS, CHANNELS] u8 --linear (fc.weight s8, fc.bias s32)--> h u8
 *   h --gelu_table (gelu.table u8 [256])--> g u8
 *   (x, g) --add--> r s16
 *   r --layer_norm (ln.gamma s8, ln.beta s32)--> y u8
 *
 * Usage: qtlab_example_graph IN_DIR OUT_DIR. The graph inputs (x, the weights, the table) are
 * read from IN_DIR/<name>.bin (e.g. a reference dump); every tensor is dumped to OUT_DIR with its
 * manifest, for `qtlab check --reference IN_DIR --candidate OUT_DIR`. The integer parameters
 * (multipliers, shifts, zero points, the eps term) and the tensors' grids come from
 * qtlab_graph_params.h, which `qtlab check --write-example DIR` writes next to the reference dump
 * (generated from the manifest's op attributes). */
#include <stdio.h>
#include <string.h>

#include "qtlab_dump.h"
#include "qtlab_graph_params.h"
#include "qtlab_int8.h"

#define T QT_GRAPH_ROWS
#define C QT_GRAPH_CHANNELS

static uint8_t x[T * C], h[T * C], g[T * C], y[T * C], gelu_table[256];
static int8_t fc_weight[C * C], ln_gamma[C];
static int32_t fc_bias[C], ln_beta[C];
static int16_t r[T * C];

/* The grid of a tensor, from the generated table. */
static const qt_graph_grid* grid(const char* name) {
  size_t i;
  for (i = 0; i < sizeof qt_graph_grids / sizeof qt_graph_grids[0]; ++i)
    if (strcmp(qt_graph_grids[i].name, name) == 0) return &qt_graph_grids[i];
  fprintf(stderr, "qtlab_example_graph: no grid for %s\n", name);
  return &qt_graph_grids[0];
}

static int dump(qt_dump_writer* w, const char* name, qt_dtype dtype, int rank, int64_t d0,
                int64_t d1, const void* codes) {
  const int64_t shape[2] = {d0, d1};
  return qt_dump_tensor(w, name, dtype, rank, shape, grid(name)->scale, grid(name)->zero_point,
                        codes);
}

int main(int argc, char** argv) {
  static qt_dump_writer w;
  qt_linear_params fc;
  qt_layer_norm_params ln;
  int failed = 0;
  if (argc != 3) {
    fprintf(stderr, "usage: %s IN_DIR OUT_DIR\n", argv[0]);
    return 2;
  }
  /* ---- the graph inputs */
  failed |= qt_dump_read(argv[1], "x", QT_U8, T * C, x);
  failed |= qt_dump_read(argv[1], "fc.weight", QT_S8, C * C, fc_weight);
  failed |= qt_dump_read(argv[1], "fc.bias", QT_S32, C, fc_bias);
  failed |= qt_dump_read(argv[1], "gelu.table", QT_U8, 256, gelu_table);
  failed |= qt_dump_read(argv[1], "ln.gamma", QT_S8, C, ln_gamma);
  failed |= qt_dump_read(argv[1], "ln.beta", QT_S32, C, ln_beta);
  if (failed) return 2;

  /* ---- the ops, in graph order */
  fc.in_features = C;
  fc.out_features = C;
  fc.weight = fc_weight;
  fc.bias = fc_bias;
  fc.input_zero_point = qt_fc_input_zero_point;
  fc.output = &qt_fc_output;
  fc.output_count = 1;
  qt_linear(&fc, x, T, 0, h);
  qt_apply_lut_u8(gelu_table, 0, h, T * C, g);
  qt_add_s16(&qt_residual, x, g, T * C, r);
  ln.channels = C;
  ln.gamma = ln_gamma;
  ln.beta = ln_beta;
  ln.eps_term = qt_ln_eps_term;
  ln.output = qt_ln_output;
  qt_layer_norm_s16(&ln, r, T, y);

  /* ---- every tensor and the graph */
  {
    const char* fc_in[] = {"x", "fc.weight", "fc.bias", NULL};
    const char* fc_out[] = {"h", NULL};
    const char* gelu_in[] = {"h", "gelu.table", NULL};
    const char* gelu_out[] = {"g", NULL};
    const char* add_in[] = {"x", "g", NULL};
    const char* add_out[] = {"r", NULL};
    const char* ln_in[] = {"r", "ln.gamma", "ln.beta", NULL};
    const char* ln_out[] = {"y", NULL};
    failed |= qt_dump_begin(&w, argv[2]);
    failed |= dump(&w, "x", QT_U8, 2, T, C, x);
    failed |= dump(&w, "fc.weight", QT_S8, 2, C, C, fc_weight);
    failed |= dump(&w, "fc.bias", QT_S32, 1, C, 0, fc_bias);
    failed |= dump(&w, "gelu.table", QT_U8, 1, 256, 0, gelu_table);
    failed |= dump(&w, "ln.gamma", QT_S8, 1, C, 0, ln_gamma);
    failed |= dump(&w, "ln.beta", QT_S32, 1, C, 0, ln_beta);
    failed |= dump(&w, "h", QT_U8, 2, T, C, h);
    failed |= dump(&w, "g", QT_U8, 2, T, C, g);
    failed |= dump(&w, "r", QT_S16, 2, T, C, r);
    failed |= dump(&w, "y", QT_U8, 2, T, C, y);
    failed |= qt_dump_op(&w, "fc", "linear", qt_fc_rounding, fc_in, fc_out);
    failed |= qt_dump_op(&w, "gelu", "gelu_table", "none", gelu_in, gelu_out);
    failed |= qt_dump_op(&w, "residual", "add", qt_residual_rounding, add_in, add_out);
    failed |= qt_dump_op(&w, "ln", "layer_norm", qt_ln_rounding, ln_in, ln_out);
    failed |= qt_dump_finish(&w);
  }
  return failed ? 1 : 0;
}
