// Integer addition of quantized tensors with different scales and zero points: the residual add
// (anchors §2.2 item 9; TFLite reference/integer_ops/add.h and its Prepare), generalised to up to
// four terms for the embedding sums (quant/integer_embedding.h).
//
// The float64 function: for terms (q_i, S_i, Z_i), output (S_o, Z_o) on the grid [qmin, qmax]:
//
//   y = clamp( round( sum_i S_i (q_i - Z_i) / S_o ) + Z_o, qmin, qmax )
//
// Integer steps (TFLite's, with n terms instead of 2): a common scale C = n max_i S_i, and
//   x_i   = (q_i - Z_i) * 2^20                      left shift 20, as TFLite for 8-bit inputs
//   s_i   = x_i * (S_i / C)        (requantized, each multiplier <= 1 / n, shift <= 0)
//   y     = clamp( (sum_i s_i) * (C / (2^20 S_o)) + Z_o, qmin, qmax )
// Every product is rounded by the Requant mode chosen (the same for all three multiplies).
//
// Bit widths / overflow: |q_i - Z_i| <= 1023 is checked per element, so |x_i| < 2^30; then
// |s_i| <= |x_i| / n and |sum s_i| < 2^30: int32 throughout. The output multiplier C / (2^20 S_o)
// must be < 2^30 (checked when built); with double rounding and a multiplier >= 1 the
// left-shifted sum is checked to fit int32 (see multiply_by_quantized_multiplier).
// Error: the terms are rounded at 1/2^20 of their step, so the result is within 0.5 LSB (single
// rounding) of the float64 value plus n * max S_i / (2^21 S_o) LSB.
#pragma once

#include <array>
#include <cstdint>
#include <vector>

#include "quant/integer_requantize.h"

namespace qt::quant {

inline constexpr int kAddLeftShift = 20;
inline constexpr int kMaxSumTerms = 4;
inline constexpr int32_t kMaxCenteredMagnitude = 1023;

// One quantized term of a sum: real value S (q - Z).
struct QuantizedTerm {
  double scale = 1;
  int32_t zero_point = 0;
};

struct IntegerRescaleSum {
  int terms = 0;
  std::array<QuantizedMultiplier, kMaxSumTerms> input{};  // S_i / C
  std::array<int32_t, kMaxSumTerms> zero_point{};         // Z_i
  Requantizer output;                                     // C / (2^20 S_o), Z_o, [qmin, qmax]

  // y for the codes q[0..terms) (|q_i - Z_i| <= 1023, checked).
  int32_t operator()(const int32_t* q) const;
};

// Throws for 0 or more than 4 terms, a non-positive scale or an output multiplier out of range.
IntegerRescaleSum make_rescale_sum(const std::vector<QuantizedTerm>& terms, double output_scale,
                                   int32_t output_zero_point, int32_t qmin, int32_t qmax,
                                   Requant mode, const char* op = "make_rescale_sum");

// The residual add of two u8 tensors into u8 (or int16, a wider pre-LayerNorm sum as I-BERT's).
IntegerRescaleSum make_integer_add(QuantizedTerm a, QuantizedTerm b, double output_scale,
                                   int32_t output_zero_point, int32_t qmin, int32_t qmax,
                                   Requant mode);
void integer_add(const IntegerRescaleSum& add, const uint8_t* a, const uint8_t* b, int64_t n,
                 uint8_t* out);
void integer_add(const IntegerRescaleSum& add, const uint8_t* a, const uint8_t* b, int64_t n,
                 int16_t* out);

}  // namespace qt::quant
