// A trained model back from its file: `qtlab pretrain` stores the resolved run configuration in
// every model file and training checkpoint (nn/checkpoint.h, metadata "config"), so the file alone
// rebuilds the model — what `qtlab eval`, `quantize` and `analyze` start from.
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "models/config.h"
#include "models/model.h"

namespace qt::models {

struct SavedModel {
  RunConfig config;
  std::shared_ptr<Model> model;
};

// Reads the stored config, applies `assignments` ("key=value", e.g. "data.dir=..." when the data
// moved), builds the model and loads its tensors. Throws qt::Error naming the file when it is
// missing, holds no qtlab run configuration, or does not match the configured model.
SavedModel load_saved_model(const std::string& path,
                            const std::vector<std::string>& assignments = {});

}  // namespace qt::models
