// The outcome of post-training calibration as plain data: for every quantized activation point
// and weight, the estimated range and the quantizer it defines (quant/quantization_parameters.h),
// saved as JSON for the integer-inference reference.
//
// File format (JSON, written atomically):
//   {"format": "qtlab.quant-ranges", "version": 1,
//    "family": "opt", "weight_bits": 8, "activation_bits": 8,
//    "weight_range": "MSE", "activation_range": "running_minmax:99.999",
//    "calibration_batches": 16, "calibration_seed": 2000,
//    "activations": {"<tap point>": RANGE, ...},
//    "weights":     {"<parameter>": RANGE, ...},
//    "observed":    {"<tap point>": RANGE, ...}}      (optional; see `observed` below)
//   RANGE = {"bits": 8, "symmetric": false, "signed": false, "int_min": 0, "int_max": 255,
//            "scale": s, "zero_point": z, "min": x_min, "max": x_max
//            [, "lookup_point": "<table>:output"]}       (weights quantized at their lookups)
// x_min / x_max are the estimator's range before the "contains 0" clamping of method.md §4.1; scale
// and zero_point follow from them. Floats are written with round-trip precision, so loading gives
// back the exact float32 values.
#pragma once

#include <cstdint>
#include <map>
#include <string>

#include "quant/quantization_parameters.h"

namespace qt::quant {

struct CalibratedRange {
  int bits = 8;
  bool symmetric = false;
  bool is_signed = false;
  int64_t int_min = 0, int_max = 255;
  float scale = 1.0f;
  int32_t zero_point = 0;
  float min = 0.0f, max = 0.0f;  // the estimated range
  std::string lookup_point;      // weights: "" (quantized in place) or the lookup tap point

  // The per-tensor quantizer (for ops::fake_quantize / quantize).
  QuantizationParameters parameters() const;
};

// A range from a quantizer and the (min, max) it was computed from.
CalibratedRange calibrated_range(const QuantizationParameters& parameters, float min, float max);

struct CalibratedRanges {
  std::string family;
  int weight_bits = 8, activation_bits = 8;
  std::string weight_range;      // "current_minmax" | "MSE"
  std::string activation_range;  // "running_minmax" or "running_minmax:<percentile>"
  int64_t calibration_batches = 0;
  uint64_t calibration_seed = 0;
  std::map<std::string, CalibratedRange> activations;  // tap point -> range
  std::map<std::string, CalibratedRange> weights;      // parameter name -> range
  // Tap points the simulated model does NOT quantize, watched during calibration with the same
  // estimator as the activations (an 8-bit asymmetric grid). The integer engine needs a grid for
  // a few tensors that stay in floating point in the simulation (quant/integer_model.h: the ViT's
  // input images, the MLP gate's hidden units).
  std::map<std::string, CalibratedRange> observed;
};

// Atomic write (temporary file + rename); throws qt::Error naming the path on failure.
void save_calibrated_ranges(const std::string& path, const CalibratedRanges& ranges);
// Throws naming the path for a missing file, bad JSON, a wrong "format" or a missing field.
CalibratedRanges load_calibrated_ranges(const std::string& path);

}  // namespace qt::quant
