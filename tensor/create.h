// Creating tensors: constants, ranges, copies of host data, and seeded random fills.
#pragma once

#include <cstdint>
#include <vector>

#include "tensor/tensor.h"

namespace qt::ops {

Tensor zeros(const Shape& shape, DType dtype = DType::f32);
Tensor ones(const Shape& shape, DType dtype = DType::f32);
Tensor full(const Shape& shape, double value, DType dtype = DType::f32);
Tensor scalar(double value, DType dtype = DType::f32);  // a rank-0 tensor
Tensor zeros_like(const Tensor& t);
Tensor ones_like(const Tensor& t);
// [start, start+step, ...) up to (excluding) end, like numpy.arange.
Tensor arange(double start, double end, double step = 1, DType dtype = DType::i64);
// Copies host data; values.size() must equal numel(shape).
Tensor from_vector(const std::vector<float>& values, const Shape& shape);
Tensor from_vector(const std::vector<double>& values, const Shape& shape);
Tensor from_vector(const std::vector<int64_t>& values, const Shape& shape);
Tensor from_vector(const std::vector<int32_t>& values, const Shape& shape);
Tensor from_vector(const std::vector<uint8_t>& values, const Shape& shape);
Tensor from_vector(const std::vector<int8_t>& values, const Shape& shape);
// The elements in row-major order (any layout), converted to T.
template <typename T>
std::vector<T> to_vector(const Tensor& t);

// Random fills: element i (row-major) = f(seed, stream, i); see tensor/random.h.
Tensor randn(const Shape& shape, uint64_t seed, uint64_t stream = 0, DType dtype = DType::f32,
             double mean = 0, double std = 1);
Tensor rand(const Shape& shape, uint64_t seed, uint64_t stream = 0, DType dtype = DType::f32,
            double low = 0, double high = 1);  // uniform [low, high)
// 1 with probability p, else 0 (dtype u8 by default).
Tensor bernoulli(const Shape& shape, double p, uint64_t seed, uint64_t stream = 0,
                 DType dtype = DType::u8);

// Fills an existing tensor in place (any layout).
void fill_(const Tensor& t, double value);

}  // namespace qt::ops
