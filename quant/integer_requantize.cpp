// Integer requantization (see the header for the arithmetic and the overflow policy).
#include "quant/integer_requantize.h"

#include <algorithm>
#include <cmath>
#include <limits>

#include "tensor/error.h"

namespace qt::quant {
namespace {

constexpr int64_t kInt32Min = std::numeric_limits<int32_t>::min();
constexpr int64_t kInt32Max = std::numeric_limits<int32_t>::max();

int32_t saturate_to_int32(int64_t x) {
  return static_cast<int32_t>(std::clamp(x, kInt32Min, kInt32Max));
}

}  // namespace

std::string_view rounding_name(Rounding rounding) {
  switch (rounding) {
    case Rounding::half_up:
      return "round half up (toward +inf)";
    case Rounding::half_away_from_zero:
      return "round half away from zero";
    case Rounding::half_to_even:
      return "round half to even";
  }
  return "?";
}

std::string_view requant_name(Requant mode) {
  switch (mode) {
    case Requant::double_rounding:
      return "double rounding (gemmlowp SRDHM + RDBPOT)";
    case Requant::single_half_up:
      return "single rounding, half up (TFLITE_SINGLE_ROUNDING)";
    case Requant::single_half_away:
      return "single rounding, half away from zero";
    case Requant::single_half_even:
      return "single rounding, half to even";
  }
  return "?";
}

QuantizedMultiplier quantize_multiplier(double real_multiplier, const char* op) {
  QT_CHECK(std::isfinite(real_multiplier) && real_multiplier >= 0,
           "{}: the real multiplier must be finite and >= 0, got {}", op, real_multiplier);
  if (real_multiplier == 0) return {};
  int exponent = 0;
  const double fraction = std::frexp(real_multiplier, &exponent);  // in [0.5, 1)
  // fraction * 2^31 is exact (a power-of-two scaling); llround rounds ties away from zero.
  int64_t m0 = std::llround(fraction * 2147483648.0);
  if (m0 == (int64_t{1} << 31)) {
    m0 /= 2;
    ++exponent;
  }
  if (exponent < -31) return {};  // M < 2^-32: every int32 x maps to 0 or +-1 at most; flush
  QT_CHECK(exponent <= 30,
           "{}: the real multiplier {} is too large (must be < 2^30, shift <= 30; got shift {})",
           op, real_multiplier, exponent);
  return {static_cast<int32_t>(m0), exponent};
}

double multiplier_value(QuantizedMultiplier m) {
  return std::ldexp(static_cast<double>(m.multiplier), m.shift - 31);
}

void check_multiplier(QuantizedMultiplier m, const char* op) {
  QT_CHECK(m.multiplier == 0 || (m.multiplier >= (int32_t{1} << 30)),
           "{}: the quantized multiplier M0 = {} must be 0 or in [2^30, 2^31)", op, m.multiplier);
  QT_CHECK(m.shift >= -31 && m.shift <= 30, "{}: the shift {} is out of range [-31, 30]", op,
           m.shift);
}

int64_t rounding_shift_right(int64_t x, int exponent, Rounding rounding) {
  QT_CHECK(exponent >= 0 && exponent <= 62,
           "rounding_shift_right: exponent {} is out of range [0, 62]", exponent);
  if (exponent == 0) return x;
  const int64_t floor = x >> exponent;  // arithmetic shift (C++20): floor(x / 2^exponent)
  const int64_t remainder = x - floor * (int64_t{1} << exponent);  // in [0, 2^exponent)
  const int64_t half = int64_t{1} << (exponent - 1);
  switch (rounding) {
    case Rounding::half_up:
      return floor + (remainder >= half);
    case Rounding::half_away_from_zero:
      return floor + (x >= 0 ? remainder >= half : remainder > half);
    case Rounding::half_to_even:
      return floor + (remainder > half || (remainder == half && (floor & 1) != 0));
  }
  return floor;
}

int32_t rounding_divide_by_pot(int32_t x, int exponent) {
  QT_CHECK(exponent >= 0 && exponent <= 31,
           "rounding_divide_by_pot: exponent {} is out of range [0, 31]", exponent);
  // gemmlowp's formulation, kept literally: threshold = mask / 2, plus one for negative x.
  const int64_t mask = (int64_t{1} << exponent) - 1;
  const int64_t remainder = static_cast<int64_t>(x) & mask;
  const int64_t threshold = (mask >> 1) + (x < 0 ? 1 : 0);
  return static_cast<int32_t>((static_cast<int64_t>(x) >> exponent) + (remainder > threshold));
}

int32_t saturating_rounding_doubling_high_mul(int32_t a, int32_t b) {
  if (a == b && a == std::numeric_limits<int32_t>::min())
    return std::numeric_limits<int32_t>::max();
  const int64_t product = static_cast<int64_t>(a) * static_cast<int64_t>(b);
  const int64_t nudge = product >= 0 ? (int64_t{1} << 30) : 1 - (int64_t{1} << 30);
  // Division truncates toward zero, as gemmlowp's.
  return static_cast<int32_t>((product + nudge) / (int64_t{1} << 31));
}

int32_t multiply_by_quantized_multiplier(int32_t x, QuantizedMultiplier m, Requant mode) {
  if (mode == Requant::double_rounding) {
    const int left = std::max(m.shift, 0), right = std::max(-m.shift, 0);
    const int64_t shifted = static_cast<int64_t>(x) * (int64_t{1} << left);
    QT_CHECK(shifted >= kInt32Min && shifted <= kInt32Max,
             "multiply_by_quantized_multiplier: x * 2^{} = {} overflows int32 (x = {}, double "
             "rounding with a multiplier >= 1)",
             left, shifted, x);
    return rounding_divide_by_pot(
        saturating_rounding_doubling_high_mul(static_cast<int32_t>(shifted), m.multiplier), right);
  }
  const Rounding rounding = mode == Requant::single_half_up     ? Rounding::half_up
                            : mode == Requant::single_half_away ? Rounding::half_away_from_zero
                                                                : Rounding::half_to_even;
  const int64_t product = static_cast<int64_t>(x) * m.multiplier;  // exact, |.| <= 2^62
  return saturate_to_int32(rounding_shift_right(product, 31 - m.shift, rounding));
}

int32_t Requantizer::operator()(int32_t x) const {
  const int64_t y =
      static_cast<int64_t>(multiply_by_quantized_multiplier(x, multiplier, mode)) + zero_point;
  return static_cast<int32_t>(std::clamp<int64_t>(y, qmin, qmax));
}

Requantizer make_requantizer(double real_multiplier, int32_t zero_point, int32_t qmin, int32_t qmax,
                             Requant mode, const char* op) {
  QT_CHECK(qmin <= qmax, "{}: empty output grid [{}, {}]", op, qmin, qmax);
  QT_CHECK(zero_point >= qmin && zero_point <= qmax,
           "{}: the zero point {} lies outside the output grid [{}, {}]", op, zero_point, qmin,
           qmax);
  return {quantize_multiplier(real_multiplier, op), zero_point, qmin, qmax, mode};
}

void check_u8_zero_point(int32_t zero_point, const char* what, const char* op) {
  QT_CHECK(zero_point >= 0 && zero_point <= 255, "{}: the {} zero point {} is outside [0, 255]", op,
           what, zero_point);
}

namespace {
template <typename T>
void requantize_to(const int32_t* x, int64_t n, const Requantizer& r, T* out, const char* type) {
  QT_CHECK(r.qmin >= std::numeric_limits<T>::min() && r.qmax <= std::numeric_limits<T>::max(),
           "requantize: the output grid [{}, {}] does not fit {}", r.qmin, r.qmax, type);
  check_multiplier(r.multiplier, "requantize");
  for (int64_t i = 0; i < n; ++i) out[i] = static_cast<T>(r(x[i]));
}
}  // namespace

void requantize(const int32_t* x, int64_t n, const Requantizer& r, uint8_t* out) {
  requantize_to(x, n, r, out, "u8");
}
void requantize(const int32_t* x, int64_t n, const Requantizer& r, int8_t* out) {
  requantize_to(x, n, r, out, "s8");
}

}  // namespace qt::quant
