#include "tensor/row_kernels.h"

#include "tensor/cpu_features.h"

namespace qt::row_kernels {

void softmax_row(const float* x, float* y, int64_t n) {
  static const bool avx512 = cpu::avx512_usable();
  if (avx512)
    detail::softmax_row_avx512(x, y, n);
  else
    softmax_row_portable(x, y, n);
}

}  // namespace qt::row_kernels
