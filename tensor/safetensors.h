// The safetensors file format (https://github.com/huggingface/safetensors), so that PyTorch and
// other tools read our checkpoints and we read theirs:
//
//   [8 bytes: little-endian u64 N][N bytes: JSON header][raw little-endian tensor data]
//   header = {"__metadata__": {str: str, ...},
//             "name": {"dtype": "F32", "shape": [..], "data_offsets": [begin, end]}, ...}
//
// Offsets are relative to the start of the data section; tensors are contiguous, row-major.
// Loading validates everything (header size and JSON, dtype names, shapes against offsets, offsets
// inside the file and non-overlapping) and throws qt::Error naming the file, the tensor and what is
// wrong; a truncated or corrupt file is an error, never a crash.
#pragma once

#include <map>
#include <string>
#include <utility>
#include <vector>

#include "tensor/tensor.h"

namespace qt {

struct SafeTensors {
  // In file order. save_safetensors writes in the official writer's order: by dtype alignment
  // (I64, F64, F32, I32, I8, U8), then by name, so every tensor starts aligned to its item size.
  std::vector<std::pair<std::string, Tensor>> tensors;
  std::map<std::string, std::string> metadata;  // "__metadata__"

  // The tensor called `name`; throws naming the file's tensors if absent.
  const Tensor& get(const std::string& name) const;
  bool contains(const std::string& name) const;
};

// Writes atomically (temporary file in the same directory, fsync, rename). Non-contiguous tensors
// are written contiguously. Supported dtypes: F32 F64 I8 U8 I32 I64.
void save_safetensors(const std::string& path,
                      const std::vector<std::pair<std::string, Tensor>>& tensors,
                      const std::map<std::string, std::string>& metadata = {});
SafeTensors load_safetensors(const std::string& path);
// Only the "__metadata__" of a file (reads and validates the header, not the tensor data).
std::map<std::string, std::string> load_safetensors_metadata(const std::string& path);

}  // namespace qt
