// A bit-width configuration named the way the paper's tables name it: "W8A8" (8-bit weights, 8-bit
// activations), optionally with the weight range estimator, "W4A8:mse" / "W8A8:minmax". Parsed
// once, here, at the command-line / plan-file boundary (qtlab quantize --sweep, experiment plans).
#pragma once

#include <string>
#include <vector>

namespace qt::tools {

struct QuantizationSpec {
  std::string text;          // as written, e.g. "W4A8:mse"
  int weight_bits = 8;       // in [quant::kMinBits, quant::kMaxBits]
  int activation_bits = 8;   // likewise
  std::string weight_range;  // "" (the family's default), "mse" or "minmax"
};

// "W<b>A<b>[:mse|:minmax]"; throws qt::Error naming the text and what is wrong.
QuantizationSpec parse_quantization_spec(const std::string& text);
// A comma-separated list of the above (no empty entries, no repeats).
std::vector<QuantizationSpec> parse_quantization_specs(const std::string& list);

}  // namespace qt::tools
