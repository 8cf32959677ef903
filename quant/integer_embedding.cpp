// Integer embedding sums (see the header).
#include "quant/integer_embedding.h"

#include <algorithm>
#include <array>
#include <vector>

#include "tensor/error.h"

namespace qt::quant {

IntegerRescaleSum make_integer_embedding_sum(const std::vector<QuantizedTerm>& terms,
                                             double output_scale, int32_t output_zero_point,
                                             Requant mode) {
  return make_rescale_sum(terms, output_scale, output_zero_point, kU8Min, kU8Max, mode,
                          "make_integer_embedding_sum");
}

void integer_embedding_sum(const IntegerRescaleSum& sum, const std::vector<EmbeddingTerm>& terms,
                           int64_t tokens, int64_t dim, uint8_t* out) {
  const char* op = "integer_embedding_sum";
  QT_CHECK(tokens >= 0 && dim > 0, "{}: bad shape [{}, {}]", op, tokens, dim);
  const auto n = static_cast<int>(terms.size());
  QT_CHECK(n == sum.terms, "{}: {} terms for a sum built for {}", op, n, sum.terms);
  QT_CHECK(sum.output.qmin >= kU8Min && sum.output.qmax <= kU8Max,
           "{}: the output grid [{}, {}] is not inside u8", op, sum.output.qmin, sum.output.qmax);
  for (int i = 0; i < n; ++i) {
    const EmbeddingTerm& t = terms[i];
    if (t.table != nullptr) {
      QT_CHECK(t.ids != nullptr && t.rows > 0 && t.dense == nullptr,
               "{}: term {} is a table lookup without ids or rows, or with a dense input too", op,
               i);
      QT_CHECK(sum.zero_point[i] == 0,
               "{}: term {}: tables are symmetric s8, zero point {} must be 0", op, i,
               sum.zero_point[i]);
      for (int64_t k = 0; k < tokens; ++k)
        QT_CHECK(t.ids[k] >= 0 && t.ids[k] < t.rows,
                 "{}: term {}: token {} has id {} outside the table's {} rows", op, i, k, t.ids[k],
                 t.rows);
    } else {
      QT_CHECK(t.dense != nullptr, "{}: term {} has neither a table nor a dense input", op, i);
    }
  }
  // Each term's rescaled value ((q - Z) 2^20) M_i depends on its 8-bit code alone: tabulated
  // once per call (n x 256 entries, the same integers as IntegerRescaleSum::operator()), so a
  // row is n loads and adds per element and one vectorized output stage.
  std::vector<std::array<int32_t, 256>> rescaled(static_cast<size_t>(n));
  for (int i = 0; i < n; ++i)
    for (int32_t code = 0; code < 256; ++code) {
      // Tables are s8 (index code = value + 128), dense inputs u8 (index code = value).
      const int32_t value = terms[i].table != nullptr ? code - 128 : code;
      rescaled[i][static_cast<size_t>(code)] = multiply_by_quantized_multiplier(
          (value - sum.zero_point[i]) * (1 << kAddLeftShift), sum.input[i], sum.output.mode);
    }
  std::vector<int32_t> total(static_cast<size_t>(dim));
  for (int64_t k = 0; k < tokens; ++k) {
    std::fill(total.begin(), total.end(), 0);
    for (int i = 0; i < n; ++i) {
      const EmbeddingTerm& t = terms[i];
      const int32_t* r = rescaled[i].data();
      if (t.table != nullptr) {
        const int8_t* row = t.table + t.ids[k] * dim;
        for (int64_t j = 0; j < dim; ++j) total[j] += r[row[j] + 128];
      } else {
        const uint8_t* row = t.dense + k * dim;
        for (int64_t j = 0; j < dim; ++j) total[j] += r[row[j]];
      }
    }
    requantize(total.data(), dim, sum.output, out + k * dim);
  }
}

}  // namespace qt::quant
