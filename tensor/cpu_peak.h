// This CPU's arithmetic peaks, measured: independent chains of the widest fused multiply-add the
// CPU has (fp32: vfmadd231ps, on zmm registers with AVX-512, ymm without) and of the int8 dot
// product (vpdpbusd zmm, AVX-512 VNNI: 64 u8 x s8 products summed into 16 int32 per instruction),
// run on every thread at once. Enough independent chains per thread (24 zmm, 12 ymm) hide the
// instructions' latency, so the loop is bound by the FMA / VNNI ports alone: the figure a kernel's
// GFLOP/s or GOP/s is a fraction of (`qtlab bench peak`; the other benchmarks print that fraction).
//
// One multiply-add counts as 2 operations (1 for the multiply, 1 for the add), as GEMM figures
// 2 M N K do.
#pragma once

#include <cstdint>
#include <string>

namespace qt::cpu {

struct PeakMeasurement {
  double gops = 0;          // GFLOP/s (fp32) or GOP/s (int8); 0: not available on this CPU
  std::string instruction;  // what ran, e.g. "vfmadd231ps zmm"
  int threads = 0;
  double seconds = 0;  // of the best timed run
};

// Best of `repeats` runs of about `seconds_per_run` each, on `threads` OpenMP threads (the
// defaults, about half a second in all, are what the benchmarks use: the best of many short runs
// resists a noisy machine better than a few long ones).
PeakMeasurement measure_fp32_fma_peak(int threads, int repeats = 10, double seconds_per_run = 0.05);
PeakMeasurement measure_int8_vnni_peak(int threads, int repeats = 10,
                                       double seconds_per_run = 0.05);

}  // namespace qt::cpu
