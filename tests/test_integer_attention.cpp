// The integer ops composed into one gated attention layer with clipped softmax (Q, K, V linear ->
// Q K^T -> requantize -> clipped softmax with a padding mask -> P V -> per-head gate), against its
// float64 simulated-quantization twin: the same quantization points, each rounding half to even in
// float64 from the dequantized inputs. This is the checker's assertion (anchors §2.5: simulated
// and true integer agree) at the scale of one layer, and an example of how the ops fit together;
// it is not the model-level engine.
//
// Stage by stage (both sides fed the same input codes) the codes must agree except at near-ties:
// at most 1 code apart. End to end, a one-code difference upstream can move later codes, so the
// end-to-end bound is looser (stated below).
#include <doctest/doctest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <random>
#include <string>
#include <vector>

#include "quant/integer_linear.h"
#include "quant/integer_sigmoid.h"
#include "quant/integer_softmax.h"
#include "tests/test_integer_common.h"

using namespace qt::quant;

namespace {

constexpr int64_t T = 24, H = 2, DH = 32, D = H * DH;
constexpr double kGamma = -0.025, kZeta = 1.0;
constexpr Requant kMode = Requant::single_half_even;

struct Grid {
  double scale;
  int32_t zero_point;
};
// The repo's asymmetric u8 grid for a range (method.md §4.1), in float64.
Grid u8_grid(const std::vector<double>& v) {
  const double lo = std::min(0.0, *std::min_element(v.begin(), v.end()));
  const double hi = std::max(1e-8, *std::max_element(v.begin(), v.end()));
  const double s = (hi - lo) / 255;
  return {s, static_cast<int32_t>(std::clamp(std::nearbyint(-lo / s), 0.0, 255.0))};
}
uint8_t quantize(double v, Grid g) {
  return static_cast<uint8_t>(std::clamp(std::nearbyint(v / g.scale) + g.zero_point, 0.0, 255.0));
}
std::vector<uint8_t> quantize_all(const std::vector<double>& v, Grid g) {
  std::vector<uint8_t> q(v.size());
  for (size_t i = 0; i < v.size(); ++i) q[i] = quantize(v[i], g);
  return q;
}
double real(uint8_t q, Grid g) {
  return g.scale * (static_cast<int>(q) - g.zero_point);
}

// Symmetric s8 weights, one scale per tensor.
struct Weights {
  std::vector<int8_t> codes;
  double scale;
};
Weights random_weights(int64_t rows, int64_t cols, std::mt19937& rng) {
  std::normal_distribution<double> normal(0, 1 / std::sqrt(static_cast<double>(cols)));
  std::vector<double> w(rows * cols);
  double amax = 0;
  for (double& v : w) amax = std::max(amax, std::fabs(v = normal(rng)));
  Weights out{std::vector<int8_t>(w.size()), amax / 127};
  for (size_t i = 0; i < w.size(); ++i)
    out.codes[i] = static_cast<int8_t>(std::nearbyint(w[i] / out.scale));
  return out;
}

// Float64 linear on dequantized codes: y[t, n] = sum_k x[t, k] w[n, k] + b[n], x row stride ldx.
std::vector<double> linear_real(const std::vector<uint8_t>& x, int64_t ldx, Grid gx,
                                const Weights& w, const std::vector<int32_t>& bias, int64_t rows,
                                int64_t in, int64_t out, int64_t x_offset = 0) {
  std::vector<double> y(rows * out);
  for (int64_t t = 0; t < rows; ++t)
    for (int64_t n = 0; n < out; ++n) {
      double s = gx.scale * w.scale * bias[n];
      for (int64_t k = 0; k < in; ++k)
        s += real(x[x_offset + t * ldx + k], gx) * w.scale * w.codes[n * in + k];
      y[t * out + n] = s;
    }
  return y;
}

// Codes that differ, and by how much at most.
struct Agreement {
  int64_t count = 0, differ = 0, max_diff = 0;
  void add(const std::vector<uint8_t>& a, const std::vector<uint8_t>& b) {
    for (size_t i = 0; i < a.size(); ++i) {
      const int64_t d = std::llabs(int64_t{a[i]} - int64_t{b[i]});
      ++count;
      differ += d != 0;
      max_diff = std::max(max_diff, d);
    }
  }
  std::string summary(const std::string& what) const {
    return what + ": " + std::to_string(differ) + " of " + std::to_string(count) +
           " codes differ, max " + std::to_string(max_diff);
  }
};

}  // namespace

TEST_CASE("integer attention layer: integer ops vs float64 simulated quantization") {
  std::mt19937 rng(81);
  std::normal_distribution<double> normal(0, 1);
  std::vector<double> x_real(T * D);
  for (double& v : x_real) v = normal(rng);
  const Grid gx = u8_grid(x_real);
  const std::vector<uint8_t> x = quantize_all(x_real, gx);
  const Weights wq = random_weights(D, D, rng), wk = random_weights(D, D, rng),
                wv = random_weights(D, D, rng), wg = random_weights(H, DH, rng);
  std::uniform_int_distribution<int32_t> bias_code(-2000, 2000);
  std::vector<int32_t> bq(D), bk(D), bv(D), bg(H);
  for (auto* b : {&bq, &bk, &bv, &bg})
    for (int32_t& v : *b) v = bias_code(rng);
  std::vector<uint8_t> keep(T * T, 1);  // key padding: the last 4 keys are masked for every query
  for (int64_t i = 0; i < T; ++i)
    for (int64_t j = T - 4; j < T; ++j) keep[i * T + j] = 0;
  const double inv_sqrt_dh = 1 / std::sqrt(static_cast<double>(DH));

  // ---- float64 stages (simulated quantization), each a function of its input codes.
  auto scores_real = [&](const std::vector<uint8_t>& q, Grid gq, const std::vector<uint8_t>& k,
                         Grid gk) {
    std::vector<double> s(H * T * T);
    for (int64_t h = 0; h < H; ++h)
      for (int64_t i = 0; i < T; ++i)
        for (int64_t j = 0; j < T; ++j) {
          double sum = 0;
          for (int64_t c = 0; c < DH; ++c)
            sum += real(q[i * D + h * DH + c], gq) * real(k[j * D + h * DH + c], gk);
          s[(h * T + i) * T + j] = sum * inv_sqrt_dh;
        }
    return s;
  };
  auto probs_sim = [&](const std::vector<uint8_t>& scores, Grid gs) {
    std::vector<uint8_t> p(H * T * T);
    for (int64_t r = 0; r < H * T; ++r) {
      const int64_t i = r % T;
      double max = -INFINITY, sum = 0;
      for (int64_t j = 0; j < T; ++j)
        if (keep[i * T + j]) max = std::max(max, real(scores[r * T + j], gs));
      for (int64_t j = 0; j < T; ++j)
        if (keep[i * T + j]) sum += std::exp(real(scores[r * T + j], gs) - max);
      for (int64_t j = 0; j < T; ++j) {
        const double e = keep[i * T + j] ? std::exp(real(scores[r * T + j], gs) - max) / sum : 0;
        const double y = std::clamp((kZeta - kGamma) * e + kGamma, 0.0, 1.0);
        p[r * T + j] = static_cast<uint8_t>(std::nearbyint(255 * y));
      }
    }
    return p;
  };
  auto context_real = [&](const std::vector<uint8_t>& p, const std::vector<uint8_t>& v, Grid gv) {
    std::vector<double> c(T * D);
    for (int64_t h = 0; h < H; ++h)
      for (int64_t i = 0; i < T; ++i)
        for (int64_t d = 0; d < DH; ++d) {
          double sum = 0;
          for (int64_t j = 0; j < T; ++j)
            sum += p[(h * T + i) * T + j] / 255.0 * real(v[j * D + h * DH + d], gv);
          c[i * D + h * DH + d] = sum;
        }
    return c;
  };
  auto gate_sim = [&]() {
    std::vector<uint8_t> g(T * H);
    for (int64_t h = 0; h < H; ++h) {
      const Weights w{
          std::vector<int8_t>(wg.codes.begin() + h * DH, wg.codes.begin() + (h + 1) * DH),
          wg.scale};
      const std::vector<double> logit = linear_real(x, D, gx, w, {bg[h]}, T, DH, 1, h * DH);
      for (int64_t t = 0; t < T; ++t)
        g[t * H + h] = static_cast<uint8_t>(
            std::clamp(std::nearbyint(256 * sigmoid_reference(logit[t])), 0.0, 255.0));
    }
    return g;
  };
  auto out_sim = [&](const std::vector<uint8_t>& c, const std::vector<uint8_t>& g, Grid gc) {
    std::vector<uint8_t> o(T * D);
    for (int64_t t = 0; t < T; ++t)
      for (int64_t d = 0; d < D; ++d)
        o[t * D + d] = quantize(real(c[t * D + d], gc) * g[t * H + d / DH] / 256.0, gc);
    return o;
  };

  // ---- The float pass on its own codes; its ranges calibrate every grid.
  const std::vector<double> q_real = linear_real(x, D, gx, wq, bq, T, D, D);
  const std::vector<double> k_real = linear_real(x, D, gx, wk, bk, T, D, D);
  const std::vector<double> v_real = linear_real(x, D, gx, wv, bv, T, D, D);
  const Grid gq = u8_grid(q_real), gk = u8_grid(k_real), gv = u8_grid(v_real);
  const std::vector<uint8_t> Qf = quantize_all(q_real, gq), Kf = quantize_all(k_real, gk),
                             Vf = quantize_all(v_real, gv);
  const std::vector<double> s_real = scores_real(Qf, gq, Kf, gk);
  const Grid gs = u8_grid(s_real);
  const std::vector<uint8_t> Sf = quantize_all(s_real, gs), Pf = probs_sim(Sf, gs);
  const std::vector<double> c_real = context_real(Pf, Vf, gv);
  const Grid gc = u8_grid(c_real);
  const std::vector<uint8_t> Cf = quantize_all(c_real, gc), Gf = gate_sim(),
                             Of = out_sim(Cf, Gf, gc);

  // ---- The integer stages, built from the ops' conversion helpers.
  const IntegerLinear lq =
      make_integer_linear(wq.codes.data(), D, D, bq.data(), gx.scale, gx.zero_point, {wq.scale},
                          gq.scale, gq.zero_point, kMode);
  const IntegerLinear lk =
      make_integer_linear(wk.codes.data(), D, D, bk.data(), gx.scale, gx.zero_point, {wk.scale},
                          gk.scale, gk.zero_point, kMode);
  const IntegerLinear lv =
      make_integer_linear(wv.codes.data(), D, D, bv.data(), gx.scale, gx.zero_point, {wv.scale},
                          gv.scale, gv.zero_point, kMode);
  const Requantizer to_scores =
      make_requantizer(gq.scale * gk.scale * inv_sqrt_dh / gs.scale, gs.zero_point, 0, 255, kMode);
  const IntegerSoftmax softmax = make_integer_softmax(gs.scale, kGamma, kZeta);
  const Requantizer to_context =
      make_requantizer(kSoftmaxOutputScale * gv.scale / gc.scale, gc.zero_point, 0, 255, kMode);
  std::vector<IntegerLinear> gate_linear;
  for (int64_t h = 0; h < H; ++h)
    gate_linear.push_back(make_integer_linear(wg.codes.data() + h * DH, 1, DH, bg.data() + h,
                                              gx.scale, gx.zero_point, {wg.scale}, 1.0, 0, kMode));
  const IntegerLutActivation sigmoid = make_integer_sigmoid({gx.scale * wg.scale}, 16.0, kMode);
  const Requantizer gate_mul =
      make_gate_multiply(gc.scale, gc.zero_point, gc.scale, gc.zero_point, kMode);

  auto linear_int = [&](const IntegerLinear& layer) {
    std::vector<uint8_t> y(T * D);
    integer_linear(layer, x.data(), T, y.data());
    return y;
  };
  auto scores_int = [&](const std::vector<uint8_t>& q, const std::vector<uint8_t>& k) {
    std::vector<int32_t> acc(H * T * T);  // heads are column blocks: batch stride DH
    integer_matmul_u8u8(H, T, T, DH, {q.data(), D, DH, gq.zero_point},
                        {k.data(), D, DH, gk.zero_point}, BLayout::nk, acc.data());
    std::vector<uint8_t> s(H * T * T);
    requantize(acc.data(), H * T * T, to_scores, s.data());
    return s;
  };
  auto probs_int = [&](const std::vector<uint8_t>& scores) {
    std::vector<uint8_t> p(H * T * T);
    for (int64_t h = 0; h < H; ++h)
      integer_softmax(softmax, scores.data() + h * T * T, T, T, keep.data(), T,
                      p.data() + h * T * T);
    return p;
  };
  auto context_int = [&](const std::vector<uint8_t>& p, const std::vector<uint8_t>& v) {
    std::vector<int32_t> acc(H * T * DH);  // V read in place as [K = T, N = DH] per head
    integer_matmul_u8u8(H, T, DH, T, {p.data(), T, T * T, 0}, {v.data(), D, DH, gv.zero_point},
                        BLayout::kn, acc.data());
    std::vector<uint8_t> c(T * D);
    for (int64_t h = 0; h < H; ++h)
      for (int64_t i = 0; i < T; ++i)
        for (int64_t d = 0; d < DH; ++d)
          c[i * D + h * DH + d] = static_cast<uint8_t>(to_context(acc[(h * T + i) * DH + d]));
    return c;
  };
  auto gate_int = [&]() {
    std::vector<uint8_t> g(T * H), column(T);
    std::vector<int32_t> logits(T);
    for (int64_t h = 0; h < H; ++h) {
      integer_linear_accumulators(gate_linear[h], x.data() + h * DH, T, logits.data(), D);
      apply_lut_activation(sigmoid, logits.data(), T, 1, column.data());
      for (int64_t t = 0; t < T; ++t) g[t * H + h] = column[t];
    }
    return g;
  };
  auto out_int = [&](const std::vector<uint8_t>& c, const std::vector<uint8_t>& g) {
    std::vector<uint8_t> o(T * D);
    integer_gate_multiply(c.data(), g.data(), T, H, DH, gc.zero_point, gate_mul, o.data());
    return o;
  };

  // ---- Stage by stage: the integer stage reads the float pass's input codes.
  struct Stage {
    const char* name;
    std::vector<uint8_t> integer, simulated;
  };
  const Stage stages[] = {{"Q", linear_int(lq), Qf},
                          {"K", linear_int(lk), Kf},
                          {"V", linear_int(lv), Vf},
                          {"scores", scores_int(Qf, Kf), Sf},
                          {"probabilities", probs_int(Sf), Pf},
                          {"context", context_int(Pf, Vf), Cf},
                          {"gate", gate_int(), Gf},
                          {"output", out_int(Cf, Gf), Of}};
  for (const Stage& stage : stages) {
    Agreement a;
    a.add(stage.integer, stage.simulated);
    const std::string line = a.summary(std::string("stage ") + stage.name);
    INFO(line);
    if (std::getenv("QTLAB_TEST_VERBOSE") != nullptr) MESSAGE(line);
    CHECK(a.max_diff <= 1);
    CHECK(a.differ * 100 <= a.count);  // at most 1 % of the codes, all near-ties
  }

  // ---- End to end: every integer stage reads the integer codes before it.
  const std::vector<uint8_t> Qi = linear_int(lq), Ki = linear_int(lk), Vi = linear_int(lv);
  const std::vector<uint8_t> Oi =
      out_int(context_int(probs_int(scores_int(Qi, Ki)), Vi), gate_int());
  Agreement end;
  end.add(Oi, Of);
  const std::string line = end.summary("end to end output");
  INFO(line);
  if (std::getenv("QTLAB_TEST_VERBOSE") != nullptr) MESSAGE(line);
  CHECK(end.max_diff <= 2);
  CHECK(end.differ * 50 <= end.count);
}
