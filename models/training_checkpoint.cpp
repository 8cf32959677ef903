// Training checkpoints (one safetensors file, for exact resumption; layout in
// training_checkpoint.h).
#include "models/training_checkpoint.h"

#include <charconv>

#include "nn/checkpoint.h"
#include "tensor/error.h"
#include "tensor/safetensors.h"

namespace qt::models {

namespace {

const std::string kOptimizerPrefix = nn::kTrainingExtraTensorPrefix;
const std::string kExtraPrefix = "extra.";
constexpr const char* kTrainingFormat = nn::kTrainingFileFormat;

bool starts_with(const std::string& text, const std::string& prefix) {
  return text.compare(0, prefix.size(), prefix) == 0;
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

void save_training_checkpoint(const std::string& path, const nn::Module& model,
                              const optim::Optimizer& optimizer, const TrainingState& state,
                              const std::string& config_json) {
  QT_CHECK(state.step >= 0, "save_training_checkpoint '{}': step must be >= 0, got {}", path,
           state.step);
  nn::NamedTensors tensors = nn::model_tensors(model);
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

TrainingState load_training_checkpoint(const std::string& path, nn::Module& model,
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

  nn::NamedTensors model_part, optimizer_part;
  for (const auto& [name, tensor] : file.tensors) {
    if (starts_with(name, kOptimizerPrefix))
      optimizer_part.emplace_back(name.substr(kOptimizerPrefix.size()), tensor);
    else
      model_part.emplace_back(name, tensor);
  }
  // Check the model before touching anything; the optimizer validates and loads all-or-nothing.
  const nn::NamedTensors expected = nn::model_tensors(model);
  nn::check_matches_model(path, model_part, expected, op);
  nn::check_finite(path, model_part, op);
  nn::check_finite(path, optimizer_part, op);
  optimizer.load_state_tensors(optimizer_part);
  nn::copy_into_model(model_part, expected);
  return state;
}

}  // namespace qt::models
