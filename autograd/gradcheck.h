// Gradient checking: compares the analytic gradient that backward() computes with central finite
// differences, in f64 so that the difference quotient is accurate to ~1e-10.
//
//   dL/dx_i  ~=  (L(x + eps e_i) - L(x - eps e_i)) / (2 eps)        (error O(eps^2))
//
// L is a random linear projection of the function's output, L = sum(f(x) * w), so every output
// element's gradient is checked at once and a wrong sign or transposition cannot cancel out.
#pragma once

#include <functional>
#include <string>
#include <vector>

#include "tensor/tensor.h"

namespace qt {

struct GradcheckResult {
  bool ok = false;
  double max_abs_error = 0;  // largest |analytic - numeric| over all checked elements
  std::string message;       // which input and element failed, and the two values
};

struct GradcheckOptions {
  double eps = 1e-6;
  double atol = 1e-7;
  double rtol = 1e-5;
  uint64_t seed = 1234;  // for the projection weights w
};

// `inputs` must be f64 tensors (any layout: non-contiguous views are allowed and are perturbed in
// place through their view). Inputs with requires_grad() are checked; the others are held fixed.
GradcheckResult gradcheck(const std::function<Tensor(const std::vector<Tensor>&)>& f,
                          const std::vector<Tensor>& inputs, const GradcheckOptions& options = {});

}  // namespace qt
