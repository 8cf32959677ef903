#include "nn/checkpoint.h"

#include <set>
#include <utility>
#include <vector>

#include "autograd/node.h"
#include "tensor/safetensors.h"
#include "tensor/view.h"

namespace qt::nn {

namespace {

constexpr const char* kModelFormat = "qtlab.model";

bool starts_with(const std::string& text, const std::string& prefix) {
  return text.compare(0, prefix.size(), prefix) == 0;
}

}  // namespace

NamedTensors model_tensors(const Module& model) {
  NamedTensors out = model.named_parameters();
  for (auto& entry : model.named_buffers()) out.push_back(std::move(entry));
  return out;
}

void check_matches_model(const std::string& path, const NamedTensors& stored,
                         const NamedTensors& expected, const char* op) {
  std::map<std::string, const Tensor*> stored_by_name;
  for (const auto& [name, tensor] : stored) stored_by_name[name] = &tensor;
  std::vector<std::string> missing, mismatched, unexpected;
  std::set<std::string> expected_names;
  for (const auto& [name, target] : expected) {
    expected_names.insert(name);
    const auto found = stored_by_name.find(name);
    if (found == stored_by_name.end()) {
      missing.push_back(name);
      continue;
    }
    const Tensor& source = *found->second;
    if (source.shape() != target.shape() || source.dtype() != target.dtype())
      mismatched.push_back(fmt::format("{} (file {} {}, model {} {})", name,
                                       dtype_name(source.dtype()), shape_str(source.shape()),
                                       dtype_name(target.dtype()), shape_str(target.shape())));
  }
  for (const auto& [name, tensor] : stored)
    if (!expected_names.count(name)) unexpected.push_back(name);
  if (!missing.empty() || !mismatched.empty() || !unexpected.empty()) {
    std::vector<std::string> parts;
    if (!missing.empty()) parts.push_back(fmt::format("missing: {}", fmt::join(missing, ", ")));
    if (!mismatched.empty())
      parts.push_back(fmt::format("shape/dtype mismatch: {}", fmt::join(mismatched, ", ")));
    if (!unexpected.empty())
      parts.push_back(fmt::format("unexpected: {}", fmt::join(unexpected, ", ")));
    fail("{} '{}': the file does not match the model; {}", op, path, fmt::join(parts, "; "));
  }
}

void copy_into_model(const NamedTensors& stored, const NamedTensors& expected) {
  std::map<std::string, const Tensor*> stored_by_name;
  for (const auto& [name, tensor] : stored) stored_by_name[name] = &tensor;
  NoGradGuard no_grad;
  for (const auto& [name, target] : expected) ops::copy_into(target, *stored_by_name.at(name));
}

void save_model(const std::string& path, const Module& model, const std::string& config_json) {
  save_safetensors(path, model_tensors(model), {{"format", kModelFormat}, {"config", config_json}});
}

std::string load_model(const std::string& path, Module& model) {
  const SafeTensors file = load_safetensors(path);
  // A training checkpoint also holds the optimizer state; the model part is everything else.
  const auto format = file.metadata.find("format");
  const bool training = format != file.metadata.end() && format->second == kTrainingFileFormat;
  NamedTensors stored;
  for (const auto& [name, tensor] : file.tensors)
    if (!(training && starts_with(name, kTrainingExtraTensorPrefix)))
      stored.emplace_back(name, tensor);
  const NamedTensors expected = model_tensors(model);
  check_matches_model(path, stored, expected, "load_model");
  copy_into_model(stored, expected);
  const auto config = file.metadata.find("config");
  return config == file.metadata.end() ? "" : config->second;
}

std::string read_model_config(const std::string& path) {
  const std::map<std::string, std::string> metadata = load_safetensors_metadata(path);
  const auto config = metadata.find("config");
  QT_CHECK(config != metadata.end(), "read_model_config '{}': metadata 'config' is missing", path);
  return config->second;
}

}  // namespace qt::nn
