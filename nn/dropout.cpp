// Dropout with a counter-based mask (see nn/dropout.h).
//
//   m_i = [u_i >= p],  u_i = random_uniform(seed, stream, i)  (i = row-major element position)
//   y_i = x_i * m_i / (1 - p),    dx_i = dy_i * m_i / (1 - p)
//
// u_i is a multiple of 2^-24 in [0, 1), so P(u_i >= p) = 1 - p up to 2^-24. dropout_keep is the
// definition (one scalar Philox block per element); dropout_keep_mask makes the same decisions for
// a run of elements with an AVX2 Philox, ~4x faster. The forward pass keeps the mask (one byte per
// element, 4x smaller than the f32 activations) for the backward pass rather than recomputing the
// ten Philox rounds. Each element's value depends only on (seed, stream, i), so any thread split
// gives the same result bit for bit.
#include "nn/dropout.h"

#include <immintrin.h>

#include <algorithm>
#include <type_traits>

#include "autograd/functions.h"
#include "tensor/parallel_policy.h"
#include "tensor/random.h"
#include "tensor/threads.h"

namespace qt::nn {

namespace {

void check_probability(float p, const char* op) {
  QT_CHECK(p >= 0.0f && p < 1.0f, "{}: p = {} must lie in [0, 1)", op, p);
}

// out_i = in_i * mask_i * scale over contiguous buffers.
template <typename T>
void apply_mask(const T* in, const uint8_t* mask, T scale, T* out, int64_t count) {
#pragma omp parallel for schedule(static) if (qt::worth_parallel(count, qt::WorkCost::heavy))
  for (int64_t i = 0; i < count; ++i) out[i] = mask[i] ? in[i] * scale : T(0);
}

// Philox-4x32-10 (tensor/random.cpp) for 8 consecutive counters at once, one per 32-bit lane of
// an AVX2 register (AVX2 is the build's baseline, -march=x86-64-v3). The compiler does not
// vectorize the scalar rounds by itself: each needs the high half of a 32x32-bit product, which
// AVX2 only offers as vpmuludq (_mm256_mul_epu32) on the even lanes, so the odd lanes are shifted
// down, multiplied separately, and the halves blended back. Per round, with (hi, lo) = M * c:
//   c' = { hi(M1 c2) ^ c1 ^ k0,  lo(M1 c2),  hi(M0 c0) ^ c3 ^ k1,  lo(M0 c0) }
// and the key is bumped after each round (the reference bumps before every round but the first).
// The decision is then random_uniform's: the top 24 bits of word 0 as a multiple of 2^-24, >= p.
constexpr int kLanes = 8;
constexpr uint32_t kMultiplier0 = 0xD2511F53u, kMultiplier1 = 0xCD9E8D57u;
constexpr uint32_t kWeyl0 = 0x9E3779B9u, kWeyl1 = 0xBB67AE85u;
constexpr int kOddLanes = 0b10101010;

// (high halves, low halves) of the 8 products multiplier * c.
void multiply_halves(__m256i c, __m256i multiplier, __m256i& high, __m256i& low) {
  const __m256i even = _mm256_mul_epu32(c, multiplier);  // 64-bit products of lanes 0, 2, 4, 6
  const __m256i odd = _mm256_mul_epu32(_mm256_srli_epi64(c, 32), multiplier);  // lanes 1, 3, 5, 7
  low = _mm256_blend_epi32(even, _mm256_slli_epi64(odd, 32), kOddLanes);
  high = _mm256_blend_epi32(_mm256_srli_epi64(even, 32), odd, kOddLanes);
}

// keep[j] for the `count` (<= kBlock) elements first_index, first_index + 1, ... kGroups registers
// are processed side by side: the ten rounds of one register form a serial chain of multiplies,
// and interleaving independent chains keeps the multiplier busy.
constexpr int kGroups = 4;
constexpr int kBlock = kLanes * kGroups;

void keep_block(uint64_t seed, uint64_t stream, uint64_t first_index, int count, float p,
                uint8_t* keep) {
  alignas(32) uint32_t index_low[kBlock], index_high[kBlock];
  for (int j = 0; j < kBlock; ++j) {
    const uint64_t index = first_index + static_cast<uint64_t>(j);
    index_low[j] = static_cast<uint32_t>(index);
    index_high[j] = static_cast<uint32_t>(index >> 32);
  }
  __m256i c0[kGroups], c1[kGroups], c2[kGroups], c3[kGroups];
  for (int g = 0; g < kGroups; ++g) {
    c0[g] = _mm256_load_si256(reinterpret_cast<const __m256i*>(index_low + g * kLanes));
    c1[g] = _mm256_load_si256(reinterpret_cast<const __m256i*>(index_high + g * kLanes));
    c2[g] = _mm256_set1_epi32(static_cast<int>(static_cast<uint32_t>(stream)));
    c3[g] = _mm256_set1_epi32(static_cast<int>(static_cast<uint32_t>(stream >> 32)));
  }
  uint32_t k0 = static_cast<uint32_t>(seed), k1 = static_cast<uint32_t>(seed >> 32);
  const __m256i m0 = _mm256_set1_epi32(static_cast<int>(kMultiplier0));
  const __m256i m1 = _mm256_set1_epi32(static_cast<int>(kMultiplier1));
  for (int round = 0; round < 10; ++round) {
    const __m256i key0 = _mm256_set1_epi32(static_cast<int>(k0));
    const __m256i key1 = _mm256_set1_epi32(static_cast<int>(k1));
    for (int g = 0; g < kGroups; ++g) {
      __m256i high0, low0, high1, low1;
      multiply_halves(c0[g], m0, high0, low0);
      multiply_halves(c2[g], m1, high1, low1);
      c0[g] = _mm256_xor_si256(_mm256_xor_si256(high1, c1[g]), key0);
      c1[g] = low1;
      c2[g] = _mm256_xor_si256(_mm256_xor_si256(high0, c3[g]), key1);
      c3[g] = low0;
    }
    k0 += kWeyl0;
    k1 += kWeyl1;
  }
  // u = (c0 >> 8) * 2^-24 (exact in float), kept when u >= p.
  uint32_t kept_bits = 0;  // bit j: element j is kept
  for (int g = 0; g < kGroups; ++g) {
    const __m256 u =
        _mm256_mul_ps(_mm256_cvtepi32_ps(_mm256_srli_epi32(c0[g], 8)), _mm256_set1_ps(0x1.0p-24f));
    const int lane_bits = _mm256_movemask_ps(_mm256_cmp_ps(u, _mm256_set1_ps(p), _CMP_GE_OQ));
    kept_bits |= static_cast<uint32_t>(lane_bits) << (g * kLanes);
  }
  for (int j = 0; j < count; ++j) keep[j] = static_cast<uint8_t>((kept_bits >> j) & 1);
}

}  // namespace

bool dropout_keep(uint64_t seed, uint64_t stream, uint64_t index, float p) {
  return random_uniform(seed, stream, index) >= p;
}

void dropout_keep_mask(uint64_t seed, uint64_t stream, uint64_t first_index, int64_t count, float p,
                       uint8_t* keep) {
  QT_CHECK(count >= 0, "dropout_keep_mask: count = {} must not be negative", count);
  const int64_t blocks = (count + kBlock - 1) / kBlock;
#pragma omp parallel for schedule(static) if (qt::worth_parallel(count, qt::WorkCost::heavy))
  for (int64_t b = 0; b < blocks; ++b) {
    const int64_t start = b * kBlock;
    keep_block(seed, stream, first_index + static_cast<uint64_t>(start),
               static_cast<int>(std::min<int64_t>(kBlock, count - start)), p, keep + start);
  }
}

Tensor dropout(const Tensor& x, float p, uint64_t seed, uint64_t stream) {
  check_defined(x, "dropout");
  check_floating(x, "dropout");
  check_probability(p, "dropout");
  if (p == 0.0f) return x;
  num_threads();  // applies the thread setting before the first parallel region

  const Tensor input = ops::contiguous(x.detach());
  const int64_t count = input.numel();
  Tensor mask = Tensor::empty(x.shape(), DType::u8);
  uint8_t* keep = mask.data<uint8_t>();
  dropout_keep_mask(seed, stream, 0, count, p, keep);

  // 1/(1-p) computed in double and rounded once to the tensor's precision.
  const double scale = 1.0 / (1.0 - static_cast<double>(p));
  Tensor y = Tensor::empty(x.shape(), x.dtype());
  dispatch_dtype(x.dtype(), [&](auto tag) {
    using T = decltype(tag);
    if constexpr (std::is_floating_point_v<T>)
      apply_mask<T>(input.data<T>(), keep, static_cast<T>(scale), y.data<T>(), count);
  });
  if (!any_requires_grad({x})) return y;
  return record(y, "dropout", {x},
                [mask, scale](const Tensor& grad, const std::vector<bool>&) -> std::vector<Tensor> {
                  const Tensor dy = ops::contiguous(grad);
                  Tensor dx = Tensor::empty(dy.shape(), dy.dtype());
                  dispatch_dtype(dy.dtype(), [&](auto tag) {
                    using T = decltype(tag);
                    if constexpr (std::is_floating_point_v<T>)
                      apply_mask<T>(dy.data<T>(), mask.data<uint8_t>(), static_cast<T>(scale),
                                    dx.data<T>(), dy.numel());
                  });
                  return {dx};
                });
}

Dropout::Dropout(float p, std::shared_ptr<DropoutState> state, uint64_t layer_id)
    : p(p), state(std::move(state)), layer_id(layer_id) {
  check_probability(p, "Dropout");
  QT_CHECK(this->state != nullptr, "Dropout: the shared DropoutState must not be null");
}

Tensor Dropout::forward(const Tensor& x) const {
  if (!is_training() || p == 0.0f) return x;
  return dropout(x, p, state->seed, dropout_stream(layer_id, state->step));
}

}  // namespace qt::nn
