// Tests for quant/integer_sigmoid.*: the gate sigmoid as a table (u8 logits and the fused int16
// form) and the gate multiply. Truth: float64 sigmoid and products of the exact real values.
#include <doctest/doctest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <random>
#include <vector>

#include "quant/integer_sigmoid.h"
#include "tensor/error.h"
#include "tests/test_integer_common.h"

using namespace qt::quant;
using qt::test::LsbError;

TEST_CASE("integer_sigmoid: hand-computed entries and every u8 logit") {
  const IntegerLut lut = make_integer_sigmoid_u8(0.1, 128);
  CHECK(lut(128) == 128);  // sigmoid(0) = 0.5 -> 128 / 256
  CHECK(lut(138) == 187);  // sigmoid(1) = 0.731059 -> 187.15
  CHECK(lut(118) == 69);   // sigmoid(-1) = 0.268941 -> 68.85
  CHECK(lut(255) == 255);  // sigmoid(12.7) saturates at 255 / 256
  CHECK(lut(0) == 0);      // sigmoid(-12.8) = 2.8e-6 -> 0
  for (const double s_in : {0.02, 0.1, 0.5})
    for (const int32_t z_in : {0, 128, 255}) {
      const IntegerLut table = make_integer_sigmoid_u8(s_in, z_in);
      LsbError error;
      for (int q = 0; q < 256; ++q)
        error.add(table(q), std::clamp(sigmoid_reference(s_in * (q - z_in)) * 256, 0.0, 255.0));
      INFO(error.summary("sigmoid u8 table"));
      qt::test::report(error, "sigmoid u8 table");
      CHECK(error.max_error <= 0.5 + 1e-9);
      CHECK(error.mean_error() <= 0.26);
      CHECK(error.max_code_error() == 0);
    }
}

TEST_CASE("integer_sigmoid: fused after the gate's linear layer, error in LSB") {
  std::mt19937 rng(51);
  const int64_t tokens = 200, heads = 4;
  const std::vector<double> scales = {2e-5, 3e-5, 1e-5, 4e-5};  // per head
  const double bound = 16;
  for (const Requant mode : {Requant::double_rounding, Requant::single_half_up}) {
    const IntegerLutActivation sigmoid = make_integer_sigmoid(scales, bound, mode);
    std::vector<int32_t> acc(tokens * heads);
    std::uniform_real_distribution<double> x(-10, 10);
    for (int64_t i = 0; i < tokens * heads; ++i)
      acc[i] = static_cast<int32_t>(std::llround(x(rng) / scales[i % heads]));
    std::vector<uint8_t> gate(tokens * heads);
    apply_lut_activation(sigmoid, acc.data(), tokens, heads, gate.data());
    LsbError error;
    for (int64_t i = 0; i < tokens * heads; ++i)
      error.add(gate[i],
                std::clamp(sigmoid_reference(acc[i] * scales[i % heads]) * 256, 0.0, 255.0));
    const double mid = 0.25 * (bound / 32767) * 256;  // max|sigmoid'| S_mid / S_out
    INFO(error.summary("sigmoid fused int16 table"));
    qt::test::report(error, std::string("sigmoid fused, ") + std::string(requant_name(mode)));
    CHECK(error.max_error <= 0.5 + mid);
    CHECK(error.mean_error() <= 0.26);
  }
}

TEST_CASE("integer_gate_multiply: hand-computed and every (context, gate) pair") {
  // 0.1 (200 - 100) * 128/256 / 0.05 + 10 = 110.
  const Requantizer r = make_gate_multiply(0.1, 100, 0.05, 10, Requant::single_half_even);
  const uint8_t c[] = {200}, g[] = {128};
  uint8_t y[1];
  integer_gate_multiply(c, g, 1, 1, 1, 100, r, y);
  CHECK(y[0] == 110);
  // Every pair, laid out as 256 tokens x 256 heads with head_dim 1; and a [2, 2 x 3] layout.
  for (const Requant mode : {Requant::double_rounding, Requant::single_half_even}) {
    const double s_c = 0.03, s_o = 0.02;
    const int32_t z_c = 90, z_o = 120;
    const Requantizer rq = make_gate_multiply(s_c, z_c, s_o, z_o, mode);
    std::vector<uint8_t> ctx(65536), gate(65536), out(65536);
    for (int i = 0; i < 65536; ++i) {
      ctx[i] = static_cast<uint8_t>(i >> 8);
      gate[i] = static_cast<uint8_t>(i & 255);
    }
    integer_gate_multiply(ctx.data(), gate.data(), 256, 256, 1, z_c, rq, out.data());
    LsbError error;
    for (int i = 0; i < 65536; ++i)
      error.add(out[i], std::clamp(s_c * (ctx[i] - z_c) * gate[i] / 256.0 / s_o + z_o, 0.0, 255.0));
    INFO(error.summary("gate multiply"));
    qt::test::report(error, std::string("gate multiply, ") + std::string(requant_name(mode)));
    CHECK(error.max_error <= (mode == Requant::double_rounding ? 1.0 : 0.5 + 1e-6));
    CHECK(error.mean_error() <= 0.26);
  }
  const uint8_t ctx2[] = {10, 20, 30, 40, 50, 60, 70, 80, 90, 100, 110, 120};
  const uint8_t gate2[] = {0, 255, 64, 128};  // [token][head]
  uint8_t out2[12];
  const Requantizer unit = make_gate_multiply(1.0, 0, 1.0 / 256, 0, Requant::single_half_even);
  integer_gate_multiply(ctx2, gate2, 2, 2, 3, 0, unit, out2);  // y = c * g, clamped at 255
  const uint8_t expected[] = {0, 0, 0, 255, 255, 255, 255, 255, 255, 255, 255, 255};
  for (int i = 0; i < 12; ++i) CHECK(out2[i] == expected[i]);
  const Requantizer quarter = make_gate_multiply(1.0, 0, 1.0, 0, Requant::single_half_even);
  integer_gate_multiply(ctx2, gate2, 2, 2, 3, 0, quarter, out2);  // y = c g / 256
  const uint8_t expected_q[] = {0, 0, 0, 40, 50, 60, 18, 20, 22, 50, 55, 60};
  for (int i = 0; i < 12; ++i) CHECK(out2[i] == expected_q[i]);
  CHECK_THROWS_WITH_AS(integer_gate_multiply(c, g, 1, 0, 1, 100, r, y),
                       doctest::Contains("heads 0"), qt::Error);
}
