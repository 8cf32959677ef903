// Pre-tokenisation: cutting text into "words" before byte-pair encoding, in the style of GPT-2.
//
// BPE merges never cross a word boundary, so this step decides what a token can be. The rules,
// applied left to right (GPT-2's regular expression
//   's|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+
// with byte classes instead of Unicode classes):
//
//   1. an English contraction suffix: 's 't 're 've 'm 'll 'd          ("don't" -> "don" "'t")
//   2. an optional single space + a run of letters                       (" hello")
//   3. an optional single space + a run of digits                        (" 1961")
//   4. an optional single space + a run of other non-space bytes         (" ...", "!")
//   5. a run of whitespace; when a word follows, the run's last byte is left for that word if it
//      is a space (rule 2-4), and is a word of its own otherwise         ("  \n" -> " ", "\n")
//
// Byte classes: letters are A-Z, a-z and every byte >= 0x80 (so a multi-byte UTF-8 character is
// never cut, and accented words stay whole); digits are 0-9; whitespace is space, \t, \n, \v, \f,
// \r; everything else is "other" (punctuation, symbols, control bytes).
//
// The words partition the text exactly: concatenated they give the input back, byte for byte.
// That is what makes decode(encode(text)) == text hold for byte-level BPE.
#pragma once

#include <string_view>
#include <vector>

namespace qt::data {

std::vector<std::string_view> pretokenize(std::string_view text);

}  // namespace qt::data
