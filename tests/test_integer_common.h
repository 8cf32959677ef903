// Shared by the tests of the integer ops (tests/test_integer_*.cpp): the error of an integer
// output against its float64 truth, in output LSBs.
//
// For each output q (an integer code) and its exact real value t (float64, already divided by the
// output scale, zero point added and clamped to the grid):
//   real error     |q - t|                    (>= the 0.5 LSB any rounding must lose, at worst)
//   code error     |q - round_half_even(t)|   (0 when the op is correctly rounded)
// The summary prints max / mean of the real error and the histogram of code errors; tests assert
// max and mean bounds and print the summary through INFO (shown only on failure) and MESSAGE when
// QTLAB_TEST_VERBOSE is set.
#pragma once

#include <doctest/doctest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <map>
#include <string>

#include <fmt/format.h>

#include "tensor/threads.h"

namespace qt::test {

// Restores the OpenMP thread count a test changes (the integer ops must not depend on it).
struct ThreadGuard {
  int threads = qt::num_threads();
  ~ThreadGuard() { qt::set_num_threads(threads); }
};

struct LsbError {
  int64_t count = 0;
  double max_error = 0, sum_error = 0;
  std::map<int64_t, int64_t> code_histogram;  // |q - round(t)| -> how many

  void add(int64_t q, double truth) {
    const double error = std::fabs(static_cast<double>(q) - truth);
    max_error = std::max(max_error, error);
    sum_error += error;
    ++count;
    ++code_histogram[std::llabs(q - static_cast<int64_t>(std::nearbyint(truth)))];
  }
  double mean_error() const { return count ? sum_error / static_cast<double>(count) : 0; }
  int64_t max_code_error() const {
    return code_histogram.empty() ? 0 : code_histogram.rbegin()->first;
  }
  std::string summary(const std::string& what) const {
    std::string h;
    for (const auto& [lsb, n] : code_histogram) h += fmt::format(" {}:{}", lsb, n);
    return fmt::format(
        "{}: {} outputs, |q - t| max {:.4f} LSB mean {:.4f} LSB; |q - round(t)| histogram{}", what,
        count, max_error, mean_error(), h);
  }
};

// Prints the summary when QTLAB_TEST_VERBOSE is set (the docs quote these lines).
inline void report(const LsbError& e, const std::string& what) {
  if (std::getenv("QTLAB_TEST_VERBOSE") != nullptr) MESSAGE(e.summary(what));
}

}  // namespace qt::test
