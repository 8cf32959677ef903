// Model files as safetensors (tensor/safetensors.h), readable by PyTorch tools.
//
// Model file: every parameter and buffer of a Module under its dotted name
// ("encoder.layer.0.attention.query.weight"), plus metadata (strings, readable by any safetensors
// reader):
//   "format" = "qtlab.model", "format_version" = "1", "config" = the run's configuration as JSON;
//   from `qtlab pretrain` also "qtlab_version" (the git commit, tensor/version.h) and, for text
//   runs, "tokenizer.fingerprint" (16 hex digits, FNV-1a 64 of the BPE merges: the "fingerprint"
//   field of the data directory's tokenizer.json that the inputs were encoded with).
// Training checkpoints (model + optimizer state, models/training_checkpoint.h) hold the same model
// tensors plus tensors under the prefix "optimizer."; load_model reads the model part of either.
//
// Loading validates before it copies anything: every expected name present, shapes and dtypes
// equal, no unexpected names, every value finite; all mismatches are reported in one qt::Error.
// Values are copied into the module's existing tensors in place.
#pragma once

#include <map>
#include <string>

#include "nn/module.h"

namespace qt::nn {

// The "format" metadata of a training checkpoint and the prefix of its non-model tensors.
inline constexpr const char* kTrainingFileFormat = "qtlab.training";
inline constexpr const char* kTrainingExtraTensorPrefix = "optimizer.";

// Writes the model's parameters and buffers (atomically) with `config_json` as metadata "config"
// and `extra_metadata` beside it (e.g. the tokenizer's fingerprint).
void save_model(const std::string& path, const Module& model, const std::string& config_json,
                const std::map<std::string, std::string>& extra_metadata = {});

// Loads a model file (or the model part of a training checkpoint) into `model`; returns the stored
// config string ("" if the file has none).
std::string load_model(const std::string& path, Module& model);

// The "config" metadata of a model file or training checkpoint, without loading tensors into a
// model (to build the model before loading it).
std::string read_model_config(const std::string& path);

// The building blocks of the loaders (also used by models/training_checkpoint):
// parameters then buffers, with their dotted names;
NamedTensors model_tensors(const Module& model);
// `stored` against the model's tensors: same names, shapes and dtypes, all problems in one error
// prefixed with `op` and `path`;
void check_matches_model(const std::string& path, const NamedTensors& stored,
                         const NamedTensors& expected, const char* op);
// the stored values copied into the model's tensors in place (after check_matches_model).
void copy_into_model(const NamedTensors& stored, const NamedTensors& expected);
// Throws naming the first float tensor (and its first element) that holds a NaN or an Inf: a model
// or optimizer state that is not finite computes nothing but NaN, so it is refused at loading.
void check_finite(const std::string& path, const NamedTensors& tensors, const char* op);

}  // namespace qt::nn
