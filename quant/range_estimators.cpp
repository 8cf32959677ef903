// Range estimators: current / running min-max (optionally percentiles) and the MSE grid search
// (definitions and formulas in range_estimators.h).
//
// Every estimator first brings its input to one layout: a dense f32 matrix [channels, n] with one
// row per channel (per-tensor: one row of all elements), by moving the channel axis to the front.
//
// Determinism. Min and max are exact whatever the order, so their OpenMP reductions give the same
// bits for any thread count. The MSE search runs its candidates in parallel, but each candidate's
// loss is one serial loop in a fixed order, written to its own slot: thread count never matters.
#include "quant/range_estimators.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <numeric>

#include "tensor/ops.h"
#include "tensor/parallel_policy.h"

namespace qt::quant {

namespace {

constexpr int64_t kChunkElements = int64_t{1} << 14;

// a·b rounded on its own. GCC contracts a·b + c into one fused multiply-add (a single rounding)
// even in ISO C++ mode, while torch and numpy round every operation; the few expressions that must
// match them bit for bit multiply through this function, which is never inlined into the sum.
[[gnu::noinline]] float rounded_product(float a, float b) {
  return a * b;
}
[[gnu::noinline]] double rounded_product(double a, double b) {
  return a * b;
}

// x as a dense f32 [channels, n] matrix, channel axis first. Checks: defined, floating, non-empty.
Tensor channel_rows(const Tensor& x, std::optional<int64_t> channel_axis, const char* op) {
  check_defined(x, op);
  check_floating(x, op);
  QT_CHECK(x.numel() > 0, "{}: empty tensor {} has no range", op, shape_str(x.shape()));
  Tensor values = x.dtype() == DType::f32 ? x : ops::to(x, DType::f32);
  if (!channel_axis.has_value()) return ops::reshape(ops::contiguous(values), {1, x.numel()});
  const int64_t axis = normalize_axis(*channel_axis, x.dim(), op);
  std::vector<int64_t> order{axis};
  for (int64_t d = 0; d < x.dim(); ++d)
    if (d != axis) order.push_back(d);
  const int64_t channels = x.size(axis);
  return ops::reshape(ops::contiguous(ops::permute(values, order)),
                      {channels, x.numel() / channels});
}

// Number of non-finite values in v[0, n): v − v is NaN exactly for ±inf and NaN.
inline int64_t count_non_finite(const float* v, int64_t n) {
  int64_t count = 0;
  for (int64_t i = 0; i < n; ++i) count += ((v[i] - v[i]) != (v[i] - v[i]));
  return count;
}

struct MinMax {
  float min, max;
};

// min and max of one chunk (finite values; non-finite ones were rejected before).
inline MinMax chunk_min_max(const float* v, int64_t n) {
  float low = v[0], high = v[0];
  for (int64_t i = 0; i < n; ++i) {
    low = std::min(low, v[i]);
    high = std::max(high, v[i]);
  }
  return {low, high};
}

// Throws when the matrix holds NaN or inf.
void check_finite(const Tensor& rows, const char* op, const Shape& original_shape) {
  const float* data = rows.data<float>();
  const int64_t n = rows.numel();
  const int64_t chunks = (n + kChunkElements - 1) / kChunkElements;
  int64_t bad = 0;
#pragma omp parallel for schedule(static) reduction(+ : bad) if (qt::worth_parallel(n, qt::WorkCost::standard) && chunks > 1)
  for (int64_t chunk = 0; chunk < chunks; ++chunk) {
    const int64_t begin = chunk * kChunkElements;
    bad += count_non_finite(data + begin, std::min(n, begin + kChunkElements) - begin);
  }
  QT_CHECK(bad == 0, "{}: input {} holds {} NaN or infinite values", op, shape_str(original_shape),
           bad);
}

// Per-row min and max of a finite [channels, n] matrix.
QuantizationRange rows_min_max(const Tensor& rows, std::optional<int64_t> channel_axis) {
  const int64_t channels = rows.size(0), n = rows.size(1);
  const float* data = rows.data<float>();
  QuantizationRange range;
  range.channel_axis = channel_axis;
  const int64_t chunks = (n + kChunkElements - 1) / kChunkElements;
  for (int64_t c = 0; c < channels; ++c) {
    const float* row = data + c * n;
    float low = row[0], high = row[0];
#pragma omp parallel for schedule(static) reduction(min    \
                                                    : low) \
    reduction(max                                          \
              : high) if (qt::worth_parallel(n, qt::WorkCost::standard) && chunks > 1)
    for (int64_t chunk = 0; chunk < chunks; ++chunk) {
      const int64_t begin = chunk * kChunkElements;
      const MinMax m = chunk_min_max(row + begin, std::min(n, begin + kChunkElements) - begin);
      low = std::min(low, m.min);
      high = std::max(high, m.max);
    }
    range.min.push_back(low);
    range.max.push_back(high);
  }
  return range;
}

// NumPy's linear percentile of `values` (reordered in place by nth_element), p in [0, 100].
double percentile_of(std::vector<float>& values, double p) {
  const int64_t n = static_cast<int64_t>(values.size());
  const double q = p / 100.0;                       // np.true_divide(q, 100)
  const double h = static_cast<double>(n - 1) * q;  // virtual index (n − 1) q
  const int64_t below = static_cast<int64_t>(std::floor(h));
  const int64_t i = std::min(below, n - 1);
  const int64_t j = std::min(i + 1, n - 1);
  const double gamma = h - static_cast<double>(below);  // γ = h − ⌊h⌋
  std::nth_element(values.begin(), values.begin() + i, values.end());
  const float a = values[i];
  // After nth_element everything right of i is >= a, so v_{i+1} is the smallest of them.
  const float b = j == i ? a : *std::min_element(values.begin() + i + 1, values.end());
  // numpy's _lerp: the difference is taken in the data's dtype (f32), the rest in f64.
  const float difference = b - a;
  if (gamma >= 0.5)
    return static_cast<double>(b) - rounded_product(static_cast<double>(difference), 1.0 - gamma);
  return static_cast<double>(a) + rounded_product(static_cast<double>(difference), gamma);
}

// Per-row percentiles P(p_low), P(p_high) of a finite [channels, n] matrix, in double.
void rows_percentiles(const Tensor& rows, double p_low, double p_high, std::vector<double>& low,
                      std::vector<double>& high) {
  const int64_t channels = rows.size(0), n = rows.size(1);
  const float* data = rows.data<float>();
  low.resize(channels);
  high.resize(channels);
  std::vector<float> scratch;
  for (int64_t c = 0; c < channels; ++c) {
    scratch.assign(data + c * n, data + (c + 1) * n);
    low[c] = percentile_of(scratch, p_low);
    high[c] = percentile_of(scratch, p_high);
  }
}

// Σ (w − Q(w))² over one row, Q the fake quantizer with (scale, zero, grid); accumulated in
// double. Q(w) itself is computed in f32 exactly as ops::fake_quantize does.
double squared_quantization_error(const float* w, int64_t n, float scale, float zero, float low,
                                  float high) {
  double total = 0;
  for (int64_t i = 0; i < n; ++i) {
    const float q = std::min(std::max(std::nearbyint(w[i] / scale) + zero, low), high);
    const double error = static_cast<double>(w[i]) - static_cast<double>(scale * (q - zero));
    total += error * error;
  }
  return total;
}

// The thresholds (neg, pos) of one flat candidate index, in double as the repo's Python floats.
struct Thresholds {
  double negative, positive;
};

Thresholds candidate_thresholds(const MseGridSearch& s, int bits, int64_t candidate) {
  const int64_t per_k = s.skews * s.directions;
  const int64_t k = candidate / per_k;
  if (!s.two_dimensional) {
    const double positive = s.step * static_cast<double>(k);
    return {s.one_sided ? 0.0 : -s.step * static_cast<double>(k), positive};
  }
  const int64_t shift = (candidate % per_k) / s.directions;
  const int64_t reverse = candidate % s.directions;
  const double start = -s.step * static_cast<double>(k);
  const double finish = s.step * static_cast<double>(k);
  const double delta = (finish - start) / static_cast<double>((int64_t{1} << bits) - 1);
  // skew = ((−1)^reverse · shift) · Δ_k: an integer times a float, as in Python.
  const double skew = static_cast<double>(reverse == 0 ? shift : -shift) * delta;
  return {std::max(start + skew, s.max_negative_threshold),
          std::min(finish + skew, s.max_positive_threshold)};
}

void mse_initialize(MseGridSearch& s, const RangeEstimatorOptions& o, const Tensor& rows) {
  const QuantizationRange whole = rows_min_max(ops::reshape(rows, {1, rows.numel()}), {});
  const double data_min = whole.min[0], data_max = whole.max[0];
  s.initialized = true;
  s.one_sided = data_min >= 0.0;
  s.two_dimensional = !(s.one_sided || o.symmetric);
  s.channels = rows.size(0);
  double search_range = 0;
  if (!s.two_dimensional) {
    s.max_positive_threshold = std::max(std::abs(data_min), data_max) + o.range_margin;
    s.max_negative_threshold = -s.max_positive_threshold;
    search_range = s.max_positive_threshold;
    s.skews = 1;
    s.directions = 1;
  } else {
    s.max_positive_threshold = data_max + o.range_margin;
    s.max_negative_threshold = data_min - o.range_margin;
    search_range = std::max(std::abs(s.max_positive_threshold), std::abs(s.max_negative_threshold));
    s.skews = (int64_t{1} << o.bits) / 4;
    s.directions = 2;
  }
  s.step = search_range / static_cast<double>(o.num_candidates);
  const int64_t per_channel = (o.num_candidates + 1) * s.skews * s.directions;
  s.losses.assign(s.channels * per_channel, 0.0);
  // Candidate k = 0 (the empty range) is excluded.
  for (int64_t c = 0; c < s.channels; ++c)
    std::fill_n(s.losses.begin() + c * per_channel, s.skews * s.directions,
                std::numeric_limits<double>::infinity());
}

void mse_update(MseGridSearch& s, const RangeEstimatorOptions& o, const Tensor& rows,
                QuantizationRange& range) {
  const char* op = "RangeEstimator(MSE)";
  if (!s.initialized) mse_initialize(s, o, rows);
  QT_CHECK(rows.size(0) == s.channels, "{}: the input has {} channels, earlier inputs had {}", op,
           rows.size(0), s.channels);
  const int64_t n = rows.size(1);
  const float* data = rows.data<float>();
  const int64_t per_k = s.skews * s.directions;
  const int64_t per_channel = (o.num_candidates + 1) * per_k;
  const int64_t first = per_k;  // k >= 1
  const int64_t candidates = per_channel - first;
  const int64_t channels = s.channels;
  double* losses = s.losses.data();
#pragma omp parallel for schedule( \
    dynamic, 1) if (qt::worth_parallel(candidates * rows.numel(), qt::WorkCost::standard))
  for (int64_t index = 0; index < candidates; ++index) {
    const int64_t candidate = first + index;
    const Thresholds t = candidate_thresholds(s, o.bits, candidate);
    // The repo's temporary per-tensor quantizer: range given as Python floats -> float32.
    const QuantizationParameters p = quantization_parameters(
        static_cast<float>(t.negative), static_cast<float>(t.positive), o.bits, o.symmetric);
    const float scale = p.scale[0], zero = static_cast<float>(p.zero_point[0]);
    const float low = static_cast<float>(p.int_min), high = static_cast<float>(p.int_max);
    for (int64_t c = 0; c < channels; ++c) {
      losses[c * per_channel + candidate] +=
          squared_quantization_error(data + c * n, n, scale, zero, low, high);
    }
  }
  // The first smallest accumulated loss per channel (numpy argmin), and its range.
  range.channel_axis = o.channel_axis;
  range.min.assign(channels, 0.0f);
  range.max.assign(channels, 0.0f);
  s.best_candidate.assign(channels, 0);
  for (int64_t c = 0; c < channels; ++c) {
    const double* row = losses + c * per_channel;
    const int64_t best = std::min_element(row, row + per_channel) - row;
    s.best_candidate[c] = best;
    const Thresholds t = candidate_thresholds(s, o.bits, best);
    range.min[c] = static_cast<float>(t.negative);
    range.max[c] = static_cast<float>(t.positive);
  }
}

}  // namespace

RangeMethod parse_range_method(const std::string& name) {
  if (name == "current_minmax") return RangeMethod::current_min_max;
  if (name == "running_minmax") return RangeMethod::running_min_max;
  if (name == "MSE") return RangeMethod::mse_grid;
  fail(
      "parse_range_method: unknown range estimator '{}' (use current_minmax, running_minmax or "
      "MSE)",
      name);
}

std::string range_method_name(RangeMethod method) {
  switch (method) {
    case RangeMethod::current_min_max:
      return "current_minmax";
    case RangeMethod::running_min_max:
      return "running_minmax";
    case RangeMethod::mse_grid:
      return "MSE";
  }
  return "?";
}

RangeEstimator::RangeEstimator(RangeEstimatorOptions o) : options(std::move(o)) {
  const char* op = "RangeEstimator";
  if (options.percentile.has_value()) {
    const double p = *options.percentile;
    QT_CHECK(options.method != RangeMethod::mse_grid, "{}: MSE takes no percentile", op);
    if (options.method == RangeMethod::current_min_max) {
      QT_CHECK(p > 0.0 && p <= 50.0,
               "{}: current_minmax percentile {} must be the low percentile, in (0, 50] (the "
               "range is [P(p), P(100 - p)])",
               op, p);
    } else {
      QT_CHECK(p >= 50.0 && p < 100.0,
               "{}: running_minmax percentile {} must be the high percentile, in [50, 100) (the "
               "range is [P(100 - p), P(p)])",
               op, p);
    }
  }
  QT_CHECK(options.momentum >= 0.0 && options.momentum <= 1.0, "{}: momentum {} must lie in [0, 1]",
           op, options.momentum);
  if (options.method == RangeMethod::mse_grid) {
    check_bits(options.bits, op);
    QT_CHECK(options.num_candidates >= 1, "{}: num_candidates {} must be at least 1", op,
             options.num_candidates);
    QT_CHECK(std::isfinite(options.range_margin) && options.range_margin >= 0.0,
             "{}: range_margin {} must be finite and >= 0", op, options.range_margin);
  }
}

void RangeEstimator::update(const Tensor& x) {
  if (frozen) return;
  const char* op = "RangeEstimator::update";
  const Tensor rows = channel_rows(x, options.channel_axis, op);
  check_finite(rows, op, x.shape());
  const int64_t channels = rows.size(0);
  if (batches_seen > 0) {
    QT_CHECK(static_cast<int64_t>(current.min.size()) == channels,
             "{}: input {} has {} channels along axis {}, earlier inputs had {}", op,
             shape_str(x.shape()), channels, options.channel_axis.value_or(0), current.min.size());
  }

  switch (options.method) {
    case RangeMethod::current_min_max: {
      if (options.percentile.has_value()) {
        // The repo's np.percentile(x, (p, 100 − p)).
        std::vector<double> low, high;
        rows_percentiles(rows, *options.percentile, 100.0 - *options.percentile, low, high);
        current.channel_axis = options.channel_axis;
        current.min.assign(low.begin(), low.end());
        current.max.assign(high.begin(), high.end());
      } else {
        current = rows_min_max(rows, options.channel_axis);
      }
      break;
    }
    case RangeMethod::running_min_max: {
      std::vector<double> low, high;
      const bool in_double = options.percentile.has_value();
      if (in_double) {
        rows_percentiles(rows, 100.0 - *options.percentile, *options.percentile, low, high);
      } else {
        const QuantizationRange m = rows_min_max(rows, options.channel_axis);
        low.assign(m.min.begin(), m.min.end());
        high.assign(m.max.begin(), m.max.end());
      }
      if (batches_seen == 0) {
        running_min = low;
        running_max = high;
      } else if (in_double) {
        // cur ← (1 − momentum) · new + momentum · cur, in float64 (numpy results)
        const double keep = options.momentum, take = 1.0 - options.momentum;
        for (int64_t c = 0; c < channels; ++c) {
          running_min[c] = rounded_product(take, low[c]) + rounded_product(keep, running_min[c]);
          running_max[c] = rounded_product(take, high[c]) + rounded_product(keep, running_max[c]);
        }
      } else {
        // The same in float32, as torch evaluates it on float32 tensors (scalars cast to float).
        const float keep = static_cast<float>(options.momentum);
        const float take = static_cast<float>(1.0 - options.momentum);
        for (int64_t c = 0; c < channels; ++c) {
          const float new_min = rounded_product(take, static_cast<float>(low[c])) +
                                rounded_product(keep, static_cast<float>(running_min[c]));
          const float new_max = rounded_product(take, static_cast<float>(high[c])) +
                                rounded_product(keep, static_cast<float>(running_max[c]));
          running_min[c] = new_min;
          running_max[c] = new_max;
        }
      }
      current.channel_axis = options.channel_axis;
      current.min.assign(running_min.begin(), running_min.end());
      current.max.assign(running_max.begin(), running_max.end());
      break;
    }
    case RangeMethod::mse_grid:
      mse_update(mse, options, rows, current);
      break;
  }
  ++batches_seen;
}

const QuantizationRange& RangeEstimator::range() const {
  QT_CHECK(batches_seen > 0, "RangeEstimator::range: no data seen yet ({})",
           range_method_name(options.method));
  return current;
}

QuantizationParameters RangeEstimator::parameters(int bits, bool symmetric) const {
  return quantization_parameters(range(), bits, symmetric);
}

void RangeEstimator::reset() {
  batches_seen = 0;
  frozen = false;
  running_min.clear();
  running_max.clear();
  mse = MseGridSearch{};
  current = QuantizationRange{};
}

double percentile(const Tensor& x, double p) {
  const char* op = "percentile";
  QT_CHECK(p >= 0.0 && p <= 100.0, "{}: p = {} must lie in [0, 100]", op, p);
  const Tensor rows = channel_rows(x, std::nullopt, op);
  check_finite(rows, op, x.shape());
  const float* data = rows.data<float>();
  std::vector<float> values(data, data + rows.numel());
  return percentile_of(values, p);
}

QuantizationRange min_max_range(const Tensor& x, std::optional<int64_t> channel_axis) {
  const char* op = "min_max_range";
  const Tensor rows = channel_rows(x, channel_axis, op);
  check_finite(rows, op, x.shape());
  return rows_min_max(rows, channel_axis);
}

}  // namespace qt::quant
