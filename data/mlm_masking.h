// Masked-language-model inputs and labels (BERT, method.md §6.1; as HF
// DataCollatorForLanguageModeling):
//
//   every non-special token is selected independently with probability p = 0.15;
//   a selected token becomes   [MASK]            with probability 0.8,
//                              a random token    with probability 0.1,
//                              itself            with probability 0.1;
//   labels = the original id at selected positions, -100 (ignored by the loss) elsewhere.
//
// Special tokens ([CLS], [SEP], ...) are never selected. Random replacements are drawn uniformly
// from the non-special tokens (HF draws from the whole vocabulary, specials included; drawing a
// [CLS] or [PAD] as "noise" helps nothing).
//
// Randomness: every draw is a pure function of (seed, epoch, sequence index, position) through
// Philox-4x32-10 (tensor/random.h): the block for counter
//   { position, sequence index, epoch, kMlmStream }  under key  seed
// gives three 32-bit words: w0 selects, w1 chooses [MASK] / random / unchanged, w2 picks the
// random token. So a sequence's masking depends on nothing else — not on the batch it lands in,
// the number of ranks or threads, or the prefetching — and evaluation, which always uses epoch 0
// and a fixed seed, sees identical masks in every run. The constant kMlmStream in the top counter
// word keeps these draws apart from other users of the same seed.
#pragma once

#include <cstdint>
#include <span>

#include "data/batch.h"
#include "data/token_blocks.h"

namespace qt::data {

inline constexpr uint32_t kMlmStream = 0x4d4c4d00;  // "MLM\0"

struct MlmOptions {
  int64_t vocab_size = 0;  // the tokenizer's: random tokens come from [kFirstByteId, vocab_size)
  double probability = 0.15;
  double mask_fraction = 0.8;    // of the selected tokens: replaced by [MASK]
  double random_fraction = 0.1;  // of the selected tokens: replaced by a random token
  uint64_t seed = 0;
};

// Masks one sequence: writes the model inputs and the labels (both `tokens.size()` long).
void mask_sequence(std::span<const int32_t> tokens, uint64_t epoch, uint64_t sequence_index,
                   const MlmOptions& options, int64_t* input_ids, int64_t* labels);

// A batch of blocks, each masked by (seed, epoch, block index): input_ids and labels i64 [B, T].
Batch make_mlm_batch(const TokenBlocks& blocks, std::span<const int64_t> block_indices,
                     int64_t epoch, const MlmOptions& options);

}  // namespace qt::data
