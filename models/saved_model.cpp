#include "models/saved_model.h"

#include <filesystem>
#include <nlohmann/json.hpp>

#include "data/text_dataset.h"
#include "data/tokenizer.h"
#include "nn/checkpoint.h"
#include "tensor/error.h"
#include "tensor/json_parse.h"
#include "tensor/safetensors.h"

namespace qt::models {

namespace {

// The overrides a saved model accepts: where the data is and how it is batched, never what the
// model is. A model.* key would build a model other than the one whose weights the file holds
// (a different softmax loads without a shape error and silently computes something else).
void apply_overrides(RunConfig& config, const std::vector<std::string>& assignments,
                     const std::string& path) {
  const nlohmann::json stored_model = to_json(config)["model"];
  for (const std::string& assignment : assignments) set_assignment(config, assignment);
  const nlohmann::json model = to_json(config)["model"];
  for (const auto& [key, value] : model.items())
    QT_CHECK(stored_model[key] == value,
             "--set model.{}={}: the model is the one stored in {} (model.{} = {}); only data.* "
             "and train.* keys can be overridden",
             key, json_excerpt(value), path, key, json_excerpt(stored_model[key]));
  try {
    validate(config);
  } catch (const Error& e) {
    fail("{} (after the --set overrides of {})", e.what(), path);
  }
}

// The tokenizer fingerprint a model file or training checkpoint records ("" if none).
std::string recorded_tokenizer(const std::map<std::string, std::string>& metadata) {
  for (const std::string& key :
       {std::string(kTokenizerFingerprintKey), "extra." + std::string(kTokenizerFingerprintKey)}) {
    const auto found = metadata.find(key);
    if (found != metadata.end()) return found->second;
  }
  return "";
}

// The tokenizer the data of `config` is encoded with must be the one the model learnt.
void check_tokenizer(const RunConfig& config, const std::string& recorded,
                     const std::string& path) {
  if (config.data.dataset != "text" || recorded.empty()) return;
  const std::string file = data::default_tokenizer_path(config.data.dir, config.model.vocab_size);
  const std::string beside =
      (std::filesystem::path(path).parent_path() / "tokenizer.json").string();
  QT_CHECK(std::filesystem::exists(file),
           "{} was trained with tokenizer {}, but {} does not exist (a new one would be trained, "
           "possibly different); copy the run's {} there, or point data.dir at the data it was "
           "trained on",
           path, recorded, file, beside);
  const std::string found = data::Tokenizer::load(file).fingerprint();
  QT_CHECK(found == recorded,
           "{} was trained with tokenizer {}, but {} is tokenizer {}: its tokens would not be the "
           "ones the model learnt (the run's copy is {}); use --set data.dir=... for the data it "
           "was trained on",
           path, recorded, file, found, beside);
}

}  // namespace

SavedModel load_saved_model(const std::string& path, const std::vector<std::string>& assignments) {
  QT_CHECK(std::filesystem::exists(path), "model file {} does not exist", path);
  const std::string stored = nn::read_model_config(path);
  QT_CHECK(!stored.empty(), "{} holds no run configuration (not written by qtlab pretrain?)", path);
  const nlohmann::json json =
      parse_json(stored, fmt::format("the configuration stored in {}", path));
  SavedModel saved;
  try {
    saved.config = from_json(json);
  } catch (const Error& e) {
    fail("{} (the configuration stored in {})", e.what(), path);
  }
  apply_overrides(saved.config, assignments, path);
  check_tokenizer(saved.config, recorded_tokenizer(load_safetensors_metadata(path)), path);
  saved.model = build_model(saved.config.model, saved.config.train.seed);
  nn::load_model(path, *saved.model);
  return saved;
}

}  // namespace qt::models
