// Causal-language-model batches (OPT, method.md §3.2 / §6.2): the model reads block tokens
// x_0 .. x_{T-1} and at position t predicts x_{t+1}:
//
//   input_ids[b, t] = block[t]
//   labels[b, t]    = block[t + 1]   for t < T-1,   -100 (no loss) for t = T-1
//
// This is HF's loss = CE(logits[:, :-1], ids[:, 1:]) with the shift done here, so the model's
// loss is a plain cross-entropy over labelled positions: T-1 predictions per block.
#pragma once

#include <cstdint>
#include <span>

#include "data/batch.h"
#include "data/token_blocks.h"

namespace qt::data {

Batch make_causal_lm_batch(const TokenBlocks& blocks, std::span<const int64_t> block_indices);

}  // namespace qt::data
