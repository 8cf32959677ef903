#include "autograd/engine.h"

#include <algorithm>
#include <unordered_map>
#include <unordered_set>

#include "tensor/create.h"
#include "tensor/elementwise.h"
#include "tensor/view.h"

namespace qt {

namespace {

// Nodes reachable from `root`, ordered so that every node comes before the nodes of its inputs
// (reverse topological order = the order in which backward must run). Iterative depth-first search,
// so that a deep graph (hundreds of layers) cannot overflow the stack; inputs are visited in order,
// which makes the result deterministic. The nodes are held by shared_ptr: freeing the graph as
// backward goes (clearing a node's inputs) drops the last reference to the nodes below it, which
// must stay alive until their own turn comes.
std::vector<std::shared_ptr<Node>> backward_order(const std::shared_ptr<Node>& root) {
  std::vector<std::shared_ptr<Node>> postorder;
  std::unordered_set<Node*> visited{root.get()};
  // (node, next input to visit)
  std::vector<std::pair<std::shared_ptr<Node>, size_t>> stack{{root, 0}};
  while (!stack.empty()) {
    auto& [node, next_input] = stack.back();
    if (next_input < node->inputs.size()) {
      const Tensor& input = node->inputs[next_input++];
      const std::shared_ptr<Node> child = input.defined() ? input.grad_fn() : nullptr;
      if (child && visited.insert(child.get()).second) stack.emplace_back(child, 0);
    } else {
      postorder.push_back(node);
      stack.pop_back();
    }
  }
  std::reverse(postorder.begin(), postorder.end());
  return postorder;
}

// a + b without touching either (both may be shared with other graph values).
Tensor accumulate(const Tensor& existing, const Tensor& addition) {
  return existing.defined() ? ops::add(existing, addition) : addition;
}

}  // namespace

void backward(const Tensor& root, const Tensor& grad_output, bool retain_graph) {
  check_defined(root, "backward");
  QT_CHECK(root.requires_grad(),
           "backward: the tensor does not require grad (no parameter was involved, or it "
           "was computed under NoGradGuard)");
  Tensor seed = grad_output;
  if (!seed.defined()) {
    QT_CHECK(root.numel() == 1,
             "backward: a gradient must be given for a non-scalar root of shape {}",
             shape_str(root.shape()));
    seed = ops::ones(root.shape(), root.dtype());
  }
  QT_CHECK(seed.shape() == root.shape() && seed.dtype() == root.dtype(),
           "backward: grad_output {} {} does not match the root {} {}", dtype_name(seed.dtype()),
           shape_str(seed.shape()), dtype_name(root.dtype()), shape_str(root.shape()));

  NoGradGuard no_grad;
  // The leaf owns its .grad exclusively (optimizers and clipping modify it in place), so a first
  // gradient that anything else can still see is copied. One that nothing else can see (the only
  // handle, on storage no other tensor or view shares, dense from its start) is handed over as it
  // is, saving a full copy of it per backward pass. (Gradients of parameters returned as views of
  // one stacked buffer, as the fused attention's Q/K/V weights, share storage and are copied.)
  auto accumulate_into_leaf = [](const Tensor& leaf, Tensor grad) {
    const Tensor existing = leaf.grad();
    if (existing.defined()) return leaf.set_grad(ops::add(existing, grad));
    const bool unshared = grad.impl_ptr().use_count() == 1 && grad.storage().use_count() == 1 &&
                          grad.offset() == 0 && grad.is_contiguous();
    leaf.set_grad(unshared ? grad : ops::clone(grad));
  };
  if (root.is_leaf()) {
    accumulate_into_leaf(root, seed);
    return;
  }

  std::unordered_map<Node*, Tensor> pending;  // dL/d(output of node), summed over its consumers
  pending[root.grad_fn().get()] = seed;
  for (const std::shared_ptr<Node>& node : backward_order(root.grad_fn())) {
    QT_CHECK(node->backward != nullptr,
             "backward: the graph through '{}' was already freed by an earlier "
             "backward(); pass retain_graph=true to run backward twice",
             node->name);
    auto found = pending.find(node.get());
    if (found == pending.end()) continue;  // no gradient flows into this node
    const Tensor grad = std::move(found->second);
    pending.erase(found);

    std::vector<bool> needs(node->inputs.size());
    for (size_t i = 0; i < needs.size(); ++i) needs[i] = node->inputs[i].defined();
    std::vector<Tensor> input_grads = node->backward(grad, needs);
    QT_CHECK(input_grads.size() == node->inputs.size(),
             "backward: '{}' returned {} gradients for {} inputs", node->name, input_grads.size(),
             node->inputs.size());

    for (size_t i = 0; i < needs.size(); ++i) {
      if (!needs[i] || !input_grads[i].defined()) continue;
      const Tensor& input = node->inputs[i];
      const Tensor& input_grad = input_grads[i];
      QT_CHECK(input_grad.shape() == input.shape() && input_grad.dtype() == input.dtype(),
               "backward: '{}' returned a gradient of {} {} for input {} of {} {}", node->name,
               dtype_name(input_grad.dtype()), shape_str(input_grad.shape()), i,
               dtype_name(input.dtype()), shape_str(input.shape()));
      if (input.is_leaf()) {
        accumulate_into_leaf(input, std::move(input_grads[i]));
      } else {
        Tensor& slot = pending[input.grad_fn().get()];
        slot = accumulate(slot, input_grad);
      }
    }
    if (!retain_graph) {
      node->backward = nullptr;
      node->inputs.clear();
    }
  }
}

}  // namespace qt
