// Integer requantization (see the header for the arithmetic and the overflow policy).
#include "quant/integer_requantize.h"

#include <algorithm>
#include <cmath>
#include <limits>

#include "tensor/error.h"

namespace qt::quant {
// rounding_shift_right, rounding_divide_by_pot, saturating_rounding_doubling_high_mul,
// multiply_by_quantized_multiplier and Requantizer::operator() are inline in the header: every
// integer op calls them once per element.

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
