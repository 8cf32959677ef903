// `qtlab pretrain`: builds the run configuration and hands it to the trainer (models/trainer.h).
//
// The configuration is resolved in this order, each layer overriding the one before:
//   1. --model PRESET (bert-mini, bert-small, opt-mini, vit-tiny; default bert-mini)
//   2. --config FILE   (JSON, nested or dotted keys; a "preset" key in it replaces step 1)
//   3. the shortcut flags (--attn, --gamma, --gate, --steps, ...)
//   4. every --set key=value, in order
// `qtlab pretrain --resume --run-dir DIR` continues DIR: without --model / --config its stored
// config.json replaces steps 1 and 2 (DIR is where it writes, whatever train.run_dir the stored
// file names), and flags and --set may then change what models::keys_changeable_on_resume() lists
// (`--resume --run-dir DIR --set train.lr=5e-4` after a divergence).
// Every key is validated (models/config.h): an unknown key or a bad value is an error naming it.
#include <fmt/format.h>

#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <vector>

#include "models/config.h"
#include "models/trainer.h"
#include "optim/distributed.h"
#include "tensor/error.h"
#include "tensor/threads.h"
#include "tools/commands.h"

namespace {

struct PretrainArguments {
  std::string model;
  std::string config_file;
  std::vector<std::string> assignments;
  std::optional<std::string> attention, gate, run_dir, dataset;
  std::optional<double> gamma, zeta, alpha, pi_init, lr;
  std::optional<int64_t> steps, batch_size;
  int64_t stop_at = -1;
  std::optional<std::string> seed;  // text: parsed by the config key (CLI11 would wrap -1)
  bool resume = false, quiet = false, json = false, list_keys = false;
  int threads = 0;
};

// "rank:step" from QTLAB_FAULT_INJECT (the failure tests' simulated crash).
void read_fault_injection(qt::models::TrainOptions& options) {
  const char* value = std::getenv("QTLAB_FAULT_INJECT");
  if (value == nullptr || *value == '\0') return;
  int rank = -1;
  long long step = -1;
  QT_CHECK(std::sscanf(value, "%d:%lld", &rank, &step) == 2,
           "QTLAB_FAULT_INJECT='{}': expected rank:step", value);
  options.faults.fail_rank = rank;
  options.faults.fail_at_step = step;
}

// The run directory's stored configuration, as the base of `--resume` without --model / --config.
// The directory is the one given here, whatever its config.json says: a copied or renamed run
// directory must never write into the original.
qt::models::RunConfig stored_run_config(const std::string& dir) {
  const std::string stored = (std::filesystem::path(dir) / "config.json").string();
  QT_CHECK(std::filesystem::exists(stored),
           "pretrain --resume: {} does not exist (is --run-dir right?)", stored);
  qt::models::RunConfig config = qt::models::load_config_file(stored);
  config.train.run_dir = dir;
  return config;
}

qt::models::RunConfig resolve_config(const PretrainArguments& a) {
  using qt::models::RunConfig;
  RunConfig config;
  if (a.resume && a.model.empty() && a.config_file.empty()) {
    config = stored_run_config(a.run_dir.value_or(RunConfig{}.train.run_dir));
  } else {
    config = qt::models::preset(a.model.empty() ? "bert-mini" : a.model);
    if (!a.config_file.empty()) config = qt::models::load_config_file(a.config_file, config);
  }
  // Typed values through the key table (its range checks and messages), never through text.
  using qt::models::set_typed_value;
  if (a.attention) set_typed_value(config, "model.softmax", *a.attention);
  if (a.gamma) set_typed_value(config, "model.gamma", *a.gamma);
  if (a.zeta) set_typed_value(config, "model.zeta", *a.zeta);
  if (a.alpha) set_typed_value(config, "model.alpha", *a.alpha);
  if (a.gate) set_typed_value(config, "model.gate", *a.gate);
  if (a.pi_init) set_typed_value(config, "model.gate_pi_init", *a.pi_init);
  if (a.lr) set_typed_value(config, "train.lr", *a.lr);
  if (a.steps) set_typed_value(config, "train.steps", *a.steps);
  if (a.batch_size) set_typed_value(config, "train.batch_size", *a.batch_size);
  if (a.seed) qt::models::set_value(config, "train.seed", *a.seed);
  if (a.run_dir) set_typed_value(config, "train.run_dir", *a.run_dir);
  if (a.dataset) set_typed_value(config, "data.dataset", *a.dataset);
  for (const std::string& assignment : a.assignments)
    qt::models::set_assignment(config, assignment);
  qt::models::validate(config);
  return config;
}

void run_pretrain(const PretrainArguments& a) {
  if (a.list_keys) {
    for (const auto& [key, help] : qt::models::config_keys())
      std::printf("%-32s %s\n", key.c_str(), help.c_str());
    return;
  }
  if (a.threads > 0) qt::set_num_threads(a.threads);
  const qt::models::RunConfig config = resolve_config(a);
  qt::models::TrainOptions options;
  options.resume = a.resume;
  options.progress = !a.quiet;
  options.stop_at_step = a.stop_at;
  read_fault_injection(options);
  const qt::models::TrainResult result = qt::models::pretrain(config, options);
  if (qt::distributed::rank() != 0 || result.steps_trained == 0) return;
  const nlohmann::json summary = {{"steps", result.steps},
                                  {"steps_trained", result.steps_trained},
                                  {"loss", result.last_loss},
                                  {"val_loss", result.validation.loss},
                                  {"val_samples", result.validation.samples},
                                  {"seconds", result.seconds}};
  nlohmann::json record = summary;
  const bool vit = config.model.family == qt::models::Family::vit;
  record[vit ? "val_accuracy" : "val_perplexity"] =
      vit ? result.validation.accuracy : result.validation.perplexity;
  if (a.json) {  // one machine-readable line (the same figures as metrics.jsonl's last record)
    std::printf("%s\n", record.dump().c_str());
  } else if (!a.quiet) {
    const std::string metric =
        vit ? fmt::format("validation accuracy {:.2f}%", 100 * result.validation.accuracy)
            : fmt::format("validation perplexity {:.2f}", result.validation.perplexity);
    std::printf(
        "summary: trained %lld steps (to step %lld) in %.0f s; last training loss %.4f; "
        "%s on %lld validation %s (metrics.jsonl has every step)\n",
        static_cast<long long>(result.steps_trained), static_cast<long long>(result.steps),
        result.seconds, result.last_loss, metric.c_str(),
        static_cast<long long>(result.validation.samples), vit ? "images" : "sequences");
  }
}

}  // namespace

void add_pretrain_command(CLI::App& app) {
  auto arguments = std::make_shared<PretrainArguments>();
  CLI::App* cmd = app.add_subcommand(
      "pretrain", "train BERT / OPT / ViT (run under `mpirun -np N` for data-parallel training)");
  cmd->add_option("--model", arguments->model, "preset: bert-mini, bert-small, opt-mini, vit-tiny");
  cmd->add_option("--config", arguments->config_file, "JSON config file (nested or dotted keys)");
  cmd->add_option("--set", arguments->assignments, "key=value, repeatable (see --list-keys)")
      ->allow_extra_args(false);
  cmd->add_option("--attn", arguments->attention,
                  fmt::format("softmax: {}", fmt::join(qt::nn::softmax_kind_names(), ", ")));
  cmd->add_option("--gamma", arguments->gamma, "clipped softmax gamma (<= 0)");
  cmd->add_option("--zeta", arguments->zeta, "clipped softmax zeta (>= 1)");
  cmd->add_option("--alpha", arguments->alpha, "clipped softmax with gamma = -alpha / T");
  cmd->add_option("--gate", arguments->gate,
                  fmt::format("gated attention: {}", fmt::join(qt::nn::gate_kind_names(), ", ")));
  cmd->add_option("--pi-init", arguments->pi_init, "initial gate probability pi_init");
  cmd->add_option("--lr", arguments->lr, "peak learning rate");
  cmd->add_option("--steps", arguments->steps, "optimizer steps");
  cmd->add_option("--batch-size", arguments->batch_size, "global batch size");
  cmd->add_option("--seed", arguments->seed, "seed of initialisation, data order and dropout");
  cmd->add_option("--dataset", arguments->dataset, "text, mnist, fashion-mnist or synthetic");
  cmd->add_option("--run-dir", arguments->run_dir, "directory for config, metrics, checkpoints");
  cmd->add_option("--stop-at", arguments->stop_at,
                  "checkpoint and stop after this step (continue later with --resume)");
  cmd->add_flag("--resume", arguments->resume, "continue the run in --run-dir from its checkpoint");
  cmd->add_option("--threads", arguments->threads, "OpenMP threads per process (default: all)");
  cmd->add_flag("--quiet", arguments->quiet, "no progress output");
  cmd->add_flag("--json", arguments->json,
                "print the final figures as one JSON line on stdout (instead of the summary)");
  cmd->add_flag("--list-keys", arguments->list_keys, "print every config key with its help");
  cmd->callback([arguments] { run_pretrain(*arguments); });
}
