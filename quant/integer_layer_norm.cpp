// Integer LayerNorm (see the header for the steps and the bounds).
#include "quant/integer_layer_norm.h"

#include <bit>
#include <cmath>
#include <cstdlib>
#include <vector>

#include "quant/integer_divide.h"
#include "quant/integer_sqrt.h"
#include "tensor/error.h"
#include "tensor/parallel_policy.h"

namespace qt::quant {

IntegerLayerNorm make_integer_layer_norm(int64_t channels, const int8_t* gamma, double gamma_scale,
                                         const double* beta, double input_scale, double eps,
                                         double output_scale, int32_t output_zero_point,
                                         Requant mode) {
  const char* op = "make_integer_layer_norm";
  QT_CHECK(channels >= 1 && channels <= kLayerNormMaxChannels,
           "{}: {} channels (need 1 to {} for the int64 bounds)", op, channels,
           kLayerNormMaxChannels);
  QT_CHECK(gamma != nullptr, "{}: null gamma", op);
  QT_CHECK(gamma_scale > 0 && input_scale > 0 && output_scale > 0,
           "{}: scales must be positive (gamma {}, input {}, output {})", op, gamma_scale,
           input_scale, output_scale);
  QT_CHECK(eps >= 0 && std::isfinite(eps), "{}: eps {} must be finite and >= 0", op, eps);
  IntegerLayerNorm ln;
  ln.channels = channels;
  ln.gamma.assign(gamma, gamma + channels);
  ln.beta.resize(channels);
  const double one = std::ldexp(1.0, kLayerNormFractionBits);
  for (int64_t c = 0; c < channels; ++c) {
    const double b = beta == nullptr ? 0.0 : std::nearbyint(beta[c] * one / gamma_scale);
    QT_CHECK(std::isfinite(b) && std::fabs(b) <= std::ldexp(1.0, 30),
             "{}: beta[{}] = {} is {} in units of S_g 2^-15, beyond the 2^30 bound", op, c,
             beta == nullptr ? 0.0 : beta[c], b);
    ln.beta[c] = static_cast<int32_t>(b);
  }
  const double e =
      std::nearbyint(eps * static_cast<double>(channels * channels) / (input_scale * input_scale));
  QT_CHECK(e <= std::ldexp(1.0, 60),
           "{}: eps {} is {} in units of (S_in / C)^2, beyond 2^60 (input scale {})", op, eps, e,
           input_scale);
  ln.eps_term = static_cast<int64_t>(e);
  ln.output = make_requantizer(gamma_scale / (one * output_scale), output_zero_point, kU8Min,
                               kU8Max, mode, op);
  return ln;
}

namespace {

template <typename T>
void layer_norm_rows(const IntegerLayerNorm& ln, const T* x, int64_t rows, uint8_t* out) {
  const int64_t C = ln.channels;
  QT_CHECK(C >= 1 && static_cast<int64_t>(ln.gamma.size()) == C &&
               static_cast<int64_t>(ln.beta.size()) == C,
           "integer_layer_norm: the layer is not built by make_integer_layer_norm");
  QT_CHECK(rows >= 0, "integer_layer_norm: negative row count {}", rows);
  check_multiplier(ln.output.multiplier, "integer_layer_norm");
  // The input range, checked before the parallel loop (nothing inside it throws): one
  // vectorized min / max pass, then the offending element located only on failure.
  int64_t low = 0, high = 0;
  for (int64_t i = 0; i < rows * C; ++i) {
    low = std::min<int64_t>(low, x[i]);
    high = std::max<int64_t>(high, x[i]);
  }
  if (low < -kLayerNormMaxInput || high > kLayerNormMaxInput) {
    for (int64_t i = 0; i < rows * C; ++i)
      QT_CHECK(x[i] >= -kLayerNormMaxInput && x[i] <= kLayerNormMaxInput,
               "integer_layer_norm: row {}, channel {}: input code {} is beyond 2^15", i / C, i % C,
               int64_t{x[i]});
  }
  // Rows are independent: an OpenMP team over rows, each thread with its own row buffer. With
  // |q| <= 2^15 and C <= 4096 the bounds of the header hold, so the asserts below cannot fire.
#pragma omp parallel if (worth_parallel(rows * C, WorkCost::heavy))
  {
    std::vector<int32_t> row(static_cast<size_t>(C));  // gamma z + beta of one row
#pragma omp for schedule(static)
    for (int64_t r = 0; r < rows; ++r) {
      const T* q = x + r * C;
      int64_t sum = 0, sum_squares = 0;
      for (int64_t i = 0; i < C; ++i) {
        const int64_t v = q[i];
        sum += v;
        sum_squares += v * v;
      }
      const int64_t variance = C * sum_squares - sum * sum;  // C^2 var / S_in^2, exact, >= 0
      // (|q| <= 2^15, C <= 4096: variance <= C^2 2^30 <= 2^54)
      const int64_t w = variance + ln.eps_term;  // < 2^54 + 2^60
      int shift = 0;                             // s: W 4^s in [2^59, 2^61)
      if (w > 0) shift = (61 - std::bit_width(static_cast<uint64_t>(w))) / 2;
      if (shift < 0) shift = 0;
      const auto d = static_cast<int64_t>(integer_sqrt(static_cast<uint64_t>(w) << (2 * shift)));
      uint8_t* y = out + r * C;
      if (d == 0) {  // a constant row without eps: z = 0
        for (int64_t i = 0; i < C; ++i) row[i] = ln.beta[i];
      } else {
        // (numerator + d / 2) / d for every channel: one exact reciprocal per row
        // (quant/integer_divide.h), the same integers as the division.
        const ExactDivider by_d = make_exact_divider(static_cast<uint64_t>(d));
        const int64_t half = d / 2;
        for (int64_t i = 0; i < C; ++i) {
          const int64_t centered = C * int64_t{q[i]} - sum;  // |.| <= 2^28
          // |centered| 2^(15 + s) <= 2^52 (header); round half away from zero.
          const int64_t numerator = std::llabs(centered) << (kLayerNormFractionBits + shift);
          const auto magnitude =
              static_cast<int64_t>(divide(static_cast<uint64_t>(numerator + half), by_d));
          // |z| <= sqrt(C) 2^15 + 1 <= 2^21 + 1 (sum_i centered_i^2 = C variance, and d rounds
          // the square root down), so |gamma z + beta| < 2^31 below.
          const int64_t z = centered < 0 ? -magnitude : magnitude;
          row[i] =
              static_cast<int32_t>(int64_t{ln.gamma[i]} * z + ln.beta[i]);  // |.| < 2^31 (header)
        }
      }
      requantize(row.data(), C, ln.output, y);
    }
  }
}

}  // namespace

void integer_layer_norm(const IntegerLayerNorm& ln, const int32_t* x, int64_t rows, uint8_t* out) {
  layer_norm_rows(ln, x, rows, out);
}
void integer_layer_norm(const IntegerLayerNorm& ln, const int16_t* x, int64_t rows, uint8_t* out) {
  layer_norm_rows(ln, x, rows, out);
}
void integer_layer_norm(const IntegerLayerNorm& ln, const uint8_t* x, int64_t rows, uint8_t* out) {
  layer_norm_rows(ln, x, rows, out);
}

}  // namespace qt::quant
