// Integer GELU (tables) and ReLU (see the header).
#include "quant/integer_gelu.h"

#include <algorithm>
#include <cmath>

#include "tensor/error.h"

namespace qt::quant {

double gelu_reference(double x) {
  return 0.5 * x * (1.0 + std::erf(x / std::sqrt(2.0)));
}

IntegerLut make_integer_gelu_u8(double input_scale, int32_t input_zero_point, double output_scale,
                                int32_t output_zero_point) {
  check_u8_zero_point(input_zero_point, "input", "make_integer_gelu_u8");
  return make_lut(0, 255, input_scale, input_zero_point, output_scale, output_zero_point, kU8Min,
                  kU8Max, gelu_reference, "make_integer_gelu_u8");
}

IntegerLutActivation make_integer_gelu(const std::vector<double>& acc_scales, double input_bound,
                                       double output_scale, int32_t output_zero_point,
                                       Requant mode) {
  return make_lut_activation(acc_scales, input_bound, output_scale, output_zero_point, mode,
                             gelu_reference, "make_integer_gelu");
}

void integer_relu(const uint8_t* x, int64_t n, int32_t zero_point, uint8_t* out) {
  check_u8_zero_point(zero_point, "input", "integer_relu");
  QT_CHECK(n >= 0, "integer_relu: negative size {}", n);
  const auto z = static_cast<uint8_t>(zero_point);
  for (int64_t i = 0; i < n; ++i) out[i] = std::max(x[i], z);
}

}  // namespace qt::quant
