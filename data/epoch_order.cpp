// Epoch order and rank slices (see epoch_order.h).
#include "data/epoch_order.h"

#include <algorithm>
#include <array>
#include <numeric>
#include <utility>

#include "tensor/error.h"
#include "tensor/random.h"

namespace qt::data {

std::vector<int64_t> epoch_order(int64_t num_samples, uint64_t seed, int64_t epoch, bool shuffle) {
  QT_CHECK(num_samples >= 0, "epoch_order: num_samples must be >= 0, got {}", num_samples);
  QT_CHECK(epoch >= 0 && epoch <= UINT32_MAX, "epoch_order: epoch {} is not in [0, 2^32)", epoch);
  std::vector<int64_t> order(static_cast<size_t>(num_samples));
  std::iota(order.begin(), order.end(), int64_t{0});
  if (!shuffle) return order;
  const std::array<uint32_t, 2> key = {static_cast<uint32_t>(seed),
                                       static_cast<uint32_t>(seed >> 32)};
  for (int64_t i = num_samples - 1; i > 0; --i) {
    const std::array<uint32_t, 4> words =
        philox4x32({static_cast<uint32_t>(i), static_cast<uint32_t>(uint64_t(i) >> 32),
                    static_cast<uint32_t>(epoch), kShuffleStream},
                   key);
    const uint64_t bits = (uint64_t{words[0]} << 32) | words[1];
    // j = floor(bits * (i+1) / 2^64), the high half of a 64 x 64 -> 128-bit product.
    const uint64_t j = static_cast<uint64_t>(
        (static_cast<unsigned __int128>(bits) * static_cast<uint64_t>(i + 1)) >> 64);
    std::swap(order[i], order[j]);
  }
  return order;
}

int64_t batches_per_epoch(int64_t num_samples, int64_t global_batch_size, bool drop_last) {
  QT_CHECK(global_batch_size > 0, "batches_per_epoch: batch size must be positive, got {}",
           global_batch_size);
  const int64_t full = num_samples / global_batch_size;
  return full + (!drop_last && num_samples % global_batch_size != 0 ? 1 : 0);
}

PositionRange rank_slice(int64_t num_samples, int64_t global_batch_size, int64_t batch_index,
                         int64_t rank, int64_t world_size) {
  QT_CHECK(world_size > 0 && rank >= 0 && rank < world_size,
           "rank_slice: rank {} is not in [0, world size {})", rank, world_size);
  QT_CHECK(global_batch_size > 0, "rank_slice: batch size must be positive, got {}",
           global_batch_size);
  const int64_t batch_begin = batch_index * global_batch_size;
  QT_CHECK(batch_index >= 0 && batch_begin < num_samples,
           "rank_slice: batch {} of size {} starts beyond the {} samples", batch_index,
           global_batch_size, num_samples);
  const int64_t size = std::min(global_batch_size, num_samples - batch_begin);
  return {batch_begin + rank * size / world_size, batch_begin + (rank + 1) * size / world_size};
}

}  // namespace qt::data
