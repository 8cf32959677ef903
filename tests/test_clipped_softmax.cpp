// Tests for nn/clipped_softmax.*: the clipped softmax y = clip((zeta - gamma) softmax(x) + gamma,
// 0, 1) and its backward.
// Truth: a float64 reference computed element by element in the test, hand-derived clip
// thresholds, the spec's backward formula evaluated naively in double (method.md §1.2), and central
// finite differences (gradcheck, f64) at points away from the clip boundaries.
#include <doctest/doctest.h>

#include <cmath>
#include <string>
#include <vector>

#include "autograd/functions.h"
#include "autograd/gradcheck.h"
#include "nn/clipped_softmax.h"
#include "tensor/ops.h"
#include "tests/test_util.h"

using namespace qt;
using namespace qt::test;

namespace {

// Row-wise (last axis) reference in double: returns p (softmax) and y (clipped) for a [rows, n]
// tensor given as a row-major vector.
struct Reference {
  std::vector<double> p, y;
};
Reference reference(const std::vector<double>& x, int64_t rows, int64_t n, double gamma,
                    double zeta) {
  Reference r{std::vector<double>(x.size()), std::vector<double>(x.size())};
  for (int64_t row = 0; row < rows; ++row) {
    double m = -INFINITY;
    for (int64_t i = 0; i < n; ++i) m = std::max(m, x[row * n + i]);
    double total = 0;
    for (int64_t i = 0; i < n; ++i) total += std::exp(x[row * n + i] - m);
    for (int64_t i = 0; i < n; ++i) {
      const double p = std::exp(x[row * n + i] - m) / total;
      r.p[row * n + i] = p;
      r.y[row * n + i] = std::min(1.0, std::max(0.0, (zeta - gamma) * p + gamma));
    }
  }
  return r;
}

double max_abs_error(const std::vector<double>& a, const std::vector<double>& b) {
  REQUIRE(a.size() == b.size());
  double worst = 0;
  for (size_t i = 0; i < a.size(); ++i) {
    const double e = std::abs(a[i] - b[i]);
    worst = std::isnan(e) ? INFINITY : std::max(worst, e);
  }
  return worst;
}

}  // namespace

TEST_CASE(
    "clipped_softmax: forward matches a float64 reference (f32 and f64, several gamma/zeta)") {
  const int64_t rows = 6, n = 37;
  // Logits with spread 3 so that a good share of each row falls under the clip threshold.
  const Tensor x64 = random_tensor({rows, n}, DType::f64, 11, 0.0, 3.0);
  const std::vector<double> x = elements(x64);
  for (auto [gamma, zeta] : std::vector<std::pair<double, double>>{
           {-0.025, 1.0}, {-0.1, 1.1}, {0.0, 1.03}, {-12.0 / 512, 1.0}, {0.0, 1.0}}) {
    CAPTURE(gamma);
    CAPTURE(zeta);
    const Reference ref = reference(x, rows, n, gamma, zeta);
    const Tensor y64 = nn::clipped_softmax(x64, gamma, zeta);
    CHECK(max_abs_error(elements(y64), ref.y) < 1e-14);
    const Tensor y32 = nn::clipped_softmax(ops::to(x64, DType::f32), gamma, zeta);
    CHECK(y32.dtype() == DType::f32);
    CHECK(max_abs_error(elements(y32), ref.y) < 2e-7);
  }
}

TEST_CASE(
    "clipped_softmax: exact zeros below -gamma/(zeta-gamma), exact ones above "
    "(1-gamma)/(zeta-gamma)") {
  // Hand-built rows with known probabilities: logits log(q_i) give softmax q_i exactly (up to
  // rounding), q = [0.01, 0.02, 0.07, 0.9]. gamma = -0.025, zeta = 1: threshold 0.025/1.025 =
  // 0.02439, so 0.01 and 0.02 become exactly 0; s(0.9) = 1.025*0.9 - 0.025 = 0.9 (inside).
  // gamma = -0.1, zeta = 1.1: s(0.9) = 1.2*0.9 - 0.1 = 0.98; s(0.07) = -0.016 -> 0.
  // gamma = 0, zeta = 1.2: s(0.9) = 1.08 -> exactly 1.
  const std::vector<double> q = {0.01, 0.02, 0.07, 0.9};
  std::vector<double> logits;
  for (double v : q) logits.push_back(std::log(v));
  const Tensor x = ops::from_vector(logits, {1, 4});
  const std::vector<double> y1 = elements(nn::clipped_softmax(x, -0.025, 1.0));
  CHECK(y1[0] == 0.0);
  CHECK(y1[1] == 0.0);
  CHECK(y1[2] == doctest::Approx(1.025 * 0.07 - 0.025).epsilon(1e-12));
  CHECK(y1[3] == doctest::Approx(1.025 * 0.9 - 0.025).epsilon(1e-12));
  const std::vector<double> y2 = elements(nn::clipped_softmax(x, -0.1, 1.1));
  CHECK(y2[0] == 0.0);
  CHECK(y2[1] == 0.0);
  CHECK(y2[2] == 0.0);
  CHECK(y2[3] == doctest::Approx(0.98).epsilon(1e-12));
  const std::vector<double> y3 = elements(nn::clipped_softmax(x, 0.0, 1.2));
  CHECK(y3[3] == 1.0);
  CHECK(y3[0] == doctest::Approx(0.012).epsilon(1e-12));
  // Spec §1.1: with gamma = -0.025 a perfectly uniform row of 128 (p = 1/128) is all zeros.
  const std::vector<double> uniform =
      elements(nn::clipped_softmax(ops::zeros({128}, DType::f64), -0.025, 1.0));
  for (double v : uniform) CHECK(v == 0.0);
}

TEST_CASE("clipped_softmax: gamma = 0, zeta = 1 is the plain softmax") {
  const Tensor x = random_tensor({3, 5, 9}, DType::f32, 5, 0.0, 2.0);
  for (int64_t axis : {0, 1, -1}) {
    const Tensor y = nn::clipped_softmax(x, 0.0, 1.0, axis);
    const Tensor ref = ops::softmax(x, axis);
    CHECK(ops::max_abs_diff(y, ref) == 0.0);
  }
}

TEST_CASE("clipped_softmax: non-last axes and non-contiguous inputs match the row reference") {
  const Tensor base = random_tensor({4, 7}, DType::f64, 21, 0.0, 3.0);
  // Along axis 0 of base == along the last axis of its transpose.
  const Tensor along0 = nn::clipped_softmax(base, -0.05, 1.02, 0);
  const Tensor t = ops::contiguous(ops::transpose(base, 0, 1));
  const Reference ref = reference(elements(t), 7, 4, -0.05, 1.02);
  CHECK(max_abs_error(elements(ops::transpose(along0, 0, 1)), ref.y) < 1e-14);
  // A transposed (non-contiguous) input along its last axis.
  const Tensor view = ops::transpose(base, 0, 1);
  const Tensor y = nn::clipped_softmax(view, -0.05, 1.02);
  CHECK(max_abs_error(elements(y), ref.y) < 1e-14);
}

TEST_CASE("clipped_softmax: backward equals the spec formula (naive double loops)") {
  // dL/dx_j = p_j (g^_j - sum_i g^_i p_i), g^_i = (zeta - gamma) m_i g_i, m_i = [0 <= s_i <= 1].
  const int64_t rows = 5, n = 23;
  const double gamma = -0.03, zeta = 1.05;
  for (DType dtype : {DType::f64, DType::f32}) {
    CAPTURE(dtype_name(dtype));
    Tensor x = random_tensor({rows, n}, dtype, 31, 0.0, 3.0);
    x.set_requires_grad(true);
    const Tensor g = random_tensor({rows, n}, dtype, 32);
    backward(nn::clipped_softmax(x, gamma, zeta), g);
    const Reference ref = reference(elements(x), rows, n, gamma, zeta);
    const std::vector<double> gv = elements(g);
    std::vector<double> expected(rows * n);
    int clipped = 0;
    for (int64_t r = 0; r < rows; ++r) {
      std::vector<double> ghat(n);
      double dot = 0;
      for (int64_t i = 0; i < n; ++i) {
        const double p = ref.p[r * n + i];
        const double s = (zeta - gamma) * p + gamma;
        const bool inside = s >= 0 && s <= 1;
        clipped += !inside;
        ghat[i] = inside ? (zeta - gamma) * gv[r * n + i] : 0.0;
        dot += ghat[i] * p;
      }
      for (int64_t j = 0; j < n; ++j) expected[r * n + j] = ref.p[r * n + j] * (ghat[j] - dot);
    }
    CHECK(clipped > 10);  // the test exercises the clip
    CHECK(max_abs_error(elements(x.grad()), expected) < (dtype == DType::f64 ? 1e-14 : 1e-6));
  }
}

TEST_CASE("clipped_softmax: gradcheck (f64) at points away from the clip boundaries") {
  // Rows whose probabilities stay at least 0.002 away (in s) from 0 and 1: a finite difference of
  // eps = 1e-6 cannot cross a boundary there. Some entries are deep in the clipped region
  // (zero gradient must come out of both sides), others inside.
  const double gamma = -0.04, zeta = 1.1;
  int checked = 0;
  for (unsigned seed = 40; seed < 48; ++seed) {
    Tensor x = random_tensor({3, 6}, DType::f64, seed, 0.0, 2.0);
    const std::vector<double> xs = elements(x);
    const Reference ref = reference(xs, 3, 6, gamma, zeta);
    bool far = true;
    for (double p : ref.p) {
      const double s = (zeta - gamma) * p + gamma;
      far = far && std::abs(s) > 0.002 && std::abs(s - 1) > 0.002;
    }
    if (!far) continue;
    x.set_requires_grad(true);
    const GradcheckResult r = gradcheck(
        [&](const std::vector<Tensor>& in) { return nn::clipped_softmax(in[0], gamma, zeta); },
        {x});
    CHECK_MESSAGE(r.ok, r.message);
    ++checked;
  }
  CHECK(checked >= 3);
  // A row hand-built to have both clipped and unclipped entries, also along axis 0.
  Tensor x =
      ops::from_vector(std::vector<double>{-3.0, 0.5, 1.0, -2.5, 2.0, 0.0, -4.0, 1.5}, {2, 4});
  x.set_requires_grad(true);
  for (int64_t axis : {-1, 0}) {
    const GradcheckResult r = gradcheck(
        [&](const std::vector<Tensor>& in) {
          return nn::clipped_softmax(in[0], gamma, zeta, axis);
        },
        {x});
    CHECK_MESSAGE(r.ok, r.message);
  }
}

TEST_CASE("clipped_softmax: clipped entries get zero gradient; an all-clipped row gets zero grad") {
  // Row 0: uniform over 64 keys, gamma = -0.025: p = 1/64 = 0.0156 < 0.0244, so the whole row is
  // clipped to 0 and must pass no gradient at all. Row 1: one dominant key; the others are
  // clipped; only the dominant one passes gradient into g^, and since the clipped entries' g^ is
  // zero their dL/dx_j = p_j (0 - g^_k p_k) is small but nonzero - yet their own upstream
  // gradient must have no influence: changing g at clipped entries changes nothing.
  const int64_t n = 64;
  std::vector<double> values(2 * n, 0.0);
  values[n + 5] = 10.0;  // row 1: p_5 ~ 0.9969, the other 63 ~ 4.5e-5 each
  Tensor x = ops::from_vector(values, {2, n});
  x.set_requires_grad(true);
  const Tensor y = nn::clipped_softmax(x, -0.025, 1.0);
  for (int64_t i = 0; i < n; ++i) CHECK(y.at({0, i}) == 0.0);
  Tensor g = random_tensor({2, n}, DType::f64, 50);
  backward(y, g);
  const Tensor grad_a = ops::clone(x.grad());
  for (int64_t i = 0; i < n; ++i) CHECK(grad_a.at({0, i}) == 0.0);  // all-clipped row: exactly 0
  // Change the upstream gradient only at clipped entries of row 1: the result must not move.
  x.set_grad(Tensor());
  Tensor g2 = ops::clone(g);
  for (int64_t i = 0; i < n; ++i)
    if (i != 5) g2.data<double>()[n + i] += 100.0 * (i + 1);
  const Tensor y2 = nn::clipped_softmax(x, -0.025, 1.0);
  backward(y2, g2);
  CHECK(ops::max_abs_diff(x.grad(), grad_a) == 0.0);
}

TEST_CASE("clipped_softmax: the clip boundary passes the gradient (as PyTorch's clamp)") {
  // p = 0.5 exactly (two equal logits) with gamma = -1, zeta = 1: s = 2 * 0.5 - 1 = 0 exactly,
  // on the lower boundary: y = 0 but the gradient passes with factor zeta - gamma = 2.
  // dL/dx_0 = p_0 (g^_0 - (g^_0 p_0 + g^_1 p_1)) = 0.5 (2 g_0 - (g_0 + g_1)) = 0.5 (g_0 - g_1).
  Tensor x = ops::from_vector(std::vector<double>{0.3, 0.3}, {2});
  x.set_requires_grad(true);
  const Tensor y = nn::clipped_softmax(x, -1.0, 1.0);
  CHECK(y.at({0}) == 0.0);
  backward(y, ops::from_vector(std::vector<double>{1.0, -3.0}, {2}));
  CHECK(x.grad().at({0}) == doctest::Approx(0.5 * (1.0 + 3.0)));
  CHECK(x.grad().at({1}) == doctest::Approx(0.5 * (-3.0 - 1.0)));
}

TEST_CASE("clipped_softmax: invalid gamma / zeta and bad inputs throw naming the problem") {
  const Tensor x = ops::zeros({2, 3});
  CHECK_THROWS_AS(nn::clipped_softmax(x, 0.1, 1.0), Error);
  CHECK_THROWS_AS(nn::clipped_softmax(x, -0.1, 0.9), Error);
  CHECK_THROWS_AS(nn::clipped_softmax(x, NAN, 1.0), Error);
  CHECK_THROWS_AS(nn::clipped_softmax(ops::zeros({2, 3}, DType::i64), -0.1, 1.0), Error);
  CHECK_THROWS_AS(nn::clipped_softmax(x, -0.1, 1.0, 2), Error);
  try {
    nn::clipped_softmax(x, 0.5, 1.0);
    FAIL("no throw");
  } catch (const Error& e) {
    const std::string message = e.what();
    CHECK(message.find("clipped_softmax") != std::string::npos);
    CHECK(message.find("gamma = 0.5") != std::string::npos);
  }
  try {
    nn::clipped_softmax(x, -0.5, 0.75);
    FAIL("no throw");
  } catch (const Error& e) {
    CHECK(std::string(e.what()).find("zeta = 0.75") != std::string::npos);
  }
}
