// The integer tensor dump (format in the header and docs/integer-reference.md).
#include "quant/tensor_dump.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <map>
#include <set>

#include "tensor/atomic_file.h"
#include "tensor/error.h"
#include "tensor/json_parse.h"
#include "tensor/sha256.h"

namespace qt::quant {
namespace {

constexpr DumpDType kDTypes[] = {DumpDType::u8, DumpDType::s8, DumpDType::s16, DumpDType::s32};
// Indexed by DumpDType: name, bytes per element, code range.
struct DTypeInfo {
  std::string_view name;
  int64_t size, min, max;
};
constexpr DTypeInfo kDTypeInfo[] = {{"u8", 1, 0, UINT8_MAX},
                                    {"s8", 1, INT8_MIN, INT8_MAX},
                                    {"s16", 2, INT16_MIN, INT16_MAX},
                                    {"s32", 4, INT32_MIN, INT32_MAX}};

bool valid_name(const std::string& name) {
  if (name.empty() || name.size() > 200 || name[0] == '.') return false;
  return std::all_of(name.begin(), name.end(), [](char c) {
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_' ||
           c == '.' || c == '-';
  });
}

bool valid_rounding(const std::string& rounding) {
  return std::find(std::begin(kDumpRoundings), std::end(kDumpRoundings), rounding) !=
         std::end(kDumpRoundings);
}

// ---- manifest fields, each checked for presence and type (the error names the path to it).
const nlohmann::json& field(const nlohmann::json& object, const char* key,
                            const std::string& where) {
  QT_CHECK(object.is_object(), "{}: expected a JSON object", where);
  const auto it = object.find(key);
  QT_CHECK(it != object.end(), "{}: missing field \"{}\"", where, key);
  return *it;
}
std::string string_field(const nlohmann::json& object, const char* key, const std::string& where) {
  const auto& value = field(object, key, where);
  QT_CHECK(value.is_string(), "{}: \"{}\" must be a string, not {}", where, key, value.dump());
  return value.get<std::string>();
}
int64_t integer_field(const nlohmann::json& object, const char* key, const std::string& where) {
  const auto& value = field(object, key, where);
  QT_CHECK(value.is_number_integer(), "{}: \"{}\" must be an integer, not {}", where, key,
           value.dump());
  return value.get<int64_t>();
}
std::vector<std::string> names_field(const nlohmann::json& object, const char* key,
                                     const std::string& where) {
  const auto& value = field(object, key, where);
  QT_CHECK(value.is_array(), "{}: \"{}\" must be an array of tensor names", where, key);
  std::vector<std::string> names;
  for (const auto& name : value) {
    QT_CHECK(name.is_string(), "{}: \"{}\" holds {}, not a tensor name", where, key, name.dump());
    names.push_back(name.get<std::string>());
  }
  return names;
}

DumpDType parse_dtype(const std::string& name, const std::string& where) {
  for (DumpDType t : kDTypes) {
    if (dump_dtype_name(t) == name) return t;
  }
  fail("{}: unknown dtype \"{}\" (u8, s8, s16 or s32)", where, name);
}

// Little-endian bytes <-> codes (explicit byte order, so the format does not depend on the host).
std::string encode(const DumpTensor& t) {
  const int64_t size = dump_dtype_size(t.dtype);
  std::string bytes(t.values.size() * static_cast<size_t>(size), '\0');
  for (size_t i = 0; i < t.values.size(); ++i) {
    const auto bits = static_cast<uint32_t>(t.values[i]);
    for (int64_t b = 0; b < size; ++b) {
      bytes[i * size + b] = static_cast<char>((bits >> (8 * b)) & 0xff);
    }
  }
  return bytes;
}
std::vector<int32_t> decode(const std::string& bytes, DumpDType dtype) {
  const int64_t size = dump_dtype_size(dtype);
  std::vector<int32_t> values(bytes.size() / static_cast<size_t>(size));
  for (size_t i = 0; i < values.size(); ++i) {
    uint32_t bits = 0;
    for (int64_t b = 0; b < size; ++b) {
      bits |= uint32_t{static_cast<unsigned char>(bytes[i * size + b])} << (8 * b);
    }
    switch (dtype) {
      case DumpDType::u8:
        values[i] = static_cast<int32_t>(bits);
        break;
      case DumpDType::s8:
        values[i] = static_cast<int8_t>(bits);
        break;
      case DumpDType::s16:
        values[i] = static_cast<int16_t>(bits);
        break;
      case DumpDType::s32:
        values[i] = static_cast<int32_t>(bits);
        break;
    }
  }
  return values;
}

std::string read_bytes(const std::filesystem::path& path, const std::string& what) {
  std::error_code error;
  QT_CHECK(std::filesystem::is_regular_file(path, error), "{}: file {} is missing", what,
           path.string());
  std::ifstream in(path, std::ios::binary);
  QT_CHECK(in.good(), "{}: cannot open {}", what, path.string());
  std::string bytes((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  QT_CHECK(!in.bad(), "{}: error reading {}", what, path.string());
  return bytes;
}

// Written with the keys in the order the format lists them (ordered_json), for human readers.
nlohmann::ordered_json manifest_json(const TensorDump& dump) {
  using ordered = nlohmann::ordered_json;
  ordered tensors = ordered::array(), ops = ordered::array();
  for (const DumpTensor& t : dump.tensors) {
    tensors.push_back({{"name", t.name},
                       {"dtype", dump_dtype_name(t.dtype)},
                       {"shape", t.shape},
                       {"scale", t.scale},
                       {"zero_point", t.zero_point},
                       {"file", t.name + ".bin"},
                       {"sha256", t.sha256}});
  }
  for (const DumpOp& op : dump.ops) {
    ops.push_back({{"name", op.name},
                   {"kind", op.kind},
                   {"rounding", op.rounding},
                   {"inputs", op.inputs},
                   {"outputs", op.outputs},
                   {"attributes", ordered::parse(op.attributes.dump())}});
  }
  return {{"format", kDumpFormat}, {"version", kDumpVersion}, {"tensors", tensors}, {"ops", ops}};
}

}  // namespace

std::string_view dump_dtype_name(DumpDType dtype) {
  return kDTypeInfo[static_cast<int>(dtype)].name;
}
int64_t dump_dtype_size(DumpDType dtype) {
  return kDTypeInfo[static_cast<int>(dtype)].size;
}
int64_t dump_dtype_min(DumpDType dtype) {
  return kDTypeInfo[static_cast<int>(dtype)].min;
}
int64_t dump_dtype_max(DumpDType dtype) {
  return kDTypeInfo[static_cast<int>(dtype)].max;
}

DumpTensor& TensorDump::add_tensor(const std::string& name, DumpDType dtype, const Shape& shape,
                                   double scale, int64_t zero_point, std::vector<int32_t> values) {
  DumpTensor t;
  t.name = name;
  t.dtype = dtype;
  t.shape = shape;
  t.scale = scale;
  t.zero_point = zero_point;
  t.values = std::move(values);
  tensors.push_back(std::move(t));
  return tensors.back();
}

DumpOp& TensorDump::add_op(const std::string& name, const std::string& kind,
                           const std::string& rounding, const std::vector<std::string>& inputs,
                           const std::vector<std::string>& outputs) {
  ops.push_back(DumpOp{name, kind, rounding, inputs, outputs, nlohmann::json::object()});
  return ops.back();
}

const DumpTensor* TensorDump::find(const std::string& name) const {
  for (const DumpTensor& t : tensors) {
    if (t.name == name) return &t;
  }
  return nullptr;
}
DumpTensor* TensorDump::find(const std::string& name) {
  return const_cast<DumpTensor*>(static_cast<const TensorDump*>(this)->find(name));
}
const DumpTensor& TensorDump::tensor(const std::string& name) const {
  const DumpTensor* t = find(name);
  if (t == nullptr) {
    std::vector<std::string> names;
    for (const DumpTensor& u : tensors) names.push_back(u.name);
    fail("tensor dump: no tensor \"{}\" (it has {})", name, fmt::join(names, ", "));
  }
  return *t;
}
int64_t TensorDump::producer(const std::string& name) const {
  for (size_t i = 0; i < ops.size(); ++i) {
    for (const std::string& out : ops[i].outputs) {
      if (out == name) return static_cast<int64_t>(i);
    }
  }
  return -1;
}

void TensorDump::validate(const std::string& where) const {
  std::set<std::string> names;
  for (const DumpTensor& t : tensors) {
    const std::string what = fmt::format("{}: tensor \"{}\"", where, t.name);
    QT_CHECK(valid_name(t.name),
             "{}: the name is not [A-Za-z0-9_.-]+ (1 to 200 characters, no leading '.')", what);
    QT_CHECK(names.insert(t.name).second, "{}: listed twice", what);
    for (int64_t d : t.shape) QT_CHECK(d >= 0, "{}: negative dimension in {}", what, t.shape);
    QT_CHECK(std::isfinite(t.scale) && t.scale > 0, "{}: scale {} is not a positive number", what,
             t.scale);
    QT_CHECK(t.zero_point >= dump_dtype_min(t.dtype) && t.zero_point <= dump_dtype_max(t.dtype),
             "{}: zero point {} outside {}", what, t.zero_point, dump_dtype_name(t.dtype));
    QT_CHECK(static_cast<int64_t>(t.values.size()) == numel_of(t.shape),
             "{}: {} values for shape {}", what, t.values.size(), shape_str(t.shape));
    for (size_t i = 0; i < t.values.size(); ++i) {
      QT_CHECK(t.values[i] >= dump_dtype_min(t.dtype) && t.values[i] <= dump_dtype_max(t.dtype),
               "{}: value {} at flat index {} does not fit {}", what, t.values[i], i,
               dump_dtype_name(t.dtype));
    }
  }
  std::set<std::string> op_names, produced;
  for (const DumpOp& op : ops) {
    const std::string what = fmt::format("{}: op \"{}\"", where, op.name);
    QT_CHECK(!op.name.empty() && op_names.insert(op.name).second, "{}: empty or duplicate name",
             what);
    QT_CHECK(!op.kind.empty(), "{}: empty kind", what);
    QT_CHECK(valid_rounding(op.rounding),
             "{}: unknown rounding \"{}\" (double_rounding, single_half_up, single_half_away, "
             "single_half_even or none)",
             what, op.rounding);
    QT_CHECK(!op.outputs.empty(), "{}: no outputs", what);
    for (const std::string& in : op.inputs) {
      QT_CHECK(names.count(in), "{}: input \"{}\" is not a tensor of the dump", what, in);
      const int64_t p = producer(in);
      QT_CHECK(p < 0 || produced.count(in), "{}: input \"{}\" is produced later, by op \"{}\"",
               what, in, ops[p].name);
    }
    for (const std::string& out : op.outputs) {
      QT_CHECK(names.count(out), "{}: output \"{}\" is not a tensor of the dump", what, out);
      QT_CHECK(produced.insert(out).second, "{}: output \"{}\" is produced twice", what, out);
    }
  }
}

void write_tensor_dump(const std::string& dir, TensorDump& dump) {
  dump.validate("write_tensor_dump " + dir);
  std::filesystem::create_directories(dir);
  for (DumpTensor& t : dump.tensors) {
    const std::string bytes = encode(t);
    t.sha256 = sha256_hex(bytes.data(), bytes.size());
    write_file_atomically((std::filesystem::path(dir) / (t.name + ".bin")).string(),
                          [&](FileWriter& w) { w.write(bytes.data(), bytes.size()); });
  }
  write_text_atomically((std::filesystem::path(dir) / "manifest.json").string(),
                        manifest_json(dump).dump(1) + "\n");
}

TensorDump read_tensor_dump(const std::string& dir) {
  const std::filesystem::path manifest_path = std::filesystem::path(dir) / "manifest.json";
  const std::string where = "tensor dump " + manifest_path.string();
  const nlohmann::json manifest =
      parse_json(read_bytes(manifest_path, "tensor dump " + dir), where);
  const std::string format = string_field(manifest, "format", where);
  QT_CHECK(format == kDumpFormat, "{}: format \"{}\", expected \"{}\"", where, format, kDumpFormat);
  const int64_t version = integer_field(manifest, "version", where);
  QT_CHECK(version == kDumpVersion, "{}: version {}, this reader knows version {}", where, version,
           kDumpVersion);

  TensorDump dump;
  const auto& tensors = field(manifest, "tensors", where);
  QT_CHECK(tensors.is_array(), "{}: \"tensors\" must be an array", where);
  for (size_t i = 0; i < tensors.size(); ++i) {
    const auto& entry = tensors[i];
    const std::string name = string_field(entry, "name", fmt::format("{}: tensors[{}]", where, i));
    const std::string what = fmt::format("{}: tensor \"{}\"", where, name);
    DumpTensor t;
    t.name = name;
    QT_CHECK(valid_name(name), "{}: the name is not [A-Za-z0-9_.-]+ (no leading '.')", what);
    t.dtype = parse_dtype(string_field(entry, "dtype", what), what);
    const auto& shape = field(entry, "shape", what);
    QT_CHECK(shape.is_array(), "{}: \"shape\" must be an array", what);
    for (const auto& d : shape) {
      QT_CHECK(d.is_number_integer() && d.get<int64_t>() >= 0 && d.get<int64_t>() <= (1LL << 40),
               "{}: dimension {} is not an integer in [0, 2^40]", what, d.dump());
      t.shape.push_back(d.get<int64_t>());
    }
    // The element count, bounded before any multiplication can overflow int64.
    int64_t numel = 1;
    for (int64_t d : t.shape) {
      QT_CHECK(d == 0 || numel <= (int64_t{1} << 40) / d,
               "{}: shape {} has more than 2^40 elements", what, shape.dump());
      numel *= d;
    }
    const auto& scale = field(entry, "scale", what);
    QT_CHECK(scale.is_number(), "{}: \"scale\" must be a number", what);
    t.scale = scale.get<double>();
    t.zero_point = integer_field(entry, "zero_point", what);
    const std::string file = string_field(entry, "file", what);
    QT_CHECK(file == name + ".bin", "{}: file \"{}\", the format requires \"{}.bin\"", what, file,
             name);
    t.sha256 = string_field(entry, "sha256", what);

    const std::filesystem::path path = std::filesystem::path(dir) / file;
    const std::string bytes = read_bytes(path, what);
    const int64_t expected = numel * dump_dtype_size(t.dtype);
    QT_CHECK(static_cast<int64_t>(bytes.size()) == expected,
             "{}: {} is {} bytes, but shape {} of {} needs {} ({})", what, path.string(),
             bytes.size(), shape_str(t.shape), dump_dtype_name(t.dtype), expected,
             static_cast<int64_t>(bytes.size()) < expected ? "truncated" : "too long");
    const std::string digest = sha256_hex(bytes.data(), bytes.size());
    QT_CHECK(digest == t.sha256, "{}: sha256 of {} is {}, the manifest says {}", what,
             path.string(), digest, t.sha256);
    t.values = decode(bytes, t.dtype);
    dump.tensors.push_back(std::move(t));
  }

  const auto& ops = field(manifest, "ops", where);
  QT_CHECK(ops.is_array(), "{}: \"ops\" must be an array", where);
  for (size_t i = 0; i < ops.size(); ++i) {
    const std::string name = string_field(ops[i], "name", fmt::format("{}: ops[{}]", where, i));
    const std::string what = fmt::format("{}: op \"{}\"", where, name);
    DumpOp op;
    op.name = name;
    op.kind = string_field(ops[i], "kind", what);
    op.rounding = string_field(ops[i], "rounding", what);
    op.inputs = names_field(ops[i], "inputs", what);
    op.outputs = names_field(ops[i], "outputs", what);
    if (ops[i].contains("attributes")) op.attributes = ops[i]["attributes"];
    dump.ops.push_back(std::move(op));
  }
  dump.validate(where);
  return dump;
}

}  // namespace qt::quant
