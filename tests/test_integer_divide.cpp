// Tests for quant/integer_divide.h: the exact reciprocal division against the hardware `/`
// (the independent truth) on random numerators and divisors of every magnitude, on the
// boundaries n = k d - 1, k d, k d + 1 where a wrong multiplier shows first, and at the ends of the
// allowed divisor range.
#include <doctest/doctest.h>

#include <cstdint>
#include <limits>
#include <random>

#include "quant/integer_divide.h"
#include "tensor/error.h"

using namespace qt::quant;

TEST_CASE("integer_divide: floor(n / d) by multiply-high equals the division") {
  std::mt19937_64 rng(1994);
  constexpr uint64_t kMax = std::numeric_limits<uint64_t>::max();
  int64_t compared = 0, bad = 0;
  const auto check = [&](uint64_t n, uint64_t d, const ExactDivider& v) {
    ++compared;
    bad += divide(n, v) != n / d;
  };
  for (int bits = 1; bits <= 63; ++bits)
    for (int trial = 0; trial < 200; ++trial) {
      // A divisor with exactly `bits` bits (and the powers of two and their neighbours).
      uint64_t d = (uint64_t{1} << (bits - 1)) | (rng() & ((uint64_t{1} << (bits - 1)) - 1));
      if (trial == 0) d = uint64_t{1} << (bits - 1);
      if (trial == 1 && bits > 1) d = (uint64_t{1} << (bits - 1)) + 1;
      if (trial == 2) d = (bits == 63 ? uint64_t{1} << 63 : uint64_t{1} << bits) - 1;
      const ExactDivider v = make_exact_divider(d);
      for (int k = 0; k < 20; ++k) check(rng(), d, v);
      for (int k = 0; k < 20; ++k) check(rng() >> (rng() % 64), d, v);
      check(0, d, v);
      check(kMax, d, v);
      check(kMax - 1, d, v);
      for (uint64_t q : {uint64_t{1}, uint64_t{2}, uint64_t{3}, kMax / d, kMax / d - 1,
                         (kMax / d) / 2, uint64_t{1} << 20}) {
        if (q == 0 || q > kMax / d) continue;
        const uint64_t n = q * d;
        check(n, d, v);
        check(n - 1, d, v);
        if (n < kMax) check(n + 1, d, v);
      }
    }
  // The extremes of the range.
  for (uint64_t d : {uint64_t{1}, uint64_t{2}, uint64_t{3}, uint64_t{1} << 63})
    for (uint64_t n : {uint64_t{0}, uint64_t{1}, uint64_t{1} << 62, kMax - 1, kMax})
      check(n, d, make_exact_divider(d));
  CHECK(bad == 0);
  CHECK(compared > 500'000);
  CHECK_THROWS_WITH_AS(make_exact_divider(0), doctest::Contains("outside [1, 2^63]"), qt::Error);
  CHECK_THROWS_WITH_AS(make_exact_divider((uint64_t{1} << 63) + 1),
                       doctest::Contains("outside [1, 2^63]"), qt::Error);
}
