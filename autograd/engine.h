// Running the graph backwards.
#pragma once

#include "autograd/node.h"

namespace qt {

// Computes d(root)/d(leaf) for every leaf that requires grad and adds it to leaf.grad().
// `grad_output` is dL/d(root); it may be omitted only when root has one element (then it is 1).
// The graph is freed as it is consumed unless retain_graph is true; running backward twice over a
// freed graph is an error. Runs with grad mode off.
void backward(const Tensor& root, const Tensor& grad_output = Tensor(), bool retain_graph = false);

}  // namespace qt
