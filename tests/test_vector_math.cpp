// tensor/vector_math.h against float64 truth (std::exp, std::erf in double): the error of every
// float result in units of its ulp, as a histogram over a dense sweep, with the bound each function
// promises; special values (0, -0, +-inf, NaN, the underflow edge); and ops::gelu /
// ops::gelu_backward in f32 against their f64 versions.
#include <doctest/doctest.h>

#include <cmath>
#include <cstdio>
#include <limits>
#include <map>

#include "tensor/elementwise.h"
#include "tensor/vector_math.h"
#include "tests/test_util.h"

namespace {

// |got - truth| in units of the ulp of the float nearest to truth (for truth below FLT_MIN: the
// ulp of FLT_MIN, so that results in the subnormal range are judged by absolute error).
double ulp_error(float got, double truth) {
  const float nearest = static_cast<float>(truth);
  const float magnitude = std::max(std::fabs(nearest), std::numeric_limits<float>::min());
  const double ulp = static_cast<double>(std::nextafter(magnitude, INFINITY)) - magnitude;
  return std::fabs(static_cast<double>(got) - truth) / ulp;
}

// Histogram of errors in ulp: buckets 0, 1, 2, 3, 4-7, >= 8 (by floor of the error).
struct UlpHistogram {
  std::map<int, int64_t> counts;
  double worst = 0;
  double worst_at = 0;
  void add(double error, double x) {
    const int e = static_cast<int>(error);
    counts[e >= 8 ? 8 : (e >= 4 ? 4 : e)] += 1;
    if (error > worst) {
      worst = error;
      worst_at = x;
    }
  }
  void print(const char* name) const {
    std::printf("  %-20s ulp error histogram:", name);
    for (const auto& [bucket, count] : counts)
      std::printf(" [%s]=%lld",
                  bucket == 8 ? ">=8" : (bucket == 4 ? "4-7" : std::to_string(bucket).c_str()),
                  static_cast<long long>(count));
    std::printf("; worst %.2f ulp at x = %.9g\n", worst, worst_at);
  }
};

double gaussian_cdf_f64(double x) {
  return 0.5 * std::erfc(-x / std::sqrt(2.0));
}

}  // namespace

TEST_CASE("test_vector_math: exp_f32 is within 2 ulp of exp on [-87.3, 88]") {
  UlpHistogram histogram;
  const int64_t n = 2'000'000;
  for (int64_t i = 0; i <= n; ++i) {
    const float y = static_cast<float>(-87.3 + (88.0 + 87.3) * static_cast<double>(i) / n);
    histogram.add(ulp_error(qt::vmath::exp_f32(y), std::exp(static_cast<double>(y))), y);
  }
  histogram.print("exp_f32");
  CHECK(histogram.worst <= 2.0);
  // exact points and the edges
  CHECK(qt::vmath::exp_f32(0.0f) == 1.0f);
  CHECK(qt::vmath::exp_f32(-0.0f) == 1.0f);
  CHECK(qt::vmath::exp_f32(-88.0f) == 0.0f);  // below the domain: 0 (the true value is 6e-39)
  CHECK(qt::vmath::exp_f32(-INFINITY) == 0.0f);
  CHECK(std::isfinite(qt::vmath::exp_f32(NAN)));  // documented: callers propagate NaN
  CHECK(ulp_error(qt::vmath::exp_f32(1.0f), std::exp(1.0)) <= 1.0);
}

TEST_CASE("test_vector_math: gaussian_cdf_f32 against 0.5 erfc(-x / sqrt 2) in float64") {
  UlpHistogram histogram;
  double worst_relative = 0, worst_absolute = 0;
  const int64_t n = 1'000'000;
  for (int64_t i = 0; i <= n; ++i) {
    const float x = static_cast<float>(-9.0 + 18.0 * static_cast<double>(i) / n);
    const double truth = gaussian_cdf_f64(x);
    const float got = qt::vmath::gaussian_cdf_f32(x);
    histogram.add(ulp_error(got, truth), x);
    worst_relative = std::max(worst_relative, std::fabs(got - truth) / truth);
    worst_absolute = std::max(worst_absolute, std::fabs(got - truth));
  }
  histogram.print("gaussian_cdf_f32");
  std::printf("  gaussian_cdf_f32 on [-9, 9]: worst relative error %.3g, worst absolute %.3g\n",
              worst_relative, worst_absolute);
  CHECK(worst_relative < 1e-6);
  CHECK(worst_absolute < 2e-7);
  CHECK(qt::vmath::gaussian_cdf_f32(0.0f) == doctest::Approx(0.5).epsilon(1e-7));
  CHECK(qt::vmath::gaussian_cdf_f32(INFINITY) == 1.0f);
  CHECK(qt::vmath::gaussian_cdf_f32(-INFINITY) == 0.0f);
  CHECK(std::isnan(qt::vmath::gaussian_cdf_f32(NAN)));
}

TEST_CASE("test_vector_math: gelu_f32 and its derivative against float64") {
  UlpHistogram forward, derivative;
  double worst_forward = 0, worst_derivative = 0;
  const int64_t n = 1'000'000;
  for (int64_t i = 0; i <= n; ++i) {
    const float x = static_cast<float>(-12.0 + 24.0 * static_cast<double>(i) / n);
    const double xd = x;
    const double gelu = xd * gaussian_cdf_f64(xd);
    const double slope =
        gaussian_cdf_f64(xd) + xd * std::exp(-0.5 * xd * xd) / std::sqrt(2.0 * std::numbers::pi);
    const float got = qt::vmath::gelu_f32(x);
    const float got_slope = qt::vmath::gelu_derivative_f32(x);
    forward.add(ulp_error(got, gelu), x);
    derivative.add(ulp_error(got_slope, slope), x);
    if (std::fabs(gelu) > 1e-30)
      worst_forward = std::max(worst_forward, std::fabs(got - gelu) / std::fabs(gelu));
    // The derivative crosses 0 near x = -0.75, where Phi(x) ~ 0.23 and x phi(x) ~ -0.23 cancel:
    // there a float result is off by an ulp of 0.23 (~3e-8) whatever computes it. Judged by
    // |error| / (|slope| + 0.2): relative error where |slope| >> 0.2, absolute error near 0.
    worst_derivative =
        std::max(worst_derivative, std::fabs(got_slope - slope) / (std::fabs(slope) + 0.2));
  }
  forward.print("gelu_f32");
  derivative.print("gelu_derivative_f32");
  std::printf("  gelu_f32: worst relative error %.3g; derivative %.3g\n", worst_forward,
              worst_derivative);
  CHECK(worst_forward < 1e-6);
  CHECK(worst_derivative < 1e-6);
  CHECK(qt::vmath::gelu_f32(0.0f) == 0.0f);
  CHECK(qt::vmath::gelu_f32(INFINITY) == INFINITY);
  CHECK(std::isnan(qt::vmath::gelu_f32(-INFINITY)));  // -inf * 0, as PyTorch's erf form
  CHECK(std::isnan(qt::vmath::gelu_f32(NAN)));
  CHECK(std::isnan(qt::vmath::gelu_derivative_f32(NAN)));
}

TEST_CASE("test_vector_math: ops::gelu and gelu_backward in f32 agree with their f64 versions") {
  const qt::Tensor x64 = qt::test::random_tensor({4096}, qt::DType::f64, 11, 0.0, 3.0);
  const qt::Tensor g64 = qt::test::random_tensor({4096}, qt::DType::f64, 12);
  const qt::Tensor x32 = qt::ops::to(x64, qt::DType::f32);
  const qt::Tensor g32 = qt::ops::to(g64, qt::DType::f32);
  const qt::Tensor y64 = qt::ops::gelu(qt::ops::to(x32, qt::DType::f64));
  const qt::Tensor y32 = qt::ops::gelu(x32);
  const qt::Tensor d64 =
      qt::ops::gelu_backward(qt::ops::to(g32, qt::DType::f64), qt::ops::to(x32, qt::DType::f64));
  const qt::Tensor d32 = qt::ops::gelu_backward(g32, x32);
  for (int64_t i = 0; i < 4096; ++i) {
    const double y = y64.data<double>()[i], d = d64.data<double>()[i];
    CHECK(std::fabs(y32.data<float>()[i] - y) <= 1e-6 * std::fabs(y) + 1e-30);
    CHECK(std::fabs(d32.data<float>()[i] - d) <= 1e-6 * (std::fabs(d) + 0.2));
  }
}
