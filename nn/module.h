// Module: a named collection of parameters, buffers and child modules, as in torch.nn.Module.
//
// Parameters are trainable leaf tensors (requires_grad); buffers are state that is saved but not
// trained. Both are registered in a fixed order, so names and iteration order are stable:
// "encoder.layer.0.attention.query.weight". A module stores its own Tensor handles as members and
// registers the same handles here; loading a checkpoint copies data into them in place, so both
// views stay in sync.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "tensor/tensor.h"

namespace qt::nn {

using NamedTensors = std::vector<std::pair<std::string, Tensor>>;

class Module {
 public:
  virtual ~Module() = default;
  Module() = default;
  Module(const Module&) = delete;
  Module& operator=(const Module&) = delete;

  // All parameters / buffers of this module and its children, depth first, with dotted names.
  NamedTensors named_parameters() const;
  NamedTensors named_buffers() const;
  std::vector<Tensor> parameters() const;
  int64_t parameter_count() const;  // total number of elements

  // Train mode enables dropout; eval mode disables it. Applies to all children.
  void train(bool on = true);
  void eval() { train(false); }
  bool is_training() const { return training_; }

  // Drops every parameter's .grad (the next backward starts from zero).
  void zero_grad();

  // The dotted name of this module in the tree it belongs to ("encoder.layer.0.attention"; ""
  // for the root), kept up to date as modules are registered. Names activation taps.
  const std::string& path() const { return path_; }

 protected:
  // Registers `value` as a trainable parameter (sets requires_grad) and returns it.
  Tensor register_parameter(const std::string& name, Tensor value);
  Tensor register_buffer(const std::string& name, Tensor value);
  // Registers a child; its names get the prefix "name.".
  template <typename M>
  std::shared_ptr<M> register_module(const std::string& name, std::shared_ptr<M> child) {
    check_new_name(name);
    children_.emplace_back(name, child);
    child->set_path(path_.empty() ? name : path_ + "." + name);
    return child;
  }

 private:
  void check_new_name(const std::string& name) const;
  void collect(const std::string& prefix, bool parameters, NamedTensors& out) const;
  void set_path(const std::string& path);  // this module's and, recursively, its children's

  bool training_ = true;
  std::string path_;
  NamedTensors parameters_;
  NamedTensors buffers_;
  std::vector<std::pair<std::string, std::shared_ptr<Module>>> children_;
};

}  // namespace qt::nn
