// Small helpers shared by the test files: seeded random tensors (std::mt19937, independent of the
// framework's own Philox generator, so tests do not test the code with itself) and element access.
#pragma once

#include <sys/wait.h>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <random>
#include <string>
#include <vector>

#include <unistd.h>

#include "tensor/shape.h"
#include "tensor/tensor.h"

namespace qt::test {

// f32 or f64 tensor of N(mean, std^2) values.
inline Tensor random_tensor(const Shape& shape, DType dtype, unsigned seed, double mean = 0,
                            double std = 1) {
  std::mt19937 generator(seed);
  std::normal_distribution<double> normal(mean, std);
  Tensor t = Tensor::empty(shape, dtype);
  for (int64_t i = 0; i < t.numel(); ++i) {
    if (dtype == DType::f32) {
      t.data<float>()[i] = static_cast<float>(normal(generator));
    } else {
      t.data<double>()[i] = normal(generator);
    }
  }
  return t;
}

// i64 tensor of uniform integers in [low, high].
inline Tensor random_ids(const Shape& shape, int64_t low, int64_t high, unsigned seed) {
  std::mt19937 generator(seed);
  std::uniform_int_distribution<int64_t> uniform(low, high);
  Tensor t = Tensor::empty(shape, DType::i64);
  for (int64_t i = 0; i < t.numel(); ++i) t.data<int64_t>()[i] = uniform(generator);
  return t;
}

// i64 tensor holding `values` with `shape`.
inline Tensor ids_tensor(const std::vector<int64_t>& values, const Shape& shape) {
  Tensor t = Tensor::empty(shape, DType::i64);
  std::memcpy(t.data<int64_t>(), values.data(), values.size() * sizeof(int64_t));
  return t;
}

// The flat row-major position of a multi-index.
inline int64_t ravel(const std::vector<int64_t>& index, const Shape& shape) {
  int64_t flat = 0;
  for (size_t d = 0; d < shape.size(); ++d) flat = flat * shape[d] + index[d];
  return flat;
}

// All elements of a tensor (any layout, any dtype) in row-major order, through at().
inline std::vector<double> elements(const Tensor& t) {
  std::vector<double> out;
  for (int64_t p = 0; p < t.numel(); ++p) out.push_back(t.at(unravel_index(p, t.shape())));
  return out;
}

// A scratch directory for one test file's files: <tmp>/qtlab_test.<pid>/<suite>. One root per
// process (test runs may overlap), removed with everything in it when the process exits.
inline std::filesystem::path scratch_directory(const std::string& suite) {
  struct ScratchRoot {
    std::filesystem::path path =
        std::filesystem::temp_directory_path() / ("qtlab_test." + std::to_string(::getpid()));
    ~ScratchRoot() {
      std::error_code ignored;
      std::filesystem::remove_all(path, ignored);
    }
  };
  static const ScratchRoot root;
  const std::filesystem::path dir = root.path / suite;
  std::filesystem::create_directories(dir);
  return dir;
}

// Runs a shell command, returning its exit status and everything it wrote to stdout and stderr
// (tests of the `qtlab` program itself, e.g. under mpirun).
struct CommandResult {
  int status = -1;  // the exit code, or 128 + signal
  std::string output;
};
inline CommandResult run_command(const std::string& command) {
  CommandResult result;
  FILE* pipe = ::popen((command + " 2>&1").c_str(), "r");
  if (pipe == nullptr) return result;
  char buffer[4096];
  size_t n = 0;
  while ((n = std::fread(buffer, 1, sizeof buffer, pipe)) > 0) result.output.append(buffer, n);
  const int status = ::pclose(pipe);
  result.status = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
  return result;
}

// True when QTLAB_TEST_VERBOSE is set: tests then print the figures they measured (QTLAB_NOTE).
inline bool verbose() {
  static const bool on = std::getenv("QTLAB_TEST_VERBOSE") != nullptr;
  return on;
}

}  // namespace qt::test

// A measured figure a test prints for the record (a fixture deviation, a perplexity), only with
// QTLAB_TEST_VERBOSE=1: the normal run's output is failures and progress only (tests/main.cpp).
#define QTLAB_NOTE(...)                            \
  do {                                             \
    if (qt::test::verbose()) MESSAGE(__VA_ARGS__); \
  } while (false)
