// Tests for tensor/cpu_peak.*: the peak probes run, name the instruction they ran (the AVX-512
// or the AVX2 chains, as the CPU check says), and refuse bad arguments. The figures themselves are
// benchmarks (`qtlab bench peak`), never asserted in a test.
#include <doctest/doctest.h>

#include "tensor/cpu_features.h"
#include "tensor/cpu_peak.h"
#include "tensor/error.h"

TEST_CASE("cpu_peak: the fp32 and int8 probes run and report what they measured") {
  const qt::cpu::PeakMeasurement fp = qt::cpu::measure_fp32_fma_peak(1, 1, 0.01);
  CHECK(fp.gops > 0);
  CHECK(fp.threads == 1);
  CHECK(fp.seconds > 0);
  CHECK(fp.instruction == (qt::cpu::avx512_usable() ? "vfmadd231ps zmm" : "vfmadd231ps ymm"));
  const qt::cpu::PeakMeasurement i8 = qt::cpu::measure_int8_vnni_peak(1, 1, 0.01);
  if (qt::cpu::avx512_usable() && __builtin_cpu_supports("avx512vnni")) {
    CHECK(i8.gops > 0);
    CHECK(i8.instruction == "vpdpbusd zmm");
  } else {
    CHECK(i8.gops == 0);
    CHECK(i8.instruction.find("no AVX-512 VNNI") != std::string::npos);
  }
  CHECK_THROWS_WITH_AS(qt::cpu::measure_fp32_fma_peak(0), doctest::Contains("threads >= 1"),
                       qt::Error);
  CHECK_THROWS_WITH_AS(qt::cpu::measure_int8_vnni_peak(1, 0), doctest::Contains("repeats >= 1"),
                       qt::Error);
}
