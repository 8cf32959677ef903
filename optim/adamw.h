// AdamW (Loshchilov & Hutter 2019), exactly as torch.optim.AdamW (foreach=False, amsgrad=False).
// For each parameter p with gradient g, at its t-th update (t counts this parameter's own updates,
// starting at 1), with group learning rate lr and weight decay wd:
//
//   p  <- p * (1 - lr * wd)                  decoupled weight decay, applied first
//   m  <- beta1 * m + (1 - beta1) * g        first moment  (m, v start at 0)
//   v  <- beta2 * v + (1 - beta2) * g * g    second moment
//   bias_correction1 = 1 - beta1^t,  bias_correction2 = 1 - beta2^t
//   denom = sqrt(v) / sqrt(bias_correction2) + eps
//   p  <- p - (lr / bias_correction1) * m / denom
//
// At t = 1, m / bias_correction1 = g and sqrt(v / bias_correction2) = |g|, so the first update
// moves each parameter by lr * sign(g) (minus the weight decay, and up to eps).
//
// The arithmetic is that of PyTorch's CPU kernels: the scalars above are computed in double and
// rounded to the parameter's dtype, the element updates run in that dtype. The update is one fused
// loop per parameter over contiguous data (OpenMP over fixed chunks; each element is independent,
// so results do not depend on the thread count).
//
// Usage (a fixture or trainer):
//   AdamW optimizer(weight_decay_groups(model.named_parameters(), {.weight_decay = 0.01}),
//                   {.beta1 = 0.9, .beta2 = 0.999, .eps = 1e-8});
//   ... backward ...; optimizer.step(lr);
//   optimizer.state("encoder.layer.0.query.weight").m   // first moment after the last step
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "optim/optimizer.h"

namespace qt::optim {

struct AdamWOptions {
  double beta1 = 0.9;
  double beta2 = 0.999;
  double eps = 1e-8;
};

// One parameter's state: m and v have the parameter's shape and dtype; step = t, the number of
// updates this parameter has received. Undefined m, v and step 0 before the first update.
struct AdamWState {
  Tensor m;
  Tensor v;
  int64_t step = 0;
};

class AdamW : public Optimizer {
 public:
  // Throws unless 0 <= beta1, beta2 < 1 and eps >= 0 (and the groups are valid, see
  // check_parameter_groups).
  explicit AdamW(std::vector<ParameterGroup> groups, AdamWOptions options = {});

  // Updates every parameter whose grad() is defined with lr * lr_scale of its group; lr must be
  // finite and >= 0. A parameter without a gradient is skipped and its step count not advanced.
  void step(double lr) override;

  std::string kind() const override { return "adamw"; }
  // "m.<name>", "v.<name>" (the parameter's shape and dtype) and "step.<name>" (an i64 scalar) for
  // every parameter that has been updated at least once.
  NamedTensors state_tensors() const override;
  // Each parameter must have all three entries or none (never updated).
  void load_state_tensors(const NamedTensors& state) override;

  const AdamWOptions& options() const { return options_; }
  // The state of the parameter called `name` (throws if there is no such parameter).
  const AdamWState& state(const std::string& name) const;

 private:
  AdamWOptions options_;
  std::vector<std::vector<AdamWState>> states_;  // [group][parameter]
};

}  // namespace qt::optim
