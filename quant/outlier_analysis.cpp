// Outlier analysis taps and their summary (definitions in outlier_analysis.h).
//
// Determinism: the per-row metrics come from quant/outlier_metrics (thread-count independent),
// the mechanism statistics from quant/attention_mechanism (likewise); everything else is serial.
#include "quant/outlier_analysis.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <nlohmann/json.hpp>
#include <numeric>

#include "autograd/node.h"
#include "data/tokenizer.h"
#include "models/evaluation.h"
#include "models/model_points.h"
#include "tensor/elementwise.h"
#include "tensor/error.h"
#include "tensor/shape.h"
#include "tensor/view.h"

namespace qt::quant {
namespace {

// x as a dense f64 tensor (any layout, f32 or f64 in).
Tensor dense_f64(const Tensor& x) {
  return ops::contiguous(x.dtype() == DType::f64 ? x : ops::to(x, DType::f64));
}

std::string trim(const std::string& text) {
  const size_t begin = text.find_first_not_of(" \t\n\r\f\v");
  if (begin == std::string::npos) return "";
  const size_t end = text.find_last_not_of(" \t\n\r\f\v");
  return text.substr(begin, end - begin + 1);
}

// The top `limit` entries of (index, count) pairs with count > 0, by count then index.
std::vector<CountedIndex> top_counts(const std::vector<std::pair<int64_t, int64_t>>& counts,
                                     int64_t limit) {
  std::vector<std::pair<int64_t, int64_t>> sorted;
  for (const auto& entry : counts)
    if (entry.second > 0) sorted.push_back(entry);
  std::sort(sorted.begin(), sorted.end(), [](const auto& a, const auto& b) {
    return a.second != b.second ? a.second > b.second : a.first < b.first;
  });
  if (static_cast<int64_t>(sorted.size()) > limit) sorted.resize(static_cast<size_t>(limit));
  std::vector<CountedIndex> out;
  for (const auto& [index, count] : sorted) out.push_back(CountedIndex{index, "", count});
  return out;
}

nlohmann::json name_metrics_json(const NameMetrics& m) {
  return {{"inf_norm", m.inf_norm}, {"kurtosis", m.kurtosis}};
}

NameMetrics name_metrics_from(const nlohmann::json& j) {
  return NameMetrics{j.at("inf_norm").get<double>(), j.at("kurtosis").get<double>()};
}

nlohmann::json counted_json(const std::vector<CountedIndex>& list, bool with_text) {
  nlohmann::json out = nlohmann::json::array();
  for (const CountedIndex& c : list) {
    nlohmann::json entry = {{"index", c.index}, {"count", c.count}};
    if (with_text) entry["text"] = c.text;
    out.push_back(entry);
  }
  return out;
}

std::vector<CountedIndex> counted_from(const nlohmann::json& j) {
  std::vector<CountedIndex> out;
  for (const auto& entry : j)
    out.push_back(CountedIndex{entry.at("index").get<int64_t>(), entry.value("text", ""),
                               entry.at("count").get<int64_t>()});
  return out;
}

// The mechanism's token sets (attention_mechanism.h): text, the delimiters; images, the CLS token
// and, when the background value is known, the background patches.
std::vector<std::string> token_set_names(const models::ModelPoints& table,
                                         const AnalysisOptions& options) {
  if (!table.analysis.image_positions) return {"delimiters"};
  if (options.background_value) return {"cls", "background"};
  return {"cls"};
}

}  // namespace

LayerPoints layer_points(const models::ModelPoints& table, int64_t layer) {
  QT_CHECK(layer >= 0 && layer < table.layers,
           "outlier analysis: layer {} is out of range for a {} model with {} layers", layer,
           table.family, table.layers);
  using models::AnalysisRole;
  const auto name = [&](AnalysisRole role) {
    for (const models::ModelPoint& p : table.points)
      if (p.layer == layer && p.role == role) return p.name;
    return std::string();  // the model has no such point (e.g. no gate)
  };
  LayerPoints p;
  p.ffn_output = name(AnalysisRole::ffn_output);
  p.residual_sum = name(AnalysisRole::residual_sum);
  p.block_output = name(AnalysisRole::block_output);
  p.attention_output = name(AnalysisRole::attention_output);
  p.attention_layer_norm = name(AnalysisRole::attention_layer_norm);
  p.ffn_layer_norm = name(AnalysisRole::ffn_layer_norm);
  p.probabilities = name(AnalysisRole::probabilities);
  p.gate = name(AnalysisRole::gate);
  p.value = name(AnalysisRole::value);
  return p;
}

std::vector<int64_t> delimiter_token_ids(const models::ModelPoints& table,
                                         const std::vector<std::string>& token_strings) {
  const models::AnalysisDescription& a = table.analysis;
  if (a.image_positions) return {};
  std::vector<int64_t> ids = a.delimiter_special_ids;
  const auto is_delimiter_text = [&](const std::string& text) {
    return std::find(a.delimiter_texts.begin(), a.delimiter_texts.end(), text) !=
           a.delimiter_texts.end();
  };
  for (size_t id = data::kNumSpecialTokens; id < token_strings.size(); ++id)
    if (is_delimiter_text(trim(token_strings[id]))) ids.push_back(static_cast<int64_t>(id));
  if (token_strings.empty()) {
    // No vocabulary known: the byte tokens of one-character texts (their ids are fixed,
    // tokenizer.h).
    for (const std::string& text : a.delimiter_texts)
      if (text.size() == 1) ids.push_back(data::kFirstByteId + static_cast<unsigned char>(text[0]));
  }
  return ids;
}

OutlierAnalysis::OutlierAnalysis(models::ModelPoints table, AnalysisOptions options)
    : table_(std::move(table)),
      options_(std::move(options)),
      mechanism_(std::max<int64_t>(table_.layers, 1), std::max<int64_t>(table_.heads, 1),
                 token_set_names(table_, options_),
                 std::max<int64_t>(options_.mechanism_top_heads, 1)) {
  const AnalysisOptions& o = options_;
  const int64_t layers = table_.layers, heads = table_.heads;
  QT_CHECK(layers >= 1 && heads >= 1,
           "outlier analysis: needs layers >= 1 and heads >= 1, got {} and {}", layers, heads);
  QT_CHECK(o.histogram_bins >= 1, "outlier analysis: histogram_bins must be >= 1, got {}",
           o.histogram_bins);
  QT_CHECK(o.outlier_sigmas > 0, "outlier analysis: outlier_sigmas must be > 0, got {}",
           o.outlier_sigmas);
  QT_CHECK(o.top_count >= 1, "outlier analysis: top_count must be >= 1, got {}", o.top_count);
  QT_CHECK(o.mechanism_top_heads >= 1, "outlier analysis: mechanism_top_heads must be >= 1, got {}",
           o.mechanism_top_heads);
  QT_CHECK(!o.background_value || table_.analysis.image_positions,
           "outlier analysis: a background value is for images, but the {} model reads tokens",
           table_.family);
  if (options_.attention_layer < 0) options_.attention_layer = layers - 1;
  QT_CHECK(o.attention_layer < layers,
           "outlier analysis: attention layer {} is out of range for a model with {} layers",
           o.attention_layer, layers);
  QT_CHECK(o.attention_head >= 0 && o.attention_head < heads,
           "outlier analysis: attention head {} is out of range for {} heads", o.attention_head,
           heads);
  if (options_.kurtosis_batches == 0) options_.kurtosis_batches = table_.analysis.kurtosis_batches;
  if (options_.histogram_point.empty())
    options_.histogram_point = layer_points(table_, layers - 1).ffn_output;
  // The roles of the model's analysis points; the 6-sigma outliers are counted at every layer's
  // FFN output and block output.
  using models::AnalysisRole;
  for (int64_t l = 0; l < layers; ++l) {
    for (const AnalysisRole outlier_role : {AnalysisRole::ffn_output, AnalysisRole::block_output}) {
      const std::string& name = models::point_with_role(table_, l, outlier_role).name;
      PointRole& role = roles_[name];
      role.outliers = true;
      role.outlier_slot = static_cast<int64_t>(outliers_.size());
      outliers_.push_back(OutlierCounts{name, l, 0, 0, {}, {}, {}});
    }
  }
  for (const models::ModelPoint& p : table_.points) {
    if (p.kind != models::PointKind::activation) continue;
    if (!p.metrics && p.role != AnalysisRole::probabilities && p.role != AnalysisRole::gate &&
        p.role != AnalysisRole::value)
      continue;
    PointRole& role = roles_[p.name];
    role.layer = p.layer;
    role.metrics = p.metrics;
    role.rows_per_token = p.rows_per_token;
    role.probabilities = p.role == AnalysisRole::probabilities;
    role.gate = p.role == AnalysisRole::gate;
    role.value = p.role == AnalysisRole::value;
  }
  probabilities_seen_.assign(static_cast<size_t>(layers), 0);
  sink_sums_.assign(static_cast<size_t>(layers), std::vector<double>(table_.heads, 0.0));
  sink_rows_.assign(static_cast<size_t>(layers), 0);
  values_seen_.assign(static_cast<size_t>(layers), 0);
  gates_.resize(static_cast<size_t>(layers));
  first_block_output_ = models::point_with_role(table_, 0, AnalysisRole::block_output).name;
  int64_t largest_id = 0;
  for (int64_t id : o.delimiter_ids) {
    QT_CHECK(id >= 0, "outlier analysis: negative delimiter token id {}", id);
    largest_id = std::max(largest_id, id);
  }
  is_delimiter_id_.assign(static_cast<size_t>(largest_id + 1), 0);
  for (int64_t id : o.delimiter_ids) is_delimiter_id_[static_cast<size_t>(id)] = 1;
}

std::string OutlierAnalysis::token_text(int64_t id) const {
  if (table_.analysis.image_positions)
    return id == 0 ? std::string("[CLS]") : fmt::format("patch {}", id - 1);
  if (id >= 0 && id < static_cast<int64_t>(options_.token_strings.size()))
    return options_.token_strings[static_cast<size_t>(id)];
  return fmt::format("#{}", id);
}

void OutlierAnalysis::begin_batch(const Tensor& input_ids, const Tensor& images) {
  masks_ready_ = false;
  if (table_.analysis.image_positions) {
    QT_CHECK(!input_ids.defined(), "outlier analysis: images take no input_ids, got {}",
             shape_str(input_ids.shape()));
    input_ids_ = Tensor();
    QT_CHECK(!options_.background_value || images.defined(),
             "outlier analysis: the background patches need the batch's images in begin_batch");
    images_ = Tensor();
    if (images.defined()) {
      QT_CHECK(images.dim() == 3 && images.dtype() == DType::f32,
               "outlier analysis: images must be patches f32 [B, N, P], got {} {}",
               dtype_name(images.dtype()), shape_str(images.shape()));
      images_ = ops::contiguous(images);
      image_masks(images_.size(0), images_.size(1) + 1);
    }
  } else {
    QT_CHECK(!images.defined(), "outlier analysis: the {} model takes no images", table_.family);
    QT_CHECK(input_ids.defined() && input_ids.dtype() == DType::i64 && input_ids.dim() == 2,
             "outlier analysis: text batches need input_ids i64 [B, T], got {}",
             input_ids.defined()
                 ? std::string(dtype_name(input_ids.dtype())) + " " + shape_str(input_ids.shape())
                 : std::string("none"));
    input_ids_ = ops::contiguous(input_ids);
    const int64_t* ids = input_ids_.data<int64_t>();
    std::vector<uint8_t> delimiters(static_cast<size_t>(input_ids_.numel()), 0);
    for (int64_t i = 0; i < input_ids_.numel(); ++i)
      delimiters[static_cast<size_t>(i)] =
          ids[i] >= 0 && ids[i] < static_cast<int64_t>(is_delimiter_id_.size())
              ? is_delimiter_id_[static_cast<size_t>(ids[i])]
              : 0;
    mechanism_.begin_batch(input_ids_.size(0), input_ids_.size(1), {std::move(delimiters)});
    masks_ready_ = true;
  }
  ++batches_;
}

void OutlierAnalysis::image_masks(int64_t batch, int64_t length) {
  if (masks_ready_) return;
  // cls: position 0. background: position t >= 1 when every value of patch t - 1 is exactly the
  // normalised background pixel (normalisation is strictly increasing, so "equal after" is "u8 0
  // before").
  std::vector<std::vector<uint8_t>> masks(
      mechanism_.sets(), std::vector<uint8_t>(static_cast<size_t>(batch * length)));
  for (int64_t b = 0; b < batch; ++b) masks[0][static_cast<size_t>(b * length)] = 1;
  if (options_.background_value) {
    QT_CHECK(images_.size(0) == batch && images_.size(1) + 1 == length,
             "outlier analysis: the images {} do not match activations of {} x {} positions",
             shape_str(images_.shape()), batch, length);
    const int64_t N = images_.size(1), P = images_.size(2);
    const float* pixels = images_.data<float>();
    const float background = *options_.background_value;
    for (int64_t b = 0; b < batch; ++b)
      for (int64_t n = 0; n < N; ++n) {
        const float* patch = pixels + (b * N + n) * P;
        masks[1][static_cast<size_t>(b * length + n + 1)] =
            std::all_of(patch, patch + P, [&](float v) { return v == background; });
      }
  }
  mechanism_.begin_batch(batch, length, std::move(masks));
  masks_ready_ = true;
}

Tensor OutlierAnalysis::at(const std::string& point, const Tensor& x) {
  QT_CHECK(batches_ > 0, "outlier analysis: call begin_batch before the forward pass ({})", point);
  if (point == options_.histogram_point) {
    const Tensor values = ops::contiguous(ops::to(x, DType::f32));
    const float* v = values.data<float>();
    histogram_values_.insert(histogram_values_.end(), v, v + values.numel());
  }
  const auto found = roles_.find(point);
  if (found == roles_.end()) return x;
  const PointRole& role = found->second;
  if (role.metrics) {
    if (point == first_block_output_) sequences_ += x.size(0);
    const bool with_kurtosis =
        options_.kurtosis_batches < 0 || batches_ - 1 < options_.kurtosis_batches;
    const Tensor rows = role.rows_per_token && x.dim() == 3
                            ? ops::reshape(ops::contiguous(x), {x.size(0) * x.size(1), x.size(2)})
                            : x;
    metrics_.add(point, rows, with_kurtosis);
  }
  const bool needs_masks = role.outliers || role.probabilities || role.gate || role.value;
  if (needs_masks && x.dim() >= 3) {
    const int64_t batch = x.size(0),
                  length = x.size(x.dim() == 4 ? 2 : 1);  // [B, H, T, T], [B, T, .]
    if (table_.analysis.image_positions)
      image_masks(batch, length);
    else
      QT_CHECK(input_ids_.size(0) == batch && input_ids_.size(1) == length,
               "outlier analysis: {} is {} but the batch's input_ids are {}", point,
               shape_str(x.shape()), shape_str(input_ids_.shape()));
  }
  if (role.outliers) observe_outliers(outliers_[static_cast<size_t>(role.outlier_slot)], x);
  if (role.probabilities) observe_probabilities(role.layer, x);
  if (role.gate) observe_gate(role.layer, x);
  if (role.value) {
    mechanism_.observe_value(role.layer, x);
    ++values_seen_[static_cast<size_t>(role.layer)];
  }
  return x;
}

void OutlierAnalysis::observe_outliers(OutlierCounts& counts, const Tensor& x) {
  QT_CHECK(x.dim() == 3, "outlier analysis: {} must be [B, T, d], got {}", counts.point,
           shape_str(x.shape()));
  if (!table_.analysis.image_positions)
    QT_CHECK(input_ids_.size(0) == x.size(0) && input_ids_.size(1) == x.size(1),
             "outlier analysis: {} is {} but the batch's input_ids are {}", counts.point,
             shape_str(x.shape()), shape_str(input_ids_.shape()));
  mechanism_.check_batch(counts.point, counts.layer, x, x.size(0), x.size(1));
  const OutlierReport report = find_outliers(x, options_.outlier_sigmas);
  if (counts.per_hidden.empty()) counts.per_hidden.assign(static_cast<size_t>(x.size(2)), 0);
  QT_CHECK(static_cast<int64_t>(counts.per_hidden.size()) == x.size(2),
           "outlier analysis: {} changed width to {}", counts.point, shape_str(x.shape()));
  counts.count += static_cast<int64_t>(report.outliers.size());
  counts.elements += x.numel();
  for (size_t k = 0; k < report.count_per_hidden.size(); ++k)
    counts.per_hidden[k] += report.count_per_hidden[k];
  if (counts.on_sets.empty()) counts.on_sets.assign(mechanism_.sets(), 0);
  std::vector<int64_t> on(mechanism_.sets(), 0);
  for (const OutlierPosition& o : report.outliers) {
    int64_t key = o.token;  // images: the position (0 = CLS)
    if (!table_.analysis.image_positions)
      key = input_ids_.data<int64_t>()[o.batch * input_ids_.size(1) + o.token];
    ++counts.per_token[key];
    for (size_t s = 0; s < on.size(); ++s) on[s] += mechanism_.in_set(s, o.batch, o.token);
  }
  for (size_t s = 0; s < on.size(); ++s) counts.on_sets[s] += on[s];
  mechanism_.add_outliers(on, static_cast<int64_t>(report.outliers.size()));
}

void OutlierAnalysis::observe_probabilities(int64_t layer, const Tensor& x) {
  const int64_t H = table_.heads;
  QT_CHECK(x.dim() == 4 && x.size(1) == H && x.size(2) == x.size(3),
           "outlier analysis: attention probabilities of layer {} must be [B, {}, T, T], got {}",
           layer, H, shape_str(x.shape()));
  const int64_t B = x.size(0), T = x.size(2);
  if (!table_.analysis.image_positions)
    QT_CHECK(input_ids_.size(0) == B && input_ids_.size(1) == T,
             "outlier analysis: attention probabilities {} do not match input_ids {}",
             shape_str(x.shape()), shape_str(input_ids_.shape()));
  // The attention mass on each token set (the delimiters first).
  mechanism_.observe_probabilities(layer, x);
  ++probabilities_seen_[static_cast<size_t>(layer)];
  {  // the sink's share of every query row: 1 - sum_j p_ij
    const Tensor p = dense_f64(x);
    const double* values = p.data<double>();
    std::vector<double>& sums = sink_sums_[static_cast<size_t>(layer)];
    for (int64_t b = 0; b < B; ++b)
      for (int64_t h = 0; h < H; ++h)
        for (int64_t i = 0; i < T; ++i) {
          const double* row = values + ((b * H + h) * T + i) * T;
          double total = 0;
          for (int64_t j = 0; j < T; ++j) total += row[j];
          sums[static_cast<size_t>(h)] += 1.0 - total;
        }
    sink_rows_[static_cast<size_t>(layer)] += B * T;
  }
  if (layer == options_.attention_layer && attention_.probabilities.empty()) {
    const Tensor p = dense_f64(x);
    const double* values = p.data<double>();
    attention_.layer = layer;
    attention_.head = options_.attention_head;
    attention_.length = T;
    const double* matrix = values + options_.attention_head * T * T;  // sequence 0
    attention_.probabilities.assign(matrix, matrix + T * T);
    attention_.tokens.clear();
    for (int64_t t = 0; t < T; ++t)
      attention_.tokens.push_back(
          token_text(table_.analysis.image_positions ? t : input_ids_.data<int64_t>()[t]));
  }
}

void OutlierAnalysis::observe_gate(int64_t layer, const Tensor& x) {
  const int64_t H = table_.heads;
  QT_CHECK(x.dim() == 3 && x.size(2) == H,
           "outlier analysis: gate probabilities of layer {} must be [B, T, {}], got {}", layer, H,
           shape_str(x.shape()));
  mechanism_.observe_gate(layer, x);
  const Tensor pi = dense_f64(x);
  const double* values = pi.data<double>();
  GateSums& g = gates_[static_cast<size_t>(layer)];
  if (g.sum.empty()) {
    g.sum.assign(static_cast<size_t>(H), 0.0);
    g.min.assign(static_cast<size_t>(H), std::numeric_limits<double>::infinity());
    g.max.assign(static_cast<size_t>(H), -std::numeric_limits<double>::infinity());
  }
  const int64_t rows = x.size(0) * x.size(1);
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t h = 0; h < H; ++h) {
      const double v = values[r * H + h];
      g.sum[static_cast<size_t>(h)] += v;
      g.min[static_cast<size_t>(h)] = std::min(g.min[static_cast<size_t>(h)], v);
      g.max[static_cast<size_t>(h)] = std::max(g.max[static_cast<size_t>(h)], v);
    }
  g.count += rows;
}

AnalysisResult OutlierAnalysis::result() const {
  const AnalysisOptions& o = options_;
  QT_CHECK(batches_ > 0, "outlier analysis: no batch was analysed");
  AnalysisResult r;
  r.family = table_.family;
  r.layers = table_.layers;
  r.heads = table_.heads;
  r.batches = batches_;
  r.sequences = sequences_;
  for (const auto& [name, sums] : metrics_.per_name)
    r.names[name] = NameMetrics{metrics_.average_inf_norm(name), metrics_.average_kurtosis(name)};
  for (const auto& [name, role] : roles_)
    QT_CHECK(!role.metrics || r.names.count(name) != 0,
             "outlier analysis: the tap point {} never fired (is the model a {} with {} layers?)",
             name, table_.family, table_.layers);
  for (int64_t l = 0; l < table_.layers; ++l) {
    const LayerPoints p = layer_points(table_, l);
    r.layer_metrics.push_back(LayerMetrics{r.names.at(p.ffn_output), r.names.at(p.residual_sum),
                                           r.names.at(p.block_output)});
  }
  const models::HeadlineDefinition& definition = table_.analysis.headline;
  Headline& h = r.headline;
  for (const models::NormSet& set : definition.extra_max_inf_norms)
    h.extra[set.key] = metrics_.max_inf_norm(set.points);
  h.max_inf_norm = metrics_.max_inf_norm(definition.max_inf_norm_points);
  h.max_inf_norm_definition = definition.max_inf_norm_definition;
  h.avg_kurtosis = metrics_.mean_kurtosis(definition.kurtosis_points);
  h.avg_kurtosis_definition = definition.kurtosis_definition;
  for (const OutlierCounts& c : outliers_) {
    PointOutliers p;
    p.point = c.point;
    p.layer = c.layer;
    p.count = c.count;
    p.elements = c.elements;
    std::vector<std::pair<int64_t, int64_t>> dims, tokens;
    for (size_t k = 0; k < c.per_hidden.size(); ++k)
      dims.emplace_back(static_cast<int64_t>(k), c.per_hidden[k]);
    for (const auto& entry : c.per_token) tokens.push_back(entry);
    p.hidden_dims = top_counts(dims, o.top_count);
    p.tokens = top_counts(tokens, o.top_count);
    for (CountedIndex& t : p.tokens) t.text = token_text(t.index);
    p.on_token_sets = c.on_sets.empty() ? std::vector<int64_t>(mechanism_.sets(), 0) : c.on_sets;
    r.outliers.push_back(std::move(p));
  }
  if (table_.analysis.image_positions) {
    r.delimiter_names = {"[CLS]"};
  } else {
    r.delimiter_ids = o.delimiter_ids;
    for (int64_t id : o.delimiter_ids) r.delimiter_names.push_back(token_text(id));
  }
  for (int64_t l = 0; l < table_.layers; ++l) {
    const LayerPoints points = layer_points(table_, l);
    QT_CHECK(probabilities_seen_[static_cast<size_t>(l)] > 0,
             "outlier analysis: layer {} produced no attention probabilities (the tap point {} "
             "never fired)",
             l, points.probabilities);
    QT_CHECK(values_seen_[static_cast<size_t>(l)] > 0,
             "outlier analysis: layer {} produced no value projection (the tap point {} never "
             "fired)",
             l, points.value);
  }
  r.mechanism = mechanism_.result();
  r.delimiter_attention = r.mechanism.token_sets.at(0).mass;
  for (int64_t l = 0; l < table_.layers; ++l) {
    std::vector<double> heads = sink_sums_[static_cast<size_t>(l)];
    for (double& share : heads) share /= static_cast<double>(sink_rows_[static_cast<size_t>(l)]);
    r.sink_attention.push_back(std::move(heads));
  }
  const bool gated =
      std::any_of(gates_.begin(), gates_.end(), [](const GateSums& g) { return g.count > 0; });
  if (gated) {
    for (int64_t l = 0; l < table_.layers; ++l) {
      const GateSums& g = gates_[static_cast<size_t>(l)];
      QT_CHECK(g.count > 0, "outlier analysis: layer {} has no gate probabilities", l);
      std::vector<GateStatistics> heads;
      for (int64_t hd = 0; hd < table_.heads; ++hd)
        heads.push_back(
            GateStatistics{g.sum[static_cast<size_t>(hd)] / static_cast<double>(g.count),
                           g.min[static_cast<size_t>(hd)], g.max[static_cast<size_t>(hd)]});
      r.gates.push_back(std::move(heads));
    }
  }
  QT_CHECK(!histogram_values_.empty(),
           "outlier analysis: the histogram point {} never fired (point names: "
           "nn/activation_tap.h)",
           o.histogram_point);
  Histogram& hist = r.histogram;
  hist.point = o.histogram_point;
  const auto [lowest, highest] =
      std::minmax_element(histogram_values_.begin(), histogram_values_.end());
  hist.low = *lowest;
  hist.high = *highest > *lowest ? static_cast<double>(*highest) : hist.low + 1.0;
  hist.counts.assign(static_cast<size_t>(o.histogram_bins), 0);
  hist.values = static_cast<int64_t>(histogram_values_.size());
  const double width = (hist.high - hist.low) / static_cast<double>(o.histogram_bins);
  for (float v : histogram_values_) {
    const int64_t bin = std::min(o.histogram_bins - 1,
                                 static_cast<int64_t>((static_cast<double>(v) - hist.low) / width));
    ++hist.counts[static_cast<size_t>(bin)];
  }
  r.attention = attention_;
  return r;
}

nlohmann::json to_json(const AnalysisResult& r) {
  nlohmann::json j;
  j["format"] = "qtlab.analysis";
  j["version"] = kAnalysisVersion;
  j["family"] = r.family;
  j["layers"] = r.layers;
  j["heads"] = r.heads;
  j["batches"] = r.batches;
  j["sequences"] = r.sequences;
  j["headline"] = {{"max_inf_norm", r.headline.max_inf_norm},
                   {"max_inf_norm_definition", r.headline.max_inf_norm_definition},
                   {"avg_kurtosis", r.headline.avg_kurtosis},
                   {"avg_kurtosis_definition", r.headline.avg_kurtosis_definition},
                   {"extra", r.headline.extra}};
  nlohmann::json layers = nlohmann::json::array();
  for (size_t l = 0; l < r.layer_metrics.size(); ++l) {
    const LayerMetrics& m = r.layer_metrics[l];
    layers.push_back({{"layer", l},
                      {"ffn_output", name_metrics_json(m.ffn_output)},
                      {"residual_sum", name_metrics_json(m.residual_sum)},
                      {"block_output", name_metrics_json(m.block_output)}});
  }
  j["layer_metrics"] = layers;
  nlohmann::json names = nlohmann::json::object();
  for (const auto& [name, m] : r.names) names[name] = name_metrics_json(m);
  j["names"] = names;
  nlohmann::json outliers = nlohmann::json::array();
  for (const PointOutliers& p : r.outliers) {
    nlohmann::json on_sets = nlohmann::json::object();
    for (size_t s = 0; s < p.on_token_sets.size() && s < r.mechanism.token_sets.size(); ++s)
      on_sets[r.mechanism.token_sets[s].name] = p.on_token_sets[s];
    outliers.push_back({{"point", p.point},
                        {"layer", p.layer},
                        {"count", p.count},
                        {"elements", p.elements},
                        {"hidden_dims", counted_json(p.hidden_dims, false)},
                        {"tokens", counted_json(p.tokens, true)},
                        {"on_token_sets", on_sets}});
  }
  j["outliers"] = outliers;
  j["delimiter_ids"] = r.delimiter_ids;
  j["delimiter_names"] = r.delimiter_names;
  j["delimiter_attention"] = r.delimiter_attention;
  j["sink_attention"] = r.sink_attention;
  nlohmann::json gates = nlohmann::json::array();
  for (const auto& layer : r.gates) {
    nlohmann::json heads = nlohmann::json::array();
    for (const GateStatistics& g : layer)
      heads.push_back({{"mean", g.mean}, {"min", g.min}, {"max", g.max}});
    gates.push_back(heads);
  }
  j["gates"] = gates;
  j["mechanism"] = to_json(r.mechanism);
  j["histogram"] = {{"point", r.histogram.point},
                    {"low", r.histogram.low},
                    {"high", r.histogram.high},
                    {"values", r.histogram.values},
                    {"counts", r.histogram.counts}};
  nlohmann::json rows = nlohmann::json::array();
  const AttentionMatrix& a = r.attention;
  for (int64_t i = 0; i < a.length; ++i)
    rows.push_back(std::vector<double>(a.probabilities.begin() + i * a.length,
                                       a.probabilities.begin() + (i + 1) * a.length));
  j["attention_matrix"] = {{"layer", a.layer},
                           {"head", a.head},
                           {"length", a.length},
                           {"tokens", a.tokens},
                           {"probabilities", rows}};
  return j;
}

AnalysisResult analysis_from_json(const nlohmann::json& j) {
  try {
    QT_CHECK(j.value("format", "") == "qtlab.analysis",
             "analysis_from_json: not a qtlab analysis (format '{}')", j.value("format", ""));
    const int version = j.value("version", 1);
    QT_CHECK(version >= 1 && version <= kAnalysisVersion,
             "analysis_from_json: version {} is not known (this build reads 1 to {})", version,
             kAnalysisVersion);
    AnalysisResult r;
    if (version >= 2) r.mechanism = mechanism_from_json(j.at("mechanism"));
    r.family = j.at("family").get<std::string>();
    r.layers = j.at("layers").get<int64_t>();
    r.heads = j.at("heads").get<int64_t>();
    r.batches = j.at("batches").get<int64_t>();
    r.sequences = j.at("sequences").get<int64_t>();
    const auto& h = j.at("headline");
    r.headline.max_inf_norm = h.at("max_inf_norm").get<double>();
    r.headline.max_inf_norm_definition = h.at("max_inf_norm_definition").get<std::string>();
    r.headline.avg_kurtosis = h.at("avg_kurtosis").get<double>();
    r.headline.avg_kurtosis_definition = h.at("avg_kurtosis_definition").get<std::string>();
    r.headline.extra = h.at("extra").get<std::map<std::string, double>>();
    for (const auto& l : j.at("layer_metrics"))
      r.layer_metrics.push_back(LayerMetrics{name_metrics_from(l.at("ffn_output")),
                                             name_metrics_from(l.at("residual_sum")),
                                             name_metrics_from(l.at("block_output"))});
    for (const auto& [name, m] : j.at("names").items()) r.names[name] = name_metrics_from(m);
    for (const auto& p : j.at("outliers")) {
      std::vector<int64_t> on_sets;
      if (version >= 2)
        for (const TokenSetMechanism& set : r.mechanism.token_sets)
          on_sets.push_back(p.at("on_token_sets").at(set.name).get<int64_t>());
      r.outliers.push_back(
          PointOutliers{p.at("point").get<std::string>(), p.at("layer").get<int64_t>(),
                        p.at("count").get<int64_t>(), p.at("elements").get<int64_t>(),
                        counted_from(p.at("hidden_dims")), counted_from(p.at("tokens")), on_sets});
    }
    r.delimiter_ids = j.at("delimiter_ids").get<std::vector<int64_t>>();
    r.delimiter_names = j.at("delimiter_names").get<std::vector<std::string>>();
    r.delimiter_attention = j.at("delimiter_attention").get<std::vector<std::vector<double>>>();
    if (j.contains("sink_attention"))
      r.sink_attention = j.at("sink_attention").get<std::vector<std::vector<double>>>();
    for (const auto& layer : j.at("gates")) {
      std::vector<GateStatistics> heads;
      for (const auto& g : layer)
        heads.push_back(GateStatistics{g.at("mean").get<double>(), g.at("min").get<double>(),
                                       g.at("max").get<double>()});
      r.gates.push_back(std::move(heads));
    }
    const auto& hist = j.at("histogram");
    r.histogram.point = hist.at("point").get<std::string>();
    r.histogram.low = hist.at("low").get<double>();
    r.histogram.high = hist.at("high").get<double>();
    r.histogram.values = hist.at("values").get<int64_t>();
    r.histogram.counts = hist.at("counts").get<std::vector<int64_t>>();
    const auto& a = j.at("attention_matrix");
    r.attention.layer = a.at("layer").get<int64_t>();
    r.attention.head = a.at("head").get<int64_t>();
    r.attention.length = a.at("length").get<int64_t>();
    r.attention.tokens = a.at("tokens").get<std::vector<std::string>>();
    for (const auto& row : a.at("probabilities")) {
      const auto values = row.get<std::vector<double>>();
      QT_CHECK(static_cast<int64_t>(values.size()) == r.attention.length,
               "analysis_from_json: attention matrix row of {} values, expected {}", values.size(),
               r.attention.length);
      r.attention.probabilities.insert(r.attention.probabilities.end(), values.begin(),
                                       values.end());
    }
    return r;
  } catch (const nlohmann::json::exception& e) {
    fail("analysis_from_json: malformed analysis JSON: {}", e.what());
  }
}

AnalysisResult analyze_model(models::Model& model, const models::RunData& data,
                             AnalysisOptions options, int64_t batch_size, int64_t batches) {
  QT_CHECK(batch_size > 0, "analyze_model: batch size must be > 0, got {}", batch_size);
  QT_CHECK(data.validation_samples > 0, "analyze_model: the validation split is empty");
  const models::ModelPoints table = model.points();
  const bool images = table.analysis.image_positions;
  if (images && !options.background_value) options.background_value = data.image_background;
  OutlierAnalysis analysis(table, std::move(options));
  const bool was_training = model.is_training();
  model.eval();
  NoGradGuard no_grad;
  const int64_t total = (data.validation_samples + batch_size - 1) / batch_size;
  const int64_t count = batches > 0 ? std::min(batches, total) : total;
  std::vector<int64_t> indices;
  for (int64_t b = 0; b < count; ++b) {
    const int64_t begin = b * batch_size;
    const int64_t end = std::min(begin + batch_size, data.validation_samples);
    indices.resize(static_cast<size_t>(end - begin));
    std::iota(indices.begin(), indices.end(), begin);
    const models::Batch batch = models::to_model_batch(data.validation_batch(indices, 0));
    analysis.begin_batch(images ? Tensor() : batch.input_ids, images ? batch.images : Tensor());
    nn::TapScope scope(&analysis);
    // The loss runs the whole model (BERT's head only on masked rows); with no label in the
    // batch, the logits do.
    if (models::Model::count_labels(batch.labels) > 0)
      (void)model.loss(batch);
    else
      (void)model.logits(batch);
  }
  model.train(was_training);
  return analysis.result();
}

}  // namespace qt::quant
