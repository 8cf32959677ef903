// The C99 op library (quant/export/qtlab_int8.c) against the C++ integer ops, bit for bit: it is
// compiled with the export's flags (cc -std=c99 -O2 -Wall -Wextra -Werror -pedantic, no warning
// allowed) together with tests/c/qtlab_int8_driver.c, fed seeded random cases and the edge cases
// of the C++ tests (ties, saturation, extreme shifts, the largest K, V = 2^54), and every output
// must equal the C++ op's. The C++ fast paths (VNNI GEMM, offset trick) are what the C plain loops
// must match.
#include <doctest/doctest.h>

#include <algorithm>
#include <climits>
#include <cmath>
#include <cstdint>
#include <random>
#include <vector>

#include <fmt/format.h>

#include "quant/integer_add.h"
#include "quant/integer_embedding.h"
#include "quant/integer_gelu.h"
#include "quant/integer_layer_norm.h"
#include "quant/integer_linear.h"
#include "quant/integer_sigmoid.h"
#include "quant/integer_softmax.h"
#include "quant/integer_sqrt.h"
#include "tests/c_export_support.h"
#include "tests/test_util.h"

using namespace qt::quant;
using qt::test::DriverCases;

namespace {

const std::string& driver() {
  static const std::string binary = qt::test::compiled_c_program(
      "qtlab_int8_driver", {"quant/export/qtlab_int8.c", "tests/c/qtlab_int8_driver.c"});
  return binary;
}

constexpr Requant kModes[] = {Requant::double_rounding, Requant::single_half_up,
                              Requant::single_half_away, Requant::single_half_even};

void put_requantizer(DriverCases& c, const Requantizer& r) {
  c.put(r.multiplier.multiplier);
  c.put(r.multiplier.shift);
  c.put(r.zero_point);
  c.put(r.qmin);
  c.put(r.qmax);
  c.put(static_cast<int>(r.mode));
}

template <typename T>
std::vector<T> random_codes(std::mt19937& rng, size_t n, int64_t lo, int64_t hi) {
  std::uniform_int_distribution<int64_t> u(lo, hi);
  std::vector<T> v(n);
  for (auto& x : v) x = static_cast<T>(u(rng));
  return v;
}

double log_uniform(std::mt19937& rng, double lo, double hi) {
  return std::exp(std::uniform_real_distribution<double>(std::log(lo), std::log(hi))(rng));
}

// A random int64 with a random magnitude (so every exponent range is exercised).
int64_t random_magnitude(std::mt19937& rng, int max_bits) {
  const int bits = std::uniform_int_distribution<int>(0, max_bits)(rng);
  const int64_t v =
      bits == 0 ? 0 : static_cast<int64_t>(rng() | (uint64_t{rng()} << 32)) >> (64 - bits);
  return v;
}

}  // namespace

TEST_CASE("test_c_export: requantization primitives are bit-identical to C++") {
  std::mt19937 rng(101);
  DriverCases c;
  // rounding_shift_right: random values and exponents, and exact ties (2k + 1) 2^(e - 1).
  for (int i = 0; i < 60000; ++i) {
    const int e = std::uniform_int_distribution<int>(0, 62)(rng);
    int64_t x = random_magnitude(rng, 62);
    if (i % 3 == 0 && e > 0) {
      const int64_t k = random_magnitude(rng, std::max(0, 61 - e));
      x = (2 * k + 1) * (int64_t{1} << (e - 1));
    }
    for (Rounding r : {Rounding::half_up, Rounding::half_away_from_zero, Rounding::half_to_even}) {
      c.begin("rsr", std::to_string(x) + " >> " + std::to_string(e));
      c.put(x), c.put(e), c.put(static_cast<int>(r));
      c.expect(rounding_shift_right(x, e, r));
    }
  }
  // RDBPOT and SRDHM, random and at the int32 ends and exponents 0 and 31.
  const std::vector<int32_t> ends = {INT32_MIN,     INT32_MIN + 1, -1,      0,         1,
                                     INT32_MAX - 1, INT32_MAX,     1 << 30, -(1 << 30)};
  for (int i = 0; i < 40000; ++i) {
    const auto x = i < 9 * 32 ? ends[i / 32] : static_cast<int32_t>(random_magnitude(rng, 31));
    const int e = i < 9 * 32 ? i % 32 : std::uniform_int_distribution<int>(0, 31)(rng);
    c.begin("rdbpot", std::to_string(x));
    c.put(x), c.put(e);
    c.expect(rounding_divide_by_pot(x, e));
    const auto b = i < 81 ? ends[i % 9] : static_cast<int32_t>(random_magnitude(rng, 31));
    const auto a = i < 81 ? ends[i / 9] : x;
    c.begin("srdhm", std::to_string(a) + " * " + std::to_string(b));
    c.put(a), c.put(b);
    c.expect(saturating_rounding_doubling_high_mul(a, b));
  }
  // Full requantizers: every mode, every output grid, shifts -31..30, the two hand cases.
  const std::vector<std::pair<int32_t, int32_t>> grids = {
      {0, 255}, {-128, 127}, {-32768, 32767}, {INT32_MIN, INT32_MAX}};
  std::vector<std::pair<int32_t, QuantizedMultiplier>> hand = {
      {1, {1 << 30, -1}}, {7984, {1583594044, -9}}, {-7984, {1583594044, -9}}, {5, {0, 0}}};
  for (int i = 0; i < 60000; ++i) {
    Requantizer r;
    r.mode = kModes[i % 4];
    const auto grid = grids[(i / 4) % 4];
    r.qmin = grid.first, r.qmax = grid.second;
    r.zero_point = static_cast<int32_t>(std::uniform_int_distribution<int64_t>(
        std::max<int64_t>(grid.first, -300), std::min<int64_t>(grid.second, 300))(rng));
    int32_t x;
    if (i < static_cast<int>(hand.size()) * 4) {
      x = hand[i / 4].first;
      r.multiplier = hand[i / 4].second;
      r.zero_point = 0;
    } else {
      r.multiplier.multiplier = static_cast<int32_t>(
          std::uniform_int_distribution<int64_t>(int64_t{1} << 30, (int64_t{1} << 31) - 1)(rng));
      r.multiplier.shift = std::uniform_int_distribution<int>(-31, 30)(rng);
      x = static_cast<int32_t>(random_magnitude(rng, 31));
      // Double rounding requires x 2^left to fit int32 (the C++ throws otherwise).
      if (r.mode == Requant::double_rounding && r.multiplier.shift > 0)
        x = static_cast<int32_t>(x / (int64_t{1} << r.multiplier.shift));
    }
    c.begin("requant", std::to_string(x));
    c.put(x);
    put_requantizer(c, r);
    c.expect(r(x));
  }
  c.run_and_compare(driver(), "requantize");
  QTLAB_NOTE("requantization: " << c.cases() << " cases, C == C++");
  CHECK(c.cases() > 200000);
}

TEST_CASE("test_c_export: linear, fused ReLU, accumulators and u8 x u8 matmul") {
  std::mt19937 rng(202);
  DriverCases c;
  auto linear_case = [&](int64_t rows, int64_t in, int64_t out, int64_t stride, int kind,
                         const std::vector<int8_t>& w, const std::vector<int32_t>* bias,
                         const std::vector<uint8_t>& x, int32_t za, bool per_channel,
                         Requant mode) {
    std::vector<double> scales(per_channel ? out : 1);
    for (auto& s : scales) s = log_uniform(rng, 0.002, 0.05);
    const double s_a = log_uniform(rng, 0.005, 0.1);
    const double s_o = s_a * scales[0] * std::sqrt(static_cast<double>(in)) * 60;
    const IntegerLinear layer =
        make_integer_linear(w.data(), out, in, bias ? bias->data() : nullptr, s_a, za, scales, s_o,
                            std::uniform_int_distribution<int32_t>(0, 255)(rng), mode);
    c.begin("linear", fmt::format("[{}, {}] -> {} kind {}", rows, in, out, kind));
    c.put(kind), c.put(rows), c.put(in), c.put(out), c.put(stride), c.put(za);
    c.put(layer.output.size()), c.put(bias != nullptr);
    for (const Requantizer& r : layer.output) put_requantizer(c, r);
    c.put_all(bias ? *bias : std::vector<int32_t>(out, 0));
    c.put_all(w);
    c.put_all(x);
    if (kind == 2) {
      std::vector<int32_t> acc(rows * out);
      integer_linear_accumulators(layer, x.data(), rows, acc.data(), stride);
      c.expect_all(acc);
    } else {
      std::vector<uint8_t> y(rows * out);
      if (kind == 1)
        integer_linear_relu(layer, x.data(), rows, y.data(), stride);
      else
        integer_linear(layer, x.data(), rows, y.data(), stride);
      c.expect_all(y);
    }
  };
  for (int i = 0; i < 3000; ++i) {
    const int64_t rows = std::uniform_int_distribution<int64_t>(1, 6)(rng);
    const int64_t in = std::uniform_int_distribution<int64_t>(1, 80)(rng);
    const int64_t out = std::uniform_int_distribution<int64_t>(1, 20)(rng);
    const int64_t stride = i % 5 == 0 ? in + 7 : 0;
    const auto w = random_codes<int8_t>(rng, out * in, -128, 127);
    const auto bias = random_codes<int32_t>(rng, out, -100000, 100000);
    const auto x = random_codes<uint8_t>(rng, rows * (stride ? stride : in), 0, 255);
    const int32_t za = i % 7 == 0 ? 0 : i % 7 == 1 ? 255 : static_cast<int32_t>(rng() % 256);
    linear_case(rows, in, out, stride, i % 3, w, i % 4 ? &bias : nullptr, x, za, i % 2 == 0,
                kModes[i % 4]);
  }
  // The largest K the int8 GEMM allows, at both accumulator extremes (-2147450880 and mirrored).
  const int64_t K = 65792;
  linear_case(1, K, 1, 0, 2, std::vector<int8_t>(K, -128), nullptr, std::vector<uint8_t>(K, 255), 0,
              false, Requant::double_rounding);
  linear_case(1, K, 1, 0, 2, std::vector<int8_t>(K, -128), nullptr, std::vector<uint8_t>(K, 0), 255,
              false, Requant::single_half_even);
  // u8 x u8 matmul in both B layouts, zero points at the ends and in between.
  auto matmul_case = [&](int64_t batch, int64_t M, int64_t N, int64_t k, BLayout layout, int32_t za,
                         int32_t zb, const std::vector<uint8_t>& a, const std::vector<uint8_t>& b) {
    c.begin("matmul", std::to_string(M) + "x" + std::to_string(N) + "x" + std::to_string(k));
    c.put(batch), c.put(M), c.put(N), c.put(k), c.put(static_cast<int>(layout)), c.put(za),
        c.put(zb);
    c.put_all(a);
    c.put_all(b);
    const int64_t ldb = layout == BLayout::nk ? k : N;
    std::vector<int32_t> out(batch * M * N);
    integer_matmul_u8u8(batch, M, N, k, {a.data(), k, M * k, za}, {b.data(), ldb, N * k, zb},
                        layout, out.data());
    c.expect_all(out);
  };
  const int32_t zps[] = {0, 77, 128, 255};
  for (int i = 0; i < 2000; ++i) {
    const int64_t batch = 1 + i % 3, M = 1 + rng() % 9, N = 1 + rng() % 9, k = 1 + rng() % 70;
    matmul_case(batch, M, N, k, i % 2 ? BLayout::kn : BLayout::nk, zps[i % 4], zps[(i / 4) % 4],
                random_codes<uint8_t>(rng, batch * M * k, 0, 255),
                random_codes<uint8_t>(rng, batch * N * k, 0, 255));
  }
  matmul_case(1, 1, 1, 33025, BLayout::nk, 0, 255, std::vector<uint8_t>(33025, 255),
              std::vector<uint8_t>(33025, 0));  // -255^2 K = -2147450625
  c.run_and_compare(driver(), "linear");
  QTLAB_NOTE("linear and matmul: " << c.cases() << " cases, " << c.values() << " codes, C == C++");
}

TEST_CASE("test_c_export: exp, softmax and clipped softmax") {
  std::mt19937 rng(303);
  DriverCases c;
  for (int i = 0; i < 50000; ++i) {
    int64_t m = std::uniform_int_distribution<int64_t>(0, (int64_t{1} << 31) + 1000)(rng);
    if (i <= 31) m = int64_t{1} << i;  // every constant alone, and 2^31 (-> 0)
    if (i % 5 == 0 && i > 31) m = std::uniform_int_distribution<int64_t>(0, 1 << 26)(rng);
    c.begin("exp", std::to_string(m));
    c.put(m);
    c.expect(integer_exp_q31(m));
  }
  const std::vector<std::pair<double, double>> clips = {{0, 1},      {-0.025, 1}, {-12.0 / 512, 1},
                                                        {-0.1, 1.1}, {0, 1.25},   {-8, 0}};
  for (int i = 0; i < 2000; ++i) {
    const bool s32 = i % 2 == 1;
    const int64_t rows = 1 + rng() % 4, n = 1 + rng() % 64;
    auto [gamma, zeta] = clips[i % (clips.size() - 1)];
    if (i % 97 == 0) gamma = -4, zeta = 4;  // zeta - gamma = 8, the bound
    const double s_in = log_uniform(rng, 0.005, s32 ? 0.05 : 2.0);
    const IntegerSoftmax s = make_integer_softmax(s_in, gamma, zeta);
    const auto x = s32 ? random_codes<int32_t>(rng, rows * n, -100000, 100000)
                       : random_codes<int32_t>(rng, rows * n, 0, 255);
    const int mask_kind = i % 4;  // none, shared, per row, per row with a fully masked row
    const int64_t keep_stride = mask_kind >= 2 ? n : 0;
    std::vector<uint8_t> keep =
        mask_kind == 0 ? std::vector<uint8_t>{}
                       : random_codes<uint8_t>(rng, mask_kind >= 2 ? rows * n : n, 0, 1);
    if (mask_kind == 3) std::fill(keep.begin(), keep.begin() + n, 0);
    c.begin("softmax", "row of " + std::to_string(n));
    c.put(s32), c.put(rows), c.put(n);
    c.put(s.exponent.multiplier), c.put(s.exponent.shift), c.put(s.stretch), c.put(s.offset);
    c.put(keep_stride), c.put(mask_kind != 0);
    c.put_all(keep);
    c.put_all(x);
    std::vector<uint8_t> out(rows * n);
    const uint8_t* k = mask_kind == 0 ? nullptr : keep.data();
    if (s32) {
      integer_softmax(s, x.data(), rows, n, k, keep_stride, out.data());
    } else {
      std::vector<uint8_t> x8(x.begin(), x.end());
      integer_softmax(s, x8.data(), rows, n, k, keep_stride, out.data());
    }
    c.expect_all(out);
  }
  c.run_and_compare(driver(), "softmax");
  QTLAB_NOTE("exp and softmax: " << c.cases() << " cases, " << c.values() << " codes, C == C++");
}

TEST_CASE("test_c_export: tables (GELU, sigmoid), ReLU and the gate multiply") {
  std::mt19937 rng(404);
  DriverCases c;
  for (int i = 0; i < 400; ++i) {
    const double s_in = log_uniform(rng, 0.005, 0.2);
    const int32_t z_in = static_cast<int32_t>(rng() % 256);
    const IntegerLut lut = i % 2 ? make_integer_sigmoid_u8(s_in, z_in)
                                 : make_integer_gelu_u8(s_in, z_in, log_uniform(rng, 0.005, 0.1),
                                                        static_cast<int32_t>(rng() % 64));
    std::vector<uint8_t> x(256);
    for (int q = 0; q < 256; ++q) x[q] = static_cast<uint8_t>(q);  // every input
    c.begin("lut8", i % 2 ? "sigmoid" : "gelu");
    c.put(lut.input_min), c.put(lut.table.size());
    c.put_all(lut.table);
    c.put(x.size());
    c.put_all(x);
    std::vector<uint8_t> y(256);
    apply_lut(lut, x.data(), 256, y.data());
    c.expect_all(y);
  }
  for (int i = 0; i < 16; ++i) {  // the fused int16 forms, per tensor and per channel
    const int64_t rows = 64, channels = 32;
    std::vector<double> scales(i % 2 ? channels : 1);
    for (auto& s : scales) s = log_uniform(rng, 1e-5, 1e-3);
    const Requant mode = kModes[i % 4];
    const IntegerLutActivation act = i % 4 < 2 ? make_integer_gelu(scales, 8.0, 6.2 / 255, 10, mode)
                                               : make_integer_sigmoid(scales, 10.0, mode);
    auto acc = random_codes<int32_t>(rng, rows * channels, -40000, 40000);
    // Saturate at the int16 ends with the largest accumulators allowed: all of int32, or, for
    // double rounding with a multiplier >= 1, those with x 2^shift inside int32.
    for (int j = 0; j < 2; ++j) {
      const int shift = act.to_input[act.to_input.size() == 1 ? 0 : j].multiplier.shift;
      const int32_t limit =
          mode == Requant::double_rounding && shift > 0 ? INT32_MAX >> shift : INT32_MAX;
      acc[j] = j == 0 ? -limit - (limit == INT32_MAX) : limit;
    }
    c.begin("lutact", "fused table " + std::to_string(i));
    c.put(rows), c.put(channels), c.put(act.to_input.size());
    for (const Requantizer& r : act.to_input) put_requantizer(c, r);
    c.put_all(act.lut.table);
    c.put_all(acc);
    std::vector<uint8_t> y(rows * channels);
    apply_lut_activation(act, acc.data(), rows, channels, y.data());
    c.expect_all(y);
  }
  for (int i = 0; i < 300; ++i) {
    const auto x = random_codes<uint8_t>(rng, 64, 0, 255);
    const int32_t z = static_cast<int32_t>(rng() % 256);
    c.begin("relu", std::to_string(z));
    c.put(x.size()), c.put(z);
    c.put_all(x);
    std::vector<uint8_t> y(64);
    integer_relu(x.data(), 64, z, y.data());
    c.expect_all(y);
  }
  // The gate multiply over all 65,536 (c, g) pairs: context[t, h] = t, gate[t, h] = h.
  for (int i = 0; i < 8; ++i) {
    const int32_t zc = static_cast<int32_t>(rng() % 256);
    const Requantizer r =
        make_gate_multiply(log_uniform(rng, 0.01, 0.1), zc, log_uniform(rng, 0.005, 0.05),
                           static_cast<int32_t>(rng() % 256), kModes[i % 4]);
    std::vector<uint8_t> context(65536), gate(65536);
    for (int t = 0; t < 256; ++t)
      for (int h = 0; h < 256; ++h) context[t * 256 + h] = t, gate[t * 256 + h] = h;
    c.begin("gate", "all pairs " + std::to_string(i));
    c.put(256), c.put(256), c.put(1), c.put(zc);
    put_requantizer(c, r);
    c.put_all(context);
    c.put_all(gate);
    std::vector<uint8_t> y(65536);
    integer_gate_multiply(context.data(), gate.data(), 256, 256, 1, zc, r, y.data());
    c.expect_all(y);
  }
  c.run_and_compare(driver(), "tables");
  QTLAB_NOTE("tables, ReLU, gate: " << c.cases() << " cases, " << c.values() << " codes, C == C++");
}

TEST_CASE("test_c_export: integer sqrt and LayerNorm, including V = 2^54 and eps = 0") {
  std::mt19937_64 rng64(505);
  std::mt19937 rng(505);
  DriverCases c;
  for (int i = 0; i < 30000; ++i) {
    uint64_t n = rng64() >> (rng64() % 64);
    if (i % 3 == 1) {
      const uint64_t k = rng64() >> 32;
      n = k * k - (i % 2);  // k^2 - 1 and k^2
    }
    if (i == 0) n = UINT64_MAX;
    c.begin("isqrt", std::to_string(n));
    c.put_u64(n);
    c.expect(integer_sqrt(n));
  }
  auto ln_case = [&](int type, int64_t rows, int64_t C, const std::vector<int32_t>& x, double s_in,
                     double eps, Requant mode) {
    const auto gamma = random_codes<int8_t>(rng, C, 60, 127);
    std::vector<double> beta(C);
    for (auto& b : beta) b = std::uniform_real_distribution<double>(-0.5, 0.5)(rng);
    const IntegerLayerNorm ln = make_integer_layer_norm(C, gamma.data(), 1.5 / 127, beta.data(),
                                                        s_in, eps, 12.0 / 255, 128, mode);
    c.begin("ln", "C = " + std::to_string(C) + " type " + std::to_string(type));
    c.put(type), c.put(rows), c.put(C);
    put_requantizer(c, ln.output);
    c.put(ln.eps_term);
    c.put_all(gamma);
    c.put_all(ln.beta);
    c.put_all(x);
    std::vector<uint8_t> y(rows * C);
    if (type == 0) {
      std::vector<uint8_t> x8(x.begin(), x.end());
      integer_layer_norm(ln, x8.data(), rows, y.data());
    } else if (type == 1) {
      std::vector<int16_t> x16(x.begin(), x.end());
      integer_layer_norm(ln, x16.data(), rows, y.data());
    } else {
      integer_layer_norm(ln, x.data(), rows, y.data());
    }
    c.expect_all(y);
  };
  const int64_t widths[] = {1, 2, 3, 16, 64, 768};
  for (int i = 0; i < 2400; ++i) {
    const int type = i % 3;
    const int64_t C = widths[i % 6 == 5 && i % 4 ? 4 : i % 6], rows = 1 + rng() % 3;
    const int64_t lo = type == 0 ? 0 : -32768, hi = type == 0 ? 255 : type == 1 ? 32767 : 32768;
    auto x = random_codes<int32_t>(rng, rows * C, lo, hi);
    if (i % 5 == 0) x[0] = static_cast<int32_t>(hi);  // an outlier channel
    if (i % 11 == 0) std::fill(x.begin(), x.begin() + C, static_cast<int32_t>(lo));  // constant
    const double s_in = type == 0 ? 0.05 : 1e-3;
    const double eps = i % 11 == 0 && i % 2 ? 0.0 : 1e-5;
    ln_case(type, rows, C, x, s_in, eps, kModes[i % 4]);
  }
  // The extremes of the C++ tests at C = 4096: alternating +-2^15 (V = 2^54 exactly) and a single
  // outlier row (|z| close to 2^21).
  std::vector<int32_t> alternating(4096), outlier(4096, 0);
  for (int i = 0; i < 4096; ++i) alternating[i] = i % 2 ? 32768 : -32768;
  outlier[17] = 32768;
  ln_case(2, 1, 4096, alternating, 1e-3, 1e-5, Requant::double_rounding);
  ln_case(2, 1, 4096, outlier, 1e-3, 0.0, Requant::single_half_away);
  // Exact ties in z = round(|y| 2^(15 + s) / D). With C = 2 and codes (a, b), y = +-d for d = a - b
  // and V = d^2; the eps term E = 2^32 - d^2 makes W = 2^32, so s = 14, D = 2^30 and
  // z = |d| 2^29 / 2^30 = |d| / 2: a tie for every odd d, rounded away from zero. With gamma = 1,
  // beta = 0 and M = 1 the output is 128 +- z, so the tie rule shows in the codes.
  for (int32_t d = -255; d <= 255; d += 2) {
    const int8_t gamma[2] = {1, 1};
    IntegerLayerNorm ln;
    ln.channels = 2;
    ln.gamma.assign(gamma, gamma + 2);
    ln.beta = {0, 0};
    ln.eps_term = (int64_t{1} << 32) - int64_t{d} * d;
    ln.output = make_requantizer(1.0, 128, 0, 255, kModes[(d + 255) / 2 % 4]);
    const int32_t x[2] = {std::max(d, 0), std::max(-d, 0)};
    uint8_t y[2];
    integer_layer_norm(ln, x, 1, y);
    const int32_t z = (std::abs(d) + 1) / 2;  // the tie rounded away from zero
    CHECK(y[0] == std::clamp(128 + (d > 0 ? z : -z), 0, 255));
    CHECK(y[1] == std::clamp(128 - (d > 0 ? z : -z), 0, 255));
    c.begin("ln", "z tie, d = " + std::to_string(d));
    c.put(2), c.put(1), c.put(2);
    put_requantizer(c, ln.output);
    c.put(ln.eps_term);
    c.put(1), c.put(1), c.put(0), c.put(0), c.put(x[0]), c.put(x[1]);
    c.expect(y[0]), c.expect(y[1]);
  }
  c.run_and_compare(driver(), "layer_norm");
  QTLAB_NOTE("sqrt and LayerNorm: " << c.cases() << " cases, " << c.values() << " codes, C == C++");
}

TEST_CASE("test_c_export: residual add (u8 and s16) and embedding sums") {
  std::mt19937 rng(606);
  DriverCases c;
  auto put_sum = [&](const IntegerRescaleSum& s) {
    for (int i = 0; i < s.terms; ++i) {
      c.put(s.input[i].multiplier), c.put(s.input[i].shift), c.put(s.zero_point[i]);
    }
    put_requantizer(c, s.output);
  };
  std::vector<uint8_t> all_a(65536), all_b(65536);
  for (int i = 0; i < 65536; ++i) all_a[i] = i / 256, all_b[i] = i % 256;
  for (int i = 0; i < 1600; ++i) {
    const bool s16 = i % 2 == 1;
    const Requant mode = kModes[(i / 2) % 4];
    QuantizedTerm a{log_uniform(rng, 0.005, 0.2), static_cast<int32_t>(rng() % 256)};
    QuantizedTerm b{log_uniform(rng, 0.005, 0.2), static_cast<int32_t>(rng() % 256)};
    if (i < 8) a = {1, 0}, b = {1, 0};  // S_o = 2: 16,384 exact ties on the exhaustive grid
    const double s_o = i < 8 ? 2.0
                       : s16 ? std::min(a.scale, b.scale) / 4
                             : log_uniform(rng, 0.01, 0.3);
    const int32_t z_o = s16 ? 0 : static_cast<int32_t>(rng() % 256);
    const IntegerRescaleSum add =
        make_integer_add(a, b, s_o, z_o, s16 ? INT16_MIN : 0, s16 ? INT16_MAX : 255, mode);
    const bool exhaustive = i < 16;
    const auto va = exhaustive ? all_a : random_codes<uint8_t>(rng, 256, 0, 255);
    const auto vb = exhaustive ? all_b : random_codes<uint8_t>(rng, 256, 0, 255);
    c.begin("add", std::string(s16 ? "s16" : "u8") + (exhaustive ? " all pairs" : ""));
    c.put(s16), c.put(va.size());
    put_sum(add);
    c.put_all(va);
    c.put_all(vb);
    if (s16) {
      std::vector<int16_t> y(va.size());
      integer_add(add, va.data(), vb.data(), va.size(), y.data());
      c.expect_all(y);
    } else {
      std::vector<uint8_t> y(va.size());
      integer_add(add, va.data(), vb.data(), va.size(), y.data());
      c.expect_all(y);
    }
  }
  for (int i = 0; i < 1000; ++i) {  // word (+ type) tables, then + a dense position input
    const int terms = 1 + i % 3, tokens = 1 + rng() % 12, dim = 1 + rng() % 24;
    std::vector<QuantizedTerm> q;
    std::vector<std::vector<int8_t>> tables(terms);
    std::vector<std::vector<int64_t>> ids(terms);
    std::vector<std::vector<uint8_t>> dense(terms);
    std::vector<EmbeddingTerm> e(terms);
    for (int t = 0; t < terms; ++t) {
      const bool table = t < 2;
      q.push_back({log_uniform(rng, 0.005, 0.1), table ? 0 : static_cast<int32_t>(rng() % 256)});
      if (table) {
        const int64_t rows = 1 + rng() % 30;
        tables[t] = random_codes<int8_t>(rng, rows * dim, -128, 127);
        ids[t] = random_codes<int64_t>(rng, tokens, 0, rows - 1);
        e[t].table = tables[t].data(), e[t].rows = rows, e[t].ids = ids[t].data();
      } else {
        dense[t] = random_codes<uint8_t>(rng, tokens * dim, 0, 255);
        e[t].dense = dense[t].data();
      }
    }
    const IntegerRescaleSum sum = make_integer_embedding_sum(
        q, log_uniform(rng, 0.01, 0.1), static_cast<int32_t>(rng() % 256), kModes[i % 4]);
    c.begin("emb", std::to_string(terms) + " terms");
    c.put(terms), c.put(tokens), c.put(dim);
    put_sum(sum);
    for (int t = 0; t < terms; ++t) {
      c.put(e[t].table != nullptr);
      if (e[t].table != nullptr) {
        c.put(e[t].rows);
        c.put_all(tables[t]);
        c.put_all(ids[t]);
      } else {
        c.put_all(dense[t]);
      }
    }
    std::vector<uint8_t> y(tokens * dim);
    integer_embedding_sum(sum, e, tokens, dim, y.data());
    c.expect_all(y);
  }
  c.run_and_compare(driver(), "sums");
  QTLAB_NOTE("add and embeddings: " << c.cases() << " cases, " << c.values() << " codes, C == C++");
}
