// Integer embedding sums (see the header).
#include "quant/integer_embedding.h"

#include "tensor/error.h"

namespace qt::quant {

void integer_embedding_sum(const std::vector<EmbeddingTerm>& terms, int64_t tokens, int64_t dim,
                           double output_scale, int32_t output_zero_point, Requant mode,
                           uint8_t* out) {
  const char* op = "integer_embedding_sum";
  QT_CHECK(tokens >= 0 && dim > 0, "{}: bad shape [{}, {}]", op, tokens, dim);
  std::vector<QuantizedTerm> quant;
  for (size_t i = 0; i < terms.size(); ++i) {
    const EmbeddingTerm& t = terms[i];
    if (t.table != nullptr) {
      QT_CHECK(t.ids != nullptr && t.rows > 0 && t.dense == nullptr,
               "{}: term {} is a table lookup without ids or rows, or with a dense input too", op,
               i);
      QT_CHECK(t.quant.zero_point == 0,
               "{}: term {}: tables are symmetric s8, zero point {} must be 0", op, i,
               t.quant.zero_point);
      for (int64_t k = 0; k < tokens; ++k)
        QT_CHECK(t.ids[k] >= 0 && t.ids[k] < t.rows,
                 "{}: term {}: token {} has id {} outside the table's {} rows", op, i, k, t.ids[k],
                 t.rows);
    } else {
      QT_CHECK(t.dense != nullptr, "{}: term {} has neither a table nor a dense input", op, i);
    }
    quant.push_back(t.quant);
  }
  const IntegerRescaleSum sum =
      make_rescale_sum(quant, output_scale, output_zero_point, kU8Min, kU8Max, mode, op);
  const size_t n = terms.size();
  int32_t q[kMaxSumTerms];
  for (int64_t k = 0; k < tokens; ++k)
    for (int64_t j = 0; j < dim; ++j) {
      for (size_t i = 0; i < n; ++i) {
        const EmbeddingTerm& t = terms[i];
        q[i] = t.table != nullptr ? int32_t{t.table[t.ids[k] * dim + j]}
                                  : int32_t{t.dense[k * dim + j]};
      }
      out[k * dim + j] = static_cast<uint8_t>(sum(q));
    }
}

}  // namespace qt::quant
