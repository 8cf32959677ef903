// `qtlab export-int`: an integer model (quant/integer_model.h) written as a directory a kernel
// engineer can build and check with nothing but a C compiler:
//
//   DIR/weights.safetensors   every integer parameter (I8 weights and tables' s8 rows, I32 biases
//                             and LayerNorm betas, U8 lookup tables), named "<op>.<field>"
//   DIR/model.c               one C99 file, libc only: the ops (quant/export/qtlab_int8.c), the
//                             tensor dump (qtlab_dump.c), the model runtime (qtlab_model.c) and the
//                             generated forward, one call per op with its integer parameters
//   DIR/Makefile              `make check`: cc -std=c99 -O2 -Wall -Wextra -Werror -pedantic, then
//                             every vector's every tensor compared bit for bit
//   DIR/vectors/<k>/          seeded test vectors: tensor dumps (docs/integer-reference.md) of the
//                             input, every intermediate tensor and the output, made by qtlab's
//                             integer engine
//   DIR/manifest.json         format "qtlab-int-export" version 1: the graph in execution order
//                             (op kinds, inputs, outputs, tensor layouts and grids, multipliers,
//                             shifts, rounding mode), the lowering's notes, and the sha256 of every
//                             other file
// Written into a temporary directory and renamed into place, so DIR is complete or absent.
#pragma once

#include <string>
#include <vector>

#include "models/model.h"
#include "quant/integer_model.h"

namespace qt::quant {

struct ExportDescription {
  std::string checkpoint, ranges;  // where the model and its calibration came from (recorded)
  std::string qtlab_version;
};

// Writes DIR (which must not exist, or be an earlier export: it is replaced). Each batch of
// `vectors` becomes one test vector.
void export_integer_model(const IntegerModel& model, const std::vector<models::Batch>& vectors,
                          const std::string& dir, const ExportDescription& description);

}  // namespace qt::quant
