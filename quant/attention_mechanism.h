// The paper's "no-op" mechanism, measured instead of assumed (paper §3 and Fig. 2; paper-spec
// "No-op analysis"): an attention head that has nothing to add to a token puts its attention on
// tokens whose value vectors are small (BERT: [SEP], '.', ','; ViT: background patches), so that
// P·V ≈ 0; a gated head can instead close its gate, π → 0. Per layer l, head h and token set S
// (text: the model's delimiter tokens; images: the CLS token, and the background patches):
//
//   attention mass    m_{l,h}(S)   = mean_{b, i} sum_{j in S} P[b, h, i, j]
//                                    (the share of a query's attention that lands on S, averaged
//                                    over all queries i of all sequences b);
//   value norm        n_in(S)      = mean over tokens t in S      of ||v[b, t, h]||_2,
//                     n_out(S)     = mean over tokens t not in S  of ||v[b, t, h]||_2,
//                                    v = the value projection x W_v^T + b_v, head h = its columns
//                                    [h d_h, (h+1) d_h) (nn/attention.h), before any softmax;
//                     ratio(S)     = n_in / n_out  (< 1: the head's values are small on S);
//   gate (gated)      π_in(S), π_out(S) = mean of π[b, t, h] over t in S / not in S.
//
// Summary per token set, over the L·H heads:
//   correlation       Pearson r between m(S) and ratio(S) (the paper predicts r < 0: the heads
//                     that attend to S most have the smallest values there); absent with fewer
//                     than 3 heads, a constant series, or a set never seen;
//   top heads         the `top_heads` heads with the largest m(S) (ties: lower layer, then head),
//                     with their ratio and gates.
// The outlier share (how many 6σ outliers sit on S) is counted by the outlier analysis
// (quant/outlier_analysis.h), which knows the outliers' positions, and stored beside these.
//
// All sums are in double, per (sequence, head) partial sums added in a fixed order, so results do
// not depend on the number of threads.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include <nlohmann/json_fwd.hpp>

#include "tensor/tensor.h"

namespace qt::quant {

// One head of the summary's top list.
struct MechanismHead {
  int64_t layer = 0, head = 0;
  double mass = 0;
  std::optional<double> value_norm_ratio;   // absent when S or its complement was never seen
  std::optional<double> gate_in, gate_out;  // gated models only
};

// The mechanism statistics of one token set.
struct TokenSetMechanism {
  std::string name;                       // "delimiters", "cls", "background"
  int64_t tokens = 0;                     // tokens (b, t) of the analysed batches in the set
  int64_t all_tokens = 0;                 // tokens seen
  std::vector<std::vector<double>> mass;  // [layers][heads]
  std::vector<std::vector<double>> value_norm_in;      // [layers][heads]; 0 when tokens == 0
  std::vector<std::vector<double>> value_norm_out;     // [layers][heads]; 0 when tokens == all
  std::vector<std::vector<double>> gate_in, gate_out;  // [layers][heads]; empty: not gated
  int64_t outliers_on = 0, outliers = 0;  // 6σ outliers on the set / in total (outlier points)
  std::optional<double> mass_value_ratio_correlation;
  std::vector<MechanismHead> top_heads;
};

struct MechanismResult {
  std::vector<TokenSetMechanism> token_sets;
};

nlohmann::json to_json(const MechanismResult& result);
MechanismResult mechanism_from_json(const nlohmann::json& json);  // throws on a missing field

// Pearson's r of two equally long series; nullopt for fewer than 3 pairs or a constant series.
std::optional<double> pearson_correlation(const std::vector<double>& x,
                                          const std::vector<double>& y);

// The accumulator. Use: begin_batch(masks); then, as the forward pass produces them, per layer
// observe_gate (gated), observe_value, observe_probabilities; finally result().
class AttentionMechanism {
 public:
  // `set_names`: one per token set, in the order of begin_batch's masks.
  AttentionMechanism(int64_t layers, int64_t heads, std::vector<std::string> set_names,
                     int64_t top_heads = 3);

  // The token sets of the next batch: masks[s][b * length + t] != 0 when token t of sequence b is
  // in set s; every mask holds batch * length entries.
  void begin_batch(int64_t batch, int64_t length, std::vector<std::vector<uint8_t>> masks);
  bool in_set(size_t set, int64_t batch, int64_t token) const;
  size_t sets() const { return set_names_.size(); }

  void observe_probabilities(int64_t layer, const Tensor& probabilities);  // [B, H, T, T]
  void observe_value(int64_t layer, const Tensor& value);                  // [B, T, d]
  void observe_gate(int64_t layer, const Tensor& pi);                      // [B, T, H]
  // Adds the outliers counted on one point: `on[s]` of `total` sit on set s.
  void add_outliers(const std::vector<int64_t>& on, int64_t total);

  // Throws when a layer's probabilities or values never arrived.
  MechanismResult result() const;
  // Throws naming `what` unless a batch was begun and [batch, length] is its shape.
  void check_batch(const std::string& what, int64_t layer, const Tensor& x, int64_t batch,
                   int64_t length) const;

 private:
  // Per layer, per set, per head sums; `count` = (b, t) pairs (values, gates) or (b, i) queries
  // (mass) that entered them.
  struct Sums {
    std::vector<double> in, out;
    int64_t count_in = 0, count_out = 0;
  };

  int64_t layers_, heads_, top_heads_;
  std::vector<std::string> set_names_;
  int64_t batch_ = 0, length_ = 0;
  std::vector<std::vector<uint8_t>> masks_;
  std::vector<int64_t> tokens_in_;  // per set
  int64_t tokens_ = 0;
  std::vector<std::vector<Sums>> mass_, value_, gate_;  // [layer][set]; mass uses `in` only
  std::vector<int64_t> outliers_on_;
  int64_t outliers_ = 0;
};

}  // namespace qt::quant
