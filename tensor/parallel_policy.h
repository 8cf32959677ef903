// When a loop is worth an OpenMP team: one policy for every kernel.
//
// Waking the team costs a few microseconds, so small loops run on the calling thread. A loop runs
// in parallel when its work — the number of elements it touches, weighted by what one element
// costs — exceeds kParallelWork:
//
//   light      a few flops per element, memory bound (optimizer updates, copies, GEMM-sized
//              flop counts already scaled by the caller)                       > 65,536 elements
//   standard   elementwise arithmetic, gathers, reductions, quantizers          > 32,768
//   heavy      an exp / log / erf or a hash per element (softmax, LayerNorm,
//              cross-entropy, dropout)                                          > 16,384
//   expensive  a full counter-based RNG draw per element (Philox)               >  4,096
//
// The policy only decides speed: every kernel cuts its work into fixed chunks combined in a fixed
// order, so results are bit-identical whether a loop runs on one thread or many.
#pragma once

#include <cstdint>

namespace qt {

enum class WorkCost : int64_t { light = 1, standard = 2, heavy = 4, expensive = 16 };

inline constexpr int64_t kParallelWork = int64_t{1} << 16;

// True when `elements` elements of `cost` are worth running on the OpenMP team.
constexpr bool worth_parallel(int64_t elements, WorkCost cost) {
  return elements > kParallelWork / static_cast<int64_t>(cost);
}

}  // namespace qt
