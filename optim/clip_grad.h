// Gradient utilities: the global gradient norm, clipping by it (torch.nn.utils.clip_grad_norm_),
// and scaling gradients.
//
// Global L2 norm over all parameters that have a gradient:
//   norm = sqrt( sum over parameters p, elements i of g_{p,i}^2 )
// computed in double, in fixed chunks summed in a fixed order, so it is bit-identical for any
// thread count. Clipping then multiplies every gradient by
//   scale = max_norm / (norm + 1e-6)    only when scale < 1   (PyTorch's formula).
//
// A non-finite norm (a NaN or Inf gradient, e.g. an fp16 overflow) is returned as is and the
// gradients are left untouched: the caller decides (normally: skip the step). PyTorch would
// multiply the gradients by NaN or 0 here.
//
// Gradient accumulation over k micro-batches (method.md §6.2 uses k = 4): gradients add up in .grad
// across backward calls, so
//   optimizer.zero_grad();
//   for each micro-batch j:  backward(loss_j * (1.0 / k));   // loss_j = mean over micro-batch j
//   clip_grad_norm(...); optimizer.step(lr);
// gives the gradient of the mean loss over the k equal-sized micro-batches (the big batch), up to
// float rounding. Equivalently, backward(loss_j) k times and then scale_gradients(..., 1.0 / k).
#pragma once

#include <vector>

#include "optim/optimizer.h"
#include "tensor/tensor.h"

namespace qt::optim {

// The global L2 norm of the gradients of `parameters` (those without a gradient are skipped; 0 if
// none has one).
double gradient_norm(const std::vector<Tensor>& parameters);

// Clips the gradients in place to global norm max_norm (> 0) and returns the norm before clipping.
double clip_grad_norm(const std::vector<Tensor>& parameters, double max_norm);

// Multiplies every gradient by `factor` in place (accumulation, loss-scale unscaling).
void scale_gradients(const std::vector<Tensor>& parameters, double factor);

// All parameters of an optimizer's groups, for the functions above.
std::vector<Tensor> all_parameters(const std::vector<ParameterGroup>& groups);

}  // namespace qt::optim
