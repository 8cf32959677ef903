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
//                        elapsed_s; evaluation steps add val_loss and val_perplexity/val_accuracy.
//                        Every record is appended and fsynced before the run goes on, so a full
//                        disk stops the run at once with an error naming the file.
//   checkpoint.safetensors  the training checkpoint (model + AdamW state + step + dropout state),
//                        every train.checkpoint_every steps and at the end, written atomically;
//                        a checkpoint step's state is written once the next step's forward and
//                        backward pass on it gave a finite loss, and only with finite weights
//   model.safetensors    the final model with the run config as metadata (for eval / quantize),
//                        and for text runs the tokenizer's fingerprint ("tokenizer.fingerprint")
//   tokenizer.json       text runs: a copy of the tokenizer the data was encoded with
//   config_changes.jsonl resumed runs whose config changed: {"step", "changes": [{key, from, to}]}
//   pretrain.lock        held (flock) by the leader while it trains: a second training in the
//                        same directory refuses, naming the first one's PID
// A starting or resuming run removes the "*.tmp.<pid>" files of writers that were killed.
// --resume continues from checkpoint.safetensors: the config must equal the stored config.json
// except in keys_changeable_on_resume() (lr, schedule tail, clip norm, intervals, run_dir; each
// change is recorded in config_changes.jsonl and config.json is updated), metrics.jsonl is cut
// back to the checkpoint's step, and the remaining steps are bit-identical to an uninterrupted run
// with the same thread count (and the same config). The directory written is always
// train.run_dir as given, never one named by a stored config.
//
// Under MPI every rank must be launched identically: the resolved config, --resume and --stop-at
// are compared key by key before anything is written, the resumed step after the checkpoint is
// read; a difference stops every rank with the first differing key and both values.
//
// Before anything is allocated the run's memory is estimated (models/memory_estimate.h) and a run
// that cannot fit is refused with the estimate and what is available.
//
// A NaN or Inf loss or gradient norm stops the run before the optimizer step with an error naming
// the step and saying what the checkpoint on disk holds (by the rule above, a state whose own
// forward pass was finite) and the command that continues from it with a lower learning rate.
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
  int64_t steps_trained = 0;    // of those, the ones this invocation trained (0: nothing to do)
  double last_loss = 0.0;       // training loss of the last step
  EvaluationResult validation;  // the final evaluation
  double seconds = 0.0;         // wall time of this invocation
};

TrainResult pretrain(const RunConfig& config, const TrainOptions& options);

// The step of a training checkpoint and whether RUN_DIR has one.
std::string checkpoint_path(const std::string& run_dir);
std::string final_model_path(const std::string& run_dir);

// The progress line's ETA: the training steps left at the rate measured so far (validation time
// excluded), plus the validations still to come (every eval_every steps, and at the last step) at
// their measured mean cost, or, before the first one, at a forward-only estimate: a third of a
// training step's time per validation batch (a step is forward + backward over `accumulation`
// micro batches).
struct EtaInputs {
  int64_t steps = 0, eval_every = 1, step = 0;  // the schedule's steps; validations; now
  int64_t steps_done = 0;                       // steps trained by this invocation
  double seconds = 0;                           // wall time since it started, validations included
  double evaluation_seconds = 0;                // of which in validation
  int64_t evaluations = 0, eval_batches = 0, accumulation = 1;
};
double training_eta_seconds(const EtaInputs& in);

}  // namespace qt::models
