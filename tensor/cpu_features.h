// Which optional instruction sets the kernels may use on this CPU. The framework is compiled for
// x86-64-v3 (AVX2 + FMA); files named *_avx512.cpp are compiled with AVX-512 flags and are only
// called when these checks say yes.
#pragma once

namespace qt::cpu {

// False when the environment variable QTLAB_DISABLE_AVX512 is set (to anything but "" or "0"):
// then every kernel uses its AVX2 / portable path even on AVX-512 CPUs (to test those paths, or
// to compare).
bool avx512_allowed();

// The CPU has AVX-512 F, BW, VL and DQ (what the *_avx512.cpp files are compiled for, apart
// from VNNI, which gemm_u8s8s32 checks on its own) and avx512_allowed() is true.
bool avx512_usable();

}  // namespace qt::cpu
