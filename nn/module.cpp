#include "nn/module.h"

namespace qt::nn {

void Module::check_new_name(const std::string& name) const {
  QT_CHECK(!name.empty() && name.find('.') == std::string::npos,
           "Module: invalid name '{}' (must be non-empty and contain no '.')", name);
  auto taken = [&](const auto& list) {
    for (const auto& [existing, value] : list)
      if (existing == name) return true;
    return false;
  };
  QT_CHECK(!taken(parameters_) && !taken(buffers_) && !taken(children_),
           "Module: name '{}' is registered twice", name);
}

Tensor Module::register_parameter(const std::string& name, Tensor value) {
  check_new_name(name);
  check_floating(value, "Module::register_parameter");
  value.set_requires_grad(true);
  parameters_.emplace_back(name, value);
  return value;
}

Tensor Module::register_buffer(const std::string& name, Tensor value) {
  check_new_name(name);
  check_defined(value, "Module::register_buffer");
  buffers_.emplace_back(name, value);
  return value;
}

void Module::set_path(const std::string& path) {
  path_ = path;
  for (const auto& [name, child] : children_) child->set_path(path_ + "." + name);
}

void Module::collect(const std::string& prefix, bool parameters, NamedTensors& out) const {
  for (const auto& [name, tensor] : parameters ? parameters_ : buffers_)
    out.emplace_back(prefix + name, tensor);
  for (const auto& [name, child] : children_) child->collect(prefix + name + ".", parameters, out);
}

NamedTensors Module::named_parameters() const {
  NamedTensors out;
  collect("", true, out);
  return out;
}

NamedTensors Module::named_buffers() const {
  NamedTensors out;
  collect("", false, out);
  return out;
}

std::vector<Tensor> Module::parameters() const {
  std::vector<Tensor> out;
  for (auto& [name, tensor] : named_parameters()) out.push_back(tensor);
  return out;
}

int64_t Module::parameter_count() const {
  int64_t count = 0;
  for (const auto& [name, tensor] : named_parameters()) count += tensor.numel();
  return count;
}

void Module::train(bool on) {
  training_ = on;
  for (auto& [name, child] : children_) child->train(on);
}

void Module::zero_grad() {
  for (auto& [name, tensor] : named_parameters()) tensor.set_grad(Tensor());
}

}  // namespace qt::nn
