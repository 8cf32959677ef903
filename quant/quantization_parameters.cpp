// Quantizer parameters from a range (formulas in quantization_parameters.h).
//
// Every step is written in float32, in the order the repo's torch code evaluates it on float32
// tensors, so that the scale and zero point are bit-identical to the repo's.
#include "quant/quantization_parameters.h"

#include <algorithm>
#include <cmath>

#include "tensor/shape.h"

namespace qt::quant {

void check_bits(int bits, const char* op) {
  QT_CHECK(bits >= kMinBits && bits <= kMaxBits, "{}: bit width {} is not supported (use {}..{})",
           op, bits, kMinBits, kMaxBits);
}

QuantizationParameters quantization_parameters(const QuantizationRange& range, int bits,
                                               bool symmetric) {
  const char* op = "quantization_parameters";
  check_bits(bits, op);
  QT_CHECK(!range.min.empty() && range.min.size() == range.max.size(),
           "{}: the range has {} minima and {} maxima (need the same number, at least one)", op,
           range.min.size(), range.max.size());
  QT_CHECK(range.channel_axis.has_value() || range.min.size() == 1,
           "{}: a per-tensor range needs exactly one (min, max), got {}", op, range.min.size());
  const size_t channels = range.min.size();
  for (size_t c = 0; c < channels; ++c) {
    QT_CHECK(std::isfinite(range.min[c]) && std::isfinite(range.max[c]),
             "{}: channel {} has a non-finite range [{}, {}]", op, c, range.min[c], range.max[c]);
  }

  QuantizationParameters p;
  p.bits = bits;
  p.symmetric = symmetric;
  p.channel_axis = range.channel_axis;
  p.scale.resize(channels);
  p.zero_point.assign(channels, 0);

  // x_min <- min(x_min, 0), x_max <- max(x_max, eps): the range always contains 0.
  std::vector<float> low(channels), high(channels);
  for (size_t c = 0; c < channels; ++c) {
    low[c] = std::min(range.min[c], 0.0f);
    high[c] = std::max(range.max[c], kRangeEpsilon);
  }

  if (!symmetric) {
    p.is_signed = false;
    p.int_min = 0;
    p.int_max = (int64_t{1} << bits) - 1;
    const float int_max = static_cast<float>(p.int_max);
    for (size_t c = 0; c < channels; ++c) {
      const float delta = (high[c] - low[c]) / int_max;  // Δ = (x_max − x_min) / (2^b − 1)
      const float zero_float = -low[c] / delta;          // −x_min / Δ, before rounding
      // z = clamp(⌊−x_min/Δ⌉, 0, 2^b − 1); nearbyint rounds half to even like torch.round.
      const float zero = std::min(std::max(std::nearbyint(zero_float), 0.0f), int_max);
      p.zero_point[c] = static_cast<int32_t>(zero);
      p.scale[c] = std::max(delta, kRangeEpsilon);  // s = max(Δ, eps)
    }
    return p;
  }

  // Symmetric: signed when any (clamped) minimum is negative, as the repo's x_min.min() < 0.
  p.is_signed = *std::min_element(low.begin(), low.end()) < 0.0f;
  p.int_min = p.is_signed ? -(int64_t{1} << (bits - 1)) : 0;
  p.int_max = (int64_t{1} << (bits - (p.is_signed ? 1 : 0))) - 1;
  const float int_max = static_cast<float>(p.int_max);
  for (size_t c = 0; c < channels; ++c) {
    const float absmax = std::max(std::abs(low[c]), high[c]);
    p.scale[c] = std::max(absmax / int_max, kRangeEpsilon);  // s = max(x_absmax / int_max, eps)
  }
  return p;
}

QuantizationParameters quantization_parameters(float x_min, float x_max, int bits, bool symmetric) {
  return quantization_parameters(QuantizationRange{{x_min}, {x_max}, std::nullopt}, bits,
                                 symmetric);
}

QuantizationRange representable_range(const QuantizationParameters& parameters) {
  QuantizationRange range;
  range.channel_axis = parameters.channel_axis;
  for (int64_t c = 0; c < parameters.channels(); ++c) {
    const float s = parameters.scale[c];
    const float z = static_cast<float>(parameters.zero_point[c]);
    range.min.push_back(s * (static_cast<float>(parameters.int_min) - z));
    range.max.push_back(s * (static_cast<float>(parameters.int_max) - z));
  }
  return range;
}

int64_t check_parameters_for(const QuantizationParameters& p, const Tensor& x, const char* op) {
  check_defined(x, op);
  check_bits(p.bits, op);
  QT_CHECK(!p.scale.empty() && p.scale.size() == p.zero_point.size(),
           "{}: quantization parameters have {} scales and {} zero points", op, p.scale.size(),
           p.zero_point.size());
  QT_CHECK(p.int_min < p.int_max && p.int_max - p.int_min < (int64_t{1} << p.bits),
           "{}: integer grid [{}, {}] does not fit {} bits", op, p.int_min, p.int_max, p.bits);
  for (int64_t c = 0; c < p.channels(); ++c) {
    QT_CHECK(std::isfinite(p.scale[c]) && p.scale[c] > 0.0f,
             "{}: scale {} of channel {} is not a positive finite number", op, p.scale[c], c);
    QT_CHECK(p.zero_point[c] >= p.int_min && p.zero_point[c] <= p.int_max,
             "{}: zero point {} of channel {} is outside the grid [{}, {}]", op, p.zero_point[c], c,
             p.int_min, p.int_max);
  }
  if (!p.channel_axis.has_value()) {
    QT_CHECK(p.channels() == 1, "{}: per-tensor parameters with {} scales", op, p.channels());
    return -1;
  }
  const int64_t axis = normalize_axis(*p.channel_axis, x.dim(), op);
  QT_CHECK(x.size(axis) == p.channels(),
           "{}: tensor {} has {} channels along axis {}, the parameters have {}", op,
           shape_str(x.shape()), x.size(axis), axis, p.channels());
  return axis;
}

}  // namespace qt::quant
