// Tests for quant/integer_softmax.*: the fixed-point exp (every bit constant, against long double
// expl over a dense sweep), softmax and clipped softmax rows with masks. Truth: hand-computed rows
// and the float64 clip((zeta - gamma) softmax(S_in x) + gamma, 0, 1) * 255.
#include <doctest/doctest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>
#include <random>
#include <vector>

#include "quant/integer_softmax.h"
#include "tensor/error.h"
#include "tests/test_integer_common.h"
#include "tests/test_util.h"

using namespace qt::quant;
using qt::test::LsbError;

namespace {

// float64 (clipped) softmax of one row times 255; masked entries 0.
std::vector<double> reference_row(const std::vector<int64_t>& x, const uint8_t* keep, double s_in,
                                  double gamma, double zeta) {
  const size_t n = x.size();
  double max = -INFINITY;
  for (size_t j = 0; j < n; ++j)
    if (keep == nullptr || keep[j]) max = std::max(max, static_cast<double>(x[j]));
  std::vector<double> y(n, 0.0);
  if (max == -INFINITY) return y;
  double sum = 0;
  for (size_t j = 0; j < n; ++j)
    if (keep == nullptr || keep[j]) sum += std::exp(s_in * (static_cast<double>(x[j]) - max));
  for (size_t j = 0; j < n; ++j) {
    const double p =
        (keep == nullptr || keep[j]) ? std::exp(s_in * (static_cast<double>(x[j]) - max)) / sum : 0;
    y[j] = 255 * std::clamp((zeta - gamma) * p + gamma, 0.0, 1.0);
  }
  return y;
}

}  // namespace

TEST_CASE("integer_softmax: the Q0.31 exp constants and integer_exp_q31") {
  const auto& e = exp_constants_q31();
  // gemmlowp fixedpoint.h's exp(-1/4) .. exp(-16) (anchors §2.4) are our j = 24 .. 30.
  const int64_t gemmlowp[] = {1672461947, 1302514674, 790015084, 290630308, 39332535, 720401, 242};
  for (int j = 24; j <= 30; ++j) CHECK(e[j] == gemmlowp[j - 24]);
  CHECK(integer_exp_q31(0) == (int64_t{1} << 31));
  CHECK(integer_exp_q31(int64_t{1} << 31) == 0);
  CHECK(integer_exp_q31(int64_t{1} << 26) == 790015084);  // exp(-1)
  CHECK_THROWS_WITH_AS(integer_exp_q31(-1), doctest::Contains("must be >= 0"), qt::Error);
  // Dense sweep over the Q5.26 input, error in units of Q0.31 against expl.
  int64_t max_error = 0;
  std::mt19937_64 rng(71);
  for (int i = 0; i < 400000; ++i) {
    const int64_t m = i < 1000 ? i : static_cast<int64_t>(rng() % (uint64_t{1} << 31));
    const long double exact =
        std::exp(-std::ldexp(static_cast<long double>(m), -26)) * 2147483648.0L;
    max_error = std::max<int64_t>(
        max_error, std::llabs(integer_exp_q31(m) - static_cast<int64_t>(std::llround(exact))));
  }
  QTLAB_NOTE("integer_exp_q31: max error " << max_error << " units of 2^-31 over 400000 inputs");
  CHECK(max_error <= 16);
}

TEST_CASE("integer_softmax: hand-computed rows") {
  // S_in = ln 2: logits 0, 1, 2 give p = 1/7, 2/7, 4/7 -> 255 p = 36.43, 72.86, 145.71.
  const IntegerSoftmax s = make_integer_softmax(std::log(2.0));
  const int32_t x[] = {0, 1, 2, 5, 5, 5, 5, 7};
  uint8_t y[8];
  integer_softmax(s, x, 1, 3, nullptr, 0, y);
  CHECK(y[0] == 36);
  CHECK(y[1] == 73);
  CHECK(y[2] == 146);
  // Equal logits: 255 / 4 = 63.75 -> 64; one row of four.
  integer_softmax(s, x + 3, 1, 4, nullptr, 0, y);
  for (int j = 0; j < 4; ++j) CHECK(y[j] == 64);
  // Masked: keep only the last two of {5, 5, 5, 7}: 1/5, 4/5 -> 51, 204; masked -> 0.
  const uint8_t keep[] = {0, 0, 1, 1};
  integer_softmax(s, x + 4, 1, 4, keep, 0, y);
  CHECK(y[0] == 0);
  CHECK(y[1] == 0);
  CHECK(y[2] == 51);
  CHECK(y[3] == 204);
  // Fully masked: zeros.
  const uint8_t none[] = {0, 0, 0};
  integer_softmax(s, x, 1, 3, none, 0, y);
  CHECK(y[0] + y[1] + y[2] == 0);
  // Clipped, gamma = -0.25, zeta = 1.25: y = clip(1.5 p - 0.25): 1/7 -> -0.036 -> 0,
  // 2/7 -> 0.179 -> 45.5 -> 46? (45.536), 4/7 -> 0.607 -> 154.8 -> 155.
  const IntegerSoftmax c = make_integer_softmax(std::log(2.0), -0.25, 1.25);
  integer_softmax(c, x, 1, 3, nullptr, 0, y);
  CHECK(y[0] == 0);
  CHECK(y[1] == 46);
  CHECK(y[2] == 155);
  // zeta > 1 reaches an exact one: a single kept key has p = 1 -> 1.25 -> clipped to 1 -> 255.
  integer_softmax(c, x + 7, 1, 1, nullptr, 0, y);
  CHECK(y[0] == 255);
}

TEST_CASE("integer_softmax: random rows, every variant, error in LSB against float64") {
  struct Config {
    double s_in, gamma, zeta;
    bool u8_input, mask;
    int64_t n;
  };
  std::mt19937 rng(72);
  for (const Config c : {Config{0.05, 0, 1, true, false, 128},  // attention scores as u8
                         Config{0.1, 0, 1, true, true, 64},
                         Config{0.03, -0.025, 1, true, true, 128},        // the paper's BERT clip
                         Config{0.07, -12.0 / 512, 1, true, false, 512},  // OPT's gamma
                         Config{0.08, -0.1, 1.1, true, true, 100},
                         Config{1e-3, 0, 1, false, false, 256},  // int32 logits, wide range
                         Config{2e-4, -0.03, 1.0, false, true, 1000}}) {
    CAPTURE(c.n);
    CAPTURE(c.gamma);
    const int64_t rows = 48, n = c.n;
    const IntegerSoftmax s = make_integer_softmax(c.s_in, c.gamma, c.zeta);
    std::vector<int32_t> x(rows * n);
    std::vector<uint8_t> keep(rows * n, 1);
    for (int64_t r = 0; r < rows; ++r) {
      // Rows from flat to peaked: the logit spread (in real units) grows with r.
      const double spread = 0.2 + 0.25 * static_cast<double>(r);
      std::normal_distribution<double> normal(0, spread / c.s_in);
      for (int64_t j = 0; j < n; ++j) {
        const double v = normal(rng) + (c.u8_input ? 128 : 0);
        x[r * n + j] = static_cast<int32_t>(c.u8_input ? std::clamp(std::nearbyint(v), 0.0, 255.0)
                                                       : std::nearbyint(v));
        if (c.mask) keep[r * n + j] = j < n - (r % 7) * n / 8;  // key padding of various lengths
      }
      if (c.mask && r == rows - 1) std::fill(keep.begin() + r * n, keep.begin() + (r + 1) * n, 0);
    }
    std::vector<uint8_t> out(rows * n);
    if (c.u8_input) {
      std::vector<uint8_t> x8(x.begin(), x.end());
      integer_softmax(s, x8.data(), rows, n, c.mask ? keep.data() : nullptr, n, out.data());
    } else {
      integer_softmax(s, x.data(), rows, n, c.mask ? keep.data() : nullptr, n, out.data());
    }
    LsbError error;
    int64_t clipped = 0;
    for (int64_t r = 0; r < rows; ++r) {
      const std::vector<int64_t> row(x.begin() + r * n, x.begin() + (r + 1) * n);
      const std::vector<double> t =
          reference_row(row, c.mask ? keep.data() + r * n : nullptr, c.s_in, c.gamma, c.zeta);
      for (int64_t j = 0; j < n; ++j) {
        error.add(out[r * n + j], t[j]);
        clipped += t[j] == 0.0 && (!c.mask || keep[r * n + j]);
      }
    }
    const std::string name = "softmax gamma=" + std::to_string(c.gamma) +
                             " zeta=" + std::to_string(c.zeta) + " n=" + std::to_string(n);
    INFO(error.summary(name));
    qt::test::report(error, name);
    if (c.gamma < 0) CHECK(clipped > 0);  // the clip to exact zeros is exercised
    CHECK(error.max_error <= 0.5 + 1.0 / 1024);
    CHECK(error.mean_error() <= 0.26);
  }
}

TEST_CASE("integer_softmax: int32 logits at the ends of the range") {
  // d = INT32_MAX - INT32_MIN = 2^32 - 1, the largest difference: d * M0 < 2^63.
  const int32_t x[] = {std::numeric_limits<int32_t>::min(), std::numeric_limits<int32_t>::max()};
  uint8_t y[2];
  integer_softmax(make_integer_softmax(1e-3), x, 1, 2, nullptr, 0, y);
  CHECK(y[0] == 0);
  CHECK(y[1] == 255);
  // A tiny scale: the difference is 4.29e-3 in real units: p = 0.49893, 0.50107 -> 127.23, 127.77.
  integer_softmax(make_integer_softmax(1e-12), x, 1, 2, nullptr, 0, y);
  CHECK(y[0] == 127);
  CHECK(y[1] == 128);
}

TEST_CASE("integer_softmax: a causal mask per row, and bad parameters") {
  const IntegerSoftmax s = make_integer_softmax(0.1);
  const int64_t T = 5;
  std::vector<uint8_t> x(T * T, 100), keep(T * T), out(T * T);
  for (int64_t i = 0; i < T; ++i)
    for (int64_t j = 0; j < T; ++j) keep[i * T + j] = j <= i;
  integer_softmax(s, x.data(), T, T, keep.data(), T, out.data());
  // Row i keeps i + 1 equal logits: 255 / (i + 1) on the kept, 0 after.
  const int expected[] = {255, 128, 85, 64, 51};  // 127.5 -> 128 (ties to even), 63.75 -> 64
  for (int64_t i = 0; i < T; ++i)
    for (int64_t j = 0; j < T; ++j) CHECK(out[i * T + j] == (j <= i ? expected[i] : 0));
  CHECK_THROWS_WITH_AS(make_integer_softmax(0.1, 0.1), doctest::Contains("gamma = 0.1"), qt::Error);
  CHECK_THROWS_WITH_AS(make_integer_softmax(0.1, 0, 0.9), doctest::Contains("zeta = 0.9"),
                       qt::Error);
  CHECK_THROWS_WITH_AS(make_integer_softmax(20.0), doctest::Contains("input scale 20"), qt::Error);
  CHECK_THROWS_WITH_AS(integer_softmax(s, x.data(), 1, 0, nullptr, 0, out.data()),
                       doctest::Contains("bad shape [1, 0]"), qt::Error);
}

TEST_CASE("integer_softmax: the built exp table, a hand-built softmax and any thread count agree") {
  // Truth: the per-call tabulation of a hand-built IntegerSoftmax (no exp_of_distance) on one
  // thread; the fast path (the table made once by make_integer_softmax) on 1 and 2 threads must
  // give the same codes, for u8 and int32 scores, with and without a per-row mask.
  std::mt19937 rng(50);
  std::uniform_int_distribution<int> code(0, 255);
  const int64_t rows = 600, n = 128;  // large enough for the OpenMP team
  std::vector<uint8_t> x8(rows * n), keep(rows * n);
  std::vector<int32_t> x32(rows * n);
  for (int64_t i = 0; i < rows * n; ++i) {
    x8[i] = static_cast<uint8_t>(code(rng));
    x32[i] = code(rng) * 37 - 4000;
    keep[i] = code(rng) % 5 != 0;
  }
  const IntegerSoftmax made = make_integer_softmax(0.07, -0.025, 1.0);
  IntegerSoftmax hand = made;
  hand.exp_of_distance.clear();
  const qt::test::ThreadGuard guard;
  const uint8_t* const masks[] = {nullptr, keep.data()};
  for (const uint8_t* mask : masks) {
    qt::set_num_threads(1);
    std::vector<uint8_t> want8(rows * n), want32(rows * n), got(rows * n);
    integer_softmax(hand, x8.data(), rows, n, mask, n, want8.data());
    integer_softmax(hand, x32.data(), rows, n, mask, n, want32.data());
    for (int threads : {1, 2}) {
      qt::set_num_threads(threads);
      integer_softmax(made, x8.data(), rows, n, mask, n, got.data());
      CHECK(got == want8);
      integer_softmax(made, x32.data(), rows, n, mask, n, got.data());
      CHECK(got == want32);
    }
  }
}

TEST_CASE("integer_softmax: the division-free row loop equals the plain division") {
  // Truth: the header's steps written naively, with P = (e 2^30 + sum / 2) / sum by `/` (as the
  // exported C program computes it). Many rows of random scores, scales, clip ranges, lengths
  // (up to sums near 2^31 * 4096) and masks. An error of one in the Q0.30 probability rarely
  // moves an 8-bit code, so the quotient itself is tested sharply in test_integer_divide.cpp;
  // this test checks the whole row loop around it.
  std::mt19937 rng(62);
  std::uniform_real_distribution<double> scale(0.002, 2.0), clip(-0.2, 0.0);
  std::uniform_int_distribution<int> code(0, 255), wide(-300000, 300000);
  int64_t compared = 0, bad = 0;
  for (int trial = 0; trial < 120; ++trial) {
    const double s_in = trial % 7 == 0 ? 0.0005 : scale(rng);
    const double gamma = trial % 2 ? clip(rng) : 0.0;
    const IntegerSoftmax s = make_integer_softmax(s_in, gamma, trial % 3 == 0 ? 1.02 : 1.0);
    const int64_t n = trial % 5 == 0 ? 4096 : 1 + code(rng) % 200, rows = 8;
    std::vector<uint8_t> x8(rows * n), keep(rows * n), got(rows * n);
    std::vector<int32_t> x32(rows * n);
    for (int64_t i = 0; i < rows * n; ++i) {
      x8[i] = static_cast<uint8_t>(trial % 4 == 0 ? 200 + code(rng) % 3 : code(rng));
      x32[i] = wide(rng);
      keep[i] = code(rng) % 6 != 0;
    }
    // One row's expected codes.
    const auto expected_row = [&](const auto& x, const uint8_t* mask, int64_t r) {
      std::vector<int> out(n, 0);
      int64_t max = std::numeric_limits<int64_t>::min(), sum = 0;
      bool any = false;
      for (int64_t k = 0; k < n; ++k)
        if (mask == nullptr || mask[r * n + k]) {
          max = std::max<int64_t>(max, x[r * n + k]);
          any = true;
        }
      if (!any) return out;
      std::vector<int64_t> e(n, 0);
      for (int64_t k = 0; k < n; ++k)
        if (mask == nullptr || mask[r * n + k]) {
          e[k] = integer_exp_q31(
              rounding_shift_right((max - int64_t{x[r * n + k]}) * s.exponent.multiplier,
                                   31 - s.exponent.shift, Rounding::half_up));
          sum += e[k];
        }
      for (int64_t k = 0; k < n; ++k) {
        const int64_t p = ((e[k] << 30) + sum / 2) / sum;
        const int64_t v = std::clamp<int64_t>(s.stretch * p + s.offset * (int64_t{1} << 30), 0,
                                              255 * (int64_t{1} << 50));
        out[k] = static_cast<int>(rounding_shift_right(v, 50, Rounding::half_to_even));
      }
      return out;
    };
    const uint8_t* const masks[] = {nullptr, keep.data()};
    for (const uint8_t* mask : masks) {
      integer_softmax(s, x8.data(), rows, n, mask, n, got.data());
      for (int64_t r = 0; r < rows; ++r) {
        const std::vector<int> want = expected_row(x8, mask, r);
        for (int64_t j = 0; j < n; ++j, ++compared) bad += got[r * n + j] != want[j];
      }
      integer_softmax(s, x32.data(), rows, n, mask, n, got.data());
      for (int64_t r = 0; r < rows; ++r) {
        const std::vector<int> want = expected_row(x32, mask, r);
        for (int64_t j = 0; j < n; ++j, ++compared) bad += got[r * n + j] != want[j];
      }
    }
  }
  CHECK(bad == 0);
  CHECK(compared > 100'000);
}
