// The integer square root: floor(sqrt(n)) for every uint64 n, with integer operations only
// (no floating point anywhere; the LayerNorm's square root, quant/integer_layer_norm.h).
//
// Method: the bit-by-bit (digit-by-digit, base 4) algorithm. With `bit` the largest power of 4
// <= n, it decides one result bit per step from the high end: if n >= result + bit the bit is set
// (n -= result + bit; result = result / 2 + bit) else result /= 2; then bit /= 4. 32 steps at most,
// each a compare, a subtract and two shifts; no division (unlike Newton / Heron, I-BERT's i-sqrt)
// and no overflow (result < 2^32 and bit <= 2^62, so result + bit < 2^63).
//
// Postcondition (asserted by the tests exhaustively on [0, 2^24], at k^2 - 1, k^2, k^2 + 1 for
// 300000 k and at the uint64 ends): r^2 <= n < (r + 1)^2, computed in unsigned __int128; and
// r == floor(sqrtl(n)) in long double, which is itself exact for all uint64 (the closest case,
// n = k^2 - 1, lies 1/(2k) > half an ulp below k).
#pragma once

#include <cstdint>

namespace qt::quant {

uint64_t integer_sqrt(uint64_t n);

}  // namespace qt::quant
