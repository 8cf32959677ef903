// Tests for data/epoch_order.* and data/batch_loader.*: permutations (valid, seeded, uniform),
// global batches identical for any number of ranks, prefetching equal to synchronous loading,
// resuming, errors from the builder reaching the consumer, and clean shutdown mid-epoch.
#include <doctest/doctest.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <map>
#include <set>
#include <stdexcept>
#include <thread>
#include <vector>

#include "data/batch_loader.h"
#include "data/epoch_order.h"
#include "tensor/create.h"
#include "tensor/error.h"

using namespace qt;

namespace {

// A builder whose batch records what it was asked for: labels = sample indices, input_ids = epoch.
data::Batch recording_builder(std::span<const int64_t> indices, int64_t epoch) {
  data::Batch batch;
  batch.labels = ops::from_vector(std::vector<int64_t>(indices.begin(), indices.end()),
                                  {static_cast<int64_t>(indices.size())});
  batch.input_ids = ops::from_vector(std::vector<int64_t>{epoch}, {1});
  return batch;
}

std::vector<int64_t> samples_of(const data::Batch& batch) {
  return ops::to_vector<int64_t>(batch.labels);
}

// The sample indices of `steps` consecutive batches.
std::vector<std::vector<int64_t>> take(data::BatchLoader& loader, int steps) {
  std::vector<std::vector<int64_t>> batches;
  for (int s = 0; s < steps; ++s) batches.push_back(samples_of(loader.next()));
  return batches;
}

}  // namespace

TEST_CASE("epoch_order: a seeded permutation, new each epoch; identity without shuffle") {
  const std::vector<int64_t> order = data::epoch_order(1000, 42, 0, true);
  std::vector<int64_t> sorted = order;
  std::sort(sorted.begin(), sorted.end());
  for (int64_t i = 0; i < 1000; ++i) REQUIRE(sorted[i] == i);
  CHECK(order == data::epoch_order(1000, 42, 0, true));
  CHECK(order != data::epoch_order(1000, 42, 1, true));
  CHECK(order != data::epoch_order(1000, 43, 0, true));
  const std::vector<int64_t> identity = data::epoch_order(5, 42, 3, false);
  CHECK(identity == std::vector<int64_t>{0, 1, 2, 3, 4});
  CHECK(data::epoch_order(0, 1, 0, true).empty());
  CHECK(data::epoch_order(1, 1, 0, true) == std::vector<int64_t>{0});
}

TEST_CASE("epoch_order: all 24 orders of 4 samples are equally likely") {
  std::map<std::vector<int64_t>, int> counts;
  const int epochs = 4800;  // 200 expected per permutation, binomial std ~14
  for (int epoch = 0; epoch < epochs; ++epoch) ++counts[data::epoch_order(4, 7, epoch, true)];
  CHECK(counts.size() == 24);
  for (const auto& [order, count] : counts) {
    CHECK(count > 200 - 80);
    CHECK(count < 200 + 80);
  }
}

TEST_CASE("epoch_order: batches per epoch and rank slices") {
  CHECK(data::batches_per_epoch(10, 4, true) == 2);
  CHECK(data::batches_per_epoch(10, 4, false) == 3);
  CHECK(data::batches_per_epoch(8, 4, false) == 2);
  CHECK(data::batches_per_epoch(3, 4, true) == 0);
  // Batch 1 of size 6 over 3 ranks: positions 6-7, 8-9, 10-11.
  CHECK(data::rank_slice(100, 6, 1, 0, 3).begin == 6);
  CHECK(data::rank_slice(100, 6, 1, 0, 3).end == 8);
  CHECK(data::rank_slice(100, 6, 1, 2, 3).begin == 10);
  CHECK(data::rank_slice(100, 6, 1, 2, 3).end == 12);
  // A partial last batch (10 samples, batch 4 -> batch 2 holds positions 8, 9) over 2 ranks.
  CHECK(data::rank_slice(10, 4, 2, 0, 2).begin == 8);
  CHECK(data::rank_slice(10, 4, 2, 0, 2).end == 9);
  CHECK(data::rank_slice(10, 4, 2, 1, 2).end == 10);
  CHECK_THROWS_AS(data::rank_slice(10, 4, 3, 0, 2), Error);
  CHECK_THROWS_AS(data::rank_slice(10, 4, 0, 2, 2), Error);
}

TEST_CASE("batch_loader: same seed, same sequence; every epoch visits every sample once") {
  data::BatchLoaderOptions options;
  options.global_batch_size = 5;
  options.seed = 9;
  data::BatchLoader first(20, recording_builder, options);
  data::BatchLoader second(20, recording_builder, options);
  CHECK(first.batches_per_epoch() == 4);
  const auto a = take(first, 12);
  CHECK(a == take(second, 12));
  for (int epoch = 0; epoch < 3; ++epoch) {
    std::set<int64_t> seen;
    for (int b = 0; b < 4; ++b) seen.insert(a[epoch * 4 + b].begin(), a[epoch * 4 + b].end());
    CHECK(seen.size() == 20);
  }
  // Epochs differ in order.
  CHECK(std::vector(a.begin(), a.begin() + 4) != std::vector(a.begin() + 4, a.begin() + 8));
  options.seed = 10;
  data::BatchLoader other_seed(20, recording_builder, options);
  CHECK(take(other_seed, 4) != std::vector(a.begin(), a.begin() + 4));
}

TEST_CASE("batch_loader: the union over ranks of a global batch is the 1-rank batch") {
  const int64_t samples = 50, global = 12;
  data::BatchLoaderOptions options;
  options.global_batch_size = global;
  options.seed = 5;
  data::BatchLoader single(samples, recording_builder, options);
  const auto reference = take(single, 10);  // 4 batches per epoch: crosses two epoch boundaries
  for (int64_t world : {2, 3, 4}) {
    std::vector<std::unique_ptr<data::BatchLoader>> ranks;
    for (int64_t rank = 0; rank < world; ++rank) {
      options.rank = rank;
      options.world_size = world;
      ranks.push_back(std::make_unique<data::BatchLoader>(samples, recording_builder, options));
    }
    for (int step = 0; step < 10; ++step) {
      std::vector<int64_t> joined;
      for (auto& loader : ranks) {
        const std::vector<int64_t> part = samples_of(loader->next());
        CHECK(static_cast<int64_t>(part.size()) == global / world);
        joined.insert(joined.end(), part.begin(), part.end());
      }
      CHECK(joined == reference[step]);  // disjoint, contiguous slices in rank order
    }
  }
  options.rank = 0;
  options.world_size = 5;
  CHECK_THROWS_WITH_AS(data::BatchLoader(samples, recording_builder, options),
                       doctest::Contains("multiple of the world size"), Error);
}

TEST_CASE("batch_loader: prefetching delivers the same sequence as synchronous loading") {
  data::BatchLoaderOptions options;
  options.global_batch_size = 7;
  options.seed = 3;
  options.drop_last = false;  // partial last batches too
  std::vector<std::vector<int64_t>> sequences[3];
  std::vector<int64_t> epochs;
  for (int64_t prefetch : {0, 1, 2}) {
    options.prefetch = prefetch;
    data::BatchLoader loader(30, recording_builder, options);  // 5 batches: 7 7 7 7 2
    for (int s = 0; s < 13; ++s) {
      const data::Batch batch = loader.next();
      sequences[prefetch].push_back(samples_of(batch));
      if (prefetch == 0) epochs.push_back(batch.epoch);
      CHECK(batch.epoch == ops::to_vector<int64_t>(batch.input_ids)[0]);  // builder saw it
      CHECK(batch.index_in_epoch == s % 5);
    }
    CHECK(loader.step() == 13);
  }
  CHECK(sequences[1] == sequences[0]);
  CHECK(sequences[2] == sequences[0]);
  CHECK(sequences[0][4].size() == 2);
  CHECK(epochs == std::vector<int64_t>{0, 0, 0, 0, 0, 1, 1, 1, 1, 1, 2, 2, 2});
}

TEST_CASE("batch_loader: resuming at a step continues the same sequence") {
  data::BatchLoaderOptions options;
  options.global_batch_size = 4;
  options.seed = 77;
  data::BatchLoader from_start(10, recording_builder, options);
  const auto all = take(from_start, 9);
  options.first_step = 5;
  data::BatchLoader resumed(10, recording_builder, options);
  CHECK(resumed.step() == 5);
  CHECK(take(resumed, 4) == std::vector(all.begin() + 5, all.end()));
  CHECK(resumed.sample_indices(6) == all[6]);
}

TEST_CASE("batch_loader: evaluation order without shuffling covers the data in order") {
  data::BatchLoaderOptions options;
  options.global_batch_size = 4;
  options.shuffle = false;
  options.drop_last = false;
  data::BatchLoader loader(6, recording_builder, options);
  CHECK(take(loader, 3) == std::vector<std::vector<int64_t>>{{0, 1, 2, 3}, {4, 5}, {0, 1, 2, 3}});
}

TEST_CASE("batch_loader: a builder error reaches the consumer with the step and the message") {
  for (int64_t prefetch : {0, 1, 2}) {
    data::BatchLoaderOptions options;
    options.global_batch_size = 2;
    options.prefetch = prefetch;
    auto failing = [](std::span<const int64_t> indices, int64_t epoch) {
      if (epoch == 1) throw std::runtime_error("disk on fire");
      return recording_builder(indices, epoch);
    };
    data::BatchLoader loader(6, failing, options);  // 3 batches per epoch; epoch 1 fails
    for (int s = 0; s < 3; ++s) CHECK(samples_of(loader.next()).size() == 2);
    CHECK_THROWS_WITH_AS(loader.next(), doctest::Contains("step 3 (epoch 1, batch 0 of 3)"), Error);
    CHECK_THROWS_WITH_AS(loader.next(), doctest::Contains("disk on fire"), Error);  // stays failed
  }
}

TEST_CASE("batch_loader: destroying the loader mid-epoch does not hang") {
  std::atomic<int> built{0};
  auto slow = [&built](std::span<const int64_t> indices, int64_t epoch) {
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
    ++built;
    return recording_builder(indices, epoch);
  };
  const auto start = std::chrono::steady_clock::now();
  for (int64_t prefetch : {1, 2}) {
    data::BatchLoaderOptions options;
    options.global_batch_size = 4;
    options.prefetch = prefetch;
    {
      data::BatchLoader never_used(100, slow, options);  // producer filling the queue
    }
    {
      data::BatchLoader loader(100, slow, options);
      loader.next();
      std::this_thread::sleep_for(std::chrono::milliseconds(30));  // the queue is full now
    }
  }
  const double seconds =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  CHECK(seconds < 2.0);
  CHECK(built.load() < 20);  // the producer stopped instead of building the whole epoch
}

TEST_CASE("batch_loader: invalid options are errors") {
  data::BatchLoaderOptions options;
  options.global_batch_size = 8;
  CHECK_THROWS_WITH_AS(data::BatchLoader(5, recording_builder, options),
                       doctest::Contains("do not fill one batch"), Error);
  options.prefetch = -1;
  CHECK_THROWS_AS(data::BatchLoader(50, recording_builder, options), Error);
  options.prefetch = 1;
  options.rank = 1;
  CHECK_THROWS_AS(data::BatchLoader(50, recording_builder, options), Error);
  options.rank = 0;
  CHECK_THROWS_AS(data::BatchLoader(50, nullptr, options), Error);
  options.first_step = -1;
  CHECK_THROWS_AS(data::BatchLoader(50, recording_builder, options), Error);
}
