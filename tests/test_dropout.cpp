// Tests for nn/dropout.*. Truth: the statistics of the keep rate (binomial, 1 - p), the definition
// m_i = [u_i >= p] written out against tensor/random.h's random_uniform, the threshold property of
// that definition (kept at a larger p implies kept at a smaller p), and bit comparisons between
// thread counts and streams.
#include <doctest/doctest.h>

#include <cmath>
#include <limits>
#include <memory>
#include <vector>

#include "autograd/functions.h"
#include "nn/dropout.h"
#include "tensor/random.h"
#include "tensor/threads.h"
#include "test_util.h"

using namespace qt;
using qt::test::random_tensor;

namespace {

// 1 where y != 0 (inputs are drawn so that no element is exactly 0).
std::vector<uint8_t> kept_positions(const Tensor& y) {
  const std::vector<float> values = ops::to_vector<float>(y);
  std::vector<uint8_t> kept(values.size());
  for (size_t i = 0; i < values.size(); ++i) kept[i] = values[i] != 0.0f;
  return kept;
}

Tensor nonzero_input(const Shape& shape, unsigned seed) {
  Tensor x = ops::ones(shape);  // 1 + |N(0,1)|: never 0
  return ops::add(x, ops::abs(random_tensor(shape, DType::f32, seed)));
}

}  // namespace

TEST_CASE("dropout: the keep rate is 1 - p and kept values are scaled by 1/(1-p)") {
  const Tensor x = nonzero_input({400, 500}, 1);
  const std::vector<float> xv = ops::to_vector<float>(x);
  for (float p : {0.1f, 0.5f, 0.9f}) {
    const Tensor y = nn::dropout(x, p, 42, 3);
    const std::vector<float> yv = ops::to_vector<float>(y);
    int64_t kept = 0;
    for (size_t i = 0; i < yv.size(); ++i) {
      if (yv[i] == 0.0f) continue;
      ++kept;
      // Kept values are x / (1 - p) up to one f32 rounding of the scale and one of the product.
      CHECK(std::abs(yv[i] - xv[i] / (1.0 - p)) <= 3e-7 * std::abs(yv[i]));
    }
    // Binomial(n, 1-p): standard deviation sqrt(p(1-p)/n) <= 0.0011 of the rate; allow 5 sigma.
    const double n = static_cast<double>(yv.size());
    const double rate = static_cast<double>(kept) / n;
    CHECK(std::abs(rate - (1.0 - p)) < 5.0 * std::sqrt(p * (1.0 - p) / n));
  }
}

TEST_CASE("dropout_keep is the threshold u >= p on random_uniform(seed, stream, index)") {
  int64_t monotone_violations = 0, definition_mismatches = 0;
  for (uint64_t i = 0; i < 20000; ++i) {
    const float u = random_uniform(9, 4, i);
    for (float p : {0.0f, 0.25f, 0.5f, 0.75f})
      definition_mismatches += nn::dropout_keep(9, 4, i, p) != (u >= p);
    // Kept at a higher drop rate implies kept at a lower one (one u per element, one threshold).
    monotone_violations += nn::dropout_keep(9, 4, i, 0.6f) && !nn::dropout_keep(9, 4, i, 0.3f);
    CHECK(nn::dropout_keep(9, 4, i, 0.0f));
  }
  CHECK(definition_mismatches == 0);
  CHECK(monotone_violations == 0);
}

TEST_CASE("dropout_keep_mask (vectorized Philox) makes exactly dropout_keep's decisions") {
  // Ragged counts and offsets (partial blocks), indices across the 2^32 boundary (the counter's
  // second word), streams and seeds with both 32-bit halves set.
  const uint64_t starts[] = {0, 5, (1ull << 32) - 37, (1ull << 40) + 3};
  const uint64_t streams[] = {0, 3, (7ull << 32) | 11};
  for (uint64_t first : starts)
    for (uint64_t stream : streams)
      for (float p : {0.1f, 0.5f, 0.97f}) {
        const uint64_t seed = 0x123456789abcdefull ^ stream;
        const int64_t count = 1000 + static_cast<int64_t>(first % 7);
        std::vector<uint8_t> keep(static_cast<size_t>(count) + 1, 77);
        nn::dropout_keep_mask(seed, stream, first, count, p, keep.data());
        int64_t mismatches = 0;
        for (int64_t j = 0; j < count; ++j)
          mismatches += keep[j] != (nn::dropout_keep(seed, stream, first + j, p) ? 1 : 0);
        CHECK(mismatches == 0);
        CHECK(keep[count] == 77);  // nothing written past the end
      }
  CHECK_THROWS_AS(nn::dropout_keep_mask(1, 2, 0, -1, 0.5f, nullptr), Error);
}

TEST_CASE(
    "dropout: the mask depends only on (seed, stream): same pair same mask, other pair "
    "other mask") {
  const Tensor x = nonzero_input({64, 100}, 2);
  const float p = 0.5f;
  const std::vector<uint8_t> base = kept_positions(nn::dropout(x, p, 7, 1));
  CHECK(base == kept_positions(nn::dropout(x, p, 7, 1)));
  // A different input with the same (seed, stream) gets the same mask.
  CHECK(base == kept_positions(nn::dropout(nonzero_input({64, 100}, 3), p, 7, 1)));
  for (auto [seed, stream] : {std::pair<uint64_t, uint64_t>{7, 2}, {8, 1}}) {
    const std::vector<uint8_t> other = kept_positions(nn::dropout(x, p, seed, stream));
    int64_t differ = 0;
    for (size_t i = 0; i < base.size(); ++i) differ += base[i] != other[i];
    // Independent masks differ in 2 p (1-p) = 1/2 of the positions.
    CHECK(std::abs(static_cast<double>(differ) / base.size() - 0.5) < 0.05);
  }
}

TEST_CASE("dropout: bit-identical with 1 and 2 threads") {
  const Tensor x = random_tensor({300, 200}, DType::f32, 4);
  const int saved = num_threads();
  set_num_threads(1);
  const Tensor one = nn::dropout(x, 0.3f, 5, 6);
  set_num_threads(2);
  const Tensor two = nn::dropout(x, 0.3f, 5, 6);
  set_num_threads(saved);
  CHECK(ops::max_abs_diff(one, two) == 0.0);
}

TEST_CASE("dropout: backward is dy * m / (1 - p) with the same mask (f32 and f64, strided input)") {
  for (DType dtype : {DType::f32, DType::f64}) {
    // A transposed (non-contiguous) leaf: element positions are counted in its own row-major order.
    Tensor base = random_tensor({30, 40}, dtype, 5);
    Tensor x = ops::transpose(base, 0, 1);
    x.set_requires_grad();
    const float p = 0.4f;
    const Tensor y = nn::dropout(x, p, 11, 12);
    const Tensor dy = random_tensor({40, 30}, dtype, 6);
    backward(y, dy);
    const std::vector<double> xv = test::elements(x), yv = test::elements(y),
                              dyv = test::elements(dy), dxv = test::elements(x.grad());
    const double scale = 1.0 / (1.0 - p);
    const double tolerance = dtype == DType::f32 ? 3e-7 : 1e-15;
    for (size_t i = 0; i < dxv.size(); ++i) {
      const bool keep = random_uniform(11, 12, i) >= p;
      CHECK(std::abs(dxv[i] - (keep ? dyv[i] * scale : 0.0)) <=
            tolerance * std::abs(dyv[i] * scale));
      CHECK(std::abs(yv[i] - (keep ? xv[i] * scale : 0.0)) <= tolerance * std::abs(xv[i] * scale));
    }
  }
}

TEST_CASE("dropout: p = 0 and eval mode are the identity; p outside [0, 1) throws") {
  const Tensor x = random_tensor({5, 6}, DType::f32, 7);
  CHECK(nn::dropout(x, 0.0f, 1, 2).is_same(x));
  CHECK_THROWS_WITH_AS(nn::dropout(x, 1.0f, 1, 2), doctest::Contains("p = 1"), Error);
  CHECK_THROWS_AS(nn::dropout(x, -0.1f, 1, 2), Error);
  CHECK_THROWS_AS(nn::dropout(x, std::numeric_limits<float>::quiet_NaN(), 1, 2), Error);
  CHECK_THROWS_AS(nn::dropout(ops::ones({3}, DType::i64), 0.5f, 1, 2), Error);

  auto state = std::make_shared<nn::DropoutState>();
  CHECK_THROWS_AS(nn::Dropout(1.5f, state, 0), Error);
  CHECK_THROWS_AS(nn::Dropout(0.5f, nullptr, 0), Error);
  nn::Dropout layer(0.5f, state, 3);
  CHECK(layer.is_training());
  CHECK(!layer.forward(x).is_same(x));
  layer.eval();
  CHECK(layer.forward(x).is_same(x));
  nn::Dropout zero(0.0f, state, 4);
  CHECK(zero.forward(x).is_same(x));
}

TEST_CASE("dropout: the module draws stream dropout_stream(layer_id, step) from the shared state") {
  const Tensor x = nonzero_input({20, 30}, 8);
  auto state = std::make_shared<nn::DropoutState>();
  state->seed = 99;
  state->step = 5;
  nn::Dropout first(0.5f, state, 1), second(0.5f, state, 2);
  const std::vector<uint8_t> mask_first = kept_positions(first.forward(x));
  CHECK(mask_first == kept_positions(nn::dropout(x, 0.5f, 99, (5ull << 16) ^ 1ull)));
  CHECK(mask_first != kept_positions(second.forward(x)));
  state->step = 6;  // the trainer advances the step: a new mask
  CHECK(mask_first != kept_positions(first.forward(x)));
  state->step = 5;  // a resumed run at step 5 draws the same mask again
  CHECK(mask_first == kept_positions(first.forward(x)));
}
