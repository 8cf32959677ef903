// How much memory this process can still allocate before the kernel's OOM killer ends it: the
// smaller of MemAvailable (/proc/meminfo) and the cgroup's remaining limit (cgroup v2
// memory.max - memory.current, or v1 memory.limit_in_bytes - memory.usage_in_bytes). A training
// run that cannot fit is refused up front with its estimate, instead of dying silently halfway
// through allocating its model.
#pragma once

#include <cstdint>
#include <optional>

namespace qt {

// Bytes available, or nullopt when /proc/meminfo cannot be read (not Linux).
std::optional<uint64_t> available_memory_bytes();

}  // namespace qt
