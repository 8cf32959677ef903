// MLM masking (see mlm_masking.h).
#include "data/mlm_masking.h"

#include "data/tokenizer.h"
#include "tensor/error.h"
#include "tensor/random.h"

namespace qt::data {

namespace {

// A 32-bit random word as a uniform double in [0, 1) (exact: 32 bits fit a double).
double unit_interval(uint32_t word) {
  return static_cast<double>(word) * 0x1.0p-32;
}

void check_options(const MlmOptions& options, const char* op) {
  QT_CHECK(options.vocab_size > kFirstByteId, "{}: vocab_size {} must exceed the {} special tokens",
           op, options.vocab_size, kFirstByteId);
  QT_CHECK(options.probability >= 0 && options.probability <= 1,
           "{}: probability must be in [0, 1], got {}", op, options.probability);
  QT_CHECK(options.mask_fraction >= 0 && options.random_fraction >= 0 &&
               options.mask_fraction + options.random_fraction <= 1,
           "{}: mask_fraction {} and random_fraction {} must be >= 0 with a sum <= 1", op,
           options.mask_fraction, options.random_fraction);
}

}  // namespace

void mask_sequence(std::span<const int32_t> tokens, uint64_t epoch, uint64_t sequence_index,
                   const MlmOptions& options, int64_t* input_ids, int64_t* labels) {
  check_options(options, "mask_sequence");
  QT_CHECK(epoch <= UINT32_MAX && sequence_index <= UINT32_MAX && tokens.size() <= UINT32_MAX,
           "mask_sequence: epoch {}, sequence index {} and length {} must each fit 32 bits", epoch,
           sequence_index, tokens.size());
  const std::array<uint32_t, 2> key = {static_cast<uint32_t>(options.seed),
                                       static_cast<uint32_t>(options.seed >> 32)};
  const uint64_t replacement_range = static_cast<uint64_t>(options.vocab_size - kFirstByteId);
  const double mask_or_random = options.mask_fraction + options.random_fraction;
  for (size_t position = 0; position < tokens.size(); ++position) {
    const int32_t token = tokens[position];
    QT_CHECK(token >= 0 && token < options.vocab_size,
             "mask_sequence: token {} at position {} is not in [0, {})", token, position,
             options.vocab_size);
    input_ids[position] = token;
    labels[position] = kIgnoreIndex;
    if (is_special_token(token)) continue;
    const std::array<uint32_t, 4> words =
        philox4x32({static_cast<uint32_t>(position), static_cast<uint32_t>(sequence_index),
                    static_cast<uint32_t>(epoch), kMlmStream},
                   key);
    if (unit_interval(words[0]) >= options.probability) continue;
    labels[position] = token;
    const double kind = unit_interval(words[1]);
    if (kind < options.mask_fraction) {
      input_ids[position] = kMaskId;
    } else if (kind < mask_or_random) {
      // Uniform in [0, range) by scaling the 32-bit word: floor(w * range / 2^32).
      input_ids[position] =
          kFirstByteId + static_cast<int64_t>((uint64_t{words[2]} * replacement_range) >> 32);
    }
  }
}

Batch make_mlm_batch(const TokenBlocks& blocks, std::span<const int64_t> block_indices,
                     int64_t epoch, const MlmOptions& options) {
  check_options(options, "make_mlm_batch");
  QT_CHECK(epoch >= 0, "make_mlm_batch: epoch must be >= 0, got {}", epoch);
  const int64_t batch = static_cast<int64_t>(block_indices.size());
  const int64_t length = blocks.block_length;
  Batch result;
  result.input_ids = Tensor::empty({batch, length}, DType::i64);
  result.labels = Tensor::empty({batch, length}, DType::i64);
  result.epoch = epoch;
  for (int64_t b = 0; b < batch; ++b) {
    const int64_t index = block_indices[b];
    mask_sequence(blocks.block(index), static_cast<uint64_t>(epoch), static_cast<uint64_t>(index),
                  options, result.input_ids.data<int64_t>() + b * length,
                  result.labels.data<int64_t>() + b * length);
  }
  return result;
}

}  // namespace qt::data
