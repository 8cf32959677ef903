#include "tensor/system_memory.h"

#include <algorithm>
#include <fstream>
#include <string>

namespace qt {

namespace {

// The first number in a file ("max" or a missing file: nullopt).
std::optional<uint64_t> read_number(const char* path) {
  std::ifstream in(path);
  uint64_t value = 0;
  if (!(in >> value)) return std::nullopt;
  return value;
}

std::optional<uint64_t> cgroup_remaining(const char* limit_file, const char* usage_file) {
  const std::optional<uint64_t> limit = read_number(limit_file);
  const std::optional<uint64_t> usage = read_number(usage_file);
  if (!limit || !usage) return std::nullopt;
  return *limit > *usage ? *limit - *usage : 0;
}

}  // namespace

std::optional<uint64_t> available_memory_bytes() {
  std::ifstream meminfo("/proc/meminfo");
  std::optional<uint64_t> available;
  std::string line;
  const std::string key = "MemAvailable:";  // "MemAvailable:   21775192 kB"
  while (std::getline(meminfo, line))
    if (line.compare(0, key.size(), key) == 0)
      available = std::stoull(line.substr(key.size())) * 1024;
  if (!available) return std::nullopt;
  for (const auto& remaining :
       {cgroup_remaining("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory.current"),
        cgroup_remaining("/sys/fs/cgroup/memory/memory.limit_in_bytes",
                         "/sys/fs/cgroup/memory/memory.usage_in_bytes")})
    if (remaining) available = std::min(*available, *remaining);
  return available;
}

}  // namespace qt
