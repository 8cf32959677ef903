// Tests of the BLAS backend layer (tensor/blas/gemm.h) and the thread setting (tensor/threads.h).
// References are plain loops: float GEMM against a float64 loop, integer GEMM against an int64
// loop.
#include <doctest/doctest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <random>
#include <vector>

#include "tensor/blas/gemm.h"
#include "tensor/blas/gemm_internal.h"
#include "tensor/error.h"
#include "tensor/threads.h"

namespace {

using qt::blas::Backend;
using qt::blas::Trans;

// Restores the thread count and backend when a test ends, whatever it set.
struct SettingsGuard {
  int threads = qt::num_threads();
  Backend backend = qt::blas::backend();
  ~SettingsGuard() {
    qt::set_num_threads(threads);
    qt::blas::set_backend(backend);
  }
};

template <typename T>
std::vector<T> random_vector(size_t n, std::mt19937& rng) {
  std::uniform_real_distribution<double> uniform(-1.0, 1.0);
  std::vector<T> v(n);
  for (T& x : v) x = static_cast<T>(uniform(rng));
  return v;
}

// One GEMM problem with stored shapes and (possibly padded) leading dimensions.
struct Problem {
  Trans ta, tb;
  int64_t M, N, K, lda, ldb, ldc;
  int64_t a_rows() const { return ta == Trans::no ? M : K; }
  int64_t b_rows() const { return tb == Trans::no ? K : N; }
};

Problem make_problem(Trans ta, Trans tb, int64_t M, int64_t N, int64_t K, int64_t pad = 0) {
  const int64_t a_cols = ta == Trans::no ? K : M, b_cols = tb == Trans::no ? N : K;
  return {ta,
          tb,
          M,
          N,
          K,
          std::max<int64_t>(1, a_cols) + pad,
          std::max<int64_t>(1, b_cols) + pad,
          std::max<int64_t>(1, N) + pad};
}

// C = alpha * op(A) op(B) + beta * C in float64 (beta == 0: C not read).
template <typename T>
std::vector<double> reference_gemm(const Problem& p, double alpha, const std::vector<T>& A,
                                   const std::vector<T>& B, double beta, const std::vector<T>& C) {
  std::vector<double> out(C.begin(), C.end());
  for (int64_t i = 0; i < p.M; ++i)
    for (int64_t j = 0; j < p.N; ++j) {
      double sum = 0;
      for (int64_t k = 0; k < p.K; ++k) {
        const double a = p.ta == Trans::no ? A[i * p.lda + k] : A[k * p.lda + i];
        const double b = p.tb == Trans::no ? B[k * p.ldb + j] : B[j * p.ldb + k];
        sum += a * b;
      }
      double& c = out[i * p.ldc + j];
      c = alpha * sum + (beta == 0 ? 0.0 : beta * c);
    }
  return out;
}

// max |x - y| / max(|y|, 1) over the M x N block: relative to the size of the result.
template <typename X, typename Y>
double max_rel_error(const Problem& p, const std::vector<X>& x, const std::vector<Y>& y) {
  double err = 0, scale = 1;
  for (int64_t i = 0; i < p.M; ++i)
    for (int64_t j = 0; j < p.N; ++j) {
      const double a = x[i * p.ldc + j], b = y[i * p.ldc + j];
      if (std::isnan(a) || std::isnan(b)) return std::numeric_limits<double>::infinity();
      err = std::max(err, std::abs(a - b));
      scale = std::max(scale, std::abs(b));
    }
  return err / scale;
}

std::vector<float> run_sgemm(Backend backend, const Problem& p, float alpha,
                             const std::vector<float>& A, const std::vector<float>& B, float beta,
                             std::vector<float> C) {
  qt::blas::sgemm_with(backend, p.ta, p.tb, p.M, p.N, p.K, alpha, A.data(), p.lda, B.data(), p.ldb,
                       beta, C.data(), p.ldc);
  return C;
}

// Checks both backends against the float64 loop and against each other.
void check_sgemm(const Problem& p, float alpha, float beta, std::mt19937& rng) {
  const auto A = random_vector<float>(p.a_rows() * p.lda, rng);
  const auto B = random_vector<float>(p.b_rows() * p.ldb, rng);
  const auto C = random_vector<float>(p.M * p.ldc, rng);
  const auto ref = reference_gemm(p, alpha, A, B, beta, C);
  const auto ob = run_sgemm(Backend::openblas, p, alpha, A, B, beta, C);
  const auto own = run_sgemm(Backend::own, p, alpha, A, B, beta, C);
  INFO("M = " << p.M << ", N = " << p.N << ", K = " << p.K << ", trans_a = " << (p.ta == Trans::yes)
              << ", trans_b = " << (p.tb == Trans::yes) << ", alpha = " << alpha
              << ", beta = " << beta);
  CHECK(max_rel_error(p, own, ref) < 1e-5);
  CHECK(max_rel_error(p, ob, ref) < 1e-5);
  CHECK(max_rel_error(p, own, ob) < 1e-5);
  // Padding columns of C (ldc > N) are untouched.
  bool padding_intact = true;
  for (int64_t i = 0; i < p.M; ++i)
    for (int64_t j = p.N; j < p.ldc; ++j) padding_intact &= own[i * p.ldc + j] == C[i * p.ldc + j];
  CHECK(padding_intact);
}

const Trans kTrans[] = {Trans::no, Trans::yes};

}  // namespace

TEST_CASE("sgemm: own and OpenBLAS agree with a float64 loop on odd shapes, all transposes") {
  std::mt19937 rng(42);
  const int64_t shapes[][3] = {{1, 1, 1},     {7, 7, 7},     {129, 129, 129}, {1, 300, 7},
                               {300, 1, 129}, {7, 129, 300}, {129, 300, 1},   {300, 7, 129},
                               {13, 33, 257}, {45, 100, 64}};
  for (Trans ta : kTrans)
    for (Trans tb : kTrans) {
      for (const auto& s : shapes)
        check_sgemm(make_problem(ta, tb, s[0], s[1], s[2]), 1.0f, 0.0f, rng);
      // A few random shapes with padded leading dimensions and general alpha / beta.
      std::uniform_int_distribution<int64_t> dim(1, 160);
      for (int r = 0; r < 3; ++r)
        check_sgemm(make_problem(ta, tb, dim(rng), dim(rng), dim(rng), 5), -0.75f, 0.5f, rng);
    }
}

TEST_CASE("sgemm: alpha and beta, including beta == 0 with NaN in C") {
  std::mt19937 rng(7);
  for (Backend backend : {Backend::openblas, Backend::own}) {
    CAPTURE(qt::blas::backend_name(backend));
    const Problem p = make_problem(Trans::no, Trans::yes, 37, 45, 53, 3);
    const auto A = random_vector<float>(p.a_rows() * p.lda, rng);
    const auto B = random_vector<float>(p.b_rows() * p.ldb, rng);
    const auto C0 = random_vector<float>(p.M * p.ldc, rng);
    for (float alpha : {1.0f, 2.5f, -1.0f})
      for (float beta : {0.0f, 1.0f, -0.5f}) {
        const auto ref = reference_gemm(p, alpha, A, B, beta, C0);
        CHECK(max_rel_error(p, run_sgemm(backend, p, alpha, A, B, beta, C0), ref) < 1e-5);
      }

    // beta == 0: C is overwritten without being read, so NaNs in it must not leak.
    std::vector<float> nan_c(p.M * p.ldc, std::numeric_limits<float>::quiet_NaN());
    const auto ref = reference_gemm(p, 1.5, A, B, 0.0, std::vector<float>(p.M * p.ldc, 0.0f));
    CHECK(max_rel_error(p, run_sgemm(backend, p, 1.5f, A, B, 0.0f, nan_c), ref) < 1e-5);

    // alpha == 0 or K == 0: C = beta * C (and C = 0 for beta == 0, even over NaNs).
    auto out = run_sgemm(backend, p, 0.0f, A, B, 0.0f, nan_c);
    CHECK(std::all_of(out.begin(), out.end(), [&](float v) { return v == 0.0f || std::isnan(v); }));
    CHECK(out[0] == 0.0f);
    out = run_sgemm(backend, p, 0.0f, A, B, 2.0f, C0);
    CHECK(out[5] == 2.0f * C0[5]);
    std::vector<float> c_k0 = nan_c;
    qt::blas::sgemm_with(backend, Trans::no, Trans::no, 4, 5, 0, 1.0f, A.data(), 1, B.data(), 5,
                         0.0f, c_k0.data(), 5);
    CHECK(std::all_of(c_k0.begin(), c_k0.begin() + 20, [](float v) { return v == 0.0f; }));
    // M == 0 or N == 0: nothing happens.
    qt::blas::sgemm_with(backend, Trans::no, Trans::no, 0, 5, 3, 1.0f, A.data(), 3, B.data(), 5,
                         0.0f, nullptr, 5);
  }
}

TEST_CASE("sgemm: the own kernel is bit-identical with 1, 2 and 3 threads") {
  SettingsGuard guard;
  std::mt19937 rng(3);
  // Tall (threads split M), wide (threads split N), and ragged in every direction.
  const int64_t shapes[][3] = {{517, 96, 300}, {20, 1000, 130}, {129, 257, 700}};
  for (const auto& s : shapes)
    for (Trans tb : kTrans) {
      const Problem p = make_problem(Trans::no, tb, s[0], s[1], s[2]);
      const auto A = random_vector<float>(p.a_rows() * p.lda, rng);
      const auto B = random_vector<float>(p.b_rows() * p.ldb, rng);
      const auto C = random_vector<float>(p.M * p.ldc, rng);
      std::vector<std::vector<float>> results;
      for (int threads : {1, 2, 3}) {
        qt::set_num_threads(threads);
        results.push_back(run_sgemm(Backend::own, p, 0.5f, A, B, 0.25f, C));
      }
      CAPTURE(s[0]);
      CAPTURE(s[1]);
      CAPTURE(s[2]);
      CHECK(std::memcmp(results[0].data(), results[1].data(), results[0].size() * 4) == 0);
      CHECK(std::memcmp(results[0].data(), results[2].data(), results[0].size() * 4) == 0);
    }
}

TEST_CASE("sgemm_batched: strided batches and stride-0 broadcast match one-by-one sgemm") {
  SettingsGuard guard;
  std::mt19937 rng(11);
  for (Backend backend : {Backend::openblas, Backend::own}) {
    qt::blas::set_backend(backend);
    CHECK(qt::blas::backend() == backend);
    // Small matrices, big batch (parallel over the batch) and bigger ones, few (threaded each).
    const int64_t cases[][4] = {{9, 7, 5, 64}, {150, 130, 140, 3}};
    for (const auto& cs : cases)
      for (int broadcast = 0; broadcast < 3; ++broadcast) {  // 0: none, 1: A shared, 2: B shared
        const int64_t M = cs[0], N = cs[1], K = cs[2], batch = cs[3];
        const int64_t sa = broadcast == 1 ? 0 : M * K, sb = broadcast == 2 ? 0 : N * K;
        const auto A = random_vector<float>(std::max<int64_t>(1, sa * batch) + M * K, rng);
        const auto B = random_vector<float>(std::max<int64_t>(1, sb * batch) + N * K, rng);
        const auto C0 = random_vector<float>(M * N * batch, rng);
        auto C = C0;
        // B stored [N, K] (trans_b), as in attention's Q K^T.
        qt::blas::sgemm_batched(Trans::no, Trans::yes, M, N, K, 1.0f, A.data(), K, sa, B.data(), K,
                                sb, 0.5f, C.data(), N, M * N, batch);
        auto expected = C0;
        for (int64_t b = 0; b < batch; ++b)
          qt::blas::sgemm(Trans::no, Trans::yes, M, N, K, 1.0f, A.data() + b * sa, K,
                          B.data() + b * sb, K, 0.5f, expected.data() + b * M * N, N);
        CAPTURE(M);
        CAPTURE(broadcast);
        const Problem whole{Trans::no, Trans::no, M * batch, N, K, K, N, N};
        CHECK(max_rel_error(whole, C, expected) < 1e-6);
      }
  }
}

TEST_CASE("dgemm and dgemm_batched agree with a float64 loop") {
  std::mt19937 rng(5);
  for (Trans ta : kTrans)
    for (Trans tb : kTrans) {
      const Problem p = make_problem(ta, tb, 33, 17, 65, 2);
      const auto A = random_vector<double>(p.a_rows() * p.lda, rng);
      const auto B = random_vector<double>(p.b_rows() * p.ldb, rng);
      auto C = random_vector<double>(p.M * p.ldc, rng);
      const auto ref = reference_gemm(p, 0.5, A, B, -1.5, C);
      qt::blas::dgemm(ta, tb, p.M, p.N, p.K, 0.5, A.data(), p.lda, B.data(), p.ldb, -1.5, C.data(),
                      p.ldc);
      CHECK(max_rel_error(p, C, ref) < 1e-12);
    }
  const int64_t M = 6, N = 5, K = 4, batch = 20;
  const auto A = random_vector<double>(M * K * batch, rng);
  const auto B = random_vector<double>(K * N, rng);  // broadcast
  std::vector<double> C(M * N * batch, std::numeric_limits<double>::quiet_NaN());
  qt::blas::dgemm_batched(Trans::no, Trans::no, M, N, K, 1.0, A.data(), K, M * K, B.data(), N, 0,
                          0.0, C.data(), N, M * N, batch);
  for (int64_t b = 0; b < batch; ++b) {
    const Problem p = make_problem(Trans::no, Trans::no, M, N, K);
    const std::vector<double> Ab(A.begin() + b * M * K, A.begin() + (b + 1) * M * K);
    const std::vector<double> Cb(C.begin() + b * M * N, C.begin() + (b + 1) * M * N);
    CHECK(max_rel_error(p, Cb, reference_gemm(p, 1.0, Ab, B, 0.0, std::vector<double>(M * N))) <
          1e-12);
  }
}

namespace {

// C (+)= A [M, K] u8 x B [N, K]^T s8, in int64, wrapped to s32 at the end like the kernels.
std::vector<int32_t> naive_int8(int64_t M, int64_t N, int64_t K, const std::vector<uint8_t>& A,
                                int64_t lda, const std::vector<int8_t>& B, int64_t ldb,
                                std::vector<int32_t> C, int64_t ldc, bool accumulate) {
  for (int64_t i = 0; i < M; ++i)
    for (int64_t j = 0; j < N; ++j) {
      int64_t sum = accumulate ? C[i * ldc + j] : 0;
      for (int64_t k = 0; k < K; ++k) sum += int64_t(A[i * lda + k]) * int64_t(B[j * ldb + k]);
      C[i * ldc + j] = static_cast<int32_t>(sum);
    }
  return C;
}

}  // namespace

TEST_CASE("gemm_u8s8s32: dispatched kernel and reference match an int64 loop exactly") {
  SettingsGuard guard;
  std::mt19937 rng(9);
  std::uniform_int_distribution<int> u8(0, 255), s8(-128, 127), coin(0, 3);
  const int64_t shapes[][3] = {{1, 1, 1},    {1, 1, 4},       {7, 33, 5},   {25, 70, 131},
                               {13, 32, 64}, {100, 64, 1023}, {3, 300, 66}, {40, 17, 3}};
  for (const auto& s : shapes)
    for (int mode = 0; mode < 3; ++mode) {  // 0: random, 1: extremes 255 x -128, 2: accumulate
      const int64_t M = s[0], N = s[1], K = s[2];
      const int64_t lda = K + (mode == 2 ? 3 : 0), ldb = K + (mode == 2 ? 1 : 0);
      const int64_t ldc = N + (mode == 2 ? 2 : 0);
      std::vector<uint8_t> A(M * lda);
      std::vector<int8_t> B(N * ldb);
      for (auto& v : A) v = static_cast<uint8_t>(mode == 1 ? (coin(rng) ? 255 : u8(rng)) : u8(rng));
      for (auto& v : B) v = static_cast<int8_t>(mode == 1 ? (coin(rng) ? -128 : s8(rng)) : s8(rng));
      std::vector<int32_t> C0(M * ldc);
      for (auto& v : C0) v = static_cast<int32_t>(rng());
      const bool accumulate = mode == 2;
      const auto expected = naive_int8(M, N, K, A, lda, B, ldb, C0, ldc, accumulate);
      for (int threads : {1, 2}) {
        qt::set_num_threads(threads);
        auto C = C0;
        qt::blas::gemm_u8s8s32(M, N, K, A.data(), lda, B.data(), ldb, C.data(), ldc, accumulate);
        CAPTURE(M);
        CAPTURE(N);
        CAPTURE(K);
        CAPTURE(mode);
        CHECK(C == expected);
      }
      auto R = C0;
      qt::blas::gemm_u8s8s32_reference(M, N, K, A.data(), lda, B.data(), ldb, R.data(), ldc,
                                       accumulate);
      CHECK(R == expected);
      // The AVX2 kernel directly (dispatched only without VNNI), on 1 and 2 threads.
      if (qt::blas::detail::int8_avx2_available())
        for (int threads : {1, 2}) {
          auto V = C0;
          qt::blas::detail::gemm_u8s8s32_avx2(M, N, K, A.data(), lda, B.data(), ldb, V.data(), ldc,
                                              accumulate, threads);
          CAPTURE(threads);
          CHECK(V == expected);
        }
    }
}

TEST_CASE("gemm_u8s8s32: the largest allowed K with extreme values is exact") {
  const int64_t M = 2, N = 3, K = 65792;
  std::vector<uint8_t> A(M * K, 255);
  std::vector<int8_t> B(N * K, -128);
  std::vector<int32_t> C(M * N);
  qt::blas::gemm_u8s8s32(M, N, K, A.data(), K, B.data(), K, C.data(), N);
  CHECK(C[0] == int64_t(-32640) * K);
  CHECK(C[5] == int64_t(-32640) * K);
}

TEST_CASE("gemm: bad arguments throw qt::Error") {
  std::vector<float> f(64, 1.0f);
  std::vector<double> d(64, 1.0);
  std::vector<uint8_t> a(64);
  std::vector<int8_t> b(64);
  std::vector<int32_t> c(64);
  float* F = f.data();
  // Negative sizes.
  CHECK_THROWS_AS(qt::blas::sgemm(Trans::no, Trans::no, -1, 2, 2, 1.0f, F, 2, F, 2, 0.0f, F, 2),
                  qt::Error);
  CHECK_THROWS_AS(qt::blas::sgemm_with(Backend::own, Trans::no, Trans::no, 2, 2, -3, 1.0f, F, 2, F,
                                       2, 0.0f, F, 2),
                  qt::Error);
  // Leading dimensions too small: A [4, 3] needs lda >= 3; transposed A [3, 4] needs lda >= 4.
  CHECK_THROWS_AS(qt::blas::sgemm(Trans::no, Trans::no, 4, 2, 3, 1.0f, F, 2, F, 2, 0.0f, F, 2),
                  qt::Error);
  CHECK_THROWS_AS(qt::blas::sgemm(Trans::yes, Trans::no, 4, 2, 3, 1.0f, F, 3, F, 2, 0.0f, F, 2),
                  qt::Error);
  CHECK_THROWS_AS(qt::blas::sgemm(Trans::no, Trans::yes, 4, 2, 3, 1.0f, F, 3, F, 2, 0.0f, F, 2),
                  qt::Error);
  CHECK_THROWS_AS(qt::blas::sgemm(Trans::no, Trans::no, 4, 5, 3, 1.0f, F, 3, F, 5, 0.0f, F, 4),
                  qt::Error);
  CHECK_THROWS_AS(qt::blas::dgemm(Trans::no, Trans::no, 2, 2, 2, 1.0, d.data(), 1, d.data(), 2, 0.0,
                                  d.data(), 2),
                  qt::Error);
  // The message names the function and the bad value.
  try {
    qt::blas::sgemm(Trans::no, Trans::no, 4, 2, 3, 1.0f, F, 2, F, 2, 0.0f, F, 2);
  } catch (const qt::Error& e) {
    const std::string what = e.what();
    CHECK(what.find("sgemm") != std::string::npos);
    CHECK(what.find("lda = 2") != std::string::npos);
  }
  // Batched: negative batch, negative stride, every product into one C.
  CHECK_THROWS_AS(qt::blas::sgemm_batched(Trans::no, Trans::no, 2, 2, 2, 1.0f, F, 2, 4, F, 2, 4,
                                          0.0f, F, 2, 4, -1),
                  qt::Error);
  CHECK_THROWS_AS(qt::blas::sgemm_batched(Trans::no, Trans::no, 2, 2, 2, 1.0f, F, 2, -4, F, 2, 4,
                                          0.0f, F, 2, 4, 2),
                  qt::Error);
  CHECK_THROWS_AS(qt::blas::sgemm_batched(Trans::no, Trans::no, 2, 2, 2, 1.0f, F, 2, 4, F, 2, 4,
                                          0.0f, F, 2, 0, 2),
                  qt::Error);
  CHECK_THROWS_AS(qt::blas::dgemm_batched(Trans::no, Trans::no, 2, 2, 2, 1.0, d.data(), 2, 4,
                                          d.data(), 1, 4, 0.0, d.data(), 2, 4, 2),
                  qt::Error);
  // Integer GEMM: K limit, leading dimensions, negative sizes.
  CHECK_THROWS_AS(
      qt::blas::gemm_u8s8s32(1, 1, 65793, a.data(), 65793, b.data(), 65793, c.data(), 1),
      qt::Error);
  CHECK_THROWS_AS(
      qt::blas::gemm_u8s8s32_reference(1, 1, 70000, a.data(), 70000, b.data(), 70000, c.data(), 1),
      qt::Error);
  CHECK_THROWS_AS(qt::blas::gemm_u8s8s32(2, 2, 4, a.data(), 3, b.data(), 4, c.data(), 2),
                  qt::Error);
  CHECK_THROWS_AS(qt::blas::gemm_u8s8s32(2, 2, 4, a.data(), 4, b.data(), 4, c.data(), 1),
                  qt::Error);
  CHECK_THROWS_AS(qt::blas::gemm_u8s8s32(2, -2, 4, a.data(), 4, b.data(), 4, c.data(), 2),
                  qt::Error);
  // Threads.
  CHECK_THROWS_AS(qt::set_num_threads(0), qt::Error);
}

TEST_CASE("backend selection and names") {
  SettingsGuard guard;
  CHECK(qt::blas::backend_name(Backend::openblas) == "openblas");
  CHECK(qt::blas::backend_name(Backend::own) == "own");
  qt::blas::set_backend(Backend::own);
  CHECK(qt::blas::backend() == Backend::own);
  qt::blas::set_backend(Backend::openblas);
  CHECK(qt::blas::backend() == Backend::openblas);
  CHECK(qt::num_threads() >= 1);
}
