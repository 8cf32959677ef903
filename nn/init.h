// Deterministic parameter initialisation. A model is built with one InitRng; every tensor it
// initialises draws from the next Philox stream, so the same seed and the same construction order
// give bit-identical weights on any machine and thread count.
#pragma once

#include <cmath>
#include <cstdint>

#include "tensor/create.h"

namespace qt::nn {

struct InitRng {
  uint64_t seed = 0;
  uint64_t next_stream = 0;

  // U(low, high)
  Tensor uniform(const Shape& shape, double low, double high, DType dtype = DType::f32) {
    return ops::rand(shape, seed, next_stream++, dtype, low, high);
  }
  // N(0, std^2)
  Tensor normal(const Shape& shape, double std, DType dtype = DType::f32) {
    return ops::randn(shape, seed, next_stream++, dtype, 0.0, std);
  }
  // PyTorch's default for nn.Linear weight and bias: U(-1/sqrt(fan_in), +1/sqrt(fan_in))
  // (kaiming_uniform with a = sqrt(5) works out to exactly this bound).
  Tensor linear_default(const Shape& shape, int64_t fan_in, DType dtype = DType::f32) {
    const double bound = 1.0 / std::sqrt(static_cast<double>(fan_in));
    return uniform(shape, -bound, bound, dtype);
  }
};

}  // namespace qt::nn
