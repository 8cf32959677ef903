// Tests for data/idx.*: IDX image and label files built byte by byte in a temporary directory,
// valid ones read back exactly, every kind of corruption rejected with a message naming the file.
#include <doctest/doctest.h>

#include <cstdint>
#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include <unistd.h>

#include "data/idx.h"
#include "tensor/error.h"

#include "tests/mutations.h"
#include "tests/test_util.h"

using namespace qt;

namespace {

std::filesystem::path test_directory() {
  return qt::test::scratch_directory("idx");
}

void append_big_endian(std::vector<uint8_t>& bytes, uint32_t value) {
  bytes.push_back(static_cast<uint8_t>(value >> 24));
  bytes.push_back(static_cast<uint8_t>(value >> 16));
  bytes.push_back(static_cast<uint8_t>(value >> 8));
  bytes.push_back(static_cast<uint8_t>(value));
}

// Header (magic, sizes) followed by the given data bytes.
std::vector<uint8_t> idx_bytes(uint32_t magic, const std::vector<uint32_t>& sizes,
                               const std::vector<uint8_t>& data) {
  std::vector<uint8_t> bytes;
  append_big_endian(bytes, magic);
  for (uint32_t size : sizes) append_big_endian(bytes, size);
  bytes.insert(bytes.end(), data.begin(), data.end());
  return bytes;
}

std::string write_file(const std::string& name, const std::vector<uint8_t>& bytes) {
  const std::filesystem::path path = test_directory() / name;
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out.write(reinterpret_cast<const char*>(bytes.data()),
            static_cast<std::streamsize>(bytes.size()));
  return path.string();
}

// Two 3 x 2 images: pixel (n, r, c) = 10n + 3r + c (+ 200 in the last pixel to use high values).
std::vector<uint8_t> two_images() {
  std::vector<uint8_t> pixels;
  for (int n = 0; n < 2; ++n)
    for (int r = 0; r < 3; ++r)
      for (int c = 0; c < 2; ++c) pixels.push_back(static_cast<uint8_t>(10 * n + 3 * r + c));
  pixels.back() = 255;
  return pixels;
}

}  // namespace

TEST_CASE("idx: reads an image file exactly (big-endian header, row-major pixels)") {
  const std::string path = write_file("images.idx", idx_bytes(0x00000803, {2, 3, 2}, two_images()));
  const Tensor images = data::read_idx_images(path);
  CHECK(images.dtype() == DType::u8);
  CHECK(images.shape() == Shape{2, 3, 2});
  CHECK(images.at({0, 0, 0}) == 0);
  CHECK(images.at({0, 2, 1}) == 7);
  CHECK(images.at({1, 1, 0}) == 13);
  CHECK(images.at({1, 2, 1}) == 255);
}

TEST_CASE("idx: reads a label file as i64") {
  const std::string path = write_file("labels.idx", idx_bytes(0x00000801, {4}, {7, 0, 9, 3}));
  const Tensor labels = data::read_idx_labels(path);
  CHECK(labels.dtype() == DType::i64);
  CHECK(labels.shape() == Shape{4});
  CHECK(labels.at({0}) == 7);
  CHECK(labels.at({2}) == 9);
  CHECK(labels.at({3}) == 3);
  // A header size > 255 (bytes other than the last one non-zero) is read big-endian.
  std::vector<uint8_t> many(300, 1);
  const Tensor long_labels =
      data::read_idx_labels(write_file("labels300.idx", idx_bytes(0x00000801, {300}, many)));
  CHECK(long_labels.shape() == Shape{300});
}

TEST_CASE("idx: a missing file, a directory and a too-short file are errors naming the path") {
  const std::string missing = (test_directory() / "no_such_file").string();
  CHECK_THROWS_WITH_AS(data::read_idx_images(missing), doctest::Contains(missing.c_str()), Error);
  CHECK_THROWS_AS(data::read_idx_images(test_directory().string()), Error);
  const std::string tiny = write_file("tiny.idx", {0, 0, 8});
  CHECK_THROWS_WITH_AS(data::read_idx_images(tiny), doctest::Contains("too short"), Error);
  CHECK_THROWS_WITH_AS(data::read_idx_labels(tiny), doctest::Contains(tiny.c_str()), Error);
  // Image header cut after the first size.
  const std::string cut = write_file("cut.idx", {0, 0, 8, 3, 0, 0, 0, 2});
  CHECK_THROWS_WITH_AS(data::read_idx_images(cut), doctest::Contains("too short"), Error);
}

TEST_CASE("idx: wrong magic numbers are rejected with a hint") {
  const std::string labels = write_file("as_labels.idx", idx_bytes(0x00000801, {2}, {1, 2}));
  CHECK_THROWS_WITH_AS(data::read_idx_images(labels), doctest::Contains("label file"), Error);
  const std::string images =
      write_file("as_images.idx", idx_bytes(0x00000803, {2, 3, 2}, two_images()));
  CHECK_THROWS_WITH_AS(data::read_idx_labels(images), doctest::Contains("image file"), Error);
  // A gzip stream (1f 8b ...): the user forgot to gunzip.
  const std::string gzip =
      write_file("gz.idx", {0x1f, 0x8b, 0x08, 0x00, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12});
  CHECK_THROWS_WITH_AS(data::read_idx_images(gzip), doctest::Contains("gzip"), Error);
  // Other element types (0x0d = float) and ranks.
  const std::string floats =
      write_file("float.idx", idx_bytes(0x00000d03, {1, 1, 1}, {0, 0, 0, 0}));
  CHECK_THROWS_WITH_AS(data::read_idx_images(floats), doctest::Contains("0x00000d03"), Error);
  const std::string rank2 = write_file("rank2.idx", idx_bytes(0x00000802, {1, 1}, {0}));
  CHECK_THROWS_AS(data::read_idx_images(rank2), Error);
}

TEST_CASE("idx: the file size must match the header exactly") {
  std::vector<uint8_t> pixels = two_images();
  pixels.pop_back();
  const std::string truncated =
      write_file("truncated.idx", idx_bytes(0x00000803, {2, 3, 2}, pixels));
  CHECK_THROWS_WITH_AS(data::read_idx_images(truncated), doctest::Contains("truncated"), Error);
  CHECK_THROWS_WITH_AS(data::read_idx_images(truncated), doctest::Contains(truncated.c_str()),
                       Error);
  pixels = two_images();
  pixels.push_back(0);
  const std::string trailing = write_file("trailing.idx", idx_bytes(0x00000803, {2, 3, 2}, pixels));
  CHECK_THROWS_WITH_AS(data::read_idx_images(trailing), doctest::Contains("trailing data"), Error);
  const std::string labels = write_file("short_labels.idx", idx_bytes(0x00000801, {5}, {1, 2, 3}));
  CHECK_THROWS_WITH_AS(data::read_idx_labels(labels), doctest::Contains("truncated"), Error);
}

TEST_CASE("idx: absurd header sizes are rejected before anything is allocated") {
  // 4 billion images of 65536 x 65536 would be 2^64 bytes: must not overflow or allocate.
  const std::string huge =
      write_file("huge.idx", idx_bytes(0x00000803, {0xffffffffu, 65536, 65536}, {1, 2, 3}));
  CHECK_THROWS_WITH_AS(data::read_idx_images(huge), doctest::Contains("truncated"), Error);
  const std::string wide = write_file("wide.idx", idx_bytes(0x00000803, {1, 70000, 1}, {1}));
  CHECK_THROWS_WITH_AS(data::read_idx_images(wide), doctest::Contains("implausible"), Error);
  const std::string empty = write_file("empty.idx", idx_bytes(0x00000803, {0, 28, 28}, {}));
  CHECK_THROWS_WITH_AS(data::read_idx_images(empty), doctest::Contains("zero size"), Error);
}

TEST_CASE("idx: label values must be below num_classes") {
  const std::string path = write_file("bad_label.idx", idx_bytes(0x00000801, {3}, {9, 10, 1}));
  CHECK_THROWS_WITH_AS(data::read_idx_labels(path), doctest::Contains("label 10 at index 1"),
                       Error);
  CHECK(data::read_idx_labels(path, 11).at({1}) == 10);
  CHECK_THROWS_AS(data::read_idx_labels(path, 0), Error);
}

TEST_CASE("idx: fuzz — 300 mutations each of an image and a label file load or throw qt::Error") {
  const auto as_text = [](const std::vector<uint8_t>& bytes) {
    return std::string(bytes.begin(), bytes.end());
  };
  const std::string out = (test_directory() / "fuzz.idx").string();
  const qt::test::FuzzOutcome images =
      qt::test::fuzz_reader(as_text(idx_bytes(0x00000803, {2, 3, 2}, two_images())), out, 300, 5,
                            [](const std::string& file) { data::read_idx_images(file); });
  const qt::test::FuzzOutcome labels =
      qt::test::fuzz_reader(as_text(idx_bytes(0x00000801, {6}, {1, 2, 3, 4, 5, 6})), out, 300, 6,
                            [](const std::string& file) { data::read_idx_labels(file); });
  CHECK(images.rejected > 150);
  CHECK(labels.rejected > 150);
}
