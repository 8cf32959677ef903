// Tests for quant/outlier_metrics.*: infinity norm, the repo's kurtosis, their per-name averages,
// and the 6-sigma outlier finder.
// Truth: hand-computed norms, closed-form kurtosis of samples whose moments are known exactly (a
// two-point sample, the discrete uniform 0..n−1, a single spike among zeros), a naive double loop
// for the outlier positions, and the Gaussian value 3 as a statistical sanity check.
#include <doctest/doctest.h>

#include <cmath>
#include <cstring>
#include <vector>

#include "quant/outlier_metrics.h"
#include "tensor/ops.h"
#include "tensor/threads.h"
#include "tests/test_util.h"

using namespace qt;
using namespace qt::test;

namespace {

// The repo's kurtosis from the exact central sums: (Σd⁴ / n) / ((Σd² / (n − 1))² + 1e-6).
double kurtosis_from_sums(double sum_d2, double sum_d4, double n) {
  const double variance = sum_d2 / (n - 1);
  return (sum_d4 / n) / (variance * variance + 1e-6);
}

struct ThreadCountGuard {
  int saved = num_threads();
  ~ThreadCountGuard() { set_num_threads(saved); }
};

}  // namespace

TEST_CASE("outlier metrics: infinity norms per row and per tensor (hand-computed)") {
  // Rows of x.reshape(N, -1): [B=2, T=2, d=3] -> 2 rows of 6.
  const Tensor x = ops::from_vector(
      std::vector<float>{1, -7, 3, 0.5f, 0, 2, /* row 2 */ 2, 2, -0.5f, -1, 1.5f, 0.25f},
      {2, 2, 3});
  CHECK(quant::row_inf_norms(x) == std::vector<double>{7, 2});
  CHECK(quant::inf_norm(x) == 7);
  // A weight: max(max W, -min W).
  CHECK(quant::inf_norm(ops::from_vector(std::vector<double>{-0.25, 0.125}, {2})) == 0.25);
}

TEST_CASE("outlier metrics: kurtosis of samples with exactly known moments") {
  // Two-point sample ±a (n/2 each): μ = 0, Σd² = n a², Σd⁴ = n a⁴.
  {
    const double a = 1.5;
    const int n = 10;
    std::vector<double> v;
    for (int i = 0; i < n; ++i) v.push_back(i % 2 ? a : -a);
    const double want = kurtosis_from_sums(n * a * a, n * std::pow(a, 4), n);
    CHECK(quant::kurtosis(ops::from_vector(v, {n})) == doctest::Approx(want).epsilon(1e-14));
    // Without the epsilon and with the population variance it would be exactly 1; the unbiased
    // variance makes it ((n − 1)/n)² = 0.81.
    CHECK(want == doctest::Approx(0.81).epsilon(1e-6));
  }
  // Discrete uniform 0..n−1: Σd² = n(n² − 1)/12, Σd⁴ = n(n² − 1)(3n² − 7)/240.
  {
    const double n = 101;
    std::vector<double> v;
    for (int i = 0; i < 101; ++i) v.push_back(i);
    const double want =
        kurtosis_from_sums(n * (n * n - 1) / 12, n * (n * n - 1) * (3 * n * n - 7) / 240, n);
    CHECK(quant::kurtosis(ops::from_vector(v, {101})) == doctest::Approx(want).epsilon(1e-13));
    CHECK(want == doctest::Approx(1.8).epsilon(0.02));  // 9/5 for a continuous uniform
  }
  // One spike v among n − 1 zeros: d = v(n − 1)/n once and −v/n (n − 1 times), so
  // Σd² = v²(n − 1)/n and Σd⁴ = v⁴ (n − 1)((n − 1)³ + 1)/n⁴: kurtosis grows like n.
  {
    const double spike = 20, n = 64;
    std::vector<float> v(64, 0.0f);
    v[17] = static_cast<float>(spike);
    const double sum_d2 = spike * spike * (n - 1) / n;
    const double sum_d4 = std::pow(spike, 4) * (n - 1) * (std::pow(n - 1, 3) + 1) / std::pow(n, 4);
    const double want = kurtosis_from_sums(sum_d2, sum_d4, n);
    CHECK(quant::kurtosis(ops::from_vector(v, {8, 8})) == doctest::Approx(want).epsilon(1e-13));
    CHECK(want > 55);
  }
  // A Gaussian sample: about 3.
  CHECK(quant::kurtosis(random_tensor({200000}, DType::f32, 9)) ==
        doctest::Approx(3.0).epsilon(0.03));
}

TEST_CASE("outlier metrics: row kurtosis per sequence ([B,T,d]) and per token ([B*T,d])") {
  // Row 0: the two-point sample ±1 (8 values); row 1: 0..7. Same closed forms as above.
  std::vector<float> v;
  for (int i = 0; i < 8; ++i) v.push_back(i % 2 ? 1.0f : -1.0f);
  for (int i = 0; i < 8; ++i) v.push_back(static_cast<float>(i));
  const std::vector<double> k = quant::row_kurtosis(ops::from_vector(v, {2, 2, 4}));
  REQUIRE(k.size() == 2);
  CHECK(k[0] == doctest::Approx(kurtosis_from_sums(8, 8, 8)).epsilon(1e-14));
  CHECK(k[1] ==
        doctest::Approx(kurtosis_from_sums(8.0 * 63 / 12, 8.0 * 63 * 185 / 240, 8)).epsilon(1e-14));
  // The same data as [B*T = 4, d = 4]: four rows of 4; row 0 = (−1, 1, −1, 1).
  const std::vector<double> per_token = quant::row_kurtosis(ops::from_vector(v, {4, 4}));
  REQUIRE(per_token.size() == 4);
  CHECK(per_token[0] == doctest::Approx(kurtosis_from_sums(4, 4, 4)).epsilon(1e-14));
  // Rows 2 and 3 are 0..3 and 4..7: shifts do not change the kurtosis.
  CHECK(per_token[2] == doctest::Approx(per_token[3]).epsilon(1e-14));
  CHECK(per_token[2] ==
        doctest::Approx(kurtosis_from_sums(4.0 * 15 / 12, 4.0 * 15 * 41 / 240, 4)).epsilon(1e-14));
}

TEST_CASE("outlier metrics: per-name averages over batches, max inf norm, mean kurtosis") {
  quant::OutlierMetrics metrics;
  // "ffn": batch 1 rows inf 3 and 5; batch 2 row inf 10 -> average (3 + 5 + 10) / 3 = 6.
  metrics.add("ffn", ops::from_vector(std::vector<float>{1, -3, 5, 0}, {2, 2}));
  metrics.add("ffn", ops::from_vector(std::vector<float>{-10, 2}, {1, 2}), false);
  // "ln": one row (inf 4).
  metrics.add("ln", ops::from_vector(std::vector<float>{4, -1, 2, 0}, {1, 4}));
  CHECK(metrics.average_inf_norm("ffn") == doctest::Approx(6.0).epsilon(1e-15));
  CHECK(metrics.average_inf_norm("ln") == 4.0);
  CHECK(metrics.max_inf_norm() == doctest::Approx(6.0).epsilon(1e-15));
  CHECK(metrics.max_inf_norm({"ln"}) == 4.0);
  // Kurtosis rows: "ffn" only from the first batch, rows (1, -3) and (5, 0); with n = 2 both are
  // (d⁴ mean) / ((2 d²)² + eps) with |d| = half the gap: d⁴ / (4 d⁴ + 1e-6).
  const double row_a = std::pow(2.0, 4) / (4 * std::pow(2.0, 4) + 1e-6);
  const double row_b = std::pow(2.5, 4) / (4 * std::pow(2.5, 4) + 1e-6);
  CHECK(metrics.average_kurtosis("ffn") == doctest::Approx((row_a + row_b) / 2).epsilon(1e-14));
  CHECK(metrics.per_name.at("ffn").kurtosis_rows == 2);
  CHECK(metrics.per_name.at("ffn").inf_norm_rows == 3);
  const double ln = quant::kurtosis(ops::from_vector(std::vector<float>{4, -1, 2, 0}, {4}));
  CHECK(metrics.mean_kurtosis() == doctest::Approx(((row_a + row_b) / 2 + ln) / 2).epsilon(1e-14));
  CHECK_THROWS_WITH_AS(metrics.average_inf_norm("attn"), doctest::Contains("'attn'"), qt::Error);
  quant::OutlierMetrics empty;
  CHECK_THROWS_AS(empty.max_inf_norm(), qt::Error);
}

TEST_CASE("outlier metrics: 6-sigma outliers of a [B,T,d] tensor agree with a naive loop") {
  Tensor x = random_tensor({2, 16, 32}, DType::f32, 13);
  float* data = x.data<float>();
  data[(0 * 16 + 3) * 32 + 5] = 50.0f;    // (batch 0, token 3, hidden 5)
  data[(1 * 16 + 10) * 32 + 5] = -40.0f;  // (batch 1, token 10, hidden 5)
  data[(1 * 16 + 0) * 32 + 30] = 45.0f;   // (batch 1, token 0, hidden 30)
  // Naive mean and population std in double.
  double sum = 0;
  for (int64_t i = 0; i < x.numel(); ++i) sum += data[i];
  const double mean = sum / static_cast<double>(x.numel());
  double squares = 0;
  for (int64_t i = 0; i < x.numel(); ++i) squares += (data[i] - mean) * (data[i] - mean);
  const double std = std::sqrt(squares / static_cast<double>(x.numel()));
  for (double sigmas : {6.0, 3.0}) {
    CAPTURE(sigmas);
    const quant::OutlierReport report = quant::find_outliers(x, sigmas);
    CHECK(report.mean == doctest::Approx(mean).epsilon(1e-13));
    CHECK(report.standard_deviation == doctest::Approx(std).epsilon(1e-13));
    std::vector<int64_t> expected;
    for (int64_t i = 0; i < x.numel(); ++i)
      if (std::abs(data[i] - mean) > sigmas * std) expected.push_back(i);
    REQUIRE(report.outliers.size() == expected.size());
    for (size_t k = 0; k < expected.size(); ++k) {
      const quant::OutlierPosition& p = report.outliers[k];
      CHECK((p.batch * 16 + p.token) * 32 + p.hidden == expected[k]);
      CHECK(p.value == data[expected[k]]);
      CHECK(p.sigmas == doctest::Approx((data[expected[k]] - mean) / std).epsilon(1e-12));
    }
  }
  const quant::OutlierReport six = quant::find_outliers(x);
  REQUIRE(six.outliers.size() == 3);  // exactly the planted values
  CHECK(six.count_per_hidden[5] == 2);
  CHECK(six.count_per_hidden[30] == 1);
  CHECK(six.count_per_token[0] == 1);
  CHECK(six.count_per_token[3] == 1);
  CHECK(six.count_per_token[10] == 1);
  CHECK(six.outliers[1].batch == 1);
  CHECK(six.outliers[1].token == 0);
  CHECK(six.outliers[1].hidden == 30);
}

TEST_CASE("outlier metrics: results are bit-identical with 1 and 2 threads") {
  ThreadCountGuard guard;
  const Tensor x = random_tensor({4, 50, 400}, DType::f32, 17, 0.2, 1.0);
  std::vector<double> results[2];
  for (int threads : {1, 2}) {
    set_num_threads(threads);
    auto& r = results[threads - 1];
    for (double v : quant::row_kurtosis(x)) r.push_back(v);
    for (double v : quant::row_inf_norms(x)) r.push_back(v);
    r.push_back(quant::kurtosis(x));
    const quant::OutlierReport report = quant::find_outliers(x, 3.0);
    r.push_back(report.mean);
    r.push_back(report.standard_deviation);
    r.push_back(static_cast<double>(report.outliers.size()));
  }
  REQUIRE(results[0].size() == results[1].size());
  CHECK(std::memcmp(results[0].data(), results[1].data(), results[0].size() * sizeof(double)) == 0);
}

TEST_CASE("outlier metrics: bad inputs throw qt::Error naming the problem") {
  CHECK_THROWS_WITH_AS(quant::row_inf_norms(ops::zeros({0, 4})), doctest::Contains("empty"),
                       qt::Error);
  CHECK_THROWS_WITH_AS(quant::kurtosis(ops::from_vector(std::vector<float>{1, NAN, 2}, {3})),
                       doctest::Contains("NaN"), qt::Error);
  CHECK_THROWS_AS(quant::inf_norm(ops::scalar(1.0)), qt::Error);
  CHECK_THROWS_WITH_AS(quant::row_kurtosis(ops::ones({3, 1})), doctest::Contains("at least 2"),
                       qt::Error);
  CHECK_THROWS_AS(quant::row_inf_norms(ops::zeros({2, 2}, DType::i32)), qt::Error);
  CHECK_THROWS_WITH_AS(quant::find_outliers(ops::zeros({4, 4})),
                       doctest::Contains("[batch, tokens, hidden]"), qt::Error);
  CHECK_THROWS_AS(quant::find_outliers(ops::zeros({1, 2, 2}), 0.0), qt::Error);
  quant::OutlierMetrics metrics;
  CHECK_THROWS_AS(metrics.add("x", ops::ones({2, 1})), qt::Error);  // kurtosis needs 2 per row
  CHECK(metrics.per_name.empty());                                  // nothing half-added
}
