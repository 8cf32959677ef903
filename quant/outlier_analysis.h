// Outlier analysis of a trained model (paper §3 and §5; method.md §5): activation taps
// (nn/activation_tap.h) that watch ordinary validation forward passes and collect
//
//   outlier metrics    per tensor name, the per-row infinity norm and kurtosis averaged over all
//                      rows seen (quant/outlier_metrics.h), for the method.md §5 tensor sets:
//                        BERT  per layer: FFN output ("output.dense"), the residual sum FFN + h1
//                              (the input of "output.LayerNorm") and the block output (that LN);
//                        OPT   per layer: layer output, fc2, final_layer_norm, out_proj,
//                              self_attn_layer_norm, plus the decoder's final LN. fc2 and
//                              final_layer_norm are viewed as [B·T, d] (one row per token), as HF
//                              runs them; everything else as [B, T·d] (one row per sequence);
//                        ViT   per layer: FFN output, residual sum, block output.
//                      Kurtosis rows come only from the first batches (BERT: batch_idx <= 256,
//                      OPT: <= 100; ViT: all), as the repo's validate scripts do.
//   headline numbers   the Table 2 columns: "max inf norm" and "avg kurtosis" (which names, below);
//   outlier positions  values more than 6 sigma from their tensor's mean (paper §3, footnote 1)
//                      in every layer's FFN output and block output: how many per hidden dim and
//                      per token (text: token id and its string — the paper finds [SEP], '.', ','
//                      — images: patch position, 0 = CLS);
//   delimiter attention  per layer and head, the attention probability mass on delimiter keys,
//                      averaged over queries:  mass_h = mean_{b, i} sum_{j delimiter} P[b, h, i, j]
//                      (BERT: [CLS], [SEP], '.', ','; OPT: </s>; ViT: the CLS token, position 0);
//   the mechanism      (quant/attention_mechanism.h) per token set — text: "delimiters"; images:
//                      "cls" (position 0) and, when the background value is known, "background"
//                      (the patches all of whose pixels are the dataset's background, u8 0 before
//                      normalisation: MNIST's black) — per layer and head the attention mass on
//                      the set, the value-vector norm on and off it and the gate on and off it, the
//                      correlation of mass and value-norm ratio over heads, the top heads; and how
//                      many of the 6-sigma outliers sit on the set (exactly, per outlier point and
//                      in total);
//   gate statistics    gated models: mean, min and max of pi[b, t, h] per layer and head;
//   plot data          a histogram of one activation (default: the last layer's FFN output) and the
//                      attention probabilities of one layer and head for the first sequence.
//
// Headline definitions (method.md §5 step 5):
//   BERT  max inf norm = max over layers of the FFN-output average [inferred: the spec leaves open
//         which of the three norms the tables use; all three are in `extra`];
//         avg kurtosis = mean over the 2L names {FFN output, block output}.
//   OPT   max inf norm = "Max layer inf norm", max over the layer outputs (the README evidence);
//         `extra` holds "Max inf norm" (all names) and "Max FFN inf norm" (fc2);
//         avg kurtosis = mean over all 1 + 5L names.
//   ViT   max inf norm = max over block outputs; avg kurtosis = mean over block outputs [inferred].
//
// All statistics are accumulated in double; results do not depend on the number of threads.
#pragma once

#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include <nlohmann/json_fwd.hpp>

#include "models/model.h"
#include "models/model_points.h"
#include "models/run_data.h"
#include "nn/activation_tap.h"
#include "quant/attention_mechanism.h"
#include "quant/outlier_metrics.h"
#include "tensor/tensor.h"

namespace qt::quant {

// The version of the analysis JSON: 1 without the mechanism (quant/attention_mechanism.h) and the
// outliers per token set, 2 with them. `qtlab results` prefers the higher version of a step's
// analysis; `qtlab experiment --reanalyze` recomputes analyses older than this.
constexpr int kAnalysisVersion = 2;

// The tap point names (nn/activation_tap.h) of one transformer layer, from the model's table
// (models/model_points.h; "" where the model has no such point, e.g. `gate` when not gated).
struct LayerPoints {
  std::string ffn_output;            // W_2 act(W_1 z + b_1) + b_2 (BERT output.dense, OPT fc2)
  std::string residual_sum;          // FFN output + residual (BERT: the input of output.LayerNorm)
  std::string block_output;          // the layer's output (pre-LN: the same tensor as residual_sum)
  std::string attention_output;      // the attention output projection (OPT out_proj)
  std::string attention_layer_norm;  // OPT self_attn_layer_norm (BERT: attention.output.LayerNorm)
  std::string ffn_layer_norm;        // OPT final_layer_norm (BERT: output.LayerNorm)
  std::string probabilities;         // attention probabilities [B, H, T, T], before dropout
  std::string gate;                  // gate probabilities pi [B, T, H]
  std::string value;                 // the value projection x W_v^T + b_v [B, T, d]
};

// Throws for a layer out of range.
LayerPoints layer_points(const models::ModelPoints& table, int64_t layer);

struct AnalysisOptions {
  // Batches (counted from 0) whose rows enter the kurtosis averages; 0: the model's default
  // (models::AnalysisDescription::kurtosis_batches: bert 257, opt 101, vit all); < 0: all.
  int64_t kurtosis_batches = 0;
  // Text: token id -> its text, to name outlier tokens (ids beyond the list print as "#<id>").
  std::vector<std::string> token_strings;
  // Text: the key token ids whose attention mass is measured (delimiter_token_ids()). Images: not
  // used; the delimiter is the CLS position 0.
  std::vector<int64_t> delimiter_ids;
  // Images: the value a background pixel (u8 0) has after normalisation (RunData::
  // image_background); set: patches whose values all equal it form the "background" token set.
  std::optional<float> background_value;
  int64_t mechanism_top_heads = 3;  // heads listed per token set (attention_mechanism.h)
  std::string histogram_point;      // "": the last layer's FFN output
  int64_t histogram_bins = 100;
  int64_t attention_layer = -1;  // the layer of the dumped attention matrix (-1: the last)
  int64_t attention_head = 0;
  double outlier_sigmas = kOutlierSigmas;
  int64_t top_count = 10;  // hidden dims and tokens listed per outlier point
};

// The model's delimiter ids (models::AnalysisDescription): BERT: [CLS], [SEP] and every token
// whose text, stripped of white space, is "." or ","; OPT: </s>; ViT: none (the CLS position is
// used). `token_strings` as in AnalysisOptions.
std::vector<int64_t> delimiter_token_ids(const models::ModelPoints& table,
                                         const std::vector<std::string>& token_strings);

// Averages of one tensor name (outlier_metrics.h).
struct NameMetrics {
  double inf_norm = 0;
  double kurtosis = 0;
};

struct LayerMetrics {
  NameMetrics ffn_output, residual_sum, block_output;
};

// An index (hidden dim, token id or patch position) with how many outliers it holds.
struct CountedIndex {
  int64_t index = 0;
  std::string text;  // tokens: the token's string (images: "[CLS]" / "patch <n>"); dims: empty
  int64_t count = 0;
};

// The 6-sigma outliers of one tap point, summed over all batches.
struct PointOutliers {
  std::string point;
  int64_t layer = 0;
  int64_t count = 0;                      // outlier values
  int64_t elements = 0;                   // values inspected
  std::vector<CountedIndex> hidden_dims;  // the top_count dims by count (ties: lower index first)
  std::vector<CountedIndex> tokens;       // the top_count tokens / positions by count
  std::vector<int64_t> on_token_sets;     // outliers on each of mechanism.token_sets
};

struct GateStatistics {
  double mean = 0, min = 0, max = 0;
};

// Counts of values in `bins` equal bins over [low, high] (the last bin includes high).
struct Histogram {
  std::string point;
  double low = 0, high = 0;
  std::vector<int64_t> counts;
  int64_t values = 0;
};

// P[0, head, i, j] of one layer for the first sequence analysed, row-major [length, length].
struct AttentionMatrix {
  int64_t layer = 0, head = 0, length = 0;
  std::vector<std::string> tokens;  // the key / query labels
  std::vector<double> probabilities;
};

struct Headline {
  double max_inf_norm = 0;  // the Table 2 "max inf norm" column
  std::string max_inf_norm_definition;
  double avg_kurtosis = 0;
  std::string avg_kurtosis_definition;
  std::map<std::string, double>
      extra;  // the other norms of method.md §5 (see the top of this file)
};

struct AnalysisResult {
  std::string family;
  int64_t layers = 0, heads = 0;
  int64_t batches = 0, sequences = 0;
  Headline headline;
  std::vector<LayerMetrics> layer_metrics;               // [layers]
  std::map<std::string, NameMetrics> names;              // every tensor name of the family's set
  std::vector<PointOutliers> outliers;                   // per layer: FFN output, block output
  std::vector<int64_t> delimiter_ids;                    // text
  std::vector<std::string> delimiter_names;              // their strings (ViT: "[CLS]")
  std::vector<std::vector<double>> delimiter_attention;  // [layers][heads]
  // [layers][heads]: the mean over queries of 1 - sum_j p_ij, the share of attention a softmax1 /
  // sink head gives its sink column (~1e-8 rounding for the other softmaxes). Empty in analyses
  // written before it existed.
  std::vector<std::vector<double>> sink_attention;
  std::vector<std::vector<GateStatistics>> gates;  // [layers][heads]; empty: not gated
  MechanismResult mechanism;  // per token set; delimiter_attention is its first set's mass
  Histogram histogram;
  AttentionMatrix attention;
};

// The JSON form written to analysis.json (format "qtlab.analysis", version kAnalysisVersion) and
// back; version 1 files read with an empty mechanism.
nlohmann::json to_json(const AnalysisResult& result);
AnalysisResult analysis_from_json(const nlohmann::json& json);  // throws on a missing field

// The taps. Use: begin_batch(ids); { nn::TapScope scope(&analysis); model.loss(batch); } ...;
// result(). Observes only: every tensor is passed on unchanged.
class OutlierAnalysis : public nn::ActivationTaps {
 public:
  // `table`: the analysed model's points (Model::points()).
  OutlierAnalysis(models::ModelPoints table, AnalysisOptions options);

  // Before each forward: the batch's token ids i64 [B, T] (text), or for images an undefined
  // input_ids and the batch's patches f32 [B, N, P] (needed for the background set; without them
  // only the CLS set is known).
  void begin_batch(const Tensor& input_ids, const Tensor& images = Tensor());
  Tensor at(const std::string& point, const Tensor& x) override;
  // Throws if no batch was analysed or a layer's points never fired.
  AnalysisResult result() const;

 private:
  struct PointRole {
    int64_t layer = -1;
    bool metrics = false;         // an OutlierMetrics name
    bool rows_per_token = false;  // OPT fc2 / final_layer_norm: rows are tokens
    bool outliers = false;        // a 6-sigma outlier point (index into outliers_)
    int64_t outlier_slot = -1;
    bool probabilities = false;
    bool gate = false;
    bool value = false;
  };
  struct OutlierCounts {
    std::string point;
    int64_t layer = 0;
    int64_t count = 0, elements = 0;
    std::vector<int64_t> per_hidden;
    std::map<int64_t, int64_t> per_token;  // token id (text) or position (images)
    std::vector<int64_t> on_sets;          // per mechanism token set
  };
  struct GateSums {
    std::vector<double> sum, min, max;
    int64_t count = 0;  // (b, t) pairs per head
  };

  void observe_outliers(OutlierCounts& counts, const Tensor& x);
  void observe_probabilities(int64_t layer, const Tensor& p);
  void observe_gate(int64_t layer, const Tensor& pi);
  // Images: the token-set masks of the current batch, [B, T] with T = patches + 1.
  void image_masks(int64_t batch, int64_t length);
  std::string token_text(int64_t id) const;

  models::ModelPoints table_;
  AnalysisOptions options_;
  std::map<std::string, PointRole> roles_;
  std::string first_block_output_;  // counts the sequences
  OutlierMetrics metrics_;
  std::vector<OutlierCounts> outliers_;
  AttentionMechanism mechanism_;
  std::vector<int64_t> probabilities_seen_, values_seen_;  // [layers]: batches
  std::vector<std::vector<double>> sink_sums_;             // [layers][heads]: sum of 1 - sum_j p
  std::vector<int64_t> sink_rows_;                         // [layers]: query rows per head
  std::vector<GateSums> gates_;                            // [layers]
  std::vector<float> histogram_values_;
  AttentionMatrix attention_;
  Tensor input_ids_;          // the current batch (text), contiguous i64 [B, T]
  Tensor images_;             // the current batch (images, when given), contiguous f32 [B, N, P]
  bool masks_ready_ = false;  // the mechanism has this batch's token sets
  std::vector<uint8_t> is_delimiter_id_;
  int64_t batches_ = 0, sequences_ = 0;
};

// Runs the analysis over `batches` validation batches of `batch_size` (<= 0: all) of `data`, with
// the model in eval mode and without autograd (restores the mode afterwards), with the model's
// own points.
AnalysisResult analyze_model(models::Model& model, const models::RunData& data,
                             AnalysisOptions options, int64_t batch_size, int64_t batches);

}  // namespace qt::quant
