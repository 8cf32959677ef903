// Integer GELU and ReLU.
//
// GELU(x) = x Phi(x) = 0.5 x (1 + erf(x / sqrt(2)))   (the erf form, as nn's gelu and BERT's)
//
// Chosen: an exact lookup table (quant/integer_lut.h), not I-BERT's i-GELU polynomial. A table over
// the input grid is the correctly rounded GELU for every input code (0.5 LSB at most against the
// float64 function, measured over every input), where i-GELU's second-order erf approximation
// (a = -0.2888, b = -1.769) is off by about 1e-2 absolute; for a reference checker the exact
// function is the one to check against. Two forms:
//   - u8 input (S_in, Z_in): a 256-entry table;
//   - the fused form after the FFN's first linear (the paper quantizes after GELU, method.md
//     §4.3): the int32 accumulator is requantized to int16 (S_mid = input_bound / 32767) and looked
//     up in a 65536-entry table; the int16 step adds at most max|GELU'| S_mid / (2 S_out) LSB
//     (max|GELU'| = 1.13).
//
// ReLU needs no table: on u8 codes with an unchanged scale it is max(q, Z) (exact), and fused after
// a linear layer it is integer_linear_relu (quant/integer_linear.h), max(acc, 0) requantized.
#pragma once

#include <cstdint>
#include <vector>

#include "quant/integer_lut.h"

namespace qt::quant {

// The float64 GELU the tables hold.
double gelu_reference(double x);

// The 256-entry table for u8 inputs.
IntegerLut make_integer_gelu_u8(double input_scale, int32_t input_zero_point, double output_scale,
                                int32_t output_zero_point);

// The fused accumulator form (acc_scales: S_a S_w per tensor or per channel).
IntegerLutActivation make_integer_gelu(const std::vector<double>& acc_scales, double input_bound,
                                       double output_scale, int32_t output_zero_point,
                                       Requant mode);

// ReLU on u8 codes, same scale in and out: out = max(q, zero_point).
void integer_relu(const uint8_t* x, int64_t n, int32_t zero_point, uint8_t* out);

}  // namespace qt::quant
