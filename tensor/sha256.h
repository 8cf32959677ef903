// SHA-256 (FIPS 180-4), for the checksums of dumped tensor files (quant/tensor_dump.h). A plain
// implementation, no dependency: the digest of a few megabytes of test vectors costs milliseconds.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>

namespace qt {

// The digest of n bytes as 64 lowercase hex digits.
std::string sha256_hex(const void* data, size_t n);

}  // namespace qt
