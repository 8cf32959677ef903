// Linear layer: y = x W^T + b, with W stored [out_features, in_features] as in PyTorch, so that a
// weight loaded from a PyTorch state_dict needs no transpose. x may have any number of leading
// dimensions [..., in]; y is [..., out].
#pragma once

#include <cstdint>

#include "nn/init.h"
#include "nn/module.h"

namespace qt::nn {

// Differentiable y = x W^T + b (b may be an undefined Tensor). One GEMM forward, two backward
// (dx = dy W, dW = dy^T x), db = sum of dy over the leading dimensions.
Tensor linear(const Tensor& x, const Tensor& weight, const Tensor& bias);

class Linear : public Module {
 public:
  // Weight and bias drawn with PyTorch's default U(-1/sqrt(in), 1/sqrt(in)); models re-initialise
  // them as their spec says (e.g. BERT: N(0, 0.02^2), zero bias).
  Linear(int64_t in_features, int64_t out_features, bool bias, InitRng& rng);
  Tensor forward(const Tensor& x) const;

  int64_t in_features, out_features;
  Tensor weight;  // [out, in]
  Tensor bias;    // [out] or undefined
};

}  // namespace qt::nn
