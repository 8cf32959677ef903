// What a training run will need in memory, computed from its configuration before anything is
// allocated, so that a model far larger than the machine is refused with the figures instead of
// being allocated tensor by tensor until the kernel's OOM killer ends the process without a word.
//
//   parameters   counted exactly from the architecture (tests/test_memory_estimate.cpp checks the
//                count against every family and gate kind built for real)
//   weights + gradients + AdamW m and v: 4 float32 copies of the parameters
//   activations  what one rank's micro-batch keeps for the backward pass, per layer and token:
//                about 10 d + 2 ffn floats (the inputs of the four projections and the two FFN
//                layers, the LayerNorms, the residual stream) plus 2 H T (attention scores and
//                probabilities), and the logits with their gradient (2 V per token, text models)
// The activation term is an estimate (the fused attention core keeps less, temporaries come and
// go); it is meant to tell 200 MB from 200 GB, not to budget the last megabyte.
#pragma once

#include <cstdint>

#include "models/config.h"

namespace qt::models {

struct MemoryEstimate {
  int64_t parameters = 0;        // number of trainable parameters
  uint64_t parameter_bytes = 0;  // weights + gradients + AdamW moments
  uint64_t activation_bytes = 0;
  uint64_t total_bytes() const { return parameter_bytes + activation_bytes; }
};

int64_t count_parameters(const ModelConfig& model);
// `world_size` ranks share the global batch; each holds its own full model.
MemoryEstimate estimate_training_memory(const RunConfig& config, int world_size);

// Throws qt::Error with the estimate and what is available when the run cannot fit (and does
// nothing when the available memory is unknown).
void check_training_fits(const RunConfig& config, int world_size);

}  // namespace qt::models
