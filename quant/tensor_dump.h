// The integer tensor dump: the exchange format between qtlab's integer reference, an exported C99
// model and a third-party kernel (docs/integer-reference.md specifies it for implementers).
//
//   DIR/manifest.json     format "qtlab-int-dump", version 1; the tensors (name, dtype, shape,
//                         scale, zero point, sha256 of the data file) and the graph: the ops in
//                         execution order, each with its kind, rounding mode, input and output
//                         tensor names and free-form integer attributes (multipliers, shifts)
//   DIR/<name>.bin        one per tensor: the codes, row-major, little-endian, no header
//
// dtypes: u8, s8, s16, s32 (the widths the integer ops use: activations, weights, the int16
// pre-LayerNorm residual, accumulators and biases). Real value = scale * (code - zero_point).
// A tensor no op produces is a graph input (activations fed in, weights, biases, tables).
//
// Reading validates everything and throws qt::Error naming the directory, the file and the tensor:
// a missing or malformed manifest, an unknown format, version, dtype or rounding mode, a bad name,
// a duplicate, a negative dimension, a zero point outside the dtype, a missing or truncated (or
// too long) data file, a sha256 mismatch, an op naming an unknown tensor, a tensor produced twice
// or consumed before it is produced. Nothing a file contains can crash the reader.
#pragma once

#include <cstdint>
#include <nlohmann/json.hpp>
#include <string>
#include <string_view>
#include <vector>

#include "tensor/shape.h"

namespace qt::quant {

inline constexpr std::string_view kDumpFormat = "qtlab-int-dump";
inline constexpr int kDumpVersion = 1;

enum class DumpDType { u8, s8, s16, s32 };
std::string_view dump_dtype_name(DumpDType dtype);  // "u8", "s8", "s16", "s32"
int64_t dump_dtype_size(DumpDType dtype);           // bytes per element: 1, 1, 2, 4
int64_t dump_dtype_min(DumpDType dtype);
int64_t dump_dtype_max(DumpDType dtype);

// The rounding names a manifest may use: the four Requant modes (quant/integer_requantize.h) by
// their enum names, and "none" for an op with no rounding step (a table lookup, ReLU).
inline constexpr std::string_view kDumpRoundings[] = {
    "double_rounding", "single_half_up", "single_half_away", "single_half_even", "none"};

struct DumpTensor {
  std::string name;  // [A-Za-z0-9_.-]+, not starting with '.'; the file is <name>.bin
  DumpDType dtype = DumpDType::u8;
  Shape shape;
  double scale = 1;
  int64_t zero_point = 0;
  std::vector<int32_t> values;  // numel(shape) codes, each inside the dtype's range
  std::string sha256;           // of <name>.bin; filled by write_tensor_dump / read_tensor_dump
};

struct DumpOp {
  std::string name;  // unique among the ops
  std::string kind;  // "linear", "gelu_table", "add", "layer_norm", ... (free text for the checker)
  std::string rounding = "none";  // one of kDumpRoundings
  std::vector<std::string> inputs, outputs;
  nlohmann::json attributes = nlohmann::json::object();  // integer parameters, for the reader
};

struct TensorDump {
  std::vector<DumpTensor> tensors;  // manifest order
  std::vector<DumpOp> ops;          // execution order

  // Appends a tensor from codes of any integer type (each checked to fit `dtype`).
  template <typename T>
  DumpTensor& add_tensor(const std::string& name, DumpDType dtype, const Shape& shape, double scale,
                         int64_t zero_point, const T* codes) {
    std::vector<int32_t> values(static_cast<size_t>(numel_of(shape)));
    for (size_t i = 0; i < values.size(); ++i) values[i] = static_cast<int32_t>(codes[i]);
    return add_tensor(name, dtype, shape, scale, zero_point, std::move(values));
  }
  DumpTensor& add_tensor(const std::string& name, DumpDType dtype, const Shape& shape, double scale,
                         int64_t zero_point, std::vector<int32_t> values);
  DumpOp& add_op(const std::string& name, const std::string& kind, const std::string& rounding,
                 const std::vector<std::string>& inputs, const std::vector<std::string>& outputs);

  // The tensor called `name`, or nullptr / a qt::Error naming the dump's tensors.
  const DumpTensor* find(const std::string& name) const;
  DumpTensor* find(const std::string& name);
  const DumpTensor& tensor(const std::string& name) const;
  // The index in `ops` of the op producing `name`, or -1 for a graph input.
  int64_t producer(const std::string& name) const;

  // Throws unless the dump is consistent (the rules in the file comment; `where` prefixes errors).
  void validate(const std::string& where) const;
};

// Writes DIR/<name>.bin for every tensor and DIR/manifest.json (each atomically; creates DIR),
// after validate(); fills in the sha256 fields of `dump`.
void write_tensor_dump(const std::string& dir, TensorDump& dump);
// Reads and validates DIR (every data file is read and its sha256 checked).
TensorDump read_tensor_dump(const std::string& dir);

}  // namespace qt::quant
