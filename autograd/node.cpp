#include "autograd/node.h"

#include <atomic>

namespace qt {

namespace {
thread_local bool grad_mode = true;
std::atomic<uint64_t> next_sequence{0};
}  // namespace

bool grad_enabled() {
  return grad_mode;
}

NoGradGuard::NoGradGuard() : previous_(grad_mode) {
  grad_mode = false;
}
NoGradGuard::~NoGradGuard() {
  grad_mode = previous_;
}

// Destroying a graph naively recurses once per node: tensor -> its Node -> the Node's input
// tensors -> their Nodes -> ... A long chain that is never differentiated (say 100k accumulated
// additions) would overflow the stack. Instead, an input whose tensor and Node are owned by nobody
// else is taken apart here: its Node is moved onto a local worklist and its own inputs are unlinked
// before it is destroyed, so every Node dies with an empty input list and the recursion stays
// one level deep.
Node::~Node() {
  std::vector<std::shared_ptr<Node>> orphans;
  auto unlink_inputs = [&orphans](std::vector<Tensor>& inputs) {
    for (Tensor& input : inputs) {
      if (!input.defined() || input.impl_ptr().use_count() != 1) continue;  // someone else holds it
      std::shared_ptr<Node>& grad_fn = input.impl().grad_fn;
      if (grad_fn && grad_fn.use_count() == 1) orphans.push_back(std::move(grad_fn));
    }
    inputs.clear();
  };
  unlink_inputs(inputs);
  while (!orphans.empty()) {
    std::shared_ptr<Node> node = std::move(orphans.back());
    orphans.pop_back();
    unlink_inputs(node->inputs);
    node->backward = nullptr;  // a closure may hold tensors too; freed while `node` is still alive
  }
}

bool any_requires_grad(const std::vector<Tensor>& inputs) {
  if (!grad_mode) return false;
  for (const Tensor& t : inputs)
    if (t.defined() && t.requires_grad()) return true;
  return false;
}

Tensor record(Tensor result, const char* name, const std::vector<Tensor>& inputs,
              BackwardFunction backward) {
  if (!any_requires_grad(inputs)) return result;
  auto node = std::make_shared<Node>();
  node->name = name;
  node->inputs.reserve(inputs.size());
  for (const Tensor& t : inputs)
    node->inputs.push_back(t.defined() && t.requires_grad() ? t : Tensor());
  node->backward = std::move(backward);
  node->sequence = next_sequence++;
  // `result` is fresh from a kernel; if it is a view sharing an impl with an input, give it its
  // own.
  for (const Tensor& t : inputs)
    if (t.defined() && t.is_same(result)) result = result.detach();
  result.impl().grad_fn = std::move(node);
  result.impl().requires_grad = true;
  return result;
}

}  // namespace qt
