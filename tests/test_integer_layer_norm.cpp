// Tests for quant/integer_sqrt.* and quant/integer_layer_norm.*. Truth: the postcondition
// r^2 <= n < (r + 1)^2 in unsigned __int128 (exhaustive on [0, 2^24], at k^2 - 1, k^2, k^2 + 1 and
// the uint64 ends), long double sqrtl where it is exact, hand-computed rows, and the float64
// LayerNorm of the dequantized input with the dequantized gamma.
#include <doctest/doctest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>
#include <random>
#include <vector>

#include "quant/integer_layer_norm.h"
#include "quant/integer_sqrt.h"
#include "tensor/error.h"
#include "tests/test_integer_common.h"

using namespace qt::quant;
using qt::test::LsbError;

namespace {
bool is_floor_sqrt(uint64_t n, uint64_t r) {
  const unsigned __int128 r2 = static_cast<unsigned __int128>(r) * r;
  const unsigned __int128 next = static_cast<unsigned __int128>(r + 1) * (r + 1);
  return r2 <= n && n < next;
}
}  // namespace

TEST_CASE("integer_sqrt: exhaustive on [0, 2^24], around every tested square, uint64 ends") {
  bool all = true;
  for (uint64_t n = 0; n <= (uint64_t{1} << 24); ++n)
    all = all && is_floor_sqrt(n, integer_sqrt(n));
  CHECK(all);
  CHECK(integer_sqrt(0) == 0);
  CHECK(integer_sqrt(1) == 1);
  CHECK(integer_sqrt(3) == 1);
  CHECK(integer_sqrt(4) == 2);
  CHECK(integer_sqrt(std::numeric_limits<uint64_t>::max()) == 0xFFFFFFFFull);
  CHECK(integer_sqrt(0xFFFFFFFEull * 0xFFFFFFFEull + 0x1FFFFFFFCull) == 0xFFFFFFFEull);
  std::mt19937_64 rng(61);
  std::uniform_int_distribution<uint64_t> root(0, 0xFFFFFFFFull);
  for (int i = 0; i < 300000; ++i) {
    const uint64_t k = i < 1000 ? 0xFFFFFFFFull - i : root(rng);
    const uint64_t square = k * k;
    REQUIRE(integer_sqrt(square) == k);
    if (k > 0) REQUIRE(integer_sqrt(square - 1) == k - 1);
    if (square <= std::numeric_limits<uint64_t>::max() - 1) REQUIRE(integer_sqrt(square + 1) == k);
  }
  for (int i = 0; i < 300000; ++i) {
    const uint64_t n = rng();
    REQUIRE(is_floor_sqrt(n, integer_sqrt(n)));
  }
}

TEST_CASE("integer_sqrt: equal to floor(sqrtl(n)) (long double), random and at k^2 - 1") {
  // floor(sqrtl(n)) is exact for every uint64 n when sqrtl is correctly rounded with a 64-bit
  // significand: the closest call, n = k^2 - 1 with k < 2^32, has sqrt = k - 1/(2k) - ..., and
  // 1/(2k) > 2^-33 = half an ulp of values in [2^31, 2^32), so it never rounds up onto k.
  std::mt19937_64 rng(62);
  std::uniform_int_distribution<uint64_t> root(1, 0xFFFFFFFFull);
  auto floor_sqrtl = [](uint64_t n) {
    return static_cast<uint64_t>(std::floor(std::sqrt(static_cast<long double>(n))));
  };
  bool all = true;
  for (int i = 0; i < 200000; ++i) {
    const uint64_t n = i % 2 == 0 ? rng() : rng() >> (i % 64);
    const uint64_t k = i < 1000 ? 0xFFFFFFFFull - i : root(rng);
    all = all && integer_sqrt(n) == floor_sqrtl(n) &&
          integer_sqrt(k * k - 1) == floor_sqrtl(k * k - 1);
  }
  CHECK(all);
}

TEST_CASE("integer_layer_norm: hand-computed rows") {
  const int8_t g2[] = {127, 127};
  // gamma = 127 / 127 = 1, beta = 0, eps = 0; S_out = 1/64, Z_out = 128.
  const IntegerLayerNorm two = make_integer_layer_norm(2, g2, 1.0 / 127, nullptr, 0.1, 0.0,
                                                       1.0 / 64, 128, Requant::single_half_even);
  const uint8_t x2[] = {0, 10};
  uint8_t y2[2];
  integer_layer_norm(two, x2, 1, y2);
  CHECK(y2[0] == 64);   // -1
  CHECK(y2[1] == 192);  // +1
  const int8_t g4[] = {127, 127, 127, 127};
  const IntegerLayerNorm four = make_integer_layer_norm(4, g4, 1.0 / 127, nullptr, 0.1, 0.0,
                                                        1.0 / 64, 128, Requant::single_half_even);
  // [1, 2, 3, 4]: mean 2.5, var 1.25, normalised +-1.3416, +-0.4472 -> 128 + 64 n.
  const int16_t x4[] = {1, 2, 3, 4, 7, 7, 7, 7};
  uint8_t y4[8];
  integer_layer_norm(four, x4, 2, y4);
  CHECK(y4[0] == 42);
  CHECK(y4[1] == 99);
  CHECK(y4[2] == 157);
  CHECK(y4[3] == 214);
  for (int i = 4; i < 8; ++i) CHECK(y4[i] == 128);  // constant row, eps = 0: beta (0)
  // beta = 0.5 on a constant row: 0.5 * 64 + 128 = 160.
  const double beta[] = {0.5, 0.5, 0.5, 0.5};
  const IntegerLayerNorm shifted = make_integer_layer_norm(4, g4, 1.0 / 127, beta, 0.1, 1e-5,
                                                           1.0 / 64, 128, Requant::double_rounding);
  integer_layer_norm(shifted, x4 + 4, 1, y4);
  for (int i = 0; i < 4; ++i) CHECK(y4[i] == 160);
}

TEST_CASE("integer_layer_norm: random rows, error in LSB against float64") {
  std::mt19937 rng(63);
  struct Config {
    int64_t channels;
    bool wide;  // int16 input codes (a 16-bit residual) instead of u8
    double s_in, eps;
    Requant mode;
  };
  for (const Config c :
       {Config{16, false, 0.02, 1e-12, Requant::single_half_even},
        Config{768, false, 0.05, 1e-5, Requant::double_rounding},
        Config{768, true, 1e-3, 1e-5, Requant::single_half_up},  // eps matters: eps / S_in^2 = 10
        Config{256, true, 1e-4, 1e-12, Requant::double_rounding},
        Config{4096, true, 2e-4, 1e-5, Requant::single_half_away}}) {
    CAPTURE(c.channels);
    const int64_t C = c.channels, rows = 24;
    std::vector<int8_t> g(C);
    std::vector<double> beta(C);
    std::uniform_int_distribution<int> gamma_code(60, 127);
    std::uniform_real_distribution<double> beta_value(-0.5, 0.5);
    for (auto& v : g) v = static_cast<int8_t>(gamma_code(rng));
    for (auto& v : beta) v = beta_value(rng);
    const double s_g = 1.5 / 127, s_out = 12.0 / 255;
    const int32_t z_out = 128, z_in = 100;
    const IntegerLayerNorm ln =
        make_integer_layer_norm(C, g.data(), s_g, beta.data(), c.s_in, c.eps, s_out, z_out, c.mode);
    std::vector<int32_t> x(rows * C);
    for (int64_t r = 0; r < rows; ++r) {
      // Rows of varying spread, some with a large outlier channel (the paper's setting).
      const double spread = c.wide ? std::ldexp(1.0, 2 + static_cast<int>(r % 12)) : 10.0 + r * 4;
      std::normal_distribution<double> normal(0, spread);
      for (int64_t i = 0; i < C; ++i) {
        double v = normal(rng) + (c.wide ? 0 : z_in);
        if (i == r % C && r % 3 == 0) v += 6 * spread;
        const double lo = c.wide ? -32768 : 0, hi = c.wide ? 32767 : 255;
        x[r * C + i] = static_cast<int32_t>(std::clamp(std::nearbyint(v), lo, hi));
      }
    }
    std::vector<uint8_t> out(rows * C);
    if (c.wide) {
      std::vector<int16_t> x16(x.begin(), x.end());
      integer_layer_norm(ln, x16.data(), rows, out.data());
    } else {
      std::vector<uint8_t> x8(x.begin(), x.end());
      integer_layer_norm(ln, x8.data(), rows, out.data());
      std::vector<uint8_t> out32(rows * C);
      integer_layer_norm(ln, x.data(), rows, out32.data());
      CHECK(out32 == out);
    }
    LsbError error;
    for (int64_t r = 0; r < rows; ++r) {
      double mean = 0, var = 0;
      for (int64_t i = 0; i < C; ++i) mean += c.s_in * (x[r * C + i] - z_in);
      mean /= C;
      for (int64_t i = 0; i < C; ++i) {
        const double d = c.s_in * (x[r * C + i] - z_in) - mean;
        var += d * d;
      }
      var /= C;
      for (int64_t i = 0; i < C; ++i) {
        const double n = (c.s_in * (x[r * C + i] - z_in) - mean) / std::sqrt(var + c.eps);
        const double t = (s_g * g[i] * n + beta[i]) / s_out + z_out;
        error.add(out[r * C + i], std::clamp(t, 0.0, 255.0));
      }
    }
    const std::string name =
        "layer_norm C=" + std::to_string(C) + " " + std::string(requant_name(c.mode));
    INFO(error.summary(name));
    qt::test::report(error, name);
    // The integer steps add < 0.01 LSB (|gamma| 2^-16 / S_out = 1.5 2^-16 / 0.047 = 0.0005 for z,
    // 2^-30 relative for D, 2^-16 relative for beta).
    CHECK(error.max_error <= (c.mode == Requant::double_rounding ? 1.0 : 0.5) + 0.01);
    CHECK(error.mean_error() <= 0.27);
  }
}

TEST_CASE("integer_layer_norm: the extremes of the bounds (C = 4096, codes +-2^15)") {
  const int64_t C = 4096;
  std::vector<int8_t> g(C, 127);
  const IntegerLayerNorm ln = make_integer_layer_norm(C, g.data(), 1.0 / 127, nullptr, 1.0, 0.0,
                                                      1.0 / 64, 128, Requant::single_half_even);
  // Alternating +-2^15: V = C Q - S^2 = 4096 * 4096 * 2^30 = 2^54 exactly; normalised +-1.
  std::vector<int32_t> x(2 * C);
  for (int64_t i = 0; i < C; ++i) x[i] = i % 2 == 0 ? 32768 : -32768;
  // One outlier: +2^15 once, -2^15 elsewhere: normalised sqrt(C - 1) = 63.99 (|z| near 2^21) and
  // -1 / sqrt(C - 1) elsewhere.
  for (int64_t i = 0; i < C; ++i) x[C + i] = i == 7 ? 32768 : -32768;
  std::vector<uint8_t> y(2 * C);
  integer_layer_norm(ln, x.data(), 2, y.data());
  for (int64_t i = 0; i < C; ++i) REQUIRE(y[i] == (i % 2 == 0 ? 192 : 64));
  CHECK(y[C + 7] == 255);                                                // 128 + 64 * 63.99 clamps
  const double rest = 128 - 64 / std::sqrt(static_cast<double>(C - 1));  // 127.0000 -> 127
  CHECK(y[C] == static_cast<uint8_t>(std::nearbyint(rest)));
  CHECK(y[C + C - 1] == static_cast<uint8_t>(std::nearbyint(rest)));
}

TEST_CASE("integer_layer_norm: bad layers and inputs are named errors") {
  const int8_t g[] = {1, 1};
  CHECK_THROWS_WITH_AS(
      make_integer_layer_norm(0, g, 1, nullptr, 1, 0, 1, 0, Requant::double_rounding),
      doctest::Contains("0 channels"), qt::Error);
  CHECK_THROWS_WITH_AS(
      make_integer_layer_norm(5000, g, 1, nullptr, 1, 0, 1, 0, Requant::double_rounding),
      doctest::Contains("5000 channels"), qt::Error);
  CHECK_THROWS_WITH_AS(
      make_integer_layer_norm(2, g, 1, nullptr, 1, -1, 1, 0, Requant::double_rounding),
      doctest::Contains("eps -1"), qt::Error);
  const double huge[] = {0.0, 1e9};
  CHECK_THROWS_WITH_AS(make_integer_layer_norm(2, g, 1, huge, 1, 0, 1, 0, Requant::double_rounding),
                       doctest::Contains("beta[1]"), qt::Error);
  CHECK_THROWS_WITH_AS(
      make_integer_layer_norm(2, g, 1, nullptr, 1e-12, 1, 1, 0, Requant::double_rounding),
      doctest::Contains("beyond 2^60"), qt::Error);
  const IntegerLayerNorm ln =
      make_integer_layer_norm(2, g, 1, nullptr, 1, 0, 1, 0, Requant::double_rounding);
  const int32_t x[] = {0, 40000};
  uint8_t y[2];
  CHECK_THROWS_WITH_AS(integer_layer_norm(ln, x, 1, y),
                       doctest::Contains("row 0, channel 1: input code 40000 is beyond 2^15"),
                       qt::Error);
}

TEST_CASE("integer_layer_norm: bit-identical on 1 and 2 threads, errors named before the team") {
  std::mt19937 rng(4096);
  const int64_t rows = 300, C = 256;  // large enough for the OpenMP team
  std::vector<int8_t> gamma(C);
  std::vector<double> beta(C);
  std::uniform_int_distribution<int> g(-127, 127), v(-3000, 3000);
  for (int64_t c = 0; c < C; ++c) {
    gamma[c] = static_cast<int8_t>(g(rng));
    beta[c] = 0.01 * g(rng);
  }
  const IntegerLayerNorm ln = make_integer_layer_norm(C, gamma.data(), 0.02, beta.data(), 0.05,
                                                      1e-5, 0.03, 120, Requant::double_rounding);
  std::vector<int32_t> x(rows * C);
  for (int32_t& q : x) q = v(rng);
  const qt::test::ThreadGuard guard;
  std::vector<uint8_t> one(rows * C), two(rows * C);
  qt::set_num_threads(1);
  integer_layer_norm(ln, x.data(), rows, one.data());
  qt::set_num_threads(2);
  integer_layer_norm(ln, x.data(), rows, two.data());
  CHECK(one == two);
  x[257 * C + 3] = (1 << 15) + 1;  // row 257, channel 3
  CHECK_THROWS_WITH_AS(integer_layer_norm(ln, x.data(), rows, one.data()),
                       doctest::Contains("row 257, channel 3: input code 32769"), qt::Error);
}
