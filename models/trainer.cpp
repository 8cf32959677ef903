#include "models/trainer.h"

#include <fmt/format.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <map>
#include <memory>
#include <nlohmann/json.hpp>
#include <optional>
#include <sstream>
#include <vector>

#include "autograd/engine.h"
#include "autograd/functions.h"
#include "models/memory_estimate.h"
#include "models/run_data.h"
#include "models/saved_model.h"
#include "models/training_checkpoint.h"
#include "nn/checkpoint.h"
#include "optim/adamw.h"
#include "optim/clip_grad.h"
#include "optim/distributed.h"
#include "optim/parameter_groups.h"
#include "optim/schedule.h"
#include "tensor/atomic_file.h"
#include "tensor/error.h"
#include "tensor/file_lock.h"
#include "tensor/json_parse.h"
#include "tensor/threads.h"
#include "tensor/version.h"

namespace qt::models {
namespace {

using Clock = std::chrono::steady_clock;
namespace fs = std::filesystem;

double seconds_since(Clock::time_point start) {
  return std::chrono::duration<double>(Clock::now() - start).count();
}

std::string format_duration(double seconds) {
  const int64_t s = static_cast<int64_t>(seconds + 0.5);
  if (s >= 3600) return fmt::format("{}h{:02}m", s / 3600, (s / 60) % 60);
  return fmt::format("{}m{:02}s", s / 60, s % 60);
}

std::string read_text_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  QT_CHECK(in.good(), "cannot read {}", path);
  std::stringstream buffer;
  buffer << in.rdbuf();
  return buffer.str();
}

// "/train/lr" (a flattened JSON pointer) -> "train.lr" (the config key).
std::string config_key(std::string pointer) {
  std::replace(pointer.begin(), pointer.end(), '/', '.');
  return pointer.substr(1);
}

// One key whose value differs between the stored and the current configuration.
struct ConfigChange {
  std::string key;
  nlohmann::json from, to;  // null: absent
  std::string text() const {
    return fmt::format("{}: {} -> {}", key, from.is_null() ? "(absent)" : json_excerpt(from),
                       to.is_null() ? "(absent)" : json_excerpt(to));
  }
};

// The keys whose values differ between two resolved configs.
std::vector<ConfigChange> config_differences(const nlohmann::json& stored,
                                             const nlohmann::json& current) {
  std::vector<ConfigChange> out;
  const nlohmann::json a = stored.flatten(), b = current.flatten();
  for (const auto& [key, value] : b.items())
    if (!a.contains(key) || a[key] != value)
      out.push_back({config_key(key), a.contains(key) ? a[key] : nlohmann::json(), value});
  for (const auto& [key, value] : a.items())
    if (!b.contains(key)) out.push_back({config_key(key), value, nlohmann::json()});
  return out;
}

// The resolved config key by key, for the MPI launch check (distributed::check_identical).
distributed::LaunchEntries config_entries(const nlohmann::json& config) {
  distributed::LaunchEntries entries;
  const nlohmann::json flat = config.flatten();  // items() of a temporary would dangle
  for (const auto& [key, value] : flat.items()) entries.emplace_back(config_key(key), value.dump());
  return entries;
}

// metrics.jsonl lines of steps <= `step` (a resumed run rewrites what came after its checkpoint).
void truncate_metrics(const std::string& path, int64_t step) {
  if (!fs::exists(path)) return;
  std::ifstream in(path);
  std::string line, kept;
  while (std::getline(in, line)) {
    if (line.empty()) continue;
    if (json_nesting_depth(line) > kMaxJsonDepth) continue;  // not a record we wrote
    const nlohmann::json object = nlohmann::json::parse(line, nullptr, false);
    // A torn last line (a killed run) is dropped.
    if (object.is_discarded() || !object.is_object() || !object.contains("step") ||
        !object["step"].is_number_integer())
      continue;
    if (object["step"].get<int64_t>() <= step) kept += line + "\n";
  }
  write_text_atomically(path, kept);
}

optim::Schedule make_schedule(const TrainingConfig& train) {
  optim::Schedule schedule;
  schedule.kind = optim::parse_schedule_kind(train.schedule);
  schedule.base_lr = train.lr;
  schedule.warmup_steps = static_cast<int64_t>(std::llround(train.warmup_fraction * train.steps));
  schedule.total_steps = train.steps;
  schedule.final_lr_fraction = train.min_lr_ratio;
  schedule.min_lr = train.lr * train.min_lr_ratio;
  optim::check_schedule(schedule);
  return schedule;
}

// The progress line: rewritten in place on a terminal, one line per log step otherwise.
class Progress {
 public:
  explicit Progress(bool enabled) : enabled_(enabled), terminal_(isatty(fileno(stderr)) != 0) {}
  void update(const std::string& text) {
    if (!enabled_) return;
    if (terminal_)
      std::fprintf(stderr, "\r\033[K%s", text.c_str());
    else
      std::fprintf(stderr, "%s\n", text.c_str());
    std::fflush(stderr);
  }
  // A line that stays (evaluation results, checkpoints).
  void line(const std::string& text) {
    if (!enabled_) return;
    std::fprintf(stderr, terminal_ ? "\r\033[K%s\n" : "%s\n", text.c_str());
    std::fflush(stderr);
  }

 private:
  bool enabled_, terminal_;
};

// The metric and the data it was measured on (training evaluates train.eval_batches batches, not
// the split `qtlab eval` / `quantize` use by default, so the numbers differ and say why).
std::string evaluation_summary(Family family, const EvaluationResult& r,
                               int64_t validation_samples) {
  const std::string on = r.samples >= validation_samples
                             ? fmt::format("the whole validation split, {} {}", r.samples,
                                           family == Family::vit ? "images" : "sequences")
                             : fmt::format("{} of {} validation {}", r.samples, validation_samples,
                                           family == Family::vit ? "images" : "sequences");
  if (family == Family::vit)
    return fmt::format("val_loss {:.4f}  val_accuracy {:.2f}%  ({})", r.loss, 100 * r.accuracy, on);
  return fmt::format("val_loss {:.4f}  val_perplexity {:.2f}  ({}, {} predicted tokens)", r.loss,
                     r.perplexity, on, r.labels);
}

void add_evaluation(nlohmann::json& record, Family family, const EvaluationResult& r) {
  record["val_loss"] = r.loss;
  if (family == Family::vit)
    record["val_accuracy"] = r.accuracy;
  else
    record["val_perplexity"] = r.perplexity;
}

}  // namespace

std::string checkpoint_path(const std::string& run_dir) {
  return (fs::path(run_dir) / "checkpoint.safetensors").string();
}
std::string final_model_path(const std::string& run_dir) {
  return (fs::path(run_dir) / "model.safetensors").string();
}

namespace {

// The files of a run directory (README, "Pretraining").
struct RunFiles {
  std::string dir, config, metrics, checkpoint, config_changes, lock;
};

RunFiles run_files(const std::string& run_dir) {
  const fs::path dir(run_dir);
  return {run_dir,
          (dir / "config.json").string(),
          (dir / "metrics.jsonl").string(),
          checkpoint_path(run_dir),
          (dir / "config_changes.jsonl").string(),
          (dir / "pretrain.lock").string()};
}

// What step 1 leaves behind: the directory's lock (leader) and, for a resumed run, the keys whose
// values changed since the stored config.json.
struct PreparedRunDirectory {
  std::unique_ptr<FileLock> lock;
  std::vector<ConfigChange> changes;
  std::vector<std::string> removed_temporaries;
};

// Step 1. The leader locks the directory (a second training in it refuses, naming the first one's
// PID) and removes the temporary files of killed writers. A resumed run needs its checkpoint and a
// configuration that differs from the stored one only in keys that change neither the model nor
// the data order (keys_changeable_on_resume); a fresh run needs a directory without a run in it,
// which the leader creates with config.json (and without a stale metrics.jsonl).
PreparedRunDirectory prepare_run_directory(const RunFiles& files, const nlohmann::json& config_json,
                                           const std::string& config_text, bool resume,
                                           bool leader) {
  PreparedRunDirectory prepared;
  if (leader) {
    if (!resume) fs::create_directories(files.dir);
    if (fs::is_directory(files.dir)) {
      prepared.lock = std::make_unique<FileLock>(files.lock, "pretrain: " + files.dir);
      prepared.removed_temporaries = remove_stale_temporaries(files.dir);
    }
  }
  if (resume) {
    QT_CHECK(fs::exists(files.checkpoint),
             "pretrain --resume: no checkpoint {} (start the run without --resume first)",
             files.checkpoint);
    QT_CHECK(fs::exists(files.config), "pretrain --resume: {} is missing", files.config);
    const nlohmann::json stored = parse_json_file(files.config, "pretrain --resume");
    std::vector<std::string> refused;
    for (ConfigChange& change : config_differences(stored, config_json)) {
      if (changeable_on_resume(change.key))
        prepared.changes.push_back(std::move(change));
      else
        refused.push_back(change.text());
    }
    QT_CHECK(refused.empty(),
             "pretrain --resume: the configuration differs from the run's {} in keys that change "
             "the model or the data order:\n  {}\n(a resumed run may change only {})",
             files.config, fmt::join(refused, "\n  "),
             fmt::join(keys_changeable_on_resume(), ", "));
  } else if (leader) {
    QT_CHECK(!fs::exists(files.checkpoint),
             "pretrain: {} already holds a run (checkpoint {}); use --resume to continue it or "
             "choose another train.run_dir",
             files.dir, files.checkpoint);
    write_text_atomically(files.config, config_text + "\n");
    if (fs::exists(files.metrics)) fs::remove(files.metrics);
    if (fs::exists(files.config_changes)) fs::remove(files.config_changes);
  }
  return prepared;
}

// A resumed run whose config changed records it: config.json becomes the new configuration and
// config_changes.jsonl gains {"step": N, "changes": [{"key", "from", "to"}, ...]}, so the run's
// history says which settings held from which step on.
void record_config_changes(const RunFiles& files, const std::vector<ConfigChange>& changes,
                           int64_t step, const std::string& config_text) {
  nlohmann::json record = {{"step", step}, {"changes", nlohmann::json::array()}};
  for (const ConfigChange& change : changes)
    record["changes"].push_back({{"key", change.key}, {"from", change.from}, {"to", change.to}});
  append_durably(files.config_changes, record.dump() + "\n");
  write_text_atomically(files.config, config_text + "\n");
}

// The model, its optimizer and the step the loop starts at.
struct TrainingRun {
  std::shared_ptr<Model> model;
  std::unique_ptr<optim::AdamW> optimizer;
  std::vector<Tensor> parameters;
  int64_t step = 0;
};

// Step 2. A fresh model from the seed (AdamW over the weight-decay groups), or the checkpoint's
// model, optimizer state and step (metrics after that step are dropped); then every rank holds
// rank 0's parameters.
TrainingRun resume_or_initialise(const RunConfig& config, const RunFiles& files, bool resume,
                                 bool leader, Progress& progress) {
  const TrainingConfig& train = config.train;
  TrainingRun run;
  run.model = build_model(config.model, train.seed);
  run.model->train();
  optim::WeightDecayRule rule;
  rule.weight_decay = train.weight_decay;
  rule.decay_layer_norm_weight = train.weight_decay_layer_norm;
  if (config.model.family == Family::vit)
    rule.no_decay_names = {"cls_token", "position_embeddings"};
  run.optimizer = std::make_unique<optim::AdamW>(
      optim::weight_decay_groups(run.model->named_parameters(), rule),
      optim::AdamWOptions{train.beta1, train.beta2, train.eps});
  run.parameters = run.model->parameters();
  if (resume) {
    const TrainingState state =
        load_training_checkpoint(files.checkpoint, *run.model, *run.optimizer);
    run.step = state.step;
    QT_CHECK(run.step <= train.steps,
             "pretrain --resume: {} holds step {}, beyond train.steps = {}; raise train.steps to "
             "continue it",
             files.checkpoint, run.step, train.steps);
    if (leader) truncate_metrics(files.metrics, run.step);
    progress.line(fmt::format("resumed {} at step {}", files.checkpoint, run.step));
  }
  distributed::broadcast_parameters(run.parameters);
  return run;
}

struct StepResult {
  double loss = 0;       // mean token loss over the global batch
  double grad_norm = 0;  // before clipping
  double lr = 0;
};

// What the checkpoint file on disk holds, for the divergence message (-1: no checkpoint yet).
struct CheckpointOnDisk {
  std::string path;
  int64_t step = -1;
};

// The message of a run stopped by a non-finite loss or gradient norm at the forward pass of the
// state after `steps_done` steps, saying what the checkpoint on disk is and how to go on from it.
std::string divergence_message(double loss, double grad_norm, int64_t steps_done,
                               const CheckpointOnDisk& checkpoint, const std::string& run_dir,
                               double lr) {
  const std::string what = fmt::format(
      "pretrain: the loss is {} and the gradient norm {} at step {}; stopped before the optimizer "
      "step.",
      loss, grad_norm, steps_done + 1);
  if (checkpoint.step < 0) return what + " No checkpoint was written yet.";
  if (checkpoint.step >= steps_done)
    return what + fmt::format(
                      " The checkpoint {} holds step {}, the very state whose forward pass gave "
                      "this loss: resuming from it diverges again.",
                      checkpoint.path, checkpoint.step);
  return what + fmt::format(
                    " The checkpoint {} holds step {}: its weights are finite and its own forward "
                    "pass gave a finite loss. To continue from it with a lower learning rate: "
                    "qtlab pretrain --resume --run-dir {} --set train.lr={:g} (or a smaller "
                    "train.clip_norm)",
                    checkpoint.path, checkpoint.step, run_dir, lr / 2);
}

// Step 3a. The gradients of one optimizer step on this rank's micro-batches: each micro-batch's
// mean loss is weighted by its share of the global number of labelled positions N, so the gradient
// is that of (sum of token losses) / N (the header); averaged over ranks and clipped. A NaN / Inf
// loss or gradient norm throws; the weights and the optimizer are not touched here.
StepResult training_step(const RunConfig& config, const TrainOptions& options, TrainingRun& run,
                         data::BatchLoader& loader, std::vector<Batch>& micro_batches,
                         const CheckpointOnDisk& checkpoint) {
  const TrainingConfig& train = config.train;
  const int rank = distributed::rank(), world = distributed::world_size();
  const int64_t step = run.step;
  // This rank's micro-batches and the global number of labelled positions N.
  double local_labels = 0;
  std::vector<int64_t> labels(micro_batches.size());
  for (size_t j = 0; j < micro_batches.size(); ++j) {
    micro_batches[j] = to_model_batch(loader.next());
    labels[j] = Model::count_labels(micro_batches[j].labels);
    local_labels += static_cast<double>(labels[j]);
  }
  const double global_labels = distributed::allreduce_sum(local_labels);
  QT_CHECK(global_labels > 0, "pretrain: step {} has no labelled positions", step);
  // Forward + backward.
  double loss_sum = 0;
  for (size_t j = 0; j < micro_batches.size(); ++j) {
    if (labels[j] == 0) continue;
    run.model->dropout_state->seed = train.seed + static_cast<uint64_t>(rank);
    run.model->dropout_state->step =
        static_cast<uint64_t>(step * train.accumulation + static_cast<int64_t>(j));
    Tensor loss = run.model->loss(micro_batches[j], train.label_smoothing);
    if (step == options.faults.poison_step) loss = qt::mul(loss, std::nan(""));
    const double weight = static_cast<double>(labels[j]) * world / global_labels;
    qt::backward(qt::mul(loss, weight));
    loss_sum += loss.item() * static_cast<double>(labels[j]);
  }
  StepResult result;
  result.loss = distributed::allreduce_sum(loss_sum) / global_labels;
  distributed::average_gradients(run.parameters);
  result.grad_norm = train.clip_norm > 0 ? optim::clip_grad_norm(run.parameters, train.clip_norm)
                                         : optim::gradient_norm(run.parameters);
  if (!std::isfinite(result.loss) || !std::isfinite(result.grad_norm))
    throw Error(divergence_message(result.loss, result.grad_norm, step, checkpoint, train.run_dir,
                                   train.lr));
  return result;
}

// Step 3b. AdamW at the schedule's lr on the gradients of step 3a.
void optimizer_step(TrainingRun& run, const optim::Schedule& schedule, StepResult& result) {
  result.lr = optim::lr_at(schedule, run.step);
  run.optimizer->step(result.lr);
  run.optimizer->zero_grad();
  ++run.step;
}

// Throughput and time since the loop started, for the log lines.
struct LogWindow {
  Clock::time_point loop_start, window_start;
  int64_t first_step = 0;
  int64_t steps = 0;              // steps since window_start
  double evaluation_seconds = 0;  // spent in validation since loop_start
  int64_t evaluations = 0;
};

double eta_seconds(const TrainingConfig& train, const RunData& data, const LogWindow& window,
                   int64_t step, double elapsed) {
  EtaInputs in;
  in.steps = train.steps;
  in.eval_every = train.eval_every;
  in.step = step;
  in.steps_done = step - window.first_step;
  in.seconds = elapsed;
  in.evaluation_seconds = window.evaluation_seconds;
  in.evaluations = window.evaluations;
  in.eval_batches =
      validation_batch_count(data, train.batch_size / train.accumulation, train.eval_batches);
  in.accumulation = train.accumulation;
  return training_eta_seconds(in);
}

// Step 4. At a log or evaluation step: one metrics.jsonl record (leader), the progress line and,
// at evaluation steps, the validation loss / perplexity or accuracy.
void log_and_evaluate(const RunConfig& config, const RunFiles& files, const RunData& data,
                      TrainingRun& run, const StepResult& step_result, bool evaluate_now,
                      int64_t tokens_per_step, LogWindow& window, Progress& progress,
                      TrainResult& result) {
  const TrainingConfig& train = config.train;
  const int64_t step = run.step;
  const double window_seconds = seconds_since(window.window_start);
  const double tokens_per_s = tokens_per_step * window.steps / std::max(window_seconds, 1e-9);
  const double elapsed = seconds_since(window.loop_start);
  const double eta = eta_seconds(train, data, window, step, elapsed);
  nlohmann::json record = {{"step", step},
                           {"loss", step_result.loss},
                           {"lr", step_result.lr},
                           {"grad_norm", step_result.grad_norm},
                           {"tokens_per_s", tokens_per_s},
                           {"elapsed_s", elapsed}};
  progress.update(fmt::format(
      "step {}/{}  loss {:.4f}  lr {:.3e}  |g| {:.3f}  {:.0f} tok/s  elapsed {}  eta {}", step,
      train.steps, step_result.loss, step_result.lr, step_result.grad_norm, tokens_per_s,
      format_duration(elapsed), format_duration(eta)));
  if (evaluate_now) {
    const int64_t micro_batch = train.batch_size / train.accumulation;
    const auto evaluation_start = Clock::now();
    result.validation = evaluate(*run.model, data, micro_batch, train.eval_batches);
    window.evaluation_seconds += seconds_since(evaluation_start);
    ++window.evaluations;
    add_evaluation(record, config.model.family, result.validation);
    progress.line(fmt::format(
        "step {}/{}  loss {:.4f}  {}", step, train.steps, step_result.loss,
        evaluation_summary(config.model.family, result.validation, data.validation_samples)));
  }
  // Each record is on disk before the run goes on: a full disk stops the run here, at the step
  // whose record failed, not at some later buffer flush.
  if (distributed::rank() == 0) append_durably(files.metrics, record.dump() + "\n");
  window.window_start = Clock::now();
  window.steps = 0;
}

}  // namespace

TrainResult pretrain(const RunConfig& config, const TrainOptions& options) {
  const Clock::time_point start = Clock::now();
  validate(config);
  const TrainingConfig& train = config.train;
  const int rank = distributed::rank(), world = distributed::world_size();
  const bool leader = rank == 0;
  const int64_t micro_batch = train.batch_size / train.accumulation;  // global, per micro-step
  QT_CHECK(micro_batch % world == 0,
           "pretrain: the micro-batch train.batch_size / train.accumulation = {} is not divisible "
           "by the {} MPI ranks",
           micro_batch, world);
  const nlohmann::json config_json = to_json(config);
  const std::string config_text = config_json.dump(2);
  // Everything that decides the sequence of steps (and so of collectives) must agree: the config
  // key by key, whether the run resumes and where it stops; the resumed step is compared below.
  distributed::LaunchEntries launch = config_entries(config_json);
  launch.emplace_back("--resume", options.resume ? "given" : "not given");
  launch.emplace_back("--stop-at", std::to_string(options.stop_at_step));
  distributed::check_identical("the launch (configuration and flags)", launch);
  check_training_fits(config, world);

  const RunFiles files = run_files(train.run_dir);
  const PreparedRunDirectory prepared =
      prepare_run_directory(files, config_json, config_text, options.resume, leader);
  Progress progress(leader && options.progress);
  for (const std::string& removed : prepared.removed_temporaries)
    progress.line(fmt::format("removed {}, left by a writer that was killed", removed));

  // The data (rank 0 first: it may train and save the tokenizer, which the others then load).
  RunData data;
  if (leader) data = load_run_data(config);
  distributed::allreduce_sum(0.0);  // barrier
  if (!leader) data = load_run_data(config);
  if (leader && !data.tokenizer_path.empty())
    write_text_atomically((fs::path(files.dir) / "tokenizer.json").string(),
                          read_text_file(data.tokenizer_path));
  progress.line(fmt::format("data: {}", data.description));

  TrainingRun run = resume_or_initialise(config, files, options.resume, leader, progress);
  distributed::check_identical("the resumed step", {{"training.step", std::to_string(run.step)}});
  if (!prepared.changes.empty()) {
    std::vector<std::string> texts;
    for (const ConfigChange& change : prepared.changes) texts.push_back(change.text());
    if (leader) record_config_changes(files, prepared.changes, run.step, config_text);
    progress.line(fmt::format("configuration changed at step {}: {} (recorded in {})", run.step,
                              fmt::join(texts, ", "), files.config_changes));
  }
  const optim::Schedule schedule = make_schedule(train);
  int64_t parameter_count = 0;
  for (const Tensor& p : run.parameters) parameter_count += p.numel();
  progress.line(fmt::format(
      "model: {} ({} layers x {}, {} heads, softmax {}, gate {}), {:.2f} M "
      "parameters; {} rank(s) x {} thread(s)",
      family_name(config.model.family), config.model.layers, config.model.hidden,
      config.model.heads, nn::softmax_kind_name(config.model.softmax),
      nn::gate_kind_name(config.model.gate), parameter_count / 1e6, world, num_threads()));

  const int64_t end_step =
      options.stop_at_step >= 0 ? std::min(options.stop_at_step, train.steps) : train.steps;
  QT_CHECK(end_step >= run.step,
           "pretrain: --stop-at {} is before step {}, where the run's checkpoint {} already is",
           options.stop_at_step, run.step, files.checkpoint);

  data::BatchLoaderOptions loader_options;
  loader_options.global_batch_size = micro_batch;
  loader_options.rank = rank;
  loader_options.world_size = world;
  loader_options.seed = train.seed;
  loader_options.prefetch = 2;
  loader_options.first_step = run.step * train.accumulation;
  data::BatchLoader loader(data.train_samples, data.train_batch, loader_options);
  QT_CHECK(loader.batches_per_epoch() > 0,
           "pretrain: the training split has {} samples, fewer than one batch of {}",
           data.train_samples, micro_batch);

  // Model files record the tokenizer their inputs were encoded with (text runs), so that eval and
  // quantize refuse a data directory whose tokenizer differs (models/saved_model.h).
  std::map<std::string, std::string> model_metadata;
  model_metadata["qtlab_version"] = std::string(qtlab_version());
  if (!data.tokenizer_fingerprint.empty())
    model_metadata[kTokenizerFingerprintKey] = data.tokenizer_fingerprint;

  CheckpointOnDisk on_disk{files.checkpoint, options.resume ? run.step : -1};
  const auto save_checkpoint = [&](TrainingState state) {
    on_disk.step = state.step;
    if (!leader) return;
    // A state that is not finite is never written over the last one that was.
    nn::check_finite(files.checkpoint, nn::model_tensors(*run.model), "pretrain: checkpoint");
    nn::check_finite(files.checkpoint, run.optimizer->state_tensors(), "pretrain: checkpoint");
    state.dropout.seed = train.seed;  // every rank derives its own seed from it (training_step)
    for (const auto& [key, value] : model_metadata) state.extra[key] = value;
    save_training_checkpoint(files.checkpoint, *run.model, *run.optimizer, state, config_text);
  };
  const auto current_state = [&] {
    TrainingState state;
    state.step = run.step;
    state.dropout = *run.model->dropout_state;
    return state;
  };

  TrainResult result;
  std::vector<Batch> micro_batches(static_cast<size_t>(train.accumulation));
  const int64_t tokens_per_step = train.batch_size * data.tokens_per_sample;
  LogWindow window;
  window.loop_start = window.window_start = Clock::now();
  window.first_step = run.step;
  // A checkpoint step's state is written only once the next step's forward and backward pass on
  // it gave a finite loss (before that step's optimizer update, while the weights are still that
  // state): so the checkpoint on disk is never the state that diverged. The last step's state is
  // written at once (nothing follows it here).
  std::optional<TrainingState> pending;
  while (run.step < end_step) {
    if (rank == options.faults.fail_rank && run.step == options.faults.fail_at_step) {
      std::fprintf(stderr, "rank %d: simulated crash at step %lld (QTLAB_FAULT_INJECT)\n", rank,
                   static_cast<long long>(run.step));
      std::fflush(stderr);
      std::_Exit(3);
    }
    StepResult step_result = training_step(config, options, run, loader, micro_batches, on_disk);
    if (pending) {
      save_checkpoint(*pending);
      pending.reset();
    }
    optimizer_step(run, schedule, step_result);
    ++window.steps;
    result.last_loss = step_result.loss;
    const int64_t step = run.step;
    const bool last = step == end_step;
    const bool evaluate_now = step % train.eval_every == 0 || last;
    if (step % train.log_every == 0 || evaluate_now)
      log_and_evaluate(config, files, data, run, step_result, evaluate_now, tokens_per_step, window,
                       progress, result);
    if (last)
      save_checkpoint(current_state());
    else if (step % train.checkpoint_every == 0)
      pending = current_state();
  }
  const int64_t trained = run.step - window.first_step;
  const bool finished = run.step == train.steps;
  if (leader && finished && trained > 0)
    nn::save_model(final_model_path(files.dir), *run.model, config_text, model_metadata);
  result.steps = run.step;
  result.steps_trained = trained;
  result.seconds = seconds_since(start);
  // Only what this invocation did: a run already at its end (or at --stop-at) wrote nothing.
  if (trained == 0)
    progress.line(fmt::format("nothing to do: the run is at step {} of {}{}; nothing written",
                              run.step, train.steps,
                              finished ? "" : fmt::format(" (--stop-at {})", end_step)));
  else if (finished)
    progress.line(fmt::format("done: {} steps in {}; wrote {} and {}", trained,
                              format_duration(result.seconds), files.checkpoint,
                              final_model_path(files.dir)));
  else
    progress.line(fmt::format(
        "stopped at step {} of {} (--stop-at) after {} steps in {}; wrote "
        "{} (continue with --resume)",
        run.step, train.steps, trained, format_duration(result.seconds), files.checkpoint));
  return result;
}

double training_eta_seconds(const EtaInputs& in) {
  const int64_t done = std::max<int64_t>(in.steps_done, 1);
  const double step_seconds = std::max(in.seconds - in.evaluation_seconds, 0.0) / done;
  int64_t evaluations_left = in.steps / in.eval_every - in.step / in.eval_every;
  if (in.steps % in.eval_every != 0 && in.step < in.steps) ++evaluations_left;
  const double per_evaluation = in.evaluations > 0
                                    ? in.evaluation_seconds / static_cast<double>(in.evaluations)
                                    : static_cast<double>(in.eval_batches) * step_seconds /
                                          (3.0 * static_cast<double>(in.accumulation));
  return step_seconds * static_cast<double>(in.steps - in.step) +
         per_evaluation * static_cast<double>(evaluations_left);
}

}  // namespace qt::models
