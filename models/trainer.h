// The training loop behind `qtlab pretrain`: one process or N MPI ranks (data parallel).
//
// One optimizer step s (0-based) of a run with global batch G, accumulation k and W ranks:
//   for each micro-batch j < k:  this rank's G / (k W) samples of loader step s k + j
//                                (data/batch_loader.h: the global batch does not depend on W)
//   N   = labelled positions of all k micro-batches on all ranks      (one MPI_Allreduce)
//   backward( loss_j * n_j * W / N )    loss_j = mean over micro-batch j's n_j labelled positions
//   average the gradients over ranks    (MPI_Allreduce, optim/distributed.h)
//   => every rank holds the gradient of (sum of all token losses) / N, the loss of the global
//      batch, whatever W and k are: 1 and 2 ranks follow the same loss curve up to float rounding.
//   clip the global gradient norm, lr = schedule(s), AdamW step.
//
// Dropout masks are counter-based (nn/dropout.h): the mask of micro-batch j of step s uses dropout
// step s k + j and the seed train.seed + rank, so a resumed run draws exactly the masks of the
// uninterrupted one (on more than one rank the masks differ from a one-rank run; equivalence across
// rank counts holds with dropout off).
//
// Run directory (train.run_dir), written by rank 0 only:
//   config.json          the resolved configuration (every key), written before the first step
//   metrics.jsonl        one JSON object per log step: step, loss, lr, grad_norm, tokens_per_s,
//                        elapsed_s; evaluation steps add val_loss and val_perplexity/val_accuracy
//   checkpoint.safetensors  the training checkpoint (model + AdamW state + step + dropout state),
//                        every train.checkpoint_every steps and at the end, written atomically
//   model.safetensors    the final model with the run config as metadata (for eval / quantize)
//   tokenizer.json       text runs: a copy of the tokenizer the data was encoded with
// --resume continues from checkpoint.safetensors: the config must equal the stored config.json
// (differences are listed), metrics.jsonl is cut back to the checkpoint's step, and the remaining
// steps are bit-identical to an uninterrupted run with the same thread count.
//
// A NaN or Inf loss or gradient norm stops the run before the optimizer step with an error naming
// the step; the last good checkpoint stays in place.
#pragma once

#include <cstdint>
#include <functional>
#include <string>

#include "models/config.h"
#include "models/evaluation.h"

namespace qt::models {

struct TrainOptions {
  bool resume = false;
  bool progress = true;  // live progress line on stderr (rank 0)
  // Stop (after checkpointing) once this many steps are done, though train.steps is larger: long
  // runs done in pieces, e.g. one per working session, resumed with --resume (-1: run to the end).
  int64_t stop_at_step = -1;
  // Test-only: simulated failures (TrainingFaults). Runs leave it at its defaults.
  struct TrainingFaults {
    // The rank that calls std::_Exit(3) at the start of step fail_at_step, as a crash would
    // (-1: never). Set from QTLAB_FAULT_INJECT="rank:step" (tests/test_distributed.cpp).
    int fail_rank = -1;
    int64_t fail_at_step = -1;
    // The loss of this step is replaced by NaN (-1: never; tests/test_trainer.cpp).
    int64_t poison_step = -1;
  } faults;
};

struct TrainResult {
  int64_t steps = 0;            // optimizer steps completed (including resumed ones)
  double last_loss = 0.0;       // training loss of the last step
  EvaluationResult validation;  // the final evaluation
  double seconds = 0.0;         // wall time of this invocation
};

TrainResult pretrain(const RunConfig& config, const TrainOptions& options);

// The step of a training checkpoint and whether RUN_DIR has one.
std::string checkpoint_path(const std::string& run_dir);
std::string final_model_path(const std::string& run_dir);

}  // namespace qt::models
