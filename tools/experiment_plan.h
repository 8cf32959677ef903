// An experiment plan: the runs of a reproduction (family, preset, variant flags, seed, steps) and
// the training steps at which each run's checkpoint is quantized and analysed. A plan is a JSON
// file in the repository (experiments/*.json); `qtlab experiment PLAN` runs it
// (tools/experiment.cpp). The format, with every key:
//
//   {
//     "name": "table2",                      the plan's directory under --runs-dir and
//     docs/results/ "description": "...",                  free text "defaults": { KEY: VALUE, ...
//     },       any run key below except name; a run's own keys win "runs": [
//       { "name": "bert-vanilla-s1000",      unique; letters, digits, '-', '_', '.'
//         "group": "bert-mini/text",         the rows that are compared (the same data and size)
//         "variant": "vanilla",              the column label within a group; seeds are averaged
//         "preset": "bert-mini",             qtlab pretrain --model
//         "seed": 1000,                      train.seed
//         "steps": 12000,                    train.steps
//         "set": { "model.gamma": -0.025 },  further config keys (qtlab pretrain --list-keys)
//         "evaluate_at": [1000, 2000],       ascending; the last one must be `steps`
//         "sweep": ["W8A8", "W4A8:mse"],     bit widths quantized at each evaluation step
//         "calibration_batches": 16,         qtlab quantize --calib-batches
//         "analyze_batches": 8 }             qtlab analyze --batches
//     ]
//   }
//
// Unknown keys are errors (a misspelt key must not silently train the wrong model); the config
// keys under "set" are checked by `qtlab pretrain` itself when the run starts, and by --dry-run.
#pragma once

#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include "tools/quantization_spec.h"

namespace qt::tools {

struct PlannedRun {
  std::string name, group, variant, preset;
  uint64_t seed = 1000;
  int64_t steps = 0;
  std::vector<std::pair<std::string, std::string>> set;  // config key, value as text
  std::vector<int64_t> evaluate_at;
  std::vector<QuantizationSpec> sweep;
  int64_t calibration_batches = 16;
  int64_t analyze_batches = 8;
};

struct ExperimentPlan {
  std::string name, description;
  std::vector<PlannedRun> runs;
};

// Reads and checks a plan; throws qt::Error naming the file, the run and the key.
ExperimentPlan load_experiment_plan(const std::string& path);
ExperimentPlan parse_experiment_plan(const std::string& text, const std::string& source);

// The sweep as `qtlab quantize --sweep` takes it: "W8A8,W4A8:mse".
std::string sweep_argument(const PlannedRun& run);

}  // namespace qt::tools
