// The data side of a run: from a RunConfig to the batches the trainer and the evaluator draw.
//
//   data.dataset = text           BERT: masked-LM blocks, OPT: causal-LM blocks of the Gutenberg +
//                                 Brown corpus (data/text_dataset.h), tokenizer trained on the
//                                 training split and saved beside the downloads;
//                  mnist,
//                  fashion-mnist  ViT: IDX images (data/image_dataset.h), augmented when training;
//                  synthetic      built in, no download: for tests, benchmarks and smoke runs.
//
// Synthetic text is a seeded first-order Markov chain over the vocabulary: every token has four
// successors, drawn with probabilities 0.4, 0.3, 0.2, 0.1, so a model can learn it (the best
// achievable next-token loss is at most the chain's entropy, 1.28 nats) yet it is not trivial.
// Synthetic images draw a 6x6 bright square at a position that encodes the class, plus uniform
// noise.
//
// Batches are pure functions of (seed, epoch, sample indices): see data/batch_loader.h. The
// validation builder ignores the epoch it is given and always uses epoch 0, so evaluation masks
// (BERT) and images are the same every time and in every run.
#pragma once

#include <cstdint>
#include <optional>
#include <string>

#include "data/batch_loader.h"
#include "data/token_blocks.h"
#include "models/config.h"

namespace qt::models {

struct RunData {
  int64_t train_samples = 0;  // sequences or images
  int64_t validation_samples = 0;
  data::BatchBuilder train_batch;       // (sample indices, epoch) -> batch
  data::BatchBuilder validation_batch;  // (sample indices, ignored) -> batch, always epoch 0
  int64_t tokens_per_sample = 0;        // T for text, patches + 1 for images (throughput figures)
  std::string tokenizer_path;           // text only: the tokenizer file the run used
  // Images only: the normalised value of a background pixel (u8 0, black), exactly as the
  // validation pipeline produces it; the outlier analysis finds background patches by it.
  std::optional<float> image_background;
  std::string tokenizer_fingerprint;  // text only: its data::Tokenizer::fingerprint()
  std::string description;            // one line for the log
};

// Loads (text: tokenizes, training the tokenizer once if needed) everything the config names.
// Throws qt::Error naming the missing files and `make data` when the downloads are absent.
RunData load_run_data(const RunConfig& config);

// Synthetic data, exposed for tests: `count` blocks of `length` tokens, ids in
// [data::kFirstByteId, vocab_size).
data::TokenBlocks synthetic_token_blocks(int64_t count, int64_t length, int64_t vocab_size,
                                         uint64_t seed, bool causal);

}  // namespace qt::models
