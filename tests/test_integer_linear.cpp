// Tests for quant/integer_linear.*: the u8 x s8 linear layer with folded zero-point terms and the
// u8 x u8 attention matmuls. Truth: hand-computed cases, the plain-loop _ref functions (bit for
// bit, at 1 and 2 threads), and the float64 value (S_a S_w / S_o) acc + Z_o with acc the exact
// integer sum_k (a - Z_a) w + bias.
#include <doctest/doctest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <random>
#include <vector>

#include "quant/integer_linear.h"
#include "tensor/error.h"
#include "tensor/threads.h"
#include "tests/test_integer_common.h"

using namespace qt::quant;
using qt::test::LsbError;
using qt::test::ThreadGuard;

namespace {

template <typename T>
std::vector<T> random_codes(size_t n, int lo, int hi, std::mt19937& rng) {
  std::uniform_int_distribution<int> d(lo, hi);
  std::vector<T> v(n);
  for (T& x : v) x = static_cast<T>(d(rng));
  return v;
}

struct LinearCase {
  int64_t rows, in, out;
  bool per_channel;
  Requant mode;
};

}  // namespace

TEST_CASE("integer_linear: a hand-computed layer") {
  // x = [10, 20] with Z_a = 10, w = [[1, -2], [3, 4]], bias = [5, -6]:
  // acc0 = 0 * 1 + 10 * -2 + 5 = -15, acc1 = 0 * 3 + 10 * 4 - 6 = 34.
  // S_a S_w / S_o = 0.5 * 1 / 2 = 0.25, Z_o = 100: y0 = round(-3.75) + 100 = 96, y1 = 8.5 -> 108 or
  // 109 (ties: half even 108, half up 109).
  const int8_t w[] = {1, -2, 3, 4};
  const int32_t bias[] = {5, -6};
  const uint8_t x[] = {10, 20};
  uint8_t y[2];
  const IntegerLinear even =
      make_integer_linear(w, 2, 2, bias, 0.5, 10, {1.0}, 2.0, 100, Requant::single_half_even);
  integer_linear(even, x, 1, y);
  CHECK(y[0] == 96);
  CHECK(y[1] == 108);
  CHECK(even.folded_bias[0] == 5 - 10 * (1 - 2));
  CHECK(even.folded_bias[1] == -6 - 10 * (3 + 4));
  const IntegerLinear up =
      make_integer_linear(w, 2, 2, bias, 0.5, 10, {1.0}, 2.0, 100, Requant::single_half_up);
  integer_linear(up, x, 1, y);
  CHECK(y[1] == 109);
  int32_t acc[2];
  integer_linear_accumulators(up, x, 1, acc);
  CHECK(acc[0] == -15);
  CHECK(acc[1] == 34);
  // Fused ReLU: max(-15, 0) -> 0 -> Z_o.
  integer_linear_relu(up, x, 1, y);
  CHECK(y[0] == 100);
  CHECK(y[1] == 109);
  CHECK(quantize_bias(0.3, 0.5, 0.2) == 3);
}

TEST_CASE("integer_linear: fast == _ref bit for bit, any thread count; error vs float64 in LSB") {
  ThreadGuard guard;
  std::mt19937 rng(21);
  for (const LinearCase c : {LinearCase{29, 300, 37, false, Requant::double_rounding},
                             LinearCase{29, 300, 37, true, Requant::double_rounding},
                             LinearCase{64, 768, 96, true, Requant::single_half_up},
                             LinearCase{7, 1, 3, false, Requant::single_half_even},
                             LinearCase{130, 257, 65, true, Requant::single_half_away}}) {
    CAPTURE(c.rows);
    CAPTURE(c.in);
    CAPTURE(c.out);
    CAPTURE(c.per_channel);
    const auto x = random_codes<uint8_t>(c.rows * c.in, 0, 255, rng);
    const auto w = random_codes<int8_t>(c.out * c.in, -128, 127, rng);
    const auto bias = random_codes<int32_t>(c.out, -5000, 5000, rng);
    std::vector<double> w_scales(c.per_channel ? c.out : 1);
    std::uniform_real_distribution<double> scale(0.5e-3, 2e-3);
    for (double& s : w_scales) s = scale(rng);
    const double s_a = 0.02, z_a = 37;
    // The output range covers about +-4 standard deviations of acc (sd of a - Z_a about 116 with
    // the offset, of w about 74): S_o = 8 sd S_a S_w / 255 with the mean S_w.
    const double sd = std::sqrt(static_cast<double>(c.in)) * 116 * 74;
    const double s_o = 8 * sd * s_a * 1.25e-3 / 255;
    const int32_t z_o = 128;
    const IntegerLinear layer = make_integer_linear(w.data(), c.out, c.in, bias.data(), s_a, z_a,
                                                    w_scales, s_o, z_o, c.mode);
    std::vector<uint8_t> fast1(c.rows * c.out), fast2(c.rows * c.out), ref(c.rows * c.out);
    qt::set_num_threads(1);
    integer_linear(layer, x.data(), c.rows, fast1.data());
    qt::set_num_threads(2);
    integer_linear(layer, x.data(), c.rows, fast2.data());
    integer_linear_ref(layer, x.data(), c.rows, ref.data());
    CHECK(fast1 == ref);
    CHECK(fast2 == ref);
    LsbError error;
    int64_t clamped = 0;
    for (int64_t m = 0; m < c.rows; ++m)
      for (int64_t n = 0; n < c.out; ++n) {
        int64_t acc = bias[n];
        for (int64_t k = 0; k < c.in; ++k) acc += (int64_t{x[m * c.in + k]} - 37) * w[n * c.in + k];
        const double t =
            static_cast<double>(acc) * s_a * w_scales[c.per_channel ? n : 0] / s_o + z_o;
        clamped += t < 0 || t > 255;
        error.add(ref[m * c.out + n], std::clamp(t, 0.0, 255.0));
      }
    INFO(error.summary("integer_linear"));
    qt::test::report(error, std::string("integer_linear ") + std::string(requant_name(c.mode)));
    CHECK(clamped < error.count / 20);  // the test exercises the rounding, not only the clamp
    if (c.mode == Requant::double_rounding) {
      CHECK(error.max_error <= 1.0);
    } else {
      CHECK(error.max_error <= 0.5 + 1e-6);
      CHECK(error.max_code_error() == 0);
    }
    CHECK(error.mean_error() <= 0.3);
  }
}

TEST_CASE("integer_linear: a strided input (one head's slice, as a per-head gate reads it)") {
  std::mt19937 rng(23);
  const int64_t tokens = 10, heads = 4, head_dim = 16, hidden = heads * head_dim;
  const auto x = random_codes<uint8_t>(tokens * hidden, 0, 255, rng);
  const auto w = random_codes<int8_t>(3 * head_dim, -128, 127, rng);
  const IntegerLinear layer = make_integer_linear(w.data(), 3, head_dim, nullptr, 0.02, 90, {1e-3},
                                                  0.01, 100, Requant::single_half_even);
  for (int64_t h = 0; h < heads; ++h) {
    std::vector<uint8_t> dense(tokens * head_dim);
    for (int64_t t = 0; t < tokens; ++t)
      for (int64_t j = 0; j < head_dim; ++j)
        dense[t * head_dim + j] = x[t * hidden + h * head_dim + j];
    std::vector<uint8_t> strided(tokens * 3), ref(tokens * 3), expected(tokens * 3);
    integer_linear(layer, x.data() + h * head_dim, tokens, strided.data(), hidden);
    integer_linear_ref(layer, x.data() + h * head_dim, tokens, ref.data(), hidden);
    integer_linear(layer, dense.data(), tokens, expected.data());
    CHECK(strided == expected);
    CHECK(ref == expected);
  }
  std::vector<uint8_t> y(tokens * 3);
  CHECK_THROWS_WITH_AS(integer_linear(layer, x.data(), tokens, y.data(), head_dim - 1),
                       doctest::Contains("input row stride 15 < in_features 16"), qt::Error);
}

TEST_CASE("integer_linear, integer_matmul_u8u8: the accumulator at its largest allowed K") {
  // K = 65792 with a = 255, w = -128 (and a = 0, Z_a = 255): |acc| = 255 * 128 * K = 2147450880,
  // inside int32; fast and _ref agree and the accumulator is exact.
  const int64_t K = 65792;
  std::vector<uint8_t> hi(K, 255), lo(K, 0);
  std::vector<int8_t> w(K, -128);
  for (const int32_t za : {0, 255}) {
    const IntegerLinear layer = make_integer_linear(w.data(), 1, K, nullptr, 1.0, za, {1.0}, 1e8, 0,
                                                    Requant::single_half_even);
    int32_t acc = 0;
    integer_linear_accumulators(layer, za == 0 ? hi.data() : lo.data(), 1, &acc);
    CHECK(acc == (za == 0 ? -2147450880 : 2147450880));
    uint8_t fast = 0, ref = 1;
    integer_linear(layer, za == 0 ? hi.data() : lo.data(), 1, &fast);
    integer_linear_ref(layer, za == 0 ? hi.data() : lo.data(), 1, &ref);
    CHECK(fast == ref);
  }
  // Q K^T at K = 33025: (255 - 0)(0 - 255) K = -2147450625.
  const int64_t Km = 33025;
  std::vector<uint8_t> a(Km, 255), b(Km, 0);
  int32_t fast = 0, ref = 1;
  integer_matmul_u8u8(1, 1, 1, Km, {a.data(), Km, 0, 0}, {b.data(), Km, 0, 255}, BLayout::nk,
                      &fast);
  integer_matmul_u8u8_ref(1, 1, 1, Km, {a.data(), Km, 0, 0}, {b.data(), Km, 0, 255}, BLayout::nk,
                          &ref);
  CHECK(fast == -2147450625);
  CHECK(ref == fast);
}

TEST_CASE("integer_linear: bad layers and inputs are named errors") {
  const int8_t w[] = {1, 2, 3, 4};
  CHECK_THROWS_WITH_AS(make_integer_linear(w, 2, 2, nullptr, 0.1, 0, {1.0, 1.0, 1.0}, 1.0, 0,
                                           Requant::double_rounding),
                       doctest::Contains("3 weight scales for 2 output channels"), qt::Error);
  CHECK_THROWS_WITH_AS(
      make_integer_linear(w, 2, 2, nullptr, 0.1, 256, {1.0}, 1.0, 0, Requant::double_rounding),
      doctest::Contains("input zero point 256"), qt::Error);
  CHECK_THROWS_WITH_AS(
      make_integer_linear(w, 2, 2, nullptr, 0.1, 0, {-1.0}, 1.0, 0, Requant::double_rounding),
      doctest::Contains("weight scale -1 of channel 0"), qt::Error);
  const int32_t big_bias[] = {0, 2147480000};
  CHECK_THROWS_WITH_AS(
      make_integer_linear(w, 2, 2, big_bias, 0.1, 0, {1.0}, 1.0, 0, Requant::double_rounding),
      doctest::Contains("channel 1: the accumulator bound"), qt::Error);
  // K = 65793 is beyond the GEMM's limit even without a bias.
  std::vector<int8_t> limit(65793, 1);
  CHECK_THROWS_WITH_AS(make_integer_linear(limit.data(), 1, 65793, nullptr, 0.1, 0, {1.0}, 1.0, 0,
                                           Requant::double_rounding),
                       doctest::Contains("in_features = 65793 exceeds the int8 GEMM's limit"),
                       qt::Error);
  CHECK_THROWS_WITH_AS(
      make_integer_linear(w, 2, 2, nullptr, 0.1, 0, {1.0}, 1e-12, 0, Requant::double_rounding),
      doctest::Contains("too large"), qt::Error);
  CHECK_THROWS_WITH_AS(quantize_bias(1e9, 1e-3, 1e-3), doctest::Contains("beyond int32"),
                       qt::Error);
}

TEST_CASE("integer_matmul_u8u8: hand-computed, offsets, layouts, fast == _ref") {
  // A = [[1, 2]], Z_a = 1; B = [[3, 4]] ([N, K]), Z_b = 2: (0)(1) + (1)(2) = 2.
  const uint8_t a[] = {1, 2}, b[] = {3, 4};
  int32_t c[1];
  integer_matmul_u8u8(1, 1, 1, 2, {a, 2, 0, 1}, {b, 2, 0, 2}, BLayout::nk, c);
  CHECK(c[0] == 2);
  // The extremes: (255 - 0)(0 - 255) summed.
  const uint8_t hi[] = {255, 255, 255}, lo[] = {0, 0, 0};
  integer_matmul_u8u8(1, 1, 1, 3, {hi, 3, 0, 0}, {lo, 3, 0, 255}, BLayout::nk, c);
  CHECK(c[0] == -3 * 255 * 255);

  ThreadGuard guard;
  std::mt19937 rng(22);
  const int64_t batch = 3, M = 19, N = 23, K = 64;
  const auto A = random_codes<uint8_t>(batch * M * K, 0, 255, rng);
  const auto Bnk = random_codes<uint8_t>(batch * N * K, 0, 255, rng);
  // The same B stored [K, N] (P V's V).
  std::vector<uint8_t> Bkn(batch * K * N);
  for (int64_t i = 0; i < batch; ++i)
    for (int64_t n = 0; n < N; ++n)
      for (int64_t k = 0; k < K; ++k) Bkn[i * K * N + k * N + n] = Bnk[i * N * K + n * K + k];
  for (const int32_t za : {0, 128, 255})
    for (const int32_t zb : {0, 77, 255}) {
      CAPTURE(za);
      CAPTURE(zb);
      const U8Matrix ma{A.data(), K, M * K, za};
      std::vector<int32_t> fast1(batch * M * N), fast2(batch * M * N), ref(batch * M * N),
          kn(batch * M * N), exact(batch * M * N);
      qt::set_num_threads(1);
      integer_matmul_u8u8(batch, M, N, K, ma, {Bnk.data(), K, N * K, zb}, BLayout::nk,
                          fast1.data());
      qt::set_num_threads(2);
      integer_matmul_u8u8(batch, M, N, K, ma, {Bnk.data(), K, N * K, zb}, BLayout::nk,
                          fast2.data());
      integer_matmul_u8u8(batch, M, N, K, ma, {Bkn.data(), N, K * N, zb}, BLayout::kn, kn.data());
      integer_matmul_u8u8_ref(batch, M, N, K, ma, {Bkn.data(), N, K * N, zb}, BLayout::kn,
                              ref.data());
      for (int64_t i = 0; i < batch; ++i)
        for (int64_t m = 0; m < M; ++m)
          for (int64_t n = 0; n < N; ++n) {
            int64_t s = 0;
            for (int64_t k = 0; k < K; ++k)
              s += (A[i * M * K + m * K + k] - za) * (Bnk[i * N * K + n * K + k] - zb);
            exact[i * M * N + m * N + n] = static_cast<int32_t>(s);
          }
      CHECK(ref == exact);
      CHECK(fast1 == exact);
      CHECK(fast2 == exact);
      CHECK(kn == exact);
    }
  c[0] = 7;
  integer_matmul_u8u8(1, 1, 1, 0, {a, 0, 0, 5}, {b, 0, 0, 9}, BLayout::nk, c);  // empty sum
  CHECK(c[0] == 0);
  CHECK_THROWS_WITH_AS(
      integer_matmul_u8u8(1, 1, 1, 33026, {a, 33026, 0, 0}, {b, 33026, 0, 0}, BLayout::nk, c),
      doctest::Contains("K = 33026 is too large"), qt::Error);
  CHECK_THROWS_WITH_AS(integer_matmul_u8u8(1, 1, 1, 2, {a, 1, 0, 0}, {b, 2, 0, 0}, BLayout::nk, c),
                       doctest::Contains("A's leading dimension 1 < K = 2"), qt::Error);
  CHECK_THROWS_WITH_AS(
      integer_matmul_u8u8(1, 1, 1, 2, {a, 2, 0, 300}, {b, 2, 0, 0}, BLayout::nk, c),
      doctest::Contains("A zero point 300"), qt::Error);
}
