// Documents -> one token stream -> fixed-length blocks, for language-model training.
//
//   stream = prefix + doc_0 + suffix + prefix + doc_1 + suffix + ...
//   block i = stream[i*T, (i+1)*T)        for i < floor(len(stream) / T); the tail is dropped
//
// BERT (method.md §6.1): prefix [CLS], suffix [SEP]; blocks of 128 need not start with [CLS]
// (the paper cuts the stream of every 1000 texts and drops each group's tail; here the whole
// corpus is one stream). OPT (§6.2): prefix </s> (GPT-2 BPE prepends </s> to every text), no
// suffix. No padding ever occurs, so no attention mask is needed.
#pragma once

#include <cstdint>
#include <span>
#include <vector>

namespace qt::data {

struct TokenBlocks {
  std::vector<int32_t> tokens;  // num_blocks() * block_length ids, block after block
  int64_t block_length = 0;
  int64_t dropped_tokens = 0;  // the tail of the stream that did not fill a block

  int64_t num_blocks() const {
    return block_length > 0 ? static_cast<int64_t>(tokens.size()) / block_length : 0;
  }
  // Block i (bounds-checked).
  std::span<const int32_t> block(int64_t i) const;
};

TokenBlocks make_token_blocks(const std::vector<std::vector<int32_t>>& documents,
                              std::span<const int32_t> document_prefix,
                              std::span<const int32_t> document_suffix, int64_t block_length);

}  // namespace qt::data
