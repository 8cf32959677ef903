// Differentiable reductions: sum, mean, max, min, var over any set of axes, with keepdim.
//
// A reduction maps the group of input elements that share an output position to one value. Its
// gradient w.r.t. an input element therefore is the output position's gradient times the partial
// derivative of that group's reduction. To line the gradient up with the input, it is first given
// the keepdim shape (reduced axes as size 1) and then broadcast over the reduced axes.
#include "autograd/functions.h"

namespace qt {

namespace {

// What a backward pass needs to know about a reduction of `input_shape` over `axes`.
struct ReducedAxes {
  Shape input_shape;
  Shape keepdim_shape;  // input_shape with every reduced axis set to 1
  Axes axes;            // the reduced axes, normalized (all of them when none were given)
  int64_t count = 1;    // how many input elements each output combines
};

ReducedAxes reduced_axes(const Tensor& x, const Axes& axes, const char* op) {
  ReducedAxes reduced{x.shape(), x.shape(), {}, 1};
  std::vector<bool> is_reduced(x.dim(), axes.empty());  // no axes = all axes
  for (int64_t axis : axes) is_reduced[normalize_axis(axis, x.dim(), op)] = true;
  for (int64_t d = 0; d < x.dim(); ++d) {
    if (!is_reduced[d]) continue;
    reduced.axes.push_back(d);
    reduced.count *= x.shape()[d];
    reduced.keepdim_shape[d] = 1;
  }
  return reduced;
}

// The output gradient in the keepdim shape, so that it broadcasts against the input.
Tensor keepdim_grad(const Tensor& grad, const ReducedAxes& reduced) {
  return ops::reshape(grad, reduced.keepdim_shape);
}

}  // namespace

// y = sum_{i in group} x_i:  dy/dx_i = 1, so every element of a group receives the group's
// gradient.
Tensor sum(const Tensor& x, const Axes& axes, bool keepdim) {
  Tensor result = ops::sum(x, axes, keepdim);  // validates the axes
  return record(result, "sum", {x},
                [reduced = reduced_axes(x, axes, "sum")](
                    const Tensor& grad, const std::vector<bool>&) -> std::vector<Tensor> {
                  return {ops::expand(keepdim_grad(grad, reduced), reduced.input_shape)};
                });
}

// y = (1/N) sum_{i in group} x_i:  dy/dx_i = 1/N.
Tensor mean(const Tensor& x, const Axes& axes, bool keepdim) {
  Tensor result = ops::mean(x, axes, keepdim);
  return record(result, "mean", {x},
                [reduced = reduced_axes(x, axes, "mean")](
                    const Tensor& grad, const std::vector<bool>&) -> std::vector<Tensor> {
                  const Tensor scaled =
                      ops::mul_scalar(keepdim_grad(grad, reduced), 1.0 / reduced.count);
                  return {ops::expand(scaled, reduced.input_shape)};
                });
}

namespace {

// Backward of max/min: y = extremum of the group. The gradient goes to the elements equal to y;
// when k elements tie, each receives 1/k of it (torch.amax semantics: the subgradient that is
// symmetric in the tied elements), so the shares still add up to the full gradient.
Tensor record_extremum(const Tensor& x, const Axes& axes, Tensor result, const char* name) {
  ReducedAxes reduced = reduced_axes(x, axes, name);
  return record(result, name, {x},
                [x = x.detach(), y = result.detach(), reduced](
                    const Tensor& grad, const std::vector<bool>&) -> std::vector<Tensor> {
                  const Tensor is_extremum =
                      ops::to(ops::eq(x, ops::reshape(y, reduced.keepdim_shape)), x.dtype());
                  // ties = how many elements of each group equal its extremum (at least 1)
                  const Tensor ties = ops::sum(is_extremum, reduced.axes, /*keepdim=*/true);
                  const Tensor share = ops::div(is_extremum, ties);
                  return {ops::mul(share, keepdim_grad(grad, reduced))};
                });
}

}  // namespace

Tensor max(const Tensor& x, const Axes& axes, bool keepdim) {
  return record_extremum(x, axes, ops::max(x, axes, keepdim), "max");
}

Tensor min(const Tensor& x, const Axes& axes, bool keepdim) {
  return record_extremum(x, axes, ops::min(x, axes, keepdim), "min");
}

// y = 1/(N - c) sum_i (x_i - m)^2 with m the group mean. Since sum_i (x_i - m) = 0, the dependence
// of m on x_i drops out:  dy/dx_i = 2 (x_i - m) / (N - c).
Tensor var(const Tensor& x, const Axes& axes, bool keepdim, int64_t correction) {
  Tensor result = ops::var(x, axes, keepdim, correction);
  return record(result, "var", {x},
                [x = x.detach(), correction, reduced = reduced_axes(x, axes, "var")](
                    const Tensor& grad, const std::vector<bool>&) -> std::vector<Tensor> {
                  const Tensor centered = ops::sub(x, ops::mean(x, reduced.axes, /*keepdim=*/true));
                  const double scale = 2.0 / static_cast<double>(reduced.count - correction);
                  return {ops::mul(centered, ops::mul_scalar(keepdim_grad(grad, reduced), scale))};
                });
}

}  // namespace qt
