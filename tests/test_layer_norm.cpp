// Tests for nn/layer_norm.*: the fused forward and the hand-written backward. Truth: a naive
// float64 LayerNorm (two-pass mean and variance) for the forward, central finite differences in
// f64 (gradcheck) for the backward, the f64 path (validated by gradcheck) for the f32 gradients,
// and hand-computed values for eps.
#include <doctest/doctest.h>

#include <cmath>
#include <vector>

#include "autograd/functions.h"
#include "autograd/gradcheck.h"
#include "nn/layer_norm.h"
#include "tensor/threads.h"
#include "test_util.h"

using namespace qt;
using qt::test::elements;
using qt::test::random_tensor;

namespace {

// y = gamma (x - mu) / sqrt(var + eps) + beta over the last dim, all in double.
std::vector<double> naive_layer_norm(const Tensor& x, const Tensor& gamma, const Tensor& beta,
                                     double eps) {
  const std::vector<double> xv = elements(x), g = elements(gamma), b = elements(beta);
  const int64_t dim = static_cast<int64_t>(g.size()), rows = x.numel() / dim;
  std::vector<double> y(xv.size());
  for (int64_t r = 0; r < rows; ++r) {
    double mu = 0, var = 0;
    for (int64_t i = 0; i < dim; ++i) mu += xv[r * dim + i];
    mu /= dim;
    for (int64_t i = 0; i < dim; ++i) var += (xv[r * dim + i] - mu) * (xv[r * dim + i] - mu);
    var /= dim;
    for (int64_t i = 0; i < dim; ++i)
      y[r * dim + i] = g[i] * (xv[r * dim + i] - mu) / std::sqrt(var + eps) + b[i];
  }
  return y;
}

double max_error(const std::vector<double>& got, const std::vector<double>& expected) {
  double worst = 0;
  for (size_t i = 0; i < got.size(); ++i) worst = std::max(worst, std::abs(got[i] - expected[i]));
  return worst;
}

// Gradients of sum(layer_norm(x) * dy) for x, gamma, beta.
std::vector<Tensor> gradients(const Tensor& x0, const Tensor& gamma0, const Tensor& beta0,
                              const Tensor& dy, double eps) {
  Tensor x = ops::clone(x0), gamma = ops::clone(gamma0), beta = ops::clone(beta0);
  x.set_requires_grad();
  gamma.set_requires_grad();
  beta.set_requires_grad();
  backward(nn::layer_norm(x, gamma, beta, eps), dy);
  return {x.grad(), gamma.grad(), beta.grad()};
}

}  // namespace

TEST_CASE("layer_norm: forward matches a float64 naive computation (f32, f64, strided input)") {
  for (DType dtype : {DType::f32, DType::f64}) {
    const Tensor x = random_tensor({4, 7, 33}, dtype, 1, 0.5, 2.0);
    const Tensor gamma = random_tensor({33}, dtype, 2), beta = random_tensor({33}, dtype, 3);
    const double tolerance = dtype == DType::f32 ? 2e-6 : 1e-13;
    CHECK(max_error(elements(nn::layer_norm(x, gamma, beta, 1e-5)),
                    naive_layer_norm(x, gamma, beta, 1e-5)) < tolerance * 10);
    const Tensor strided = ops::transpose(random_tensor({33, 6}, dtype, 4), 0, 1);  // [6, 33]
    REQUIRE(!strided.is_contiguous());
    CHECK(max_error(elements(nn::layer_norm(strided, gamma, beta, 1e-5)),
                    naive_layer_norm(strided, gamma, beta, 1e-5)) < tolerance * 10);
  }
}

TEST_CASE("layer_norm: gradcheck in f64 for x, gamma and beta (3-D input)") {
  Tensor x = random_tensor({2, 3, 5}, DType::f64, 5, 1.0, 1.5);
  Tensor gamma = random_tensor({5}, DType::f64, 6), beta = random_tensor({5}, DType::f64, 7);
  x.set_requires_grad();
  gamma.set_requires_grad();
  beta.set_requires_grad();
  auto f = [](const std::vector<Tensor>& in) { return nn::layer_norm(in[0], in[1], in[2], 1e-3); };
  GradcheckResult result = gradcheck(f, {x, gamma, beta});
  INFO(result.message);
  CHECK(result.ok);
  // Only x requires grad (frozen affine parameters).
  result = gradcheck(f, {x, random_tensor({5}, DType::f64, 8), random_tensor({5}, DType::f64, 9)});
  INFO(result.message);
  CHECK(result.ok);
}

TEST_CASE(
    "layer_norm: f32 gradients match the f64 ones over many rows, bit-identical with 1 and "
    "2 threads") {
  const int64_t rows = 700, dim = 64;  // several fixed row chunks; enough work to go parallel
  const Tensor x = random_tensor({rows, dim}, DType::f32, 10, 0.3, 1.7);
  const Tensor gamma = random_tensor({dim}, DType::f32, 11),
               beta = random_tensor({dim}, DType::f32, 12);
  const Tensor dy = random_tensor({rows, dim}, DType::f32, 13);
  const int saved = num_threads();
  set_num_threads(1);
  const std::vector<Tensor> one = gradients(x, gamma, beta, dy, 1e-5);
  set_num_threads(2);
  const std::vector<Tensor> two = gradients(x, gamma, beta, dy, 1e-5);
  set_num_threads(saved);
  const std::vector<Tensor> reference =
      gradients(ops::to(x, DType::f64), ops::to(gamma, DType::f64), ops::to(beta, DType::f64),
                ops::to(dy, DType::f64), 1e-5);
  for (size_t i = 0; i < 3; ++i) {
    CHECK(ops::max_abs_diff(one[i], two[i]) == 0.0);
    CHECK(max_error(elements(one[i]), elements(reference[i])) < (i == 0 ? 2e-5 : 2e-4));
  }
}

TEST_CASE("layer_norm: a large offset (mean 1e4) stays accurate in f32") {
  // x = 1e4 + N(0, 1): float spacing near 1e4 is ~1e-3, so a float mean alone would shift every
  // normalised value by up to ~5e-4.
  const Tensor x = random_tensor({8, 256}, DType::f32, 14, 1e4, 1.0);
  const Tensor gamma = ops::ones({256}), beta = ops::zeros({256});
  CHECK(max_error(elements(nn::layer_norm(x, gamma, beta, 1e-5)),
                  naive_layer_norm(x, gamma, beta, 1e-5)) < 1e-5);
  const Tensor dy = random_tensor({8, 256}, DType::f32, 15);
  const std::vector<Tensor> f32 = gradients(x, gamma, beta, dy, 1e-5);
  const std::vector<Tensor> f64 =
      gradients(ops::to(x, DType::f64), ops::to(gamma, DType::f64), ops::to(beta, DType::f64),
                ops::to(dy, DType::f64), 1e-5);
  for (size_t i = 0; i < 3; ++i) CHECK(max_error(elements(f32[i]), elements(f64[i])) < 1e-4);
}

TEST_CASE("layer_norm: eps is honoured (hand-computed)") {
  // Row [-1, 1]: mu = 0, var = 1, so y = x / sqrt(1 + eps).
  const Tensor x = ops::from_vector(std::vector<double>{-1.0, 1.0, 3.0, 3.0}, {2, 2});
  const Tensor gamma = ops::ones({2}, DType::f64), beta = ops::zeros({2}, DType::f64);
  std::vector<double> y = elements(nn::layer_norm(x, gamma, beta, 3.0));
  CHECK(y[0] == doctest::Approx(-0.5).epsilon(1e-15));
  CHECK(y[1] == doctest::Approx(0.5).epsilon(1e-15));
  CHECK(y[2] == 0.0);  // a constant row: var = 0, eps keeps it finite
  CHECK(y[3] == 0.0);
  y = elements(nn::layer_norm(x, gamma, beta, 1e-5));
  CHECK(y[1] == doctest::Approx(1.0 / std::sqrt(1.00001)).epsilon(1e-15));
  // gamma and beta: y = 2 xhat + 0.25
  y = elements(
      nn::layer_norm(x, ops::full({2}, 2.0, DType::f64), ops::full({2}, 0.25, DType::f64), 3.0));
  CHECK(y[0] == doctest::Approx(-0.75).epsilon(1e-15));
  CHECK(y[2] == doctest::Approx(0.25).epsilon(1e-15));

  nn::LayerNorm norm(2, 3.0);
  CHECK(norm.eps == 3.0);
  y = elements(norm.forward(ops::to(x, DType::f32)));
  CHECK(y[1] == doctest::Approx(0.5).epsilon(1e-7));
}

TEST_CASE("layer_norm: the module starts at gamma = 1, beta = 0 with PyTorch's names") {
  nn::LayerNorm norm(6);
  const nn::NamedTensors params = norm.named_parameters();
  REQUIRE(params.size() == 2);
  CHECK(params[0].first == "weight");
  CHECK(params[1].first == "bias");
  CHECK(elements(norm.weight) == std::vector<double>(6, 1.0));
  CHECK(elements(norm.bias) == std::vector<double>(6, 0.0));
  CHECK(norm.eps == 1e-5);
}

TEST_CASE("layer_norm: shape, dtype and eps errors") {
  const Tensor x = random_tensor({3, 4}, DType::f32, 16);
  const Tensor ones4 = ops::ones({4}), zeros4 = ops::zeros({4});
  CHECK_THROWS_WITH_AS(nn::layer_norm(x, ops::ones({5}), zeros4, 1e-5), doctest::Contains("[5]"),
                       Error);
  CHECK_THROWS_WITH_AS(nn::layer_norm(x, ops::ones({5}), zeros4, 1e-5), doctest::Contains("[3, 4]"),
                       Error);
  CHECK_THROWS_AS(nn::layer_norm(x, ones4, ops::zeros({2, 2}), 1e-5), Error);
  CHECK_THROWS_AS(nn::layer_norm(x, ones4, ops::zeros({4}, DType::f64), 1e-5), Error);
  CHECK_THROWS_AS(nn::layer_norm(ops::zeros({3, 4}, DType::i64), ones4, zeros4, 1e-5), Error);
  CHECK_THROWS_AS(nn::layer_norm(x, ones4, zeros4, 0.0), Error);
  CHECK_THROWS_AS(nn::layer_norm(ops::scalar(1.0), ones4, zeros4, 1e-5), Error);
  CHECK_THROWS_AS(nn::LayerNorm(0), Error);
  CHECK_THROWS_AS(nn::LayerNorm(4, -1.0), Error);
  nn::LayerNorm norm(4);
  CHECK_THROWS_WITH_AS(norm.forward(random_tensor({2, 5}, DType::f32, 17)),
                       doctest::Contains("[2, 5]"), Error);
}
