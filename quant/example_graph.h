// The example integer graph: a small graph built from the real integer ops and recorded as a
// tensor dump (quant/tensor_dump.h). It is the worked example of docs/integer-reference.md
// (`qtlab check --write-example DIR`) and the fixture of the dump, checker and C99 export tests:
//
//   x [6, 16] u8 --linear (fc.weight s8, fc.bias s32; double rounding)--> h u8
//   h --gelu_table (gelu.table u8 [256]; exact lookup)--> g u8
//   (x, g) --add (single half even, into s16)--> r s16   (the wider pre-LayerNorm residual)
//   r --layer_norm (ln.gamma s8, ln.beta s32; single half even)--> y u8
//
// Every dtype of the format appears (u8, s8, s16, s32). The ops' integer parameters (multipliers,
// shifts, zero points, the LayerNorm eps term) are recorded as op attributes, the form an exporter
// reads them in; example_graph_params_header turns them into the C header that
// quant/export/qtlab_example_graph.c is compiled with.
#pragma once

#include <cstdint>
#include <string>

#include "quant/tensor_dump.h"

namespace qt::quant {

inline constexpr int64_t kExampleGraphRows = 6, kExampleGraphChannels = 16;

// The graph on seeded inputs; `seed` changes x only (the parameters are fixed). bump_h >= 0 moves
// h at that flat index by one LSB (up, or down from 255) before the downstream ops run on it: a
// candidate whose linear layer is off by one code in one place.
TensorDump example_graph(unsigned seed, int64_t bump_h = -1);

// qtlab_graph_params.h for quant/export/qtlab_example_graph.c, from a dump of the example graph
// (its tensors' grids and its ops' attributes only).
std::string example_graph_params_header(const TensorDump& dump);

}  // namespace qt::quant
