#include "models/run_data.h"

#include <fmt/format.h>

#include <memory>

#include "data/causal_lm_batches.h"
#include "data/image_dataset.h"
#include "data/mlm_masking.h"
#include "data/text_dataset.h"
#include "data/tokenizer.h"
#include "tensor/error.h"
#include "tensor/random.h"

namespace qt::models {
namespace {

// Evaluation masks (BERT) use this seed whatever the run's seed, so that runs with different seeds
// are scored on the very same masked positions.
constexpr uint64_t kValidationMaskSeed = 0x5eed0fe7a1ull;
// Random streams of the synthetic generators (tensor/random.h).
constexpr uint64_t kSyntheticChainStream = 0x53594e31;  // transition table
constexpr uint64_t kSyntheticTextStream = 0x53594e32;   // walks
constexpr uint64_t kSyntheticImageStream = 0x53594e33;  // pixels
constexpr int64_t kSyntheticTrainSamples = 4096;
constexpr int64_t kSyntheticValidationSamples = 256;

data::Batch text_batch(const data::TokenBlocks& blocks, std::span<const int64_t> indices,
                       int64_t epoch, bool masked_lm, const data::MlmOptions& mlm) {
  return masked_lm ? data::make_mlm_batch(blocks, indices, epoch, mlm)
                   : data::make_causal_lm_batch(blocks, indices);
}

// Train and validation builders over two sets of token blocks (shared, read-only).
void set_text_builders(RunData& out, std::shared_ptr<const data::TokenBlocks> train,
                       std::shared_ptr<const data::TokenBlocks> validation,
                       const RunConfig& config) {
  const bool masked_lm = config.model.family == Family::bert;
  data::MlmOptions train_mlm;
  train_mlm.vocab_size = config.model.vocab_size;
  train_mlm.probability = config.data.mlm_probability;
  train_mlm.seed = config.train.seed;
  data::MlmOptions validation_mlm = train_mlm;
  validation_mlm.seed = kValidationMaskSeed;
  out.train_samples = train->num_blocks();
  out.validation_samples = validation->num_blocks();
  out.tokens_per_sample = config.model.max_length;
  out.train_batch = [train, masked_lm, train_mlm](std::span<const int64_t> indices, int64_t epoch) {
    return text_batch(*train, indices, epoch, masked_lm, train_mlm);
  };
  out.validation_batch = [validation, masked_lm, validation_mlm](std::span<const int64_t> indices,
                                                                 int64_t) {
    return text_batch(*validation, indices, 0, masked_lm, validation_mlm);
  };
}

// Synthetic images: class c puts a 6x6 square of value ~220 at cell c of a 4x4 grid over the
// image (classes beyond 16 wrap around and are told apart by brightness), on noise in [0, 64).
data::ImageDataset synthetic_images(int64_t count, const ModelConfig& model, uint64_t seed) {
  const int64_t size = model.image_size;
  QT_CHECK(model.channels == 1 && size >= 8,
           "synthetic images: need model.channels = 1 and model.image_size >= 8 (got {}, {})",
           model.channels, size);
  data::ImageDataset dataset;
  dataset.name = "synthetic";
  dataset.num_classes = model.num_classes;
  dataset.images = Tensor::empty({count, size, size}, DType::u8);
  dataset.labels = Tensor::empty({count}, DType::i64);
  uint8_t* pixels = dataset.images.data<uint8_t>();
  int64_t* labels = dataset.labels.data<int64_t>();
  const int64_t cell = (size - 6) / 3;  // 4 cells per row: offsets 0, cell, 2 cell, 3 cell
  for (int64_t n = 0; n < count; ++n) {
    const int64_t label = static_cast<int64_t>(
        random_uniform_f64(seed, kSyntheticImageStream, static_cast<uint64_t>(n) << 32) *
        static_cast<double>(model.num_classes));
    labels[n] = label;
    const int64_t top = ((label / 4) % 4) * cell, left = (label % 4) * cell;
    const int brightness = label >= 16 ? 150 : 220;
    for (int64_t y = 0; y < size; ++y)
      for (int64_t x = 0; x < size; ++x) {
        const uint64_t index =
            (static_cast<uint64_t>(n) << 32) + 1 + static_cast<uint64_t>(y * size + x);
        int value = static_cast<int>(random_uniform(seed, kSyntheticImageStream, index) * 64.0f);
        if (y >= top && y < top + 6 && x >= left && x < left + 6) value += brightness - 32;
        pixels[(n * size + y) * size + x] = static_cast<uint8_t>(std::min(value, 255));
      }
  }
  return dataset;
}

void set_image_builders(RunData& out, std::shared_ptr<const data::ImageDataset> train,
                        std::shared_ptr<const data::ImageDataset> validation,
                        const RunConfig& config) {
  const ModelConfig& model = config.model;
  QT_CHECK(train->height() == model.image_size && train->width() == model.image_size,
           "data: {} images are {}x{}, but model.image_size = {}", train->name, train->height(),
           train->width(), model.image_size);
  QT_CHECK(model.channels == 1, "data: {} images have 1 channel, but model.channels = {}",
           train->name, model.channels);
  const data::PixelStats stats = data::pixel_stats(train->images);
  const data::ImageTransform train_transform = data::default_image_transform(
      train->name, stats, model.patch_size, config.data.augment, config.train.seed);
  const data::ImageTransform validation_transform =
      data::default_image_transform(train->name, stats, model.patch_size, false, 0);
  out.train_samples = train->size();
  out.validation_samples = validation->size();
  const int64_t side = model.image_size / model.patch_size;
  out.tokens_per_sample = side * side + 1;
  // A black (u8 0) pixel through the validation pipeline: the value of background pixels.
  const uint8_t black = 0;
  float background = 0;
  data::transform_image(&black, 1, 1, 0, 0, validation_transform, &background);
  out.image_background = background;
  out.train_batch = [train, train_transform](std::span<const int64_t> indices, int64_t epoch) {
    return data::make_image_batch(*train, indices, epoch, train_transform);
  };
  out.validation_batch = [validation, validation_transform](std::span<const int64_t> indices,
                                                            int64_t) {
    return data::make_image_batch(*validation, indices, 0, validation_transform);
  };
}

}  // namespace

data::TokenBlocks synthetic_token_blocks(int64_t count, int64_t length, int64_t vocab_size,
                                         uint64_t seed, bool causal) {
  const int64_t first = data::kFirstByteId;
  QT_CHECK(vocab_size > first + 4 && count > 0 && length >= 2,
           "synthetic text: need vocab_size > {}, count > 0 and length >= 2 (got {}, {}, {})",
           first + 4, vocab_size, count, length);
  const int64_t states = vocab_size - first;
  // Successor table: token s -> four successors (fixed by the table seed, not the sample seed, so
  // train and validation walk the same chain). Cumulative probabilities 0.4, 0.7, 0.9, 1.0.
  std::vector<int32_t> successors(static_cast<size_t>(states * 4));
  for (int64_t s = 0; s < states * 4; ++s)
    successors[static_cast<size_t>(s)] = static_cast<int32_t>(
        first + static_cast<int64_t>(
                    random_uniform_f64(1, kSyntheticChainStream, static_cast<uint64_t>(s)) *
                    static_cast<double>(states)));
  data::TokenBlocks blocks;
  blocks.block_length = length;
  blocks.tokens.resize(static_cast<size_t>(count * length));
  for (int64_t b = 0; b < count; ++b) {
    int32_t* out = blocks.tokens.data() + b * length;
    const uint64_t base = static_cast<uint64_t>(b) * static_cast<uint64_t>(length + 1);
    int32_t token = static_cast<int32_t>(
        first + static_cast<int64_t>(random_uniform_f64(seed, kSyntheticTextStream, base) *
                                     static_cast<double>(states)));
    int64_t t = 0;
    if (causal) out[t++] = data::kEndOfTextId;
    for (; t < length; ++t) {
      out[t] = token;
      const double u = random_uniform_f64(seed, kSyntheticTextStream, base + 1 + t);
      const int choice = u < 0.4 ? 0 : u < 0.7 ? 1 : u < 0.9 ? 2 : 3;
      token = successors[static_cast<size_t>((token - first) * 4 + choice)];
    }
  }
  return blocks;
}

RunData load_run_data(const RunConfig& config) {
  RunData out;
  const ModelConfig& model = config.model;
  const std::string& dataset = config.data.dataset;
  if (model.family == Family::vit) {
    std::shared_ptr<const data::ImageDataset> train, validation;
    if (dataset == "synthetic") {
      train = std::make_shared<data::ImageDataset>(
          synthetic_images(kSyntheticTrainSamples, model, config.train.seed));
      validation = std::make_shared<data::ImageDataset>(
          synthetic_images(kSyntheticValidationSamples, model, config.train.seed + 1));
    } else {
      train = std::make_shared<data::ImageDataset>(
          data::load_image_dataset(config.data.dir, dataset, data::Split::train));
      validation = std::make_shared<data::ImageDataset>(
          data::load_image_dataset(config.data.dir, dataset, data::Split::validation));
    }
    QT_CHECK(train->num_classes == model.num_classes,
             "data: {} has {} classes, but model.num_classes = {}", dataset, train->num_classes,
             model.num_classes);
    set_image_builders(out, train, validation, config);
    out.description = fmt::format("{}: {} training images, {} validation images", dataset,
                                  out.train_samples, out.validation_samples);
    return out;
  }
  const bool causal = model.family == Family::opt;
  if (dataset == "synthetic") {
    auto train = std::make_shared<const data::TokenBlocks>(synthetic_token_blocks(
        kSyntheticTrainSamples, model.max_length, model.vocab_size, config.train.seed, causal));
    auto validation = std::make_shared<const data::TokenBlocks>(
        synthetic_token_blocks(kSyntheticValidationSamples, model.max_length, model.vocab_size,
                               config.train.seed + 1, causal));
    set_text_builders(out, train, validation, config);
    out.description =
        fmt::format("synthetic Markov text: {} training and {} validation blocks of {}",
                    out.train_samples, out.validation_samples, model.max_length);
    return out;
  }
  data::TextDataOptions options;
  options.data_dir = config.data.dir;
  options.vocab_size = model.vocab_size;
  options.sequence_length = model.max_length;
  options.objective = causal ? data::TextObjective::causal_lm : data::TextObjective::masked_lm;
  data::TextData text = data::load_text_data(options);
  out.tokenizer_path = text.tokenizer_path;
  out.tokenizer_fingerprint = text.tokenizer.fingerprint();
  set_text_builders(out, std::make_shared<const data::TokenBlocks>(std::move(text.train)),
                    std::make_shared<const data::TokenBlocks>(std::move(text.validation)), config);
  out.description =
      fmt::format("text ({}): {} training and {} validation blocks of {} tokens, tokenizer {}",
                  causal ? "causal LM" : "masked LM", out.train_samples, out.validation_samples,
                  model.max_length, out.tokenizer_path);
  return out;
}

}  // namespace qt::models
