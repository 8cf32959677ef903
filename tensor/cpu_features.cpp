#include "tensor/cpu_features.h"

#include <cstdlib>
#include <cstring>

namespace qt::cpu {

bool avx512_allowed() {
  const char* off = std::getenv("QTLAB_DISABLE_AVX512");
  return off == nullptr || *off == '\0' || std::strcmp(off, "0") == 0;
}

bool avx512_usable() {
  return __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
         __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512dq") &&
         avx512_allowed();
}

}  // namespace qt::cpu
