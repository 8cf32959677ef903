// The tensor memory allocator with a cache of freed large blocks (see storage.h).
#include "tensor/storage.h"

#include <algorithm>
#include <cstdlib>
#include <map>
#include <mutex>
#include <string>
#include <vector>

#include "tensor/error.h"

namespace qt {
namespace {

constexpr size_t kAlignment = 64;
constexpr size_t kClassesPerPowerOfTwo = 8;

// The default capacity: 2 GiB; 0 under AddressSanitizer, which can only catch a use after free
// of a block that really is freed (a cached block stays valid memory to it).
#if defined(__SANITIZE_ADDRESS__)
constexpr size_t kDefaultCapacity = 0;
#else
constexpr size_t kDefaultCapacity = size_t(2048) << 20;
#endif

// QTLAB_ALLOCATOR_CACHE_MB: a non-negative decimal integer (megabytes).
size_t capacity_from_environment() {
  const char* text = std::getenv("QTLAB_ALLOCATOR_CACHE_MB");
  if (text == nullptr || *text == '\0') return kDefaultCapacity;
  const std::string value(text);
  QT_CHECK(value.find_first_not_of("0123456789") == std::string::npos && value.size() <= 9,
           "QTLAB_ALLOCATOR_CACHE_MB='{}' is not a number of megabytes (expected an integer in "
           "[0, 999999999])",
           value);
  return static_cast<size_t>(std::strtoull(text, nullptr, 10)) << 20;
}

// The free lists: size class -> blocks of exactly that size. Created on first use and never
// destroyed, so tensors freed during static destruction still find it.
struct BlockCache {
  std::mutex mutex;
  std::map<size_t, std::vector<void*>> free_blocks;
  size_t capacity = 0;
  bool capacity_known = false;
  AllocatorStats stats;

  size_t current_capacity() {  // call with the mutex held
    if (!capacity_known) {
      capacity = capacity_from_environment();
      capacity_known = true;
    }
    return capacity;
  }

  // Frees cached blocks, largest first, until the cache holds at most `limit` bytes.
  void shrink_to(size_t limit) {  // call with the mutex held
    while (stats.cached_bytes > limit && !free_blocks.empty()) {
      auto largest = std::prev(free_blocks.end());
      std::vector<void*>& blocks = largest->second;
      std::free(blocks.back());
      blocks.pop_back();
      stats.cached_bytes -= largest->first;
      if (blocks.empty()) free_blocks.erase(largest);
    }
  }
};

BlockCache& cache() {
  static BlockCache* instance = new BlockCache();
  return *instance;
}

void* system_allocate(size_t rounded) {
  void* data = std::aligned_alloc(kAlignment, rounded);
  QT_CHECK(data != nullptr, "out of memory allocating {} bytes", rounded);
  return data;
}

}  // namespace

size_t allocation_size(size_t bytes) {
  // aligned_alloc needs a multiple of the alignment (and at least one line).
  const size_t lines =
      std::max<size_t>(kAlignment, (bytes + kAlignment - 1) / kAlignment * kAlignment);
  if (lines < kCachedMinBytes) return lines;
  // Size class: 2^k * (1 + i/8) for the smallest i that fits, where 2^k <= bytes < 2^(k+1).
  size_t power = kCachedMinBytes;
  while (power <= lines / 2) power *= 2;
  const size_t step = power / kClassesPerPowerOfTwo;
  return (lines + step - 1) / step * step;
}

void* allocate_bytes(size_t bytes) {
  const size_t rounded = allocation_size(bytes);
  if (rounded < kCachedMinBytes) return system_allocate(rounded);
  BlockCache& c = cache();
  {
    std::lock_guard<std::mutex> lock(c.mutex);
    auto found = c.free_blocks.find(rounded);
    if (found != c.free_blocks.end()) {
      void* data = found->second.back();
      found->second.pop_back();
      if (found->second.empty()) c.free_blocks.erase(found);
      c.stats.cached_bytes -= rounded;
      ++c.stats.reused;
      return data;
    }
    ++c.stats.fresh;
  }
  return system_allocate(rounded);
}

void release_bytes(void* data, size_t bytes) {
  if (data == nullptr) return;
  const size_t rounded = allocation_size(bytes);
  if (rounded >= kCachedMinBytes) {
    BlockCache& c = cache();
    std::lock_guard<std::mutex> lock(c.mutex);
    if (c.stats.cached_bytes + rounded <= c.current_capacity()) {
      c.free_blocks[rounded].push_back(data);
      c.stats.cached_bytes += rounded;
      return;
    }
  }
  std::free(data);
}

AllocatorStats allocator_stats() {
  BlockCache& c = cache();
  std::lock_guard<std::mutex> lock(c.mutex);
  return c.stats;
}

void release_cached_blocks() {
  BlockCache& c = cache();
  std::lock_guard<std::mutex> lock(c.mutex);
  c.shrink_to(0);
}

void set_allocator_cache_capacity(size_t bytes) {
  BlockCache& c = cache();
  std::lock_guard<std::mutex> lock(c.mutex);
  c.capacity = bytes;
  c.capacity_known = true;
  c.shrink_to(bytes);
}

size_t allocator_cache_capacity() {
  BlockCache& c = cache();
  std::lock_guard<std::mutex> lock(c.mutex);
  return c.current_capacity();
}

}  // namespace qt
