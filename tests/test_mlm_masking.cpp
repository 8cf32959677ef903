// Tests for data/mlm_masking.*: masking statistics on a large synthetic batch against the
// binomial expectations (15%; of those 80/10/10), special tokens never touched, label/input
// consistency at every position, random replacements uniform over the non-special tokens, and
// determinism in (seed, epoch, sequence index) only.
#include <doctest/doctest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <random>
#include <vector>

#include "data/mlm_masking.h"
#include "data/tokenizer.h"
#include "tensor/create.h"
#include "tensor/error.h"

using namespace qt;

namespace {

constexpr int64_t kVocab = 1000;

// Blocks of uniform non-special tokens with a special token every 16 positions.
data::TokenBlocks synthetic_blocks(int64_t count, int64_t length, unsigned seed) {
  std::mt19937 generator(seed);
  std::uniform_int_distribution<int32_t> token(data::kFirstByteId, kVocab - 1);
  data::TokenBlocks blocks;
  blocks.block_length = length;
  for (int64_t i = 0; i < count * length; ++i) {
    blocks.tokens.push_back(i % 16 == 0 ? data::kSepId : token(generator));
  }
  return blocks;
}

std::vector<int64_t> all_indices(int64_t count) {
  std::vector<int64_t> indices(count);
  for (int64_t i = 0; i < count; ++i) indices[i] = i;
  return indices;
}

}  // namespace

TEST_CASE("mlm_masking: 15% selected, then 80% [MASK] / 10% random / 10% unchanged") {
  const int64_t count = 1000, length = 128;
  const data::TokenBlocks blocks = synthetic_blocks(count, length, 1);
  data::MlmOptions options;
  options.vocab_size = kVocab;
  options.seed = 1000;
  const data::Batch batch = data::make_mlm_batch(blocks, all_indices(count), 0, options);
  REQUIRE(batch.input_ids.shape() == Shape{count, length});
  REQUIRE(batch.labels.shape() == Shape{count, length});
  const int64_t* inputs = batch.input_ids.data<int64_t>();
  const int64_t* labels = batch.labels.data<int64_t>();

  int64_t candidates = 0, selected = 0, masked = 0, random = 0, unchanged = 0;
  int64_t special_touched = 0, unselected_changed = 0, wrong_labels = 0, bad_replacements = 0;
  for (int64_t i = 0; i < count * length; ++i) {
    const int32_t original = blocks.tokens[i];
    if (data::is_special_token(original)) {
      // Specials: never selected, never changed.
      special_touched += labels[i] != data::kIgnoreIndex || inputs[i] != original;
      continue;
    }
    ++candidates;
    if (labels[i] == data::kIgnoreIndex) {
      unselected_changed += inputs[i] != original;  // not selected: the input is the original
      continue;
    }
    wrong_labels += labels[i] != original;  // selected: the label is the original token
    ++selected;
    if (inputs[i] == data::kMaskId) {
      ++masked;
    } else if (inputs[i] == original) {
      ++unchanged;
    } else {
      // A random replacement is never special.
      bad_replacements += inputs[i] < data::kFirstByteId || inputs[i] >= kVocab;
      ++random;
    }
  }
  CHECK(candidates == count * length * 15 / 16);
  CHECK(special_touched == 0);
  CHECK(unselected_changed == 0);
  CHECK(wrong_labels == 0);
  CHECK(bad_replacements == 0);
  // ~120k candidates: binomial std of the 15% rate is 0.001, so +-0.006 is 6 sigma.
  const double rate = static_cast<double>(selected) / candidates;
  CHECK(std::abs(rate - 0.15) < 0.006);
  // ~18k selected: std of the 80% share is 0.003, of the 10% shares 0.0022 (a random draw equal
  // to the original, probability 1/994, counts as unchanged: negligible).
  CHECK(std::abs(static_cast<double>(masked) / selected - 0.8) < 0.015);
  CHECK(std::abs(static_cast<double>(random) / selected - 0.1) < 0.012);
  CHECK(std::abs(static_cast<double>(unchanged) / selected - 0.1) < 0.012);
}

TEST_CASE("mlm_masking: random replacements are uniform over the non-special tokens") {
  // Vocabulary of 6 specials + 10 tokens; every token selected; only random replacements.
  const int64_t vocab = data::kFirstByteId + 10;
  data::MlmOptions options;
  options.vocab_size = vocab;
  options.probability = 1.0;
  options.mask_fraction = 0.0;
  options.random_fraction = 1.0;
  options.seed = 7;
  std::vector<int32_t> tokens(20000, data::kFirstByteId);
  std::vector<int64_t> inputs(tokens.size()), labels(tokens.size());
  data::mask_sequence(tokens, 0, 0, options, inputs.data(), labels.data());
  std::vector<int64_t> histogram(vocab, 0);
  int64_t wrong = 0;
  for (size_t i = 0; i < tokens.size(); ++i) {
    wrong +=
        labels[i] != data::kFirstByteId || inputs[i] < data::kFirstByteId || inputs[i] >= vocab;
    ++histogram[std::clamp<int64_t>(inputs[i], 0, vocab - 1)];
  }
  CHECK(wrong == 0);
  // 2000 expected per token, std 42: +-250 is 6 sigma.
  for (int64_t id = data::kFirstByteId; id < vocab; ++id) {
    CHECK(histogram[id] > 1750);
    CHECK(histogram[id] < 2250);
  }
}

TEST_CASE("mlm_masking: probability 0 selects nothing, probability 1 every non-special token") {
  const data::TokenBlocks blocks = synthetic_blocks(4, 64, 2);
  data::MlmOptions options;
  options.vocab_size = kVocab;
  options.probability = 0.0;
  const data::Batch none = data::make_mlm_batch(blocks, all_indices(4), 0, options);
  for (int64_t label : ops::to_vector<int64_t>(none.labels)) CHECK(label == data::kIgnoreIndex);
  options.probability = 1.0;
  options.mask_fraction = 1.0;
  options.random_fraction = 0.0;
  const data::Batch all = data::make_mlm_batch(blocks, all_indices(4), 0, options);
  const std::vector<int64_t> inputs = ops::to_vector<int64_t>(all.input_ids);
  for (size_t i = 0; i < inputs.size(); ++i) {
    CHECK(inputs[i] ==
          (data::is_special_token(blocks.tokens[i]) ? blocks.tokens[i] : data::kMaskId));
  }
}

TEST_CASE("mlm_masking: masks depend on (seed, epoch, sequence index) only") {
  const data::TokenBlocks blocks = synthetic_blocks(8, 128, 3);
  data::MlmOptions options;
  options.vocab_size = kVocab;
  options.seed = 1000;
  const std::vector<int64_t> indices = {5, 2, 7};
  const data::Batch first = data::make_mlm_batch(blocks, indices, 3, options);
  const data::Batch again = data::make_mlm_batch(blocks, indices, 3, options);
  CHECK(ops::to_vector<int64_t>(first.input_ids) == ops::to_vector<int64_t>(again.input_ids));
  CHECK(ops::to_vector<int64_t>(first.labels) == ops::to_vector<int64_t>(again.labels));

  // Row 1 of the batch (block 2) equals block 2 masked alone: the batch does not matter.
  std::vector<int64_t> inputs(128), labels(128);
  data::mask_sequence(blocks.block(2), 3, 2, options, inputs.data(), labels.data());
  const std::vector<int64_t> batch_labels = ops::to_vector<int64_t>(first.labels);
  CHECK(std::vector<int64_t>(batch_labels.begin() + 128, batch_labels.begin() + 256) == labels);

  // Another epoch, seed or index changes the masks.
  auto labels_of = [&](uint64_t epoch, uint64_t index, uint64_t seed) {
    data::MlmOptions other = options;
    other.seed = seed;
    std::vector<int64_t> in(128), out(128);
    data::mask_sequence(blocks.block(2), epoch, index, other, in.data(), out.data());
    return out;
  };
  CHECK(labels_of(4, 2, 1000) != labels);
  CHECK(labels_of(3, 3, 1000) != labels);
  CHECK(labels_of(3, 2, 2000) != labels);
  CHECK(labels_of(3, 2, 1000) == labels);
}

TEST_CASE("mlm_masking: bad tokens and options are errors") {
  data::MlmOptions options;
  options.vocab_size = 100;
  std::vector<int32_t> tokens = {data::kFirstByteId, 100};
  std::vector<int64_t> inputs(2), labels(2);
  CHECK_THROWS_WITH_AS(data::mask_sequence(tokens, 0, 0, options, inputs.data(), labels.data()),
                       doctest::Contains("token 100 at position 1"), Error);
  tokens = {data::kFirstByteId, 7};
  options.probability = 1.5;
  CHECK_THROWS_AS(data::mask_sequence(tokens, 0, 0, options, inputs.data(), labels.data()), Error);
  options.probability = 0.15;
  options.mask_fraction = 0.95;
  CHECK_THROWS_AS(data::mask_sequence(tokens, 0, 0, options, inputs.data(), labels.data()), Error);
  options.mask_fraction = 0.8;
  options.vocab_size = data::kFirstByteId;
  CHECK_THROWS_AS(data::mask_sequence(tokens, 0, 0, options, inputs.data(), labels.data()), Error);
  options.vocab_size = 100;
  CHECK_THROWS_AS(
      data::mask_sequence(tokens, uint64_t{1} << 32, 0, options, inputs.data(), labels.data()),
      Error);
}
