// The bit-by-bit integer square root (see the header).
#include "quant/integer_sqrt.h"

namespace qt::quant {

uint64_t integer_sqrt(uint64_t n) {
  uint64_t result = 0;
  uint64_t bit = uint64_t{1} << 62;  // the largest power of four in uint64
  while (bit > n) bit >>= 2;
  while (bit != 0) {
    if (n >= result + bit) {
      n -= result + bit;
      result = (result >> 1) + bit;
    } else {
      result >>= 1;
    }
    bit >>= 2;
  }
  return result;
}

}  // namespace qt::quant
