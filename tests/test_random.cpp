// Tests for tensor/random.cpp: Philox-4x32-10 and the uniform / normal values built on it.
//
// Truth: the known-answer vectors published with Random123 (kat_vectors, philox4x32_10), the
// documented mapping of (seed, stream, index) onto counter and key, and statistics of 1e5 draws
// whose tolerances are several standard errors wide (fixed seeds, so the tests are deterministic).
#include <doctest/doctest.h>

#include <array>
#include <cmath>
#include <cstdint>
#include <set>
#include <vector>

#include "tensor/random.h"

using namespace qt;

namespace {

constexpr int64_t kDraws = 100000;

struct Moments {
  double mean, variance;
};

Moments moments(const std::vector<double>& values) {
  double sum = 0;
  for (double v : values) sum += v;
  const double mean = sum / static_cast<double>(values.size());
  double squares = 0;
  for (double v : values) squares += (v - mean) * (v - mean);
  return {mean, squares / static_cast<double>(values.size())};
}

}  // namespace

TEST_CASE("random: philox4x32-10 reproduces the Random123 known-answer vectors") {
  using Block = std::array<uint32_t, 4>;
  CHECK(philox4x32({0, 0, 0, 0}, {0, 0}) == Block{0x6627e8d5, 0xe169c58d, 0xbc57ac4c, 0x9b00dbd8});
  CHECK(philox4x32({0xffffffff, 0xffffffff, 0xffffffff, 0xffffffff}, {0xffffffff, 0xffffffff}) ==
        Block{0x408f276d, 0x41c83b0e, 0xa20bc7c6, 0x6d5451fd});
  CHECK(philox4x32({0x243f6a88, 0x85a308d3, 0x13198a2e, 0x03707344}, {0xa4093822, 0x299f31d0}) ==
        Block{0xd16cfe09, 0x94fdcceb, 0x5001e420, 0x24126ea1});
}

TEST_CASE("random: uniform values come from the documented counter and key layout") {
  // counter = {index lo, index hi, stream lo, stream hi}, key = {seed lo, seed hi}; the f32 uniform
  // is the top 24 bits of word 0 times 2^-24; the f64 uniform the top 53 bits of words 0:1.
  const uint64_t seed = 0x0123456789abcdefULL, stream = 0xfedcba9876543210ULL,
                 index = 0x00000005deadbeefULL;
  const auto block =
      philox4x32({0xdeadbeef, 0x00000005, 0x76543210, 0xfedcba98}, {0x89abcdef, 0x01234567});
  CHECK(random_uniform(seed, stream, index) == static_cast<float>(block[0] >> 8) / 16777216.0f);
  const uint64_t bits = ((static_cast<uint64_t>(block[0]) << 32) | block[1]) >> 11;
  CHECK(random_uniform_f64(seed, stream, index) == static_cast<double>(bits) / 9007199254740992.0);
  // Box-Muller from the same block: z = sqrt(-2 ln u1) cos(2 pi u2), u1 = (k + 0.5) / 2^24.
  const double u1 = (static_cast<double>(block[0] >> 8) + 0.5) / 16777216.0;
  const double u2 = static_cast<double>(block[1] >> 8) / 16777216.0;
  const double z = std::sqrt(-2 * std::log(u1)) * std::cos(2 * 3.14159265358979323846 * u2);
  CHECK(random_normal(seed, stream, index) == doctest::Approx(z).epsilon(1e-6));
}

TEST_CASE("random: every input bit matters; values are pure functions of (seed, stream, index)") {
  const float base = random_uniform(1, 2, 3);
  CHECK(random_uniform(1, 2, 3) == base);  // no hidden state
  CHECK(random_uniform(2, 2, 3) != base);
  CHECK(random_uniform(1, 3, 3) != base);
  CHECK(random_uniform(1, 2, 4) != base);
  // High halves of the 64-bit inputs reach the counter and key too.
  CHECK(random_uniform_f64(1, 2, 3 + (uint64_t{1} << 32)) != random_uniform_f64(1, 2, 3));
  CHECK(random_uniform_f64(1, 2 + (uint64_t{1} << 32), 3) != random_uniform_f64(1, 2, 3));
  CHECK(random_uniform_f64(1 + (uint64_t{1} << 32), 2, 3) != random_uniform_f64(1, 2, 3));
  // 1000 consecutive indices give 1000 distinct f64 values.
  std::set<double> distinct;
  for (uint64_t i = 0; i < 1000; ++i) distinct.insert(random_uniform_f64(7, 0, i));
  CHECK(distinct.size() == 1000);
}

TEST_CASE("random: values do not depend on call order or thread count") {
  std::vector<double> forward(4096), backward(4096), parallel(4096);
  for (int64_t i = 0; i < 4096; ++i) forward[i] = random_normal(11, 5, i);
  for (int64_t i = 4095; i >= 0; --i) backward[i] = random_normal(11, 5, i);
    // Two threads taking interleaved chunks of 7 indices in whatever order they get them.
#pragma omp parallel for schedule(dynamic, 7) num_threads(2)
  for (int64_t i = 0; i < 4096; ++i) parallel[i] = random_normal(11, 5, i);
  CHECK(forward == backward);
  CHECK(forward == parallel);
}

TEST_CASE("random: uniforms lie in [0, 1) on the 2^-24 / 2^-53 grid with the right moments") {
  std::vector<double> u32(kDraws), u64(kDraws);
  bool in_range = true, on_grid = true;
  for (int64_t i = 0; i < kDraws; ++i) {
    const float u = random_uniform(42, 0, i);
    const double d = random_uniform_f64(42, 0, i);
    in_range &= u >= 0.0f && u < 1.0f && d >= 0.0 && d < 1.0;
    on_grid &= std::ldexp(static_cast<double>(u), 24) ==
               std::floor(std::ldexp(static_cast<double>(u), 24));
    on_grid &= std::ldexp(d, 53) == std::floor(std::ldexp(d, 53));
    u32[i] = u;
    u64[i] = d;
  }
  CHECK(in_range);
  CHECK(on_grid);
  // Mean 1/2 (standard error sqrt(1/12 / 1e5) = 0.0009), variance 1/12 (s.e. about 0.0002).
  for (const auto& values : {u32, u64}) {
    const Moments m = moments(values);
    CHECK(m.mean == doctest::Approx(0.5).epsilon(0.01));
    CHECK(m.variance == doctest::Approx(1.0 / 12).epsilon(0.02));
    // Ten equal bins each get ~1e4 draws (s.e. ~95).
    std::array<int64_t, 10> bins{};
    for (double v : values) ++bins[static_cast<size_t>(v * 10)];
    for (int64_t count : bins) CHECK(std::abs(count - kDraws / 10) < 600);
  }
}

TEST_CASE("random: normals have mean 0, variance 1 and the normal's tail fractions") {
  for (bool f64 : {false, true}) {
    CAPTURE(f64);
    std::vector<double> values(kDraws);
    bool finite = true;
    for (int64_t i = 0; i < kDraws; ++i) {
      values[i] = f64 ? random_normal_f64(3, 1, i) : random_normal(3, 1, i);
      finite &= std::isfinite(values[i]);
    }
    CHECK(finite);
    const Moments m = moments(values);
    CHECK(std::abs(m.mean) < 0.015);         // s.e. 0.0032
    CHECK(std::abs(m.variance - 1) < 0.03);  // s.e. 0.0045
    int64_t within_one = 0, beyond_three = 0;
    for (double v : values) {
      within_one += std::abs(v) < 1;
      beyond_three += std::abs(v) > 3;
    }
    CHECK(static_cast<double>(within_one) / kDraws == doctest::Approx(0.682689).epsilon(0.015));
    CHECK(static_cast<double>(beyond_three) / kDraws == doctest::Approx(0.0026998).epsilon(0.3));
  }
  // Different streams under one seed are uncorrelated: sample correlation ~ N(0, 1/1e5).
  double product = 0;
  for (int64_t i = 0; i < kDraws; ++i) product += random_normal(3, 1, i) * random_normal(3, 2, i);
  CHECK(std::abs(product / kDraws) < 0.015);
}
