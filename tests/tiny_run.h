// Shared by the tests that train or quantize whole models: a run configuration small enough that
// a training step takes milliseconds, and a guard that runs such tiny models on one thread (OpenMP
// fork/join costs more than their kernels; it also keeps the suite quick on a busy machine).
#pragma once

#include <string>

#include "models/config.h"
#include "tensor/threads.h"

namespace qt::test {

// The family's preset (bert-mini, opt-mini, vit-tiny) shrunk to 2 layers x 32, 2 heads, FFN 64,
// vocabulary 64, T = 16 (ViT: 16x16 images, 4x4 patches), on the built-in synthetic data, batch 8.
inline models::RunConfig tiny_run_config(const std::string& family) {
  models::RunConfig c = models::preset(family == "vit"   ? "vit-tiny"
                                       : family == "opt" ? "opt-mini"
                                                         : "bert-mini");
  c.model.layers = 2;
  c.model.hidden = 32;
  c.model.heads = 2;
  c.model.ffn = 64;
  c.model.vocab_size = 64;
  c.model.max_length = 16;
  c.model.image_size = 16;
  c.model.patch_size = 4;
  c.data.dataset = "synthetic";
  c.train.batch_size = 8;
  return c;
}

// Sets one thread for its lifetime, then restores the previous setting.
struct OneThread {
  int previous = num_threads();
  OneThread() { set_num_threads(1); }
  ~OneThread() { set_num_threads(previous); }
};

}  // namespace qt::test
