// Integer embedding lookup and the sum of token / position / token-type embeddings (method.md
// §4.3: the tables are weight-quantized, their sums are activation-quantized: BERT quantizes
// (word + type) and then (+ position), OPT (token + position)).
//
// Each term is either a lookup in an s8 table (symmetric, zero point 0, scale S_t; rows gathered by
// id) or a dense u8 tensor already quantized (S, Z) — the latter lets BERT's second sum add the
// position table to the quantized (word + type) sum. The sum itself is IntegerRescaleSum
// (quant/integer_add.h): common scale, left shift 20, one multiplier per term, then the output
// requantization. The float64 function:
//
//   y[t, j] = clamp( round( sum_i S_i (q_i[t, j] - Z_i) / S_o ) + Z_o, 0, 255 )
//
// Bit widths: table codes are s8, so |q - Z| <= 128 (and <= 255 for dense u8 terms), well inside
// IntegerRescaleSum's 1023 bound; ids are int64 and checked against the table's row count.
#pragma once

#include <cstdint>
#include <vector>

#include "quant/integer_add.h"

namespace qt::quant {

// The data of one term (its scale and zero point live in the IntegerRescaleSum, same order).
struct EmbeddingTerm {
  // Either a table lookup ...
  const int8_t* table = nullptr;  // [rows, dim] s8 codes
  int64_t rows = 0;
  const int64_t* ids = nullptr;  // [tokens] row indices into the table
  // ... or a dense u8 input [tokens, dim] (table == nullptr).
  const uint8_t* dense = nullptr;
};

// The conversion step, once per model: the terms' (scale, zero point) — tables: zero point 0 —
// and the u8 output (S_o, Z_o).
IntegerRescaleSum make_integer_embedding_sum(const std::vector<QuantizedTerm>& terms,
                                             double output_scale, int32_t output_zero_point,
                                             Requant mode);

// out[tokens, dim] (u8) = the requantized sum of the terms' rows (integers only). Throws for a bad
// id (naming the term, the token and the id), a term count that does not match `sum`, an
// inconsistent term, or a table term whose zero point in `sum` is not 0.
void integer_embedding_sum(const IntegerRescaleSum& sum, const std::vector<EmbeddingTerm>& terms,
                           int64_t tokens, int64_t dim, uint8_t* out);

}  // namespace qt::quant
