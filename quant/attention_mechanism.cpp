// The no-op mechanism statistics per layer, head and token set (definitions in
// attention_mechanism.h).
//
// Determinism: the attention-mass loop computes one partial sum per (sequence, head, set) in
// parallel and adds them serially in that order; the value-norm and gate loops are serial.
#include "quant/attention_mechanism.h"

#include <algorithm>
#include <cmath>
#include <nlohmann/json.hpp>

#include "tensor/elementwise.h"
#include "tensor/error.h"
#include "tensor/parallel_policy.h"
#include "tensor/shape.h"
#include "tensor/view.h"

namespace qt::quant {
namespace {

Tensor dense_f64(const Tensor& x) {
  return ops::contiguous(x.dtype() == DType::f64 ? x : ops::to(x, DType::f64));
}

using Grid = std::vector<std::vector<double>>;

nlohmann::json optional_json(const std::optional<double>& value) {
  return value ? nlohmann::json(*value) : nlohmann::json();
}

std::optional<double> optional_from(const nlohmann::json& j, const char* key) {
  if (!j.contains(key) || j.at(key).is_null()) return std::nullopt;
  return j.at(key).get<double>();
}

}  // namespace

std::optional<double> pearson_correlation(const std::vector<double>& x,
                                          const std::vector<double>& y) {
  QT_CHECK(x.size() == y.size(), "pearson_correlation: series of {} and {} values", x.size(),
           y.size());
  if (x.size() < 3) return std::nullopt;
  const double n = static_cast<double>(x.size());
  double mx = 0, my = 0;
  for (size_t i = 0; i < x.size(); ++i) {
    mx += x[i];
    my += y[i];
  }
  mx /= n;
  my /= n;
  double sxx = 0, syy = 0, sxy = 0;
  for (size_t i = 0; i < x.size(); ++i) {
    sxx += (x[i] - mx) * (x[i] - mx);
    syy += (y[i] - my) * (y[i] - my);
    sxy += (x[i] - mx) * (y[i] - my);
  }
  if (!(sxx > 0) || !(syy > 0)) return std::nullopt;
  return sxy / std::sqrt(sxx * syy);
}

AttentionMechanism::AttentionMechanism(int64_t layers, int64_t heads,
                                       std::vector<std::string> set_names, int64_t top_heads)
    : layers_(layers), heads_(heads), top_heads_(top_heads), set_names_(std::move(set_names)) {
  QT_CHECK(layers >= 1 && heads >= 1,
           "attention mechanism: needs layers >= 1 and heads >= 1, got {} and {}", layers, heads);
  QT_CHECK(top_heads >= 1, "attention mechanism: top_heads must be >= 1, got {}", top_heads);
  const size_t S = set_names_.size();
  Sums empty;
  empty.in.assign(static_cast<size_t>(heads), 0.0);
  empty.out.assign(static_cast<size_t>(heads), 0.0);
  for (auto* grid : {&mass_, &value_, &gate_})
    grid->assign(static_cast<size_t>(layers), std::vector<Sums>(S, empty));
  tokens_in_.assign(S, 0);
  outliers_on_.assign(S, 0);
}

void AttentionMechanism::begin_batch(int64_t batch, int64_t length,
                                     std::vector<std::vector<uint8_t>> masks) {
  QT_CHECK(batch >= 1 && length >= 1, "attention mechanism: empty batch [{}, {}]", batch, length);
  QT_CHECK(masks.size() == set_names_.size(), "attention mechanism: {} token-set masks for {} sets",
           masks.size(), set_names_.size());
  for (size_t s = 0; s < masks.size(); ++s) {
    QT_CHECK(static_cast<int64_t>(masks[s].size()) == batch * length,
             "attention mechanism: the mask of '{}' holds {} entries, not {} x {}", set_names_[s],
             masks[s].size(), batch, length);
    for (const uint8_t m : masks[s]) tokens_in_[s] += m != 0;
  }
  batch_ = batch;
  length_ = length;
  masks_ = std::move(masks);
  tokens_ += batch * length;
}

bool AttentionMechanism::in_set(size_t set, int64_t batch, int64_t token) const {
  return masks_[set][static_cast<size_t>(batch * length_ + token)] != 0;
}

void AttentionMechanism::check_batch(const std::string& what, int64_t layer, const Tensor& x,
                                     int64_t batch, int64_t length) const {
  QT_CHECK(batch_ > 0, "attention mechanism: call begin_batch before the forward pass");
  QT_CHECK(layer >= 0 && layer < layers_, "attention mechanism: layer {} of {}", layer, layers_);
  QT_CHECK(batch == batch_ && length == length_,
           "attention mechanism: {} of layer {} is {}, but the batch's token sets are [{}, {}]",
           what, layer, shape_str(x.shape()), batch_, length_);
}

void AttentionMechanism::observe_probabilities(int64_t layer, const Tensor& x) {
  const int64_t H = heads_;
  QT_CHECK(x.dim() == 4 && x.size(1) == H && x.size(2) == x.size(3),
           "attention mechanism: attention probabilities of layer {} must be [B, {}, T, T], got {}",
           layer, H, shape_str(x.shape()));
  check_batch("the attention probabilities", layer, x, x.size(0), x.size(2));
  const int64_t B = x.size(0), T = x.size(2), S = static_cast<int64_t>(set_names_.size());
  const Tensor p = dense_f64(x);
  const double* values = p.data<double>();
  // The keys of each set in each sequence, so the sum visits only them.
  std::vector<std::vector<int64_t>> keys(static_cast<size_t>(B * S));
  for (int64_t b = 0; b < B; ++b)
    for (int64_t s = 0; s < S; ++s)
      for (int64_t j = 0; j < T; ++j)
        if (in_set(static_cast<size_t>(s), b, j)) keys[static_cast<size_t>(b * S + s)].push_back(j);
  // partial[(b H + h) S + s] = sum_i sum_{j in S_b} P[b, h, i, j]; one serial sum each.
  std::vector<double> partial(static_cast<size_t>(B * H * S), 0.0);
  const int64_t work = B * H * T * T;
#pragma omp parallel for schedule(static) if (qt::worth_parallel(work, qt::WorkCost::standard))
  for (int64_t bh = 0; bh < B * H; ++bh) {
    const int64_t b = bh / H;
    const double* matrix = values + bh * T * T;
    for (int64_t s = 0; s < S; ++s) {
      double sum = 0;
      for (int64_t i = 0; i < T; ++i)
        for (const int64_t j : keys[static_cast<size_t>(b * S + s)]) sum += matrix[i * T + j];
      partial[static_cast<size_t>(bh * S + s)] = sum;
    }
  }
  for (int64_t s = 0; s < S; ++s) {
    Sums& sums = mass_[static_cast<size_t>(layer)][static_cast<size_t>(s)];
    for (int64_t b = 0; b < B; ++b)
      for (int64_t h = 0; h < H; ++h)
        sums.in[static_cast<size_t>(h)] += partial[static_cast<size_t>((b * H + h) * S + s)];
    sums.count_in += B * T;  // queries
  }
}

void AttentionMechanism::observe_value(int64_t layer, const Tensor& x) {
  const int64_t H = heads_;
  QT_CHECK(x.dim() == 3 && x.size(2) % H == 0,
           "attention mechanism: the value projection of layer {} must be [B, T, d] with d "
           "divisible by {} heads, got {}",
           layer, H, shape_str(x.shape()));
  check_batch("the value projection", layer, x, x.size(0), x.size(1));
  const int64_t B = x.size(0), T = x.size(1), d = x.size(2), dh = d / H;
  const Tensor v = dense_f64(x);
  const double* values = v.data<double>();
  std::vector<double> norm(static_cast<size_t>(H));
  for (int64_t b = 0; b < B; ++b)
    for (int64_t t = 0; t < T; ++t) {
      const double* row = values + (b * T + t) * d;
      for (int64_t h = 0; h < H; ++h) {
        double squares = 0;
        for (int64_t c = h * dh; c < (h + 1) * dh; ++c) squares += row[c] * row[c];
        norm[static_cast<size_t>(h)] = std::sqrt(squares);
      }
      for (size_t s = 0; s < set_names_.size(); ++s) {
        Sums& sums = value_[static_cast<size_t>(layer)][s];
        const bool inside = in_set(s, b, t);
        std::vector<double>& target = inside ? sums.in : sums.out;
        for (int64_t h = 0; h < H; ++h)
          target[static_cast<size_t>(h)] += norm[static_cast<size_t>(h)];
        ++(inside ? sums.count_in : sums.count_out);
      }
    }
}

void AttentionMechanism::observe_gate(int64_t layer, const Tensor& x) {
  const int64_t H = heads_;
  QT_CHECK(x.dim() == 3 && x.size(2) == H,
           "attention mechanism: gate probabilities of layer {} must be [B, T, {}], got {}", layer,
           H, shape_str(x.shape()));
  check_batch("the gate", layer, x, x.size(0), x.size(1));
  const int64_t B = x.size(0), T = x.size(1);
  const Tensor pi = dense_f64(x);
  const double* values = pi.data<double>();
  for (int64_t b = 0; b < B; ++b)
    for (int64_t t = 0; t < T; ++t)
      for (size_t s = 0; s < set_names_.size(); ++s) {
        Sums& sums = gate_[static_cast<size_t>(layer)][s];
        const bool inside = in_set(s, b, t);
        std::vector<double>& target = inside ? sums.in : sums.out;
        for (int64_t h = 0; h < H; ++h)
          target[static_cast<size_t>(h)] += values[(b * T + t) * H + h];
        ++(inside ? sums.count_in : sums.count_out);
      }
}

void AttentionMechanism::add_outliers(const std::vector<int64_t>& on, int64_t total) {
  QT_CHECK(on.size() == set_names_.size(),
           "attention mechanism: outlier counts for {} sets, not {}", on.size(), set_names_.size());
  for (size_t s = 0; s < on.size(); ++s) outliers_on_[s] += on[s];
  outliers_ += total;
}

MechanismResult AttentionMechanism::result() const {
  const auto mean = [](double sum, int64_t count) {
    return count > 0 ? sum / static_cast<double>(count) : 0.0;
  };
  const bool gated = std::any_of(gate_.begin(), gate_.end(), [](const std::vector<Sums>& l) {
    return !l.empty() && l[0].count_in + l[0].count_out > 0;
  });
  MechanismResult r;
  for (size_t s = 0; s < set_names_.size(); ++s) {
    TokenSetMechanism m;
    m.name = set_names_[s];
    m.tokens = tokens_in_[s];
    m.all_tokens = tokens_;
    m.outliers_on = outliers_on_[s];
    m.outliers = outliers_;
    std::vector<double> masses, ratios;
    std::vector<MechanismHead> heads;
    for (int64_t l = 0; l < layers_; ++l) {
      const Sums& mass = mass_[static_cast<size_t>(l)][s];
      const Sums& value = value_[static_cast<size_t>(l)][s];
      const Sums& gate = gate_[static_cast<size_t>(l)][s];
      QT_CHECK(mass.count_in > 0,
               "attention mechanism: layer {} produced no attention "
               "probabilities",
               l);
      QT_CHECK(value.count_in + value.count_out > 0,
               "attention mechanism: layer {} produced no value projection", l);
      QT_CHECK(!gated || gate.count_in + gate.count_out > 0,
               "attention mechanism: layer {} has no gate probabilities", l);
      std::vector<double> row_mass, row_in, row_out, row_gate_in, row_gate_out;
      for (int64_t h = 0; h < heads_; ++h) {
        const size_t k = static_cast<size_t>(h);
        MechanismHead head;
        head.layer = l;
        head.head = h;
        head.mass = mean(mass.in[k], mass.count_in);
        const double in = mean(value.in[k], value.count_in);
        const double out = mean(value.out[k], value.count_out);
        if (value.count_in > 0 && value.count_out > 0 && out > 0) {
          head.value_norm_ratio = in / out;
          masses.push_back(head.mass);
          ratios.push_back(*head.value_norm_ratio);
        }
        if (gated) {
          row_gate_in.push_back(mean(gate.in[k], gate.count_in));
          row_gate_out.push_back(mean(gate.out[k], gate.count_out));
          if (gate.count_in > 0) head.gate_in = row_gate_in.back();
          if (gate.count_out > 0) head.gate_out = row_gate_out.back();
        }
        row_mass.push_back(head.mass);
        row_in.push_back(in);
        row_out.push_back(out);
        heads.push_back(head);
      }
      m.mass.push_back(std::move(row_mass));
      m.value_norm_in.push_back(std::move(row_in));
      m.value_norm_out.push_back(std::move(row_out));
      if (gated) {
        m.gate_in.push_back(std::move(row_gate_in));
        m.gate_out.push_back(std::move(row_gate_out));
      }
    }
    m.mass_value_ratio_correlation = pearson_correlation(masses, ratios);
    std::stable_sort(
        heads.begin(), heads.end(),
        [](const MechanismHead& a, const MechanismHead& b) { return a.mass > b.mass; });
    if (static_cast<int64_t>(heads.size()) > top_heads_)
      heads.resize(static_cast<size_t>(top_heads_));
    m.top_heads = std::move(heads);
    r.token_sets.push_back(std::move(m));
  }
  return r;
}

nlohmann::json to_json(const MechanismResult& r) {
  nlohmann::json sets = nlohmann::json::array();
  for (const TokenSetMechanism& m : r.token_sets) {
    nlohmann::json top = nlohmann::json::array();
    for (const MechanismHead& h : m.top_heads)
      top.push_back({{"layer", h.layer},
                     {"head", h.head},
                     {"mass", h.mass},
                     {"value_norm_ratio", optional_json(h.value_norm_ratio)},
                     {"gate_in", optional_json(h.gate_in)},
                     {"gate_out", optional_json(h.gate_out)}});
    sets.push_back({{"name", m.name},
                    {"tokens", m.tokens},
                    {"all_tokens", m.all_tokens},
                    {"mass", m.mass},
                    {"value_norm_in", m.value_norm_in},
                    {"value_norm_out", m.value_norm_out},
                    {"gate_in", m.gate_in},
                    {"gate_out", m.gate_out},
                    {"outliers_on", m.outliers_on},
                    {"outliers", m.outliers},
                    {"mass_value_ratio_correlation", optional_json(m.mass_value_ratio_correlation)},
                    {"top_heads", top}});
  }
  return {{"token_sets", sets}};
}

MechanismResult mechanism_from_json(const nlohmann::json& j) {
  MechanismResult r;
  for (const auto& s : j.at("token_sets")) {
    TokenSetMechanism m;
    m.name = s.at("name").get<std::string>();
    m.tokens = s.at("tokens").get<int64_t>();
    m.all_tokens = s.at("all_tokens").get<int64_t>();
    m.mass = s.at("mass").get<Grid>();
    m.value_norm_in = s.at("value_norm_in").get<Grid>();
    m.value_norm_out = s.at("value_norm_out").get<Grid>();
    m.gate_in = s.at("gate_in").get<Grid>();
    m.gate_out = s.at("gate_out").get<Grid>();
    m.outliers_on = s.at("outliers_on").get<int64_t>();
    m.outliers = s.at("outliers").get<int64_t>();
    m.mass_value_ratio_correlation = optional_from(s, "mass_value_ratio_correlation");
    for (const auto& h : s.at("top_heads"))
      m.top_heads.push_back(
          MechanismHead{h.at("layer").get<int64_t>(), h.at("head").get<int64_t>(),
                        h.at("mass").get<double>(), optional_from(h, "value_norm_ratio"),
                        optional_from(h, "gate_in"), optional_from(h, "gate_out")});
    r.token_sets.push_back(std::move(m));
  }
  return r;
}

}  // namespace qt::quant
