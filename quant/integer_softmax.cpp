// Integer softmax and clipped softmax (see the header for the steps and the bounds).
#include "quant/integer_softmax.h"

#include <algorithm>
#include <array>
#include <cmath>
#include <limits>
#include <type_traits>
#include <vector>

#include "quant/integer_divide.h"
#include "tensor/error.h"
#include "tensor/parallel_policy.h"

namespace qt::quant {
namespace {
constexpr int kStretchBits = 20;
constexpr int kProbabilityBits = 30;
constexpr int kOutputShift = kStretchBits + kProbabilityBits;  // v is in units of 2^-50 / 255
}  // namespace

const std::array<int64_t, 31>& exp_constants_q31() {
  static const std::array<int64_t, 31> constants = [] {
    std::array<int64_t, 31> c{};
    for (int j = 0; j < 31; ++j)
      c[j] = std::llround(std::exp(-std::ldexp(1.0L, j - kSoftmaxExponentBits)) * 2147483648.0L);
    return c;
  }();
  return constants;
}

int64_t integer_exp_q31(int64_t m) {
  QT_CHECK(m >= 0, "integer_exp_q31: the exponent {} must be >= 0 (exp of -m / 2^26)", m);
  if (m >= (int64_t{1} << 31)) return 0;  // exp(-32) * 2^31 < 0.03
  const std::array<int64_t, 31>& e = exp_constants_q31();
  int64_t p = int64_t{1} << 31;  // 1.0 in Q0.31
  // Largest factors' bits first; p, e_j <= 2^31 so p * e_j <= 2^62.
  for (int j = 30; j >= 0; --j)
    if ((m >> j) & 1) p = (p * e[j] + (int64_t{1} << 30)) >> 31;
  return p;
}

namespace {
// e(d) = exp(-d S_in) in Q0.31: d M0 < 2^32 2^31 = 2^63, the exponent rounded half up to Q5.26.
int64_t exp_of_distance(const IntegerSoftmax& s, int64_t d) {
  return integer_exp_q31(
      rounding_shift_right(d * s.exponent.multiplier, 31 - s.exponent.shift, Rounding::half_up));
}
}  // namespace

IntegerSoftmax make_integer_softmax(double input_scale, double gamma, double zeta) {
  const char* op = "make_integer_softmax";
  QT_CHECK(input_scale > 0 && input_scale < 16, "{}: the input scale {} must be in (0, 16)", op,
           input_scale);
  QT_CHECK(gamma <= 0 && gamma >= -8, "{}: gamma = {} must be in [-8, 0]", op, gamma);
  QT_CHECK(zeta >= 1 && zeta - gamma <= 8, "{}: zeta = {} must be >= 1 with zeta - gamma <= 8", op,
           zeta);
  IntegerSoftmax s;
  s.exponent = quantize_multiplier(std::ldexp(input_scale, kSoftmaxExponentBits), op);
  s.stretch = std::llround(std::ldexp(255.0 * (zeta - gamma), kStretchBits));
  s.offset = std::llround(std::ldexp(255.0 * gamma, kStretchBits));
  s.exp_of_distance.resize(256);
  for (int64_t d = 0; d < 256; ++d)
    s.exp_of_distance[static_cast<size_t>(d)] = exp_of_distance(s, d);
  return s;
}

namespace {

template <typename T>
void softmax_rows(const IntegerSoftmax& s, const T* x, int64_t rows, int64_t n, const uint8_t* keep,
                  int64_t keep_stride, uint8_t* out) {
  QT_CHECK(rows >= 0 && n >= 1 && n <= kSoftmaxMaxRow,
           "integer_softmax: bad shape [{}, {}] (rows >= 0, 1 <= n <= 2^20)", rows, n);
  QT_CHECK(keep == nullptr || keep_stride >= 0, "integer_softmax: negative mask stride {}",
           keep_stride);
  check_multiplier(s.exponent, "integer_softmax");
  const int64_t upper = 255 * (int64_t{1} << kOutputShift);
  // u8 scores: d = max - x takes at most 256 values, so e(d) is a table (built by
  // make_integer_softmax; here only for a hand-built IntegerSoftmax).
  std::array<int64_t, 256> local_table{};
  const int64_t* exp_of_d = s.exp_of_distance.data();
  if (std::is_same_v<T, uint8_t> && s.exp_of_distance.size() != 256) {
    for (int64_t d = 0; d < 256; ++d) local_table[static_cast<size_t>(d)] = exp_of_distance(s, d);
    exp_of_d = local_table.data();
  }
  // Rows are independent: an OpenMP team over rows, each thread with its own e buffer. Nothing
  // below can throw (the checks above cover the inputs; sum >= 2^31 for make_sum_reciprocal).
#pragma omp parallel if (worth_parallel(rows * n, WorkCost::heavy))
  {
    std::vector<int64_t> e(static_cast<size_t>(n));  // once per thread and call
#pragma omp for schedule(static)
    for (int64_t r = 0; r < rows; ++r) {
      const T* xr = x + r * n;
      const uint8_t* kr = keep == nullptr ? nullptr : keep + r * keep_stride;
      uint8_t* yr = out + r * n;
      bool any = false;
      int64_t max = std::numeric_limits<int64_t>::min();
      for (int64_t j = 0; j < n; ++j)
        if (kr == nullptr || kr[j] != 0) {
          any = true;
          max = std::max<int64_t>(max, xr[j]);
        }
      if (!any) {
        std::fill(yr, yr + n, uint8_t{0});
        continue;
      }
      int64_t sum = 0;  // < 2^20 * 2^31
      for (int64_t j = 0; j < n; ++j) {
        if (kr != nullptr && kr[j] == 0) {
          e[j] = 0;
          continue;
        }
        const int64_t d = max - int64_t{xr[j]};  // in [0, 2^32)
        if constexpr (std::is_same_v<T, uint8_t>)
          e[j] = exp_of_d[d];
        else
          e[j] = exp_of_distance(s, d);
        sum += e[j];
      }
      // sum >= 2^31: the maximum's e is exactly 2^31; sum < 2^20 2^31. P_j by one reciprocal
      // of the sum per row, no 64-bit division per element (quant/integer_divide.h): the integers
      // of (e_j 2^30 + sum / 2) / sum.
      const SumReciprocal by_sum = make_sum_reciprocal(static_cast<uint64_t>(sum));
      const int64_t stretch = s.stretch, offset = s.offset * (int64_t{1} << kProbabilityBits);
      for (int64_t j = 0; j < n; ++j) {
        const uint64_t p = quotient_q30(static_cast<uint64_t>(e[j]), by_sum);
        // Q0.30 p -> the stretched, clipped u8 code, rounded half to even at 2^-50.
        const int64_t v = std::clamp<int64_t>(stretch * static_cast<int64_t>(p) + offset, 0, upper);
        yr[j] = static_cast<uint8_t>(rounding_shift_right(v, kOutputShift, Rounding::half_to_even));
      }
    }
  }
}

}  // namespace

void integer_softmax(const IntegerSoftmax& softmax, const int32_t* x, int64_t rows, int64_t n,
                     const uint8_t* keep, int64_t keep_stride, uint8_t* out) {
  softmax_rows(softmax, x, rows, n, keep, keep_stride, out);
}
void integer_softmax(const IntegerSoftmax& softmax, const uint8_t* x, int64_t rows, int64_t n,
                     const uint8_t* keep, int64_t keep_stride, uint8_t* out) {
  softmax_rows(softmax, x, rows, n, keep, keep_stride, out);
}

}  // namespace qt::quant
