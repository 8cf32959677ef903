// Causal-LM batches: copy each block, shift it by one for the labels (see causal_lm_batches.h).
#include "data/causal_lm_batches.h"

#include "tensor/error.h"

namespace qt::data {

Batch make_causal_lm_batch(const TokenBlocks& blocks, std::span<const int64_t> block_indices) {
  const int64_t batch = static_cast<int64_t>(block_indices.size());
  const int64_t length = blocks.block_length;
  QT_CHECK(length >= 2, "make_causal_lm_batch: blocks need at least 2 tokens, got {}", length);
  Batch result;
  result.input_ids = Tensor::empty({batch, length}, DType::i64);
  result.labels = Tensor::empty({batch, length}, DType::i64);
  for (int64_t b = 0; b < batch; ++b) {
    const std::span<const int32_t> block = blocks.block(block_indices[b]);
    int64_t* input_ids = result.input_ids.data<int64_t>() + b * length;
    int64_t* labels = result.labels.data<int64_t>() + b * length;
    for (int64_t t = 0; t < length; ++t) input_ids[t] = block[t];
    for (int64_t t = 0; t + 1 < length; ++t) labels[t] = block[t + 1];
    labels[length - 1] = kIgnoreIndex;
  }
  return result;
}

}  // namespace qt::data
