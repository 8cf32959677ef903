// Run configuration: the model (BERT / OPT / ViT and every attention option of the paper), the
// training recipe and the data, as one plain struct with named presets.
//
// Every field has a dotted key ("model.hidden", "train.lr", "data.dir") registered in one table
// (config.cpp) with its type, help text and valid range. The same table serves
//   - config files (JSON; nested objects or dotted keys),
//   - `--set key=value` on the command line,
//   - the resolved config written to RUN_DIR/config.json and into checkpoints,
// so an unknown key or a bad value is always an error that names the key.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include <nlohmann/json_fwd.hpp>

#include "nn/attention_gate.h"
#include "nn/clipped_softmax.h"

namespace qt::models {

// The architecture: BERT (post-LN encoder, masked LM), OPT (pre-LN causal decoder), ViT (pre-LN
// encoder over image patches). Parsed once from "bert" / "opt" / "vit" at the config boundary.
enum class Family { bert, opt, vit };
const std::vector<std::string>& family_names();
Family parse_family(const std::string& name);  // throws naming an unknown family
const char* family_name(Family family);

struct ModelConfig {
  Family family = Family::bert;
  int64_t layers = 4;
  int64_t hidden = 256;
  int64_t heads = 4;
  int64_t ffn = 1024;
  int64_t vocab_size = 8192;  // text models; the tokenizer is trained to this size
  int64_t max_length = 128;   // T: sequence length (text) — ViT derives it from the patches
  double layer_norm_eps = 1e-12;
  double hidden_dropout = 0.1;
  double attention_dropout = 0.1;
  double init_std = 0.02;  // N(0, init_std^2) for embeddings, FFN and output projections
  // Attention (method.md §1, §2)
  nn::SoftmaxKind softmax = nn::SoftmaxKind::vanilla;
  double gamma = 0.0;          // clipped softmax: gamma <= 0
  double zeta = 1.0;           // clipped softmax: zeta >= 1
  double alpha = 0.0;          // > 0: gamma = -alpha / max_length, zeta = 1 (overrides softmax)
  bool alpha_per_row = false;  // with alpha > 0: gamma = -alpha / (keys the row sees) (NCS)
  nn::GateKind gate = nn::GateKind::none;  // nn::gate_kind_table() lists the names
  double gate_pi_init = 0.5;
  int64_t gate_mlp_hidden = 0;  // 0: d_head / 4 (the paper repo's choice)
  // ViT
  int64_t image_size = 28;
  int64_t channels = 1;
  int64_t patch_size = 4;
  int64_t num_classes = 10;
  bool patch_layer_norm = false;  // LayerNorm after the patch embedding (paper Table 7)
};

struct TrainingConfig {
  int64_t steps = 2000;      // optimizer steps
  int64_t batch_size = 32;   // global batch (sequences or images), split over MPI ranks
  int64_t accumulation = 1;  // micro-batches per optimizer step
  double lr = 1e-3;
  std::string schedule = "linear";  // linear | cosine | constant
  double warmup_fraction = 0.05;    // of steps
  double min_lr_ratio = 0.0;        // cosine floor (and linear end), as a fraction of lr
  double weight_decay = 0.01;
  bool weight_decay_layer_norm = false;  // also decay LayerNorm gamma (method.md §6.2)
  double beta1 = 0.9;
  double beta2 = 0.999;
  double eps = 1e-8;
  double clip_norm = 1.0;  // 0: no clipping
  double label_smoothing = 0.0;
  uint64_t seed = 1000;
  int64_t log_every = 10;
  int64_t eval_every = 200;
  int64_t eval_batches = 8;
  int64_t checkpoint_every = 500;
  std::string run_dir = "runs/default";
};

struct DataConfig {
  std::string dir = "data/downloads";  // where tools/fetch_data.sh puts the datasets
  std::string dataset = "text";        // text | mnist | fashion-mnist | synthetic (built-in, for
                                       // tests and benchmarks: models/run_data.h)
  double mlm_probability = 0.15;
  bool augment = true;  // ViT: random crop (and flip for fashion-mnist)
};

struct RunConfig {
  ModelConfig model;
  TrainingConfig train;
  DataConfig data;
};

// Named presets sized for CPUs: "bert-mini" (4 x 256, 4 heads), "bert-small" (4 x 512, 8 heads),
// "opt-mini" (4 x 256, 4 heads, pre-LN, causal), "vit-tiny" (6 x 192 on 28x28, 4x4 patches).
RunConfig preset(const std::string& name);
std::vector<std::string> preset_names();

// Sets one field from its text form ("model.hidden", "384"); throws naming the key on an unknown
// key (with the closest known keys) or a value of the wrong type or range.
void set_value(RunConfig& config, const std::string& key, const std::string& value);
// Sets one field from a typed JSON value (a number, a boolean or a string), with the same checks;
// what the command-line flags use, so a flag's value is never printed and parsed back.
void set_typed_value(RunConfig& config, const std::string& key, const nlohmann::json& value);
// "key=value" as given to --set.
void set_assignment(RunConfig& config, const std::string& assignment);
// Applies a JSON object: nested ({"model": {"hidden": 384}}) or dotted ({"model.hidden": 384}).
void apply_json(RunConfig& config, const nlohmann::json& json);
// Reads a JSON config file on top of `base`: an optional "preset" key replaces the base first,
// then every other key is applied.
RunConfig load_config_file(const std::string& path, const RunConfig& base = RunConfig{});

// Cross-field checks (hidden divisible by heads, patch size dividing the image, ...).
void validate(const RunConfig& config);

nlohmann::json to_json(const RunConfig& config);  // nested, every key
RunConfig from_json(const nlohmann::json& json);  // strict: unknown keys are errors

// All keys with their help text, for `qtlab pretrain --list-keys`.
std::vector<std::pair<std::string, std::string>> config_keys();

// The keys `pretrain --resume` may change: what neither shapes the model nor orders the data —
// the learning rate and the schedule's tail (train.lr, train.schedule, train.min_lr_ratio,
// train.steps), train.clip_norm, the log / evaluation / checkpoint intervals, train.run_dir. The
// recovery after a divergence (a lower lr from the last checkpoint) is such a change.
const std::vector<std::string>& keys_changeable_on_resume();
bool changeable_on_resume(const std::string& key);

}  // namespace qt::models
