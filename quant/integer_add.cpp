// Integer addition with rescaling (see the header for the steps and the bounds).
#include "quant/integer_add.h"

#include <algorithm>
#include <array>
#include <limits>

#include "tensor/error.h"
#include "tensor/parallel_policy.h"

namespace qt::quant {

IntegerRescaleSum make_rescale_sum(const std::vector<QuantizedTerm>& terms, double output_scale,
                                   int32_t output_zero_point, int32_t qmin, int32_t qmax,
                                   Requant mode, const char* op) {
  const auto n = static_cast<int>(terms.size());
  QT_CHECK(n >= 1 && n <= kMaxSumTerms, "{}: {} terms (need 1 to {})", op, n, kMaxSumTerms);
  QT_CHECK(output_scale > 0, "{}: the output scale {} is not positive", op, output_scale);
  double max_scale = 0;
  for (int i = 0; i < n; ++i) {
    QT_CHECK(terms[i].scale > 0, "{}: the scale {} of term {} is not positive", op, terms[i].scale,
             i);
    max_scale = std::max(max_scale, terms[i].scale);
  }
  const double common = n * max_scale;
  IntegerRescaleSum sum;
  sum.terms = n;
  for (int i = 0; i < n; ++i) {
    sum.input[i] = quantize_multiplier(terms[i].scale / common, op);
    sum.zero_point[i] = terms[i].zero_point;
  }
  sum.output = make_requantizer(common / (static_cast<double>(1 << kAddLeftShift) * output_scale),
                                output_zero_point, qmin, qmax, mode, op);
  return sum;
}

int32_t IntegerRescaleSum::operator()(const int32_t* q) const {
  int32_t total = 0;  // |total| < 2^30 (see the header)
  for (int i = 0; i < terms; ++i) {
    const int32_t centered = q[i] - zero_point[i];
    QT_CHECK(centered >= -kMaxCenteredMagnitude && centered <= kMaxCenteredMagnitude,
             "integer rescale sum: term {}: q - Z = {} - {} is outside [-1023, 1023]", i, q[i],
             zero_point[i]);
    total +=
        multiply_by_quantized_multiplier(centered * (1 << kAddLeftShift), input[i], output.mode);
  }
  return output(total);
}

IntegerRescaleSum make_integer_add(QuantizedTerm a, QuantizedTerm b, double output_scale,
                                   int32_t output_zero_point, int32_t qmin, int32_t qmax,
                                   Requant mode) {
  return make_rescale_sum({a, b}, output_scale, output_zero_point, qmin, qmax, mode,
                          "make_integer_add");
}

namespace {
template <typename T>
void add_into(const IntegerRescaleSum& add, const uint8_t* a, const uint8_t* b, int64_t n, T* out,
              const char* type) {
  QT_CHECK(add.terms == 2, "integer_add: built for {} terms, not 2", add.terms);
  QT_CHECK(add.output.qmin >= std::numeric_limits<T>::min() &&
               add.output.qmax <= std::numeric_limits<T>::max(),
           "integer_add: the output grid [{}, {}] does not fit {}", add.output.qmin,
           add.output.qmax, type);
  QT_CHECK(n >= 0, "integer_add: negative size {}", n);
  // Each term's rescaled value s_i = ((q_i - Z_i) 2^20) M_i depends on its u8 code alone: the
  // same integers as operator(), tabulated once per call (2 x 256 entries), so the loop is two
  // loads, an add and the output requantization.
  std::array<int32_t, 256> term_a{}, term_b{};
  for (int32_t q = 0; q < 256; ++q) {
    for (int t = 0; t < 2; ++t) {
      const int32_t centered = q - add.zero_point[static_cast<size_t>(t)];
      (t == 0 ? term_a : term_b)[static_cast<size_t>(q)] = multiply_by_quantized_multiplier(
          centered * (1 << kAddLeftShift), add.input[static_cast<size_t>(t)], add.output.mode);
    }
  }
  // |term_a + term_b| < 2^30 (header); the sums of a chunk, then one vectorized output stage.
  // Chunks are independent: an OpenMP team over them (checked first: nothing inside throws).
  check_multiplier(add.output.multiplier, "integer_add");
  constexpr int64_t kChunk = 4096;
#pragma omp parallel for schedule(static) if (worth_parallel(n, WorkCost::standard))
  for (int64_t begin = 0; begin < n; begin += kChunk) {
    int32_t total[kChunk];
    const int64_t count = std::min(kChunk, n - begin);
    for (int64_t i = 0; i < count; ++i) total[i] = term_a[a[begin + i]] + term_b[b[begin + i]];
    requantize(total, count, add.output, out + begin);
  }
}
}  // namespace

void integer_add(const IntegerRescaleSum& add, const uint8_t* a, const uint8_t* b, int64_t n,
                 uint8_t* out) {
  add_into(add, a, b, n, out, "u8");
}
void integer_add(const IntegerRescaleSum& add, const uint8_t* a, const uint8_t* b, int64_t n,
                 int16_t* out) {
  add_into(add, a, b, n, out, "int16");
}

}  // namespace qt::quant
