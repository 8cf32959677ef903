// tensor/parallel_policy.h: the one rule for when a loop runs on the OpenMP team. Truth: the
// thresholds the header documents (and the kernels used before the policy existed: 2^16 elements
// for light work, 2^15 standard, 2^14 heavy, 2^12 for an RNG draw per element).
#include <doctest/doctest.h>

#include <cstdint>

#include "tensor/parallel_policy.h"

TEST_CASE("parallel_policy: worth_parallel starts above the documented element counts") {
  using qt::WorkCost;
  using qt::worth_parallel;
  const struct {
    WorkCost cost;
    int64_t threshold;
  } cases[] = {{WorkCost::light, 65536},
               {WorkCost::standard, 32768},
               {WorkCost::heavy, 16384},
               {WorkCost::expensive, 4096}};
  for (const auto& c : cases) {
    CAPTURE(c.threshold);
    CHECK_FALSE(worth_parallel(0, c.cost));
    CHECK_FALSE(worth_parallel(c.threshold, c.cost));  // strictly more than the threshold
    CHECK(worth_parallel(c.threshold + 1, c.cost));
    CHECK(worth_parallel(int64_t{1} << 40, c.cost));
  }
  // Usable where a constant is needed (OpenMP if clauses, static_assert).
  static_assert(!qt::worth_parallel(100, WorkCost::light));
}
