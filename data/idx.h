// The IDX file format of MNIST and Fashion-MNIST (http://yann.lecun.com/exdb/mnist/):
//
//   bytes 0-1   0x00 0x00
//   byte  2     element type: 0x08 = unsigned byte (the only type these datasets use)
//   byte  3     number of dimensions: 3 for images (N, rows, cols), 1 for labels (N)
//   then one big-endian uint32 per dimension, then the elements, row-major, one byte each.
//
// So the magic number (bytes 0-3 read as a big-endian uint32) is 0x00000803 for an image file and
// 0x00000801 for a label file. The readers check everything — magic, dimensions, that the file
// size equals header + elements exactly, label values — and throw qt::Error naming the file; a
// corrupt or truncated file never crashes and never yields garbage.
#pragma once

#include <cstdint>
#include <string>

#include "tensor/tensor.h"

namespace qt::data {

inline constexpr uint32_t kIdxImageMagic = 0x00000803;
inline constexpr uint32_t kIdxLabelMagic = 0x00000801;

// An image file -> u8 tensor [N, rows, cols].
Tensor read_idx_images(const std::string& path);

// A label file -> i64 tensor [N]; every label must be < num_classes.
Tensor read_idx_labels(const std::string& path, int64_t num_classes = 10);

}  // namespace qt::data
