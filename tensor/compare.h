// Comparing and printing tensors.
#pragma once

#include <string>

#include "tensor/tensor.h"

namespace qt::ops {

// |a - b| <= atol + rtol * |b| elementwise (NumPy's allclose); shapes must broadcast; NaNs are
// never close. Any dtypes (compared in double).
bool allclose(const Tensor& a, const Tensor& b, double rtol = 1e-5, double atol = 1e-8);
// Largest |a - b| (double), for messages in tests.
double max_abs_diff(const Tensor& a, const Tensor& b);

// A readable dump: "tensor(f32 [2, 3]) [[1, 2, 3], [4, 5, 6]]", eliding the middle of large dims.
std::string to_string(const Tensor& t, int64_t edge_items = 3);

}  // namespace qt::ops

template <>
struct fmt::formatter<qt::Tensor> : fmt::formatter<std::string> {
  auto format(const qt::Tensor& t, format_context& ctx) const {
    return fmt::formatter<std::string>::format(qt::ops::to_string(t), ctx);
  }
};
