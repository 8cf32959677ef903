#include "nn/checkpoint.h"

#include <cmath>
#include <set>
#include <utility>
#include <vector>

#include "autograd/node.h"
#include "tensor/json_parse.h"
#include "tensor/safetensors.h"
#include "tensor/view.h"

namespace qt::nn {

namespace {

constexpr const char* kModelFormat = "qtlab.model";
constexpr const char* kModelFormatVersion = "1";

bool starts_with(const std::string& text, const std::string& prefix) {
  return text.compare(0, prefix.size(), prefix) == 0;
}

// At most 20 names of a list, each cut short: a corrupt file can hold thousands of long names.
std::string name_list(const std::vector<std::string>& names) {
  std::vector<std::string> shown;
  for (size_t i = 0; i < names.size() && i < 20; ++i) shown.push_back(excerpt(names[i], 100));
  if (names.size() > shown.size()) shown.push_back(fmt::format("... ({} more)", names.size() - 20));
  return fmt::format("{}", fmt::join(shown, ", "));
}

// The flat index of the first element of a contiguous float tensor that is NaN or Inf, or -1.
template <typename T>
int64_t first_non_finite(const Tensor& tensor) {
  const T* data = tensor.data<T>();
  for (int64_t i = 0; i < tensor.numel(); ++i)
    if (!std::isfinite(data[i])) return i;
  return -1;
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
    if (!missing.empty()) parts.push_back(fmt::format("missing: {}", name_list(missing)));
    if (!mismatched.empty())
      parts.push_back(fmt::format("shape/dtype mismatch: {}", name_list(mismatched)));
    if (!unexpected.empty()) parts.push_back(fmt::format("unexpected: {}", name_list(unexpected)));
    fail("{} '{}': the file does not match the model; {}", op, path, fmt::join(parts, "; "));
  }
}

void copy_into_model(const NamedTensors& stored, const NamedTensors& expected) {
  std::map<std::string, const Tensor*> stored_by_name;
  for (const auto& [name, tensor] : stored) stored_by_name[name] = &tensor;
  NoGradGuard no_grad;
  for (const auto& [name, target] : expected) ops::copy_into(target, *stored_by_name.at(name));
}

void check_finite(const std::string& path, const NamedTensors& tensors, const char* op) {
  for (const auto& [name, tensor] : tensors) {
    if (tensor.dtype() != DType::f32 && tensor.dtype() != DType::f64) continue;
    const Tensor dense = ops::contiguous(tensor);
    const int64_t at = tensor.dtype() == DType::f32 ? first_non_finite<float>(dense)
                                                    : first_non_finite<double>(dense);
    if (at >= 0)
      fail(
          "{} '{}': tensor '{}' holds {} at element {} of {}: the weights are not finite (a "
          "diverged or corrupted state), refused",
          op, path, name, dense.at(unravel_index(at, dense.shape())), at, shape_str(dense.shape()));
  }
}

void save_model(const std::string& path, const Module& model, const std::string& config_json,
                const std::map<std::string, std::string>& extra_metadata) {
  std::map<std::string, std::string> metadata = extra_metadata;
  metadata["format"] = kModelFormat;
  metadata.insert_or_assign("format_version", std::string(kModelFormatVersion));
  metadata["config"] = config_json;
  save_safetensors(path, model_tensors(model), metadata);
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
  check_finite(path, stored, "load_model");
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
