// Dropout with a counter-based mask: whether element i is dropped depends only on
// (seed, stream, i), never on thread count or on what else was drawn. A training run passes
// stream = a value derived from (layer id, step) (see dropout_stream), so a resumed run draws
// exactly the masks the uninterrupted run would have.
//
// Forward (inverted dropout): y_i = x_i * m_i / (1 - p), m_i = [u_i >= p], u_i ~ U[0,1).
// Backward: dx_i = dy_i * m_i / (1 - p).
#pragma once

#include <cstdint>

#include "nn/module.h"

namespace qt::nn {

// The stream for one dropout site at one training step: layer ids are small fixed integers given
// at construction; steps count optimizer micro-steps.
inline uint64_t dropout_stream(uint64_t layer_id, uint64_t step) {
  return (step << 16) ^ layer_id;
}

// True when element `index` is kept (the one definition every dropout site uses, including the
// fused attention kernel's dropout on attention probabilities).
bool dropout_keep(uint64_t seed, uint64_t stream, uint64_t index, float p);
// The same decision for `count` consecutive elements: keep[j] = dropout_keep(seed, stream,
// first_index + j, p) ? 1 : 0. A vectorized Philox (several elements per instruction), ~10x faster
// than calling dropout_keep per element; bit-for-bit the same decisions.
void dropout_keep_mask(uint64_t seed, uint64_t stream, uint64_t first_index, int64_t count, float p,
                       uint8_t* keep);

// Differentiable dropout; p == 0 returns x itself.
Tensor dropout(const Tensor& x, float p, uint64_t seed, uint64_t stream);

// The random state a module with dropout needs: one seed for the run, the current step (set by the
// trainer before each forward), and this site's fixed layer id.
struct DropoutState {
  uint64_t seed = 0;
  uint64_t step = 0;
};

class Dropout : public Module {
 public:
  // `state` is shared by every dropout site of a model; layer_id must be unique per site.
  Dropout(float p, std::shared_ptr<DropoutState> state, uint64_t layer_id);
  // Identity in eval mode or when p == 0.
  Tensor forward(const Tensor& x) const;

  float p;
  std::shared_ptr<DropoutState> state;
  uint64_t layer_id;
};

}  // namespace qt::nn
