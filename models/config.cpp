#include "models/config.h"

#include <algorithm>
#include <charconv>
#include <cmath>
#include <fstream>
#include <functional>
#include <nlohmann/json.hpp>
#include <sstream>

#include "tensor/error.h"
#include "tensor/json_parse.h"

namespace qt::models {

namespace {

using nlohmann::json;

// One entry of the key table: how to read and write the field, and what values it accepts.
struct Field {
  std::string key;
  std::string help;
  std::function<void(RunConfig&, const json&)> set;  // throws naming the key on a bad value
  std::function<json(const RunConfig&)> get;
};

// Reads a field through its accessor (the accessors take a mutable config so that one function
// serves both reading and writing).
template <typename T>
std::function<json(const RunConfig&)> getter(T& (*access)(RunConfig&)) {
  return [=](const RunConfig& c) { return json(access(const_cast<RunConfig&>(c))); };
}

[[noreturn]] void bad_value(const std::string& key, const json& value, const std::string& want) {
  fail("config: {} = {} is not valid: expected {}", key, json_excerpt(value), want);
}

Field integer_field(const std::string& key, const std::string& help, int64_t& (*access)(RunConfig&),
                    int64_t low, int64_t high) {
  return {key, help,
          [=](RunConfig& c, const json& v) {
            const std::string want = fmt::format("an integer in [{}, {}]", low, high);
            if (!v.is_number_integer()) bad_value(key, v, want);
            const int64_t x = v.get<int64_t>();
            if (x < low || x > high) bad_value(key, v, want);
            access(c) = x;
          },
          getter(access)};
}

Field seed_field(const std::string& key, const std::string& help, uint64_t& (*access)(RunConfig&)) {
  return {key, help,
          [=](RunConfig& c, const json& v) {
            // nlohmann reads every non-negative integer text as unsigned (so seeds up to 2^64 - 1
            // arrive here as such); a signed integer is accepted when it is not negative.
            const bool non_negative =
                v.is_number_unsigned() || (v.is_number_integer() && v.get<int64_t>() >= 0);
            if (!non_negative) bad_value(key, v, "an integer in [0, 2^64 - 1]");
            access(c) = v.get<uint64_t>();
          },
          getter(access)};
}

Field real_field(const std::string& key, const std::string& help, double& (*access)(RunConfig&),
                 double low, double high) {
  return {key, help,
          [=](RunConfig& c, const json& v) {
            const std::string want = fmt::format("a number in [{}, {}]", low, high);
            if (!v.is_number()) bad_value(key, v, want);
            const double x = v.get<double>();
            if (!std::isfinite(x) || x < low || x > high) bad_value(key, v, want);
            access(c) = x;
          },
          getter(access)};
}

Field bool_field(const std::string& key, const std::string& help, bool& (*access)(RunConfig&)) {
  return {key, help,
          [=](RunConfig& c, const json& v) {
            if (!v.is_boolean()) bad_value(key, v, "true or false");
            access(c) = v.get<bool>();
          },
          getter(access)};
}

// A string field; `choices` empty means any non-empty string.
Field text_field(const std::string& key, const std::string& help,
                 std::string& (*access)(RunConfig&), std::vector<std::string> choices) {
  return {key, help,
          [=](RunConfig& c, const json& v) {
            const std::string want = choices.empty()
                                         ? std::string("a non-empty string")
                                         : fmt::format("one of {}", fmt::join(choices, ", "));
            if (!v.is_string() || v.get<std::string>().empty()) bad_value(key, v, want);
            if (!choices.empty() &&
                std::find(choices.begin(), choices.end(), v.get<std::string>()) == choices.end())
              bad_value(key, v, want);
            access(c) = v.get<std::string>();
          },
          getter(access)};
}

// A field holding an enum, written as one of `names` (parse / name convert; the list is the one
// the enum's own module keeps).
template <typename E>
Field enum_field(const std::string& key, const std::string& help, E& (*access)(RunConfig&),
                 const std::vector<std::string>& names, E (*parse)(const std::string&),
                 const char* (*name)(E)) {
  return {key, help,
          [=](RunConfig& c, const json& v) {
            const std::string want = fmt::format("one of {}", fmt::join(names, ", "));
            if (!v.is_string() ||
                std::find(names.begin(), names.end(), v.get<std::string>()) == names.end())
              bad_value(key, v, want);
            access(c) = parse(v.get<std::string>());
          },
          [=](const RunConfig& c) { return json(name(access(const_cast<RunConfig&>(c)))); }};
}

constexpr int64_t kBig = int64_t(1) << 40;

#define FIELD_ACCESS(type, member) +[](RunConfig& c) -> type& { return c.member; }

const std::vector<Field>& fields() {
  static const std::vector<Field> table = {
      enum_field("model.family", "architecture", FIELD_ACCESS(Family, model.family), family_names(),
                 parse_family, family_name),
      integer_field("model.layers", "transformer blocks", FIELD_ACCESS(int64_t, model.layers), 1,
                    256),
      integer_field("model.hidden", "model width d", FIELD_ACCESS(int64_t, model.hidden), 1,
                    1 << 16),
      integer_field("model.heads", "attention heads H (d must be divisible by H)",
                    FIELD_ACCESS(int64_t, model.heads), 1, 1024),
      integer_field("model.ffn", "feed-forward width", FIELD_ACCESS(int64_t, model.ffn), 1,
                    1 << 18),
      integer_field("model.vocab_size", "tokenizer / embedding vocabulary size",
                    FIELD_ACCESS(int64_t, model.vocab_size), 16, 1 << 20),
      integer_field("model.max_length", "sequence length T (text models)",
                    FIELD_ACCESS(int64_t, model.max_length), 2, 1 << 16),
      real_field("model.layer_norm_eps", "LayerNorm epsilon",
                 FIELD_ACCESS(double, model.layer_norm_eps), 0.0, 1.0),
      real_field("model.hidden_dropout", "dropout on residual branches and embeddings",
                 FIELD_ACCESS(double, model.hidden_dropout), 0.0, 0.99),
      real_field("model.attention_dropout", "dropout on attention probabilities (after clipping)",
                 FIELD_ACCESS(double, model.attention_dropout), 0.0, 0.99),
      real_field("model.init_std", "std of the normal init of embeddings and dense layers",
                 FIELD_ACCESS(double, model.init_std), 0.0, 10.0),
      enum_field("model.softmax", "attention softmax", FIELD_ACCESS(nn::SoftmaxKind, model.softmax),
                 nn::softmax_kind_names(), nn::parse_softmax_kind, nn::softmax_kind_name),
      real_field("model.gamma", "clipped softmax gamma (<= 0)", FIELD_ACCESS(double, model.gamma),
                 -10.0, 0.0),
      real_field("model.zeta", "clipped softmax zeta (>= 1)", FIELD_ACCESS(double, model.zeta), 1.0,
                 10.0),
      real_field("model.alpha", "if > 0: gamma = -alpha / max_length, zeta = 1 (clipped)",
                 FIELD_ACCESS(double, model.alpha), 0.0, 1e6),
      bool_field("model.alpha_per_row",
                 "with model.alpha: gamma = -alpha / (keys the query row sees), the per-row "
                 "clipped softmax (NCS; method.md §9.2)",
                 FIELD_ACCESS(bool, model.alpha_per_row)),
      enum_field("model.gate", "gated attention variant", FIELD_ACCESS(nn::GateKind, model.gate),
                 nn::gate_kind_names(), nn::parse_gate_kind, nn::gate_kind_name),
      real_field("model.gate_pi_init", "initial gate probability (bias = logit(pi))",
                 FIELD_ACCESS(double, model.gate_pi_init), 1e-6, 1.0 - 1e-6),
      integer_field("model.gate_mlp_hidden", "MLP gate hidden width (0: d_head / 4)",
                    FIELD_ACCESS(int64_t, model.gate_mlp_hidden), 0, 1 << 16),
      integer_field("model.image_size", "ViT input height = width",
                    FIELD_ACCESS(int64_t, model.image_size), 1, 4096),
      integer_field("model.channels", "ViT input channels", FIELD_ACCESS(int64_t, model.channels),
                    1, 16),
      integer_field("model.patch_size", "ViT patch size (divides image_size)",
                    FIELD_ACCESS(int64_t, model.patch_size), 1, 4096),
      integer_field("model.num_classes", "ViT classes", FIELD_ACCESS(int64_t, model.num_classes), 2,
                    1 << 20),
      bool_field("model.patch_layer_norm", "ViT: LayerNorm after the patch embedding",
                 FIELD_ACCESS(bool, model.patch_layer_norm)),
      integer_field("train.steps", "optimizer steps", FIELD_ACCESS(int64_t, train.steps), 1, kBig),
      integer_field("train.batch_size", "global batch size (split across MPI ranks)",
                    FIELD_ACCESS(int64_t, train.batch_size), 1, 1 << 20),
      integer_field("train.accumulation", "micro-batches per optimizer step",
                    FIELD_ACCESS(int64_t, train.accumulation), 1, 1 << 16),
      real_field("train.lr", "peak learning rate", FIELD_ACCESS(double, train.lr), 0.0, 10.0),
      text_field("train.schedule", "learning-rate schedule",
                 FIELD_ACCESS(std::string, train.schedule), {"linear", "cosine", "constant"}),
      real_field("train.warmup_fraction", "linear warm-up, as a fraction of steps",
                 FIELD_ACCESS(double, train.warmup_fraction), 0.0, 1.0),
      real_field("train.min_lr_ratio", "final / floor learning rate as a fraction of lr",
                 FIELD_ACCESS(double, train.min_lr_ratio), 0.0, 1.0),
      real_field("train.weight_decay", "AdamW decoupled weight decay",
                 FIELD_ACCESS(double, train.weight_decay), 0.0, 10.0),
      bool_field("train.weight_decay_layer_norm", "also decay LayerNorm gamma (method.md §6.2)",
                 FIELD_ACCESS(bool, train.weight_decay_layer_norm)),
      real_field("train.beta1", "AdamW beta1", FIELD_ACCESS(double, train.beta1), 0.0, 0.999999),
      real_field("train.beta2", "AdamW beta2", FIELD_ACCESS(double, train.beta2), 0.0, 0.999999),
      real_field("train.eps", "AdamW epsilon", FIELD_ACCESS(double, train.eps), 0.0, 1.0),
      real_field("train.clip_norm", "global gradient-norm clipping (0: off)",
                 FIELD_ACCESS(double, train.clip_norm), 0.0, 1e6),
      real_field("train.label_smoothing", "cross-entropy label smoothing",
                 FIELD_ACCESS(double, train.label_smoothing), 0.0, 0.99),
      seed_field("train.seed", "seed for init, data order, masking and dropout",
                 FIELD_ACCESS(uint64_t, train.seed)),
      integer_field("train.log_every", "steps between progress lines / metrics.jsonl rows",
                    FIELD_ACCESS(int64_t, train.log_every), 1, kBig),
      integer_field("train.eval_every", "steps between validations",
                    FIELD_ACCESS(int64_t, train.eval_every), 1, kBig),
      integer_field("train.eval_batches", "validation batches per evaluation",
                    FIELD_ACCESS(int64_t, train.eval_batches), 1, kBig),
      integer_field("train.checkpoint_every", "steps between checkpoints",
                    FIELD_ACCESS(int64_t, train.checkpoint_every), 1, kBig),
      text_field("train.run_dir", "directory for config, metrics and checkpoints",
                 FIELD_ACCESS(std::string, train.run_dir), {}),
      text_field("data.dir", "dataset directory (tools/fetch_data.sh)",
                 FIELD_ACCESS(std::string, data.dir), {}),
      text_field("data.dataset", "dataset", FIELD_ACCESS(std::string, data.dataset),
                 {"text", "mnist", "fashion-mnist", "synthetic"}),
      real_field("data.mlm_probability", "BERT: fraction of tokens selected for MLM",
                 FIELD_ACCESS(double, data.mlm_probability), 0.0, 1.0),
      bool_field("data.augment", "ViT: random crop (+ flip on fashion-mnist)",
                 FIELD_ACCESS(bool, data.augment)),
  };
  return table;
}

#undef FIELD_ACCESS

// Levenshtein distance, to suggest the key the user probably meant.
size_t edit_distance(const std::string& a, const std::string& b) {
  std::vector<size_t> row(b.size() + 1);
  for (size_t j = 0; j <= b.size(); ++j) row[j] = j;
  for (size_t i = 1; i <= a.size(); ++i) {
    size_t diagonal = row[0];
    row[0] = i;
    for (size_t j = 1; j <= b.size(); ++j) {
      const size_t up = row[j];
      row[j] = std::min({row[j] + 1, row[j - 1] + 1, diagonal + (a[i - 1] != b[j - 1])});
      diagonal = up;
    }
  }
  return row[b.size()];
}

const Field& find_field(const std::string& key) {
  for (const Field& f : fields())
    if (f.key == key) return f;
  // No key is longer than 40 characters: a long text is no misspelling worth ranking.
  if (key.size() > 100)
    fail("config: unknown key '{}' (`qtlab pretrain --list-keys` lists all)", excerpt(key));
  std::vector<std::pair<size_t, std::string>> ranked;
  for (const Field& f : fields()) ranked.emplace_back(edit_distance(key, f.key), f.key);
  std::sort(ranked.begin(), ranked.end());
  std::vector<std::string> close;
  for (size_t i = 0; i < ranked.size() && i < 3; ++i) close.push_back(ranked[i].second);
  fail("config: unknown key '{}' (closest: {}; `qtlab pretrain --list-keys` lists all)", key,
       fmt::join(close, ", "));
}

// The text of --set as JSON of the field's type: numbers and booleans parse, anything else is a
// string. Integers must be written as integers ("3", not "3.0").
json parse_text_value(const std::string& text) {
  if (text == "true") return true;
  if (text == "false") return false;
  int64_t integer = 0;
  const char* end = text.data() + text.size();
  if (auto [p, ec] = std::from_chars(text.data(), end, integer); ec == std::errc() && p == end)
    return integer;
  uint64_t large = 0;  // 2^63 .. 2^64 - 1 (seeds)
  if (auto [p, ec] = std::from_chars(text.data(), end, large); ec == std::errc() && p == end)
    return large;
  double real = 0;
  if (auto [p, ec] = std::from_chars(text.data(), end, real); ec == std::errc() && p == end)
    return real;
  return text;
}

void flatten(const json& object, const std::string& prefix,
             std::vector<std::pair<std::string, json>>& out) {
  for (auto it = object.begin(); it != object.end(); ++it) {
    const std::string key = prefix.empty() ? it.key() : prefix + "." + it.key();
    if (it.value().is_object()) {
      flatten(it.value(), key, out);
    } else {
      out.emplace_back(key, it.value());
    }
  }
}

}  // namespace

const std::vector<std::string>& family_names() {
  static const std::vector<std::string> names = {"bert", "opt", "vit"};
  return names;
}

Family parse_family(const std::string& name) {
  if (name == "bert") return Family::bert;
  if (name == "opt") return Family::opt;
  if (name == "vit") return Family::vit;
  fail("config: unknown model family '{}' (expected {})", name, fmt::join(family_names(), ", "));
}

const char* family_name(Family family) {
  switch (family) {
    case Family::bert:
      return "bert";
    case Family::opt:
      return "opt";
    case Family::vit:
      return "vit";
  }
  fail("config: model family {} has no name", static_cast<int>(family));
}

RunConfig preset(const std::string& name) {
  RunConfig c;
  if (name == "bert-mini") return c;  // the defaults: 4 x 256, 4 heads, FFN 1024, T = 128
  if (name == "bert-small") {
    c.model.hidden = 512;
    c.model.heads = 8;
    c.model.ffn = 2048;
    return c;
  }
  if (name == "opt-mini") {
    // OPT conventions (method.md §3.2, §6.2): ReLU, pre-LN, attention dropout 0, LN eps 1e-5,
    // init std 0.006, AdamW betas (0.9, 0.95), weight decay 0.1.
    c.model.family = Family::opt;
    c.model.layer_norm_eps = 1e-5;
    c.model.attention_dropout = 0.0;
    c.model.init_std = 0.006;
    c.train.beta2 = 0.95;
    c.train.weight_decay = 0.1;
    c.train.lr = 1e-3;
    c.train.run_dir = "runs/opt-mini";
    return c;
  }
  if (name == "vit-tiny") {
    // A small pre-LN ViT for 28x28 MNIST-like images: 7x7 patches -> 16 tokens + CLS. (4x4
    // patches give 49 tokens and cost 3x the compute per image for no accuracy gain at this
    // training length; docs/results.md.)
    c.model.family = Family::vit;
    c.model.patch_size = 7;
    c.model.layers = 6;
    c.model.hidden = 192;
    c.model.heads = 3;
    c.model.ffn = 768;
    c.model.layer_norm_eps = 1e-6;
    c.model.hidden_dropout = 0.0;
    c.model.attention_dropout = 0.0;
    c.data.dataset = "mnist";
    c.train.steps = 4000;  // 128 x 4,000 = 8.5 epochs of the 60,000 training images
    c.train.batch_size = 128;
    c.train.schedule = "cosine";
    c.train.min_lr_ratio = 0.01;
    c.train.weight_decay = 0.03;
    c.train.label_smoothing = 0.1;
    c.train.run_dir = "runs/vit-tiny";
    return c;
  }
  fail("config: unknown preset '{}' (known: {})", name, fmt::join(preset_names(), ", "));
}

std::vector<std::string> preset_names() {
  return {"bert-mini", "bert-small", "opt-mini", "vit-tiny"};
}

void set_value(RunConfig& config, const std::string& key, const std::string& value) {
  const Field& field = find_field(key);
  json parsed = parse_text_value(value);
  // A string-typed field gets the text itself, even if it looks like a number ("run_dir=2").
  if (field.get(config).is_string()) parsed = value;
  field.set(config, parsed);
}

void set_typed_value(RunConfig& config, const std::string& key, const nlohmann::json& value) {
  find_field(key).set(config, value);
}

void set_assignment(RunConfig& config, const std::string& assignment) {
  const size_t equals = assignment.find('=');
  QT_CHECK(equals != std::string::npos && equals > 0,
           "config: --set '{}' is not of the form key=value", assignment);
  set_value(config, assignment.substr(0, equals), assignment.substr(equals + 1));
}

void apply_json(RunConfig& config, const nlohmann::json& object) {
  QT_CHECK(object.is_object(), "config: expected a JSON object, got {}", object.type_name());
  std::vector<std::pair<std::string, json>> entries;
  flatten(object, "", entries);
  for (const auto& [key, value] : entries) {
    const Field& field = find_field(key);
    // Integers written as 3.0 in a file are accepted for integer fields. Only below 2^53 in
    // magnitude, where every such double is an exact integer, and so far inside int64's range that
    // the cast is defined; 1e30 stays a number and the field's check rejects it as written.
    const double x = value.is_number_float() ? value.get<double>() : 0.0;
    if (field.get(config).is_number_integer() && value.is_number_float() && std::floor(x) == x &&
        std::fabs(x) <= 9007199254740992.0) {
      field.set(config, json(static_cast<int64_t>(value.get<double>())));
    } else {
      field.set(config, value);
    }
  }
}

RunConfig load_config_file(const std::string& path, const RunConfig& base) {
  std::ifstream in(path);
  QT_CHECK(in.good(), "config: cannot open '{}'", path);
  std::stringstream text;
  text << in.rdbuf();
  json object = parse_json(text.str(), fmt::format("config: '{}'", path));
  QT_CHECK(object.is_object(), "config: '{}' must hold a JSON object", path);
  RunConfig config = base;
  if (object.contains("preset")) {
    QT_CHECK(object["preset"].is_string(), "config: '{}': preset must be a string", path);
    config = preset(object["preset"].get<std::string>());
    object.erase("preset");
  }
  try {
    apply_json(config, object);
  } catch (const Error& e) {
    fail("{} (in '{}')", e.what(), path);
  }
  return config;
}

void validate(const RunConfig& c) {
  const ModelConfig& m = c.model;
  QT_CHECK(m.hidden % m.heads == 0,
           "config: model.hidden = {} is not divisible by model.heads = {}", m.hidden, m.heads);
  if (m.family == Family::vit) {
    QT_CHECK(m.image_size % m.patch_size == 0,
             "config: model.patch_size = {} does not divide model.image_size = {}", m.patch_size,
             m.image_size);
    QT_CHECK(c.data.dataset != "text",
             "config: model.family = vit needs data.dataset = mnist, fashion-mnist or "
             "synthetic, not text");
  } else {
    QT_CHECK(c.data.dataset == "text" || c.data.dataset == "synthetic",
             "config: model.family = {} needs data.dataset = text or synthetic, not {}",
             family_name(m.family), c.data.dataset);
  }
  // Settings the chosen variant ignores are refused rather than silently dropped: a run asked for
  // them and would not get them. (alpha > 0 selects clipped softmax itself; nn/clipped_softmax.h.)
  if (m.alpha > 0)
    QT_CHECK(m.gamma == 0.0 && m.zeta == 1.0,
             "config: model.gamma = {} / model.zeta = {} (--gamma / --zeta) contradict model.alpha "
             "= {} (--alpha), which sets gamma = -alpha / T and zeta = 1; give one or the other",
             m.gamma, m.zeta, m.alpha);
  else if (m.softmax != nn::SoftmaxKind::clipped)
    QT_CHECK(m.gamma == 0.0 && m.zeta == 1.0,
             "config: model.gamma = {} / model.zeta = {} (--gamma / --zeta) have no effect with "
             "model.softmax = {} (--attn {}); use model.softmax = clipped, or leave "
             "gamma at 0 and zeta at 1",
             m.gamma, m.zeta, nn::softmax_kind_name(m.softmax), nn::softmax_kind_name(m.softmax));
  if (m.alpha > 0)
    QT_CHECK(nn::attention_sink_of(m.softmax) == nn::AttentionSink::none,
             "config: model.alpha = {} (--alpha) makes the softmax clipped, which does not go "
             "with model.softmax = {}",
             m.alpha, nn::softmax_kind_name(m.softmax));
  if (m.alpha_per_row)
    QT_CHECK(m.alpha > 0,
             "config: model.alpha_per_row = true needs model.alpha > 0 (gamma = -alpha / T_row), "
             "got model.alpha = {}",
             m.alpha);
  if (m.gate == nn::GateKind::none)
    QT_CHECK(m.gate_pi_init == ModelConfig{}.gate_pi_init && m.gate_mlp_hidden == 0,
             "config: model.gate_pi_init = {} / model.gate_mlp_hidden = {} (--pi-init) have no "
             "effect with model.gate = none (no --gate); choose a gate, or leave them at {} and 0",
             m.gate_pi_init, m.gate_mlp_hidden, ModelConfig{}.gate_pi_init);
  if (m.gate == nn::GateKind::mlp_per_head && m.gate_mlp_hidden == 0)
    QT_CHECK(m.hidden / m.heads >= 4,
             "config: model.gate = mlp with d_head = {} < 4 needs model.gate_mlp_hidden > 0",
             m.hidden / m.heads);
  QT_CHECK(c.train.batch_size % c.train.accumulation == 0,
           "config: train.batch_size = {} is not divisible by train.accumulation = {}",
           c.train.batch_size, c.train.accumulation);
}

nlohmann::json to_json(const RunConfig& config) {
  json out = json::object();
  for (const Field& f : fields()) {
    std::string pointer = "/" + f.key;  // "model.hidden" -> "/model/hidden"
    std::replace(pointer.begin(), pointer.end(), '.', '/');
    out[json::json_pointer(pointer)] = f.get(config);
  }
  return out;
}

RunConfig from_json(const nlohmann::json& json) {
  RunConfig config;
  apply_json(config, json);
  return config;
}

std::vector<std::pair<std::string, std::string>> config_keys() {
  std::vector<std::pair<std::string, std::string>> out;
  RunConfig defaults;
  for (const Field& f : fields())
    out.emplace_back(f.key, fmt::format("{} (default {})", f.help, f.get(defaults).dump()));
  return out;
}

const std::vector<std::string>& keys_changeable_on_resume() {
  static const std::vector<std::string> keys = {
      "train.lr",         "train.schedule",     "train.min_lr_ratio",
      "train.steps",      "train.clip_norm",    "train.log_every",
      "train.eval_every", "train.eval_batches", "train.checkpoint_every",
      "train.run_dir"};
  return keys;
}

bool changeable_on_resume(const std::string& key) {
  const std::vector<std::string>& keys = keys_changeable_on_resume();
  return std::find(keys.begin(), keys.end(), key) != keys.end();
}

}  // namespace qt::models
