// Image datasets and the per-image pipeline (see image_dataset.h).
#include "data/image_dataset.h"

#include <array>
#include <cmath>
#include <filesystem>
#include <vector>

#include "data/idx.h"
#include "tensor/error.h"
#include "tensor/random.h"

namespace qt::data {

namespace {

// Copies one image [C, H, W] into its patches [(H/p)*(W/p), C*p*p] (layout in image_dataset.h).
void patchify_image(const float* image, int64_t channels, int64_t height, int64_t width,
                    int64_t patch, float* out) {
  const int64_t patches_per_row = width / patch;
  const int64_t patch_dim = channels * patch * patch;
  for (int64_t py = 0; py < height / patch; ++py) {
    for (int64_t px = 0; px < patches_per_row; ++px) {
      float* features = out + (py * patches_per_row + px) * patch_dim;
      for (int64_t c = 0; c < channels; ++c) {
        for (int64_t dy = 0; dy < patch; ++dy) {
          const float* row = image + (c * height + py * patch + dy) * width + px * patch;
          float* destination = features + (c * patch + dy) * patch;
          for (int64_t dx = 0; dx < patch; ++dx) destination[dx] = row[dx];
        }
      }
    }
  }
}

void check_patch_size(int64_t height, int64_t width, int64_t patch, const char* op) {
  QT_CHECK(patch > 0 && height % patch == 0 && width % patch == 0,
           "{}: patch size {} must divide the image size {} x {}", op, patch, height, width);
}

}  // namespace

ImageDataset load_idx_dataset(const std::string& images_path, const std::string& labels_path,
                              int64_t num_classes) {
  ImageDataset dataset;
  dataset.images = read_idx_images(images_path);
  dataset.labels = read_idx_labels(labels_path, num_classes);
  dataset.num_classes = num_classes;
  QT_CHECK(dataset.images.size(0) == dataset.labels.size(0),
           "load_idx_dataset: '{}' holds {} images but '{}' holds {} labels", images_path,
           dataset.images.size(0), labels_path, dataset.labels.size(0));
  return dataset;
}

ImageDataset load_image_dataset(const std::string& data_dir, const std::string& name, Split split) {
  QT_CHECK(name == "mnist" || name == "fashion-mnist",
           "load_image_dataset: unknown dataset '{}' (mnist | fashion-mnist)", name);
  const std::filesystem::path dir = std::filesystem::path(data_dir) / name;
  QT_CHECK(std::filesystem::is_directory(dir),
           "load_image_dataset: directory '{}' not found: run `make data` (tools/fetch_data.sh) "
           "or point data.dir at the downloads",
           dir.string());
  const std::string prefix = split == Split::train ? "train" : "t10k";
  ImageDataset dataset = load_idx_dataset((dir / (prefix + "-images-idx3-ubyte")).string(),
                                          (dir / (prefix + "-labels-idx1-ubyte")).string());
  dataset.name = name;
  return dataset;
}

PixelStats pixel_stats(const Tensor& images) {
  check_dtype(images, DType::u8, "pixel_stats");
  QT_CHECK(images.numel() > 0 && images.is_contiguous(),
           "pixel_stats: needs a non-empty contiguous tensor, got {}", shape_str(images.shape()));
  std::array<int64_t, 256> histogram{};
  const uint8_t* pixels = images.data<uint8_t>();
  for (int64_t i = 0; i < images.numel(); ++i) ++histogram[pixels[i]];
  const double count = static_cast<double>(images.numel());
  double sum = 0;
  for (int v = 0; v < 256; ++v) sum += static_cast<double>(histogram[v]) * (v / 255.0);
  PixelStats stats;
  stats.mean = sum / count;
  double squares = 0;
  for (int v = 0; v < 256; ++v) {
    const double deviation = v / 255.0 - stats.mean;
    squares += static_cast<double>(histogram[v]) * deviation * deviation;
  }
  stats.std = std::sqrt(squares / count);
  return stats;
}

ImageTransform default_image_transform(const std::string& dataset_name, PixelStats stats,
                                       int64_t patch_size, bool augment, uint64_t seed) {
  ImageTransform transform;
  transform.stats = stats;
  transform.patch_size = patch_size;
  transform.seed = seed;
  if (augment) {
    transform.crop_padding = 2;
    transform.horizontal_flip = dataset_name == "fashion-mnist";
  }
  return transform;
}

void transform_image(const uint8_t* image, int64_t height, int64_t width, int64_t sample_index,
                     int64_t epoch, const ImageTransform& transform, float* out) {
  QT_CHECK(transform.crop_padding >= 0 && transform.stats.std > 0,
           "transform_image: crop_padding must be >= 0 and std > 0 (got {} and {})",
           transform.crop_padding, transform.stats.std);
  QT_CHECK(epoch >= 0 && epoch <= UINT32_MAX && sample_index >= 0,
           "transform_image: epoch {} and sample index {} must be non-negative (epoch < 2^32)",
           epoch, sample_index);
  // Normalised value of every possible pixel byte.
  std::array<float, 256> normalised;
  for (int v = 0; v < 256; ++v)
    normalised[v] = static_cast<float>((v / 255.0 - transform.stats.mean) / transform.stats.std);

  // Window offset relative to the original image, in [-padding, padding], and the flip.
  int64_t offset_y = 0;
  int64_t offset_x = 0;
  bool flip = false;
  if (transform.crop_padding > 0 || transform.horizontal_flip) {
    const std::array<uint32_t, 4> words = philox4x32(
        {static_cast<uint32_t>(sample_index), static_cast<uint32_t>(uint64_t(sample_index) >> 32),
         static_cast<uint32_t>(epoch), kImageStream},
        {static_cast<uint32_t>(transform.seed), static_cast<uint32_t>(transform.seed >> 32)});
    const uint64_t positions = static_cast<uint64_t>(2 * transform.crop_padding + 1);
    offset_y =
        static_cast<int64_t>((uint64_t{words[0]} * positions) >> 32) - transform.crop_padding;
    offset_x =
        static_cast<int64_t>((uint64_t{words[1]} * positions) >> 32) - transform.crop_padding;
    flip = transform.horizontal_flip && (words[2] >> 31) != 0;
  }
  // out(y, x) = padded window at (y + offset_y, x' + offset_x), x' = flip ? W-1-x : x; outside the
  // original image the padding is a 0 (black) pixel.
  for (int64_t y = 0; y < height; ++y) {
    const int64_t source_y = y + offset_y;
    for (int64_t x = 0; x < width; ++x) {
      const int64_t source_x = (flip ? width - 1 - x : x) + offset_x;
      const bool inside = source_y >= 0 && source_y < height && source_x >= 0 && source_x < width;
      out[y * width + x] = normalised[inside ? image[source_y * width + source_x] : 0];
    }
  }
}

Tensor patchify(const Tensor& images, int64_t patch_size) {
  check_dtype(images, DType::f32, "patchify");
  check_rank(images, 4, "patchify");
  QT_CHECK(images.is_contiguous(), "patchify: needs a contiguous tensor");
  const int64_t count = images.size(0);
  const int64_t channels = images.size(1);
  const int64_t height = images.size(2);
  const int64_t width = images.size(3);
  check_patch_size(height, width, patch_size, "patchify");
  const int64_t num_patches = (height / patch_size) * (width / patch_size);
  const int64_t patch_dim = channels * patch_size * patch_size;
  Tensor patches = Tensor::empty({count, num_patches, patch_dim}, DType::f32);
  for (int64_t n = 0; n < count; ++n) {
    patchify_image(images.data<float>() + n * channels * height * width, channels, height, width,
                   patch_size, patches.data<float>() + n * num_patches * patch_dim);
  }
  return patches;
}

Batch make_image_batch(const ImageDataset& dataset, std::span<const int64_t> sample_indices,
                       int64_t epoch, const ImageTransform& transform) {
  const char* op = "make_image_batch";
  check_dtype(dataset.images, DType::u8, op);
  check_rank(dataset.images, 3, op);
  const int64_t height = dataset.height();
  const int64_t width = dataset.width();
  const int64_t patch = transform.patch_size;
  check_patch_size(height, width, patch, op);
  const int64_t batch = static_cast<int64_t>(sample_indices.size());
  const int64_t num_patches = (height / patch) * (width / patch);
  const int64_t patch_dim = patch * patch;

  Batch result;
  result.images = Tensor::empty({batch, num_patches, patch_dim}, DType::f32);
  result.labels = Tensor::empty({batch}, DType::i64);
  result.epoch = epoch;
  std::vector<float> image(static_cast<size_t>(height * width));
  for (int64_t b = 0; b < batch; ++b) {
    const int64_t index = sample_indices[b];
    QT_CHECK(index >= 0 && index < dataset.size(), "{}: sample {} is not in [0, {})", op, index,
             dataset.size());
    transform_image(dataset.images.data<uint8_t>() + index * height * width, height, width, index,
                    epoch, transform, image.data());
    patchify_image(image.data(), 1, height, width, patch,
                   result.images.data<float>() + b * num_patches * patch_dim);
    result.labels.data<int64_t>()[b] = dataset.labels.data<int64_t>()[index];
  }
  return result;
}

}  // namespace qt::data
