// Tests for tensor/row_kernels.*: the softmax row kernel. Truth: a long-double softmax of the same
// row, and the portable loops themselves for the AVX-512 kernel, which must reproduce them bit for
// bit (that is its contract: which CPU runs a model never changes a number).
#include <doctest/doctest.h>

#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <random>
#include <vector>

#include "tensor/cpu_features.h"
#include "tensor/row_kernels.h"

using namespace qt;

namespace {

// Rows that exercise every path: lengths around the 8- and 16-lane boundaries; logits of scale
// 1 to 300 (exp arguments down to below -86.98, the flush-to-zero clamp); masked (-inf) entries;
// values near float's largest; ties of +0 and -0 at the maximum.
std::vector<std::vector<float>> test_rows() {
  std::mt19937 generator(5);
  std::vector<std::vector<float>> rows;
  const int64_t lengths[] = {1,  2,  7,  8,  9,  15, 16,  17,  23,  24, 25,
                             31, 32, 33, 63, 64, 65, 127, 128, 129, 300};
  for (const int64_t n : lengths)
    for (const double scale : {1.0, 10.0, 60.0, 300.0}) {
      std::normal_distribution<double> normal(0.0, scale);
      std::vector<float> row(n);
      for (float& v : row) v = static_cast<float>(normal(generator));
      rows.push_back(row);
      if (n > 2) {  // the same row with every third entry masked
        for (int64_t i = 0; i < n; i += 3) row[i] = -std::numeric_limits<float>::infinity();
        rows.push_back(row);
      }
    }
  rows.push_back({3.0e38f, -3.0e38f, 1.0f, 3.0e38f});
  rows.push_back({0.0f, -0.0f, -1.0f, -0.0f, 0.0f, -5.0f, 0.0f, -0.0f, -0.0f, 0.0f, -2.0f});
  rows.push_back(std::vector<float>(20, -std::numeric_limits<float>::infinity()));  // all masked
  return rows;
}

uint32_t bits(float v) {
  uint32_t b;
  std::memcpy(&b, &v, sizeof b);
  return b;
}

}  // namespace

TEST_CASE("row kernels: softmax_row matches a long-double softmax and sums to 1") {
  for (const std::vector<float>& x : test_rows()) {
    const int64_t n = static_cast<int64_t>(x.size());
    bool all_masked = true;
    for (const float v : x) all_masked = all_masked && std::isinf(v) && v < 0;
    std::vector<float> y(n);
    qt::row_kernels::softmax_row(x.data(), y.data(), n);
    CAPTURE(n);
    CAPTURE(x[0]);
    if (all_masked) {  // -inf - (-inf): NaN everywhere, as PyTorch
      for (const float v : y) CHECK(std::isnan(v));
      continue;
    }
    long double m = -INFINITY, total = 0;
    for (const float v : x) m = std::max<long double>(m, v);
    for (const float v : x) total += std::exp(static_cast<long double>(v) - m);
    long double sum = 0;
    for (int64_t i = 0; i < n; ++i) {
      const long double expected = std::exp(static_cast<long double>(x[i]) - m) / total;
      CAPTURE(i);
      if (std::isinf(x[i])) {  // masked: exactly 0
        CHECK(y[i] == 0.0f);
        continue;
      }
      // exp within 1.5 ulp, the float division, and the rounding of x_i - m to float, which
      // moves the exponent by up to |x_i - m| * 2^-24
      const long double relative = 4e-7L + std::fabs(static_cast<long double>(x[i]) - m) * 6e-8L;
      // (+ exp's flush to 0 below e^-86.98 = 2.1e-38)
      CHECK(std::fabs(static_cast<long double>(y[i]) - expected) <= relative * expected + 2.2e-38L);
      sum += y[i];
    }
    CHECK(std::fabs(sum - 1.0L) <= 1e-6L);
  }
}

TEST_CASE("row kernels: the AVX-512 softmax row equals the portable loops bit for bit") {
  if (!cpu::avx512_usable()) {
    MESSAGE("no AVX-512 on this CPU (or QTLAB_DISABLE_AVX512 set): nothing to compare");
    return;
  }
  int64_t compared = 0;
  for (const std::vector<float>& x : test_rows()) {
    const int64_t n = static_cast<int64_t>(x.size());
    std::vector<float> portable(n), avx512(n), in_place = x;
    qt::row_kernels::softmax_row_portable(x.data(), portable.data(), n);
    qt::row_kernels::detail::softmax_row_avx512(x.data(), avx512.data(), n);
    qt::row_kernels::detail::softmax_row_avx512(in_place.data(), in_place.data(), n);
    for (int64_t i = 0; i < n; ++i) {
      CAPTURE(n);
      CAPTURE(i);
      CAPTURE(x[i]);
      if (std::isnan(portable[i])) {
        CHECK(std::isnan(avx512[i]));
        continue;
      }
      CHECK(bits(avx512[i]) == bits(portable[i]));
      CHECK(bits(in_place[i]) == bits(portable[i]));
      ++compared;
    }
  }
  CHECK(compared > 5000);
}

// The lane sum's order, spelled out: with terms chosen so that every reassociation gives a
// different double, each rule must equal the sum written out in its documented order.
TEST_CASE("row kernels: LaneSum assigns lanes and combines them in the documented order") {
  // 11 terms: 8 in the full group, 3 in the tail. Large and small magnitudes make the order
  // visible in the result.
  const double t[11] = {1e16, 1e16, 1.0, -1e16, 3.0, 7.0, -1e16, 0.5, 1.0, 1.0, 1.0};
  const auto term = [&](int64_t i) { return t[i]; };
  double lane[8];
  // first_lane: the tail (i = 8, 9, 10) joins lane 0, in index order.
  for (int k = 0; k < 8; ++k) lane[k] = 0.0 + t[k];
  lane[0] = ((lane[0] + t[8]) + t[9]) + t[10];
  const double tree =
      ((lane[0] + lane[1]) + (lane[2] + lane[3])) + ((lane[4] + lane[5]) + (lane[6] + lane[7]));
  double in_order = 0;
  for (int k = 0; k < 8; ++k) in_order += lane[k];
  row_kernels::LaneSum first;
  first.add(11, term);
  CHECK(first.total() == tree);
  CHECK(first.total_in_lane_order() == in_order);
  CHECK(row_kernels::lane_sum(11, term) == tree);
  // by_index: tail term i joins lane i % 8.
  for (int k = 0; k < 8; ++k) lane[k] = 0.0 + t[k];
  lane[0] += t[8];
  lane[1] += t[9];
  lane[2] += t[10];
  row_kernels::LaneSum by_index;
  by_index.add(11, term, row_kernels::LaneTail::by_index);
  CHECK(by_index.total() ==
        ((lane[0] + lane[1]) + (lane[2] + lane[3])) + ((lane[4] + lane[5]) + (lane[6] + lane[7])));
  // The rules differ on these terms (10, 12.5 and 12), so the test tells them apart.
  CHECK(first.total() == 10.0);
  CHECK(first.total_in_lane_order() == 12.5);
  CHECK(by_index.total() == 12.0);
  // row_sum is the lane sum of a_i and of a_i b_i.
  const float a[5] = {1.5f, -2.0f, 4.0f, 0.125f, 3.0f}, b[5] = {2.0f, 0.5f, -1.0f, 8.0f, 1.0f};
  CHECK(row_kernels::row_sum(a, static_cast<const float*>(nullptr), 5) == 6.625);
  CHECK(row_kernels::row_sum(a, b, 5) == 3.0 - 1.0 - 4.0 + 1.0 + 3.0);
}
