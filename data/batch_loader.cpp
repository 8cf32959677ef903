// The batch loader (see batch_loader.h): step -> (epoch, batch) -> this rank's samples -> builder,
// optionally one or two steps ahead in a producer thread.
#include "data/batch_loader.h"

#include "data/epoch_order.h"
#include "tensor/error.h"

namespace qt::data {

namespace {

constexpr int64_t kMaxPrefetch = 16;

std::string exception_message(const std::exception_ptr& error) {
  try {
    std::rethrow_exception(error);
  } catch (const std::exception& exception) {
    return exception.what();
  } catch (...) {
    return "unknown exception";
  }
}

}  // namespace

BatchLoader::BatchLoader(int64_t num_samples, BatchBuilder builder, BatchLoaderOptions options)
    : num_samples_(num_samples), builder_(std::move(builder)), options_(options) {
  const char* op = "BatchLoader";
  QT_CHECK(builder_ != nullptr, "{}: no batch builder given", op);
  QT_CHECK(options_.world_size >= 1 && options_.rank >= 0 && options_.rank < options_.world_size,
           "{}: rank {} is not in [0, world size {})", op, options_.rank, options_.world_size);
  QT_CHECK(options_.global_batch_size > 0 && options_.global_batch_size % options_.world_size == 0,
           "{}: global batch size {} must be a positive multiple of the world size {}", op,
           options_.global_batch_size, options_.world_size);
  QT_CHECK(options_.prefetch >= 0 && options_.prefetch <= kMaxPrefetch,
           "{}: prefetch must be in [0, {}], got {}", op, kMaxPrefetch, options_.prefetch);
  QT_CHECK(options_.first_step >= 0, "{}: first_step must be >= 0, got {}", op,
           options_.first_step);
  batches_per_epoch_ =
      data::batches_per_epoch(num_samples_, options_.global_batch_size, options_.drop_last);
  QT_CHECK(batches_per_epoch_ > 0, "{}: {} samples do not fill one batch of {}", op, num_samples_,
           options_.global_batch_size);
  next_step_ = options_.first_step;
  if (options_.prefetch > 0) producer_ = std::thread(&BatchLoader::produce, this);
}

BatchLoader::~BatchLoader() {
  {
    std::lock_guard<std::mutex> lock(mutex_);
    stopping_ = true;
  }
  changed_.notify_all();
  if (producer_.joinable()) producer_.join();
}

std::vector<int64_t> BatchLoader::sample_indices(int64_t step) const {
  QT_CHECK(step >= 0, "BatchLoader::sample_indices: step must be >= 0, got {}", step);
  const int64_t epoch = step / batches_per_epoch_;
  const std::vector<int64_t> order =
      epoch_order(num_samples_, options_.seed, epoch, options_.shuffle);
  const PositionRange slice =
      rank_slice(num_samples_, options_.global_batch_size, step % batches_per_epoch_, options_.rank,
                 options_.world_size);
  return std::vector<int64_t>(order.begin() + slice.begin, order.begin() + slice.end);
}

BatchLoader::Slot BatchLoader::build(int64_t step) {
  Slot slot;
  slot.step = step;
  const int64_t epoch = step / batches_per_epoch_;
  const int64_t batch_index = step % batches_per_epoch_;
  try {
    if (epoch != cached_epoch_) {
      cached_order_ = epoch_order(num_samples_, options_.seed, epoch, options_.shuffle);
      cached_epoch_ = epoch;
    }
    const PositionRange slice = rank_slice(num_samples_, options_.global_batch_size, batch_index,
                                           options_.rank, options_.world_size);
    const std::span<const int64_t> indices(cached_order_.data() + slice.begin,
                                           static_cast<size_t>(slice.end - slice.begin));
    slot.batch = builder_(indices, epoch);
    slot.batch.epoch = epoch;
    slot.batch.index_in_epoch = batch_index;
  } catch (...) {
    slot.error = std::current_exception();
  }
  return slot;
}

void BatchLoader::produce() {
  for (int64_t step = options_.first_step;; ++step) {
    {
      std::unique_lock<std::mutex> lock(mutex_);
      changed_.wait(lock, [this] {
        return stopping_ || static_cast<int64_t>(queue_.size()) < options_.prefetch;
      });
      if (stopping_) return;
    }
    Slot slot = build(step);  // outside the lock: the consumer keeps taking ready batches
    const bool failed = slot.error != nullptr;
    {
      std::lock_guard<std::mutex> lock(mutex_);
      queue_.push_back(std::move(slot));
    }
    changed_.notify_all();
    if (failed) return;  // the error ends the sequence
  }
}

Batch BatchLoader::next() {
  if (failure_) std::rethrow_exception(failure_);
  Slot slot;
  if (options_.prefetch == 0) {
    slot = build(next_step_);
  } else {
    {
      std::unique_lock<std::mutex> lock(mutex_);
      changed_.wait(lock, [this] { return !queue_.empty(); });
      slot = std::move(queue_.front());
      queue_.pop_front();
    }
    changed_.notify_all();
  }
  if (slot.error) {
    const int64_t epoch = slot.step / batches_per_epoch_;
    failure_ = std::make_exception_ptr(Error(fmt::format(
        "BatchLoader: building the batch of step {} (epoch {}, batch {} of {}){} failed: {}",
        slot.step, epoch, slot.step % batches_per_epoch_, batches_per_epoch_,
        options_.prefetch > 0 ? " in the prefetch thread" : "", exception_message(slot.error))));
    std::rethrow_exception(failure_);
  }
  ++next_step_;
  return std::move(slot.batch);
}

}  // namespace qt::data
