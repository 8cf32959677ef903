// A small reference graph built from the real integer ops and recorded as a tensor dump
// (quant/tensor_dump.h), shared by the dump, checker and C99 export tests:
//
//   x [6, 16] u8 --linear (fc.weight s8, fc.bias s32; double rounding)--> h u8
//   h --gelu_table (gelu.table u8 [256]; exact lookup)--> g u8
//   (x, g) --add (single half even, into s16)--> r s16   (the wider pre-LayerNorm residual)
//   r --layer_norm (ln.gamma s8, ln.beta s32; single half even)--> y u8
//
// Every dtype of the format appears (u8, s8, s16, s32). The ops' integer parameters (multipliers,
// shifts, zero points, the LayerNorm eps term) are recorded as attributes, the form an exporter
// reads them in.
#pragma once

#include <cstdint>
#include <random>
#include <string>
#include <vector>

#include "quant/integer_add.h"
#include "quant/integer_gelu.h"
#include "quant/integer_layer_norm.h"
#include "quant/integer_linear.h"
#include "quant/tensor_dump.h"

namespace qt::test {

inline constexpr int64_t kGraphRows = 6, kGraphChannels = 16;

inline nlohmann::json multiplier_json(const quant::Requantizer& r) {
  return {{"multiplier", r.multiplier.multiplier},
          {"shift", r.multiplier.shift},
          {"zero_point", r.zero_point},
          {"qmin", r.qmin},
          {"qmax", r.qmax}};
}

// The graph on seeded inputs; `seed` changes x only (the parameters are fixed). bump_h >= 0 moves
// h at that flat index by one LSB (up, or down from 255) before the downstream ops run on it: a
// candidate whose linear layer is off by one code in one place.
inline quant::TensorDump integer_reference_graph(unsigned seed, int64_t bump_h = -1) {
  using namespace qt::quant;
  constexpr int64_t T = kGraphRows, C = kGraphChannels;
  std::mt19937 rng(seed);
  std::uniform_int_distribution<int> u8(0, 255);
  std::vector<uint8_t> x(T * C);
  for (auto& v : x) v = static_cast<uint8_t>(u8(rng));

  std::mt19937 prng(1234);
  std::uniform_int_distribution<int> s8(-127, 127), gamma_codes(60, 127);
  std::uniform_int_distribution<int32_t> bias_codes(-3000, 3000);
  std::uniform_real_distribution<double> beta_real(-0.5, 0.5);
  std::vector<int8_t> w(C * C), gamma(C);
  std::vector<int32_t> bias(C);
  std::vector<double> beta(C);
  for (auto& v : w) v = static_cast<int8_t>(s8(prng));
  for (auto& v : bias) v = bias_codes(prng);
  for (auto& v : gamma) v = static_cast<int8_t>(gamma_codes(prng));
  for (auto& v : beta) v = beta_real(prng);

  const double S_x = 0.02, S_w = 0.01, S_h = 0.06, S_g = 0.05, S_r = 0.01, S_gamma = 1.5 / 127,
               S_y = 6.0 / 255;
  const int32_t Z_x = 128, Z_h = 100, Z_g = 20, Z_y = 128;
  const IntegerLinear fc = make_integer_linear(w.data(), C, C, bias.data(), S_x, Z_x, {S_w}, S_h,
                                               Z_h, Requant::double_rounding);
  const IntegerLut gelu = make_integer_gelu_u8(S_h, Z_h, S_g, Z_g);
  const IntegerRescaleSum add = make_integer_add({S_x, Z_x}, {S_g, Z_g}, S_r, 0, INT16_MIN,
                                                 INT16_MAX, Requant::single_half_even);
  const IntegerLayerNorm ln = make_integer_layer_norm(C, gamma.data(), S_gamma, beta.data(), S_r,
                                                      1e-5, S_y, Z_y, Requant::single_half_even);

  std::vector<uint8_t> h(T * C), g(T * C), y(T * C);
  std::vector<int16_t> r(T * C);
  integer_linear(fc, x.data(), T, h.data());
  if (bump_h >= 0) h[bump_h] = h[bump_h] == 255 ? 254 : h[bump_h] + 1;
  apply_lut(gelu, h.data(), T * C, g.data());
  integer_add(add, x.data(), g.data(), T * C, r.data());
  integer_layer_norm(ln, r.data(), T, y.data());

  TensorDump dump;
  dump.add_tensor("x", DumpDType::u8, {T, C}, S_x, Z_x, x.data());
  dump.add_tensor("fc.weight", DumpDType::s8, {C, C}, S_w, 0, w.data());
  dump.add_tensor("fc.bias", DumpDType::s32, {C}, S_x * S_w, 0, bias.data());
  dump.add_tensor("gelu.table", DumpDType::u8, {256}, S_g, Z_g, gelu.table.data());
  dump.add_tensor("ln.gamma", DumpDType::s8, {C}, S_gamma, 0, gamma.data());
  dump.add_tensor("ln.beta", DumpDType::s32, {C}, S_gamma / (1 << kLayerNormFractionBits), 0,
                  ln.beta.data());
  dump.add_tensor("h", DumpDType::u8, {T, C}, S_h, Z_h, h.data());
  dump.add_tensor("g", DumpDType::u8, {T, C}, S_g, Z_g, g.data());
  dump.add_tensor("r", DumpDType::s16, {T, C}, S_r, 0, r.data());
  dump.add_tensor("y", DumpDType::u8, {T, C}, S_y, Z_y, y.data());

  dump.add_op("fc", "linear", "double_rounding", {"x", "fc.weight", "fc.bias"}, {"h"})
      .attributes = {{"input_zero_point", Z_x}, {"output", multiplier_json(fc.output[0])}};
  dump.add_op("gelu", "gelu_table", "none", {"h", "gelu.table"}, {"g"});
  dump.add_op("residual", "add", "single_half_even", {"x", "g"}, {"r"}).attributes = {
      {"left_shift", kAddLeftShift},
      {"input_zero_points", {add.zero_point[0], add.zero_point[1]}},
      {"input_multipliers", {add.input[0].multiplier, add.input[1].multiplier}},
      {"input_shifts", {add.input[0].shift, add.input[1].shift}},
      {"output", multiplier_json(add.output)}};
  dump.add_op("ln", "layer_norm", "single_half_even", {"r", "ln.gamma", "ln.beta"}, {"y"})
      .attributes = {{"eps_term", ln.eps_term},
                     {"fraction_bits", kLayerNormFractionBits},
                     {"output", multiplier_json(ln.output)}};
  return dump;
}

}  // namespace qt::test
