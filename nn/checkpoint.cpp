#include "nn/checkpoint.h"

#include <charconv>
#include <set>
#include <utility>
#include <vector>

#include "autograd/node.h"
#include "tensor/safetensors.h"
#include "tensor/view.h"

namespace qt::nn {

namespace {

constexpr const char* kModelFormat = "qtlab.model";
constexpr const char* kTrainingFormat = "qtlab.training";
const std::string kOptimizerPrefix = "optimizer.";
const std::string kExtraPrefix = "extra.";

bool starts_with(const std::string& text, const std::string& prefix) {
  return text.compare(0, prefix.size(), prefix) == 0;
}

// Parameters then buffers, with their dotted names.
NamedTensors model_tensors(const Module& model) {
  NamedTensors out = model.named_parameters();
  for (auto& entry : model.named_buffers()) out.push_back(std::move(entry));
  return out;
}

// Checks `stored` against the model's tensors: same names, shapes and dtypes. Reports all problems
// in one error.
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

// Copies the stored values into the model's tensors in place (after check_matches_model).
void copy_into_model(const NamedTensors& stored, const NamedTensors& expected) {
  std::map<std::string, const Tensor*> stored_by_name;
  for (const auto& [name, tensor] : stored) stored_by_name[name] = &tensor;
  NoGradGuard no_grad;
  for (const auto& [name, target] : expected) ops::copy_into(target, *stored_by_name.at(name));
}

std::string metadata_value(const SafeTensors& file, const std::string& key, const std::string& path,
                           const char* op) {
  const auto found = file.metadata.find(key);
  QT_CHECK(found != file.metadata.end(), "{} '{}': metadata '{}' is missing", op, path, key);
  return found->second;
}

template <typename Integer>
Integer parse_integer(const std::string& text, const std::string& key, const std::string& path,
                      const char* op) {
  Integer value = 0;
  const auto [end, error] = std::from_chars(text.data(), text.data() + text.size(), value);
  QT_CHECK(error == std::errc() && end == text.data() + text.size() && !text.empty(),
           "{} '{}': metadata '{}' = '{}' is not a valid integer", op, path, key, text);
  return value;
}

}  // namespace

void save_model(const std::string& path, const Module& model, const std::string& config_json) {
  save_safetensors(path, model_tensors(model), {{"format", kModelFormat}, {"config", config_json}});
}

std::string load_model(const std::string& path, Module& model) {
  const SafeTensors file = load_safetensors(path);
  // A training checkpoint also holds the optimizer state; the model part is everything else.
  const auto format = file.metadata.find("format");
  const bool training = format != file.metadata.end() && format->second == kTrainingFormat;
  NamedTensors stored;
  for (const auto& [name, tensor] : file.tensors)
    if (!(training && starts_with(name, kOptimizerPrefix))) stored.emplace_back(name, tensor);
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

void save_training_checkpoint(const std::string& path, const Module& model,
                              const optim::Optimizer& optimizer, const TrainingState& state,
                              const std::string& config_json) {
  QT_CHECK(state.step >= 0, "save_training_checkpoint '{}': step must be >= 0, got {}", path,
           state.step);
  NamedTensors tensors = model_tensors(model);
  for (const auto& [name, tensor] : tensors)
    QT_CHECK(!starts_with(name, kOptimizerPrefix),
             "save_training_checkpoint '{}': model tensor '{}' clashes with the '{}' prefix", path,
             name, kOptimizerPrefix);
  for (const auto& [name, tensor] : optimizer.state_tensors())
    tensors.emplace_back(kOptimizerPrefix + name, tensor);
  std::map<std::string, std::string> metadata = {
      {"format", kTrainingFormat},
      {"config", config_json},
      {"optimizer", optimizer.kind()},
      {"training.step", std::to_string(state.step)},
      {"dropout.seed", std::to_string(state.dropout.seed)},
      {"dropout.step", std::to_string(state.dropout.step)},
  };
  for (const auto& [key, value] : state.extra) metadata[kExtraPrefix + key] = value;
  save_safetensors(path, tensors, metadata);
}

TrainingState load_training_checkpoint(const std::string& path, Module& model,
                                       optim::Optimizer& optimizer) {
  const char* op = "load_training_checkpoint";
  const SafeTensors file = load_safetensors(path);
  const std::string format = file.metadata.count("format") ? file.metadata.at("format") : "";
  QT_CHECK(format == kTrainingFormat,
           "{} '{}': not a training checkpoint (format '{}', expected '{}')", op, path, format,
           kTrainingFormat);
  const std::string kind = metadata_value(file, "optimizer", path, op);
  QT_CHECK(kind == optimizer.kind(), "{} '{}': the checkpoint holds {} state, the optimizer is {}",
           op, path, kind, optimizer.kind());

  // Everything that can fail is checked before the model or optimizer is modified.
  TrainingState state;
  state.step = parse_integer<int64_t>(metadata_value(file, "training.step", path, op),
                                      "training.step", path, op);
  QT_CHECK(state.step >= 0, "{} '{}': training.step = {} is negative", op, path, state.step);
  state.dropout.seed = parse_integer<uint64_t>(metadata_value(file, "dropout.seed", path, op),
                                               "dropout.seed", path, op);
  state.dropout.step = parse_integer<uint64_t>(metadata_value(file, "dropout.step", path, op),
                                               "dropout.step", path, op);
  for (const auto& [key, value] : file.metadata)
    if (starts_with(key, kExtraPrefix)) state.extra[key.substr(kExtraPrefix.size())] = value;

  NamedTensors model_part, optimizer_part;
  for (const auto& [name, tensor] : file.tensors) {
    if (starts_with(name, kOptimizerPrefix))
      optimizer_part.emplace_back(name.substr(kOptimizerPrefix.size()), tensor);
    else
      model_part.emplace_back(name, tensor);
  }
  // Check the model before touching anything; the optimizer validates and loads all-or-nothing.
  const NamedTensors expected = model_tensors(model);
  check_matches_model(path, model_part, expected, op);
  optimizer.load_state_tensors(optimizer_part);
  copy_into_model(model_part, expected);
  return state;
}

}  // namespace qt::nn
