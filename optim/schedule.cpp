#include "optim/schedule.h"

#include <algorithm>
#include <cmath>
#include <numbers>

#include "tensor/error.h"

namespace qt::optim {

ScheduleKind parse_schedule_kind(const std::string& name) {
  if (name == "constant") return ScheduleKind::constant;
  if (name == "linear") return ScheduleKind::linear;
  if (name == "cosine") return ScheduleKind::cosine;
  fail("schedule: unknown kind '{}' (expected constant, linear or cosine)", name);
}

std::string schedule_kind_name(ScheduleKind kind) {
  switch (kind) {
    case ScheduleKind::constant:
      return "constant";
    case ScheduleKind::linear:
      return "linear";
    case ScheduleKind::cosine:
      return "cosine";
  }
  return "?";
}

void check_schedule(const Schedule& s) {
  const std::string kind = schedule_kind_name(s.kind);
  QT_CHECK(std::isfinite(s.base_lr) && s.base_lr >= 0,
           "schedule {}: base_lr must be finite and >= 0, got {}", kind, s.base_lr);
  QT_CHECK(s.warmup_steps >= 0, "schedule {}: warmup_steps must be >= 0, got {}", kind,
           s.warmup_steps);
  QT_CHECK(std::isfinite(s.warmup_start_lr) && s.warmup_start_lr >= 0,
           "schedule {}: warmup_start_lr must be finite and >= 0, got {}", kind, s.warmup_start_lr);
  if (s.kind == ScheduleKind::constant) return;
  QT_CHECK(s.total_steps >= s.warmup_steps,
           "schedule {}: total_steps ({}) must be >= warmup_steps ({})", kind, s.total_steps,
           s.warmup_steps);
  if (s.kind == ScheduleKind::linear)
    QT_CHECK(s.final_lr_fraction >= 0 && s.final_lr_fraction <= 1,
             "schedule linear: final_lr_fraction must be in [0, 1], got {}", s.final_lr_fraction);
  if (s.kind == ScheduleKind::cosine)
    QT_CHECK(s.min_lr >= 0 && s.min_lr <= s.base_lr,
             "schedule cosine: min_lr must be in [0, base_lr = {}], got {}", s.base_lr, s.min_lr);
}

double lr_at(const Schedule& s, int64_t step) {
  check_schedule(s);
  QT_CHECK(step >= 0, "lr_at: step must be >= 0, got {}", step);
  if (step < s.warmup_steps)
    return s.warmup_start_lr + (s.base_lr - s.warmup_start_lr) * static_cast<double>(step) /
                                   static_cast<double>(s.warmup_steps);
  if (s.kind == ScheduleKind::constant) return s.base_lr;
  // Progress through the decay phase, in [0, 1].
  const int64_t decay_steps = s.total_steps - s.warmup_steps;
  const double progress = decay_steps == 0
                              ? 1.0
                              : std::min(1.0, static_cast<double>(step - s.warmup_steps) /
                                                  static_cast<double>(decay_steps));
  if (s.kind == ScheduleKind::linear)
    return s.base_lr * (1.0 - (1.0 - s.final_lr_fraction) * progress);
  return s.min_lr + (s.base_lr - s.min_lr) * 0.5 * (1.0 + std::cos(std::numbers::pi * progress));
}

}  // namespace qt::optim
