// Gradient checking by central differences (see gradcheck.h for the math).
//
// One backward pass gives every analytic gradient dL/dx at once; the numeric gradient costs two
// evaluations of f per checked element, each under NoGradGuard. Inputs are perturbed in place
// through their own strides, so a transposed or narrowed view is checked as the view it is.
#include "autograd/gradcheck.h"

#include <fmt/format.h>

#include <cmath>

#include "autograd/functions.h"

namespace qt {

namespace {

// Offset (in elements, from element 0) of a multi-index under `strides`.
int64_t offset_of(const std::vector<int64_t>& index, const Shape& strides) {
  int64_t offset = 0;
  for (size_t d = 0; d < index.size(); ++d) offset += index[d] * strides[d];
  return offset;
}

// L = sum(f(inputs) * w), evaluated without recording, in double.
double projected_loss(const std::function<Tensor(const std::vector<Tensor>&)>& f,
                      const std::vector<Tensor>& inputs, const Tensor& weights) {
  NoGradGuard no_grad;
  const Tensor output = f(inputs);
  return ops::sum(ops::mul(ops::to(output, DType::f64), ops::to(weights, DType::f64))).item();
}

}  // namespace

GradcheckResult gradcheck(const std::function<Tensor(const std::vector<Tensor>&)>& f,
                          const std::vector<Tensor>& inputs, const GradcheckOptions& options) {
  for (size_t i = 0; i < inputs.size(); ++i) {
    check_dtype(inputs[i], DType::f64, "gradcheck");
    if (!inputs[i].requires_grad()) continue;
    QT_CHECK(inputs[i].is_leaf(), "gradcheck: input {} requires grad but is not a leaf", i);
    // A broadcast (stride-0) dim would make one stored number several elements at once: perturbing
    // "one element" would move all of them, and the difference quotient would be meaningless.
    for (int64_t d = 0; d < inputs[i].dim(); ++d)
      QT_CHECK(
          inputs[i].shape()[d] <= 1 || inputs[i].strides()[d] != 0,
          "gradcheck: input {} of shape {} has strides {}: an expanded view cannot be perturbed "
          "elementwise",
          i, shape_str(inputs[i].shape()), shape_str(inputs[i].strides()));
  }

  // ---- analytic: one backward pass of L = sum(f(x) * w) through the recorded graph.
  // The inputs' existing .grad is set aside and restored afterwards, so the check leaves no trace.
  std::vector<Tensor> saved_grads;
  for (const Tensor& input : inputs) {
    saved_grads.push_back(input.grad());
    input.set_grad(Tensor());
  }
  const Tensor output = f(inputs);
  check_defined(output, "gradcheck");
  // dL/d(output) = w exactly, so w is the seed of the backward pass: the check does not rely on the
  // backward formulas of mul and sum (which it is also used to check).
  const Tensor weights = ops::randn(output.shape(), options.seed, 0, output.dtype());
  if (output.requires_grad()) backward(output, weights);
  std::vector<Tensor> analytic;
  for (size_t i = 0; i < inputs.size(); ++i) {
    // An input the loss does not depend on has gradient zero (backward leaves its .grad empty).
    const Tensor grad = inputs[i].grad();
    analytic.push_back(grad.defined() ? ops::contiguous(grad)
                                      : ops::zeros(inputs[i].shape(), DType::f64));
    inputs[i].set_grad(saved_grads[i]);
  }

  // ---- numeric: central differences, element by element, compared as they are computed.
  GradcheckResult result;
  result.ok = true;
  for (size_t i = 0; i < inputs.size(); ++i) {
    const Tensor& input = inputs[i];
    if (!input.requires_grad()) continue;
    double* element0 = input.data<double>();
    const double* analytic_values = analytic[i].data<double>();
    for (int64_t p = 0; p < input.numel(); ++p) {
      const std::vector<int64_t> index = unravel_index(p, input.shape());
      double& element = element0[offset_of(index, input.strides())];
      const double original = element;
      double loss_plus = 0, loss_minus = 0;
      try {
        element = original + options.eps;
        loss_plus = projected_loss(f, inputs, weights);
        element = original - options.eps;
        loss_minus = projected_loss(f, inputs, weights);
      } catch (...) {
        element = original;  // never leave the caller's tensor perturbed
        throw;
      }
      element = original;
      // dL/dx_p ~= (L(x + eps e_p) - L(x - eps e_p)) / (2 eps)
      const double numeric = (loss_plus - loss_minus) / (2 * options.eps);
      const double error = std::abs(analytic_values[p] - numeric);
      if (!(error <= result.max_abs_error)) result.max_abs_error = error;  // keeps a NaN
      const bool close = error <= options.atol + options.rtol * std::abs(numeric);
      if (result.ok && !close) {  // NaN fails here too
        result.ok = false;
        result.message = fmt::format(
            "gradcheck: input {} (shape {}) element [{}]: analytic {:.12g} vs numeric {:.12g} "
            "(|difference| {:.3g} > atol {:.3g} + rtol {:.3g} * |numeric|)",
            i, shape_str(input.shape()), fmt::join(index, ", "), analytic_values[p], numeric, error,
            options.atol, options.rtol);
      }
    }
  }
  return result;
}

}  // namespace qt
