#include "optim/parameter_groups.h"

#include <algorithm>
#include <cctype>
#include <cmath>
#include <set>

#include "tensor/error.h"

namespace qt::optim {

bool is_bias(const std::string& name) {
  return name.find("bias") != std::string::npos;
}

bool is_layer_norm_weight(const std::string& name) {
  // Split off the last two components: "<...>.<module>.weight".
  const size_t last_dot = name.rfind('.');
  if (last_dot == std::string::npos || name.substr(last_dot + 1) != "weight") return false;
  const size_t module_start = last_dot == 0 ? std::string::npos : name.rfind('.', last_dot - 1);
  std::string module =
      name.substr(module_start == std::string::npos ? 0 : module_start + 1,
                  last_dot - (module_start == std::string::npos ? 0 : module_start + 1));
  std::transform(module.begin(), module.end(), module.begin(),
                 [](unsigned char c) { return static_cast<char>(std::tolower(c)); });
  if (module.find("layer_norm") != std::string::npos ||
      module.find("layernorm") != std::string::npos)
    return true;
  // "norm1", "norm_2" -> "norm"
  while (!module.empty() &&
         (std::isdigit(static_cast<unsigned char>(module.back())) || module.back() == '_'))
    module.pop_back();
  return module.size() >= 4 && module.compare(module.size() - 4, 4, "norm") == 0;
}

std::vector<ParameterGroup> weight_decay_groups(const NamedTensors& named_parameters,
                                                const WeightDecayRule& rule) {
  QT_CHECK(std::isfinite(rule.weight_decay) && rule.weight_decay >= 0,
           "weight_decay_groups: weight_decay must be finite and >= 0, got {}", rule.weight_decay);
  std::vector<ParameterGroup> groups(2);
  groups[0].weight_decay = rule.weight_decay;
  groups[1].weight_decay = 0.0;
  const std::set<std::string> excluded(rule.no_decay_names.begin(), rule.no_decay_names.end());
  for (const auto& [name, parameter] : named_parameters) {
    const bool decay = !is_bias(name) && !excluded.count(name) &&
                       (rule.decay_layer_norm_weight || !is_layer_norm_weight(name));
    ParameterGroup& group = groups[decay ? 0 : 1];
    group.names.push_back(name);
    group.parameters.push_back(parameter);
  }
  return groups;
}

void check_parameter_groups(std::vector<ParameterGroup>& groups, const char* op) {
  std::set<std::string> seen_names;
  std::set<const TensorImpl*> seen_tensors;
  for (size_t g = 0; g < groups.size(); ++g) {
    ParameterGroup& group = groups[g];
    QT_CHECK(std::isfinite(group.weight_decay) && group.weight_decay >= 0,
             "{}: group {} has weight_decay {} (must be finite and >= 0)", op, g,
             group.weight_decay);
    QT_CHECK(std::isfinite(group.lr_scale) && group.lr_scale >= 0,
             "{}: group {} has lr_scale {} (must be finite and >= 0)", op, g, group.lr_scale);
    if (group.names.empty())
      for (size_t i = 0; i < group.parameters.size(); ++i)
        group.names.push_back("group" + std::to_string(g) + "." + std::to_string(i));
    QT_CHECK(group.names.size() == group.parameters.size(),
             "{}: group {} has {} names for {} parameters", op, g, group.names.size(),
             group.parameters.size());
    for (size_t i = 0; i < group.parameters.size(); ++i) {
      const std::string& name = group.names[i];
      const Tensor& parameter = group.parameters[i];
      QT_CHECK(parameter.defined(), "{}: parameter '{}' is undefined", op, name);
      QT_CHECK(is_floating(parameter.dtype()),
               "{}: parameter '{}' has dtype {} (f32 or f64 needed)", op, name,
               dtype_name(parameter.dtype()));
      QT_CHECK(parameter.is_contiguous(), "{}: parameter '{}' {} is not contiguous", op, name,
               shape_str(parameter.shape()));
      QT_CHECK(seen_names.insert(name).second, "{}: parameter name '{}' appears twice", op, name);
      QT_CHECK(seen_tensors.insert(&parameter.impl()).second,
               "{}: parameter '{}' is the same tensor as an earlier parameter", op, name);
    }
  }
}

std::pair<size_t, size_t> locate_parameter(const std::vector<ParameterGroup>& groups,
                                           const std::string& name, const char* op) {
  for (size_t g = 0; g < groups.size(); ++g)
    for (size_t i = 0; i < groups[g].names.size(); ++i)
      if (groups[g].names[i] == name) return {g, i};
  fail("{}: no parameter called '{}'", op, name);
}

}  // namespace qt::optim
