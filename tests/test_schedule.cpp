// Tests for optim/schedule.*: learning-rate schedules. Truth: values worked out by hand at the key
// steps, and HF's own lambda for the linear schedule (get_linear_schedule_with_warmup) written out
// independently.
#include <doctest/doctest.h>

#include <algorithm>
#include <cmath>

#include "optim/schedule.h"
#include "tensor/error.h"

using namespace qt;
using namespace qt::optim;

TEST_CASE("schedule: HF linear warm-up and decay (method.md §6.1: lr = 0 at step 0)") {
  Schedule s{ScheduleKind::linear, 1e-4, 10, 110};
  CHECK(lr_at(s, 0) == 0.0);
  CHECK(lr_at(s, 5) == doctest::Approx(5e-5).epsilon(1e-14));
  CHECK(lr_at(s, 10) == doctest::Approx(1e-4).epsilon(1e-14));
  CHECK(lr_at(s, 60) == doctest::Approx(5e-5).epsilon(1e-14));  // half way down
  CHECK(lr_at(s, 109) == doctest::Approx(1e-6).epsilon(1e-12));
  CHECK(lr_at(s, 110) == 0.0);
  CHECK(lr_at(s, 500) == 0.0);
  // HF: lambda(step) = step / max(1, W) before W, else max(0, (N - step) / max(1, N - W)).
  for (int64_t step = 0; step <= 130; ++step) {
    const double lambda = step < 10 ? step / 10.0 : std::max(0.0, (110.0 - step) / 100.0);
    CHECK(lr_at(s, step) == doctest::Approx(1e-4 * lambda).epsilon(1e-13).scale(1e-20));
  }
}

TEST_CASE("schedule: linear decay to a final fraction") {
  Schedule s{ScheduleKind::linear, 1e-4, 10, 110, 0.1};
  CHECK(lr_at(s, 10) == doctest::Approx(1e-4).epsilon(1e-14));
  CHECK(lr_at(s, 60) == doctest::Approx(0.55e-4).epsilon(1e-14));  // 1e-4 * (1 - 0.9 * 0.5)
  CHECK(lr_at(s, 110) == doctest::Approx(1e-5).epsilon(1e-14));
  CHECK(lr_at(s, 1000) == doctest::Approx(1e-5).epsilon(1e-14));
}

TEST_CASE("schedule: cosine with a warm-up start and a floor (method.md §6.4)") {
  Schedule s{ScheduleKind::cosine, 1e-3, 20, 120};
  s.min_lr = 1e-5;
  s.warmup_start_lr = 1e-6;
  CHECK(lr_at(s, 0) == doctest::Approx(1e-6).epsilon(1e-14));
  CHECK(lr_at(s, 10) == doctest::Approx(5.005e-4).epsilon(1e-14));  // 1e-6 + 0.999e-3 / 2
  CHECK(lr_at(s, 20) == doctest::Approx(1e-3).epsilon(1e-14));
  CHECK(lr_at(s, 70) == doctest::Approx(5.05e-4).epsilon(1e-14));  // 1e-5 + 0.99e-3 / 2
  // Quarter way: 1e-5 + 0.99e-3 * (1 + cos(pi/4)) / 2 = 1e-5 + 0.99e-3 * (2 + sqrt 2) / 4
  CHECK(lr_at(s, 45) == doctest::Approx(1e-5 + 0.99e-3 * (2 + std::sqrt(2.0)) / 4).epsilon(1e-14));
  CHECK(lr_at(s, 120) == doctest::Approx(1e-5).epsilon(1e-14));
  CHECK(lr_at(s, 10000) == doctest::Approx(1e-5).epsilon(1e-14));
  // Without warm-up start and floor: HF's cosine, base * (1 + cos(pi q)) / 2.
  Schedule hf{ScheduleKind::cosine, 2.0, 0, 100};
  CHECK(lr_at(hf, 0) == 2.0);
  CHECK(lr_at(hf, 50) == doctest::Approx(1.0).epsilon(1e-14));
  CHECK(lr_at(hf, 100) == doctest::Approx(0.0).scale(1.0).epsilon(1e-15));
}

TEST_CASE("schedule: constant, with and without warm-up; degenerate decay phase") {
  Schedule constant{ScheduleKind::constant, 3e-4};
  CHECK(lr_at(constant, 0) == 3e-4);
  CHECK(lr_at(constant, 123456) == 3e-4);
  Schedule warm{ScheduleKind::constant, 4e-4, 4};
  CHECK(lr_at(warm, 2) == doctest::Approx(2e-4).epsilon(1e-15));
  CHECK(lr_at(warm, 4) == 4e-4);
  // total == warm-up: the decay phase is empty, the schedule is at its final value from step W.
  Schedule edge{ScheduleKind::linear, 1.0, 10, 10, 0.25};
  CHECK(lr_at(edge, 9) == doctest::Approx(0.9).epsilon(1e-15));
  CHECK(lr_at(edge, 10) == 0.25);
  Schedule no_warmup{ScheduleKind::linear, 1.0, 0, 4};
  CHECK(lr_at(no_warmup, 0) == 1.0);
  CHECK(lr_at(no_warmup, 1) == 0.75);
}

TEST_CASE("schedule: parse and validation errors") {
  CHECK(parse_schedule_kind("linear") == ScheduleKind::linear);
  CHECK(parse_schedule_kind("cosine") == ScheduleKind::cosine);
  CHECK(parse_schedule_kind("constant") == ScheduleKind::constant);
  CHECK_THROWS_WITH_AS(parse_schedule_kind("step"), doctest::Contains("unknown kind 'step'"),
                       Error);
  Schedule s{ScheduleKind::linear, 1e-4, 10, 100};
  CHECK_THROWS_WITH_AS(lr_at(s, -1), doctest::Contains("step"), Error);
  CHECK_THROWS_WITH_AS(lr_at(Schedule{ScheduleKind::linear, 1e-4, 10, 5}, 0),
                       doctest::Contains("total_steps"), Error);
  CHECK_THROWS_WITH_AS(lr_at(Schedule{ScheduleKind::linear, 1e-4, 0, 5, 1.5}, 0),
                       doctest::Contains("final_lr_fraction"), Error);
  Schedule floor_too_high{ScheduleKind::cosine, 1e-4, 0, 5};
  floor_too_high.min_lr = 1e-3;
  CHECK_THROWS_WITH_AS(lr_at(floor_too_high, 0), doctest::Contains("min_lr"), Error);
  CHECK_THROWS_AS(lr_at(Schedule{ScheduleKind::constant, -1.0}, 0), Error);
  CHECK_THROWS_AS(lr_at(Schedule{ScheduleKind::constant, 1.0, -3}, 0), Error);
}
