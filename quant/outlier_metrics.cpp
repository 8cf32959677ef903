// Outlier metrics: per-row infinity norm and kurtosis, their averages per tensor name, and the
// 6-sigma outlier finder (definitions in outlier_metrics.h).
//
// Accumulation is in double (two passes: the mean, then the centred moments, which avoids the
// cancellation of the one-pass Σx⁴ − ... formula). Determinism: rows are processed in parallel but
// each row's sums are one serial loop; whole-tensor sums are cut into fixed chunks whose partial
// sums are combined in chunk order. Results never depend on the number of threads.
#include "quant/outlier_metrics.h"

#include <algorithm>
#include <cmath>
#include <limits>

#include "tensor/ops.h"
#include "tensor/parallel_policy.h"

namespace qt::quant {

namespace {

constexpr int64_t kChunkElements = int64_t{1} << 14;

// x as a dense f64 matrix [rows, n] with rows = x.shape[0] (or [1, numel] when whole_tensor).
// Checks: defined, floating, rank >= 1, non-empty, finite.
Tensor as_rows(const Tensor& x, bool whole_tensor, const char* op) {
  check_defined(x, op);
  check_floating(x, op);
  QT_CHECK(x.dim() >= 1, "{}: needs a tensor of rank >= 1, got {}", op, shape_str(x.shape()));
  QT_CHECK(x.numel() > 0, "{}: empty tensor {}", op, shape_str(x.shape()));
  const int64_t rows = whole_tensor ? 1 : x.size(0);
  Tensor values = ops::contiguous(ops::to(x, DType::f64));
  values = ops::reshape(values, {rows, x.numel() / rows});
  const double* data = values.data<double>();
  int64_t bad = 0;
  const int64_t total = values.numel();
#pragma omp parallel for schedule(static) reduction(+ : bad) if (qt::worth_parallel(total, qt::WorkCost::standard))
  for (int64_t i = 0; i < total; ++i) bad += !std::isfinite(data[i]);
  QT_CHECK(bad == 0, "{}: input {} holds {} NaN or infinite values", op, shape_str(x.shape()), bad);
  return values;
}

double row_max_abs(const double* v, int64_t n) {
  double m = 0;
  for (int64_t i = 0; i < n; ++i) m = std::max(m, std::abs(v[i]));
  return m;
}

// mean (x − μ)⁴ / (s⁴ + eps) with s² = Σ (x − μ)² / (n − 1).
double row_kurtosis_of(const double* v, int64_t n) {
  double sum = 0;
  for (int64_t i = 0; i < n; ++i) sum += v[i];
  const double mu = sum / static_cast<double>(n);
  double m2 = 0, m4 = 0;
  for (int64_t i = 0; i < n; ++i) {
    const double d = v[i] - mu;
    const double d2 = d * d;
    m2 += d2;
    m4 += d2 * d2;
  }
  const double variance = m2 / static_cast<double>(n - 1);  // unbiased: s² (torch.std default)
  const double fourth_moment = m4 / static_cast<double>(n);
  return fourth_moment / (variance * variance + kKurtosisEpsilon);
}

template <typename RowFn>
std::vector<double> per_row(const Tensor& rows, RowFn row_fn) {
  const int64_t count = rows.size(0), n = rows.size(1);
  const double* data = rows.data<double>();
  std::vector<double> out(count);
  double* out_data = out.data();
#pragma omp parallel for schedule( \
    static) if (count > 1 && qt::worth_parallel(count * n, qt::WorkCost::standard))
  for (int64_t r = 0; r < count; ++r) out_data[r] = row_fn(data + r * n, n);
  return out;
}

// Σ f(v_i) over all elements in fixed chunks, partials combined in chunk order.
template <typename Term>
double chunked_sum(const double* v, int64_t n, Term term) {
  const int64_t chunks = (n + kChunkElements - 1) / kChunkElements;
  std::vector<double> partial(chunks, 0.0);
  double* partial_data = partial.data();
#pragma omp parallel for schedule(static) if (qt::worth_parallel(n, qt::WorkCost::standard) && \
                                              chunks > 1)
  for (int64_t chunk = 0; chunk < chunks; ++chunk) {
    const int64_t begin = chunk * kChunkElements;
    const int64_t end = std::min(n, begin + kChunkElements);
    double s = 0;
    for (int64_t i = begin; i < end; ++i) s += term(v[i]);
    partial_data[chunk] = s;
  }
  double total = 0;
  for (double p : partial) total += p;
  return total;
}

}  // namespace

std::vector<double> row_inf_norms(const Tensor& x) {
  return per_row(as_rows(x, false, "row_inf_norms"), row_max_abs);
}

std::vector<double> row_kurtosis(const Tensor& x) {
  const Tensor rows = as_rows(x, false, "row_kurtosis");
  QT_CHECK(rows.size(1) >= 2,
           "row_kurtosis: rows of {} have {} element (the unbiased std needs at least 2)",
           shape_str(x.shape()), rows.size(1));
  return per_row(rows, row_kurtosis_of);
}

double inf_norm(const Tensor& x) {
  return per_row(as_rows(x, true, "inf_norm"), row_max_abs)[0];
}

double kurtosis(const Tensor& x) {
  const Tensor rows = as_rows(x, true, "kurtosis");
  QT_CHECK(rows.size(1) >= 2, "kurtosis: {} has fewer than 2 elements", shape_str(x.shape()));
  return row_kurtosis_of(rows.data<double>(), rows.size(1));
}

OutlierReport find_outliers(const Tensor& x, double sigmas) {
  const char* op = "find_outliers";
  check_defined(x, op);
  QT_CHECK(x.dim() == 3, "{}: needs a [batch, tokens, hidden] tensor, got {}", op,
           shape_str(x.shape()));
  QT_CHECK(std::isfinite(sigmas) && sigmas > 0, "{}: sigmas = {} must be positive", op, sigmas);
  const Tensor rows = as_rows(x, true, op);
  const double* v = rows.data<double>();
  const int64_t n = rows.numel();
  const int64_t tokens = x.size(1), hidden = x.size(2);

  OutlierReport report;
  report.mean = chunked_sum(v, n, [](double a) { return a; }) / static_cast<double>(n);
  const double mean = report.mean;
  const double squares = chunked_sum(v, n, [mean](double a) { return (a - mean) * (a - mean); });
  report.standard_deviation = std::sqrt(squares / static_cast<double>(n));
  report.count_per_hidden.assign(hidden, 0);
  report.count_per_token.assign(tokens, 0);
  const double limit = sigmas * report.standard_deviation;
  for (int64_t i = 0; i < n; ++i) {
    const double deviation = v[i] - mean;
    if (std::abs(deviation) <= limit || report.standard_deviation == 0) continue;
    OutlierPosition p;
    p.batch = i / (tokens * hidden);
    p.token = (i / hidden) % tokens;
    p.hidden = i % hidden;
    p.value = v[i];
    p.sigmas = deviation / report.standard_deviation;
    report.outliers.push_back(p);
    ++report.count_per_hidden[p.hidden];
    ++report.count_per_token[p.token];
  }
  return report;
}

void OutlierMetrics::add(const std::string& name, const Tensor& x, bool with_kurtosis) {
  const std::vector<double> norms = row_inf_norms(x);
  std::vector<double> kurt;
  if (with_kurtosis) kurt = row_kurtosis(x);  // computed before touching the sums: all or nothing
  Sums& s = per_name[name];
  for (double value : norms) s.inf_norm_sum += value;
  s.inf_norm_rows += static_cast<int64_t>(norms.size());
  for (double value : kurt) s.kurtosis_sum += value;
  s.kurtosis_rows += static_cast<int64_t>(kurt.size());
}

double OutlierMetrics::average_inf_norm(const std::string& name) const {
  const auto it = per_name.find(name);
  QT_CHECK(it != per_name.end() && it->second.inf_norm_rows > 0,
           "OutlierMetrics: no inf-norm rows recorded for '{}'", name);
  return it->second.inf_norm_sum / static_cast<double>(it->second.inf_norm_rows);
}

double OutlierMetrics::average_kurtosis(const std::string& name) const {
  const auto it = per_name.find(name);
  QT_CHECK(it != per_name.end() && it->second.kurtosis_rows > 0,
           "OutlierMetrics: no kurtosis rows recorded for '{}'", name);
  return it->second.kurtosis_sum / static_cast<double>(it->second.kurtosis_rows);
}

namespace {
// `names`, or when empty every recorded name (for kurtosis: every name that has kurtosis rows).
std::vector<std::string> names_or_all(const OutlierMetrics& m,
                                      const std::vector<std::string>& names, bool kurtosis) {
  if (!names.empty()) return names;
  std::vector<std::string> all;
  for (const auto& [name, sums] : m.per_name)
    if (!kurtosis || sums.kurtosis_rows > 0) all.push_back(name);
  QT_CHECK(!all.empty(), "OutlierMetrics: no {} recorded yet", kurtosis ? "kurtosis" : "rows");
  return all;
}
}  // namespace

double OutlierMetrics::max_inf_norm(const std::vector<std::string>& names) const {
  double best = -std::numeric_limits<double>::infinity();
  for (const std::string& name : names_or_all(*this, names, false))
    best = std::max(best, average_inf_norm(name));
  return best;
}

double OutlierMetrics::mean_kurtosis(const std::vector<std::string>& names) const {
  const std::vector<std::string> chosen = names_or_all(*this, names, true);
  double total = 0;
  for (const std::string& name : chosen) total += average_kurtosis(name);
  return total / static_cast<double>(chosen.size());
}

}  // namespace qt::quant
