// Tests for models/memory_estimate.*: the parameter count against models built for real (every
// family, every gate kind, the ViT patch LayerNorm), the byte figures against the formula in the
// header, and a model far larger than any machine refused before anything is allocated.
#include <doctest/doctest.h>

#include <string>

#include "models/memory_estimate.h"
#include "models/model.h"
#include "tensor/error.h"
#include "tests/tiny_run.h"

using namespace qt;

namespace {

int64_t built_parameters(const models::ModelConfig& config) {
  int64_t count = 0;
  for (const Tensor& p : models::build_model(config, 1)->parameters()) count += p.numel();
  return count;
}

}  // namespace

TEST_CASE("memory_estimate: the parameter count equals the built model's, for every variant") {
  for (const std::string family : {"bert", "opt", "vit"}) {
    for (const nn::GateKindName& gate : nn::gate_kind_table()) {
      for (const bool patch_layer_norm : {false, true}) {
        if (patch_layer_norm && family != "vit") continue;
        models::RunConfig c = test::tiny_run_config(family);
        c.model.gate = gate.kind;
        c.model.patch_layer_norm = patch_layer_norm;
        CAPTURE(family);
        CAPTURE(gate.name);
        CAPTURE(patch_layer_norm);
        CHECK(models::count_parameters(c.model) == built_parameters(c.model));
      }
    }
  }
  models::RunConfig mlp = test::tiny_run_config("bert");
  mlp.model.gate = nn::GateKind::mlp_per_head;
  mlp.model.gate_mlp_hidden = 5;
  CHECK(models::count_parameters(mlp.model) == built_parameters(mlp.model));
}

TEST_CASE("memory_estimate: bytes follow the documented formula; a huge model is refused") {
  models::RunConfig c = test::tiny_run_config("bert");  // 2 x 32, FFN 64, T 16, V 64, H 2, batch 8
  const models::MemoryEstimate e = models::estimate_training_memory(c, 1);
  CHECK(e.parameter_bytes == 16u * static_cast<uint64_t>(e.parameters));
  // 8 samples x 16 tokens x (2 layers x (10*32 + 2*64 + 2*2*16) + 2*64) floats.
  CHECK(e.activation_bytes == 4u * 8 * 16 * (2 * (320 + 128 + 64) + 128));
  CHECK(models::estimate_training_memory(c, 2).activation_bytes == e.activation_bytes / 2);

  models::RunConfig huge = models::preset("bert-mini");
  huge.model.layers = 256;
  huge.model.hidden = 1 << 16;
  huge.model.heads = 1 << 10;
  huge.model.ffn = 1 << 18;
  // 256 x (4 x 2^32 + 2 x 2^34) = 1.1e13 parameters: 180 TB for weights and AdamW state.
  CHECK(models::estimate_training_memory(huge, 1).parameter_bytes > uint64_t(1e14));
  CHECK_THROWS_WITH_AS(models::check_training_fits(huge, 1), doctest::Contains("GB is available"),
                       Error);
  CHECK_NOTHROW(models::check_training_fits(c, 1));
}
