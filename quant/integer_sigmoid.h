// Integer sigmoid for the attention gate, and the gate multiply (paper Eq. 5-7, method.md §2;
// nn/attention_gate.h). The paper keeps the gate in floating point (method.md §4.3); an
// integer-only engine needs it in integers, so these fix a representation:
//
//   gate probability pi = sigmoid(logit), stored as u8 with scale 1/256 and zero point 0 (TFLite's
//   uint8 Logistic convention): code g = clamp(round_half_even(256 pi), 0, 255), so pi in
//   [0, 255/256]; sigmoid > 1 - 1/512 saturates at 255/256.
//
// The sigmoid is a lookup table (quant/integer_lut.h), exact by construction: over u8 logit codes
// (256 entries) or fused after the gate's linear layer (its int32 accumulator requantized to
// int16 with S_mid = input_bound / 32767, then a 65536-entry table; max|sigmoid'| = 1/4, so the
// int16 step adds at most S_mid / (8 S_out) = 32 S_mid LSB).
//
// Gate multiply: the head context c (u8, S_c, Z_c) times the gate g of its head and token:
//
//   y = clamp( round( S_c (c - Z_c) g / (256 S_o) ) + Z_o, 0, 255 )
//
// as one requantization of the exact product (c - Z_c) g, |.| <= 255 * 255 < 2^16 (int32, no
// overflow possible), multiplier S_c / (256 S_o).
#pragma once

#include <cstdint>
#include <vector>

#include "quant/integer_lut.h"

namespace qt::quant {

inline constexpr double kGateScale = 1.0 / 256;

double sigmoid_reference(double x);

// The table for u8 logit codes (S_in, Z_in) -> gate codes (scale 1/256, zero point 0).
IntegerLut make_integer_sigmoid_u8(double input_scale, int32_t input_zero_point);
// The fused form after the gate's linear layer (acc_scales per tensor or per head).
IntegerLutActivation make_integer_sigmoid(const std::vector<double>& acc_scales, double input_bound,
                                          Requant mode);

// context [tokens, heads * head_dim] (u8), gate [tokens, heads] (u8 codes, scale 1/256) ->
// out [tokens, heads * head_dim] (u8), the requantizer built by make_gate_multiply.
Requantizer make_gate_multiply(double context_scale, int32_t context_zero_point,
                               double output_scale, int32_t output_zero_point, Requant mode);
void integer_gate_multiply(const uint8_t* context, const uint8_t* gate, int64_t tokens,
                           int64_t heads, int64_t head_dim, int32_t context_zero_point,
                           const Requantizer& r, uint8_t* out);

}  // namespace qt::quant
