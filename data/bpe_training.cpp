// BPE training (algorithm in bpe_training.h).
//
// State: the word types as token sequences with their counts; count(a, b) for every adjacent pair;
// for every pair the list of word types that (may) contain it; a max-heap of (count, pair).
// A merge rewrites only the word types listed for its pair, turning each word's old pairs into its
// new pairs in the counts (the net change per pair is applied once per merge), and pushes the
// pairs whose count changed. Heap entries whose count no longer matches are stale and skipped.
#include "data/bpe_training.h"

#include <algorithm>
#include <queue>

#include "data/pretokenize.h"
#include "data/tokenizer.h"
#include "tensor/error.h"

namespace qt::data {

namespace {

uint64_t pair_key(int32_t left, int32_t right) {
  return (uint64_t{static_cast<uint32_t>(left)} << 32) | static_cast<uint32_t>(right);
}
int32_t key_left(uint64_t key) {
  return static_cast<int32_t>(key >> 32);
}
int32_t key_right(uint64_t key) {
  return static_cast<int32_t>(key & 0xffffffffu);
}

struct HeapEntry {
  int64_t count;
  uint64_t pair;
};

}  // namespace

void add_word_counts(std::string_view text, WordCounts& counts) {
  for (std::string_view word : pretokenize(text)) ++counts[std::string(word)];
}

WordCounts count_words(const std::vector<std::string>& texts) {
  WordCounts counts;
  for (const std::string& text : texts) add_word_counts(text, counts);
  return counts;
}

BpeTrainingResult train_bpe(const WordCounts& counts, int64_t vocab_size, int64_t min_pair_count) {
  QT_CHECK(vocab_size >= kFirstMergeId,
           "train_bpe: vocab_size {} is smaller than the {} special and byte tokens", vocab_size,
           kFirstMergeId);
  QT_CHECK(vocab_size <= (int64_t{1} << 31) - 1, "train_bpe: vocab_size {} is too large",
           vocab_size);
  QT_CHECK(min_pair_count >= 1, "train_bpe: min_pair_count must be >= 1, got {}", min_pair_count);

  // Token strings, for the tie-break. Special tokens never occur inside words.
  std::vector<std::string> token_bytes;
  for (std::string_view name : kSpecialTokenNames) token_bytes.emplace_back(name);
  for (int byte = 0; byte < 256; ++byte) token_bytes.emplace_back(1, static_cast<char>(byte));

  // Word types in lexicographic order, so that nothing depends on the hash table's order.
  std::vector<const std::pair<const std::string, int64_t>*> sorted_words;
  sorted_words.reserve(counts.size());
  for (const auto& entry : counts) {
    QT_CHECK(entry.second > 0, "train_bpe: word '{}' has count {}", entry.first, entry.second);
    sorted_words.push_back(&entry);
  }
  std::sort(sorted_words.begin(), sorted_words.end(),
            [](const auto* a, const auto* b) { return a->first < b->first; });

  std::vector<std::vector<int32_t>> words(sorted_words.size());
  std::vector<int64_t> word_count(sorted_words.size());
  std::unordered_map<uint64_t, int64_t> pair_count;
  std::unordered_map<uint64_t, std::vector<int32_t>> pair_words;
  for (size_t w = 0; w < sorted_words.size(); ++w) {
    const std::string& text = sorted_words[w]->first;
    word_count[w] = sorted_words[w]->second;
    for (unsigned char byte : text) words[w].push_back(kFirstByteId + byte);
    for (size_t i = 0; i + 1 < words[w].size(); ++i) {
      const uint64_t key = pair_key(words[w][i], words[w][i + 1]);
      pair_count[key] += word_count[w];
      std::vector<int32_t>& list = pair_words[key];
      if (list.empty() || list.back() != static_cast<int32_t>(w)) list.push_back(w);
    }
  }

  // Max-heap order: larger count first; on equal counts the lexicographically smaller pair.
  auto lower_priority = [&token_bytes](const HeapEntry& a, const HeapEntry& b) {
    if (a.count != b.count) return a.count < b.count;
    const int left = token_bytes[key_left(a.pair)].compare(token_bytes[key_left(b.pair)]);
    if (left != 0) return left > 0;
    return token_bytes[key_right(a.pair)].compare(token_bytes[key_right(b.pair)]) > 0;
  };
  std::priority_queue<HeapEntry, std::vector<HeapEntry>, decltype(lower_priority)> heap(
      lower_priority);
  {
    // Push in key order (deterministic heap construction; the order does not change the result).
    std::vector<uint64_t> keys;
    keys.reserve(pair_count.size());
    for (const auto& entry : pair_count) keys.push_back(entry.first);
    std::sort(keys.begin(), keys.end());
    for (uint64_t key : keys) heap.push({pair_count[key], key});
  }

  BpeTrainingResult result;
  std::vector<int64_t> last_visit(words.size(), -1);
  std::unordered_map<uint64_t, int64_t> delta;  // net count change of each pair in one merge
  std::vector<int32_t> rewritten;
  while (static_cast<int64_t>(token_bytes.size()) < vocab_size && !heap.empty()) {
    const HeapEntry top = heap.top();
    heap.pop();
    const auto current = pair_count.find(top.pair);
    if (current == pair_count.end() || current->second != top.count) continue;  // stale entry
    if (top.count < min_pair_count) break;

    const int32_t left = key_left(top.pair);
    const int32_t right = key_right(top.pair);
    const int32_t merged = static_cast<int32_t>(token_bytes.size());
    token_bytes.push_back(token_bytes[left] + token_bytes[right]);
    result.merges.emplace_back(left, right);
    result.merge_counts.push_back(top.count);
    const int64_t merge_number = static_cast<int64_t>(result.merges.size());

    delta.clear();
    std::vector<int32_t> candidates = std::move(pair_words[top.pair]);
    pair_words.erase(top.pair);
    for (int32_t w : candidates) {
      if (last_visit[w] == merge_number) continue;
      last_visit[w] = merge_number;
      std::vector<int32_t>& symbols = words[w];
      const int64_t count = word_count[w];
      // Replace every non-overlapping (left, right), scanning left to right.
      rewritten.clear();
      bool changed = false;
      for (size_t i = 0; i < symbols.size(); ++i) {
        if (i + 1 < symbols.size() && symbols[i] == left && symbols[i + 1] == right) {
          rewritten.push_back(merged);
          ++i;
          changed = true;
        } else {
          rewritten.push_back(symbols[i]);
        }
      }
      if (!changed) continue;  // the word lost this pair to an earlier merge
      for (size_t i = 0; i + 1 < symbols.size(); ++i)
        delta[pair_key(symbols[i], symbols[i + 1])] -= count;
      for (size_t i = 0; i + 1 < rewritten.size(); ++i) {
        const uint64_t key = pair_key(rewritten[i], rewritten[i + 1]);
        delta[key] += count;
        if (rewritten[i] == merged || rewritten[i + 1] == merged) {
          std::vector<int32_t>& list = pair_words[key];
          if (list.empty() || list.back() != w) list.push_back(w);
        }
      }
      symbols.swap(rewritten);
    }
    // Apply the net changes in key order and push the pairs whose count changed.
    std::vector<std::pair<uint64_t, int64_t>> changes(delta.begin(), delta.end());
    std::sort(changes.begin(), changes.end());
    for (const auto& [key, change] : changes) {
      if (change == 0) continue;
      int64_t& count = pair_count[key];
      count += change;
      if (count > 0) {
        heap.push({count, key});
      } else {
        pair_count.erase(key);
      }
    }
  }
  return result;
}

}  // namespace qt::data
