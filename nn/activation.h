// Activation functions as modules, so that a model can hold them by name like any other layer.
// They have no parameters; the math and the backward formulas live in the differentiable ops
// (autograd/functions.h):
//   GELU(x) = x Phi(x) = 0.5 x (1 + erf(x / sqrt(2)))   (the exact erf form used by BERT)
//   ReLU(x) = max(x, 0)
#pragma once

#include "autograd/functions.h"
#include "nn/module.h"

namespace qt::nn {

class GELU : public Module {
 public:
  Tensor forward(const Tensor& x) const { return qt::gelu(x); }
};

class ReLU : public Module {
 public:
  Tensor forward(const Tensor& x) const { return qt::relu(x); }
};

}  // namespace qt::nn
