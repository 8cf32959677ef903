// Tests for nn/cross_entropy.*: fused log-softmax + NLL with ignore_index and label smoothing.
// Truth: hand-computed two-class values, a PyTorch 1.13 fixture (torch.nn.functional.cross_entropy
// with ignore_index and label_smoothing, values printed by /usr/bin/python3 and pasted below), a
// naive float64 computation, and central finite differences (gradcheck).
#include <doctest/doctest.h>

#include <cmath>
#include <vector>

#include "autograd/functions.h"
#include "autograd/gradcheck.h"
#include "nn/cross_entropy.h"
#include "tensor/threads.h"
#include "test_util.h"

using namespace qt;
using qt::test::elements;
using qt::test::ids_tensor;
using qt::test::random_tensor;

namespace {

// mean over rows with t != ignore of -(1 - s) logp[t] - (s / C) sum_c logp[c], in double.
double naive_cross_entropy(const Tensor& logits, const std::vector<int64_t>& target,
                           int64_t ignore_index, double s) {
  const std::vector<double> z = elements(logits);
  const int64_t rows = logits.shape()[0], classes = logits.shape()[1];
  double total = 0;
  int64_t valid = 0;
  for (int64_t i = 0; i < rows; ++i) {
    if (target[i] == ignore_index) continue;
    double m = z[i * classes];
    for (int64_t c = 0; c < classes; ++c) m = std::max(m, z[i * classes + c]);
    double sum_exp = 0;
    for (int64_t c = 0; c < classes; ++c) sum_exp += std::exp(z[i * classes + c] - m);
    const double lse = m + std::log(sum_exp);
    double sum_logp = 0;
    for (int64_t c = 0; c < classes; ++c) sum_logp += z[i * classes + c] - lse;
    total += -(1 - s) * (z[i * classes + target[i]] - lse) - (s / classes) * sum_logp;
    ++valid;
  }
  return total / valid;
}

Tensor logits_leaf(const std::vector<double>& values, const Shape& shape) {
  Tensor t = ops::from_vector(values, shape);
  t.set_requires_grad();
  return t;
}

}  // namespace

TEST_CASE("cross_entropy: hand-computed two-class example") {
  // Both rows have logits [0, ln 3]: softmax = [1/4, 3/4]. Targets 1 and 0.
  const double ln3 = std::log(3.0);
  Tensor z = logits_leaf({0.0, ln3, 0.0, ln3}, {2, 2});
  const Tensor target = ids_tensor({1, 0}, {2});
  Tensor loss = nn::cross_entropy(z, target);
  CHECK(loss.dim() == 0);
  // (-ln(3/4) - ln(1/4)) / 2 = (ln(4/3) + ln 4) / 2
  CHECK(loss.item() == doctest::Approx((std::log(4.0 / 3.0) + std::log(4.0)) / 2).epsilon(1e-14));
  backward(loss);
  // (softmax - onehot) / 2
  const std::vector<double> expected = {0.125, -0.125, -0.375, 0.375};
  const std::vector<double> grad = elements(z.grad());
  for (size_t i = 0; i < 4; ++i) CHECK(grad[i] == doctest::Approx(expected[i]).epsilon(1e-14));

  // Label smoothing s = 0.2, C = 2: row loss = -0.8 logp[t] - 0.1 (logp[0] + logp[1]).
  const double lp0 = std::log(0.25), lp1 = std::log(0.75);
  z.set_grad(Tensor());
  loss = nn::cross_entropy(z, target, -100, 0.2);
  const double row0 = -0.8 * lp1 - 0.1 * (lp0 + lp1), row1 = -0.8 * lp0 - 0.1 * (lp0 + lp1);
  CHECK(loss.item() == doctest::Approx((row0 + row1) / 2).epsilon(1e-14));
  backward(loss);
  // (softmax - 0.8 onehot - 0.1) / 2
  const std::vector<double> smoothed = {(0.25 - 0.1) / 2, (0.75 - 0.8 - 0.1) / 2,
                                        (0.25 - 0.8 - 0.1) / 2, (0.75 - 0.1) / 2};
  const std::vector<double> grad_smoothed = elements(z.grad());
  for (size_t i = 0; i < 4; ++i)
    CHECK(grad_smoothed[i] == doctest::Approx(smoothed[i]).epsilon(1e-14));
}

TEST_CASE("cross_entropy: matches PyTorch with ignore_index and label smoothing") {
  // torch.nn.functional.cross_entropy(z, t, ignore_index=-100, label_smoothing=0.1), f64.
  Tensor z = logits_leaf({1.0, 2.0, 0.5, 0.3, -1.0, 2.0, -0.5, 0.0, 0.5, 3.0, 1.0, -2.0}, {4, 3});
  const Tensor loss = nn::cross_entropy(z, ids_tensor({2, -100, 0, 1}, {4}), -100, 0.1);
  CHECK(loss.item() == doctest::Approx(1.8980501183813072).epsilon(1e-14));
  backward(loss);
  const std::vector<double> torch_grad = {0.06596352142960522,
                                          0.19839946195947636,
                                          -0.26436298338908165,
                                          0.0,
                                          0.0,
                                          0.0,
                                          -0.24900320336916193,
                                          0.09128751746172169,
                                          0.15771568590744026,
                                          0.28075575390991814,
                                          -0.27161122626610790,
                                          -0.00914452764381019};
  const std::vector<double> grad = elements(z.grad());
  for (size_t i = 0; i < grad.size(); ++i) CHECK(std::abs(grad[i] - torch_grad[i]) < 1e-15);
}

TEST_CASE(
    "cross_entropy: f32 matches a float64 naive computation; bit-identical with 1 and 2 "
    "threads") {
  const int64_t rows = 90, classes = 301;  // enough work to go parallel
  const Tensor logits = random_tensor({rows, classes}, DType::f32, 1, 0.0, 3.0);
  std::vector<int64_t> target =
      ops::to_vector<int64_t>(test::random_ids({rows}, 0, classes - 1, 2));
  for (int64_t i = 0; i < rows; i += 7) target[i] = -1;  // some ignored rows, ignore_index -1
  const Tensor target_tensor = ids_tensor(target, {rows});
  for (double smoothing : {0.0, 0.1}) {
    const double expected = naive_cross_entropy(logits, target, -1, smoothing);
    auto run = [&](int threads) {
      set_num_threads(threads);
      Tensor z = ops::clone(logits);
      z.set_requires_grad();
      const Tensor loss = nn::cross_entropy(z, target_tensor, -1, smoothing);
      backward(loss);
      return std::pair<double, Tensor>(loss.item(), z.grad());
    };
    const int saved = num_threads();
    const auto [loss1, grad1] = run(1);
    const auto [loss2, grad2] = run(2);
    set_num_threads(saved);
    CHECK(loss1 == loss2);
    CHECK(ops::max_abs_diff(grad1, grad2) == 0.0);
    CHECK(loss1 == doctest::Approx(expected).epsilon(1e-6));

    // The f32 gradient against the f64 one (the f64 backward is validated by gradcheck below).
    Tensor z64 = ops::to(logits, DType::f64);
    z64.set_requires_grad();
    backward(nn::cross_entropy(z64, target_tensor, -1, smoothing));
    CHECK(ops::max_abs_diff(ops::to(grad1, DType::f64), z64.grad()) < 1e-8);
    // Ignored rows get no gradient.
    for (int64_t c = 0; c < classes; ++c) CHECK(grad1.at({7, c}) == 0.0);
  }
}

TEST_CASE(
    "cross_entropy: gradcheck in f64 (with and without smoothing, ignored rows, i32 target)") {
  Tensor z = random_tensor({5, 4}, DType::f64, 3);
  z.set_requires_grad();
  for (double smoothing : {0.0, 0.3}) {
    for (DType target_dtype : {DType::i64, DType::i32}) {
      const Tensor target = ops::to(ids_tensor({3, 0, -100, 2, 3}, {5}), target_dtype);
      const GradcheckResult result = gradcheck(
          [&](const std::vector<Tensor>& in) {
            return nn::cross_entropy(in[0], target, -100, smoothing);
          },
          {z});
      INFO(result.message);
      CHECK(result.ok);
    }
  }
  // A non-contiguous logits view.
  Tensor strided = ops::transpose(random_tensor({4, 5}, DType::f64, 4), 0, 1);
  strided.set_requires_grad();
  const Tensor target = ids_tensor({1, 2, 3, 0, 0}, {5});
  const GradcheckResult result = gradcheck(
      [&](const std::vector<Tensor>& in) { return nn::cross_entropy(in[0], target, -100, 0.1); },
      {strided});
  INFO(result.message);
  CHECK(result.ok);
}

TEST_CASE("cross_entropy: large logits are stable; ignore_index inside the class range") {
  // Shifting every logit of a row by 1e4 changes nothing (log-softmax is shift-invariant).
  const Tensor small = ops::from_vector(std::vector<float>{0.0f, 1.0f, -2.0f, 0.5f}, {1, 4});
  const Tensor large =
      ops::from_vector(std::vector<float>{1e4f, 1e4f + 1, 1e4f - 2, 1e4f + 0.5f}, {1, 4});
  const Tensor target = ids_tensor({2}, {1});
  const double expected = naive_cross_entropy(small, {2}, -100, 0.0);
  CHECK(nn::cross_entropy(small, target).item() == doctest::Approx(expected).epsilon(1e-6));
  CHECK(nn::cross_entropy(large, target).item() == doctest::Approx(expected).epsilon(1e-6));
  CHECK(std::isfinite(nn::cross_entropy(large, target, -100, 0.5).item()));

  // ignore_index = 1 is a valid class id: rows targeting class 1 are skipped.
  const Tensor logits = random_tensor({3, 4}, DType::f64, 5);
  const double skipped = nn::cross_entropy(logits, ids_tensor({1, 3, 0}, {3}), 1).item();
  CHECK(skipped == doctest::Approx(naive_cross_entropy(logits, {1, 3, 0}, 1, 0.0)).epsilon(1e-13));
}

TEST_CASE("cross_entropy: all rows ignored gives NaN (as PyTorch) and a zero gradient") {
  Tensor z = random_tensor({3, 4}, DType::f32, 6);
  z.set_requires_grad();
  const Tensor loss = nn::cross_entropy(z, ids_tensor({-100, -100, -100}, {3}), -100, 0.1);
  CHECK(std::isnan(loss.item()));
  backward(loss);
  CHECK(elements(z.grad()) == std::vector<double>(12, 0.0));
}

TEST_CASE("cross_entropy: bad targets, shapes, dtypes and smoothing throw") {
  const Tensor z = random_tensor({3, 4}, DType::f32, 7);
  CHECK_THROWS_WITH_AS(nn::cross_entropy(z, ids_tensor({0, 4, 1}, {3})),
                       doctest::Contains("target 4"), Error);
  CHECK_THROWS_WITH_AS(nn::cross_entropy(z, ids_tensor({0, -1, 1}, {3})),
                       doctest::Contains("target -1"), Error);
  CHECK_THROWS_WITH_AS(nn::cross_entropy(z, ids_tensor({0, 1}, {2})), doctest::Contains("[3, 4]"),
                       Error);
  CHECK_THROWS_AS(nn::cross_entropy(z, ops::zeros({3})), Error);
  CHECK_THROWS_AS(
      nn::cross_entropy(random_tensor({3, 4, 2}, DType::f32, 8), ids_tensor({0, 1, 2}, {3})),
      Error);
  CHECK_THROWS_AS(nn::cross_entropy(ops::zeros({3, 4}, DType::i64), ids_tensor({0, 1, 2}, {3})),
                  Error);
  CHECK_THROWS_AS(nn::cross_entropy(z, ids_tensor({0, 1, 2}, {3}), -100, 1.5), Error);
  CHECK_THROWS_AS(nn::cross_entropy(z, ids_tensor({0, 1, 2}, {3}), -100, -0.1), Error);
}
