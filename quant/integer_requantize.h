// Integer requantization: the primitive every integer op ends with (anchors §2.2; gemmlowp
// fixedpoint.h and doc/quantization_example.cc, TFLite kernels/internal/common.h and
// quantization_util.cc). A real multiplier M > 0 is stored as an int32 M0 in [2^30, 2^31) and a
// power-of-two exponent `shift`, so that  M = M0 * 2^(shift - 31)  up to the rounding of M0:
//
//   quantize_multiplier(M):  M = m * 2^shift with m in [0.5, 1) (frexp),  M0 = round(m * 2^31)
//                            (ties away from zero); M0 == 2^31 becomes 2^30 with shift + 1.
//                            shift < -31 (M < 2^-32) flushes to M0 = 0, shift = 0; M = 0 gives (0,
//                            0). Allowed: 0 <= M < 2^30 (shift <= 30), anything else is an error.
//
// Then y = x * M for an int32 x, rounded to an integer one of these named ways (enum Requant):
//
//   double_rounding     TFLite's default / gemmlowp: left = max(shift, 0), right = max(-shift, 0),
//                       y = RoundingDivideByPOT(SaturatingRoundingDoublingHighMul(x * 2^left, M0),
//                       right). Two roundings: SRDHM's ties go toward +infinity (its negative
//                       nudge is 1 - 2^30: -0.5 -> 0; anchors §2.2 says "away from zero", the
//                       code and our tests say up), RDBPOT's away from zero; biased by up to one
//                       LSB against round(x * M) (ruy PR #227: x = 1, M0 = 2^30, shift = -1 gives 1
//                       for 0.25; TF issue #25087: x = 7984, M0 = 1583594044, shift = -9 gives 12
//                       for 11.499).
//   single_half_up      TFLITE_SINGLE_ROUNDING: (x * M0 + 2^(30 - shift)) >> (31 - shift) in int64,
//                       one rounding of the exact product, ties toward +infinity.
//   single_half_away    one rounding of the exact product, ties away from zero.
//   single_half_even    one rounding of the exact product, ties to even (numpy / ONNX /
//   torch.round).
//
// Bit widths and overflow policy (no silent wrap-around anywhere):
//   - x * 2^left must fit int32 (double rounding with M >= 1): checked, a qt::Error otherwise.
//   - The product x * M0 is exact in int64 (|x|, |M0| <= 2^31, so |x * M0| <= 2^62).
//   - SaturatingRoundingDoublingHighMul saturates its one overflow case, INT32_MIN * INT32_MIN,
//     to INT32_MAX; single rounding saturates a result beyond int32 (possible only for M > 1) to
//     [INT32_MIN, INT32_MAX]. The zero point is added in int64 and the result clamped to
//     [qmin, qmax], so no step wraps.
#pragma once

#include <algorithm>
#include <cstdint>
#include <limits>
#include <string_view>

#include "tensor/error.h"

namespace qt::quant {

// How a value exactly halfway between two integers is rounded.
enum class Rounding {
  half_up,              // toward +infinity: floor(x + 1/2) (gemmlowp SRDHM, TFLITE_SINGLE_ROUNDING)
  half_away_from_zero,  // sign(x) floor(|x| + 1/2) (gemmlowp RoundingDivideByPOT, std::round)
  half_to_even,         // to the even neighbour (std::nearbyint in the default mode)
};
std::string_view rounding_name(Rounding rounding);

enum class Requant { double_rounding, single_half_up, single_half_away, single_half_even };
std::string_view requant_name(Requant mode);

struct QuantizedMultiplier {
  int32_t multiplier = 0;  // M0 in [2^30, 2^31), or 0
  int shift = 0;           // in [-31, 30]; M = M0 * 2^(shift - 31)
};

// The conversion helper (the only place that sees a double). Throws for a negative, non-finite
// or too large (>= 2^30) M, naming `op` and the value.
QuantizedMultiplier quantize_multiplier(double real_multiplier,
                                        const char* op = "quantize_multiplier");
// The real value M0 * 2^(shift - 31) that a quantized multiplier stands for (for tests and docs).
double multiplier_value(QuantizedMultiplier m);
// Throws unless M0 is 0 or in [2^30, 2^31) and shift is in [-31, 30].
void check_multiplier(QuantizedMultiplier m, const char* op);

// round(x / 2^exponent) under `rounding`, exactly, for 0 <= exponent <= 62 (checked).
inline int64_t rounding_shift_right(int64_t x, int exponent, Rounding rounding) {
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

// gemmlowp's RoundingDivideByPOT: round(x / 2^exponent), ties away from zero, 0 <= exponent <= 31
// (checked).
inline int32_t rounding_divide_by_pot(int32_t x, int exponent) {
  QT_CHECK(exponent >= 0 && exponent <= 31,
           "rounding_divide_by_pot: exponent {} is out of range [0, 31]", exponent);
  // gemmlowp's formulation, kept literally: threshold = mask / 2, plus one for negative x.
  const int64_t mask = (int64_t{1} << exponent) - 1;
  const int64_t remainder = static_cast<int64_t>(x) & mask;
  const int64_t threshold = (mask >> 1) + (x < 0 ? 1 : 0);
  return static_cast<int32_t>((static_cast<int64_t>(x) >> exponent) + (remainder > threshold));
}

// gemmlowp's SaturatingRoundingDoublingHighMul (ARM VQRDMULH): round(a * b / 2^31), ties toward
// +infinity (the nudge 2^30 or 1 - 2^30, then truncation), computed exactly in int64;
// a = b = INT32_MIN saturates to INT32_MAX.
inline int32_t saturating_rounding_doubling_high_mul(int32_t a, int32_t b) {
  if (a == b && a == std::numeric_limits<int32_t>::min())
    return std::numeric_limits<int32_t>::max();
  const int64_t product = static_cast<int64_t>(a) * static_cast<int64_t>(b);
  const int64_t nudge = product >= 0 ? (int64_t{1} << 30) : 1 - (int64_t{1} << 30);
  // Division truncates toward zero, as gemmlowp's.
  return static_cast<int32_t>((product + nudge) / (int64_t{1} << 31));
}

// x * M rounded by `mode` (see the top of the file). Throws if double rounding's x * 2^left
// overflows int32.
inline int32_t multiply_by_quantized_multiplier(int32_t x, QuantizedMultiplier m, Requant mode) {
  if (mode == Requant::double_rounding) {
    const int left = std::max(m.shift, 0), right = std::max(-m.shift, 0);
    const int64_t shifted = static_cast<int64_t>(x) * (int64_t{1} << left);
    QT_CHECK(shifted >= int64_t{INT32_MIN} && shifted <= int64_t{INT32_MAX},
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
  return static_cast<int32_t>(std::clamp<int64_t>(
      rounding_shift_right(product, 31 - m.shift, rounding), INT32_MIN, INT32_MAX));
}

// The full output stage: clamp(x * M (rounded by mode) + zero_point, qmin, qmax).
struct Requantizer {
  QuantizedMultiplier multiplier;
  int32_t zero_point = 0;
  int32_t qmin = 0, qmax = 255;
  Requant mode = Requant::double_rounding;

  int32_t operator()(int32_t x) const;
};

inline int32_t Requantizer::operator()(int32_t x) const {
  const int64_t y =
      static_cast<int64_t>(multiply_by_quantized_multiplier(x, multiplier, mode)) + zero_point;
  return static_cast<int32_t>(std::clamp<int64_t>(y, qmin, qmax));
}

// Builds a Requantizer from a real multiplier; checks qmin <= zero_point <= qmax.
Requantizer make_requantizer(double real_multiplier, int32_t zero_point, int32_t qmin, int32_t qmax,
                             Requant mode, const char* op = "make_requantizer");
// The u8 and s8 output grids.
inline constexpr int32_t kU8Min = 0, kU8Max = 255, kS8Min = -128, kS8Max = 127;

// Throws unless 0 <= zero_point <= 255, naming `op` and `what` ("input", "output", ...).
void check_u8_zero_point(int32_t zero_point, const char* what, const char* op);

// Applies `r` to n int32 values into u8 / s8 / int16 (the grid of r must lie inside the type:
// checked): the same integers as r(x[i]) element by element (tested), but with the rounding mode
// chosen once per call and no branch on the data, so that the loop vectorizes (the hot output
// stage of every integer op). requantize_relu applies r to max(x, 0).
void requantize(const int32_t* x, int64_t n, const Requantizer& r, uint8_t* out);
void requantize(const int32_t* x, int64_t n, const Requantizer& r, int8_t* out);
void requantize(const int32_t* x, int64_t n, const Requantizer& r, int16_t* out);
void requantize_relu(const int32_t* x, int64_t n, const Requantizer& r, uint8_t* out);
// The output stage of a [rows, cols] block with one requantizer per column (a linear layer's
// per-channel multipliers; u8 grids): out[m, c] = r[c](relu ? max(acc, 0) : acc), the same
// integers as the scalar loop, vectorized along the row (one requantizer for all columns when
// they are all equal, as for per-tensor weights).
void requantize_columns(const int32_t* acc, int64_t rows, int64_t cols, const Requantizer* r,
                        bool relu, uint8_t* out);

}  // namespace qt::quant
