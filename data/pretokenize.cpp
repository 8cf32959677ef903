// Pre-tokenisation (rules in pretokenize.h): one left-to-right scan, each rule a small loop.
#include "data/pretokenize.h"

#include <cstddef>

namespace qt::data {

namespace {

enum class ByteClass { letter, digit, space, other };

ByteClass classify(unsigned char byte) {
  if ((byte >= 'a' && byte <= 'z') || (byte >= 'A' && byte <= 'Z') || byte >= 0x80) {
    return ByteClass::letter;
  }
  if (byte >= '0' && byte <= '9') return ByteClass::digit;
  if (byte == ' ' || (byte >= '\t' && byte <= '\r')) return ByteClass::space;
  return ByteClass::other;
}

ByteClass class_at(std::string_view text, size_t i) {
  return classify(static_cast<unsigned char>(text[i]));
}

// Length of the contraction suffix starting at `i` ("'s", "'ll", ...), or 0.
size_t contraction_length(std::string_view text, size_t i) {
  if (text[i] != '\'' || i + 1 >= text.size()) return 0;
  const char next = text[i + 1];
  if (next == 's' || next == 't' || next == 'm' || next == 'd') return 2;
  if (i + 2 < text.size()) {
    const std::string_view two = text.substr(i + 1, 2);
    if (two == "re" || two == "ve" || two == "ll") return 3;
  }
  return 0;
}

}  // namespace

std::vector<std::string_view> pretokenize(std::string_view text) {
  std::vector<std::string_view> words;
  const size_t n = text.size();
  size_t i = 0;
  while (i < n) {
    // Rule 1: contraction suffix.
    if (const size_t length = contraction_length(text, i); length > 0) {
      words.push_back(text.substr(i, length));
      i += length;
      continue;
    }
    // Rules 2-4: an optional leading space, then a run of one class (letters, digits, other).
    size_t start = i;
    size_t j = i;
    if (text[j] == ' ' && j + 1 < n && class_at(text, j + 1) != ByteClass::space) ++j;
    const ByteClass run_class = class_at(text, j);
    if (run_class != ByteClass::space) {
      size_t end = j + 1;
      while (end < n && class_at(text, end) == run_class) ++end;
      words.push_back(text.substr(start, end - start));
      i = end;
      continue;
    }
    // Rule 5: a whitespace run [i, end).
    size_t end = i;
    while (end < n && class_at(text, end) == ByteClass::space) ++end;
    if (end == n || end - i == 1) {
      // At the end of the text, or a single non-space whitespace byte before a word ("\n").
      words.push_back(text.substr(start, end - start));
      i = end;
      continue;
    }
    // A run of two or more before a word: all but the last byte form one word; the last byte is
    // taken by the next iteration (by rules 2-4 if it is a space, else as a word of its own).
    words.push_back(text.substr(start, end - 1 - start));
    i = end - 1;
  }
  return words;
}

}  // namespace qt::data
