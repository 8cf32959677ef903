// IDX reader (see idx.h for the format). Files are read with one header read and one bulk read
// straight into the tensor's storage; every number from the file is checked before it is used.
#include "data/idx.h"

#include <cerrno>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <vector>

#include "tensor/error.h"

namespace qt::data {

namespace {

// Sizes beyond these are not MNIST-like data but a corrupt header; rejecting them early keeps the
// size arithmetic below far from overflow (2^32 * 2^16 * 2^16 < 2^64).
constexpr uint64_t kMaxSide = 1 << 16;

uint32_t big_endian_u32(const unsigned char* bytes) {
  return (uint32_t{bytes[0]} << 24) | (uint32_t{bytes[1]} << 16) | (uint32_t{bytes[2]} << 8) |
         uint32_t{bytes[3]};
}

// What a wrong magic number most likely means, for the error message.
std::string magic_hint(uint32_t magic) {
  if ((magic >> 16) == 0x1f8b) return " (the file is gzip-compressed: gunzip it first)";
  if (magic == kIdxImageMagic) return " (this is an IDX image file)";
  if (magic == kIdxLabelMagic) return " (this is an IDX label file)";
  return "";
}

// An open IDX file whose header has been read and checked.
struct IdxFile {
  std::ifstream stream;
  std::vector<uint64_t> dims;
  uint64_t element_count = 1;
};

IdxFile open_idx(const std::string& path, uint32_t expected_magic, const char* what,
                 const char* op) {
  std::error_code error;
  const uint64_t file_size = std::filesystem::file_size(path, error);
  QT_CHECK(!error, "{}: cannot read '{}': {}", op, path, error.message());
  IdxFile file;
  file.stream.open(path, std::ios::binary);
  QT_CHECK(file.stream.is_open(), "{}: cannot open '{}': {}", op, path, std::strerror(errno));

  // The magic number first (a wrong kind of file gets the more useful message), then the sizes.
  unsigned char header[4 + 4 * 3];
  QT_CHECK(file_size >= 4, "{}: '{}' is {} bytes, too short for an IDX file", op, path, file_size);
  file.stream.read(reinterpret_cast<char*>(header), 4);
  QT_CHECK(file.stream.gcount() == 4, "{}: reading the header of '{}' failed", op, path);
  const uint32_t magic = big_endian_u32(header);
  const uint64_t rank = expected_magic & 0xff;
  QT_CHECK(magic == expected_magic,
           "{}: '{}' has magic number 0x{:08x}, expected 0x{:08x} (IDX {} file: unsigned bytes, "
           "{} dimension{}){}",
           op, path, magic, expected_magic, what, rank, rank == 1 ? "" : "s", magic_hint(magic));
  const uint64_t header_size = 4 + 4 * rank;
  QT_CHECK(file_size >= header_size,
           "{}: '{}' is {} bytes, too short for the {}-byte header of an IDX {} file", op, path,
           file_size, header_size, what);
  file.stream.read(reinterpret_cast<char*>(header + 4), static_cast<std::streamsize>(4 * rank));
  QT_CHECK(file.stream.gcount() == static_cast<std::streamsize>(4 * rank),
           "{}: reading the header of '{}' failed", op, path);
  for (uint64_t d = 0; d < rank; ++d) {
    const uint64_t size = big_endian_u32(header + 4 + 4 * d);
    QT_CHECK(size > 0, "{}: '{}' has a zero size in dimension {} of its header", op, path, d);
    QT_CHECK(d == 0 || size <= kMaxSide,
             "{}: '{}' header gives dimension {} the implausible size {} (corrupt header?)", op,
             path, d, size);
    file.dims.push_back(size);
    file.element_count *= size;
  }
  QT_CHECK(file_size - header_size == file.element_count,
           "{}: '{}' header announces {} elements ({}) after the {}-byte header, but the file "
           "holds {} bytes there ({})",
           op, path, file.element_count, fmt::join(file.dims, " x "), header_size,
           file_size - header_size,
           file_size - header_size < file.element_count ? "truncated" : "trailing data");
  return file;
}

void read_elements(IdxFile& file, void* destination, const std::string& path, const char* op) {
  file.stream.read(static_cast<char*>(destination),
                   static_cast<std::streamsize>(file.element_count));
  QT_CHECK(file.stream.gcount() == static_cast<std::streamsize>(file.element_count),
           "{}: reading the {} data bytes of '{}' failed", op, file.element_count, path);
}

}  // namespace

Tensor read_idx_images(const std::string& path) {
  const char* op = "read_idx_images";
  IdxFile file = open_idx(path, kIdxImageMagic, "image", op);
  Tensor images =
      Tensor::empty({static_cast<int64_t>(file.dims[0]), static_cast<int64_t>(file.dims[1]),
                     static_cast<int64_t>(file.dims[2])},
                    DType::u8);
  read_elements(file, images.data<uint8_t>(), path, op);
  return images;
}

Tensor read_idx_labels(const std::string& path, int64_t num_classes) {
  const char* op = "read_idx_labels";
  QT_CHECK(num_classes > 0 && num_classes <= 256, "{}: num_classes must be in [1, 256], got {}", op,
           num_classes);
  IdxFile file = open_idx(path, kIdxLabelMagic, "label", op);
  std::vector<uint8_t> bytes(file.element_count);
  read_elements(file, bytes.data(), path, op);
  Tensor labels = Tensor::empty({static_cast<int64_t>(file.dims[0])}, DType::i64);
  int64_t* out = labels.data<int64_t>();
  for (size_t i = 0; i < bytes.size(); ++i) {
    QT_CHECK(bytes[i] < num_classes, "{}: '{}': label {} at index {} is not in [0, {})", op, path,
             int{bytes[i]}, i, num_classes);
    out[i] = bytes[i];
  }
  return labels;
}

}  // namespace qt::data
