// Tests for data/image_dataset.*: pixel statistics against a direct two-pass loop, normalisation
// and patch layout against hand-computed values, random crops checked to be real crops (one of
// the (2p+1)^2 shifted copies of the image, zero-filled) with uniform offsets, flips at rate 1/2
// only when enabled, and loading from hand-built IDX files.
#include <doctest/doctest.h>

#include <cmath>
#include <cstdint>
#include <filesystem>
#include <fstream>
#include <map>
#include <random>
#include <string>
#include <vector>

#include <unistd.h>

#include "data/image_dataset.h"
#include "tensor/create.h"
#include "tensor/error.h"

#include "tests/test_util.h"

using namespace qt;

namespace {

std::filesystem::path test_directory() {
  return qt::test::scratch_directory("image_dataset");
}

void write_idx(const std::filesystem::path& path, uint32_t magic,
               const std::vector<uint32_t>& sizes, const std::vector<uint8_t>& data) {
  std::vector<uint8_t> bytes;
  auto put = [&bytes](uint32_t v) {
    for (int shift = 24; shift >= 0; shift -= 8) bytes.push_back(static_cast<uint8_t>(v >> shift));
  };
  put(magic);
  for (uint32_t s : sizes) put(s);
  bytes.insert(bytes.end(), data.begin(), data.end());
  std::ofstream(path, std::ios::binary)
      .write(reinterpret_cast<const char*>(bytes.data()),
             static_cast<std::streamsize>(bytes.size()));
}

std::vector<uint8_t> random_pixels(size_t count, unsigned seed) {
  std::mt19937 generator(seed);
  std::uniform_int_distribution<int> pixel(1, 255);  // no zeros: padding is recognisable
  std::vector<uint8_t> pixels(count);
  for (auto& p : pixels) p = static_cast<uint8_t>(pixel(generator));
  return pixels;
}

// The image shifted by (dy, dx) with zero fill, optionally mirrored, as normalised floats:
// out(y, x) = in(y + dy, x' + dx), x' = flip ? W-1-x : x.
std::vector<float> shifted(const std::vector<uint8_t>& image, int h, int w, int dy, int dx,
                           bool flip, data::PixelStats stats) {
  std::vector<float> out(h * w);
  for (int y = 0; y < h; ++y) {
    for (int x = 0; x < w; ++x) {
      const int sy = y + dy;
      const int sx = (flip ? w - 1 - x : x) + dx;
      const int v = (sy >= 0 && sy < h && sx >= 0 && sx < w) ? image[sy * w + sx] : 0;
      out[y * w + x] = static_cast<float>((v / 255.0 - stats.mean) / stats.std);
    }
  }
  return out;
}

}  // namespace

TEST_CASE("image_dataset: pixel_stats equals a direct two-pass mean and std") {
  const std::vector<uint8_t> pixels = random_pixels(2 * 5 * 7, 3);
  const Tensor images = ops::from_vector(pixels, {2, 5, 7});
  double sum = 0;
  for (uint8_t p : pixels) sum += p / 255.0;
  const double mean = sum / pixels.size();
  double squares = 0;
  for (uint8_t p : pixels) squares += (p / 255.0 - mean) * (p / 255.0 - mean);
  const data::PixelStats stats = data::pixel_stats(images);
  CHECK(stats.mean == doctest::Approx(mean).epsilon(1e-12));
  CHECK(stats.std == doctest::Approx(std::sqrt(squares / pixels.size())).epsilon(1e-12));
  // A constant image: std 0, mean exact.
  const data::PixelStats flat = data::pixel_stats(ops::full({1, 2, 2}, 51, DType::u8));
  CHECK(flat.mean == doctest::Approx(0.2));
  CHECK(flat.std == 0);
  CHECK_THROWS_AS(data::pixel_stats(ops::zeros({2, 2})), Error);
}

TEST_CASE("image_dataset: without augmentation a pixel v becomes (v/255 - mean) / std") {
  const std::vector<uint8_t> image = {0, 255, 51, 102};
  data::ImageTransform transform;
  transform.stats = {0.5, 0.25};
  std::vector<float> out(4);
  data::transform_image(image.data(), 2, 2, 7, 3, transform, out.data());
  CHECK(out[0] == doctest::Approx(-2.0));
  CHECK(out[1] == doctest::Approx(2.0));
  CHECK(out[2] == doctest::Approx((0.2 - 0.5) / 0.25));
  CHECK(out[3] == doctest::Approx((0.4 - 0.5) / 0.25));
}

TEST_CASE("image_dataset: random crops are zero-padded shifts with uniform offsets") {
  const int h = 6, w = 5;
  const std::vector<uint8_t> image = random_pixels(h * w, 11);
  data::ImageTransform transform;
  transform.stats = {0.1, 0.3};
  transform.crop_padding = 2;
  transform.seed = 1234;
  std::map<std::pair<int, int>, int> offsets;
  const int samples = 2500;
  std::vector<float> out(h * w);
  for (int sample = 0; sample < samples; ++sample) {
    data::transform_image(image.data(), h, w, sample, 0, transform, out.data());
    int matches = 0;
    for (int dy = -2; dy <= 2; ++dy) {
      for (int dx = -2; dx <= 2; ++dx) {
        if (shifted(image, h, w, dy, dx, false, transform.stats) == out) {
          ++matches;
          ++offsets[{dy, dx}];
        }
      }
    }
    REQUIRE(matches == 1);  // exactly one shift, never a flip (flip is off)
  }
  // 25 offsets, 100 expected each; binomial std ~ 9.8, so [55, 145] is > 4.5 sigma.
  CHECK(offsets.size() == 25);
  for (const auto& [offset, count] : offsets) {
    CHECK(count > 55);
    CHECK(count < 145);
  }
}

TEST_CASE("image_dataset: flips happen half of the time, only when enabled, deterministically") {
  const int h = 4, w = 4;
  const std::vector<uint8_t> image = random_pixels(h * w, 5);
  data::ImageTransform transform;
  transform.stats = {0, 1};
  transform.horizontal_flip = true;
  transform.seed = 99;
  std::vector<float> out(h * w), again(h * w);
  const std::vector<float> plain = shifted(image, h, w, 0, 0, false, transform.stats);
  const std::vector<float> mirrored = shifted(image, h, w, 0, 0, true, transform.stats);
  int flips = 0;
  const int samples = 2000;
  for (int sample = 0; sample < samples; ++sample) {
    data::transform_image(image.data(), h, w, sample, 4, transform, out.data());
    REQUIRE((out == plain || out == mirrored));
    flips += out == mirrored;
    data::transform_image(image.data(), h, w, sample, 4, transform, again.data());
    REQUIRE(out == again);  // same (seed, epoch, sample): same result
  }
  CHECK(flips > 1000 - 120);  // binomial std 22.4: > 5 sigma
  CHECK(flips < 1000 + 120);
  // Another epoch gives another draw for some sample.
  int differ = 0;
  for (int sample = 0; sample < 64; ++sample) {
    data::transform_image(image.data(), h, w, sample, 4, transform, out.data());
    data::transform_image(image.data(), h, w, sample, 5, transform, again.data());
    differ += out != again;
  }
  CHECK(differ > 10);
}

TEST_CASE("image_dataset: the default transforms (crop for both, flip only for fashion-mnist)") {
  const data::PixelStats stats{0.13, 0.31};
  const data::ImageTransform mnist = data::default_image_transform("mnist", stats, 7, true, 1);
  CHECK(mnist.crop_padding == 2);
  CHECK_FALSE(mnist.horizontal_flip);
  CHECK(mnist.patch_size == 7);
  const data::ImageTransform fashion =
      data::default_image_transform("fashion-mnist", stats, 4, true, 1);
  CHECK(fashion.crop_padding == 2);
  CHECK(fashion.horizontal_flip);
  const data::ImageTransform eval =
      data::default_image_transform("fashion-mnist", stats, 4, false, 1);
  CHECK(eval.crop_padding == 0);
  CHECK_FALSE(eval.horizontal_flip);
}

TEST_CASE("image_dataset: patchify matches the hand-computed layout") {
  // A 4 x 4 image holding 0..15, patches of 2: row-major patches, each row-major inside.
  std::vector<float> values(16);
  for (int i = 0; i < 16; ++i) values[i] = static_cast<float>(i);
  const Tensor patches = data::patchify(ops::from_vector(values, {1, 1, 4, 4}), 2);
  CHECK(patches.shape() == Shape{1, 4, 4});
  const std::vector<float> expected = {0, 1, 4, 5, 2, 3, 6, 7, 8, 9, 12, 13, 10, 11, 14, 15};
  CHECK(ops::to_vector<float>(patches) == expected);

  // Two channels, 2 x 4 image, patch 2: features ordered (channel, dy, dx) as a conv weight.
  std::vector<float> two_channels(2 * 2 * 4);
  for (int i = 0; i < 16; ++i) two_channels[i] = static_cast<float>(100 + i);
  const Tensor two = data::patchify(ops::from_vector(two_channels, {1, 2, 2, 4}), 2);
  CHECK(two.shape() == Shape{1, 2, 8});
  // Patch 1 (columns 2-3): channel 0 rows 0-1 -> 102 103 106 107, channel 1 -> 110 111 114 115.
  CHECK(two.at({0, 1, 0}) == 102);
  CHECK(two.at({0, 1, 3}) == 107);
  CHECK(two.at({0, 1, 4}) == 110);
  CHECK(two.at({0, 1, 7}) == 115);

  CHECK_THROWS_WITH_AS(data::patchify(ops::zeros({1, 1, 6, 6}), 4), doctest::Contains("divide"),
                       Error);
  CHECK_THROWS_AS(data::patchify(ops::zeros({1, 6, 6}), 2), Error);
}

TEST_CASE("image_dataset: loads IDX pairs and builds normalised, patchified batches") {
  const std::filesystem::path dir = test_directory() / "mnist";
  std::filesystem::create_directories(dir);
  // 3 images of 4 x 4: image n holds the value 10n + (row-major position).
  std::vector<uint8_t> pixels;
  for (int n = 0; n < 3; ++n)
    for (int i = 0; i < 16; ++i) pixels.push_back(static_cast<uint8_t>(10 * n + i));
  write_idx(dir / "t10k-images-idx3-ubyte", 0x803, {3, 4, 4}, pixels);
  write_idx(dir / "t10k-labels-idx1-ubyte", 0x801, {3}, {4, 0, 9});
  const data::ImageDataset dataset =
      data::load_image_dataset(test_directory().string(), "mnist", data::Split::validation);
  CHECK(dataset.name == "mnist");
  CHECK(dataset.size() == 3);
  CHECK(dataset.height() == 4);

  data::ImageTransform transform;
  transform.stats = {0.0, 1.0 / 255.0};  // normalised value = the raw pixel value
  transform.patch_size = 2;
  const std::vector<int64_t> indices = {2, 0};
  const data::Batch batch = data::make_image_batch(dataset, indices, 0, transform);
  CHECK(batch.images.shape() == Shape{2, 4, 4});
  CHECK(ops::to_vector<int64_t>(batch.labels) == std::vector<int64_t>{9, 4});
  // Sample 2, patch 3 (rows 2-3, columns 2-3): positions 10 11 14 15, plus 20.
  CHECK(batch.images.at({0, 3, 0}) == doctest::Approx(30));
  CHECK(batch.images.at({0, 3, 1}) == doctest::Approx(31));
  CHECK(batch.images.at({0, 3, 2}) == doctest::Approx(34));
  CHECK(batch.images.at({0, 3, 3}) == doctest::Approx(35));
  CHECK(batch.images.at({1, 1, 2}) == doctest::Approx(6));

  const std::vector<int64_t> bad = {3};
  CHECK_THROWS_WITH_AS(data::make_image_batch(dataset, bad, 0, transform),
                       doctest::Contains("sample 3"), Error);
  transform.patch_size = 3;
  CHECK_THROWS_AS(data::make_image_batch(dataset, indices, 0, transform), Error);
}

TEST_CASE("image_dataset: loading errors name the files and the fix") {
  const std::filesystem::path dir = test_directory() / "mismatch";
  std::filesystem::create_directories(dir);
  write_idx(dir / "images", 0x803, {2, 1, 1}, {1, 2});
  write_idx(dir / "labels", 0x801, {3}, {1, 2, 3});
  CHECK_THROWS_WITH_AS(data::load_idx_dataset((dir / "images").string(), (dir / "labels").string()),
                       doctest::Contains("2 images"), Error);
  CHECK_THROWS_WITH_AS(data::load_image_dataset((test_directory() / "nowhere").string(), "mnist",
                                                data::Split::train),
                       doctest::Contains("make data"), Error);
  CHECK_THROWS_WITH_AS(
      data::load_image_dataset(test_directory().string(), "cifar10", data::Split::train),
      doctest::Contains("unknown dataset"), Error);
}
