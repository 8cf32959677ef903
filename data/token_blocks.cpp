// Concatenating documents and cutting the stream into blocks (see token_blocks.h).
#include "data/token_blocks.h"

#include "tensor/error.h"

namespace qt::data {

std::span<const int32_t> TokenBlocks::block(int64_t i) const {
  QT_CHECK(i >= 0 && i < num_blocks(), "TokenBlocks::block: index {} is not in [0, {})", i,
           num_blocks());
  return std::span<const int32_t>(tokens).subspan(i * block_length, block_length);
}

TokenBlocks make_token_blocks(const std::vector<std::vector<int32_t>>& documents,
                              std::span<const int32_t> document_prefix,
                              std::span<const int32_t> document_suffix, int64_t block_length) {
  QT_CHECK(block_length > 0, "make_token_blocks: block_length must be positive, got {}",
           block_length);
  TokenBlocks blocks;
  blocks.block_length = block_length;
  size_t total = 0;
  for (const auto& document : documents)
    total += document_prefix.size() + document.size() + document_suffix.size();
  blocks.tokens.reserve(total);
  for (const auto& document : documents) {
    blocks.tokens.insert(blocks.tokens.end(), document_prefix.begin(), document_prefix.end());
    blocks.tokens.insert(blocks.tokens.end(), document.begin(), document.end());
    blocks.tokens.insert(blocks.tokens.end(), document_suffix.begin(), document_suffix.end());
  }
  const size_t kept = total / block_length * block_length;
  blocks.dropped_tokens = static_cast<int64_t>(total - kept);
  blocks.tokens.resize(kept);
  blocks.tokens.shrink_to_fit();
  return blocks;
}

}  // namespace qt::data
