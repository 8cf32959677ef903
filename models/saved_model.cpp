#include "models/saved_model.h"

#include <filesystem>
#include <nlohmann/json.hpp>

#include "nn/checkpoint.h"
#include "tensor/error.h"

namespace qt::models {

SavedModel load_saved_model(const std::string& path, const std::vector<std::string>& assignments) {
  QT_CHECK(std::filesystem::exists(path), "model file {} does not exist", path);
  const std::string stored = nn::read_model_config(path);
  QT_CHECK(!stored.empty(), "{} holds no run configuration (not written by qtlab pretrain?)", path);
  const nlohmann::json json = nlohmann::json::parse(stored, nullptr, false);
  QT_CHECK(!json.is_discarded(), "the configuration stored in {} is not valid JSON", path);
  SavedModel saved;
  saved.config = from_json(json);
  for (const std::string& assignment : assignments) set_assignment(saved.config, assignment);
  saved.model = build_model(saved.config.model, saved.config.train.seed);
  nn::load_model(path, *saved.model);
  return saved;
}

}  // namespace qt::models
