#include "tools/quantization_spec.h"

#include <fmt/format.h>

#include <cctype>
#include <set>

#include "quant/quantization_parameters.h"
#include "tensor/error.h"

namespace qt::tools {
namespace {

// Reads the decimal number at text[pos...] into `value`; false if there is none or it is huge.
bool read_number(const std::string& text, size_t& pos, int& value) {
  const size_t start = pos;
  value = 0;
  while (pos < text.size() && std::isdigit(static_cast<unsigned char>(text[pos])) &&
         pos - start < 3)
    value = value * 10 + (text[pos++] - '0');
  return pos > start &&
         (pos == text.size() || !std::isdigit(static_cast<unsigned char>(text[pos])));
}

}  // namespace

QuantizationSpec parse_quantization_spec(const std::string& text) {
  QuantizationSpec spec;
  spec.text = text;
  const std::string form = "the form is W<bits>A<bits>[:mse|:minmax], e.g. W8A8 or W4A8:mse";
  size_t pos = 0;
  QT_CHECK(pos < text.size() && text[pos] == 'W', "quantization '{}': {}", text, form);
  ++pos;
  QT_CHECK(read_number(text, pos, spec.weight_bits), "quantization '{}': {}", text, form);
  QT_CHECK(pos < text.size() && text[pos] == 'A', "quantization '{}': {}", text, form);
  ++pos;
  QT_CHECK(read_number(text, pos, spec.activation_bits), "quantization '{}': {}", text, form);
  if (pos < text.size()) {
    QT_CHECK(text[pos] == ':', "quantization '{}': {}", text, form);
    spec.weight_range = text.substr(pos + 1);
    QT_CHECK(spec.weight_range == "mse" || spec.weight_range == "minmax",
             "quantization '{}': unknown weight range '{}' (use mse or minmax)", text,
             spec.weight_range);
  }
  for (const int bits : {spec.weight_bits, spec.activation_bits})
    QT_CHECK(bits >= quant::kMinBits && bits <= quant::kMaxBits,
             "quantization '{}': {} bits is outside [{}, {}]", text, bits, quant::kMinBits,
             quant::kMaxBits);
  return spec;
}

std::vector<QuantizationSpec> parse_quantization_specs(const std::string& list) {
  std::vector<QuantizationSpec> specs;
  std::set<std::string> seen;
  size_t start = 0;
  while (true) {
    const size_t comma = list.find(',', start);
    const std::string item =
        list.substr(start, comma == std::string::npos ? std::string::npos : comma - start);
    QT_CHECK(!item.empty(), "quantization list '{}': an empty entry", list);
    QT_CHECK(seen.insert(item).second, "quantization list '{}': '{}' is listed twice", list, item);
    specs.push_back(parse_quantization_spec(item));
    if (comma == std::string::npos) break;
    start = comma + 1;
  }
  return specs;
}

}  // namespace qt::tools
