// Parameter groups and the optimizer interface shared by AdamW and SGD.
//
// An optimizer owns a list of parameter groups. Each group has its own weight decay and a learning
// rate multiplier; the learning rate itself comes from the schedule (optim/schedule.h) and is
// passed to every step:
//
//   for each step:  zero_grad(); loss = ...; backward(loss);
//                   norm = clip_grad_norm(...);           // optim/clip_grad.h
//                   optimizer.step(lr_at(schedule, step));
//
// A step updates only the parameters that have a gradient (as PyTorch: a parameter whose .grad is
// undefined is skipped and its state is not touched).
//
// Checkpoints: state_tensors() lists the optimizer state as named tensors ("m.<parameter name>",
// "v.<parameter name>", "step.<parameter name>" for AdamW; "momentum.<parameter name>" for SGD),
// and load_state_tensors() puts such a list back, validating names, shapes and dtypes. State is
// created lazily at a parameter's first update, so a parameter that was never updated has no state
// entries.
#pragma once

#include <string>
#include <utility>
#include <vector>

#include "tensor/tensor.h"

namespace qt::optim {

// The same type as qt::nn::NamedTensors (Module::named_parameters()).
using NamedTensors = std::vector<std::pair<std::string, Tensor>>;

struct ParameterGroup {
  std::vector<std::string> names;  // for checkpoints and logs
  std::vector<Tensor> parameters;
  double weight_decay = 0.0;
  double lr_scale = 1.0;  // this group's lr = schedule lr * lr_scale
};

// Checks groups for an optimizer (defined in optim/parameter_groups.cpp): every parameter is
// defined, floating (f32 or f64), contiguous and listed once; names are unique; weight_decay and
// lr_scale are finite and >= 0. A group with empty `names` gets names "group<g>.<i>"; otherwise it
// must have one name per parameter. Throws qt::Error naming `op`.
void check_parameter_groups(std::vector<ParameterGroup>& groups, const char* op);

// (group index, index within the group) of the parameter called `name`; throws naming `op`.
std::pair<size_t, size_t> locate_parameter(const std::vector<ParameterGroup>& groups,
                                           const std::string& name, const char* op);

class Optimizer {
 public:
  // Validates the groups with check_parameter_groups.
  Optimizer(std::vector<ParameterGroup> groups, const char* op) : groups_(std::move(groups)) {
    check_parameter_groups(groups_, op);
  }
  virtual ~Optimizer() = default;
  Optimizer(const Optimizer&) = delete;
  Optimizer& operator=(const Optimizer&) = delete;

  // One update of every parameter that has a gradient; group g uses lr * groups[g].lr_scale.
  virtual void step(double lr) = 0;

  // "adamw" or "sgd": stored in checkpoints so that state is never loaded into the wrong kind.
  virtual std::string kind() const = 0;

  // The optimizer state as named tensors (see the header comment), in parameter order.
  virtual NamedTensors state_tensors() const = 0;
  // Replaces the state with `state` (as produced by state_tensors()). Validates everything first
  // and reports all problems in one qt::Error; on error the current state is unchanged.
  virtual void load_state_tensors(const NamedTensors& state) = 0;

  // Drops every parameter's gradient (the next backward starts from zero).
  void zero_grad() const {
    for (const ParameterGroup& group : groups_)
      for (const Tensor& parameter : group.parameters) parameter.set_grad(Tensor());
  }

  const std::vector<ParameterGroup>& groups() const { return groups_; }
  // All parameter names in group order.
  std::vector<std::string> parameter_names() const {
    std::vector<std::string> names;
    for (const ParameterGroup& group : groups_)
      names.insert(names.end(), group.names.begin(), group.names.end());
    return names;
  }

 protected:
  std::vector<ParameterGroup> groups_;
};

}  // namespace qt::optim
