// Which samples a batch holds: the shuffled order of an epoch, cut into global batches, each
// global batch shared among the data-parallel ranks.
//
//   order_e      = a permutation of 0 .. N-1, a pure function of (seed, epoch e)
//   batch b      = order_e[b*G, (b+1)*G)                     (G = global batch size)
//   rank r of W  = the contiguous slice [b*G + r*n/W, b*G + (r+1)*n/W) of it  (n = the batch's
//   size)
//
// So the global batch — and therefore the training run — is the same for any number of ranks W:
// the ranks' slices are disjoint and together are exactly the 1-rank batch.
//
// Shuffle: Fisher-Yates (Knuth, TAOCP vol. 2, Algorithm P) with Philox draws:
//   for i = N-1 down to 1:  j = floor(u_i * (i+1)),  swap(order[i], order[j])
// where u_i is 64 random bits / 2^64 from the Philox block for counter
//   { i (low 32 bits), i (high 32 bits), epoch, kShuffleStream }  under key  seed.
// Every permutation is (almost exactly) equally likely; the draws need no generator state.
#pragma once

#include <cstdint>
#include <vector>

namespace qt::data {

inline constexpr uint32_t kShuffleStream = 0x53485546;  // "SHUF"

// The visiting order of epoch `epoch`; shuffle false gives 0, 1, ..., N-1.
std::vector<int64_t> epoch_order(int64_t num_samples, uint64_t seed, int64_t epoch, bool shuffle);

// Global batches per epoch: floor(N / G), plus one for a final partial batch unless drop_last.
int64_t batches_per_epoch(int64_t num_samples, int64_t global_batch_size, bool drop_last);

struct PositionRange {
  int64_t begin = 0;  // positions in the epoch order
  int64_t end = 0;
};

// The positions of the epoch order that rank `rank` of `world_size` takes for global batch
// `batch_index` (the last batch may be partial: n = N - b*G).
PositionRange rank_slice(int64_t num_samples, int64_t global_batch_size, int64_t batch_index,
                         int64_t rank, int64_t world_size);

}  // namespace qt::data
