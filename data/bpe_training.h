// Learning byte-pair-encoding merges (Sennrich et al. 2016; byte-level as in GPT-2).
//
// Start: every word (from pre-tokenisation, see pretokenize.h) is a sequence of byte tokens, and
// each word type carries the number of times it occurs in the corpus. Then repeat:
//
//   count(a, b) = sum over word types w of  count(w) * (number of adjacent (a, b) in w)
//   pick the pair with the largest count; ties go to the pair whose token strings are
//     lexicographically smallest: first compare bytes(a), then bytes(b) (unsigned bytes);
//   create token ab, replace every non-overlapping (a, b) in every word, left to right;
//
// until the vocabulary is full or no pair occurs at least `min_pair_count` times. Merge number r
// becomes token id kFirstMergeId + r (tokenizer.h). The result is fully deterministic: it does not
// depend on hash-table order or on the order in which words are given.
//
// Cost: the pair counts are updated incrementally — a merge touches only the words that contain
// the merged pair (an index pair -> words), and the best pair comes from a max-heap whose stale
// entries are skipped when popped.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <unordered_map>
#include <utility>
#include <vector>

namespace qt::data {

// Word -> number of occurrences.
using WordCounts = std::unordered_map<std::string, int64_t>;

// Pre-tokenises every text and counts the words.
WordCounts count_words(const std::vector<std::string>& texts);
void add_word_counts(std::string_view text, WordCounts& counts);

// One merge: the token ids of the left and right parts.
using Merge = std::pair<int32_t, int32_t>;

struct BpeTrainingResult {
  std::vector<Merge> merges;          // in the order learned; merge r is token kFirstMergeId + r
  std::vector<int64_t> merge_counts;  // how often each pair occurred when it was merged
};

// Learns up to (vocab_size - kFirstMergeId) merges; vocab_size counts the special tokens and the
// 256 byte tokens too. Stops early when the best pair occurs fewer than min_pair_count times.
BpeTrainingResult train_bpe(const WordCounts& counts, int64_t vocab_size,
                            int64_t min_pair_count = 2);

}  // namespace qt::data
