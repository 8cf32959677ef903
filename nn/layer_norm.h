// Layer normalisation over the last dimension (Ba et al. 2016), as torch.nn.LayerNorm:
//   mu = mean(x), var = mean((x - mu)^2)  (biased), xhat = (x - mu) / sqrt(var + eps),
//   y = gamma * xhat + beta.
// Fused: one pass forward (saving mean and 1/sqrt(var+eps) per row) and a hand-written backward
//   dxhat = dy * gamma
//   dx = (1/sqrt(var+eps)) * (dxhat - mean(dxhat) - xhat * mean(dxhat * xhat))
//   dgamma = sum over rows of dy * xhat,  dbeta = sum over rows of dy.
#pragma once

#include <cstdint>

#include "nn/module.h"

namespace qt::nn {

// Differentiable fused LayerNorm over the last dimension; gamma, beta: [D].
Tensor layer_norm(const Tensor& x, const Tensor& gamma, const Tensor& beta, double eps);

class LayerNorm : public Module {
 public:
  explicit LayerNorm(int64_t dim, double eps = 1e-5);  // gamma = 1, beta = 0
  Tensor forward(const Tensor& x) const;

  int64_t dim;
  double eps;
  Tensor weight;  // gamma [D] (PyTorch's name)
  Tensor bias;    // beta [D]
};

}  // namespace qt::nn
