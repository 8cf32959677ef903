// Integer requantization (see the header for the arithmetic and the overflow policy).
#include "quant/integer_requantize.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <vector>

#include "tensor/error.h"
#include "tensor/parallel_policy.h"

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

// The arithmetic of Requantizer::operator() for one rounding mode, with no branch on the data, so
// that a loop over it vectorizes (int64 products, compares and shifts). The same integers:
//   double rounding, shift <= 0 (left = 0): t = x M0 + nudge (2^30, or 1 - 2^30 for a negative
//     product); h = trunc(t / 2^31) written as floor((t + (t < 0 ? 2^31 - 1 : 0)) / 2^31), which
//     fits int32 since M0 < 2^31; then RoundingDivideByPOT(h, right) as in gemmlowp. SRDHM's one
//     saturating case needs M0 = INT32_MIN, which check_multiplier excludes.
//   single rounding: floor(x M0 / 2^e) plus the tie rule on the remainder, e = 31 - shift in
//     [1, 62], clamped to int32 (only M > 1 can leave it).
template <Requant kMode>
inline int64_t scaled(int32_t x, int64_t m0, int e) {
  const int64_t product = int64_t{x} * m0;
  if constexpr (kMode == Requant::double_rounding) {
    const int64_t t = product + (product >= 0 ? int64_t{1} << 30 : 1 - (int64_t{1} << 30));
    // Bits 31..62 of t + bias are the low 32 bits of both the arithmetic and the logical shift,
    // so the logical one (which AVX2 has for 64-bit lanes) gives h.
    const uint64_t biased = static_cast<uint64_t>(t) + (t < 0 ? uint64_t{0x7fffffff} : 0);
    const auto h = static_cast<int32_t>(static_cast<uint32_t>(biased >> 31));
    const auto mask = static_cast<int32_t>((int64_t{1} << e) - 1);
    return (h >> e) + ((h & mask) > (mask >> 1) + (h < 0 ? 1 : 0));
  } else {
    const int64_t floor = product >> e;
    const int64_t remainder = product & ((int64_t{1} << e) - 1);
    const int64_t half = int64_t{1} << (e - 1);
    int64_t up = 0;
    if constexpr (kMode == Requant::single_half_up)
      up = remainder >= half;
    else if constexpr (kMode == Requant::single_half_away)
      up = product >= 0 ? remainder >= half : remainder > half;
    else
      up = remainder > half || (remainder == half && (floor & 1) != 0);
    return std::clamp<int64_t>(floor + up, INT32_MIN, INT32_MAX);
  }
}

template <Requant kMode, bool kRelu, typename T>
void requantize_range(const int32_t* x, int64_t begin, int64_t end, const Requantizer& r, T* out) {
  const int64_t m0 = r.multiplier.multiplier, zp = r.zero_point, lo = r.qmin, hi = r.qmax;
  const int e = kMode == Requant::double_rounding ? -r.multiplier.shift : 31 - r.multiplier.shift;
  for (int64_t i = begin; i < end; ++i) {
    const int32_t v = kRelu ? std::max(x[i], 0) : x[i];
    out[i] = static_cast<T>(std::clamp<int64_t>(scaled<kMode>(v, m0, e) + zp, lo, hi));
  }
}

// Small calls (a row of 64 or 256) stay on the calling thread without touching OpenMP: even an
// `if (false)` parallel region costs about a microsecond, more than such a row takes.
template <Requant kMode, bool kRelu, typename T>
void requantize_loop(const int32_t* x, int64_t n, const Requantizer& r, T* out) {
  if (!worth_parallel(n, WorkCost::standard))
    return requantize_range<kMode, kRelu>(x, 0, n, r, out);
  constexpr int64_t kChunk = 16384;
#pragma omp parallel for schedule(static)
  for (int64_t begin = 0; begin < n; begin += kChunk)
    requantize_range<kMode, kRelu>(x, begin, std::min(n, begin + kChunk), r, out);
}

template <bool kRelu, typename T>
void requantize_to(const int32_t* x, int64_t n, const Requantizer& r, T* out, const char* type) {
  QT_CHECK(r.qmin >= std::numeric_limits<T>::min() && r.qmax <= std::numeric_limits<T>::max(),
           "requantize: the output grid [{}, {}] does not fit {}", r.qmin, r.qmax, type);
  QT_CHECK(n >= 0, "requantize: negative size {}", n);
  check_multiplier(r.multiplier, "requantize");
  switch (r.mode) {
    case Requant::double_rounding:
      if (r.multiplier.shift > 0) {  // M >= 1: x 2^left may overflow; the checked scalar path
        for (int64_t i = 0; i < n; ++i)
          out[i] = static_cast<T>(r(kRelu ? std::max(x[i], 0) : x[i]));
        return;
      }
      return requantize_loop<Requant::double_rounding, kRelu>(x, n, r, out);
    case Requant::single_half_up:
      return requantize_loop<Requant::single_half_up, kRelu>(x, n, r, out);
    case Requant::single_half_away:
      return requantize_loop<Requant::single_half_away, kRelu>(x, n, r, out);
    case Requant::single_half_even:
      return requantize_loop<Requant::single_half_even, kRelu>(x, n, r, out);
  }
}

bool same_requantizer(const Requantizer& a, const Requantizer& b) {
  return a.multiplier.multiplier == b.multiplier.multiplier &&
         a.multiplier.shift == b.multiplier.shift && a.zero_point == b.zero_point &&
         a.qmin == b.qmin && a.qmax == b.qmax && a.mode == b.mode;
}

// Per-column multipliers, zero points and exponents as arrays (one row of the output at a time).
template <Requant kMode, bool kRelu>
void requantize_columns_loop(const int32_t* acc, int64_t rows, int64_t cols, const Requantizer* r,
                             uint8_t* out) {
  std::vector<int64_t> m0(static_cast<size_t>(cols)), zp(static_cast<size_t>(cols));
  std::vector<int32_t> e(static_cast<size_t>(cols));
  for (int64_t c = 0; c < cols; ++c) {
    m0[c] = r[c].multiplier.multiplier;
    zp[c] = r[c].zero_point;
    e[c] = kMode == Requant::double_rounding ? -r[c].multiplier.shift : 31 - r[c].multiplier.shift;
  }
  const int64_t lo = r[0].qmin, hi = r[0].qmax;
#pragma omp parallel for schedule(static) if (worth_parallel(rows * cols, WorkCost::standard))
  for (int64_t m = 0; m < rows; ++m) {  // once per layer call: the region's cost is negligible
    const int32_t* x = acc + m * cols;
    uint8_t* y = out + m * cols;
    for (int64_t c = 0; c < cols; ++c) {
      const int32_t v = kRelu ? std::max(x[c], 0) : x[c];
      y[c] =
          static_cast<uint8_t>(std::clamp<int64_t>(scaled<kMode>(v, m0[c], e[c]) + zp[c], lo, hi));
    }
  }
}
template <Requant kMode>
void requantize_columns_mode(const int32_t* acc, int64_t rows, int64_t cols, const Requantizer* r,
                             bool relu, uint8_t* out) {
  if (relu)
    requantize_columns_loop<kMode, true>(acc, rows, cols, r, out);
  else
    requantize_columns_loop<kMode, false>(acc, rows, cols, r, out);
}

}  // namespace

void requantize(const int32_t* x, int64_t n, const Requantizer& r, uint8_t* out) {
  requantize_to<false>(x, n, r, out, "u8");
}
void requantize(const int32_t* x, int64_t n, const Requantizer& r, int8_t* out) {
  requantize_to<false>(x, n, r, out, "s8");
}
void requantize(const int32_t* x, int64_t n, const Requantizer& r, int16_t* out) {
  requantize_to<false>(x, n, r, out, "int16");
}
void requantize_relu(const int32_t* x, int64_t n, const Requantizer& r, uint8_t* out) {
  requantize_to<true>(x, n, r, out, "u8");
}

void requantize_columns(const int32_t* acc, int64_t rows, int64_t cols, const Requantizer* r,
                        bool relu, uint8_t* out) {
  QT_CHECK(rows >= 0 && cols >= 1, "requantize_columns: bad shape [{}, {}]", rows, cols);
  bool uniform = true, grids_agree = true;
  for (int64_t c = 0; c < cols; ++c) {
    check_multiplier(r[c].multiplier, "requantize_columns");
    QT_CHECK(r[c].qmin >= kU8Min && r[c].qmax <= kU8Max,
             "requantize_columns: column {}: the output grid [{}, {}] does not fit u8", c,
             r[c].qmin, r[c].qmax);
    uniform = uniform && same_requantizer(r[c], r[0]);
    grids_agree = grids_agree && r[c].mode == r[0].mode && r[c].qmin == r[0].qmin &&
                  r[c].qmax == r[0].qmax &&
                  !(r[c].mode == Requant::double_rounding && r[c].multiplier.shift > 0);
  }
  if (uniform) {  // per-tensor weights: one requantizer for the whole block
    if (relu)
      requantize_relu(acc, rows * cols, r[0], out);
    else
      requantize(acc, rows * cols, r[0], out);
    return;
  }
  if (!grids_agree) {  // mixed modes or M >= 1 somewhere: the checked scalar path
    for (int64_t m = 0; m < rows; ++m)
      for (int64_t c = 0; c < cols; ++c) {
        const int32_t v = acc[m * cols + c];
        out[m * cols + c] = static_cast<uint8_t>(r[c](relu ? std::max(v, 0) : v));
      }
    return;
  }
  switch (r[0].mode) {
    case Requant::double_rounding:
      return requantize_columns_mode<Requant::double_rounding>(acc, rows, cols, r, relu, out);
    case Requant::single_half_up:
      return requantize_columns_mode<Requant::single_half_up>(acc, rows, cols, r, relu, out);
    case Requant::single_half_away:
      return requantize_columns_mode<Requant::single_half_away>(acc, rows, cols, r, relu, out);
    case Requant::single_half_even:
      return requantize_columns_mode<Requant::single_half_even>(acc, rows, cols, r, relu, out);
  }
}

}  // namespace qt::quant
