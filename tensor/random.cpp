// Philox-4x32-10 and the uniform / normal values derived from it (see tensor/random.h).
//
// Philox (Salmon, Moraes, Dror, Shaw, SC 2011) is a keyed bijection on 128-bit counters. One round
// multiplies two of the four 32-bit words by fixed odd constants, keeps both halves of each 64-bit
// product, and mixes them with the other two words and the key:
//
//   (hi0, lo0) = M0 * c0          (hi1, lo1) = M1 * c2          (64-bit products split in halves)
//   c' = { hi1 ^ c1 ^ k0,  lo1,  hi0 ^ c3 ^ k1,  lo0 }
//
// and between rounds the key is bumped by the Weyl constants (k0 += W0, k1 += W1). Ten rounds pass
// the BigCrush statistical test suite for every key. M0 = 0xD2511F53, M1 = 0xCD9E8D57,
// W0 = 0x9E3779B9 (golden ratio), W1 = 0xBB67AE85 (sqrt(3) - 1).
//
// How qtlab maps (seed, stream, index) onto Philox:
//
//   counter = { index & 0xffffffff, index >> 32, stream & 0xffffffff, stream >> 32 }
//   key     = { seed & 0xffffffff,  seed >> 32 }
//
// Every element gets its own 128-bit block, so element `index` of `stream` never shares a block
// with any other (index, stream) pair, and the value is a pure function of the three numbers.
#include "tensor/random.h"

#include <cmath>
#include <numbers>

namespace qt {

namespace {

constexpr uint32_t kMultiplier0 = 0xD2511F53u;
constexpr uint32_t kMultiplier1 = 0xCD9E8D57u;
constexpr uint32_t kWeyl0 = 0x9E3779B9u;
constexpr uint32_t kWeyl1 = 0xBB67AE85u;
constexpr int kRounds = 10;

std::array<uint32_t, 4> block_for(uint64_t seed, uint64_t stream, uint64_t index) {
  const std::array<uint32_t, 4> counter = {
      static_cast<uint32_t>(index), static_cast<uint32_t>(index >> 32),
      static_cast<uint32_t>(stream), static_cast<uint32_t>(stream >> 32)};
  const std::array<uint32_t, 2> key = {static_cast<uint32_t>(seed),
                                       static_cast<uint32_t>(seed >> 32)};
  return philox4x32(counter, key);
}

// Top 24 bits of a word as a float in [0, 1): every value is a multiple of 2^-24, exact in f32.
float unit_float(uint32_t word) {
  return static_cast<float>(word >> 8) * 0x1.0p-24f;
}

// Same grid shifted by half a step: (k + 0.5) / 2^24 lies in the open interval (0, 1), so log()
// of it is finite. Used for the radius of Box-Muller.
double open_unit_24(uint32_t word) {
  return (static_cast<double>(word >> 8) + 0.5) * 0x1.0p-24;
}

// 53 random bits from two words (the high 53 of their 64-bit concatenation) as a double in [0, 1).
uint64_t bits53(uint32_t high, uint32_t low) {
  return ((static_cast<uint64_t>(high) << 32) | low) >> 11;
}
double unit_double(uint32_t high, uint32_t low) {
  return static_cast<double>(bits53(high, low)) * 0x1.0p-53;
}
double open_unit_53(uint32_t high, uint32_t low) {
  return (static_cast<double>(bits53(high, low)) + 0.5) * 0x1.0p-53;
}

// Box-Muller: for independent u1 in (0, 1] and u2 in [0, 1),
//   z = sqrt(-2 ln u1) * cos(2 pi u2)
// is standard normal. (The sine gives a second independent normal; we use one value per element
// so that element i depends on block i only.)
double box_muller(double u1_open, double u2) {
  return std::sqrt(-2.0 * std::log(u1_open)) * std::cos(2.0 * std::numbers::pi * u2);
}

}  // namespace

std::array<uint32_t, 4> philox4x32(std::array<uint32_t, 4> counter, std::array<uint32_t, 2> key) {
  for (int round = 0; round < kRounds; ++round) {
    if (round > 0) {
      key[0] += kWeyl0;
      key[1] += kWeyl1;
    }
    const uint64_t product0 = static_cast<uint64_t>(kMultiplier0) * counter[0];
    const uint64_t product1 = static_cast<uint64_t>(kMultiplier1) * counter[2];
    const uint32_t hi0 = static_cast<uint32_t>(product0 >> 32),
                   lo0 = static_cast<uint32_t>(product0);
    const uint32_t hi1 = static_cast<uint32_t>(product1 >> 32),
                   lo1 = static_cast<uint32_t>(product1);
    counter = {hi1 ^ counter[1] ^ key[0], lo1, hi0 ^ counter[3] ^ key[1], lo0};
  }
  return counter;
}

float random_uniform(uint64_t seed, uint64_t stream, uint64_t index) {
  return unit_float(block_for(seed, stream, index)[0]);
}

float random_normal(uint64_t seed, uint64_t stream, uint64_t index) {
  const auto block = block_for(seed, stream, index);
  // Computed in double and rounded once, so the f32 value is the correctly rounded transform of
  // the two 24-bit uniforms (words 0 and 1 of the block).
  return static_cast<float>(box_muller(open_unit_24(block[0]), unit_float(block[1])));
}

double random_uniform_f64(uint64_t seed, uint64_t stream, uint64_t index) {
  const auto block = block_for(seed, stream, index);
  return unit_double(block[0], block[1]);
}

double random_normal_f64(uint64_t seed, uint64_t stream, uint64_t index) {
  // Two 53-bit uniforms from the four words of the block.
  const auto block = block_for(seed, stream, index);
  return box_muller(open_unit_53(block[0], block[1]), unit_double(block[2], block[3]));
}

}  // namespace qt
