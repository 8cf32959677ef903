// The uniform affine quantizer (paper Eq. 1; method.md §4.1) applied to tensors: simulated
// ("fake") quantization, its straight-through-estimator backward, and the integer quantize /
// dequantize pair for integer inference. Parameters: quant/quantization_parameters.h.
//
//   q  = clamp( ⌊x / s⌉ + z, int_min, int_max )      ⌊·⌉ = round half to even (std::nearbyint)
//   x̂  = s · (q − z)
//
// Arithmetic is in the tensor's dtype (f32 or f64; s and z are converted to it), with a true
// division x / s as torch does (not a multiplication by 1/s, which rounds differently at ties):
// for f32 inputs the results are bit-identical to the repo's torch code.
//
// Straight-through estimator (method.md §4.1; repo round_ste_func followed by torch.clamp):
//   the rounding passes the gradient unchanged, the clamp passes it only where its input lies in
//   the grid (boundaries included, as torch.clamp), so
//
//   ∂L/∂x = ∂L/∂x̂  if int_min <= ⌊x/s⌉ + z <= int_max,   0 otherwise.
//
//   The test is on the *rounded* value: x/s + z = int_max + 0.4 still passes the gradient.
//   s and z are constants (PTQ): no gradient flows to them.
//
// NaN inputs are an error (qt::Error), never silently quantized; ±inf clamps to the grid ends.
// Per-channel parameters apply along their channel_axis (any axis).
#pragma once

#include "quant/quantization_parameters.h"
#include "tensor/tensor.h"

namespace qt::ops {

// x̂ = s (clamp(⌊x/s⌉ + z, int_min, int_max) − z); x f32 or f64, any layout; a fresh dense result.
Tensor fake_quantize(const Tensor& x, const quant::QuantizationParameters& parameters);

// The STE backward: grad where int_min <= ⌊x/s⌉ + z <= int_max, else 0 (same shape and dtype).
Tensor fake_quantize_backward(const Tensor& grad, const Tensor& x,
                              const quant::QuantizationParameters& parameters);

// The integer codes q = clamp(⌊x/s⌉ + z, int_min, int_max) in code_dtype(parameters).
Tensor quantize(const Tensor& x, const quant::QuantizationParameters& parameters);

// s (q − z) as f32, from codes of any integer dtype (each code must lie in the grid).
Tensor dequantize(const Tensor& codes, const quant::QuantizationParameters& parameters);

}  // namespace qt::ops

namespace qt::quant {

// The smallest integer dtype holding the grid: u8 for [0, 2^b − 1] and i8 for [−2^(b−1),
// 2^(b−1) − 1] when b <= 8, i32 for more bits.
DType code_dtype(const QuantizationParameters& parameters);

// Differentiable fake quantization (records the STE backward above when x requires grad).
Tensor fake_quantize(const Tensor& x, const QuantizationParameters& parameters);

}  // namespace qt::quant
