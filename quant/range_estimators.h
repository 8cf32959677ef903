// Range estimators (method.md §4.2; repo quantization/range_estimators.py): they watch the
// tensors a quantizer sees during calibration and decide the range (x_min, x_max) from which
// quant/quantization_parameters.h computes the scale and zero point.
//
//   current_min_max   range of the latest tensor: m = min(x), M = max(x)           (BERT/ViT
//   weights)
//                     optional percentile p (the repo's np.percentile(x, (p, 100 − p)), so p is
//                     the LOW percentile here, e.g. 0.001): m = P(p), M = P(100 − p)
//   running_min_max   per batch m = min(x), M = max(x)  (or, with percentile p, the HIGH
//   percentile,
//                     e.g. 99.999: m = P(100 − p), M = P(p)); first batch: (m, M); later batches
//                     cur ← momentum · cur + (1 − momentum) · new,  momentum 0.9    (activations)
//   mse_grid          grid search for the range that minimises Σ (x − Q(x))² (OPT weights):
//     symmetric quantizer, or one-sided data (min >= 0 on the first batch) — 1-D search:
//       max_thr = max(|min x|, max x) + range_margin (0.5),  step = max_thr / num_candidates (100)
//       candidate k = 1..100: range [−k·step, k·step]  ([0, k·step] when one-sided)
//     asymmetric quantizer — 2-D search (skews):
//       max_pos = max x + margin,  max_neg = min x − margin,  step = max(|max_pos|, |max_neg|) /
//       100 candidate (k, j, sign), j = 0 .. 2^b/4 − 1: Δ_k = 2 k step / (2^b − 1), range
//       [max(−k·step ± j·Δ_k, max_neg), min(k·step ± j·Δ_k, max_pos)]
//     loss_k = Σ (x − Q_k(x))² accumulated (in double) over every update; the search range is fixed
//     by the first update; the range is the first candidate with the smallest accumulated loss.
//     Per-channel: one loss per channel and one argmin per channel (the search range stays global).
//
// Percentiles are NumPy's default ("linear", type 7): with the n values sorted, v_0 <= ... <=
// v_{n−1}, h = (n − 1) · p/100, i = ⌊h⌋, γ = h − i,
//   P(p) = v_i + γ (v_{i+1} − v_i)          if γ < 0.5
//        = v_{i+1} − (1 − γ)(v_{i+1} − v_i)   otherwise      (numpy's _lerp; v_{i+1} − v_i in f32)
// which equals torch.quantile(x, p/100) up to float32 rounding.
//
// Arithmetic follows the repo: min/max ranges and their running average are float32 (torch float32
// tensors); percentile ranges are float64 (numpy) and are kept in double across batches, rounded to
// float only when read by range().
//
// Every estimator works per-tensor or per-channel (channel_axis, any axis; the repo only has dim 0,
// and its running estimator ignores the percentile when per-channel — here it applies per channel).
// Inputs must be non-empty f32/f64 tensors with finite values: NaN or inf throws qt::Error (a NaN
// range would silently destroy the quantizer). After freeze(), update() does nothing: calibration
// is over.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "quant/quantization_parameters.h"
#include "tensor/tensor.h"

namespace qt::quant {

enum class RangeMethod { current_min_max, running_min_max, mse_grid };

// The repo's names: "current_minmax", "running_minmax", "MSE"; throws listing them otherwise.
RangeMethod parse_range_method(const std::string& name);
std::string range_method_name(RangeMethod method);

struct RangeEstimatorOptions {
  RangeMethod method = RangeMethod::running_min_max;
  std::optional<int64_t> channel_axis = std::nullopt;  // per-channel along this axis, or per-tensor
  double momentum = 0.9;                               // running_min_max
  // current_min_max: the low percentile p in (0, 50]; running_min_max: the high one in [50, 100).
  std::optional<double> percentile = std::nullopt;
  // mse_grid: the quantizer whose error is minimised, and the grid.
  int bits = 8;
  bool symmetric = true;
  int64_t num_candidates = 100;
  double range_margin = 0.5;
};

// The MSE grid search state: plain data, inspectable.
struct MseGridSearch {
  bool initialized = false;  // the search range is fixed by the first update
  bool one_sided = false;    // first batch had min >= 0: candidates [0, k·step]
  bool two_dimensional = false;
  double max_positive_threshold = 0;
  double max_negative_threshold = 0;
  double step = 0;
  int64_t skews = 1;       // 2^b / 4 in the 2-D search, else 1
  int64_t directions = 1;  // 2 in the 2-D search (skew up, skew down), else 1
  int64_t channels = 1;
  // Accumulated loss, [channels][num_candidates + 1][skews][directions] row-major; k = 0 is +inf.
  std::vector<double> losses;
  std::vector<int64_t> best_candidate;  // per channel: the flat candidate index of the argmin
};

struct RangeEstimator {
  RangeEstimatorOptions options;
  int64_t batches_seen = 0;
  bool frozen = false;
  // running_min_max state (in double; exactly float values unless a percentile is used)
  std::vector<double> running_min, running_max;
  MseGridSearch mse;
  QuantizationRange current;  // the latest estimate; valid once batches_seen > 0

  // Validates the options (method-specific percentile bounds, momentum in [0, 1], bits, ...).
  explicit RangeEstimator(RangeEstimatorOptions options = {});

  // Takes one calibration tensor into the estimate (no-op when frozen).
  void update(const Tensor& x);
  // The current range; throws if no data has been seen.
  const QuantizationRange& range() const;
  // The quantizer parameters of range() for `bits`/`symmetric`.
  QuantizationParameters parameters(int bits, bool symmetric) const;
  void freeze() { frozen = true; }
  // Forgets everything (also unfreezes).
  void reset();
};

// NumPy's np.percentile(x, p) over all elements (definition above), p in [0, 100], in double.
double percentile(const Tensor& x, double p);

// The per-tensor or per-channel min and max of x (finite, non-empty).
QuantizationRange min_max_range(const Tensor& x, std::optional<int64_t> channel_axis);

}  // namespace qt::quant
