// Clipped softmax: forward and hand-written backward (formulas in clipped_softmax.h).
//
// The softmax itself and its backward are the tested row kernels of tensor/softmax.h; this file
// adds the stretch, the clip and the clip mask around them. One pass each for the stretch-and-clip
// (forward) and for the masked, scaled upstream gradient (backward).
#include "nn/clipped_softmax.h"

#include <cmath>

#include "autograd/functions.h"
#include "tensor/error.h"
#include "tensor/parallel_policy.h"

namespace qt::nn {

namespace {

// y = clip(s, 0, 1) with s = clip_stretch(p); p contiguous, y a fresh tensor of the same shape.
template <typename T>
Tensor stretch_and_clip(const Tensor& p, T scale, T gamma) {
  Tensor y = Tensor::empty(p.shape(), p.dtype());
  const T* p_data = p.data<T>();
  T* y_data = y.data<T>();
  const int64_t n = p.numel();
#pragma omp parallel for schedule(static) if (qt::worth_parallel(n, qt::WorkCost::light))
  for (int64_t i = 0; i < n; ++i) {
    const T s = clip_stretch(p_data[i], scale, gamma);
    y_data[i] = s < T(0) ? T(0) : (s > T(1) ? T(1) : s);
  }
  return y;
}

// g^ = (zeta - gamma) * m * g with m = [0 <= s <= 1] (the clamp passes its boundaries).
template <typename T>
Tensor masked_stretch_gradient(const Tensor& grad, const Tensor& p, T scale, T gamma) {
  const Tensor g = ops::contiguous(grad);
  Tensor out = Tensor::empty(p.shape(), p.dtype());
  const T* g_data = g.data<T>();
  const T* p_data = p.data<T>();
  T* out_data = out.data<T>();
  const int64_t n = p.numel();
#pragma omp parallel for schedule(static) if (qt::worth_parallel(n, qt::WorkCost::light))
  for (int64_t i = 0; i < n; ++i) {
    const T s = clip_stretch(p_data[i], scale, gamma);
    out_data[i] = (s >= T(0) && s <= T(1)) ? scale * g_data[i] : T(0);
  }
  return out;
}

}  // namespace

void check_clip_range(double gamma, double zeta, const char* op) {
  QT_CHECK(std::isfinite(gamma) && gamma <= 0.0,
           "{}: gamma = {} (the clipped softmax needs a finite gamma <= 0)", op, gamma);
  QT_CHECK(std::isfinite(zeta) && zeta >= 1.0,
           "{}: zeta = {} (the clipped softmax needs a finite zeta >= 1)", op, zeta);
}

namespace {
struct SoftmaxKindName {
  SoftmaxKind kind;
  const char* name;
};
// The config / CLI names, in the order of the enum.
constexpr SoftmaxKindName kSoftmaxKindNames[] = {{SoftmaxKind::vanilla, "vanilla"},
                                                 {SoftmaxKind::clipped, "clipped"},
                                                 {SoftmaxKind::softmax1, "softmax1"},
                                                 {SoftmaxKind::sink, "sink"}};
}  // namespace

const std::vector<std::string>& softmax_kind_names() {
  static const std::vector<std::string> names = [] {
    std::vector<std::string> out;
    for (const SoftmaxKindName& entry : kSoftmaxKindNames) out.push_back(entry.name);
    return out;
  }();
  return names;
}

SoftmaxKind parse_softmax_kind(const std::string& name) {
  for (const SoftmaxKindName& entry : kSoftmaxKindNames)
    if (name == entry.name) return entry.kind;
  fail("attention: unknown softmax kind '{}' (expected one of {})", name,
       fmt::join(softmax_kind_names(), ", "));
}

const char* softmax_kind_name(SoftmaxKind kind) {
  for (const SoftmaxKindName& entry : kSoftmaxKindNames)
    if (kind == entry.kind) return entry.name;
  return "?";
}

AttentionSink attention_sink_of(SoftmaxKind kind) {
  if (kind == SoftmaxKind::softmax1) return AttentionSink::zero;
  if (kind == SoftmaxKind::sink) return AttentionSink::learned;
  return AttentionSink::none;
}

SoftmaxClip resolve_softmax_clip(SoftmaxKind kind, double gamma, double zeta, double alpha,
                                 int64_t max_length, bool per_row) {
  QT_CHECK(!per_row || alpha > 0.0,
           "attention softmax: the per-row gamma -alpha / T_row needs alpha > 0, got alpha = {}",
           alpha);
  if (per_row) {
    SoftmaxClip clip{true, -alpha / static_cast<double>(max_length > 0 ? max_length : 1), 1.0};
    clip.per_row = true;
    clip.alpha = alpha;
    return clip;
  }
  if (alpha != 0.0) {
    QT_CHECK(alpha > 0.0 && max_length > 0,
             "attention softmax: alpha = {} with max_length = {} (alpha must be > 0 and "
             "max_length > 0)",
             alpha, max_length);
    return SoftmaxClip{true, -alpha / static_cast<double>(max_length), 1.0};
  }
  if (kind != SoftmaxKind::clipped) return SoftmaxClip{};
  check_clip_range(gamma, zeta, "attention softmax");
  return SoftmaxClip{true, gamma, zeta};
}

Tensor clipped_softmax(const Tensor& x, double gamma, double zeta, int64_t axis) {
  check_defined(x, "clipped_softmax");
  check_floating(x, "clipped_softmax");
  check_clip_range(gamma, zeta, "clipped_softmax");
  // p is kept (contiguous) for the backward: the clip mask and the softmax backward both need it.
  const Tensor p = ops::contiguous(ops::softmax(x, axis));
  Tensor y;
  if (x.dtype() == DType::f32)
    y = stretch_and_clip<float>(p, static_cast<float>(zeta - gamma), static_cast<float>(gamma));
  else
    y = stretch_and_clip<double>(p, zeta - gamma, gamma);
  return record(
      y, "clipped_softmax", {x},
      [p, gamma, zeta, axis](const Tensor& grad, const std::vector<bool>&) -> std::vector<Tensor> {
        Tensor stretched;
        if (p.dtype() == DType::f32)
          stretched = masked_stretch_gradient<float>(grad, p, static_cast<float>(zeta - gamma),
                                                     static_cast<float>(gamma));
        else
          stretched = masked_stretch_gradient<double>(grad, p, zeta - gamma, gamma);
        // dL/dx_j = p_j (g^_j - sum_i g^_i p_i)
        return {ops::softmax_backward(stretched, p, axis)};
      });
}

}  // namespace qt::nn
