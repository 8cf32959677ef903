// The example integer graph (see the header).
#include "quant/example_graph.h"

#include <fmt/format.h>

#include <random>
#include <vector>

#include "quant/integer_add.h"
#include "quant/integer_gelu.h"
#include "quant/integer_layer_norm.h"
#include "quant/integer_linear.h"
#include "tensor/error.h"

namespace qt::quant {
namespace {

nlohmann::json multiplier_json(const Requantizer& r) {
  return {{"multiplier", r.multiplier.multiplier},
          {"shift", r.multiplier.shift},
          {"zero_point", r.zero_point},
          {"qmin", r.qmin},
          {"qmax", r.qmax}};
}

// The Requant mode number of a manifest rounding name (kDumpRoundings lists them in enum order).
int rounding_mode(const std::string& name) {
  for (int i = 0; i < 4; ++i) {
    if (kDumpRoundings[i] == name) return i;  // the order of enum Requant and qt_requant
  }
  fail("example_graph_params_header: \"{}\" is not a requantization mode", name);
}

std::string requantizer_c(const nlohmann::json& r, const std::string& rounding) {
  return fmt::format("{{{{{}, {}}}, {}, {}, {}, (qt_requant){}}}", r["multiplier"].get<int64_t>(),
                     r["shift"].get<int>(), r["zero_point"].get<int64_t>(),
                     r["qmin"].get<int64_t>(), r["qmax"].get<int64_t>(), rounding_mode(rounding));
}

}  // namespace

TensorDump example_graph(unsigned seed, int64_t bump_h) {
  constexpr int64_t T = kExampleGraphRows, C = kExampleGraphChannels;
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

std::string example_graph_params_header(const TensorDump& dump) {
  std::string h =
      "/* Generated by qtlab from the example graph's manifest (quant/example_graph.cpp). */\n";
  h += "#ifndef QTLAB_GRAPH_PARAMS_H\n#define QTLAB_GRAPH_PARAMS_H\n#include \"qtlab_int8.h\"\n";
  const Shape& x = dump.tensor("x").shape;
  h += fmt::format("#define QT_GRAPH_ROWS {}\n#define QT_GRAPH_CHANNELS {}\n", x[0], x[1]);
  h += "typedef struct {\n  const char* name;\n  double scale;\n  long long zero_point;\n} "
       "qt_graph_grid;\nstatic const qt_graph_grid qt_graph_grids[] = {\n";
  for (const DumpTensor& t : dump.tensors)
    h += fmt::format("    {{\"{}\", {:.17g}, {}}},\n", t.name, t.scale, t.zero_point);
  h += "};\n";
  for (const DumpOp& op : dump.ops) {
    const nlohmann::json& a = op.attributes;
    std::string id = op.name;
    if (op.kind == "linear") {
      h += fmt::format("static const int32_t qt_{}_input_zero_point = {};\n", id,
                       a["input_zero_point"].get<int64_t>());
      h += fmt::format("static const qt_requantizer qt_{}_output = {};\n", id,
                       requantizer_c(a["output"], op.rounding));
    } else if (op.kind == "add") {
      QT_CHECK(a["left_shift"] == 20, "example_graph_params_header: qtlab_int8.c shifts by 2^20");
      h += fmt::format(
          "static const qt_rescale_sum qt_{} = {{2, {{{{{}, {}}}, {{{}, {}}}, {{0, 0}}, {{0, "
          "0}}}}, "
          "{{{}, {}, 0, 0}}, {}}};\n",
          id, a["input_multipliers"][0].get<int64_t>(), a["input_shifts"][0].get<int>(),
          a["input_multipliers"][1].get<int64_t>(), a["input_shifts"][1].get<int>(),
          a["input_zero_points"][0].get<int64_t>(), a["input_zero_points"][1].get<int64_t>(),
          requantizer_c(a["output"], op.rounding));
    } else if (op.kind == "layer_norm") {
      h += fmt::format("static const int64_t qt_{}_eps_term = {};\n", id,
                       a["eps_term"].get<int64_t>());
      h += fmt::format("static const qt_requantizer qt_{}_output = {};\n", id,
                       requantizer_c(a["output"], op.rounding));
    }
    if (op.rounding != "none")
      h += fmt::format("static const char qt_{}_rounding[] = \"{}\";\n", id, op.rounding);
  }
  return h + "#endif\n";
}

}  // namespace qt::quant
