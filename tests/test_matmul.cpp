// Tests for tensor/matmul.*: NumPy matmul semantics over the BLAS layer.
// Truth: a naive triple loop in long double that reads both operands through Tensor::at (so views,
// broadcast batches and rank-1 promotion are resolved by the test itself, by index arithmetic).
#include <doctest/doctest.h>

#include <cmath>
#include <random>
#include <vector>

#include "tensor/matmul.h"
#include "tensor/tensor.h"
#include "tensor/view.h"

#include "tests/test_util.h"

using namespace qt;
using namespace qt::test;

namespace {

// The NumPy result shape and values, computed naively. Rank-1 a is [1, K], rank-1 b is [K, 1];
// batch dims broadcast (a batch index reads position 0 of a size-1 dim).
struct Reference {
  Shape shape;
  std::vector<double> values;
};

Reference naive_matmul(const Tensor& a, const Tensor& b) {
  const Shape as = a.dim() == 1 ? Shape{1, a.shape()[0]} : a.shape();
  const Shape bs = b.dim() == 1 ? Shape{b.shape()[0], 1} : b.shape();
  const int64_t M = as[as.size() - 2], K = as.back(), N = bs.back();
  const Shape a_batch(as.begin(), as.end() - 2), b_batch(bs.begin(), bs.end() - 2);
  const size_t rank = std::max(a_batch.size(), b_batch.size());
  Shape batch(rank);
  for (size_t i = 0; i < rank; ++i) {
    const int64_t da = i + a_batch.size() >= rank ? a_batch[i + a_batch.size() - rank] : 1;
    const int64_t db = i + b_batch.size() >= rank ? b_batch[i + b_batch.size() - rank] : 1;
    batch[i] = std::max(da, db);
  }
  // Reads element (batch index, row, col) of an operand with its own batch dims and rank-1 rule.
  auto read = [&](const Tensor& t, const Shape& own_batch, const std::vector<int64_t>& batch_index,
                  int64_t row, int64_t col, bool is_left) {
    if (t.dim() == 1) return t.at({is_left ? col : row});
    std::vector<int64_t> index;
    for (size_t d = 0; d < own_batch.size(); ++d) {
      const int64_t i = batch_index[rank - own_batch.size() + d];
      index.push_back(own_batch[d] == 1 ? 0 : i);
    }
    index.push_back(row);
    index.push_back(col);
    return t.at(index);
  };
  Reference ref;
  for (int64_t p = 0; p < numel_of(batch); ++p) {
    const std::vector<int64_t> bi = unravel_index(p, batch);
    for (int64_t m = 0; m < M; ++m)
      for (int64_t n = 0; n < N; ++n) {
        long double s = 0;
        for (int64_t k = 0; k < K; ++k)
          s += static_cast<long double>(read(a, a_batch, bi, m, k, true)) *
               read(b, b_batch, bi, k, n, false);
        ref.values.push_back(static_cast<double>(s));
      }
  }
  ref.shape = batch;
  if (a.dim() > 1) ref.shape.push_back(M);
  if (b.dim() > 1) ref.shape.push_back(N);
  return ref;
}

// matmul(a, b) against the naive reference: shape, dtype and every value within tolerance *
// sqrt(K).
void check_matmul(const Tensor& a, const Tensor& b) {
  const Reference ref = naive_matmul(a, b);
  const Tensor out = ops::matmul(a, b);
  INFO("a ", shape_str(a.shape()), " b ", shape_str(b.shape()));
  REQUIRE(out.shape() == ref.shape);
  CHECK(out.dtype() == a.dtype());
  const double tolerance = a.dtype() == DType::f32 ? 1e-5 : 1e-13;
  const int64_t K = a.shape().back();
  double worst = 0;
  for (int64_t p = 0; p < out.numel(); ++p)
    worst = std::max(worst, std::abs(out.at(unravel_index(p, out.shape())) - ref.values[p]));
  CHECK(worst <= tolerance * std::sqrt(static_cast<double>(K) + 1));
}

}  // namespace

TEST_CASE("matmul: 2D products, f32 and f64") {
  for (DType dtype : {DType::f32, DType::f64}) {
    check_matmul(random_tensor({5, 7}, dtype, 1), random_tensor({7, 3}, dtype, 2));
    check_matmul(random_tensor({1, 9}, dtype, 3), random_tensor({9, 1}, dtype, 4));
    check_matmul(random_tensor({33, 65}, dtype, 5), random_tensor({65, 17}, dtype, 6));
  }
}

TEST_CASE("matmul: batched, with broadcast batch dims") {
  check_matmul(random_tensor({2, 1, 3, 4}, DType::f32, 10),
               random_tensor({5, 4, 6}, DType::f32, 11));
  check_matmul(random_tensor({3, 5, 4}, DType::f32, 12), random_tensor({3, 4, 2}, DType::f32, 13));
  check_matmul(random_tensor({3, 5, 4}, DType::f64, 14),
               random_tensor({4, 2}, DType::f64, 15));  // shared B
  check_matmul(random_tensor({4, 2}, DType::f64, 16),
               random_tensor({3, 2, 5}, DType::f64, 17));  // shared A
  check_matmul(random_tensor({2, 3, 1, 4, 5}, DType::f32, 18),
               random_tensor({3, 2, 5, 2}, DType::f32, 19));
}

TEST_CASE("matmul: rank-1 operands") {
  const DType f = DType::f64;
  check_matmul(random_tensor({4}, f, 20), random_tensor({4}, f, 21));        // dot -> []
  check_matmul(random_tensor({4}, f, 22), random_tensor({4, 3}, f, 23));     // -> [3]
  check_matmul(random_tensor({2, 3, 4}, f, 24), random_tensor({4}, f, 25));  // -> [2, 3]
  check_matmul(random_tensor({4}, f, 26), random_tensor({2, 4, 3}, f, 27));  // -> [2, 3]
  CHECK(ops::matmul(random_tensor({4}, f, 20), random_tensor({4}, f, 21)).shape() == Shape{});
}

TEST_CASE("matmul: transposed, narrowed and expanded views") {
  const Tensor w = random_tensor({6, 4}, DType::f32, 30);  // a Linear weight [out, in]
  const Tensor x = random_tensor({2, 5, 4}, DType::f32, 31);
  const Tensor wt = ops::transpose(w, 0, 1);  // strides (1, 4): passed as Trans::yes
  check_matmul(x, wt);
  check_matmul(ops::transpose(random_tensor({4, 5}, DType::f32, 32), 0, 1), wt);  // both transposed
  // Both operands transposed, batched.
  const Tensor at = ops::transpose(random_tensor({3, 7, 5}, DType::f64, 33), 1, 2);  // [3, 5, 7]
  const Tensor bt = ops::transpose(random_tensor({3, 2, 7}, DType::f64, 34), 1, 2);  // [3, 7, 2]
  check_matmul(at, bt);
  // Batch dims permuted (irregular batch strides).
  const Tensor ap =
      ops::permute(random_tensor({5, 3, 2, 4}, DType::f32, 35), {2, 1, 0, 3});  // [2, 3, 5, 4]
  check_matmul(ap, random_tensor({3, 4, 6}, DType::f32, 36));
  // Narrowed columns (row stride larger than the width) and a narrowed transposed view.
  const Tensor wide = random_tensor({5, 10}, DType::f32, 37);
  check_matmul(ops::narrow(wide, 1, 3, 4), random_tensor({4, 3}, DType::f32, 38));
  check_matmul(random_tensor({2, 5}, DType::f32, 39),
               ops::narrow(ops::transpose(wide, 0, 1), 0, 2, 5));
  // Expanded operands: a stride-0 batch dim, and a stride-0 matrix dim (must be copied).
  check_matmul(random_tensor({3, 2, 4}, DType::f32, 40),
               ops::expand(random_tensor({4, 6}, DType::f32, 41), {3, 4, 6}));
  check_matmul(ops::expand(random_tensor({1, 4}, DType::f32, 42), {5, 4}),
               random_tensor({4, 3}, DType::f32, 43));
  // Every-other row of a batch (a strided batch dim).
  const Tensor batch = random_tensor({6, 3, 4}, DType::f64, 44);
  check_matmul(ops::narrow(batch, 0, 1, 4), random_tensor({4, 4, 2}, DType::f64, 45));
  // A shared right operand with left matrices that are not back to back in memory (gaps between
  // batch entries), and with back-to-back ones (the batch can be folded into M).
  const Tensor gapped =
      ops::narrow(random_tensor({3, 7, 4}, DType::f32, 46), 1, 0, 5);  // [3, 5, 4]
  check_matmul(gapped, random_tensor({4, 2}, DType::f32, 47));
  check_matmul(ops::select(random_tensor({3, 2, 5, 4}, DType::f32, 48), 1, 1), wt);
  check_matmul(ops::narrow(random_tensor({3, 5, 6}, DType::f32, 49), 2, 1, 4), wt);
}

TEST_CASE("matmul: empty dims") {
  const Tensor k0 =
      ops::matmul(Tensor::empty({3, 0}, DType::f32), Tensor::empty({0, 2}, DType::f32));
  CHECK(k0.shape() == Shape{3, 2});
  for (int64_t p = 0; p < 6; ++p)
    CHECK(k0.at(unravel_index(p, {3, 2})) == 0.0);  // an empty sum is 0
  CHECK(ops::matmul(Tensor::empty({0, 4}, DType::f32), random_tensor({4, 2}, DType::f32, 1))
            .shape() == Shape{0, 2});
  CHECK(ops::matmul(Tensor::empty({2, 0, 3, 4}, DType::f32), random_tensor({4, 2}, DType::f32, 1))
            .shape() == Shape{2, 0, 3, 2});
}

TEST_CASE("matmul: errors name both shapes") {
  const Tensor a = random_tensor({2, 3}, DType::f32, 50);
  CHECK_THROWS_WITH_AS(ops::matmul(a, random_tensor({4, 5}, DType::f32, 51)),
                       doctest::Contains("[2, 3] and [4, 5]"), Error);
  CHECK_THROWS_AS(ops::matmul(random_tensor({3}, DType::f32, 1), random_tensor({4}, DType::f32, 2)),
                  Error);
  CHECK_THROWS_WITH_AS(ops::matmul(random_tensor({2, 2, 3}, DType::f32, 52),
                                   random_tensor({3, 3, 4}, DType::f32, 53)),
                       doctest::Contains("[2, 2, 3] and [3, 3, 4]"), Error);
  CHECK_THROWS_AS(ops::matmul(a, random_tensor({3, 2}, DType::f64, 54)), Error);  // dtype mismatch
  Tensor ints = Tensor::empty({3, 2}, DType::i32);
  CHECK_THROWS_AS(ops::matmul(ints, ints), Error);
  CHECK_THROWS_AS(ops::matmul(Tensor::empty({}, DType::f32), a), Error);  // rank 0
  CHECK_THROWS_AS(ops::matmul(Tensor(), a), Error);
}
