// Embedding: a lookup table [num_embeddings, dim]; forward gathers rows by integer id (i32/i64),
// backward scatter-adds the output gradient into the rows used (deterministically).
#pragma once

#include <cstdint>

#include "nn/init.h"
#include "nn/module.h"

namespace qt::nn {

class Embedding : public Module {
 public:
  // Weight drawn N(0, 1) like PyTorch; models re-initialise as their spec says.
  Embedding(int64_t num_embeddings, int64_t dim, InitRng& rng);
  Tensor forward(const Tensor& ids) const;  // ids [...] -> [..., dim]; an id out of range throws

  int64_t num_embeddings, dim;
  Tensor weight;
};

}  // namespace qt::nn
