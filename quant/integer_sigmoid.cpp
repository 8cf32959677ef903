// Integer sigmoid (tables) and the gate multiply (see the header).
#include "quant/integer_sigmoid.h"

#include <cmath>

#include "tensor/error.h"

namespace qt::quant {

double sigmoid_reference(double x) {
  return 1.0 / (1.0 + std::exp(-x));
}

IntegerLut make_integer_sigmoid_u8(double input_scale, int32_t input_zero_point) {
  check_u8_zero_point(input_zero_point, "input", "make_integer_sigmoid_u8");
  return make_lut(0, 255, input_scale, input_zero_point, kGateScale, 0, kU8Min, kU8Max,
                  sigmoid_reference, "make_integer_sigmoid_u8");
}

IntegerLutActivation make_integer_sigmoid(const std::vector<double>& acc_scales, double input_bound,
                                          Requant mode) {
  return make_lut_activation(acc_scales, input_bound, kGateScale, 0, mode, sigmoid_reference,
                             "make_integer_sigmoid");
}

Requantizer make_gate_multiply(double context_scale, int32_t context_zero_point,
                               double output_scale, int32_t output_zero_point, Requant mode) {
  check_u8_zero_point(context_zero_point, "context", "make_gate_multiply");
  QT_CHECK(context_scale > 0 && output_scale > 0,
           "make_gate_multiply: scales must be positive (context {}, output {})", context_scale,
           output_scale);
  return make_requantizer(context_scale * kGateScale / output_scale, output_zero_point, kU8Min,
                          kU8Max, mode, "make_gate_multiply");
}

void integer_gate_multiply(const uint8_t* context, const uint8_t* gate, int64_t tokens,
                           int64_t heads, int64_t head_dim, int32_t context_zero_point,
                           const Requantizer& r, uint8_t* out) {
  QT_CHECK(tokens >= 0 && heads > 0 && head_dim > 0,
           "integer_gate_multiply: bad shape (tokens {}, heads {}, head_dim {})", tokens, heads,
           head_dim);
  check_u8_zero_point(context_zero_point, "context", "integer_gate_multiply");
  QT_CHECK(r.qmin >= kU8Min && r.qmax <= kU8Max,
           "integer_gate_multiply: the output grid [{}, {}] is not inside u8", r.qmin, r.qmax);
  const int64_t width = heads * head_dim;
  for (int64_t t = 0; t < tokens; ++t)
    for (int64_t h = 0; h < heads; ++h) {
      const int32_t g = gate[t * heads + h];
      for (int64_t j = 0; j < head_dim; ++j) {
        const int64_t i = t * width + h * head_dim + j;
        // |(c - Z_c) g| <= 255 * 255: exact in int32.
        out[i] = static_cast<uint8_t>(r((int32_t{context[i]} - context_zero_point) * g));
      }
    }
}

}  // namespace qt::quant
