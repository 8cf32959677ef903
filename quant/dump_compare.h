// Comparing a candidate's integer tensor dump with the reference's (the core of `qtlab check`,
// tools/check.cpp): every tensor of the reference, in graph order (the graph inputs, then each
// op's outputs in execution order), code by code. A code differs when |candidate - reference| >
// tolerance_lsb (codes are in the tensor's own LSBs: both sides must share scale and zero point).
//
// The verdict names the first op whose output differs while all of its inputs agree: the op at
// which the candidate's arithmetic departs from the reference's. Downstream ops that differ only
// because an input already differed are listed but not blamed.
//
// A candidate that cannot be compared (a reference tensor missing, a different dtype, shape, scale
// or zero point) is a qt::Error naming the tensor, separate from a mismatch.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "quant/tensor_dump.h"

namespace qt::quant {

struct TensorComparison {
  std::string name;
  int64_t producer = -1;  // index of the reference op producing it, -1 for a graph input
  int64_t elements = 0;
  int64_t mismatches = 0;    // codes with |delta| > tolerance
  int64_t max_abs_diff = 0;  // max |candidate - reference| in LSB over all codes
  // The first differing code (row-major), when mismatches > 0.
  std::vector<int64_t> first_index;
  int64_t first_reference = 0, first_candidate = 0;

  bool agrees() const { return mismatches == 0; }
};

struct DumpComparison {
  int64_t tolerance_lsb = 0;
  std::vector<TensorComparison> tensors;      // graph order
  int64_t first_divergent_op = -1;            // index into the reference's ops, -1 if none
  std::vector<std::string> divergent_inputs;  // graph inputs that differ (nothing to blame)

  bool pass() const;
  const TensorComparison& tensor(const std::string& name) const;
};

// Throws qt::Error when the candidate is unusable (see the file comment) or tolerance < 0.
DumpComparison compare_dumps(const TensorDump& reference, const TensorDump& candidate,
                             int64_t tolerance_lsb);

}  // namespace qt::quant
