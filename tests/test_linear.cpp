// Tests for nn/linear.*: the fused y = x W^T + b. Truth: naive triple loops in double (forward and
// every gradient), central finite differences in f64 (gradcheck, which runs only the forward), and
// PyTorch's documented initialisation bound.
#include <doctest/doctest.h>

#include <cmath>
#include <vector>

#include "autograd/functions.h"
#include "autograd/gradcheck.h"
#include "nn/linear.h"
#include "tensor/blas/gemm.h"
#include "tensor/threads.h"
#include "test_util.h"

using namespace qt;
using qt::test::elements;
using qt::test::random_tensor;

namespace {

// y[r][o] = sum_i x[r][i] w[o][i] + b[o] in double, x flattened to rows.
std::vector<double> naive_linear(const Tensor& x, const Tensor& w, const Tensor& b) {
  const std::vector<double> xv = elements(x), wv = elements(w);
  const std::vector<double> bv = b.defined() ? elements(b) : std::vector<double>();
  const int64_t in = w.shape()[1], out = w.shape()[0], rows = x.numel() / in;
  std::vector<double> y(static_cast<size_t>(rows * out));
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t o = 0; o < out; ++o) {
      double sum = bv.empty() ? 0.0 : bv[o];
      for (int64_t i = 0; i < in; ++i) sum += xv[r * in + i] * wv[o * in + i];
      y[r * out + o] = sum;
    }
  return y;
}

Tensor leaf(const Shape& shape, unsigned seed) {
  Tensor t = random_tensor(shape, DType::f64, seed);
  t.set_requires_grad();
  return t;
}

void check_gradient(const std::function<Tensor(const std::vector<Tensor>&)>& f,
                    const std::vector<Tensor>& inputs) {
  const GradcheckResult result = gradcheck(f, inputs);
  INFO(result.message);
  CHECK(result.ok);
}

}  // namespace

TEST_CASE("linear: forward matches a naive loop (f32 and f64, 3-D input, with and without bias)") {
  for (DType dtype : {DType::f32, DType::f64}) {
    const Tensor x = random_tensor({3, 5, 7}, dtype, 1);
    const Tensor w = random_tensor({4, 7}, dtype, 2);
    const Tensor b = random_tensor({4}, dtype, 3);
    for (bool with_bias : {true, false}) {
      const Tensor bias = with_bias ? b : Tensor();
      const Tensor y = nn::linear(x, w, bias);
      CHECK(y.shape() == Shape{3, 5, 4});
      CHECK(y.dtype() == dtype);
      const std::vector<double> expected = naive_linear(x, w, bias), got = elements(y);
      const double tolerance = dtype == DType::f32 ? 1e-5 : 1e-13;
      for (size_t i = 0; i < got.size(); ++i)
        CHECK(std::abs(got[i] - expected[i]) <= tolerance * (1 + std::abs(expected[i])));
    }
  }
}

TEST_CASE("linear: a 1-D input and a non-contiguous input give the naive result") {
  const Tensor w = random_tensor({3, 6}, DType::f32, 4);
  const Tensor b = random_tensor({3}, DType::f32, 5);
  const Tensor x1 = random_tensor({6}, DType::f32, 6);
  const Tensor y1 = nn::linear(x1, w, b);
  CHECK(y1.shape() == Shape{3});
  std::vector<double> expected = naive_linear(x1, w, b), got = elements(y1);
  for (size_t i = 0; i < got.size(); ++i)
    CHECK(got[i] == doctest::Approx(expected[i]).epsilon(1e-5));

  // [6, 2, 4] permuted to [2, 4, 6]: the feature dim has stride 8.
  const Tensor x3 = ops::permute(random_tensor({6, 2, 4}, DType::f32, 7), {1, 2, 0});
  REQUIRE(!x3.is_contiguous());
  expected = naive_linear(x3, w, b);
  got = elements(nn::linear(x3, w, b));
  for (size_t i = 0; i < got.size(); ++i)
    CHECK(got[i] == doctest::Approx(expected[i]).epsilon(1e-5));
}

TEST_CASE("linear: gradcheck in f64 (3-D input, with and without bias, non-contiguous input)") {
  const Tensor w = leaf({4, 5}, 11), b = leaf({4}, 12);
  const Tensor x = leaf({2, 3, 5}, 13);
  check_gradient([](const std::vector<Tensor>& in) { return nn::linear(in[0], in[1], in[2]); },
                 {x, w, b});
  check_gradient([](const std::vector<Tensor>& in) { return nn::linear(in[0], in[1], Tensor()); },
                 {x, w});
  // x = a permuted view of a dense [5, 2, 3] tensor: last-dim stride 6.
  Tensor strided = ops::permute(random_tensor({5, 2, 3}, DType::f64, 14), {1, 2, 0});
  strided.set_requires_grad();
  REQUIRE(!strided.is_contiguous());
  check_gradient([](const std::vector<Tensor>& in) { return nn::linear(in[0], in[1], in[2]); },
                 {strided, w, b});
  // Only some inputs require grad: the others are held fixed and get no gradient.
  const Tensor frozen_w = random_tensor({4, 5}, DType::f64, 15);
  check_gradient([](const std::vector<Tensor>& in) { return nn::linear(in[0], in[1], in[2]); },
                 {x, frozen_w, b});
}

TEST_CASE(
    "linear: f32 gradients over many rows match naive double sums, bit-identical across "
    "thread counts") {
  // 1100 rows: several fixed 256-row chunks in the bias gradient, and enough work to go parallel.
  const int64_t rows = 1100, in = 9, out = 40;
  const Tensor x0 = random_tensor({rows / 2, 2, in}, DType::f32, 21);
  const Tensor w0 = random_tensor({out, in}, DType::f32, 22);
  const Tensor b0 = random_tensor({out}, DType::f32, 23);
  const Tensor dy = random_tensor({rows / 2, 2, out}, DType::f32, 24);

  auto gradients = [&](int threads) {
    set_num_threads(threads);
    Tensor x = ops::clone(x0), w = ops::clone(w0), b = ops::clone(b0);
    x.set_requires_grad();
    w.set_requires_grad();
    b.set_requires_grad();
    backward(nn::linear(x, w, b), dy);
    return std::vector<Tensor>{x.grad(), w.grad(), b.grad()};
  };
  // OpenBLAS's sgemm is not bit-identical across thread counts on every CPU (measured: it differs
  // in the last bits on this AMD EPYC), so the GEMM parts are compared with the framework's own
  // kernel, which is; the bias gradient is this file's own reduction and must match with either.
  const int saved_threads = num_threads();
  const blas::Backend saved_backend = blas::backend();
  const std::vector<Tensor> one = gradients(1), two = gradients(2);
  blas::set_backend(blas::Backend::own);
  const std::vector<Tensor> own_one = gradients(1), own_two = gradients(2);
  blas::set_backend(saved_backend);
  set_num_threads(saved_threads);
  CHECK(ops::max_abs_diff(one[2], two[2]) == 0.0);
  for (size_t i = 0; i < 3; ++i) CHECK(ops::max_abs_diff(own_one[i], own_two[i]) == 0.0);

  const std::vector<double> xv = elements(x0), wv = elements(w0), dyv = elements(dy);
  const std::vector<double> dx = elements(one[0]), dw = elements(one[1]), db = elements(one[2]);
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t i = 0; i < in; ++i) {
      double sum = 0;
      for (int64_t o = 0; o < out; ++o) sum += dyv[r * out + o] * wv[o * in + i];
      CHECK(std::abs(dx[r * in + i] - sum) <= 1e-4 * (1 + std::abs(sum)));
    }
  for (int64_t o = 0; o < out; ++o) {
    double bias_sum = 0;
    for (int64_t r = 0; r < rows; ++r) bias_sum += dyv[r * out + o];
    CHECK(std::abs(db[o] - bias_sum) <= 1e-4 * (1 + std::abs(bias_sum)));
    for (int64_t i = 0; i < in; ++i) {
      double sum = 0;
      for (int64_t r = 0; r < rows; ++r) sum += dyv[r * out + o] * xv[r * in + i];
      CHECK(std::abs(dw[o * in + i] - sum) <= 1e-4 * (1 + std::abs(sum)));
    }
  }
}

TEST_CASE("linear: shape and dtype errors name the shapes") {
  const Tensor w = random_tensor({4, 5}, DType::f32, 31);
  CHECK_THROWS_WITH_AS(nn::linear(random_tensor({2, 6}, DType::f32, 32), w, Tensor()),
                       doctest::Contains("[2, 6]"), Error);
  CHECK_THROWS_WITH_AS(nn::linear(random_tensor({2, 6}, DType::f32, 32), w, Tensor()),
                       doctest::Contains("[4, 5]"), Error);
  CHECK_THROWS_WITH_AS(
      nn::linear(random_tensor({2, 5}, DType::f32, 33), w, random_tensor({3}, DType::f32, 34)),
      doctest::Contains("[3]"), Error);
  CHECK_THROWS_AS(nn::linear(random_tensor({2, 5}, DType::f64, 35), w, Tensor()), Error);
  CHECK_THROWS_AS(nn::linear(random_tensor({2, 5}, DType::f32, 35),
                             random_tensor({20}, DType::f32, 36), Tensor()),
                  Error);
  CHECK_THROWS_AS(nn::linear(ops::scalar(1.0), w, Tensor()), Error);
}

TEST_CASE(
    "linear: the Linear module registers weight [out, in] and bias [out] with PyTorch's "
    "default bound") {
  nn::InitRng rng{7};
  nn::Linear layer(64, 10, true, rng);
  const nn::NamedTensors params = layer.named_parameters();
  REQUIRE(params.size() == 2);
  CHECK(params[0].first == "weight");
  CHECK(params[1].first == "bias");
  CHECK(layer.weight.shape() == Shape{10, 64});
  CHECK(layer.bias.shape() == Shape{10});
  CHECK(layer.weight.requires_grad());
  CHECK(layer.parameter_count() == 64 * 10 + 10);
  // U(-1/sqrt(64), 1/sqrt(64)) = U(-0.125, 0.125): every value inside, and the spread fills it.
  double largest = 0;
  for (double v : elements(layer.weight)) {
    CHECK(std::abs(v) <= 0.125);
    largest = std::max(largest, std::abs(v));
  }
  CHECK(largest > 0.12);
  const Tensor x = random_tensor({3, 64}, DType::f32, 41);
  CHECK(ops::max_abs_diff(layer.forward(x), nn::linear(x, layer.weight, layer.bias)) == 0.0);

  nn::Linear no_bias(8, 3, false, rng);
  CHECK(no_bias.named_parameters().size() == 1);
  CHECK(!no_bias.bias.defined());
  CHECK_THROWS_AS(nn::Linear(0, 3, true, rng), Error);
}
