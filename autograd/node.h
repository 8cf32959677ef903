// The autograd graph: define-by-run, reverse mode.
//
// Every differentiable op (autograd/functions.h) computes its result with plain kernels, then — if
// grad mode is on and some input requires grad — calls `record`, which attaches a Node to the
// result. The Node remembers the op's inputs and a backward function: given dL/d(output), it
// returns dL/d(input_i) for each input. `backward()` (autograd/engine.h) walks these Nodes from the
// loss back to the leaves in reverse topological order and accumulates gradients into `.grad`.
//
// A fused op with a hand-written backward (attention, LayerNorm, cross-entropy) is just another
// Node: its backward function may do anything, as long as it returns one gradient per input.
//
// Ownership: result -> Node -> inputs (and whatever the backward closure captured). A closure must
// never capture the result Tensor itself (that would be a cycle and leak); capture
// `result.detach()` instead, which shares the data but not the graph.
#pragma once

#include <functional>
#include <string>
#include <vector>

#include "tensor/tensor.h"

namespace qt {

// dL/d(inputs) from dL/d(output). needs_input_grad[i] says whether input i wants a gradient; the
// function may return an undefined Tensor for the others (and should skip computing them).
using BackwardFunction = std::function<std::vector<Tensor>(
    const Tensor& grad_output, const std::vector<bool>& needs_input_grad)>;

struct Node {
  std::string name;            // the op, for error messages ("matmul", "attention", ...)
  std::vector<Tensor> inputs;  // one per op input; undefined where the input does not require grad
  BackwardFunction backward;   // cleared once run, unless the graph is retained
  uint64_t sequence = 0;       // creation order: breaks ties so that the traversal is deterministic

  Node() = default;
  Node(const Node&) = delete;
  Node& operator=(const Node&) = delete;
  // Frees the part of the graph only this node keeps alive without recursion (see node.cpp).
  ~Node();
};

// Is gradient recording on? (thread-local; on by default)
bool grad_enabled();

// Turns recording off for its lifetime (evaluation, optimizer updates, backward passes themselves).
class NoGradGuard {
 public:
  NoGradGuard();
  ~NoGradGuard();
  NoGradGuard(const NoGradGuard&) = delete;
  NoGradGuard& operator=(const NoGradGuard&) = delete;

 private:
  bool previous_;
};

// True when grad mode is on and at least one of the tensors requires grad.
bool any_requires_grad(const std::vector<Tensor>& inputs);

// Attaches a Node for op `name` to `result` when any_requires_grad(inputs); returns `result`.
// Inputs that do not require grad are stored as undefined tensors (they are never differentiated).
Tensor record(Tensor result, const char* name, const std::vector<Tensor>& inputs,
              BackwardFunction backward);

}  // namespace qt
