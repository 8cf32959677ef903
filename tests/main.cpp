// The doctest runner. Each module's tests live in tests/test_<module>.cpp beside this file.
//
// The suite runs on the own GEMM backend on every CPU unless QTLAB_GEMM_BACKEND says otherwise.
// The default backend depends on the CPU (own with AVX-512, OpenBLAS without), and tests that
// train a tiny model and check what it reached, or compare thread counts bit for bit, need the
// same arithmetic everywhere: the own kernel is bit-identical for any thread count, and its AVX2
// and AVX-512 micro-kernels agree bit for bit for K <= 256 (one K block), which covers the tiny
// models. test_gemm checks OpenBLAS against it explicitly.
#define DOCTEST_CONFIG_IMPLEMENT
#include <doctest/doctest.h>

#include <cstdlib>

#include "tensor/blas/gemm.h"

int main(int argc, char** argv) {
  const char* chosen = std::getenv("QTLAB_GEMM_BACKEND");
  if (chosen == nullptr || *chosen == '\0') qt::blas::set_backend(qt::blas::Backend::own);
  doctest::Context context(argc, argv);
  return context.run();
}
