// Tests for quant/quantization_parameters.* and quant/uniform_quantizer.*: the repo's scale /
// zero-point formulas, fake quantization, the STE backward, integer quantize / dequantize.
// Truth: hand-computed 4-bit and 3-bit examples (worked out in the comments, with power-of-two
// scales so every step is exact), PyTorch fixtures of the official repo's quantizer re-stated in
// torch (tools/make_quant_fixtures.py; cross-checked there against torch.fake_quantize_*), the STE
// gradient from torch autograd, and a secant over whole quantization steps as a finite difference.
#include <doctest/doctest.h>

#include <cmath>
#include <cstring>
#include <string>
#include <vector>

#include "autograd/engine.h"
#include "autograd/functions.h"
#include "quant/quantization_parameters.h"
#include "quant/uniform_quantizer.h"
#include "tensor/ops.h"
#include "tensor/safetensors.h"
#include "tensor/threads.h"
#include "tests/test_util.h"

using namespace qt;
using namespace qt::test;

namespace {

const SafeTensors& uniform_fixture() {
  static const SafeTensors file =
      load_safetensors(std::string(QTLAB_TEST_DATA_DIR) + "/quant_uniform.safetensors");
  return file;
}

std::vector<float> floats(const Tensor& t) {
  return ops::to_vector<float>(t);
}

bool bitwise_equal(const Tensor& a, const Tensor& b) {
  return a.shape() == b.shape() && a.dtype() == b.dtype() && a.is_contiguous() &&
         b.is_contiguous() &&
         std::memcmp(a.raw_data(), b.raw_data(), a.numel() * dtype_size(a.dtype())) == 0;
}

struct ThreadCountGuard {
  int saved = num_threads();
  ~ThreadCountGuard() { set_num_threads(saved); }
};

// "bits,symmetric,axis" from the fixture metadata.
struct CaseOptions {
  int bits;
  bool symmetric;
  std::optional<int64_t> axis;
};
CaseOptions case_options(const std::string& text) {
  const size_t a = text.find(','), b = text.rfind(',');
  CaseOptions o{std::stoi(text.substr(0, a)), text.substr(a + 1, b - a - 1) == "1", std::nullopt};
  const std::string axis = text.substr(b + 1);
  if (axis != "none") o.axis = std::stoll(axis);
  return o;
}

}  // namespace

TEST_CASE("quantization_parameters: hand-computed asymmetric and symmetric grids") {
  // Asymmetric 4 bit, range [-1, 2.75]: Δ = 3.75 / 15 = 0.25, z = ⌊1 / 0.25⌉ = 4, grid [0, 15].
  const quant::QuantizationParameters a = quant::quantization_parameters(-1.0f, 2.75f, 4, false);
  CHECK(a.scale == std::vector<float>{0.25f});
  CHECK(a.zero_point == std::vector<int32_t>{4});
  CHECK(a.int_min == 0);
  CHECK(a.int_max == 15);
  CHECK_FALSE(a.is_signed);
  const quant::QuantizationRange covered = quant::representable_range(a);
  CHECK(covered.min == std::vector<float>{-1.0f});  // 0.25 (0 - 4)
  CHECK(covered.max == std::vector<float>{2.75f});  // 0.25 (15 - 4)

  // Symmetric 3 bit, range [-1.5, 0.75]: signed, int_max = 2^2 - 1 = 3, Δ = 1.5 / 3 = 0.5, grid
  // [-4, 3]: the negative side reaches -4 Δ = -2 (one step beyond -1.5).
  const quant::QuantizationParameters s = quant::quantization_parameters(-1.5f, 0.75f, 3, true);
  CHECK(s.scale == std::vector<float>{0.5f});
  CHECK(s.zero_point == std::vector<int32_t>{0});
  CHECK(s.is_signed);
  CHECK(s.int_min == -4);
  CHECK(s.int_max == 3);

  // Symmetric with a non-negative range: unsigned grid [0, 2^b - 1], Δ = x_max / (2^b - 1).
  const quant::QuantizationParameters u = quant::quantization_parameters(0.5f, 2.0f, 8, true);
  CHECK_FALSE(u.is_signed);
  CHECK(u.int_min == 0);
  CHECK(u.int_max == 255);
  CHECK(u.scale[0] == 2.0f / 255.0f);

  // The range always contains 0: [0.5, 2] becomes [0, 2] (z = 0); [-3, -1] becomes [-3, 1e-8],
  // whose zero point ⌊3 / Δ⌉ = 255 sits at the top of the grid.
  const quant::QuantizationParameters positive =
      quant::quantization_parameters(0.5f, 2.0f, 8, false);
  CHECK(positive.zero_point[0] == 0);
  CHECK(positive.scale[0] == 2.0f / 255.0f);
  const quant::QuantizationParameters negative =
      quant::quantization_parameters(-3.0f, -1.0f, 8, false);
  CHECK(negative.zero_point[0] == 255);
  CHECK(negative.scale[0] == (1e-8f + 3.0f) / 255.0f);

  // A degenerate range [0, 0] becomes [0, 1e-8]; the scale is floored at 1e-8 (16 bits:
  // 1e-8/65535).
  const quant::QuantizationParameters tiny = quant::quantization_parameters(0.0f, 0.0f, 16, false);
  CHECK(tiny.scale[0] == 1e-8f);
  CHECK(tiny.zero_point[0] == 0);
}

TEST_CASE("quantization_parameters: bit-identical to the repo's formulas on edge-case ranges") {
  const SafeTensors& f = uniform_fixture();
  const std::vector<float> lows = floats(f.get("params.range_min"));
  const std::vector<float> highs = floats(f.get("params.range_max"));
  for (int bits : {2, 4, 8, 16}) {
    for (bool symmetric : {false, true}) {
      const std::string key = "params." + std::to_string(bits) + (symmetric ? ".sym" : ".asym");
      const std::vector<float> scales = floats(f.get(key + ".scale"));
      const std::vector<int64_t> zeros = ops::to_vector<int64_t>(f.get(key + ".zero_point"));
      const std::vector<int64_t> mins = ops::to_vector<int64_t>(f.get(key + ".int_min"));
      const std::vector<int64_t> maxs = ops::to_vector<int64_t>(f.get(key + ".int_max"));
      for (size_t k = 0; k < lows.size(); ++k) {
        CAPTURE(key);
        CAPTURE(lows[k]);
        CAPTURE(highs[k]);
        const quant::QuantizationParameters p =
            quant::quantization_parameters(lows[k], highs[k], bits, symmetric);
        CHECK(p.scale[0] == scales[k]);
        CHECK(p.zero_point[0] == zeros[k]);
        CHECK(p.int_min == mins[k]);
        CHECK(p.int_max == maxs[k]);
      }
    }
  }
}

TEST_CASE("fake_quantize: hand-computed 4-bit asymmetric example, codes and STE mask") {
  // Range [-1, 2.75], 4 bit: s = 0.25, z = 4, grid [0, 15] (see the test above).
  //   x        -2    -1.125  -1   -0.125  0    0.125  0.375  0.625  1.3   2.75  2.875  3
  //   x/s      -8    -4.5    -4   -0.5    0    0.5    1.5    2.5    5.2   11    11.5   12
  //   ⌊x/s⌉    -8    -4      -4   -0      0    0      2      2      5     11    12     12  (half to
  //   even)
  //   + z      -4     0       0    4      4    4      6      6      9     15    16     16
  //   q         0     0       0    4      4    4      6      6      9     15    15     15  (clamp)
  //   x̂ = s(q − z)
  //            -1    -1      -1    0      0    0      0.5    0.5    1.25  2.75  2.75   2.75
  //   STE: gradient passes where ⌊x/s⌉ + z lies in [0, 15]: all but -2, 2.875 and 3. Note -1.125:
  //   it lies below the range, but -4.5 rounds to -4 (even) and 0 is on the grid, so it passes.
  const quant::QuantizationParameters p = quant::quantization_parameters(-1.0f, 2.75f, 4, false);
  const std::vector<float> x{-2, -1.125, -1, -0.125, 0, 0.125, 0.375, 0.625, 1.3f, 2.75, 2.875, 3};
  const std::vector<float> expected{-1, -1, -1, 0, 0, 0, 0.5, 0.5, 1.25, 2.75, 2.75, 2.75};
  const std::vector<uint8_t> codes{0, 0, 0, 4, 4, 4, 6, 6, 9, 15, 15, 15};
  const std::vector<float> mask{0, 1, 1, 1, 1, 1, 1, 1, 1, 1, 0, 0};
  const Tensor input = ops::from_vector(x, {3, 4});
  CHECK(floats(ops::fake_quantize(input, p)) == expected);
  const Tensor q = ops::quantize(input, p);
  CHECK(q.dtype() == DType::u8);
  CHECK(ops::to_vector<uint8_t>(q) == codes);
  CHECK(floats(ops::dequantize(q, p)) == expected);
  const Tensor grad =
      ops::from_vector(std::vector<float>{1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12}, {3, 4});
  std::vector<float> expected_grad(12);
  for (int i = 0; i < 12; ++i) expected_grad[i] = mask[i] * static_cast<float>(i + 1);
  CHECK(floats(ops::fake_quantize_backward(grad, input, p)) == expected_grad);
}

TEST_CASE("fake_quantize: hand-computed 3-bit symmetric example (signed grid, i8 codes)") {
  // Range [-1.5, 0.75], 3 bit symmetric: s = 0.5, grid [-4, 3].
  //   x        -2.5  -2.25  -1.75  -0.25  0.25  0.75  1.25  1.5  1.75  1.8
  //   x/s      -5    -4.5   -3.5   -0.5   0.5   1.5   2.5   3    3.5   3.6
  //   ⌊x/s⌉    -5    -4     -4     -0     0     2     2     3    4     4
  //   q        -4    -4     -4      0     0     2     2     3    3     3
  //   x̂        -2    -2     -2      0     0     1     1     1.5  1.5   1.5
  //   STE      0     1      1       1     1     1     1     1    0     0
  const quant::QuantizationParameters p = quant::quantization_parameters(-1.5f, 0.75f, 3, true);
  const Tensor x = ops::from_vector(
      std::vector<float>{-2.5, -2.25, -1.75, -0.25, 0.25, 0.75, 1.25, 1.5, 1.75, 1.8f}, {10});
  CHECK(floats(ops::fake_quantize(x, p)) ==
        std::vector<float>{-2, -2, -2, 0, 0, 1, 1, 1.5, 1.5, 1.5});
  const Tensor q = ops::quantize(x, p);
  CHECK(q.dtype() == DType::i8);
  CHECK(ops::to_vector<int8_t>(q) == std::vector<int8_t>{-4, -4, -4, 0, 0, 2, 2, 3, 3, 3});
  CHECK(floats(ops::fake_quantize_backward(ops::ones({10}), x, p)) ==
        std::vector<float>{0, 1, 1, 1, 1, 1, 1, 1, 0, 0});
}

TEST_CASE("fake_quantize: matches the repo's torch quantizer bit for bit (fixture cases)") {
  const SafeTensors& f = uniform_fixture();
  int cases = 0;
  for (const auto& [name, text] : f.metadata) {
    if (name == "generator") continue;
    ++cases;
    CAPTURE(name);
    const CaseOptions o = case_options(text);
    const Tensor x = f.get(name + ".input");
    const quant::QuantizationRange range{floats(f.get(name + ".range_min")),
                                         floats(f.get(name + ".range_max")), o.axis};
    const quant::QuantizationParameters p =
        quant::quantization_parameters(range, o.bits, o.symmetric);
    CHECK(p.scale == floats(f.get(name + ".scale")));
    const std::vector<int64_t> zeros = ops::to_vector<int64_t>(f.get(name + ".zero_point"));
    CHECK(std::vector<int64_t>(p.zero_point.begin(), p.zero_point.end()) == zeros);

    const Tensor out = ops::fake_quantize(x, p);
    CHECK(bitwise_equal(out, f.get(name + ".output")));
    // Integer path: dequantize(quantize(x)) is the same fake quantization.
    const Tensor codes = ops::quantize(x, p);
    CHECK(codes.dtype() == quant::code_dtype(p));
    CHECK(bitwise_equal(ops::dequantize(codes, p), out));
    for (double c : elements(codes)) {
      CHECK(c >= static_cast<double>(p.int_min));
      CHECK(c <= static_cast<double>(p.int_max));
    }

    // STE gradient through the differentiable op vs torch autograd of round_ste + clamp. Torch
    // computes (g s) / s, which may differ from g in the last bit; zeros must match exactly.
    const Tensor leaf = ops::clone(x).set_requires_grad();
    const Tensor y = quant::fake_quantize(leaf, p);
    CHECK(bitwise_equal(y.detach(), out));
    backward(y, f.get(name + ".grad_output"));
    const std::vector<float> got = floats(leaf.grad());
    const std::vector<float> want = floats(f.get(name + ".grad_input"));
    REQUIRE(got.size() == want.size());
    int passed = 0, blocked = 0;
    for (size_t i = 0; i < got.size(); ++i) {
      if (want[i] == 0.0f) {
        CHECK(got[i] == 0.0f);
        ++blocked;
      } else {
        CHECK(std::abs(got[i] - want[i]) <= 2e-7f * std::abs(want[i]));
        ++passed;
      }
    }
    // Every case has both clipped and unclipped values, so both branches are exercised.
    CHECK(passed > 0);
    CHECK(blocked > 0);
  }
  CHECK(cases == 9);
}

TEST_CASE("fake_quantize: STE boundaries are decided on the rounded value (f32 and f64)") {
  // 8-bit asymmetric, range [-1, 0.9921875]: Δ = 1.9921875 / 255 = 2^-7, z = 1 / Δ = 128, grid
  // [0, 255]. With t = x/s (exact for the dyadic values below):
  //   t = 127.4:  ⌊t⌉ + z = 255       in the grid       -> passes
  //   t = 127.6:  128 + 128 = 256     beyond            -> blocked
  //   t = 127.5:  tie -> 128 (even)   256, beyond       -> blocked
  //   t = 126.5:  tie -> 126 (even)   254               -> passes
  //   t = -128.5: tie -> -128 (even)  0, the grid's end -> passes (clamp passes its boundary)
  //   t = -129.5: tie -> -130 (even)  -2                -> blocked
  //   t = 20:     148                                   -> passes
  const quant::QuantizationParameters p =
      quant::quantization_parameters(-1.0f, 0.9921875f, 8, false);
  REQUIRE(p.scale[0] == 0.0078125f);
  REQUIRE(p.zero_point[0] == 128);
  const std::vector<double> t{127.4, 127.6, 127.5, 126.5, -128.5, -129.5, 20};
  std::vector<double> x;
  for (double v : t) x.push_back(v / 128.0);
  for (DType dtype : {DType::f32, DType::f64}) {
    const Tensor input = ops::to(ops::from_vector(x, {7}), dtype);
    const std::vector<double> g =
        elements(ops::fake_quantize_backward(ops::ones({7}, dtype), input, p));
    CHECK(g == std::vector<double>{1, 0, 0, 1, 1, 0, 1});
  }
}

TEST_CASE("fake_quantize: STE gradient equals the secant slope over whole quantization steps") {
  // A finite difference with a step of exactly 3 quantization steps, (Q(x + 3s) − Q(x − 3s)) / 6s,
  // is 1 where x ± 3s both stay inside the grid (rounding commutes with integer shifts) and 0
  // where both lie beyond the same end: exactly the STE's ∂x̂/∂x. f64 so that x ± 3s is exact
  // enough; points within 3.5 steps of a range end are skipped.
  for (bool symmetric : {false, true}) {
    const quant::QuantizationParameters p =
        quant::quantization_parameters(-0.7f, 1.3f, 4, symmetric);
    const double s = p.scale[0], z = p.zero_point[0];
    const double lo = (static_cast<double>(p.int_min) - z) * s;
    const double hi = (static_cast<double>(p.int_max) - z) * s;
    const Tensor x = random_tensor({400}, DType::f64, 3, 0.3, 1.6);
    const Tensor shift = ops::full({400}, 3 * s, DType::f64);
    const std::vector<double> plus = elements(ops::fake_quantize(ops::add(x, shift), p));
    const std::vector<double> minus = elements(ops::fake_quantize(ops::sub(x, shift), p));
    const std::vector<double> ste =
        elements(ops::fake_quantize_backward(ops::ones({400}, DType::f64), x, p));
    const std::vector<double> xs = elements(x);
    int inside = 0, outside = 0;
    for (size_t i = 0; i < xs.size(); ++i) {
      const bool far_inside = xs[i] > lo + 3.5 * s && xs[i] < hi - 3.5 * s;
      const bool far_outside = xs[i] < lo - 3.5 * s || xs[i] > hi + 3.5 * s;
      if (!far_inside && !far_outside) continue;
      const double secant = (plus[i] - minus[i]) / (6 * s);
      CHECK(std::abs(secant - ste[i]) < 1e-9);
      CHECK(ste[i] == (far_inside ? 1.0 : 0.0));
      far_inside ? ++inside : ++outside;
    }
    CHECK(inside > 40);
    CHECK(outside > 40);
  }
}

TEST_CASE("fake_quantize: per-channel on any axis and on strided views; 16 bit codes are i32") {
  const Tensor x = random_tensor({3, 4, 5}, DType::f32, 8);
  // Per-channel along axis 1 equals quantizing each slice x[:, c, :] with its own per-tensor
  // params.
  const quant::QuantizationRange range{{-1.0f, -0.5f, 0.0f, -2.0f}, {1.0f, 0.25f, 2.0f, 0.5f}, 1};
  const quant::QuantizationParameters p = quant::quantization_parameters(range, 5, false);
  const Tensor out = ops::fake_quantize(x, p);
  for (int64_t c = 0; c < 4; ++c) {
    const quant::QuantizationParameters slice_p =
        quant::quantization_parameters(range.min[c], range.max[c], 5, false);
    const Tensor slice = ops::contiguous(ops::select(x, 1, c));
    CHECK(elements(ops::select(out, 1, c)) == elements(ops::fake_quantize(slice, slice_p)));
  }
  // A transposed (non-contiguous) input with the channel axis moved gives the transposed result.
  quant::QuantizationParameters transposed_p = p;
  transposed_p.channel_axis = 0;
  const Tensor xt = ops::transpose(x, 0, 1);  // [4, 3, 5], channels now axis 0
  CHECK(elements(ops::fake_quantize(xt, transposed_p)) == elements(ops::transpose(out, 0, 1)));
  // Negative axes count from the end.
  quant::QuantizationParameters negative_axis = p;
  negative_axis.channel_axis = -2;
  CHECK(bitwise_equal(ops::fake_quantize(x, negative_axis), out));

  const quant::QuantizationParameters wide = quant::quantization_parameters(-2.0f, 3.0f, 16, false);
  const Tensor codes = ops::quantize(x, wide);
  CHECK(codes.dtype() == DType::i32);
  CHECK(bitwise_equal(ops::dequantize(codes, wide), ops::fake_quantize(x, wide)));
  CHECK(quant::code_dtype(quant::quantization_parameters(-1.0f, 1.0f, 8, true)) == DType::i8);
}

TEST_CASE("fake_quantize: results are bit-identical with 1 and 2 threads") {
  ThreadCountGuard guard;
  const Tensor x = random_tensor({37, 3001}, DType::f32, 21, 0.0, 2.0);
  const Tensor g = random_tensor({37, 3001}, DType::f32, 22);
  std::vector<float> lows(37), highs(37);
  for (int c = 0; c < 37; ++c) {
    lows[c] = -0.5f - 0.1f * static_cast<float>(c);
    highs[c] = 0.7f + 0.05f * static_cast<float>(c);
  }
  const quant::QuantizationParameters per_channel =
      quant::quantization_parameters({lows, highs, 0}, 8, false);
  const quant::QuantizationParameters per_tensor =
      quant::quantization_parameters(-3.0f, 2.5f, 6, true);
  std::vector<Tensor> results[2];
  for (int threads : {1, 2}) {
    set_num_threads(threads);
    auto& r = results[threads - 1];
    for (const auto* p : {&per_channel, &per_tensor}) {
      r.push_back(ops::fake_quantize(x, *p));
      r.push_back(ops::fake_quantize_backward(g, x, *p));
      r.push_back(ops::quantize(x, *p));
    }
  }
  for (size_t i = 0; i < results[0].size(); ++i) CHECK(bitwise_equal(results[0][i], results[1][i]));
}

TEST_CASE("fake_quantize: bad inputs throw qt::Error naming the problem") {
  const Tensor x = random_tensor({2, 3}, DType::f32, 1);
  CHECK_THROWS_WITH_AS(quant::quantization_parameters(-1.0f, 1.0f, 1, false),
                       doctest::Contains("bit width 1"), qt::Error);
  CHECK_THROWS_WITH_AS(quant::quantization_parameters(-1.0f, 1.0f, 17, true),
                       doctest::Contains("bit width 17"), qt::Error);
  CHECK_THROWS_WITH_AS(quant::quantization_parameters(NAN, 1.0f, 8, false),
                       doctest::Contains("non-finite"), qt::Error);
  CHECK_THROWS_AS(quant::quantization_parameters(-1.0f, INFINITY, 8, false), qt::Error);
  CHECK_THROWS_AS(
      quant::quantization_parameters({{-1.0f, -2.0f}, {1.0f, 2.0f}, std::nullopt}, 8, false),
      qt::Error);
  CHECK_THROWS_AS(quant::quantization_parameters({{}, {}, 0}, 8, false), qt::Error);

  // Per-channel parameters on a wrong axis or with the wrong channel count.
  quant::QuantizationParameters p =
      quant::quantization_parameters({{-1.f, -1.f}, {1.f, 1.f}, 0}, 8, false);
  CHECK_NOTHROW(ops::fake_quantize(x, p));
  p.channel_axis = 2;
  CHECK_THROWS_WITH_AS(ops::fake_quantize(x, p), doctest::Contains("fake_quantize"), qt::Error);
  p.channel_axis = 1;
  CHECK_THROWS_WITH_AS(ops::fake_quantize(x, p), doctest::Contains("[2, 3] has 3 channels"),
                       qt::Error);

  const quant::QuantizationParameters good = quant::quantization_parameters(-1.0f, 1.0f, 8, false);
  quant::QuantizationParameters bad_bits = good;
  bad_bits.bits = 20;
  CHECK_THROWS_AS(ops::fake_quantize(x, bad_bits), qt::Error);
  quant::QuantizationParameters bad_scale = good;
  bad_scale.scale[0] = 0.0f;
  CHECK_THROWS_WITH_AS(ops::fake_quantize(x, bad_scale), doctest::Contains("scale"), qt::Error);

  // NaN inputs are rejected (inf is clamped to the grid ends).
  const Tensor with_nan = ops::from_vector(std::vector<float>{0.5f, NAN, 1.0f}, {3});
  CHECK_THROWS_WITH_AS(ops::fake_quantize(with_nan, good), doctest::Contains("NaN"), qt::Error);
  CHECK_THROWS_WITH_AS(ops::quantize(with_nan, good), doctest::Contains("NaN"), qt::Error);
  const Tensor with_inf = ops::from_vector(std::vector<float>{-INFINITY, INFINITY}, {2});
  const std::vector<float> clamped = floats(ops::fake_quantize(with_inf, good));
  const quant::QuantizationRange ends = quant::representable_range(good);
  CHECK(clamped == std::vector<float>{ends.min[0], ends.max[0]});

  // Wrong dtypes and shapes.
  CHECK_THROWS_AS(ops::fake_quantize(ops::zeros({3}, DType::i32), good), qt::Error);
  CHECK_THROWS_AS(ops::dequantize(ops::zeros({3}), good), qt::Error);
  CHECK_THROWS_WITH_AS(ops::dequantize(ops::full({3}, 300, DType::i32), good),
                       doctest::Contains("outside the grid"), qt::Error);
  CHECK_THROWS_WITH_AS(ops::fake_quantize_backward(ops::ones({3, 2}), x, good),
                       doctest::Contains("does not match"), qt::Error);
  CHECK_THROWS_AS(ops::fake_quantize_backward(ops::ones({2, 3}, DType::f64), x, good), qt::Error);
  CHECK_THROWS_AS(ops::fake_quantize(Tensor(), good), qt::Error);
}
