// One thread count for the whole framework (see threads.h).
//
// The setting lives in one atomic int. 0 means "not decided yet": the first call to num_threads()
// reads QTLAB_NUM_THREADS (or falls back to the number of processors) and applies it to both
// OpenMP and OpenBLAS. Every GEMM entry point calls num_threads() first, so the setting is in force
// before the first OpenMP region or OpenBLAS call of the process.
#include "tensor/threads.h"

#include <cblas.h>
#include <omp.h>

#include <atomic>
#include <cerrno>
#include <cstdlib>
#include <mutex>
#include <string>

#include "tensor/error.h"

namespace qt {
namespace {

std::atomic<int> g_num_threads{0};
std::mutex g_init_mutex;

void apply(int n) {
  omp_set_num_threads(n);
  openblas_set_num_threads(n);
  g_num_threads.store(n, std::memory_order_release);
}

// QTLAB_NUM_THREADS: a positive decimal integer, nothing else (no sign, no trailing junk).
int threads_from_environment() {
  const char* text = std::getenv("QTLAB_NUM_THREADS");
  if (text == nullptr || *text == '\0') return omp_get_num_procs() > 0 ? omp_get_num_procs() : 1;
  const std::string value(text);
  QT_CHECK(value.find_first_not_of("0123456789") == std::string::npos,
           "QTLAB_NUM_THREADS='{}' is not a positive integer", value);
  errno = 0;
  char* end = nullptr;
  const long n = std::strtol(text, &end, 10);
  QT_CHECK(errno == 0 && n >= 1 && n <= 4096,
           "QTLAB_NUM_THREADS='{}' is out of range (expected an integer in [1, 4096])", value);
  return static_cast<int>(n);
}

}  // namespace

int num_threads() {
  const int n = g_num_threads.load(std::memory_order_acquire);
  if (n > 0) return n;
  std::lock_guard<std::mutex> lock(g_init_mutex);
  if (g_num_threads.load(std::memory_order_acquire) == 0) apply(threads_from_environment());
  return g_num_threads.load(std::memory_order_acquire);
}

void set_num_threads(int n) {
  QT_CHECK(n >= 1, "set_num_threads: n = {} (expected n >= 1)", n);
  std::lock_guard<std::mutex> lock(g_init_mutex);
  apply(n);
}

}  // namespace qt
