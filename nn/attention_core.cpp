// The attention core: fused forward + hand-written backward, and the composed reference
// (formulas in attention_core.h).
//
// Fused kernel organisation. The B*H (batch, head) blocks are independent: each is processed by
// one thread from start to end while its T x T score block is hot in cache:
//   forward  : S = scale * Q_h K_h^T (GEMM into the block's slot of P), mask, softmax in place
//              (P is kept for the backward), Y~ = dropout(clip(P)) into per-thread scratch,
//              O_h = Y~ V_h (GEMM written straight into the [B, T, d] output), gate.
//   backward : dO = gate * dC, Y~ recomputed from P, dV_h = Y~^T dO (GEMM), dY~ = dO V_h^T (GEMM
//              into the same scratch), dS in place, dQ_h = scale * dS K_h, dK_h = scale * dS^T Q_h.
// Each block writes a disjoint column slice of the [B, T, d] outputs, so there are no races and
// no reductions across threads: the result is bit-identical for any thread count. Scratch is one
// T x T (+ T x d_h) buffer per thread, allocated once before the parallel loop. GEMMs called
// inside the parallel region run single-threaded (OpenBLAS, OpenMP build).
#include "nn/attention_core.h"

#include "nn/activation_tap.h"

#include <omp.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
#include <memory>
#include <vector>

#include "autograd/functions.h"
#include "nn/clipped_softmax.h"
#include "nn/dropout.h"
#include "tensor/blas/gemm.h"
#include "tensor/parallel_policy.h"
#include "tensor/row_kernels.h"
#include "tensor/threads.h"

namespace qt::nn {

namespace {

using blas::Trans;
using namespace qt::row_kernels;

// Blocks smaller than this much GEMM work (multiply-adds) in total stay single-threaded.

void gemm(Trans ta, Trans tb, int64_t M, int64_t N, int64_t K, float alpha, const float* A,
          int64_t lda, const float* B, int64_t ldb, float beta, float* C, int64_t ldc) {
  blas::sgemm(ta, tb, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc);
}
void gemm(Trans ta, Trans tb, int64_t M, int64_t N, int64_t K, double alpha, const double* A,
          int64_t lda, const double* B, int64_t ldb, double beta, double* C, int64_t ldc) {
  blas::dgemm(ta, tb, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc);
}

// ---------------------------------------------------------------------------------------------
// Shapes and per-call constants shared by forward and backward.
struct Geometry {
  int64_t batch, length, hidden, heads, head_dim;
};

struct Validated {
  Geometry g;
  Tensor q, k, v, gate;         // contiguous
  Tensor sink;                  // [H] contiguous, or undefined
  std::vector<uint8_t> key_ok;  // [B * T]: 1 = real token (all 1 without a padding mask)
  bool has_padding = false;
};

// Checks the options, the gate [B, T, H], the key padding mask [B, T] and the sink logits [H]
// against the geometry in out.g, and fills out.gate and out.sink (contiguous), out.key_ok and
// out.has_padding.
void validate_gate_mask_options(const Tensor& reference, const Tensor& gate,
                                const Tensor& key_padding_mask, const Tensor& sink,
                                const AttentionCoreOptions& options, const char* op,
                                Validated& out) {
  if (options.softmax.clipped) check_clip_range(options.softmax.gamma, options.softmax.zeta, op);
  QT_CHECK(!options.softmax.per_row || (options.softmax.clipped && options.softmax.alpha > 0 &&
                                        std::isfinite(options.softmax.alpha)),
           "{}: a per-row clip needs the clipped softmax with alpha > 0, got alpha = {}", op,
           options.softmax.alpha);
  QT_CHECK(options.dropout >= 0.0f && options.dropout < 1.0f,
           "{}: dropout probability {} is outside [0, 1)", op, options.dropout);
  if (gate.defined()) {
    check_same_dtype(reference, gate, op);
    const Shape expected = {out.g.batch, out.g.length, out.g.heads};
    QT_CHECK(gate.shape() == expected, "{}: gate must be [B, T, H] = {}, got {}", op,
             shape_str(expected), shape_str(gate.shape()));
    out.gate = ops::contiguous(gate);
  }
  if (sink.defined()) {
    check_same_dtype(reference, sink, op);
    QT_CHECK(sink.shape() == Shape{out.g.heads}, "{}: sink logits must be [H] = [{}], got {}", op,
             out.g.heads, shape_str(sink.shape()));
    QT_CHECK(!options.softmax.clipped,
             "{}: a sink column goes with the plain softmax, not the clipped one", op);
    out.sink = ops::contiguous(sink);
    for (int64_t h = 0; h < out.g.heads; ++h) {
      const double a =
          reference.dtype() == DType::f32 ? out.sink.data<float>()[h] : out.sink.data<double>()[h];
      QT_CHECK(std::isfinite(a), "{}: sink logit of head {} is {}", op, h, a);
    }
  }
  out.key_ok.assign(out.g.batch * out.g.length, 1);
  if (key_padding_mask.defined()) {
    const Shape expected = {out.g.batch, out.g.length};
    QT_CHECK(key_padding_mask.shape() == expected,
             "{}: key_padding_mask must be [B, T] = {}, got {}", op, shape_str(expected),
             shape_str(key_padding_mask.shape()));
    const DType dt = key_padding_mask.dtype();
    QT_CHECK(dt == DType::u8 || dt == DType::i32 || dt == DType::i64,
             "{}: key_padding_mask must be u8, i32 or i64, got {}", op, dtype_name(dt));
    const Tensor mask = ops::contiguous(key_padding_mask);
    for (int64_t i = 0; i < mask.numel(); ++i) {
      bool real = true;
      if (dt == DType::u8) real = mask.data<uint8_t>()[i] != 0;
      if (dt == DType::i32) real = mask.data<int32_t>()[i] != 0;
      if (dt == DType::i64) real = mask.data<int64_t>()[i] != 0;
      out.key_ok[i] = real ? 1 : 0;
    }
    out.has_padding = true;
  }
}

Validated validate(const Tensor& q, const Tensor& k, const Tensor& v, const Tensor& gate,
                   const Tensor& key_padding_mask, const Tensor& sink,
                   const AttentionCoreOptions& options, const char* op) {
  for (const Tensor* t : {&q, &k, &v}) {
    check_defined(*t, op);
    check_floating(*t, op);
  }
  check_same_dtype(q, k, op);
  check_same_dtype(q, v, op);
  QT_CHECK(q.dim() == 3, "{}: q must be [B, T, d], got {}", op, shape_str(q.shape()));
  QT_CHECK(k.shape() == q.shape() && v.shape() == q.shape(),
           "{}: q, k, v shapes differ: {}, {}, {}", op, shape_str(q.shape()), shape_str(k.shape()),
           shape_str(v.shape()));
  const int64_t heads = options.heads;
  QT_CHECK(heads >= 1 && q.shape()[2] % heads == 0,
           "{}: hidden size {} is not divisible by heads = {}", op, q.shape()[2], heads);
  Validated out;
  out.g = {q.shape()[0], q.shape()[1], q.shape()[2], heads, q.shape()[2] / heads};
  validate_gate_mask_options(q, gate, key_padding_mask, sink, options, op, out);
  out.q = ops::contiguous(q);
  out.k = ops::contiguous(k);
  out.v = ops::contiguous(v);
  return out;
}

// Is key j visible to query i? (key_ok points at the batch entry's T flags)
inline bool visible(const uint8_t* key_ok, bool causal, int64_t i, int64_t j) {
  return key_ok[j] != 0 && !(causal && j > i);
}

// How many keys query row i sees (the per-row clip's n_i).
inline int64_t visible_key_count(const uint8_t* key_ok, bool causal, int64_t i, int64_t L) {
  int64_t count = 0;
  for (int64_t j = 0; j < L; ++j) count += visible(key_ok, causal, i, j) ? 1 : 0;
  return count;
}

// The stored probabilities. P >= 0, so its sign bit is free: the forward pass stores -P (or -0)
// where dropout dropped the entry. The backward pass reads the dropout mask back from the sign
// instead of drawing the Philox numbers again, and the stored tensor stays the only T x T one.
template <typename T>
inline bool kept(T stored) {
  return !std::signbit(stored);
}
template <typename T>
inline T probability(T stored) {
  return std::fabs(stored);
}

// y = clip((zeta - gamma) p + gamma, 0, 1) (or p itself when not clipped).
template <typename T>
inline T clipped_value(T p, T clip_scale, T gamma, bool clipped) {
  if (!clipped) return p;
  const T s = clip_stretch(p, clip_scale, gamma);
  return s < T(0) ? T(0) : (s > T(1) ? T(1) : s);
}

// The clip of row i of a block whose keys have the flags `ok` (nn::row_clip): with a per-row gamma
// it depends on how many keys the row sees.
template <typename T>
struct TypedRowClip {
  T scale, gamma;
};
template <typename T>
TypedRowClip<T> clip_of_row(const AttentionCoreOptions& options, const uint8_t* ok, int64_t i,
                            int64_t L) {
  const int64_t visible_keys =
      options.softmax.per_row ? visible_key_count(ok, options.causal, i, L) : L;
  const RowClip c = row_clip(options.softmax, visible_keys, L);
  return {static_cast<T>(c.scale), static_cast<T>(c.gamma)};
}

// Forward, one (b, h) block of L x L probabilities: Y~ = dropout(clip(P)) into y, and the
// dropped entries of P marked by their sign. `ok` are the batch entry's key flags (for per-row
// clips); `first_index` is the flat index of the block's first element in [B, H, T, T] (the
// dropout counter); `keep` is L * L bytes of scratch for the mask, drawn by
// nn::dropout_keep_mask (the vectorized form of nn::dropout_keep).
template <typename T>
void dropped_clipped_block(T* p, T* y, int64_t L, const uint8_t* ok,
                           const AttentionCoreOptions& options, uint64_t first_index,
                           uint8_t* keep) {
  const int64_t n = L * L;
  for (int64_t i = 0; i < L; ++i) {
    const TypedRowClip<T> c = clip_of_row<T>(options, ok, i, L);
    for (int64_t j = i * L; j < (i + 1) * L; ++j)
      y[j] = clipped_value(p[j], c.scale, c.gamma, options.softmax.clipped);
  }
  if (options.dropout > 0.0f) {
    dropout_keep_mask(options.dropout_seed, options.dropout_stream, first_index, n, options.dropout,
                      keep);
    // 1/(1-p) rounded once to T, as nn::dropout does.
    const T keep_scale = static_cast<T>(1.0 / (1.0 - static_cast<double>(options.dropout)));
    for (int64_t j = 0; j < n; ++j) {
      y[j] = keep[j] ? y[j] * keep_scale : T(0);
      p[j] = keep[j] ? p[j] : -p[j];
    }
  }
}

// Backward, one L x L block: Y~ again, from the stored (sign-marked) P.
template <typename T>
void dropped_clipped_block_from_stored(const T* stored, T* y, int64_t L, const uint8_t* ok,
                                       const AttentionCoreOptions& options) {
  const T keep_scale = static_cast<T>(1.0 / (1.0 - static_cast<double>(options.dropout)));
  const bool dropout = options.dropout > 0.0f;
  for (int64_t i = 0; i < L; ++i) {
    const TypedRowClip<T> c = clip_of_row<T>(options, ok, i, L);
    for (int64_t j = i * L; j < (i + 1) * L; ++j) {
      const T value =
          clipped_value(probability(stored[j]), c.scale, c.gamma, options.softmax.clipped);
      y[j] = !dropout ? value : (kept(stored[j]) ? value * keep_scale : T(0));
    }
  }
}

// One softmax row with a sink column, in place: with m = max(max_j x_j, a),
//   y_j = e^{x_j - m} / (e^{a - m} + sum_k e^{x_k - m})
// (the sum accumulated in double, as softmax_row). Returns the sink's share e^{a - m} / (...).
template <typename T>
T softmax_row_with_sink(T* row, int64_t n, T sink) {
  const T m = std::max(row_max(row, n), sink);
  for (int64_t j = 0; j < n; ++j) row[j] = exp_of(row[j] - m);
  const T sink_term = exp_of(sink - m);
  const T inverse = static_cast<T>(
      1.0 / (row_sum(row, static_cast<const T*>(nullptr), n) + static_cast<double>(sink_term)));
  for (int64_t j = 0; j < n; ++j) row[j] *= inverse;
  return sink_term * inverse;
}

// ---------------------------------------------------------------------------------------------
// The operands of one call, as raw row-major buffers. q, k, v are [B, T, *] with row stride `ld`
// (d when they are separate [B, T, d] tensors; 3d when they are the column blocks of one
// [B, T, 3d] QKV buffer); head h of row (b, t) is the d_h values at column h*d_h.
template <typename T>
struct CoreOperands {
  Geometry g;
  const T *q, *k, *v;
  int64_t ld;
  const T* pi;    // gate probabilities [B, T, H], or null
  const T* sink;  // sink logits [H], or null
  const uint8_t* key_ok;
  bool has_padding;
};

// Forward. Writes C [B, T, d] (contiguous), P [B, H, T, T], when gated the ungated O, and with a
// sink the sink's share of every row, sink_share [B, H, T].
template <typename T>
void fused_forward(const CoreOperands<T>& in, const AttentionCoreOptions& options, T* p_all, T* c,
                   T* ungated, T* sink_share) {
  const Geometry& g = in.g;
  const int64_t L = g.length, d = g.hidden, H = g.heads, dh = g.head_dim, ld = in.ld;
  const bool gated = in.pi != nullptr;
  const bool transform = options.softmax.clipped || options.dropout > 0.0f;  // Y~ differs from P
  const T* q = in.q;
  const T* k = in.k;
  const T* v = in.v;
  const T* pi = in.pi;
  T* o = gated ? ungated : c;
  const T scale = static_cast<T>(1.0 / std::sqrt(static_cast<double>(dh)));
  const T lowest = std::numeric_limits<T>::lowest();
  const bool masked = options.causal || in.has_padding;
  const uint8_t* key_ok = in.key_ok;

  const int threads = num_threads();
  // Per thread: the T x T block Y~ and, with dropout, its T x T keep mask.
  std::vector<T> scratch(transform ? static_cast<size_t>(threads) * L * L : 0);
  std::vector<uint8_t> keep_scratch(options.dropout > 0.0f ? static_cast<size_t>(threads) * L * L
                                                           : 0);
  const int64_t blocks = g.batch * H;
#pragma omp parallel for schedule(static) \
    num_threads(threads) if (qt::worth_parallel(blocks * L * L * dh, qt::WorkCost::light))
  for (int64_t bh = 0; bh < blocks; ++bh) {
    const int64_t b = bh / H, h = bh % H;
    const int64_t in_offset = b * L * ld + h * dh;  // element (b, t=0, column h*dh) of q / k / v
    const int64_t out_offset = b * L * d + h * dh;  // the same in the [B, T, d] outputs
    T* p = p_all + bh * L * L;
    // S = scale * Q_h K_h^T
    gemm(Trans::no, Trans::yes, L, L, dh, scale, q + in_offset, ld, k + in_offset, ld, T(0), p, L);
    for (int64_t i = 0; i < L; ++i) {
      T* row = p + i * L;
      if (masked) {
        const uint8_t* ok = key_ok + b * L;
        for (int64_t j = 0; j < L; ++j)
          row[j] = visible(ok, options.causal, i, j) ? row[j] : lowest;
      }
      if (in.sink != nullptr)
        sink_share[bh * L + i] = softmax_row_with_sink(row, L, in.sink[h]);
      else
        softmax_row(row, row, L);  // in place: p_j = exp(s_j - m) / sum_i exp(s_i - m)
    }
    const T* y = p;
    if (transform) {
      const size_t thread = static_cast<size_t>(omp_get_thread_num());
      T* w = scratch.data() + thread * L * L;
      uint8_t* keep = keep_scratch.empty() ? nullptr : keep_scratch.data() + thread * L * L;
      dropped_clipped_block(p, w, L, key_ok + b * L, options, static_cast<uint64_t>(bh * L * L),
                            keep);
      y = w;
    }
    // O_h = Y~ V_h, written into columns [h*dh, (h+1)*dh) of the [B, T, d] output
    gemm(Trans::no, Trans::no, L, dh, L, T(1), y, L, v + in_offset, ld, T(0), o + out_offset, d);
    if (gated) {
      for (int64_t t = 0; t < L; ++t) {
        const T gate_value = pi[(b * L + t) * H + h];
        const T* o_row = o + out_offset + t * d;
        T* c_row = c + out_offset + t * d;
        for (int64_t j = 0; j < dh; ++j) c_row[j] = gate_value * o_row[j];
      }
    }
  }
}

// Where the backward writes: dq, dk, dv with row stride ld_grad (null when not wanted; dq and dk
// come together), dpi [B, T, H] and dsink [H] (null when not wanted).
template <typename T>
struct CoreGradients {
  T *dq = nullptr, *dk = nullptr, *dv = nullptr;
  int64_t ld_grad = 0;
  T* dpi = nullptr;
  T* dsink = nullptr;
};

// Backward from dC [B, T, d] (contiguous).
template <typename T>
void fused_backward(const CoreOperands<T>& in, const AttentionCoreOptions& options, const T* p_all,
                    const T* ungated, const T* sink_share, const T* dc,
                    const CoreGradients<T>& out) {
  const Geometry& g = in.g;
  const int64_t L = g.length, d = g.hidden, H = g.heads, dh = g.head_dim, ld = in.ld;
  const int64_t ld_grad = out.ld_grad;
  const bool gated = in.pi != nullptr;
  const bool transform = options.softmax.clipped || options.dropout > 0.0f;
  const bool need_qk = out.dq != nullptr;
  const bool need_v = out.dv != nullptr;
  const bool need_sink = out.dsink != nullptr;
  const bool need_scores = need_qk || need_sink;  // the dS pass
  const T* q = in.q;
  const T* k = in.k;
  const T* v = in.v;
  const T* pi = in.pi;
  const T* o = ungated;
  T* dq = out.dq;
  T* dk = out.dk;
  T* dv = out.dv;
  T* dpi = out.dpi;
  const T scale = static_cast<T>(1.0 / std::sqrt(static_cast<double>(dh)));
  const T keep_scale = static_cast<T>(1.0 / (1.0 - static_cast<double>(options.dropout)));
  const bool masked = options.causal || in.has_padding;
  const uint8_t* key_ok = in.key_ok;

  const int threads = num_threads();
  // Per thread: one T x T block (Y~, then dY~ -> dS) and one T x d_h block (dO when gated).
  const size_t per_thread = static_cast<size_t>(L) * L + (gated ? static_cast<size_t>(L) * dh : 0);
  std::vector<T> scratch(static_cast<size_t>(threads) * per_thread);
  const int64_t blocks = g.batch * H;
  // da_h's part from block (b, h), summed over b in order after the loop
  std::vector<double> sink_partial(need_sink ? static_cast<size_t>(blocks) : 0, 0.0);
#pragma omp parallel for schedule(static) \
    num_threads(threads) if (qt::worth_parallel(blocks * L * L * dh, qt::WorkCost::light))
  for (int64_t bh = 0; bh < blocks; ++bh) {
    const int64_t b = bh / H, h = bh % H;
    const int64_t in_offset = b * L * ld + h * dh;
    const int64_t grad_offset = b * L * ld_grad + h * dh;
    const int64_t out_offset = b * L * d + h * dh;
    const T* p = p_all + bh * L * L;
    T* block = scratch.data() + static_cast<size_t>(omp_get_thread_num()) * per_thread;
    T* d_out = block + static_cast<size_t>(L) * L;  // dO scratch (gated only)

    // Gate: dpi[t] = sum_j dC[t, j] O[t, j];  dO = pi * dC.
    const T* d_o = dc + out_offset;
    int64_t ld_do = d;
    if (gated) {
      for (int64_t t = 0; t < L; ++t) {
        const T* dc_row = dc + out_offset + t * d;
        const T* o_row = o + out_offset + t * d;
        const T gate_value = pi[(b * L + t) * H + h];
        if (dpi != nullptr) {
          T total = 0;
          for (int64_t j = 0; j < dh; ++j) total += dc_row[j] * o_row[j];
          dpi[(b * L + t) * H + h] = total;
        }
        for (int64_t j = 0; j < dh; ++j) d_out[t * dh + j] = gate_value * dc_row[j];
      }
      d_o = d_out;
      ld_do = dh;
    }
    if (!need_scores && !need_v) continue;

    // dV_h = Y~^T dO, with Y~ recomputed from P.
    if (need_v) {
      const T* y = p;
      if (transform) {
        dropped_clipped_block_from_stored(p, block, L, key_ok + b * L, options);
        y = block;
      }
      gemm(Trans::yes, Trans::no, L, dh, L, T(1), y, L, d_o, ld_do, T(0), dv + grad_offset,
           ld_grad);
    }
    if (!need_scores) continue;

    // dY~ = dO V_h^T, then per row: undo dropout, clip mask, softmax backward.
    T* ds = block;
    gemm(Trans::no, Trans::yes, L, L, dh, T(1), d_o, ld_do, v + in_offset, ld, T(0), ds, L);
    for (int64_t i = 0; i < L; ++i) {
      T* row = ds + i * L;
      const T* stored_row = p + i * L;
      // g^_j = (zeta - gamma) m_j keep_j / (1 - p_drop) dY~_j
      if (options.dropout > 0.0f)
        for (int64_t j = 0; j < L; ++j) row[j] = kept(stored_row[j]) ? row[j] * keep_scale : T(0);
      if (options.softmax.clipped) {
        const TypedRowClip<T> c = clip_of_row<T>(options, key_ok + b * L, i, L);
        for (int64_t j = 0; j < L; ++j) {
          const T s = clip_stretch(probability(stored_row[j]), c.scale, c.gamma);
          row[j] = (s >= T(0) && s <= T(1)) ? c.scale * row[j] : T(0);
        }
      }
      // dS_j = p_j (g^_j - sum_i g^_i p_i)
      const T dot = static_cast<T>(lane_sum(L, [&](int64_t j) {
        return static_cast<double>(row[j]) * static_cast<double>(probability(stored_row[j]));
      }));
      for (int64_t j = 0; j < L; ++j) row[j] = probability(stored_row[j]) * (row[j] - dot);
      // da_h += P_i,sink (0 - dot): the dropped sink column's softmax backward
      if (need_sink)
        sink_partial[bh] -= static_cast<double>(sink_share[bh * L + i]) * static_cast<double>(dot);
      if (masked) {  // masked scores are constants: no gradient (matters for all-masked rows)
        const uint8_t* ok = key_ok + b * L;
        for (int64_t j = 0; j < L; ++j) row[j] = visible(ok, options.causal, i, j) ? row[j] : T(0);
      }
    }
    if (!need_qk) continue;
    // dQ_h = scale * dS K_h;  dK_h = scale * dS^T Q_h
    gemm(Trans::no, Trans::no, L, dh, L, scale, ds, L, k + in_offset, ld, T(0), dq + grad_offset,
         ld_grad);
    gemm(Trans::yes, Trans::no, L, dh, L, scale, ds, L, q + in_offset, ld, T(0), dk + grad_offset,
         ld_grad);
  }
  if (need_sink) {
    for (int64_t h = 0; h < H; ++h) {
      double total = 0;
      for (int64_t b = 0; b < g.batch; ++b) total += sink_partial[b * H + h];
      out.dsink[h] = static_cast<T>(total);
    }
  }
}

// Runs f(float{}) or f(double{}) for an f32 / f64 dtype (the core's inputs are checked floating).
template <typename F>
void dispatch_float(DType dtype, F&& f) {
  if (dtype == DType::f32)
    f(float{});
  else
    f(double{});
}

template <typename T>
T* data_or_null(const Tensor& t) {
  return t.defined() ? t.data<T>() : nullptr;
}

template <typename T>
CoreOperands<T> operands(const Validated& in, const T* q, const T* k, const T* v, int64_t ld) {
  return {in.g,
          q,
          k,
          v,
          ld,
          data_or_null<T>(in.gate),
          data_or_null<T>(in.sink),
          in.key_ok.data(),
          in.has_padding};
}
template <typename T>
CoreOperands<T> operands(const Validated& in, const Tensor& q, const Tensor& k, const Tensor& v,
                         int64_t ld) {
  return operands<T>(in, q.data<T>(), k.data<T>(), v.data<T>(), ld);
}

const char* const kQkvParameterNames[] = {"query.weight", "query.bias",   "key.weight",
                                          "key.bias",     "value.weight", "value.bias"};

// QKV [rows, 3d] = X [rows, d] W^T + b for the stacked W [3d, d], b [3d]: the bias rows are written
// first and the GEMM accumulates onto them (beta = 1), as nn::linear does.
template <typename T>
void project_qkv(const T* x, const T* weight, const T* bias, int64_t rows, int64_t d, T* qkv) {
  const int64_t width = 3 * d;
#pragma omp parallel for schedule(static) if (qt::worth_parallel(rows * width, qt::WorkCost::light))
  for (int64_t r = 0; r < rows; ++r) std::memcpy(qkv + r * width, bias, width * sizeof(T));
  gemm(Trans::no, Trans::yes, rows, width, d, T(1), x, d, weight, d, T(1), qkv, width);
}

// sums[j] = sum_r m[r, j] for m [rows, cols]: fixed chunks of kColumnSumChunk rows, each summed by
// one thread in row order, the chunk partials then added in chunk order (as nn::linear's bias
// gradient), so the result does not depend on the thread count.
constexpr int64_t kColumnSumChunk = 256;

template <typename T>
void column_sums(const T* m, int64_t rows, int64_t cols, T* sums) {
  const int64_t chunks = std::max<int64_t>(1, (rows + kColumnSumChunk - 1) / kColumnSumChunk);
  std::vector<T> partials(static_cast<size_t>(chunks * cols), T(0));
#pragma omp parallel for schedule(static) if (qt::worth_parallel(rows * cols, qt::WorkCost::light))
  for (int64_t c = 0; c < chunks; ++c) {
    T* partial = partials.data() + c * cols;
    const int64_t end = std::min(rows, (c + 1) * kColumnSumChunk);
    for (int64_t r = c * kColumnSumChunk; r < end; ++r) {
      const T* row = m + r * cols;
      for (int64_t j = 0; j < cols; ++j) partial[j] += row[j];
    }
  }
  std::copy(partials.begin(), partials.begin() + cols, sums);
  for (int64_t c = 1; c < chunks; ++c) {
    const T* partial = partials.data() + c * cols;
    for (int64_t j = 0; j < cols; ++j) sums[j] += partial[j];
  }
}

}  // namespace

namespace {

// What attention_core's forward keeps for its backward: the validated, contiguous, detached
// inputs, the probabilities P (dropout-coded, see fused_forward), the ungated output and the
// sink's share of every row.
struct CoreSaved {
  std::shared_ptr<Validated> in;
  AttentionCoreOptions options;
  Tensor P, ungated, sink_share;
};

// One field per input of attention_core (q, k, v, gate, sink), as PyTorch names an op's
// gradients: which gradients the graph needs, and the gradients (undefined where not needed).
template <typename V>
struct CoreInputs {
  V q{}, k{}, v{}, gate{}, sink{};
};
using CoreNeeds = CoreInputs<bool>;
using CoreInputGradients = CoreInputs<Tensor>;

// dL/dq, dL/dk, dL/dv, dL/dgate from dL/dC (formulas in attention_core.h).
CoreInputGradients attention_core_backward(const CoreSaved& saved, const Tensor& grad_context,
                                           const CoreNeeds& needs) {
  const Validated& in = *saved.in;
  const Geometry& g = in.g;
  const DType dtype = in.q.dtype();
  const Tensor dc = ops::contiguous(grad_context);
  CoreInputGradients grads;
  // Each block writes its full column slice of dq / dk / dv, so empty() is fully overwritten.
  // dq and dk come from the same pass: both are computed when either is needed.
  if (needs.q || needs.k) {
    grads.q = Tensor::empty(dc.shape(), dtype);
    grads.k = Tensor::empty(dc.shape(), dtype);
  }
  if (needs.v) grads.v = Tensor::empty(dc.shape(), dtype);
  if (in.gate.defined() && needs.gate)
    grads.gate = Tensor::empty({g.batch, g.length, g.heads}, dtype);
  if (in.sink.defined() && needs.sink) grads.sink = Tensor::empty({g.heads}, dtype);
  dispatch_float(dtype, [&](auto tag) {
    using T = decltype(tag);
    CoreGradients<T> out;
    out.dq = data_or_null<T>(grads.q);
    out.dk = data_or_null<T>(grads.k);
    out.dv = data_or_null<T>(grads.v);
    out.ld_grad = g.hidden;
    out.dpi = data_or_null<T>(grads.gate);
    out.dsink = data_or_null<T>(grads.sink);
    fused_backward<T>(operands<T>(in, in.q, in.k, in.v, g.hidden), saved.options, saved.P.data<T>(),
                      data_or_null<T>(saved.ungated), data_or_null<T>(saved.sink_share),
                      dc.data<T>(), out);
  });
  return grads;
}

// The sink's share of every row [B, H, T] when there is a sink column, else undefined.
Tensor sink_share_buffer(const Validated& in, DType dtype) {
  return in.sink.defined() ? Tensor::empty({in.g.batch, in.g.heads, in.g.length}, dtype) : Tensor();
}

}  // namespace

Tensor attention_core(const Tensor& q, const Tensor& k, const Tensor& v, const Tensor& gate,
                      const Tensor& key_padding_mask, const AttentionCoreOptions& options,
                      const Tensor& sink) {
  auto in = std::make_shared<Validated>(
      validate(q, k, v, gate, key_padding_mask, sink, options, "attention_core"));
  const Geometry& g = in->g;
  const DType dtype = in->q.dtype();
  const Tensor P = Tensor::empty({g.batch, g.heads, g.length, g.length}, dtype);
  const Tensor C = Tensor::empty({g.batch, g.length, g.hidden}, dtype);
  const Tensor ungated = in->gate.defined() ? Tensor::empty(C.shape(), dtype) : Tensor();
  const Tensor sink_share = sink_share_buffer(*in, dtype);
  dispatch_float(dtype, [&](auto tag) {
    using T = decltype(tag);
    fused_forward<T>(operands<T>(*in, in->q, in->k, in->v, g.hidden), options, P.data<T>(),
                     C.data<T>(), data_or_null<T>(ungated), data_or_null<T>(sink_share));
  });
  if (!any_requires_grad({q, k, v, gate, sink})) return C;
  // The closure keeps the contiguous inputs (detached: the Node already holds the originals),
  // P and the ungated output; nothing that refers back to C.
  in->q = in->q.detach();
  in->k = in->k.detach();
  in->v = in->v.detach();
  if (in->gate.defined()) in->gate = in->gate.detach();
  if (in->sink.defined()) in->sink = in->sink.detach();
  // The autograd node's inputs are {q, k, v, gate, sink}, in the order of CoreInputs.
  const CoreSaved saved{in, options, P, ungated, sink_share};
  return record(C, "attention_core", {q, k, v, gate, sink},
                [saved](const Tensor& grad, const std::vector<bool>& needs) {
                  const CoreInputGradients d = attention_core_backward(
                      saved, grad, CoreNeeds{needs[0], needs[1], needs[2], needs[3], needs[4]});
                  return std::vector<Tensor>{d.q, d.k, d.v, d.gate, d.sink};
                });
}

namespace {

// What attention_core_projected's forward keeps for its backward.
struct ProjectedSaved {
  std::shared_ptr<Validated> in;  // geometry, gate (detached), key mask
  AttentionCoreOptions options;
  Tensor x_matrix;        // x as [B·T, d]
  Tensor stacked_weight;  // [3d, d]: query, key, value weights
  Tensor qkv;             // [B, T, 3d]: Q, K, V side by side
  Tensor P, ungated, sink_share;
};

// One field per input of attention_core_projected (x, the three projections' weight and bias,
// the gate): which gradients the graph needs, and the gradients (undefined where not needed).
template <typename V>
struct ProjectedInputs {
  V x{}, query_weight{}, query_bias{}, key_weight{}, key_bias{}, value_weight{}, value_bias{},
      gate{}, sink{};
};
using ProjectedNeeds = ProjectedInputs<bool>;
using ProjectedInputGradients = ProjectedInputs<Tensor>;

// The backward of the fused projections + core: the core writes dQ, dK, dV into the column blocks
// of dQKV [B, T, 3d]; then dX = dQKV W_stacked (one GEMM, K = 3d), dW_stacked = dQKV^T X (one
// GEMM over all rows) and db_stacked = the column sums of dQKV, split back into the three
// projections.
ProjectedInputGradients attention_projected_backward(const ProjectedSaved& saved,
                                                     const Tensor& grad_context,
                                                     const ProjectedNeeds& needs) {
  const Validated& in = *saved.in;
  const Geometry& g = in.g;
  const int64_t d = g.hidden, rows = g.batch * g.length;
  const DType dtype = saved.qkv.dtype();
  const Tensor dc = ops::contiguous(grad_context);
  const bool need_weights = needs.query_weight || needs.key_weight || needs.value_weight;
  const bool need_biases = needs.query_bias || needs.key_bias || needs.value_bias;
  const bool need_qkv = needs.x || need_weights || need_biases;
  ProjectedInputGradients grads;
  if (in.gate.defined() && needs.gate)
    grads.gate = Tensor::empty({g.batch, g.length, g.heads}, dtype);
  if (in.sink.defined() && needs.sink) grads.sink = Tensor::empty({g.heads}, dtype);
  const Tensor dqkv = need_qkv ? Tensor::empty(saved.qkv.shape(), dtype) : Tensor();
  Tensor stacked_dw, stacked_db;
  if (needs.x) grads.x = Tensor::empty({g.batch, g.length, d}, dtype);
  if (need_weights) stacked_dw = Tensor::empty({3 * d, d}, dtype);
  if (need_biases) stacked_db = Tensor::empty({3 * d}, dtype);
  dispatch_float(dtype, [&](auto tag) {
    using T = decltype(tag);
    const T* base = saved.qkv.data<T>();
    CoreGradients<T> out;
    if (need_qkv) {
      T* dbase = dqkv.data<T>();
      out.dq = dbase;
      out.dk = dbase + d;
      out.dv = dbase + 2 * d;
      out.ld_grad = 3 * d;
    }
    out.dpi = data_or_null<T>(grads.gate);
    out.dsink = data_or_null<T>(grads.sink);
    fused_backward<T>(operands<T>(in, base, base + d, base + 2 * d, 3 * d), saved.options,
                      saved.P.data<T>(), data_or_null<T>(saved.ungated),
                      data_or_null<T>(saved.sink_share), dc.data<T>(), out);
    if (!need_qkv) return;
    const T* dq = dqkv.data<T>();
    if (needs.x)
      gemm(Trans::no, Trans::no, rows, d, 3 * d, T(1), dq, 3 * d, saved.stacked_weight.data<T>(), d,
           T(0), grads.x.data<T>(), d);
    if (need_weights)
      gemm(Trans::yes, Trans::no, 3 * d, d, rows, T(1), dq, 3 * d, saved.x_matrix.data<T>(), d,
           T(0), stacked_dw.data<T>(), d);
    if (need_biases) column_sums<T>(dq, rows, 3 * d, stacked_db.data<T>());
  });
  const auto part = [&](const Tensor& stacked, bool needed, int64_t index) {
    return needed ? ops::narrow(stacked, 0, index * d, d) : Tensor();
  };
  grads.query_weight = part(stacked_dw, needs.query_weight, 0);
  grads.query_bias = part(stacked_db, needs.query_bias, 0);
  grads.key_weight = part(stacked_dw, needs.key_weight, 1);
  grads.key_bias = part(stacked_db, needs.key_bias, 1);
  grads.value_weight = part(stacked_dw, needs.value_weight, 2);
  grads.value_bias = part(stacked_db, needs.value_bias, 2);
  return grads;
}

}  // namespace

Tensor attention_core_projected(const Tensor& x, const QkvWeights& w, const Tensor& gate,
                                const Tensor& key_padding_mask, const AttentionCoreOptions& options,
                                const Tensor& sink) {
  const char* op = "attention_core_projected";
  check_defined(x, op);
  check_floating(x, op);
  QT_CHECK(x.dim() == 3, "{}: x must be [B, T, d], got {}", op, shape_str(x.shape()));
  const int64_t d = x.shape()[2];
  const std::vector<Tensor> params = {w.query_weight, w.query_bias,   w.key_weight,
                                      w.key_bias,     w.value_weight, w.value_bias};
  for (size_t i = 0; i < params.size(); ++i) {
    const Tensor& t = params[i];
    check_defined(t, op);
    check_same_dtype(x, t, op);
    const Shape expected = i % 2 == 0 ? Shape{d, d} : Shape{d};
    QT_CHECK(t.shape() == expected, "{}: {} must be {} for x {}, got {}", op, kQkvParameterNames[i],
             shape_str(expected), shape_str(x.shape()), shape_str(t.shape()));
  }
  const int64_t heads = options.heads;
  QT_CHECK(heads >= 1 && d % heads == 0, "{}: hidden size {} is not divisible by heads = {}", op, d,
           heads);
  auto in = std::make_shared<Validated>();
  in->g = {x.shape()[0], x.shape()[1], d, heads, d / heads};
  validate_gate_mask_options(x, gate, key_padding_mask, sink, options, op, *in);
  const Geometry& g = in->g;
  const DType dtype = x.dtype();
  const int64_t rows = g.batch * g.length;

  // The three weights stacked [3d, d] and biases [3d]: one GEMM projects Q, K and V at once.
  Tensor stacked_weight = Tensor::empty({3 * d, d}, dtype);
  Tensor stacked_bias = Tensor::empty({3 * d}, dtype);
  for (int64_t part = 0; part < 3; ++part) {
    ops::copy_into(ops::narrow(stacked_weight, 0, part * d, d), params[2 * part].detach());
    ops::copy_into(ops::narrow(stacked_bias, 0, part * d, d), params[2 * part + 1].detach());
  }
  const Tensor x_matrix = ops::view(ops::contiguous(x.detach()), {rows, d});
  const Tensor qkv = Tensor::empty({g.batch, g.length, 3 * d}, dtype);
  const Tensor P = Tensor::empty({g.batch, g.heads, g.length, g.length}, dtype);
  const Tensor C = Tensor::empty({g.batch, g.length, d}, dtype);
  const Tensor ungated = in->gate.defined() ? Tensor::empty(C.shape(), dtype) : Tensor();
  const Tensor sink_share = sink_share_buffer(*in, dtype);
  dispatch_float(dtype, [&](auto tag) {
    using T = decltype(tag);
    project_qkv<T>(x_matrix.data<T>(), stacked_weight.data<T>(), stacked_bias.data<T>(), rows, d,
                   qkv.data<T>());
    const T* base = qkv.data<T>();
    fused_forward<T>(operands<T>(*in, base, base + d, base + 2 * d, 3 * d), options, P.data<T>(),
                     C.data<T>(), data_or_null<T>(ungated), data_or_null<T>(sink_share));
  });
  std::vector<Tensor> inputs = {x};
  inputs.insert(inputs.end(), params.begin(), params.end());
  inputs.push_back(gate);
  inputs.push_back(sink);
  if (!any_requires_grad(inputs)) return C;
  if (in->gate.defined()) in->gate = in->gate.detach();
  if (in->sink.defined()) in->sink = in->sink.detach();
  // The autograd node's inputs are {x, query.weight, query.bias, key.weight, key.bias,
  // value.weight, value.bias, gate, sink}, in the order of ProjectedInputs.
  const ProjectedSaved saved{in, options, x_matrix, stacked_weight, qkv, P, ungated, sink_share};
  return record(C, "attention_core_projected", inputs,
                [saved](const Tensor& grad, const std::vector<bool>& needs) {
                  const ProjectedInputGradients d = attention_projected_backward(
                      saved, grad,
                      ProjectedNeeds{needs[0], needs[1], needs[2], needs[3], needs[4], needs[5],
                                     needs[6], needs[7], needs[8]});
                  return std::vector<Tensor>{d.x,          d.query_weight, d.query_bias,
                                             d.key_weight, d.key_bias,     d.value_weight,
                                             d.value_bias, d.gate,         d.sink};
                });
}

Tensor attention_core_composed(const Tensor& q, const Tensor& k, const Tensor& v,
                               const Tensor& gate, const Tensor& key_padding_mask,
                               const AttentionCoreOptions& options, const Tensor& sink) {
  const Validated in =
      validate(q, k, v, gate, key_padding_mask, sink, options, "attention_core_composed");
  const Geometry& g = in.g;
  const int64_t B = g.batch, L = g.length, d = g.hidden, H = g.heads, dh = g.head_dim;
  // [B, T, d] -> [B, H, T, d_h]
  auto split_heads = [&](const Tensor& t) {
    return permute(reshape(t, {B, L, H, dh}), {0, 2, 1, 3});
  };
  const Tensor qh = split_heads(q), kh = split_heads(k), vh = split_heads(v);
  // S = Q K^T / sqrt(d_h)   [B, H, T, T]
  Tensor scores = mul(matmul(qh, transpose(kh, -1, -2)), 1.0 / std::sqrt(static_cast<double>(dh)));
  // Activation taps (quantization, analysis) see the scores before the mask is applied.
  const auto tap_point = [&](const char* what, const Tensor& x) {
    return options.tap_owner != nullptr ? tap(*options.tap_owner, what, x) : x;
  };
  scores = tap_point("scores", scores);
  if (options.causal || in.has_padding) {
    // visible[b, 0, i, j] = key j is a real token and (not causal or j <= i)
    std::vector<uint8_t> flags(B * L * L);
    for (int64_t b = 0; b < B; ++b)
      for (int64_t i = 0; i < L; ++i)
        for (int64_t j = 0; j < L; ++j)
          flags[(b * L + i) * L + j] = visible(in.key_ok.data() + b * L, options.causal, i, j);
    const Tensor visible_mask = ops::from_vector(flags, {B, 1, L, L});
    // Masked scores become the dtype's lowest value, as HF's additive dtype-min mask.
    const double lowest = q.dtype() == DType::f32
                              ? static_cast<double>(std::numeric_limits<float>::lowest())
                              : std::numeric_limits<double>::lowest();
    scores = where(visible_mask, scores, ops::full({1}, lowest, q.dtype()));
  }
  Tensor probs;
  if (sink.defined()) {
    // softmax over [S, a_h] (a_h broadcast to a column [B, H, T, 1]), the sink column dropped
    const Tensor column = expand(reshape(sink, {1, H, 1, 1}), {B, H, L, 1});
    probs = narrow(softmax(cat({scores, column}, -1), -1), -1, 0, L);
  } else {
    probs = options.softmax.clipped && !options.softmax.per_row
                ? clipped_softmax(scores, options.softmax.gamma, options.softmax.zeta, -1)
                : softmax(scores, -1);
    if (options.softmax.per_row) {
      // clip((1 - gamma_i) p + gamma_i, 0, 1) with gamma_i = -alpha / n_i per (b, i): [B, 1, T, 1]
      std::vector<double> scale(B * L), shift(B * L);
      for (int64_t b = 0; b < B; ++b)
        for (int64_t i = 0; i < L; ++i) {
          const RowClip c =
              row_clip(options.softmax,
                       visible_key_count(in.key_ok.data() + b * L, options.causal, i, L), L);
          scale[b * L + i] = c.scale;
          shift[b * L + i] = c.gamma;
        }
      const Tensor scale_t = ops::to(ops::from_vector(scale, {B, 1, L, 1}), q.dtype());
      const Tensor shift_t = ops::to(ops::from_vector(shift, {B, 1, L, 1}), q.dtype());
      probs = clamp(add(mul(probs, scale_t), shift_t), 0.0, 1.0);
    }
  }
  probs = tap_point("probabilities", probs);  // before dropout
  if (options.dropout > 0.0f)
    probs =
        dropout(contiguous(probs), options.dropout, options.dropout_seed, options.dropout_stream);
  Tensor out = tap_point("context", matmul(probs, vh));                         // [B, H, T, d_h]
  if (gate.defined()) out = mul(out, unsqueeze(permute(gate, {0, 2, 1}), -1));  // pi [B, H, T, 1]
  return reshape(permute(out, {0, 2, 1, 3}), {B, L, d});
}

}  // namespace qt::nn
