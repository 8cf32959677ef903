// safetensors reader and writer (format in safetensors.h).
//
// Writing follows the official writer: tensors are laid out back to back sorted by dtype alignment
// (largest first: I64, F64, F32, I32, I8, U8 — the official Dtype order) and then by name, and the
// header JSON lists "__metadata__" first and then the tensors in that order; the JSON is padded
// with spaces to a multiple of 8 bytes. The data section therefore starts 8-byte aligned and every
// tensor starts at a multiple of its item size. Reading applies the official validation: the
// tensors, sorted by their begin offset, must tile the data section exactly (first begin 0, each
// begin = previous end, last end = data size), and each one's byte span must equal numel *
// itemsize.
#include "tensor/safetensors.h"

#include <algorithm>
#include <bit>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <limits>
#include <nlohmann/json.hpp>
#include <set>

#include "tensor/atomic_file.h"
#include "tensor/json_parse.h"
#include "tensor/view.h"

namespace qt {

static_assert(std::endian::native == std::endian::little,
              "safetensors stores little-endian data; a big-endian host would need byte swapping");

namespace {

using Json = nlohmann::json;
using OrderedJson = nlohmann::ordered_json;  // keeps insertion order when writing

constexpr uint64_t kMaxHeaderBytes = 100'000'000;  // the official reader's limit

// The official writer's sort key (its Dtype enum order: U8 < I8 < I32 < F32 < F64 < I64); higher
// ranks are written first.
int alignment_rank(DType dtype) {
  switch (dtype) {
    case DType::u8:
      return 0;
    case DType::i8:
      return 1;
    case DType::i32:
      return 2;
    case DType::f32:
      return 3;
    case DType::f64:
      return 4;
    case DType::i64:
      return 5;
  }
  return 0;
}

// safetensors dtype codes of the dtypes we hold.
const char* safetensors_code(DType dtype) {
  switch (dtype) {
    case DType::f32:
      return "F32";
    case DType::f64:
      return "F64";
    case DType::i8:
      return "I8";
    case DType::u8:
      return "U8";
    case DType::i32:
      return "I32";
    case DType::i64:
      return "I64";
  }
  return "?";
}

bool parse_safetensors_code(const std::string& code, DType& dtype) {
  for (DType candidate : {DType::f32, DType::f64, DType::i8, DType::u8, DType::i32, DType::i64}) {
    if (code == safetensors_code(candidate)) {
      dtype = candidate;
      return true;
    }
  }
  return false;
}

// One tensor's header entry, validated.
struct HeaderEntry {
  std::string name;
  DType dtype = DType::f32;
  Shape shape;
  uint64_t begin = 0, end = 0;
};

// A non-negative JSON integer.
bool read_unsigned(const Json& value, uint64_t& out) {
  if (!value.is_number_unsigned()) return false;
  out = value.get<uint64_t>();
  return true;
}

HeaderEntry parse_entry(const std::string& path, const std::string& name, const Json& info) {
  const auto where = [&]() {
    return fmt::format("load_safetensors '{}': tensor '{}'", path, excerpt(name));
  };
  QT_CHECK(info.is_object(), "{}: the header entry is not a JSON object", where());
  for (const char* key : {"dtype", "shape", "data_offsets"})
    QT_CHECK(info.contains(key), "{}: missing key '{}'", where(), key);
  HeaderEntry entry;
  entry.name = name;
  const Json& dtype = info["dtype"];
  QT_CHECK(dtype.is_string(), "{}: 'dtype' is not a string", where());
  QT_CHECK(parse_safetensors_code(dtype.get<std::string>(), entry.dtype),
           "{}: unsupported dtype '{}' (supported: F32 F64 I8 U8 I32 I64)", where(),
           excerpt(dtype.get<std::string>()));

  const Json& shape = info["shape"];
  QT_CHECK(shape.is_array(), "{}: 'shape' is not an array", where());
  uint64_t numel = 1;
  for (const Json& dim : shape) {
    uint64_t size = 0;
    QT_CHECK(read_unsigned(dim, size),
             "{}: shape {} has an entry that is not a non-negative integer", where(),
             json_excerpt(shape));
    QT_CHECK(size <= static_cast<uint64_t>(std::numeric_limits<int64_t>::max()) &&
                 (size == 0 ||
                  numel <= static_cast<uint64_t>(std::numeric_limits<int64_t>::max()) / size),
             "{}: shape {} is too large", where(), json_excerpt(shape));
    numel *= size;
    entry.shape.push_back(static_cast<int64_t>(size));
  }

  const Json& offsets = info["data_offsets"];
  QT_CHECK(offsets.is_array() && offsets.size() == 2 && read_unsigned(offsets[0], entry.begin) &&
               read_unsigned(offsets[1], entry.end),
           "{}: 'data_offsets' must be two non-negative integers, got {}", where(),
           json_excerpt(offsets));
  QT_CHECK(entry.begin <= entry.end, "{}: data_offsets [{}, {}] end before they begin", where(),
           entry.begin, entry.end);
  const uint64_t itemsize = dtype_size(entry.dtype);
  QT_CHECK(numel <= std::numeric_limits<uint64_t>::max() / itemsize &&
               numel * itemsize == entry.end - entry.begin,
           "{}: shape {} of {} needs {} bytes but data_offsets [{}, {}] span {} bytes", where(),
           shape_str(entry.shape), dtype.get<std::string>(), numel * itemsize, entry.begin,
           entry.end, entry.end - entry.begin);
  return entry;
}

}  // namespace

const Tensor& SafeTensors::get(const std::string& name) const {
  for (const auto& [tensor_name, tensor] : tensors)
    if (tensor_name == name) return tensor;
  std::vector<std::string> names;
  for (const auto& entry : tensors) names.push_back(entry.first);
  if (names.size() > 20) {
    names.resize(20);
    names.push_back("...");
  }
  fail("SafeTensors::get: no tensor '{}' (the file has {} tensors: {})", name, tensors.size(),
       fmt::join(names, ", "));
}

bool SafeTensors::contains(const std::string& name) const {
  for (const auto& entry : tensors)
    if (entry.first == name) return true;
  return false;
}

void save_safetensors(const std::string& path,
                      const std::vector<std::pair<std::string, Tensor>>& tensors,
                      const std::map<std::string, std::string>& metadata) {
  // In the official writer's order (see the top of this file); each one contiguous.
  std::vector<std::pair<std::string, Tensor>> sorted;
  std::set<std::string> names;
  for (const auto& [name, tensor] : tensors) {
    QT_CHECK(name != "__metadata__",
             "save_safetensors '{}': '__metadata__' is reserved, not a tensor name", path);
    QT_CHECK(names.insert(name).second, "save_safetensors '{}': tensor name '{}' appears twice",
             path, name);
    QT_CHECK(tensor.defined(), "save_safetensors '{}': tensor '{}' is undefined", path, name);
    sorted.emplace_back(name, ops::contiguous(tensor));
  }
  std::sort(sorted.begin(), sorted.end(), [](const auto& a, const auto& b) {
    const int rank_a = alignment_rank(a.second.dtype()), rank_b = alignment_rank(b.second.dtype());
    return rank_a != rank_b ? rank_a > rank_b : a.first < b.first;
  });

  OrderedJson header = OrderedJson::object();
  if (!metadata.empty()) {
    OrderedJson meta = OrderedJson::object();
    for (const auto& [key, value] : metadata) meta[key] = value;
    header["__metadata__"] = meta;
  }
  uint64_t offset = 0;
  for (const auto& [name, tensor] : sorted) {
    const uint64_t nbytes = static_cast<uint64_t>(tensor.numel()) * dtype_size(tensor.dtype());
    OrderedJson info = OrderedJson::object();
    info["dtype"] = safetensors_code(tensor.dtype());
    info["shape"] = tensor.shape();
    info["data_offsets"] = OrderedJson::array({offset, offset + nbytes});
    header[name] = info;
    offset += nbytes;
  }
  std::string text;
  try {
    text = header.dump();
  } catch (const OrderedJson::exception& e) {
    fail("save_safetensors '{}': cannot encode the header (names and metadata must be UTF-8): {}",
         path, e.what());
  }
  text.append((8 - text.size() % 8) % 8, ' ');  // the data section starts 8-byte aligned

  write_file_atomically(path, [&](FileWriter& out) {
    const uint64_t header_size = text.size();
    out.write(&header_size, sizeof header_size);  // little-endian host (static_assert above)
    out.write(text.data(), text.size());
    for (const auto& [name, tensor] : sorted) {
      const size_t nbytes = static_cast<size_t>(tensor.numel()) * dtype_size(tensor.dtype());
      if (nbytes > 0) out.write(tensor.raw_data(), nbytes);
    }
  });
}

namespace {

// Opens `path` and reads and validates its header: sizes, JSON, every entry, and the tiling of the
// data section. Every problem throws qt::Error naming the file.
struct ParsedHeader {
  std::map<std::string, std::string> metadata;
  std::vector<HeaderEntry> entries;  // in offset (file) order
  uint64_t header_size = 0;
};

ParsedHeader read_header(const std::string& path, std::ifstream& in) {
  std::error_code error;
  const uint64_t file_size = std::filesystem::file_size(path, error);
  QT_CHECK(!error, "load_safetensors '{}': cannot read the file: {}", path, error.message());
  in.open(path, std::ios::binary);
  QT_CHECK(in.good(), "load_safetensors '{}': cannot open the file", path);
  QT_CHECK(file_size >= 8,
           "load_safetensors '{}': the file has {} bytes, too few for the 8-byte header size", path,
           file_size);

  uint64_t header_size = 0;
  in.read(reinterpret_cast<char*>(&header_size), sizeof header_size);
  QT_CHECK(in.good(), "load_safetensors '{}': reading the header size failed", path);
  QT_CHECK(header_size <= file_size - 8,
           "load_safetensors '{}': header size {} is larger than the rest of the file ({} bytes): "
           "truncated or not a safetensors file",
           path, header_size, file_size - 8);
  QT_CHECK(header_size <= kMaxHeaderBytes,
           "load_safetensors '{}': header size {} exceeds the limit {}", path, header_size,
           kMaxHeaderBytes);
  std::string text(header_size, '\0');
  in.read(text.data(), static_cast<std::streamsize>(header_size));
  QT_CHECK(in.good(), "load_safetensors '{}': reading the {}-byte header failed", path,
           header_size);

  const Json header = parse_json(text, fmt::format("load_safetensors '{}': the header", path));
  QT_CHECK(header.is_object(), "load_safetensors '{}': the header is not a JSON object", path);

  ParsedHeader result;
  result.header_size = header_size;
  std::vector<HeaderEntry>& entries = result.entries;
  for (const auto& [name, info] : header.items()) {
    if (name == "__metadata__") {
      QT_CHECK(info.is_object(), "load_safetensors '{}': '__metadata__' is not a JSON object",
               path);
      for (const auto& [key, value] : info.items()) {
        QT_CHECK(value.is_string(), "load_safetensors '{}': metadata '{}' is not a string", path,
                 excerpt(key));
        result.metadata[key] = value.get<std::string>();
      }
      continue;
    }
    entries.push_back(parse_entry(path, name, info));
  }

  // The tensors must tile the data section exactly, in offset order.
  std::sort(entries.begin(), entries.end(), [](const HeaderEntry& a, const HeaderEntry& b) {
    return a.begin != b.begin ? a.begin < b.begin : a.end < b.end;
  });
  const uint64_t data_size = file_size - 8 - header_size;
  uint64_t expected_begin = 0;
  for (const HeaderEntry& entry : entries) {
    QT_CHECK(
        entry.begin == expected_begin,
        "load_safetensors '{}': tensor '{}' data_offsets [{}, {}] {} (expected it to begin at {})",
        path, excerpt(entry.name), entry.begin, entry.end,
        entry.begin < expected_begin ? "overlap the previous tensor" : "leave a gap",
        expected_begin);
    QT_CHECK(
        entry.end <= data_size,
        "load_safetensors '{}': tensor '{}' data_offsets [{}, {}] run past the end of the data "
        "section ({} bytes): the file is truncated",
        path, excerpt(entry.name), entry.begin, entry.end, data_size);
    expected_begin = entry.end;
  }
  QT_CHECK(
      expected_begin == data_size,
      "load_safetensors '{}': {} bytes of trailing data after the last tensor (data section {} "
      "bytes, tensors end at {})",
      path, data_size - expected_begin, data_size, expected_begin);
  return result;
}

}  // namespace

std::map<std::string, std::string> load_safetensors_metadata(const std::string& path) {
  std::ifstream in;
  return read_header(path, in).metadata;
}

SafeTensors load_safetensors(const std::string& path) {
  std::ifstream in;
  ParsedHeader header = read_header(path, in);
  SafeTensors result;
  result.metadata = std::move(header.metadata);
  const uint64_t header_size = header.header_size;
  for (const HeaderEntry& entry : header.entries) {
    Tensor tensor = Tensor::empty(entry.shape, entry.dtype);
    const uint64_t nbytes = entry.end - entry.begin;
    if (nbytes > 0) {
      in.seekg(static_cast<std::streamoff>(8 + header_size + entry.begin));
      in.read(static_cast<char*>(tensor.raw_data()), static_cast<std::streamsize>(nbytes));
      QT_CHECK(in.good(), "load_safetensors '{}': reading tensor '{}' ({} bytes) failed", path,
               entry.name, nbytes);
    }
    result.tensors.emplace_back(entry.name, std::move(tensor));
  }
  return result;
}

}  // namespace qt
