// Lookup-table activations (see the header).
#include "quant/integer_lut.h"

#include <algorithm>
#include <cmath>

#include "tensor/error.h"
#include "tensor/parallel_policy.h"

namespace qt::quant {

uint8_t IntegerLut::operator()(int32_t q) const {
  QT_CHECK(q >= input_min && q <= input_max,
           "integer lookup table: input code {} is outside the table's grid [{}, {}]", q, input_min,
           input_max);
  return table[static_cast<size_t>(q - input_min)];
}

IntegerLut make_lut(int32_t input_min, int32_t input_max, double input_scale,
                    int32_t input_zero_point, double output_scale, int32_t output_zero_point,
                    int32_t qmin, int32_t qmax, const std::function<double(double)>& f,
                    const char* op) {
  const int64_t entries = int64_t{input_max} - input_min + 1;
  QT_CHECK(entries >= 1 && entries <= kMaxLutEntries,
           "{}: the input grid [{}, {}] has {} codes (need 1 to {})", op, input_min, input_max,
           entries, kMaxLutEntries);
  QT_CHECK(input_scale > 0 && output_scale > 0, "{}: scales must be positive (in {}, out {})", op,
           input_scale, output_scale);
  QT_CHECK(qmin >= kU8Min && qmax <= kU8Max && qmin <= qmax,
           "{}: the output grid [{}, {}] is not inside u8", op, qmin, qmax);
  QT_CHECK(output_zero_point >= qmin && output_zero_point <= qmax,
           "{}: the output zero point {} lies outside [{}, {}]", op, output_zero_point, qmin, qmax);
  IntegerLut lut;
  lut.input_min = input_min;
  lut.input_max = input_max;
  lut.table.resize(static_cast<size_t>(entries));
  for (int64_t i = 0; i < entries; ++i) {
    const int64_t q = input_min + i;
    const double y = f(input_scale * static_cast<double>(q - input_zero_point));
    QT_CHECK(std::isfinite(y), "{}: f is not finite at input code {} (x = {})", op, q,
             input_scale * static_cast<double>(q - input_zero_point));
    const double code = std::nearbyint(y / output_scale) + output_zero_point;
    lut.table[static_cast<size_t>(i)] = static_cast<uint8_t>(
        std::clamp(code, static_cast<double>(qmin), static_cast<double>(qmax)));
  }
  return lut;
}

IntegerLutActivation make_lut_activation(const std::vector<double>& acc_scales, double input_bound,
                                         double output_scale, int32_t output_zero_point,
                                         Requant mode, const std::function<double(double)>& f,
                                         const char* op) {
  QT_CHECK(!acc_scales.empty(), "{}: no accumulator scale", op);
  QT_CHECK(input_bound > 0 && std::isfinite(input_bound),
           "{}: the input bound {} must be positive and finite", op, input_bound);
  const double mid_scale = input_bound / 32767.0;
  IntegerLutActivation activation;
  for (size_t c = 0; c < acc_scales.size(); ++c) {
    QT_CHECK(acc_scales[c] > 0, "{}: accumulator scale {} of channel {} is not positive", op,
             acc_scales[c], c);
    activation.to_input.push_back(
        make_requantizer(acc_scales[c] / mid_scale, 0, -32768, 32767, mode, op));
  }
  activation.lut =
      make_lut(-32768, 32767, mid_scale, 0, output_scale, output_zero_point, kU8Min, kU8Max, f, op);
  return activation;
}

void apply_lut_activation(const IntegerLutActivation& activation, const int32_t* acc, int64_t rows,
                          int64_t channels, uint8_t* out) {
  const auto scales = static_cast<int64_t>(activation.to_input.size());
  QT_CHECK(rows >= 0 && channels > 0, "apply_lut_activation: bad shape [{}, {}]", rows, channels);
  QT_CHECK(scales == 1 || scales == channels,
           "apply_lut_activation: {} accumulator scales for {} channels", scales, channels);
  QT_CHECK(activation.lut.input_min == -32768 && activation.lut.input_max == 32767,
           "apply_lut_activation: the table must cover the int16 grid");
  const uint8_t* table = activation.lut.table.data() + 32768;
  if (scales == 1) {
    // One requantizer: the int16 indices of a chunk in one vectorized pass, then the lookups.
    // Chunks are independent: an OpenMP team over them (checked first: nothing inside throws).
    check_multiplier(activation.to_input[0].multiplier, "apply_lut_activation");
    constexpr int64_t kChunk = 4096;
    const int64_t n = rows * channels;
#pragma omp parallel for schedule(static) if (worth_parallel(n, WorkCost::standard))
    for (int64_t begin = 0; begin < n; begin += kChunk) {
      int16_t index[kChunk];
      const int64_t count = std::min(kChunk, n - begin);
      requantize(acc + begin, count, activation.to_input[0], index);
      for (int64_t i = 0; i < count; ++i) out[begin + i] = table[index[i]];
    }
    return;
  }
  for (int64_t m = 0; m < rows; ++m)
    for (int64_t c = 0; c < channels; ++c) {
      // The requantizer's grid is int16, so the index is always inside the table.
      const int32_t q = activation.to_input[c](acc[m * channels + c]);
      out[m * channels + c] = table[q];
    }
}

void apply_lut(const IntegerLut& lut, const uint8_t* in, int64_t n, uint8_t* out) {
  QT_CHECK(lut.input_min <= 0 && lut.input_max >= 255,
           "apply_lut: the table's grid [{}, {}] does not cover u8", lut.input_min, lut.input_max);
  QT_CHECK(n >= 0, "apply_lut: negative size {}", n);
  const uint8_t* table = lut.table.data() - lut.input_min;
  for (int64_t i = 0; i < n; ++i) out[i] = table[in[i]];
}

}  // namespace qt::quant
