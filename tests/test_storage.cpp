// Tests for tensor/storage.*: the tensor allocator and its cache of freed large blocks.
// Truth: hand-computed size classes (2^k * (1 + i/8)), pointer identity of reused blocks, the
// allocator's counters, and alignment checked on the addresses.
#include <doctest/doctest.h>

#include <cstdint>
#include <cstring>

#include "tensor/ops.h"
#include "tensor/storage.h"
#include "tensor/tensor.h"

using namespace qt;

namespace {

constexpr size_t kMiB = size_t(1) << 20;

// Restores the cache capacity and empties the cache when a test ends.
struct CapacityGuard {
  size_t saved = allocator_cache_capacity();
  ~CapacityGuard() {
    set_allocator_cache_capacity(saved);
    release_cached_blocks();
  }
};

bool aligned64(const void* p) {
  return reinterpret_cast<uintptr_t>(p) % 64 == 0;
}

}  // namespace

TEST_CASE("storage: allocation sizes: whole cache lines below 1 MiB, 8 classes per power of two") {
  CHECK(allocation_size(0) == 64);
  CHECK(allocation_size(1) == 64);
  CHECK(allocation_size(64) == 64);
  CHECK(allocation_size(65) == 128);
  CHECK(allocation_size(kMiB - 64) == kMiB - 64);  // below the cached range: lines only
  CHECK(allocation_size(kMiB) == kMiB);
  CHECK(allocation_size(kMiB + 1) == kMiB + kMiB / 8);  // next class: 1.125 MiB
  CHECK(allocation_size(kMiB + kMiB / 8) == kMiB + kMiB / 8);
  CHECK(allocation_size(2 * kMiB - 1) == 2 * kMiB);
  CHECK(allocation_size(3 * kMiB) == 3 * kMiB);                 // 2 MiB * 1.5
  CHECK(allocation_size(3 * kMiB + 1) == 3 * kMiB + kMiB / 4);  // 2 MiB * 1.625
  // 8 MiB + 1 byte -> 8 MiB * 1.125 = 9 MiB: at most 1/8 wasted.
  CHECK(allocation_size(8 * kMiB + 1) == 9 * kMiB);
  for (size_t bytes : {kMiB + 12345, 5 * kMiB + 7, 100 * kMiB + 3}) {
    CAPTURE(bytes);
    CHECK(allocation_size(bytes) >= bytes);
    CHECK(allocation_size(bytes) <= bytes + bytes / 8 + 64);
  }
}

TEST_CASE("storage: a freed large block is handed out again for its size class") {
  CapacityGuard guard;
  set_allocator_cache_capacity(64 * kMiB);
  release_cached_blocks();
  const AllocatorStats before = allocator_stats();
  void* first = allocate_bytes(3 * kMiB + 100);
  CHECK(aligned64(first));
  std::memset(first, 1, 3 * kMiB + 100);  // the whole block is writable
  release_bytes(first, 3 * kMiB + 100);
  CHECK(allocator_stats().cached_bytes == allocation_size(3 * kMiB + 100));
  // Another request of the same class (3.25 MiB) gets the same block back, from the cache.
  void* second = allocate_bytes(3 * kMiB + 200000);
  CHECK(second == first);
  const AllocatorStats after = allocator_stats();
  CHECK(after.reused == before.reused + 1);
  CHECK(after.fresh == before.fresh + 1);
  CHECK(after.cached_bytes == 0);
  // A different class does not get it.
  release_bytes(second, 3 * kMiB + 200000);
  void* other = allocate_bytes(5 * kMiB);
  CHECK(other != first);
  CHECK(allocator_stats().cached_bytes == allocation_size(3 * kMiB + 100));
  release_bytes(other, 5 * kMiB);
  // Small blocks are never cached.
  const uint64_t cached = allocator_stats().cached_bytes;
  void* small = allocate_bytes(1000);
  CHECK(aligned64(small));
  release_bytes(small, 1000);
  CHECK(allocator_stats().cached_bytes == cached);
  release_cached_blocks();
  CHECK(allocator_stats().cached_bytes == 0);
}

TEST_CASE("storage: the cache never holds more than its capacity; capacity 0 turns it off") {
  CapacityGuard guard;
  release_cached_blocks();
  set_allocator_cache_capacity(5 * kMiB);
  void* a = allocate_bytes(2 * kMiB);
  void* b = allocate_bytes(2 * kMiB);
  void* c = allocate_bytes(2 * kMiB);
  release_bytes(a, 2 * kMiB);
  release_bytes(b, 2 * kMiB);
  release_bytes(c, 2 * kMiB);  // would make 6 MiB: freed instead
  CHECK(allocator_stats().cached_bytes == 4 * kMiB);
  set_allocator_cache_capacity(3 * kMiB);  // shrinking frees what no longer fits
  CHECK(allocator_stats().cached_bytes == 2 * kMiB);
  set_allocator_cache_capacity(0);
  CHECK(allocator_stats().cached_bytes == 0);
  void* d = allocate_bytes(2 * kMiB);
  release_bytes(d, 2 * kMiB);
  CHECK(allocator_stats().cached_bytes == 0);
}

TEST_CASE("storage: tensors use the allocator; a reused block keeps working as a tensor") {
  CapacityGuard guard;
  set_allocator_cache_capacity(64 * kMiB);
  release_cached_blocks();
  const void* address = nullptr;
  {
    const Tensor t = ops::full({512, 1024}, 2.0, DType::f32);  // 2 MiB
    address = t.data<float>();
    CHECK(aligned64(address));
  }
  CHECK(allocator_stats().cached_bytes == 2 * kMiB);
  const Tensor u = ops::full({1024, 512}, 3.0, DType::f32);  // same class: same block
  CHECK(static_cast<const void*>(u.data<float>()) == address);
  CHECK(u.at({1023, 511}) == 3.0);
  CHECK(u.at({0, 0}) == 3.0);
}
