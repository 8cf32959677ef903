// Tests for tensor/json_parse.*: the nesting-depth limit (checked against documents built here of
// known depth), brackets inside strings, and excerpts of bounded length.
#include <doctest/doctest.h>

#include <string>

#include "tensor/error.h"
#include "tensor/json_parse.h"

using namespace qt;

namespace {

std::string nested(int depth, char open = '[', char close = ']') {
  return std::string(static_cast<size_t>(depth), open) +
         std::string(static_cast<size_t>(depth), close);
}

}  // namespace

TEST_CASE("json_parse: nesting depth is counted outside strings only") {
  CHECK(json_nesting_depth("1") == 0);
  CHECK(json_nesting_depth(R"({"a": [1, {"b": []}]})") == 4);
  CHECK(json_nesting_depth(R"({"a": "[[[[{{{{", "b": "\"[["})") == 1);
  CHECK(json_nesting_depth(nested(1000)) == 1000);
}

TEST_CASE("json_parse: documents deeper than the limit are refused before parsing") {
  CHECK(parse_json(nested(kMaxJsonDepth), "test").is_array());
  // 200,000 levels crashed dump() and flatten() with a stack overflow: now a clear error.
  for (const std::string& deep :
       {nested(kMaxJsonDepth + 1), nested(200000), "{\"a\": " + nested(200000, '[', ']') + "}"}) {
    CHECK_THROWS_WITH_AS(parse_json(deep, "config 'deep.json'"),
                         doctest::Contains("config 'deep.json': the JSON nests"), Error);
  }
  CHECK_THROWS_WITH_AS(parse_json("{\"a\": ", "x.json"),
                       doctest::Contains("x.json: not valid JSON"), Error);
}

TEST_CASE("json_parse: excerpts are bounded") {
  CHECK(excerpt("short") == "short");
  const std::string big(3'000'000, 'x');
  const std::string cut = excerpt(big);
  CHECK(cut.size() < kMaxQuotedChars + 40);
  CHECK(cut.find("(3000000 bytes)") != std::string::npos);
  const nlohmann::json array = nlohmann::json::array();
  CHECK(json_excerpt(nlohmann::json(std::vector<int>(100000, 7))).size() < kMaxQuotedChars + 40);
  CHECK(json_excerpt(array) == "[]");
}
