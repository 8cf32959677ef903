// Training checkpoints: model + optimizer state + step in one safetensors file, for exact
// resumption. Layout:
//   the model tensors as in a model file (nn/checkpoint.h), plus
//   "optimizer.<state name>" tensors: the optimizer's state_tensors(), e.g. "optimizer.m.<param>",
//                                     "optimizer.v.<param>", "optimizer.step.<param>" for AdamW;
//   metadata "format" = "qtlab.training", "config", "optimizer" (its kind), "training.step",
//            "dropout.seed", "dropout.step" (nn::DropoutState: with the step counter this fixes
//            every future dropout mask), and "extra.<key>" for each caller-supplied extra entry
//            (data position, loss scale, command line, ...).
// Resuming = load_training_checkpoint into a freshly built model and optimizer, then continue the
// loop at step `training.step`: the run continues bit-identically (the schedule is a pure function
// of the step, dropout masks are counter-based, and the optimizer state is restored exactly).
// Loading validates everything (model names, shapes, dtypes; optimizer kind and state) before it
// modifies the model or the optimizer.
#pragma once

#include <cstdint>
#include <map>
#include <string>

#include "nn/dropout.h"
#include "nn/module.h"
#include "optim/optimizer.h"

namespace qt::models {

struct TrainingState {
  int64_t step = 0;                          // optimizer steps completed
  nn::DropoutState dropout;                  // the run's dropout seed and step counter
  std::map<std::string, std::string> extra;  // anything else the trainer wants back
};

void save_training_checkpoint(const std::string& path, const nn::Module& model,
                              const optim::Optimizer& optimizer, const TrainingState& state,
                              const std::string& config_json);

// Restores model parameters/buffers and optimizer state in place and returns the training state.
// The optimizer must be of the kind that wrote the checkpoint and have the same parameter names.
TrainingState load_training_checkpoint(const std::string& path, nn::Module& model,
                                       optim::Optimizer& optimizer);

}  // namespace qt::models
