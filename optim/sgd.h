// Stochastic gradient descent with momentum, exactly as torch.optim.SGD. For each parameter p with
// gradient g, group learning rate lr and weight decay wd:
//
//   d = g + wd * p                                  (L2 weight decay, added to the gradient)
//   if momentum != 0:
//     first update:  buf = d
//     later:         buf = momentum * buf + (1 - dampening) * d
//     d = nesterov ? d + momentum * buf : buf
//   p <- p - lr * d
//
// Note the first update copies d into the buffer without dampening (PyTorch's behaviour).
#pragma once

#include <string>
#include <vector>

#include "optim/optimizer.h"

namespace qt::optim {

struct SGDOptions {
  double momentum = 0.0;
  double dampening = 0.0;
  bool nesterov = false;  // needs momentum > 0 and dampening == 0 (as PyTorch)
};

class SGD : public Optimizer {
 public:
  explicit SGD(std::vector<ParameterGroup> groups, SGDOptions options = {});

  // Updates every parameter whose grad() is defined; lr must be finite and >= 0.
  void step(double lr) override;

  std::string kind() const override { return "sgd"; }
  // "momentum.<name>" (the parameter's shape and dtype) for every parameter that has a momentum
  // buffer (momentum != 0 and updated at least once).
  NamedTensors state_tensors() const override;
  void load_state_tensors(const NamedTensors& state) override;

  const SGDOptions& options() const { return options_; }
  // The momentum buffer of parameter `name` (undefined before its first update).
  const Tensor& momentum_buffer(const std::string& name) const;

 private:
  SGDOptions options_;
  std::vector<std::vector<Tensor>> buffers_;  // [group][parameter]
};

}  // namespace qt::optim
