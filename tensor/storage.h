// Where tensor memory comes from: 64-byte-aligned blocks, with a cache of freed large blocks.
//
// Why a cache? A training step allocates the same large activations and gradients every step
// ([B, H, T, T] attention probabilities, [B, T, vocab] logits, ...) and frees them at the end of
// the step. Blocks that large are mmap-ed by malloc, or carved from the top of the heap and handed
// back to the kernel when freed; either way the next step's allocation is fresh memory and every
// 4 KiB page of it costs a page fault (measured: 125-330 ms per step for 30-60 MB of tensors).
// Keeping freed large blocks and handing them out again makes the steady state fault-free.
//
//   allocate_bytes(n):  n < kCachedMinBytes:  aligned_alloc (malloc's own free lists are fine)
//                       otherwise:            n is rounded up to its size class (below); a cached
//                                             block of that class is reused if there is one,
//                                             else a new block is allocated.
//   release_bytes(p,n): small blocks are freed; large ones go back to their class's free list,
//                       unless the cache would then exceed its capacity (then freed).
//
// Size classes: 8 per power of two, 2^k * (1 + i/8) for i = 0..7, so a block wastes at most
// 1/8 of its size and steps whose sizes vary slightly (last batch, sequence bucketing) still
// reuse blocks. Capacity: QTLAB_ALLOCATOR_CACHE_MB (default 2048, or 0 in AddressSanitizer
// builds so that use-after-free stays detectable; 0 turns the cache off).
// The contents of a reused block are whatever the previous tensor left (Tensor::empty promises
// uninitialised memory). Thread-safe: one mutex, taken only for large blocks.
#pragma once

#include <cstddef>
#include <cstdint>

namespace qt {

// Blocks at least this large are cached (smaller ones go straight to malloc / free).
constexpr size_t kCachedMinBytes = size_t(1) << 20;

// A 64-byte-aligned block of at least `bytes` bytes (at least 64). Throws qt::Error when out of
// memory.
void* allocate_bytes(size_t bytes);
// Gives back a block from allocate_bytes; `bytes` must be the size it was allocated with.
void release_bytes(void* data, size_t bytes);

// The size a request of `bytes` is rounded up to (its class for cached blocks).
size_t allocation_size(size_t bytes);

struct AllocatorStats {
  uint64_t cached_bytes = 0;  // freed large blocks held for reuse
  uint64_t reused = 0;        // large allocations served from the cache
  uint64_t fresh = 0;         // large allocations that had to ask the system
};
AllocatorStats allocator_stats();

// Frees every cached block (e.g. before a phase with different sizes, or in tests).
void release_cached_blocks();

// Sets the capacity in bytes (0 = no caching; releases what no longer fits). The default comes
// from QTLAB_ALLOCATOR_CACHE_MB, read on first use.
void set_allocator_cache_capacity(size_t bytes);
size_t allocator_cache_capacity();

}  // namespace qt
