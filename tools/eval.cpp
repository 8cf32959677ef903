// `qtlab eval --checkpoint FILE`: FP validation loss and perplexity (BERT, OPT) or accuracy (ViT)
// of a model file or training checkpoint, rebuilt from the run config stored in it.
#include <fmt/format.h>

#include <cmath>
#include <cstdio>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "models/evaluation.h"
#include "models/model.h"
#include "models/run_data.h"
#include "models/saved_model.h"
#include "optim/distributed.h"
#include "tensor/error.h"
#include "tensor/threads.h"
#include "tools/commands.h"

namespace {

struct EvalArguments {
  std::string checkpoint;
  std::vector<std::string> assignments;
  int64_t batches = 0;
  int64_t batch_size = 0;
  int threads = 0;
  bool json = false;
};

void run_eval(const EvalArguments& a) {
  if (a.threads > 0) qt::set_num_threads(a.threads);
  const auto [config, model] = qt::models::load_saved_model(a.checkpoint, a.assignments);
  const qt::models::RunData data = qt::models::load_run_data(config);
  const int64_t batch_size = a.batch_size > 0 ? a.batch_size : config.train.batch_size;
  const qt::models::EvaluationResult r = qt::models::evaluate(*model, data, batch_size, a.batches);
  qt::models::require_finite_evaluation(r, "eval: " + a.checkpoint);
  if (qt::distributed::rank() != 0) return;
  const bool vit = config.model.family == qt::models::Family::vit;
  if (a.json) {
    nlohmann::json out = {{"checkpoint", a.checkpoint},
                          {"family", qt::models::family_name(config.model.family)},
                          {"loss", r.loss},
                          {"samples", r.samples},
                          {"labels", r.labels}};
    if (vit)
      out["accuracy"] = r.accuracy;
    else
      out["perplexity"] = r.perplexity;
    std::printf("%s\n", out.dump().c_str());
    return;
  }
  std::printf("%s\n", fmt::format("{}: {} on {} validation {} ({} labelled)", a.checkpoint,
                                  qt::models::family_name(config.model.family), r.samples,
                                  vit ? "images" : "sequences", r.labels)
                          .c_str());
  if (vit)
    std::printf("  loss %.4f  accuracy %.2f%%\n", r.loss, 100 * r.accuracy);
  else
    std::printf("  loss %.4f  perplexity %.3f\n", r.loss, r.perplexity);
}

}  // namespace

void add_eval_command(CLI::App& app) {
  auto arguments = std::make_shared<EvalArguments>();
  CLI::App* cmd = app.add_subcommand("eval", "validation perplexity (BERT, OPT) or accuracy (ViT)");
  cmd->add_option("--checkpoint", arguments->checkpoint,
                  "RUN_DIR/model.safetensors or RUN_DIR/checkpoint.safetensors")
      ->required();
  cmd->add_option("--batches", arguments->batches, "validation batches (default: all)");
  cmd->add_option("--batch-size", arguments->batch_size, "default: the run's train.batch_size");
  cmd->add_option("--set", arguments->assignments, "override a stored key, e.g. data.dir=...");
  cmd->add_option("--threads", arguments->threads, "OpenMP threads (default: all)");
  cmd->add_flag("--json", arguments->json, "one JSON object instead of text");
  cmd->callback([arguments] { run_eval(*arguments); });
}
