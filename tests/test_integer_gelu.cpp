// Tests for quant/integer_lut.* and quant/integer_gelu.*: GELU as an exact table (every u8 input,
// and the fused int32 -> int16 -> table form) and ReLU. Truth: the float64 GELU
// 0.5 x (1 + erf(x / sqrt 2)) of the exact real input, divided by the output scale.
#include <doctest/doctest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <random>
#include <vector>

#include "quant/integer_gelu.h"
#include "quant/integer_linear.h"
#include "tensor/error.h"
#include "tests/test_integer_common.h"

using namespace qt::quant;
using qt::test::LsbError;

TEST_CASE("integer_gelu: hand-computed entries") {
  // S_in = 0.05, Z_in = 100; S_out = 0.02, Z_out = 10.
  const IntegerLut lut = make_integer_gelu_u8(0.05, 100, 0.02, 10);
  CHECK(lut(100) == 10);       // GELU(0) = 0
  CHECK(lut(140) == 108);      // GELU(2) = 1.9545 -> 97.72 -> 98, + 10
  CHECK(lut(120) == 10 + 42);  // GELU(1) = 0.84134 -> 42.07 -> 42
  CHECK(lut(0) == 10 + 0);     // GELU(-5) = -1.4e-6 -> 0
  CHECK(lut(90) == 10 - 8);    // GELU(-0.5) = -0.15428 -> -7.71 -> -8
  CHECK_THROWS_WITH_AS(lut(256), doctest::Contains("input code 256 is outside"), qt::Error);
}

TEST_CASE("integer_gelu: every u8 input, error in LSB against float64") {
  struct Config {
    double s_in;
    int32_t z_in;
    double s_out;
    int32_t z_out;
  };
  for (const Config c : {Config{0.05, 128, 0.03, 20}, Config{0.1, 200, 0.08, 3},
                         Config{0.01, 0, 0.01, 0}, Config{0.2, 60, 0.15, 2}}) {
    const IntegerLut lut = make_integer_gelu_u8(c.s_in, c.z_in, c.s_out, c.z_out);
    std::vector<uint8_t> in(256), out(256);
    for (int q = 0; q < 256; ++q) in[q] = static_cast<uint8_t>(q);
    apply_lut(lut, in.data(), 256, out.data());
    LsbError error;
    for (int q = 0; q < 256; ++q) {
      const double t = gelu_reference(c.s_in * (q - c.z_in)) / c.s_out + c.z_out;
      error.add(out[q], std::clamp(t, 0.0, 255.0));
    }
    INFO(error.summary("gelu u8 table"));
    qt::test::report(error, "gelu u8 table");
    CHECK(error.max_error <= 0.5 + 1e-9);
    CHECK(error.mean_error() <= 0.26);
    CHECK(error.max_code_error() == 0);
  }
}

TEST_CASE("integer_gelu: fused after a linear layer (int32 -> int16 -> table), error in LSB") {
  std::mt19937 rng(41);
  // Per-channel accumulator scales, pre-GELU values within +-6, output u8 over [-0.17, 6].
  const int64_t rows = 64, channels = 48;
  std::vector<double> acc_scales(channels);
  std::uniform_real_distribution<double> scale(1e-5, 4e-5);
  for (double& s : acc_scales) s = scale(rng);
  const double bound = 8, s_out = 6.2 / 255;
  const int32_t z_out = 7;
  for (const Requant mode : {Requant::double_rounding, Requant::single_half_even}) {
    const IntegerLutActivation gelu = make_integer_gelu(acc_scales, bound, s_out, z_out, mode);
    std::vector<int32_t> acc(rows * channels);
    std::uniform_real_distribution<double> x(-6, 6);
    for (int64_t i = 0; i < rows * channels; ++i)
      acc[i] = static_cast<int32_t>(std::llround(x(rng) / acc_scales[i % channels]));
    std::vector<uint8_t> out(rows * channels);
    apply_lut_activation(gelu, acc.data(), rows, channels, out.data());
    LsbError error;
    for (int64_t i = 0; i < rows * channels; ++i) {
      const double t = gelu_reference(acc[i] * acc_scales[i % channels]) / s_out + z_out;
      error.add(out[i], std::clamp(t, 0.0, 255.0));
    }
    // The int16 step S_mid = 8 / 32767 adds at most 1.13 S_mid / S_out LSB (double rounding:
    // an input error up to one S_mid step).
    const double mid = 1.13 * (bound / 32767) / s_out;
    INFO(error.summary("gelu fused int16 table"));
    qt::test::report(error,
                     std::string("gelu fused int16 table, ") + std::string(requant_name(mode)));
    CHECK(error.max_error <= 0.5 + mid);
    CHECK(error.mean_error() <= 0.26);
  }
  CHECK_THROWS_WITH_AS(make_integer_gelu({1e-3}, -1, 0.1, 0, Requant::double_rounding),
                       doctest::Contains("input bound -1"), qt::Error);
  CHECK_THROWS_WITH_AS(make_lut(0, 70000, 1, 0, 1, 0, 0, 255, gelu_reference),
                       doctest::Contains("70001 codes"), qt::Error);
}

TEST_CASE("integer_relu: u8 codes and the fused linear form") {
  const uint8_t x[] = {0, 9, 10, 11, 255};
  uint8_t y[5];
  integer_relu(x, 5, 10, y);
  const uint8_t expected[] = {10, 10, 10, 11, 255};
  for (int i = 0; i < 5; ++i) CHECK(y[i] == expected[i]);
  CHECK_THROWS_WITH_AS(integer_relu(x, 5, -1, y), doctest::Contains("zero point -1"), qt::Error);
  // Fused: relu(S acc) = S max(acc, 0), so the output is requantize(max(acc, 0)) bit for bit and
  // within 0.5 LSB of the float64 relu of the real accumulator (a tie of the real multiplier may
  // round either way under the quantized one).
  std::mt19937 rng(42);
  std::uniform_int_distribution<int> u8(0, 255), s8(-128, 127);
  const int64_t rows = 16, in = 64, out = 32;
  std::vector<uint8_t> a(rows * in);
  std::vector<int8_t> w(out * in);
  for (auto& v : a) v = static_cast<uint8_t>(u8(rng));
  for (auto& v : w) v = static_cast<int8_t>(s8(rng));
  const IntegerLinear layer = make_integer_linear(w.data(), out, in, nullptr, 0.02, 128, {1e-3},
                                                  0.004, 0, Requant::single_half_even);
  std::vector<uint8_t> relu(rows * out);
  std::vector<int32_t> acc(rows * out);
  integer_linear_relu(layer, a.data(), rows, relu.data());
  integer_linear_accumulators(layer, a.data(), rows, acc.data());
  LsbError error;
  bool exact = true;
  for (int64_t i = 0; i < rows * out; ++i) {
    error.add(relu[i], std::clamp(std::max(0.0, acc[i] * 0.02 * 1e-3) / 0.004, 0.0, 255.0));
    exact = exact && relu[i] == layer.output[i % out](std::max(acc[i], 0));
  }
  INFO(error.summary("relu fused"));
  qt::test::report(error, "relu fused");
  CHECK(exact);
  CHECK(error.max_error <= 0.5 + 1e-6);
  CHECK(error.mean_error() <= 0.26);
}
