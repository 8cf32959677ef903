// Learning-rate schedules: lr_at(schedule, step) is the learning rate of optimizer update number
// `step` (0-based: the first update uses lr_at(schedule, 0)). A pure function, so a resumed run
// only needs its step counter. With W = warmup_steps, N = total_steps, base = base_lr:
//
//   warm-up (step < W), all kinds:   lr = warmup_start_lr + (base - warmup_start_lr) * step / W
//                                    (warmup_start_lr = 0 gives HF's lr = 0 at step 0)
//   constant:  lr = base after the warm-up
//   linear:    HF get_linear_schedule_with_warmup, generalised to a final fraction f (method.md
//   §6.2
//              final_lr_fraction): with progress q = (step - W) / (N - W) clamped to [0, 1],
//                lr = base * (1 - (1 - f) * q)          (f = 0: HF's base * (N - step) / (N - W))
//   cosine:    HF get_cosine_schedule_with_warmup with a floor min_lr (method.md §6.4, ViT: 1e-3 to
//              1e-5 after a warm-up from 1e-6):
//                lr = min_lr + (base - min_lr) * 0.5 * (1 + cos(pi * q))
//
// After N steps linear stays at base * f and cosine at min_lr. When N == W the decay phase is empty
// and the schedule drops to its final value at step W.
#pragma once

#include <cstdint>
#include <string>

namespace qt::optim {

enum class ScheduleKind { constant, linear, cosine };

// "constant", "linear", "cosine"; anything else throws listing the choices.
ScheduleKind parse_schedule_kind(const std::string& name);
std::string schedule_kind_name(ScheduleKind kind);

struct Schedule {
  ScheduleKind kind = ScheduleKind::linear;
  double base_lr = 0.0;
  int64_t warmup_steps = 0;
  int64_t total_steps = 0;         // linear and cosine: where the decay ends (>= warmup_steps)
  double final_lr_fraction = 0.0;  // linear: lr at total_steps = base_lr * final_lr_fraction
  double min_lr = 0.0;             // cosine: the floor
  double warmup_start_lr = 0.0;    // lr at step 0 when warmup_steps > 0
};

// Throws qt::Error when the schedule is inconsistent (negative values, total < warm-up for
// linear/cosine, final fraction outside [0, 1], min_lr above base_lr) or step < 0.
double lr_at(const Schedule& schedule, int64_t step);

// The same checks, without a step (call once when a run is configured).
void check_schedule(const Schedule& schedule);

}  // namespace qt::optim
