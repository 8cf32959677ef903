// The batch loader: an endless, deterministic sequence of batches for one rank, built ahead of
// time in a background thread.
//
// Step s of the sequence is global batch b = s mod B of epoch e = s div B (B batches per epoch,
// epoch_order.h): the samples at this rank's slice of positions [b*G, (b+1)*G) of the epoch's
// order. The batch itself is made by the caller's BatchBuilder from the sample indices and the
// epoch (which seeds augmentation and MLM masking). Everything is a pure function of
// (seed, step, rank, world size), so a run resumes exactly at any step (`first_step`), and the
// global batch does not depend on the number of ranks.
//
// Prefetching: with prefetch = k > 0 a background std::thread builds up to k batches ahead into a
// bounded queue while the caller trains on the current one; next() takes from the queue. An
// exception in the builder is handed to the consumer: next() throws qt::Error naming the step,
// epoch and batch and the original message. Destroying the loader (even mid-epoch, with the
// producer waiting on a full queue or building a batch) stops and joins the thread.
// The sequence is identical with and without prefetching.
//
// The builder runs on the background thread: it must not touch state the training thread
// modifies, and should be plain single-threaded code (the pipelines in data/ are).
#pragma once

#include <condition_variable>
#include <cstdint>
#include <deque>
#include <exception>
#include <functional>
#include <mutex>
#include <span>
#include <thread>
#include <vector>

#include "data/batch.h"

namespace qt::data {

// Builds the batch of the given samples in the given epoch.
using BatchBuilder = std::function<Batch(std::span<const int64_t> sample_indices, int64_t epoch)>;

struct BatchLoaderOptions {
  int64_t global_batch_size = 32;  // G, split over the ranks: each takes G / world_size
  int64_t rank = 0;
  int64_t world_size = 1;
  uint64_t seed = 0;
  bool shuffle = true;     // false: epochs visit samples in order (evaluation)
  bool drop_last = true;   // false: the last, partial batch of an epoch is used too
  int64_t prefetch = 1;    // batches built ahead in the background (0: build in next())
  int64_t first_step = 0;  // resume: the step the first next() returns
};

class BatchLoader {
 public:
  BatchLoader(int64_t num_samples, BatchBuilder builder, BatchLoaderOptions options);
  ~BatchLoader();
  BatchLoader(const BatchLoader&) = delete;
  BatchLoader& operator=(const BatchLoader&) = delete;

  int64_t batches_per_epoch() const { return batches_per_epoch_; }
  // The step the next call to next() returns.
  int64_t step() const { return next_step_; }
  // The batch of step(), then advances.
  Batch next();

  // This rank's sample indices for a step (what the builder is called with).
  std::vector<int64_t> sample_indices(int64_t step) const;

 private:
  struct Slot {
    int64_t step = 0;
    Batch batch;
    std::exception_ptr error;
  };
  Slot build(int64_t step);
  void produce();

  int64_t num_samples_;
  BatchBuilder builder_;
  BatchLoaderOptions options_;
  int64_t batches_per_epoch_;
  int64_t next_step_;

  // The epoch order last computed (the builder thread or next() owns it, never both).
  int64_t cached_epoch_ = -1;
  std::vector<int64_t> cached_order_;

  // Prefetching.
  std::mutex mutex_;
  std::condition_variable changed_;
  std::deque<Slot> queue_;
  bool stopping_ = false;
  std::exception_ptr failure_;  // the producer's error, once delivered
  std::thread producer_;
};

}  // namespace qt::data
