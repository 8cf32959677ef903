// `qtlab logits --checkpoint FILE --batch BATCH --out OUT`: evaluates a saved model on a given
// batch and writes its logits, so that another implementation can be compared with qtlab on
// exactly the same inputs (tools/torch_model.py --check builds the batch, runs this, and compares
// its PyTorch logits with these).
//
//   BATCH (safetensors): "input_ids" i64 [B, T] (BERT, OPT; 1 <= T <= model.max_length, ids in
//                        [0, model.vocab_size)) or "images" f32 [B, N, patch*patch*C] (ViT,
//                        already patchified as data/ gives them to the model).
//   OUT   (safetensors): "logits" f32, [B, T, V] (text: every position) or [B, classes] (ViT),
//                        and metadata "checkpoint", "family".
//
// The model runs in eval mode (no dropout) without a padding mask, under NoGradGuard: the same
// Model::logits the evaluator uses.
#include <fmt/format.h>

#include <filesystem>
#include <string>

#include "autograd/node.h"
#include "models/model.h"
#include "models/saved_model.h"
#include "tensor/error.h"
#include "tensor/safetensors.h"
#include "tensor/threads.h"
#include "tools/commands.h"

namespace {

struct LogitsArguments {
  std::string checkpoint, batch, out;
  int threads = 0;
};

void run_logits(const LogitsArguments& a) {
  if (a.threads > 0) qt::set_num_threads(a.threads);
  const auto [config, model] = qt::models::load_saved_model(a.checkpoint);
  QT_CHECK(std::filesystem::exists(a.batch), "logits: batch file {} does not exist", a.batch);
  const qt::SafeTensors inputs = qt::load_safetensors(a.batch);
  const bool vit = config.model.family == qt::models::Family::vit;
  const std::string family = qt::models::family_name(config.model.family);
  const std::string wanted = vit ? "images" : "input_ids";
  QT_CHECK(inputs.contains(wanted), "logits: {} has no tensor '{}' (a {} model reads '{}')",
           a.batch, wanted, family, wanted);
  qt::models::Batch batch;
  (vit ? batch.images : batch.input_ids) = inputs.get(wanted);
  model->eval();
  qt::NoGradGuard no_grad;
  // The models check the inputs' dtype, shape and id range and name what is wrong.
  const qt::Tensor logits = model->logits(batch);
  qt::save_safetensors(a.out, {{"logits", logits}},
                       {{"checkpoint", a.checkpoint}, {"family", family}});
}

}  // namespace

void add_logits_command(CLI::App& app) {
  auto arguments = std::make_shared<LogitsArguments>();
  CLI::App* cmd =
      app.add_subcommand("logits", "evaluate a model file on a given batch, write its logits");
  cmd->add_option("--checkpoint", arguments->checkpoint,
                  "RUN_DIR/model.safetensors or RUN_DIR/checkpoint.safetensors")
      ->required();
  cmd->add_option("--batch", arguments->batch,
                  "safetensors file with input_ids i64 [B, T] (text) or images f32 [B, N, P] (ViT)")
      ->required();
  cmd->add_option("--out", arguments->out, "safetensors file to write (tensor \"logits\")")
      ->required();
  cmd->add_option("--threads", arguments->threads, "OpenMP threads (default: all)");
  cmd->callback([arguments] { run_logits(*arguments); });
}
