// The numbers that define a uniform affine quantizer (paper Eq. 1; method.md §4.1), as plain data,
// and how they follow from a quantization range (x_min, x_max).
//
// A quantizer maps a real x to an integer code q on the grid [int_min, int_max] and back:
//
//   q  = clamp( ⌊x / s⌉ + z, int_min, int_max )        ⌊·⌉ = round half to even (torch.round)
//   x̂  = s · (q − z)                                    (simulated or "fake" quantization)
//
// with scale s > 0 and integer zero point z. Two ways to choose (s, z, grid) from a range, exactly
// as the official repo does (quantization/quantizers/uniform_quantizers.py), in float32 arithmetic
// like the repo's float32 tensors, so that the parameters are bit-identical to the repo's:
//
//   Both:        x_min ← min(x_min, 0),  x_max ← max(x_max, 1e-8)     (the range always holds 0)
//
//   Asymmetric:  grid [0, 2^b − 1]
//                Δ = (x_max − x_min) / (2^b − 1)
//                z = clamp( ⌊−x_min / Δ⌉, 0, 2^b − 1 )     (the zero point is rounded, then
//                clamped) s = max(Δ, 1e-8)
//
//   Symmetric:   signed = (x_min < 0)    (per-channel: one flag for the tensor, any channel < 0)
//                grid [−2^(b−1), 2^(b−1) − 1] if signed, else [0, 2^b − 1]
//                Δ = max(|x_min|, x_max) / int_max,  s = max(Δ, 1e-8),  z = 0
//                (so the negative side reaches −2^(b−1) Δ, one step beyond −x_absmax)
//
// Granularity: per-tensor (one s, z) or per-channel (one s, z per index along `channel_axis`, any
// axis). The paper quantizes everything per-tensor; per-channel is here for experiments.
#pragma once

#include <cstdint>
#include <optional>
#include <vector>

#include "tensor/tensor.h"

namespace qt::quant {

constexpr int kMinBits = 2;
constexpr int kMaxBits = 16;
// The repo's eps: the lower bound of x_max and of the scale.
constexpr float kRangeEpsilon = 1e-8f;

// A real-valued range [min, max] to quantize, per tensor (one entry) or per channel.
struct QuantizationRange {
  std::vector<float> min, max;          // one entry per channel; one entry when per-tensor
  std::optional<int64_t> channel_axis;  // nullopt: per-tensor
};

struct QuantizationParameters {
  int bits = 8;
  bool symmetric = false;
  bool is_signed = false;  // the grid has negative codes (symmetric with a negative range)
  int64_t int_min = 0;     // the integer grid [int_min, int_max]
  int64_t int_max = 255;
  std::optional<int64_t> channel_axis;  // nullopt: per-tensor, scale and zero_point have 1 entry
  std::vector<float> scale;             // s per channel
  std::vector<int32_t> zero_point;      // z per channel (0 for symmetric)

  int64_t channels() const { return static_cast<int64_t>(scale.size()); }
};

// Throws unless kMinBits <= bits <= kMaxBits; `op` prefixes the message.
void check_bits(int bits, const char* op);

// The repo's parameters for `range` (formulas at the top). Throws for bad bits, an empty or
// mismatched range, or non-finite ends. min > max is allowed, as in the repo (the MSE grid search
// can produce it): after the clamping to contain 0 the formulas still give a valid grid.
QuantizationParameters quantization_parameters(const QuantizationRange& range, int bits,
                                               bool symmetric);
// Per-tensor shorthand.
QuantizationParameters quantization_parameters(float x_min, float x_max, int bits, bool symmetric);

// The real range the grid covers per channel: [s (int_min − z), s (int_max − z)].
QuantizationRange representable_range(const QuantizationParameters& parameters);

// Checks that `parameters` are usable on `x` (consistent sizes, valid bits and grid, positive
// scales; per-channel: the axis exists and x.size(axis) == channels()). Returns the channel axis
// normalized to [0, rank) (or -1 when per-tensor). Throws naming `op` and the shapes.
int64_t check_parameters_for(const QuantizationParameters& parameters, const Tensor& x,
                             const char* op);

}  // namespace qt::quant
