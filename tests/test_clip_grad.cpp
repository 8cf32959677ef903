// Tests for optim/clip_grad.*: global gradient norm, clipping, scaling, gradient accumulation.
// Truth: norms summed naively in long double; hand-computed clipping of a 3-4-5 gradient; the
// accumulation test compares against the analytic gradient of the toy loss, derived by hand.
#include <doctest/doctest.h>

#include <cmath>
#include <cstring>
#include <limits>
#include <vector>

#include "autograd/engine.h"
#include "autograd/functions.h"
#include "optim/clip_grad.h"
#include "tensor/create.h"
#include "tensor/threads.h"
#include "tensor/view.h"

#include "tests/test_util.h"

using namespace qt;
using namespace qt::test;
using namespace qt::optim;

namespace {

Tensor parameter_with_grad(const Shape& shape, DType dtype, unsigned seed) {
  Tensor p = ops::zeros(shape, dtype);
  p.set_grad(random_tensor(shape, dtype, seed));
  return p;
}

long double naive_square_sum(const Tensor& t) {
  long double total = 0;
  for (double x : elements(t)) total += static_cast<long double>(x) * x;
  return total;
}

}  // namespace

TEST_CASE("clip_grad: gradient_norm is the global L2 norm over all gradients") {
  const std::vector<Tensor> params = {
      parameter_with_grad({3, 5}, DType::f32, 1), parameter_with_grad({40000}, DType::f32, 2),
      parameter_with_grad({7}, DType::f64, 3), ops::zeros({4})};  // no gradient: skipped
  long double total = 0;
  for (size_t k = 0; k < 3; ++k) total += naive_square_sum(params[k].grad());
  const double expected = std::sqrt(static_cast<double>(total));
  CHECK(gradient_norm(params) == doctest::Approx(expected).epsilon(1e-14));
  CHECK(gradient_norm({ops::zeros({3})}) == 0.0);
}

TEST_CASE("clip_grad: clipping by hand (3-4-5) and no change below the limit") {
  Tensor p = ops::zeros({2});
  p.set_grad(ops::from_vector(std::vector<float>{3.0f, 4.0f}, {2}));
  Tensor q = ops::zeros({1}, DType::f64);
  q.set_grad(ops::from_vector(std::vector<double>{0.0}, {1}));
  const double norm = clip_grad_norm({p, q}, 1.0);
  CHECK(norm == doctest::Approx(5.0).epsilon(1e-15));
  // scale = 1 / (5 + 1e-6): [3, 4] -> [0.6, 0.8] (times 1 - 2e-7)
  CHECK(p.grad().data<float>()[0] == doctest::Approx(3.0 / (5.0 + 1e-6)).epsilon(1e-7));
  CHECK(p.grad().data<float>()[1] == doctest::Approx(4.0 / (5.0 + 1e-6)).epsilon(1e-7));

  // Below the limit: returned norm, gradients bit-identical.
  p.set_grad(ops::from_vector(std::vector<float>{0.3f, 0.4f}, {2}));
  CHECK(clip_grad_norm({p}, 1.0) == doctest::Approx(0.5).epsilon(1e-7));
  CHECK(p.grad().data<float>()[0] == 0.3f);
  CHECK(p.grad().data<float>()[1] == 0.4f);
}

TEST_CASE("clip_grad: a NaN or Inf gradient is reported and the gradients are left alone") {
  Tensor p = ops::zeros({3});
  p.set_grad(ops::from_vector(std::vector<float>{1.0f, std::nanf(""), 2.0f}, {3}));
  CHECK(std::isnan(clip_grad_norm({p}, 1.0)));
  CHECK(p.grad().data<float>()[0] == 1.0f);
  CHECK(p.grad().data<float>()[2] == 2.0f);
  p.set_grad(ops::from_vector(
      std::vector<float>{1.0f, std::numeric_limits<float>::infinity(), 2.0f}, {3}));
  CHECK(std::isinf(clip_grad_norm({p}, 1.0)));
  CHECK(p.grad().data<float>()[0] == 1.0f);
  CHECK_THROWS_AS(clip_grad_norm({p}, 0.0), Error);
  CHECK_THROWS_AS(clip_grad_norm({p}, -1.0), Error);
}

TEST_CASE("clip_grad: norm and clipping are bit-identical with 1 and 2 threads") {
  const int saved = num_threads();
  std::vector<double> norms;
  std::vector<std::vector<float>> grads;
  for (int threads : {1, 2}) {
    set_num_threads(threads);
    Tensor p = parameter_with_grad({300, 300}, DType::f32, 9);
    norms.push_back(clip_grad_norm({p}, 1.0));
    grads.push_back(ops::to_vector<float>(p.grad()));
  }
  set_num_threads(saved);
  CHECK(std::memcmp(&norms[0], &norms[1], sizeof(double)) == 0);
  CHECK(std::memcmp(grads[0].data(), grads[1].data(), grads[0].size() * sizeof(float)) == 0);
}

TEST_CASE("clip_grad: scale_gradients and non-contiguous gradients") {
  Tensor p = ops::zeros({2, 3});
  Tensor g = random_tensor({3, 2}, DType::f32, 4);
  p.set_grad(ops::transpose(g, 0, 1));  // a strided gradient
  const std::vector<double> before = elements(p.grad());
  scale_gradients({p}, 0.5);
  const std::vector<double> after = elements(p.grad());
  for (size_t i = 0; i < before.size(); ++i) CHECK(after[i] == before[i] * 0.5);
  CHECK(p.grad().is_contiguous());
  CHECK_THROWS_AS(scale_gradients({p}, std::nan("")), Error);
}

TEST_CASE("clip_grad: accumulating k micro-batches equals one big batch") {
  // Toy loss over a batch of rows x_i: L(w) = mean_i (w . x_i)^2, so dL/dw = (2/N) sum_i (w . x_i)
  // x_i.
  const int64_t rows = 8, dim = 4, k = 4, micro = rows / k;
  const Tensor x = random_tensor({rows, dim}, DType::f32, 21);
  const Tensor w_init = random_tensor({dim}, DType::f32, 22);
  auto loss_of = [&](const Tensor& w, const Tensor& batch) {
    return qt::mean(qt::pow(qt::sum(qt::mul(batch, w), {1}), 2.0));
  };

  // One big batch.
  Tensor w_big = ops::clone(w_init);
  w_big.set_requires_grad();
  qt::backward(loss_of(w_big, x));

  // k micro-batches, each loss scaled by 1/k, gradients accumulating in .grad.
  Tensor w_acc = ops::clone(w_init);
  w_acc.set_requires_grad();
  for (int64_t j = 0; j < k; ++j)
    qt::backward(qt::mul(loss_of(w_acc, ops::narrow(x, 0, j * micro, micro)), 1.0 / k));

  // The same with unscaled micro-losses and scale_gradients(1/k) at the end.
  Tensor w_scaled = ops::clone(w_init);
  w_scaled.set_requires_grad();
  for (int64_t j = 0; j < k; ++j)
    qt::backward(loss_of(w_scaled, ops::narrow(x, 0, j * micro, micro)));
  scale_gradients({w_scaled}, 1.0 / k);

  // The analytic gradient in double.
  const std::vector<double> xs = elements(x), ws = elements(w_init);
  std::vector<double> expected(dim, 0.0);
  for (int64_t i = 0; i < rows; ++i) {
    double dot = 0;
    for (int64_t d = 0; d < dim; ++d) dot += ws[d] * xs[i * dim + d];
    for (int64_t d = 0; d < dim; ++d) expected[d] += 2.0 / rows * dot * xs[i * dim + d];
  }
  const std::vector<double> big = elements(w_big.grad()), acc = elements(w_acc.grad()),
                            scaled = elements(w_scaled.grad());
  for (int64_t d = 0; d < dim; ++d) {
    CAPTURE(d);
    const double tolerance = 1e-5 * (1 + std::abs(expected[d]));
    CHECK(std::abs(big[d] - expected[d]) < tolerance);
    CHECK(std::abs(acc[d] - expected[d]) < tolerance);
    CHECK(std::abs(scaled[d] - expected[d]) < tolerance);
  }
}
