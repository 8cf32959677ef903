// Outlier metrics (paper §5; method.md §5; repo validate_mlm.py / validate_clm.py and
// transformers_language/utils.py::kurtosis): how large and how heavy-tailed activations are.
//
// A hooked tensor X is viewed as rows, X.reshape(N, −1) with N = X.shape[0]: one row per sequence
// for [B, T, d] tensors, one row per token for OPT's FFN-internal [B·T, d] tensors. Per row r:
//
//   inf_r      = max_k |X_rk|                                          (infinity norm)
//   kurtosis_r = mean_k (X_rk − μ_r)⁴ / (s_r⁴ + 1e-6)
//                μ_r = mean_k X_rk,  s_r = unbiased standard deviation (divisor n − 1, torch.std)
//                i.e. Pearson (non-excess) kurtosis: a Gaussian gives 3.
//
// Per tensor name, both are averaged over all rows of all batches seen (OutlierMetrics below);
// then "max inf norm" = max over a chosen set of names of the averaged inf norm, and "avg kurtosis"
// = mean over names of their averaged kurtosis (method.md §5 steps 4–5; which names: method.md §5
// tensor sets). All statistics are accumulated in double.
//
// Outliers for the analysis figures (paper §3, footnote 1): values more than 6 standard deviations
// from the mean of their activation tensor. The spec does not say which standard deviation; here
// it is the population one (divisor n) of all elements of the tensor [inferred].
#pragma once

#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "tensor/tensor.h"

namespace qt::quant {

constexpr double kKurtosisEpsilon = 1e-6;
constexpr double kOutlierSigmas = 6.0;

// Per row of x.reshape(x.shape[0], −1): max |x|. x f32/f64, rank >= 1, non-empty, no NaN.
std::vector<double> row_inf_norms(const Tensor& x);
// Per row: the repo's kurtosis (above). Rows need at least 2 elements.
std::vector<double> row_kurtosis(const Tensor& x);
// Of the whole tensor: max |x| (also the weight ∞-norm max(max W, −min W)).
double inf_norm(const Tensor& x);
// Of the whole tensor as one row.
double kurtosis(const Tensor& x);

// One value more than `sigmas` standard deviations from the tensor mean, in a [B, T, d] tensor.
struct OutlierPosition {
  int64_t batch = 0;
  int64_t token = 0;
  int64_t hidden = 0;  // the feature (channel) index along d
  double value = 0;
  double sigmas = 0;  // (value − mean) / std, signed
};

struct OutlierReport {
  double mean = 0;
  double standard_deviation = 0;          // population std of all elements
  std::vector<OutlierPosition> outliers;  // row-major order (batch, token, hidden)
  std::vector<int64_t> count_per_hidden;  // [d]: how many outliers each feature holds
  std::vector<int64_t> count_per_token;   // [T]: how many outliers each token position holds
};

// All |x − mean| > sigmas · std positions of a [B, T, d] tensor (f32/f64, no NaN).
OutlierReport find_outliers(const Tensor& x, double sigmas = kOutlierSigmas);

// Averages of the per-row metrics per tensor name over a validation run (method.md §5 step 4).
struct OutlierMetrics {
  struct Sums {
    double inf_norm_sum = 0;
    int64_t inf_norm_rows = 0;
    double kurtosis_sum = 0;
    int64_t kurtosis_rows = 0;
  };
  std::map<std::string, Sums> per_name;

  // Adds every row of x under `name`; kurtosis rows only when with_kurtosis (the repo takes them
  // from the first batches only: batch_idx <= 256 for BERT, <= 100 for OPT).
  void add(const std::string& name, const Tensor& x, bool with_kurtosis = true);
  // Averages for one name (throws if the name or its rows are missing).
  double average_inf_norm(const std::string& name) const;
  double average_kurtosis(const std::string& name) const;
  // max over `names` (all names when empty) of average_inf_norm.
  double max_inf_norm(const std::vector<std::string>& names = {}) const;
  // mean over `names` (when empty: all names with kurtosis rows) of average_kurtosis.
  double mean_kurtosis(const std::vector<std::string>& names = {}) const;
};

}  // namespace qt::quant
