// One batch of training or evaluation data, as the data pipelines hand it to the trainer.
//
//   text (BERT, OPT):  input_ids i64 [B, T], labels i64 [B, T] with -100 where no loss is taken
//                      (BERT: positions not selected for masking; OPT: the last position);
//   images (ViT):      images f32 [B, num_patches, patch*patch*channels], labels i64 [B].
//
// The fields mirror models::Batch (models/model.h) so the trainer copies three handles; data/
// sits below models/ and does not include it.
#pragma once

#include <cstdint>

#include "tensor/tensor.h"

namespace qt::data {

// Label value of positions that take no loss (PyTorch's and HF's ignore_index).
inline constexpr int64_t kIgnoreIndex = -100;

struct Batch {
  Tensor input_ids;  // text only
  Tensor images;     // images only
  Tensor labels;
  // Where the batch comes from, for logs and checks: the epoch and the global batch's index in it.
  int64_t epoch = 0;
  int64_t index_in_epoch = 0;
};

}  // namespace qt::data
