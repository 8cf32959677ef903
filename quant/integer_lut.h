// Lookup-table activations: the exact way to apply a scalar nonlinearity f to integer codes whose
// input grid is small (up to 2^16 codes). Used by GELU (quant/integer_gelu.h) and the attention
// gate's sigmoid (quant/integer_sigmoid.h).
//
//   table[q - in_min] = clamp( round_half_even( f(S_in (q - Z_in)) / S_out ) + Z_out, qmin, qmax )
//
// for every code q of the input grid [in_min, in_max]. The table is built once, in float64 (the
// conversion step, like computing a multiplier); the forward pass is one integer load per element.
// It is exact by construction: every entry IS the correctly rounded output for its input (up to
// float64's error in f, which only matters within ~1e-13 LSB of a tie).
//
// The fused form for an int32 accumulator (the paper quantizes after GELU, not before it:
// method.md §4.3): the accumulator (scale S_acc, per tensor or per channel) is first requantized
// to an int16 grid with a fine scale S_mid = input_bound / 32767, then looked up. The extra
// rounding is at most S_mid / 2 in the input, i.e. max|f'| S_mid / (2 S_out) output LSB (about
// 0.002 LSB for a u8 output covering the same range); inputs beyond +-input_bound saturate at the
// int16 ends.
#pragma once

#include <cstdint>
#include <functional>
#include <vector>

#include "quant/integer_requantize.h"

namespace qt::quant {

inline constexpr int64_t kMaxLutEntries = 65536;

struct IntegerLut {
  int32_t input_min = 0, input_max = -1;
  std::vector<uint8_t> table;  // [input_max - input_min + 1], u8 output codes

  // The output code for q; q outside [input_min, input_max] is an error.
  uint8_t operator()(int32_t q) const;
};

// Builds the table of f over the input grid. Throws for an empty or too large grid (> 2^16
// entries), non-positive scales, an output grid outside u8, or a non-finite f value (naming q).
IntegerLut make_lut(int32_t input_min, int32_t input_max, double input_scale,
                    int32_t input_zero_point, double output_scale, int32_t output_zero_point,
                    int32_t qmin, int32_t qmax, const std::function<double(double)>& f,
                    const char* op = "make_lut");

// An activation fused after a linear layer: accumulator -> int16 code -> table -> u8.
struct IntegerLutActivation {
  std::vector<Requantizer> to_input;  // 1 (per tensor) or one per channel: S_acc[c] / S_mid
  IntegerLut lut;                     // over the int16 grid with scale S_mid
};

// acc_scales: S_acc per tensor (1 entry) or per channel; input_bound: the real |x| the int16 grid
// covers (S_mid = input_bound / 32767).
IntegerLutActivation make_lut_activation(const std::vector<double>& acc_scales, double input_bound,
                                         double output_scale, int32_t output_zero_point,
                                         Requant mode, const std::function<double(double)>& f,
                                         const char* op = "make_lut_activation");

// out[rows, channels] = lut(to_input[c](acc[rows, channels])).
void apply_lut_activation(const IntegerLutActivation& activation, const int32_t* acc, int64_t rows,
                          int64_t channels, uint8_t* out);
// out[i] = lut(in[i]) for u8 codes (the table must cover [0, 255]).
void apply_lut(const IntegerLut& lut, const uint8_t* in, int64_t n, uint8_t* out);

}  // namespace qt::quant
