// Tests for quant/integer_requantize.*: multiplier quantization, the named rounding rules,
// gemmlowp's SaturatingRoundingDoublingHighMul / RoundingDivideByPOT, single vs double rounding and
// the output stage. Truth: hand-computed values, and the exact product x * M0 * 2^(shift - 31) in
// long double (x * M0 is exact in int64 and long double has a 64-bit significand), and x * M for
// the real M.
#include <doctest/doctest.h>

#include <cmath>
#include <cstdint>
#include <limits>
#include <random>
#include <vector>

#include "quant/integer_requantize.h"
#include "tensor/error.h"
#include "tests/test_integer_common.h"

using namespace qt::quant;
using qt::test::LsbError;
using qt::test::ThreadGuard;

namespace {
constexpr int32_t kMin = std::numeric_limits<int32_t>::min();
constexpr int32_t kMax = std::numeric_limits<int32_t>::max();

// The exact x * M0 * 2^(shift - 31) for a quantized multiplier.
long double exact_product(int32_t x, QuantizedMultiplier m) {
  return std::ldexp(static_cast<long double>(static_cast<int64_t>(x) * m.multiplier), m.shift - 31);
}
}  // namespace

TEST_CASE("integer_requantize: quantize_multiplier (gemmlowp QuantizeMultiplier)") {
  CHECK(quantize_multiplier(0.5).multiplier == (1 << 30));
  CHECK(quantize_multiplier(0.5).shift == 0);
  CHECK(quantize_multiplier(1.0).multiplier == (1 << 30));
  CHECK(quantize_multiplier(1.0).shift == 1);
  CHECK(quantize_multiplier(0.75).multiplier == 3 << 29);
  CHECK(quantize_multiplier(0.0).multiplier == 0);
  CHECK(quantize_multiplier(0.0).shift == 0);
  // m * 2^31 rounds up to 2^31: halved, shift + 1.
  const QuantizedMultiplier up = quantize_multiplier((2147483648.0 - 0.25) / 2147483648.0);
  CHECK(up.multiplier == (1 << 30));
  CHECK(up.shift == 1);
  // The smallest kept multipliers: shift -31; below 2^-32 flushes to zero.
  const QuantizedMultiplier small = quantize_multiplier(std::ldexp(1.5, -32));
  CHECK(small.shift == -31);
  CHECK(small.multiplier == 3 << 29);
  CHECK(quantize_multiplier(std::ldexp(1.0, -34)).multiplier == 0);
  CHECK(quantize_multiplier(1000.0).shift == 10);
  // Relative error of M0 * 2^(shift - 31) is at most 2^-31 (half an M0 step over M0 >= 2^30).
  std::mt19937 rng(7);
  std::uniform_real_distribution<double> log_m(-20, 20);
  for (int i = 0; i < 10000; ++i) {
    const double m = std::exp(log_m(rng));
    const QuantizedMultiplier q = quantize_multiplier(m);
    CHECK(q.multiplier >= (1 << 30));
    REQUIRE(std::fabs(multiplier_value(q) - m) <= m * std::ldexp(1.0, -31));
  }
  CHECK_THROWS_WITH_AS(quantize_multiplier(-0.5), doctest::Contains("finite and >= 0"), qt::Error);
  CHECK_THROWS_WITH_AS(quantize_multiplier(NAN), doctest::Contains("finite and >= 0"), qt::Error);
  CHECK_THROWS_WITH_AS(quantize_multiplier(std::ldexp(1.0, 30)), doctest::Contains("too large"),
                       qt::Error);
  CHECK_THROWS_WITH_AS(check_multiplier({5, 0}, "op"), doctest::Contains("M0 = 5"), qt::Error);
  CHECK_THROWS_WITH_AS(check_multiplier({1 << 30, 31}, "op"), doctest::Contains("shift 31"),
                       qt::Error);
}

TEST_CASE("integer_requantize: the named rounding rules on ties") {
  // 5/2 = 2.5, -5/2 = -2.5, 7/2 = 3.5, -7/2 = -3.5, 6/4 = 1.5, -6/4 = -1.5
  struct Case {
    int64_t x;
    int e;
    int64_t up, away, even;
  };
  for (const Case c : {Case{5, 1, 3, 3, 2}, Case{-5, 1, -2, -3, -2}, Case{7, 1, 4, 4, 4},
                       Case{-7, 1, -3, -4, -4}, Case{6, 2, 2, 2, 2}, Case{-6, 2, -1, -2, -2},
                       Case{-5, 2, -1, -1, -1}, Case{-7, 2, -2, -2, -2}, Case{3, 0, 3, 3, 3}}) {
    CAPTURE(c.x);
    CAPTURE(c.e);
    CHECK(rounding_shift_right(c.x, c.e, Rounding::half_up) == c.up);
    CHECK(rounding_shift_right(c.x, c.e, Rounding::half_away_from_zero) == c.away);
    CHECK(rounding_shift_right(c.x, c.e, Rounding::half_to_even) == c.even);
  }
  // The widest exponent and the int64 ends.
  CHECK(rounding_shift_right(int64_t{1} << 61, 62, Rounding::half_up) == 1);
  CHECK(rounding_shift_right(int64_t{1} << 61, 62, Rounding::half_to_even) == 0);
  CHECK(rounding_shift_right(std::numeric_limits<int64_t>::min(), 62, Rounding::half_to_even) ==
        -2);
  CHECK_THROWS_WITH_AS(rounding_shift_right(1, 63, Rounding::half_up),
                       doctest::Contains("exponent 63 is out of range"), qt::Error);
}

TEST_CASE("integer_requantize: RoundingDivideByPOT (ties away from zero, shift 0..31)") {
  CHECK(rounding_divide_by_pot(3, 1) == 2);
  CHECK(rounding_divide_by_pot(-3, 1) == -2);
  CHECK(rounding_divide_by_pot(-2, 2) == -1);  // -0.5 -> -1
  CHECK(rounding_divide_by_pot(2, 2) == 1);    // 0.5 -> 1
  CHECK(rounding_divide_by_pot(1 << 30, 31) == 1);
  CHECK(rounding_divide_by_pot(-(1 << 30), 31) == -1);
  CHECK(rounding_divide_by_pot((1 << 30) - 1, 31) == 0);
  CHECK(rounding_divide_by_pot(kMin, 31) == -1);
  CHECK(rounding_divide_by_pot(kMax, 31) == 1);
  CHECK(rounding_divide_by_pot(kMax, 0) == kMax);
  CHECK_THROWS_WITH_AS(rounding_divide_by_pot(1, 32), doctest::Contains("exponent 32"), qt::Error);
  CHECK_THROWS_WITH_AS(rounding_divide_by_pot(1, -1), doctest::Contains("exponent -1"), qt::Error);
  // Equal to the half-away rule of rounding_shift_right for every exponent.
  std::mt19937 rng(11);
  std::uniform_int_distribution<int32_t> any(kMin, kMax);
  for (int e = 0; e <= 31; ++e)
    for (int i = 0; i < 2000; ++i) {
      const int32_t x = i < 3 ? (i == 0 ? kMin : i == 1 ? kMax : 0) : any(rng);
      REQUIRE(rounding_divide_by_pot(x, e) ==
              rounding_shift_right(x, e, Rounding::half_away_from_zero));
    }
}

TEST_CASE("integer_requantize: SaturatingRoundingDoublingHighMul") {
  CHECK(saturating_rounding_doubling_high_mul(kMin, kMin) == kMax);  // the one overflow
  CHECK(saturating_rounding_doubling_high_mul(kMin, kMax) == -kMax);
  CHECK(saturating_rounding_doubling_high_mul(kMax, kMax) == kMax - 1);
  // Ties go toward +infinity, not away from zero: the negative nudge is 1 - 2^30, not -2^30, so
  // -0.5 truncates to 0 and -1.5 to -1 (anchors §2.2 item 3 says "away from zero"; the code does
  // not).
  CHECK(saturating_rounding_doubling_high_mul(1, 1 << 30) == 1);          // 0.5 -> 1
  CHECK(saturating_rounding_doubling_high_mul(-1, 1 << 30) == 0);         // -0.5 -> 0
  CHECK(saturating_rounding_doubling_high_mul(-3, 1 << 30) == -1);        // -1.5 -> -1
  CHECK(saturating_rounding_doubling_high_mul(-3, (1 << 30) + 1) == -2);  // just below -1.5
  CHECK(saturating_rounding_doubling_high_mul(3, 1 << 29) == 1);          // 0.75 -> 1
  CHECK(saturating_rounding_doubling_high_mul(1, (1 << 30) - 1) == 0);
  std::mt19937 rng(12);
  std::uniform_int_distribution<int32_t> any(kMin, kMax);
  for (int i = 0; i < 100000; ++i) {
    const int32_t a = any(rng), b = any(rng);
    if (a == kMin && b == kMin) continue;
    const int64_t p = static_cast<int64_t>(a) * b;
    REQUIRE(saturating_rounding_doubling_high_mul(a, b) ==
            rounding_shift_right(p, 31, Rounding::half_up));
  }
}

TEST_CASE("integer_requantize: single vs double rounding on the published cases") {
  // ruy PR #227: x = 1, M0 = 2^30, shift = -1, i.e. 1 * 0.25.
  const QuantizedMultiplier quarter{1 << 30, -1};
  CHECK(multiply_by_quantized_multiplier(1, quarter, Requant::double_rounding) == 1);
  CHECK(multiply_by_quantized_multiplier(1, quarter, Requant::single_half_up) == 0);
  CHECK(multiply_by_quantized_multiplier(1, quarter, Requant::single_half_even) == 0);
  // TF issue #25087 as restated in anchors §2.6: x = 7984, M0 = 1583594044, shift = -9. The exact
  // value is 7984 * 1583594044 / 2^40 = 11.499119; SRDHM first rounds 5887.549 to 5888, then
  // 5888 / 512 = 11.5 rounds away to 12. One rounding gives 11.
  const QuantizedMultiplier tf{1583594044, -9};
  CHECK(static_cast<double>(exact_product(7984, tf)) ==
        doctest::Approx(11.499118816).epsilon(1e-9));
  CHECK(multiply_by_quantized_multiplier(7984, tf, Requant::double_rounding) == 12);
  CHECK(multiply_by_quantized_multiplier(7984, tf, Requant::single_half_up) == 11);
  CHECK(multiply_by_quantized_multiplier(7984, tf, Requant::single_half_away) == 11);
  CHECK(multiply_by_quantized_multiplier(7984, tf, Requant::single_half_even) == 11);
  // An exact tie, 5 * 0.5 = 2.5, and -2.5: the three single rules differ.
  const QuantizedMultiplier half{1 << 30, 0};
  CHECK(multiply_by_quantized_multiplier(5, half, Requant::single_half_up) == 3);
  CHECK(multiply_by_quantized_multiplier(5, half, Requant::single_half_away) == 3);
  CHECK(multiply_by_quantized_multiplier(5, half, Requant::single_half_even) == 2);
  CHECK(multiply_by_quantized_multiplier(-5, half, Requant::single_half_up) == -2);
  CHECK(multiply_by_quantized_multiplier(-5, half, Requant::single_half_away) == -3);
  CHECK(multiply_by_quantized_multiplier(-5, half, Requant::single_half_even) == -2);
  CHECK(multiply_by_quantized_multiplier(-5, half, Requant::double_rounding) == -2);  // SRDHM: up
  // Shift 30 (M close to 2^30) and -31 (right shift by 31).
  const QuantizedMultiplier big{1 << 30, 30};  // M = 2^29
  CHECK(multiply_by_quantized_multiplier(3, big, Requant::single_half_up) == 3 << 29);
  CHECK(multiply_by_quantized_multiplier(1, big, Requant::double_rounding) == 1 << 29);
  CHECK(multiply_by_quantized_multiplier(4, big, Requant::single_half_even) == kMax);  // saturates
  CHECK_THROWS_WITH_AS(multiply_by_quantized_multiplier(4, big, Requant::double_rounding),
                       doctest::Contains("overflows int32"), qt::Error);
  const QuantizedMultiplier tiny{3 << 29, -31};  // M = 0.75 * 2^-31
  CHECK(multiply_by_quantized_multiplier(kMax, tiny, Requant::double_rounding) == 1);
  CHECK(multiply_by_quantized_multiplier(kMin, tiny, Requant::single_half_even) == -1);
  CHECK(multiply_by_quantized_multiplier(kMin, tiny, Requant::double_rounding) == -1);
}

TEST_CASE("integer_requantize: error in LSB against the exact product, every mode") {
  // Accumulators and multipliers as in a W8A8 layer: results within +-300 LSB, M in [2^-20, 4).
  std::mt19937 rng(13);
  std::uniform_real_distribution<double> log_m(-20 * std::log(2.0), std::log(4.0));
  std::uniform_real_distribution<double> result(-300, 300);
  for (const Requant mode : {Requant::double_rounding, Requant::single_half_up,
                             Requant::single_half_away, Requant::single_half_even}) {
    LsbError vs_quantized, vs_real;
    for (int i = 0; i < 200000; ++i) {
      const double m = std::exp(log_m(rng));
      const QuantizedMultiplier q = quantize_multiplier(m);
      const int32_t x = static_cast<int32_t>(std::llround(result(rng) / m));
      const int32_t y = multiply_by_quantized_multiplier(x, q, mode);
      vs_quantized.add(y, static_cast<double>(exact_product(x, q)));
      vs_real.add(y, static_cast<double>(static_cast<long double>(x) * m));
    }
    const std::string name(requant_name(mode));
    INFO(vs_quantized.summary(name + " vs x * M0 * 2^(shift-31)"));
    INFO(vs_real.summary(name + " vs x * M"));
    qt::test::report(vs_quantized, name + " vs x * M0 * 2^(shift-31)");
    qt::test::report(vs_real, name + " vs x * M");
    if (mode == Requant::double_rounding) {
      // Two roundings: at most 1 LSB from the exact value, sometimes one code off.
      CHECK(vs_quantized.max_error <= 1.0);
      CHECK(vs_quantized.max_code_error() == 1);
      CHECK(vs_quantized.mean_error() < 0.26);
    } else {
      // One rounding of the exact product: always the nearest code (ties are measure zero here).
      CHECK(vs_quantized.max_error <= 0.5);
      CHECK(vs_quantized.max_code_error() == 0);
      CHECK(vs_quantized.mean_error() < 0.251);
      // Against the real M the multiplier's 2^-31 relative error adds < 300 * 2^-31 LSB.
      CHECK(vs_real.max_error <= 0.5 + 1e-6);
    }
  }
}

TEST_CASE("integer_requantize: the output stage clamps to u8 / s8 with the zero point") {
  const Requantizer r = make_requantizer(0.5, 10, kU8Min, kU8Max, Requant::single_half_even);
  const int32_t acc[] = {0, 1, 3, 5, 1000, -20, -21, -22, -1000, kMax, kMin};
  uint8_t out[11];
  requantize(acc, 11, r, out);
  const uint8_t expected[] = {10, 10, 12, 12, 255, 0, 0, 0, 0, 255, 0};
  for (int i = 0; i < 11; ++i) CHECK(out[i] == expected[i]);
  const Requantizer s = make_requantizer(0.25, -3, kS8Min, kS8Max, Requant::double_rounding);
  int8_t out8[11];
  requantize(acc, 11, s, out8);
  // Double rounding's bias shows: 0.25 -> 1, 1.25 -> 2 (single rounding: 0, 1).
  const int8_t expected8[] = {-3, -2, -2, -1, 127, -8, -8, -9, -128, 127, -128};
  for (int i = 0; i < 11; ++i) CHECK(out8[i] == expected8[i]);
  CHECK_THROWS_WITH_AS(make_requantizer(0.5, 300, 0, 255, Requant::double_rounding),
                       doctest::Contains("zero point 300 lies outside"), qt::Error);
  CHECK_THROWS_WITH_AS(requantize(acc, 11, s, out), doctest::Contains("does not fit u8"),
                       qt::Error);
  CHECK_THROWS_WITH_AS(make_requantizer(-1.0, 0, 0, 255, Requant::double_rounding),
                       doctest::Contains("finite and >= 0"), qt::Error);
}

TEST_CASE("integer_requantize: the vectorized array stage equals the scalar Requantizer") {
  // Truth: Requantizer::operator() element by element (itself tested above against exact
  // products). Every mode, every shift in [-31, 30], random and extreme accumulators, u8 / s8 /
  // int16 grids, ReLU; the arrays are long enough to take the OpenMP path too.
  std::mt19937_64 rng(25087);
  std::uniform_int_distribution<int32_t> any(kMin, kMax), small(-70000, 70000);
  std::vector<int32_t> x(70000);
  for (size_t i = 0; i < x.size(); ++i) x[i] = i % 3 == 0 ? any(rng) : small(rng);
  const int32_t edges[] = {0, 1, -1, kMin, kMax, kMin + 1, kMax - 1, 1 << 30, -(1 << 30), 7984};
  for (size_t i = 0; i < std::size(edges); ++i) x[i] = edges[i];
  const ThreadGuard guard;
  int64_t compared = 0;
  for (Requant mode : {Requant::double_rounding, Requant::single_half_up, Requant::single_half_away,
                       Requant::single_half_even})
    for (int shift = -31; shift <= 30; shift += (shift < -2 || shift > 2) ? 5 : 1) {
      for (int32_t m0 : {int32_t{1} << 30, 1583594044, kMax, 1431655765}) {
        const Requantizer u{{m0, shift}, 17, kU8Min, kU8Max, mode};
        const Requantizer s{{m0, shift}, -5, kS8Min, kS8Max, mode};
        const Requantizer w{{m0, shift}, 300, -32768, 32767, mode};
        // M >= 1 with double rounding throws for large x in the scalar stage: use small x then.
        const bool checked = mode == Requant::double_rounding && shift > 0;
        const int64_t n = checked ? 0 : static_cast<int64_t>(x.size());
        std::vector<uint8_t> yu(x.size()), yr(x.size());
        std::vector<int8_t> ys(x.size());
        std::vector<int16_t> yw(x.size());
        for (int threads : {1, 2}) {
          qt::set_num_threads(threads);
          requantize(x.data(), n, u, yu.data());
          requantize_relu(x.data(), n, u, yr.data());
          requantize(x.data(), n, s, ys.data());
          requantize(x.data(), n, w, yw.data());
          int64_t bad = 0;
          for (int64_t i = 0; i < n; ++i) {
            bad += yu[i] != u(x[i]);
            bad += yr[i] != u(std::max(x[i], 0));
            bad += ys[i] != s(x[i]);
            bad += yw[i] != w(x[i]);
          }
          CHECK_MESSAGE(bad == 0, requant_name(mode), " shift ", shift, " M0 ", m0, " threads ",
                        threads);
          compared += 4 * n;
        }
      }
    }
  CHECK(compared > 10'000'000);
  // M >= 1 under double rounding: the checked scalar path, overflow named.
  const Requantizer big{{1 << 30, 3}, 0, kU8Min, kU8Max, Requant::double_rounding};
  const int32_t few[] = {1, 2, -3};
  uint8_t out[3];
  requantize(few, 3, big, out);
  CHECK(out[0] == big(1));
  CHECK(out[1] == big(2));
  const int32_t huge[] = {kMax};
  CHECK_THROWS_WITH_AS(requantize(huge, 1, big, out), doctest::Contains("overflows int32"),
                       qt::Error);
}

TEST_CASE("integer_requantize: requantize_columns equals the per-column scalar stage") {
  std::mt19937_64 rng(227);
  std::uniform_int_distribution<int32_t> acc_dist(-400000, 400000);
  std::uniform_real_distribution<double> m_dist(1e-6, 0.9);
  std::uniform_int_distribution<int32_t> zp_dist(0, 255);
  const ThreadGuard guard;
  for (Requant mode : {Requant::double_rounding, Requant::single_half_even}) {
    const int64_t rows = 300, cols = 97;
    std::vector<int32_t> acc(rows * cols);
    for (int32_t& a : acc) a = acc_dist(rng);
    // Per channel (all different), per tensor (all equal), and mixed modes (scalar fallback).
    std::vector<Requantizer> per_channel, per_tensor, mixed;
    const Requantizer one = make_requantizer(0.003, 128, kU8Min, kU8Max, mode);
    for (int64_t c = 0; c < cols; ++c) {
      per_channel.push_back(make_requantizer(m_dist(rng), zp_dist(rng), kU8Min, kU8Max, mode));
      per_tensor.push_back(one);
      mixed.push_back(make_requantizer(m_dist(rng), zp_dist(rng), kU8Min, kU8Max,
                                       c % 2 ? Requant::double_rounding : Requant::single_half_up));
    }
    for (const auto* r : {&per_channel, &per_tensor, &mixed})
      for (bool relu : {false, true})
        for (int threads : {1, 2}) {
          qt::set_num_threads(threads);
          std::vector<uint8_t> y(acc.size());
          requantize_columns(acc.data(), rows, cols, r->data(), relu, y.data());
          int64_t bad = 0;
          for (int64_t m = 0; m < rows; ++m)
            for (int64_t c = 0; c < cols; ++c) {
              const int32_t a = acc[m * cols + c];
              bad += y[m * cols + c] != (*r)[c](relu ? std::max(a, 0) : a);
            }
          CHECK(bad == 0);
        }
  }
  std::vector<Requantizer> s8(3,
                              make_requantizer(0.5, 0, kS8Min, kS8Max, Requant::double_rounding));
  int32_t acc[3] = {1, 2, 3};
  uint8_t y[3];
  CHECK_THROWS_WITH_AS(requantize_columns(acc, 1, 3, s8.data(), false, y),
                       doctest::Contains("does not fit u8"), qt::Error);
}
