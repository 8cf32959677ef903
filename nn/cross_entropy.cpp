// Cross-entropy from logits, fused with log-softmax (see nn/cross_entropy.h).
//
// Per row i with logits z (C classes), target t, smoothing s:
//   m = max_c z_c,   total = sum_c exp(z_c - m),   logp_c = (z_c - m) - log(total)
//   loss_i = -(1 - s) logp_t - (s / C) sum_c logp_c
//          = -(1 - s) logp_t - (s / C) (sum_c (z_c - m) - C log(total))
// Two passes over the row (max; then exp and sums), no [N, C] log-probability tensor is stored:
// only m and log(total) per row, from which the backward pass recomputes the softmax:
//   dz_c = (g / n_valid) (softmax_c - (1 - s) [c == t] - s / C)     for valid rows, 0 for ignored,
// where g is the incoming gradient of the scalar loss. (d logp_t / dz_c = [c == t] - softmax_c and
// d sum_c' logp_c' / dz_c = 1 - C softmax_c give this after collecting terms.)
//
// This matches torch.nn.functional.cross_entropy(..., reduction='mean') with ignore_index and
// label_smoothing, including that the smoothing term is averaged over the valid rows only, and
// that a batch with no valid row gives NaN (0 / 0).
//
// Determinism: rows are independent (one thread each); the per-row losses are added in row order
// by one thread afterwards. Sums inside a row use double accumulators in a fixed lane order.
#include "nn/cross_entropy.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
#include <type_traits>
#include <vector>

#include "autograd/functions.h"
#include "tensor/parallel_policy.h"
#include "tensor/row_kernels.h"
#include "tensor/threads.h"

namespace qt::nn {

namespace {

using namespace qt::row_kernels;

constexpr int64_t kBlock = 256;  // classes per block of the exp pass (stack)

// ---------------------------------------------------------------------------------------------

struct RowStatistics {
  double loss;       // loss_i (0 for an ignored row)
  double max;        // m
  double log_total;  // log(sum_c exp(z_c - m))
};

template <typename T>
RowStatistics forward_row(const T* z, int64_t classes, int64_t target, bool valid,
                          double smoothing) {
  const T m = row_max(z, classes);

  // total = sum_c exp(z_c - m) and shifted_sum = sum_c (z_c - m), both in double. The row goes
  // through a small stack buffer in blocks, so that the exp loop and the summing loops are each a
  // plain vectorizable loop.
  // Blocks add into the same lanes, leftover terms by index (LaneTail::by_index).
  LaneSum total, shifted_sum;
  T shifted[kBlock];
  for (int64_t start = 0; start < classes; start += kBlock) {
    const int64_t count = std::min<int64_t>(kBlock, classes - start);
    const T* block = z + start;
    for (int64_t j = 0; j < count; ++j) shifted[j] = block[j] - m;
    const auto shifted_term = [&](int64_t j) { return static_cast<double>(shifted[j]); };
    if (smoothing > 0) shifted_sum.add(count, shifted_term, LaneTail::by_index);
    for (int64_t j = 0; j < count; ++j) shifted[j] = exp_of(shifted[j]);
    total.add(count, shifted_term, LaneTail::by_index);
  }
  const double log_total = std::log(total.total());
  RowStatistics stats{0.0, static_cast<double>(m), log_total};
  if (valid) {
    const double logp_target = (static_cast<double>(z[target]) - stats.max) - log_total;
    const double sum_logp = shifted_sum.total() - static_cast<double>(classes) * log_total;
    stats.loss =
        -(1.0 - smoothing) * logp_target - (smoothing / static_cast<double>(classes)) * sum_logp;
  }
  return stats;
}

// dz for one row: scale * (softmax_c - (1 - s)[c == t] - s / C), or 0 for an ignored row.
template <typename T>
void backward_row(const T* z, T* dz, int64_t classes, int64_t target, bool valid, T max,
                  T log_total, T scale, T smoothing_per_class, T target_weight) {
  if (!valid) {
    std::fill(dz, dz + classes, T(0));
    return;
  }
  for (int64_t c = 0; c < classes; ++c)
    dz[c] = scale * (exp_of((z[c] - max) - log_total) - smoothing_per_class);
  dz[target] -= scale * target_weight;
}

void check_cross_entropy_inputs(const Tensor& logits, const Tensor& target, double smoothing) {
  check_defined(logits, "cross_entropy");
  check_defined(target, "cross_entropy");
  check_floating(logits, "cross_entropy");
  QT_CHECK(logits.dim() == 2 && logits.shape()[1] > 0,
           "cross_entropy: logits must be [N, C] with C > 0, got {}", shape_str(logits.shape()));
  QT_CHECK(target.dtype() == DType::i64 || target.dtype() == DType::i32,
           "cross_entropy: target must be i32 or i64, got {}", dtype_name(target.dtype()));
  QT_CHECK(target.dim() == 1 && target.shape()[0] == logits.shape()[0],
           "cross_entropy: target {} must be [N] for logits {}", shape_str(target.shape()),
           shape_str(logits.shape()));
  QT_CHECK(smoothing >= 0.0 && smoothing <= 1.0,
           "cross_entropy: label_smoothing = {} must lie in [0, 1]", smoothing);
}

}  // namespace

Tensor cross_entropy(const Tensor& logits, const Tensor& target, int64_t ignore_index,
                     double label_smoothing) {
  check_cross_entropy_inputs(logits, target, label_smoothing);
  num_threads();  // applies the thread setting before the first parallel region
  const int64_t rows = logits.shape()[0], classes = logits.shape()[1];
  const Tensor z = ops::contiguous(logits.detach());
  const Tensor targets = ops::contiguous(ops::to(target, DType::i64));
  const int64_t* t = targets.data<int64_t>();

  // Validate every target before the parallel loop (an exception must not escape it).
  int64_t valid_rows = 0;
  std::vector<uint8_t> valid(static_cast<size_t>(rows));
  for (int64_t i = 0; i < rows; ++i) {
    valid[i] = t[i] != ignore_index;
    QT_CHECK(!valid[i] || (t[i] >= 0 && t[i] < classes),
             "cross_entropy: target {} at row {} is out of range [0, {}) (and is not the "
             "ignore_index {})",
             t[i], i, classes, ignore_index);
    valid_rows += valid[i];
  }

  std::vector<RowStatistics> stats(static_cast<size_t>(rows));
  dispatch_dtype(z.dtype(), [&](auto tag) {
    using T = decltype(tag);
    if constexpr (std::is_floating_point_v<T>) {
      const T* data = z.data<T>();
#pragma omp parallel for schedule( \
    static) if (qt::worth_parallel(rows * classes, qt::WorkCost::heavy))
      for (int64_t i = 0; i < rows; ++i)
        stats[i] = forward_row(data + i * classes, classes, t[i], valid[i] != 0, label_smoothing);
    }
  });
  double loss_sum = 0;
  for (const RowStatistics& s : stats) loss_sum += s.loss;
  // 0 / 0 = NaN when every row is ignored, as PyTorch.
  const double loss = loss_sum / static_cast<double>(valid_rows);
  Tensor result = ops::scalar(loss, logits.dtype());
  if (!any_requires_grad({logits})) return result;

  return record(
      result, "cross_entropy", {logits},
      [z, targets, valid = std::move(valid), stats = std::move(stats), valid_rows, label_smoothing](
          const Tensor& grad, const std::vector<bool>&) -> std::vector<Tensor> {
        const int64_t rows = z.shape()[0], classes = z.shape()[1];
        const double g = grad.item();
        Tensor dz = Tensor::empty(z.shape(), z.dtype());
        dispatch_dtype(z.dtype(), [&](auto tag) {
          using T = decltype(tag);
          if constexpr (std::is_floating_point_v<T>) {
            const T scale = static_cast<T>(g / static_cast<double>(valid_rows));
            const T per_class = static_cast<T>(label_smoothing / static_cast<double>(classes));
            const T target_weight = static_cast<T>(1.0 - label_smoothing);
            const T* data = z.data<T>();
            const int64_t* t = targets.data<int64_t>();
            T* out = dz.data<T>();
#pragma omp parallel for schedule( \
    static) if (qt::worth_parallel(rows * classes, qt::WorkCost::heavy))
            for (int64_t i = 0; i < rows; ++i)
              backward_row<T>(data + i * classes, out + i * classes, classes, t[i], valid[i] != 0,
                              static_cast<T>(stats[i].max), static_cast<T>(stats[i].log_total),
                              scale, per_class, target_weight);
          }
        });
        return {dz};
      });
}

}  // namespace qt::nn
