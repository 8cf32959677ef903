// Checkpoints as safetensors files (tensor/safetensors.h), readable by PyTorch tools.
//
// Model file: every parameter and buffer of a Module under its dotted name
// ("encoder.layer.0.attention.query.weight"), plus metadata
//   "format" = "qtlab.model", "config" = the model's configuration as a JSON string.
//
// Training checkpoint (one file, for exact resumption): the model tensors as above, plus
//   "optimizer.<state name>" tensors: the optimizer's state_tensors(), e.g. "optimizer.m.<param>",
//                                     "optimizer.v.<param>", "optimizer.step.<param>" for AdamW;
//   metadata "format" = "qtlab.training", "config", "optimizer" (its kind), "training.step",
//            "dropout.seed", "dropout.step" (nn::DropoutState: with the step counter this fixes
//            every future dropout mask), and "extra.<key>" for each caller-supplied extra entry
//            (data position, loss scale, command line, ...).
// Resuming = load_training_checkpoint into a freshly built model and optimizer, then continue the
// loop at step `training.step`: the run continues bit-identically (the schedule is a pure function
// of the step, dropout masks are counter-based, and the optimizer state is restored exactly).
//
// Loading validates before it copies anything: every expected name present, shapes and dtypes
// equal, no unexpected names; all mismatches are reported in one qt::Error. Values are copied into
// the module's existing tensors in place.
#pragma once

#include <cstdint>
#include <map>
#include <string>

#include "nn/dropout.h"
#include "nn/module.h"
#include "optim/optimizer.h"

namespace qt::nn {

// Writes the model's parameters and buffers (atomically) with `config_json` as metadata "config".
void save_model(const std::string& path, const Module& model, const std::string& config_json);

// Loads a model file (or the model part of a training checkpoint) into `model`; returns the stored
// config string ("" if the file has none).
std::string load_model(const std::string& path, Module& model);

// The "config" metadata of a model file or training checkpoint, without loading tensors into a
// model (to build the model before loading it).
std::string read_model_config(const std::string& path);

struct TrainingState {
  int64_t step = 0;                          // optimizer steps completed
  DropoutState dropout;                      // the run's dropout seed and step counter
  std::map<std::string, std::string> extra;  // anything else the trainer wants back
};

void save_training_checkpoint(const std::string& path, const Module& model,
                              const optim::Optimizer& optimizer, const TrainingState& state,
                              const std::string& config_json);

// Restores model parameters/buffers and optimizer state in place and returns the training state.
// The optimizer must be of the kind that wrote the checkpoint and have the same parameter names.
TrainingState load_training_checkpoint(const std::string& path, Module& model,
                                       optim::Optimizer& optimizer);

}  // namespace qt::nn
