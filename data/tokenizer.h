// Byte-level BPE tokenizer: text <-> token ids, with the special tokens of BERT and OPT.
//
// Vocabulary layout (fixed ids, the same for every trained tokenizer):
//
//   0 [PAD]   1 [UNK]   2 [CLS]   3 [SEP]   4 [MASK]   5 </s>         special tokens
//   6 .. 261                                                           the 256 bytes (id = 6 +
//   byte) 262 ..                                                             merges, in the order
//   learned
//
// Encoding: pre-tokenise (pretokenize.h), then inside each word start from byte tokens and apply
// merges by rank — repeatedly merge every occurrence (left to right) of the adjacent pair with the
// lowest merge number — exactly what training did to the words it saw. Every byte string has an
// encoding, so [UNK] never appears and decode(encode(text)) == text for any text. encode() never
// produces special tokens (the literal text "[MASK]" is encoded as bytes); the pipelines insert
// them by id.
//
// File format (JSON, written atomically: temporary file + rename):
//   {"format": "qtlab-byte-bpe", "version": 1, "special_tokens": [...6 names...],
//    "vocab_size": V, "merges": [[left, right], ...], "fingerprint": "<16 hex digits>"}
// The fingerprint (FNV-1a 64 of the merges) is checked on load and lets model checkpoints record
// exactly which tokenizer their embedding rows belong to.
#pragma once

#include <cstdint>
#include <span>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "data/bpe_training.h"

namespace qt::data {

inline constexpr int32_t kPadId = 0;
inline constexpr int32_t kUnkId = 1;
inline constexpr int32_t kClsId = 2;
inline constexpr int32_t kSepId = 3;
inline constexpr int32_t kMaskId = 4;
inline constexpr int32_t kEndOfTextId = 5;  // OPT's </s>: BOS/EOS of every document
inline constexpr int32_t kNumSpecialTokens = 6;
inline constexpr int32_t kFirstByteId = kNumSpecialTokens;
inline constexpr int32_t kFirstMergeId = kFirstByteId + 256;

// The special tokens' names, indexed by id.
inline constexpr std::string_view kSpecialTokenNames[kNumSpecialTokens] = {
    "[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "</s>"};

inline bool is_special_token(int64_t id) {
  return id >= 0 && id < kNumSpecialTokens;
}

// `bytes` with every byte that is not part of a well-formed UTF-8 character (RFC 3629: no
// overlong forms, no surrogates, nothing above U+10FFFF) replaced by the four characters "\xNN";
// valid text is returned unchanged.
std::string escape_invalid_utf8(std::string_view bytes);

class Tokenizer {
 public:
  // A tokenizer with bytes only (no merges).
  Tokenizer();
  // From learned merges; checks that each merge refers to earlier non-special tokens.
  explicit Tokenizer(std::vector<Merge> merges);

  // Counts the words of the texts and learns merges up to vocab_size (see bpe_training.h).
  static Tokenizer train(const std::vector<std::string>& texts, int64_t vocab_size);

  int64_t vocab_size() const { return static_cast<int64_t>(token_bytes_.size()); }
  const std::vector<Merge>& merges() const { return merges_; }
  // The bytes a token stands for (a special token: its name).
  const std::string& token_bytes(int32_t id) const;
  // The same as text for people and JSON: a byte-level token may hold part of a multi-byte
  // character, so bytes that are not valid UTF-8 are written as "\xNN" (escape_invalid_utf8).
  std::string token_text(int32_t id) const { return escape_invalid_utf8(token_bytes(id)); }

  // Text -> ids (no special tokens added).
  std::vector<int32_t> encode(std::string_view text) const;
  // Many texts at once, OpenMP over texts, each thread with its own cache of encoded words. The
  // result does not depend on the number of threads.
  std::vector<std::vector<int32_t>> encode_all(const std::vector<std::string>& texts) const;
  // One pre-tokenised word -> ids.
  std::vector<int32_t> encode_word(std::string_view word) const;

  // Ids -> text. Special tokens become their names ("[SEP]"), or nothing with skip_special.
  std::string decode(std::span<const int32_t> ids, bool skip_special = false) const;

  // FNV-1a 64 over the merges, as 16 hex digits: equal fingerprints <=> equal vocabularies.
  std::string fingerprint() const;

  void save(const std::string& path) const;
  static Tokenizer load(const std::string& path);

 private:
  std::vector<Merge> merges_;
  std::vector<std::string> token_bytes_;
  std::unordered_map<uint64_t, int32_t> merge_rank_;  // pair key (left << 32 | right) -> rank
};

}  // namespace qt::data
