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

// The metadata key under which `qtlab pretrain` records the fingerprint of the tokenizer a text
// model was trained with (data::Tokenizer::fingerprint(); training checkpoints hold it as
// "extra.tokenizer.fingerprint").
inline constexpr const char* kTokenizerFingerprintKey = "tokenizer.fingerprint";

struct SavedModel {
  RunConfig config;
  std::shared_ptr<Model> model;
};

// Reads the stored config, applies `assignments` ("key=value", e.g. "data.dir=..." when the data
// moved; data.* and train.* keys only, and the result validated like pretrain's), builds the model
// and loads its tensors. Throws qt::Error naming the file when it is missing, holds no qtlab run
// configuration, does not match the configured model, holds weights that are not finite, or — a
// text model — when the tokenizer in data.dir is not the one it was trained with (both
// fingerprints and files named): another vocabulary would silently give another loss.
SavedModel load_saved_model(const std::string& path,
                            const std::vector<std::string>& assignments = {});

}  // namespace qt::models
