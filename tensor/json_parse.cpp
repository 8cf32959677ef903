#include "tensor/json_parse.h"

#include <fstream>
#include <sstream>

#include "tensor/error.h"

namespace qt {

int json_nesting_depth(std::string_view text) {
  int depth = 0, deepest = 0;
  bool in_string = false, escaped = false;
  for (const char c : text) {
    if (in_string) {
      if (escaped)
        escaped = false;
      else if (c == '\\')
        escaped = true;
      else if (c == '"')
        in_string = false;
      continue;
    }
    if (c == '"') {
      in_string = true;
    } else if (c == '[' || c == '{') {
      deepest = std::max(deepest, ++depth);
    } else if (c == ']' || c == '}') {
      --depth;  // unbalanced text is the parser's to report
    }
  }
  return deepest;
}

nlohmann::json parse_json(std::string_view text, const std::string& what) {
  const int depth = json_nesting_depth(text);
  QT_CHECK(depth <= kMaxJsonDepth,
           "{}: the JSON nests {} levels deep, more than the limit of {} (not a file qtlab wrote)",
           what, depth, kMaxJsonDepth);
  try {
    return nlohmann::json::parse(text);
  } catch (const nlohmann::json::exception& e) {
    fail("{}: not valid JSON: {}", what, excerpt(e.what()));
  }
}

nlohmann::json parse_json_file(const std::string& path, const std::string& what) {
  std::ifstream in(path, std::ios::binary);
  QT_CHECK(in.good(), "{}: cannot read {}", what, path);
  std::stringstream text;
  text << in.rdbuf();
  return parse_json(text.str(), what);
}

std::string excerpt(std::string_view text, size_t limit) {
  if (text.size() <= limit) return std::string(text);
  return fmt::format("{}... ({} bytes)", text.substr(0, limit), text.size());
}

std::string json_excerpt(const nlohmann::json& value, size_t limit) {
  return excerpt(value.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace), limit);
}

}  // namespace qt
