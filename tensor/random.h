// Counter-based random numbers (Philox-4x32-10, Salmon et al., "Parallel random numbers: as easy
// as 1, 2, 3", SC 2011).
//
// A random value is a pure function of (seed, stream, index): no generator state is carried from
// one call to the next. So the i-th element of a random tensor is the same whatever the number of
// threads, the order in which threads visit elements, or what else was drawn before. `stream`
// separates independent uses with the same seed (e.g. one stream per dropout layer and step).
#pragma once

#include <array>
#include <cstdint>

namespace qt {

// One Philox-4x32-10 block: 4 random 32-bit words for a 128-bit counter under a 64-bit key.
std::array<uint32_t, 4> philox4x32(std::array<uint32_t, 4> counter, std::array<uint32_t, 2> key);

// Uniform float in [0, 1) for element `index` of `stream` under `seed` (24 random bits).
float random_uniform(uint64_t seed, uint64_t stream, uint64_t index);
// Standard normal (Box-Muller on two uniforms of the same Philox block).
float random_normal(uint64_t seed, uint64_t stream, uint64_t index);
// Same, with 53-bit resolution, for f64 tensors.
double random_uniform_f64(uint64_t seed, uint64_t stream, uint64_t index);
double random_normal_f64(uint64_t seed, uint64_t stream, uint64_t index);

}  // namespace qt
