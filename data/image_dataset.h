// Image classification data for ViT: MNIST and Fashion-MNIST (IDX files fetched by
// tools/fetch_data.sh into DATA_DIR/{mnist,fashion-mnist}/), and the per-image pipeline
//
//   u8 pixel -> [random crop] -> [horizontal flip] -> (x / 255 - mean) / std -> patches
//
// Split: the official files — train = train-*-ubyte (60,000), validation = t10k-*-ubyte (10,000).
//
// Augmentation (training only; data.augment):
//   random crop: pad the image with `crop_padding` zero pixels (black, the background) on every
//     side and cut a window of the original size at a uniformly random offset (torchvision's
//     RandomCrop(28, padding=2));
//   horizontal flip with probability 1/2 — off for MNIST (a mirrored 2 or 7 is not a digit),
//     on for Fashion-MNIST (a mirrored shoe is still a shoe).
// Each image's draws come from Philox (tensor/random.h) for counter
//   { sample index (low, high 32 bits), epoch, kImageStream }  under key  seed:
// w0 -> vertical offset, w1 -> horizontal offset, w2 -> flip. So they depend only on
// (seed, epoch, sample), never on batch composition, ranks or threads.
//
// Normalisation uses the mean and standard deviation of all training pixels (in [0, 1] units;
// MNIST: 0.1307 and 0.3081), computed exactly from a 256-bin histogram.
//
// Patches (ViT, models/vit.h): an image [C, H, W] becomes [(H/p)*(W/p), C*p*p]; patch n = py*(W/p)
// + px covers rows py*p .. py*p+p-1 and columns px*p .. px*p+p-1, and its features are ordered
// (c, dy, dx) — the flattening of a stride-p convolution's weight [d, C, p, p].
#pragma once

#include <cstdint>
#include <span>
#include <string>

#include "data/batch.h"
#include "data/split.h"
#include "tensor/tensor.h"

namespace qt::data {

inline constexpr uint32_t kImageStream = 0x494d4700;  // "IMG\0"

struct ImageDataset {
  std::string name;  // "mnist", "fashion-mnist"
  Tensor images;     // u8 [N, H, W]
  Tensor labels;     // i64 [N]
  int64_t num_classes = 10;

  int64_t size() const { return images.size(0); }
  int64_t height() const { return images.size(1); }
  int64_t width() const { return images.size(2); }
};

// Reads an image file and a label file and checks that they hold the same number of samples.
ImageDataset load_idx_dataset(const std::string& images_path, const std::string& labels_path,
                              int64_t num_classes = 10);

// name: "mnist" or "fashion-mnist"; reads DATA_DIR/<name>/{train,t10k}-*-ubyte.
ImageDataset load_image_dataset(const std::string& data_dir, const std::string& name, Split split);

struct PixelStats {
  double mean = 0;  // of pixel / 255
  double std = 1;
};

// Mean and (population) standard deviation of all pixels of a u8 image tensor, in [0, 1] units.
PixelStats pixel_stats(const Tensor& images);

struct ImageTransform {
  PixelStats stats;
  int64_t patch_size = 4;
  int64_t crop_padding = 0;      // 0: no random crop
  bool horizontal_flip = false;  // flip with probability 1/2
  uint64_t seed = 0;
};

// The transform of a dataset: training with augment -> crop padding 2, flip only for
// fashion-mnist; otherwise no augmentation. `stats` should be the training set's.
ImageTransform default_image_transform(const std::string& dataset_name, PixelStats stats,
                                       int64_t patch_size, bool augment, uint64_t seed);

// One u8 image [H, W] -> normalised, augmented f32 [H, W].
void transform_image(const uint8_t* image, int64_t height, int64_t width, int64_t sample_index,
                     int64_t epoch, const ImageTransform& transform, float* out);

// f32 images [N, C, H, W] -> patches [N, (H/p)*(W/p), C*p*p].
Tensor patchify(const Tensor& images, int64_t patch_size);

// images f32 [B, num_patches, p*p] (transformed and patchified) and labels i64 [B].
Batch make_image_batch(const ImageDataset& dataset, std::span<const int64_t> sample_indices,
                       int64_t epoch, const ImageTransform& transform);

}  // namespace qt::data
