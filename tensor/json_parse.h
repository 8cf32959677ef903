// Parsing JSON that comes from outside the program (config files, safetensors headers, tokenizer
// files, run directories), and quoting such input in error messages.
//
// nlohmann's parser itself is iterative, but much of what follows a parse is recursive — dump()
// (which every error message quoting a value calls), flatten(), our own walks — so a document
// nested 100,000 levels deep overflows the stack there. parse_json therefore measures the nesting
// depth first, in one pass over the text, and refuses anything deeper than kMaxJsonDepth before
// building a value. No qtlab file format nests more than four levels.
//
// Error messages quote input through excerpt() / json_excerpt(), which cut it to a few hundred
// characters: a 3 MB array in a header is named by its first characters and its size, never
// printed whole.
#pragma once

#include <cstddef>
#include <nlohmann/json.hpp>
#include <string>
#include <string_view>

namespace qt {

inline constexpr int kMaxJsonDepth = 64;
inline constexpr size_t kMaxQuotedChars = 200;

// The deepest nesting of arrays and objects in `text` (brackets inside strings do not count).
int json_nesting_depth(std::string_view text);

// Parses `text`; throws qt::Error "<what>: ..." when it is nested deeper than kMaxJsonDepth or is
// not valid JSON (nlohmann's message, which names the byte position).
nlohmann::json parse_json(std::string_view text, const std::string& what);

// The whole of file `path`, parsed as above; throws "<what>: cannot read <path>" when it cannot
// be opened.
nlohmann::json parse_json_file(const std::string& path, const std::string& what);

// `text` if it has at most `limit` characters, else its first `limit` and "... (N bytes)".
std::string excerpt(std::string_view text, size_t limit = kMaxQuotedChars);
// excerpt(value.dump()).
std::string json_excerpt(const nlohmann::json& value, size_t limit = kMaxQuotedChars);

}  // namespace qt
