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
#include <sstream>
#include <vector>

#include "autograd/engine.h"
#include "autograd/functions.h"
#include "nn/checkpoint.h"
#include "optim/adamw.h"
#include "optim/clip_grad.h"
#include "optim/distributed.h"
#include "optim/parameter_groups.h"
#include "optim/schedule.h"
#include "tensor/atomic_file.h"
#include "tensor/error.h"
#include "tensor/threads.h"

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

// The keys whose values differ between two resolved configs, "key: a -> b" each.
std::vector<std::string> config_differences(const nlohmann::json& stored,
                                            const nlohmann::json& current) {
  std::vector<std::string> out;
  const nlohmann::json a = stored.flatten(), b = current.flatten();
  for (const auto& [key, value] : b.items())
    if (!a.contains(key) || a[key] != value)
      out.push_back(fmt::format("{}: {} -> {}", config_key(key),
                                a.contains(key) ? a[key].dump() : "(absent)", value.dump()));
  for (const auto& [key, value] : a.items())
    if (!b.contains(key))
      out.push_back(fmt::format("{}: {} -> (absent)", config_key(key), value.dump()));
  return out;
}

// metrics.jsonl lines of steps <= `step` (a resumed run rewrites what came after its checkpoint).
void truncate_metrics(const std::string& path, int64_t step) {
  if (!fs::exists(path)) return;
  std::ifstream in(path);
  std::string line, kept;
  while (std::getline(in, line)) {
    if (line.empty()) continue;
    const nlohmann::json object = nlohmann::json::parse(line, nullptr, false);
    if (object.is_discarded() || !object.contains("step")) continue;  // a torn last line
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

std::string evaluation_summary(const std::string& family, const EvaluationResult& r) {
  if (family == "vit")
    return fmt::format("val_loss {:.4f}  val_accuracy {:.2f}%", r.loss, 100 * r.accuracy);
  return fmt::format("val_loss {:.4f}  val_perplexity {:.2f}", r.loss, r.perplexity);
}

void add_evaluation(nlohmann::json& record, const std::string& family, const EvaluationResult& r) {
  record["val_loss"] = r.loss;
  if (family == "vit")
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
  distributed::check_identical("the resolved configuration", config_text);

  // ---- run directory
  const std::string run_dir = train.run_dir;
  const std::string config_file = (fs::path(run_dir) / "config.json").string();
  const std::string metrics_file = (fs::path(run_dir) / "metrics.jsonl").string();
  const std::string checkpoint_file = checkpoint_path(run_dir);
  if (options.resume) {
    QT_CHECK(fs::exists(checkpoint_file),
             "pretrain --resume: no checkpoint {} (start the run without --resume first)",
             checkpoint_file);
    QT_CHECK(fs::exists(config_file), "pretrain --resume: {} is missing", config_file);
    const nlohmann::json stored =
        nlohmann::json::parse(read_text_file(config_file), nullptr, false);
    QT_CHECK(!stored.is_discarded(), "pretrain --resume: {} is not valid JSON", config_file);
    const std::vector<std::string> differences = config_differences(stored, config_json);
    QT_CHECK(differences.empty(),
             "pretrain --resume: the configuration differs from the run's {}:\n  {}", config_file,
             fmt::join(differences, "\n  "));
  } else if (leader) {
    QT_CHECK(!fs::exists(checkpoint_file),
             "pretrain: {} already holds a run (checkpoint {}); use --resume to continue it or "
             "choose another train.run_dir",
             run_dir, checkpoint_file);
    fs::create_directories(run_dir);
    write_text_atomically(config_file, config_text + "\n");
    if (fs::exists(metrics_file)) fs::remove(metrics_file);
  }
  Progress progress(leader && options.progress);

  // ---- data (rank 0 first: it may train and save the tokenizer, which the others then load)
  RunData data;
  if (leader) data = load_run_data(config);
  distributed::allreduce_sum(0.0);  // barrier
  if (!leader) data = load_run_data(config);
  if (leader && !data.tokenizer_path.empty())
    write_text_atomically((fs::path(run_dir) / "tokenizer.json").string(),
                          read_text_file(data.tokenizer_path));
  progress.line(fmt::format("data: {}", data.description));

  // ---- model and optimizer
  std::shared_ptr<Model> model = build_model(config.model, train.seed);
  model->train();
  optim::WeightDecayRule rule;
  rule.weight_decay = train.weight_decay;
  rule.decay_layer_norm_weight = train.weight_decay_layer_norm;
  if (config.model.family == "vit") rule.no_decay_names = {"cls_token", "position_embeddings"};
  optim::AdamW optimizer(optim::weight_decay_groups(model->named_parameters(), rule),
                         {train.beta1, train.beta2, train.eps});
  const std::vector<Tensor> parameters = model->parameters();
  const optim::Schedule schedule = make_schedule(train);
  int64_t step = 0;
  if (options.resume) {
    const nn::TrainingState state =
        nn::load_training_checkpoint(checkpoint_file, *model, optimizer);
    step = state.step;
    if (leader) truncate_metrics(metrics_file, step);
    progress.line(fmt::format("resumed {} at step {}", checkpoint_file, step));
  }
  distributed::broadcast_parameters(parameters);
  int64_t parameter_count = 0;
  for (const Tensor& p : parameters) parameter_count += p.numel();
  progress.line(fmt::format(
      "model: {} ({} layers x {}, {} heads, softmax {}, gate {}), {:.2f} M "
      "parameters; {} rank(s) x {} thread(s)",
      config.model.family, config.model.layers, config.model.hidden, config.model.heads,
      config.model.softmax, config.model.gate, parameter_count / 1e6, world, num_threads()));

  data::BatchLoaderOptions loader_options;
  loader_options.global_batch_size = micro_batch;
  loader_options.rank = rank;
  loader_options.world_size = world;
  loader_options.seed = train.seed;
  loader_options.prefetch = 2;
  loader_options.first_step = step * train.accumulation;
  data::BatchLoader loader(data.train_samples, data.train_batch, loader_options);
  QT_CHECK(loader.batches_per_epoch() > 0,
           "pretrain: the training split has {} samples, fewer than one batch of {}",
           data.train_samples, micro_batch);

  auto save_checkpoint = [&](int64_t at_step) {
    if (!leader) return;
    nn::TrainingState state;
    state.step = at_step;
    state.dropout = *model->dropout_state;
    state.dropout.seed = train.seed;  // every rank derives its own seed from it (see below)
    nn::save_training_checkpoint(checkpoint_file, *model, optimizer, state, config_text);
  };

  TrainResult result;
  std::vector<models::Batch> micro_batches(static_cast<size_t>(train.accumulation));
  const int64_t tokens_per_step = train.batch_size * data.tokens_per_sample;
  const Clock::time_point loop_start = Clock::now();
  const int64_t first_step = step;
  Clock::time_point window_start = loop_start;
  int64_t window_steps = 0;
  const int64_t end_step =
      options.stop_at_step >= 0 ? std::min(options.stop_at_step, train.steps) : train.steps;
  while (step < end_step) {
    if (rank == options.fail_rank && step == options.fail_at_step) {
      std::fprintf(stderr, "rank %d: simulated crash at step %lld (QTLAB_FAULT_INJECT)\n", rank,
                   static_cast<long long>(step));
      std::fflush(stderr);
      std::_Exit(3);
    }
    // 1. this rank's micro-batches and the global number of labelled positions N
    double local_labels = 0;
    std::vector<int64_t> labels(micro_batches.size());
    for (size_t j = 0; j < micro_batches.size(); ++j) {
      micro_batches[j] = to_model_batch(loader.next());
      labels[j] = Model::count_labels(micro_batches[j].labels);
      local_labels += static_cast<double>(labels[j]);
    }
    const double global_labels = distributed::allreduce_sum(local_labels);
    QT_CHECK(global_labels > 0, "pretrain: step {} has no labelled positions", step);
    // 2. forward + backward: gradient of (sum of token losses) / N, see the header
    double loss_sum = 0;
    for (size_t j = 0; j < micro_batches.size(); ++j) {
      if (labels[j] == 0) continue;
      model->dropout_state->seed = train.seed + static_cast<uint64_t>(rank);
      model->dropout_state->step =
          static_cast<uint64_t>(step * train.accumulation + static_cast<int64_t>(j));
      Tensor loss = model->loss(micro_batches[j], train.label_smoothing);
      if (step == options.poison_step) loss = qt::mul(loss, std::nan(""));
      const double weight = static_cast<double>(labels[j]) * world / global_labels;
      qt::backward(qt::mul(loss, weight));
      loss_sum += loss.item() * static_cast<double>(labels[j]);
    }
    const double step_loss = distributed::allreduce_sum(loss_sum) / global_labels;
    distributed::average_gradients(parameters);
    const double grad_norm = train.clip_norm > 0
                                 ? optim::clip_grad_norm(parameters, train.clip_norm)
                                 : optim::gradient_norm(parameters);
    if (!std::isfinite(step_loss) || !std::isfinite(grad_norm)) {
      const bool have_checkpoint = fs::exists(checkpoint_file);
      throw Error(fmt::format(
          "pretrain: the loss is {} and the gradient norm {} at step {}; stopping before the "
          "optimizer step. {} (try a lower train.lr or a stronger train.clip_norm)",
          step_loss, grad_norm, step + 1,
          have_checkpoint ? fmt::format("The last good checkpoint is {}.", checkpoint_file)
                          : std::string("No checkpoint was written yet.")));
    }
    const double lr = optim::lr_at(schedule, step);
    optimizer.step(lr);
    optimizer.zero_grad();
    ++step;
    ++window_steps;
    result.last_loss = step_loss;

    // 3. logging, evaluation, checkpoints
    const bool last = step == end_step;
    const bool log_now = step % train.log_every == 0 || last;
    const bool evaluate_now = step % train.eval_every == 0 || last;
    if (log_now || evaluate_now) {
      const double window_seconds = seconds_since(window_start);
      const double tokens_per_s = tokens_per_step * window_steps / std::max(window_seconds, 1e-9);
      const double elapsed = seconds_since(loop_start);
      const double eta = elapsed / static_cast<double>(step - first_step) *
                         static_cast<double>(train.steps - step);
      nlohmann::json record = {{"step", step},
                               {"loss", step_loss},
                               {"lr", lr},
                               {"grad_norm", grad_norm},
                               {"tokens_per_s", tokens_per_s},
                               {"elapsed_s", elapsed}};
      progress.update(
          fmt::format("step {}/{}  loss {:.4f}  lr {:.3e}  |g| {:.3f}  {:.0f} tok/s  "
                      "elapsed {}  eta {}",
                      step, train.steps, step_loss, lr, grad_norm, tokens_per_s,
                      format_duration(elapsed), format_duration(eta)));
      if (evaluate_now) {
        result.validation = evaluate(*model, data, micro_batch, train.eval_batches);
        add_evaluation(record, config.model.family, result.validation);
        progress.line(fmt::format("step {}/{}  loss {:.4f}  {}", step, train.steps, step_loss,
                                  evaluation_summary(config.model.family, result.validation)));
      }
      if (leader) {
        std::ofstream metrics(metrics_file, std::ios::app);
        metrics << record.dump() << "\n";
        QT_CHECK(metrics.good(), "pretrain: cannot append to {}", metrics_file);
      }
      window_start = Clock::now();
      window_steps = 0;
    }
    if (step % train.checkpoint_every == 0 || last) save_checkpoint(step);
  }
  if (leader && step == train.steps) nn::save_model(final_model_path(run_dir), *model, config_text);
  result.steps = step;
  result.seconds = seconds_since(start);
  progress.line(fmt::format("done: {} steps in {}; {} and {}", step,
                            format_duration(result.seconds), checkpoint_file,
                            final_model_path(run_dir)));
  return result;
}

}  // namespace qt::models
