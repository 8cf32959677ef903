// Tests for optim/parameter_groups.*: which parameters get weight decay (method.md §6.1, §6.2,
// §2.5). Truth: hand-made lists of qtlab, HF BERT and HF OPT parameter names with the expected
// decision.
#include <doctest/doctest.h>

#include <string>
#include <vector>

#include "optim/parameter_groups.h"
#include "tensor/create.h"
#include "tensor/view.h"

using namespace qt;
using namespace qt::optim;

TEST_CASE("parameter_groups: is_layer_norm_weight on qtlab and HF names") {
  const std::vector<std::string> layer_norm_weights = {
      "embeddings.layer_norm.weight",
      "encoder.layer.0.attention_layer_norm.weight",
      "encoder.layer.11.output_layer_norm.weight",
      "decoder.final_layer_norm.weight",
      "blocks.3.norm1.weight",
      "blocks.3.norm_2.weight",
      "norm.weight",
      "patch_norm.weight",
      "bert.encoder.layer.0.output.LayerNorm.weight",        // HF BERT
      "model.decoder.layers.0.self_attn_layer_norm.weight",  // HF OPT
      "model.decoder.layers.0.final_layer_norm.weight",
  };
  for (const std::string& name : layer_norm_weights) {
    CAPTURE(name);
    CHECK(is_layer_norm_weight(name));
  }
  const std::vector<std::string> others = {
      "embeddings.layer_norm.bias",  // β, a bias (excluded by is_bias instead)
      "encoder.layer.0.attention.query.weight",
      "encoder.layer.0.ffn_in.weight",
      "embeddings.word_embeddings.weight",
      "normalizer_proj.weight",
      "norm.weight_scale",
      "weight",  // a bare name has no module component
      "layer_norm",
      "encoder.layer.0.attention.gate.weight",
  };
  for (const std::string& name : others) {
    CAPTURE(name);
    CHECK_FALSE(is_layer_norm_weight(name));
  }
  CHECK(is_bias("encoder.layer.0.attention.query.bias"));
  CHECK(is_bias("embeddings.layer_norm.bias"));
  CHECK_FALSE(is_bias("encoder.layer.0.attention.query.weight"));
}

TEST_CASE("parameter_groups: weight_decay_groups with and without LN-gamma decay") {
  const std::vector<std::string> names = {
      "embeddings.word_embeddings.weight",         // decay
      "embeddings.layer_norm.weight",              // LN γ
      "embeddings.layer_norm.bias",                // no decay
      "encoder.layer.0.attention.query.weight",    // decay
      "encoder.layer.0.attention.query.bias",      // no decay
      "encoder.layer.0.attention.gate.weight",     // decay (method.md §2.5)
      "encoder.layer.0.attention.gate.bias",       // no decay
      "encoder.layer.0.attention.alpha",           // unconditional gate: decay (method.md §2.5)
      "encoder.layer.0.output_layer_norm.weight",  // LN γ
      "pos_embed",                                 // excluded by name below
  };
  NamedTensors named;
  for (size_t i = 0; i < names.size(); ++i) named.emplace_back(names[i], ops::zeros({2}));

  WeightDecayRule rule;
  rule.weight_decay = 0.1;
  rule.no_decay_names = {"pos_embed"};
  const std::vector<ParameterGroup> groups = weight_decay_groups(named, rule);
  REQUIRE(groups.size() == 2);
  CHECK(groups[0].weight_decay == 0.1);
  CHECK(groups[1].weight_decay == 0.0);
  CHECK(groups[0].names == std::vector<std::string>{"embeddings.word_embeddings.weight",
                                                    "encoder.layer.0.attention.query.weight",
                                                    "encoder.layer.0.attention.gate.weight",
                                                    "encoder.layer.0.attention.alpha"});
  CHECK(groups[1].names ==
        std::vector<std::string>{"embeddings.layer_norm.weight", "embeddings.layer_norm.bias",
                                 "encoder.layer.0.attention.query.bias",
                                 "encoder.layer.0.attention.gate.bias",
                                 "encoder.layer.0.output_layer_norm.weight", "pos_embed"});
  // The groups hold the very tensors (handles), not copies.
  CHECK(groups[0].parameters[0].is_same(named[0].second));
  CHECK(groups[1].parameters[5].is_same(named[9].second));

  rule.decay_layer_norm_weight = true;  // --wd_LN_gamma
  const std::vector<ParameterGroup> with_gamma = weight_decay_groups(named, rule);
  CHECK(with_gamma[0].names ==
        std::vector<std::string>{
            "embeddings.word_embeddings.weight", "embeddings.layer_norm.weight",
            "encoder.layer.0.attention.query.weight", "encoder.layer.0.attention.gate.weight",
            "encoder.layer.0.attention.alpha", "encoder.layer.0.output_layer_norm.weight"});
  CHECK(with_gamma[1].names.size() == 4);  // the biases and pos_embed

  WeightDecayRule negative;
  negative.weight_decay = -0.1;
  CHECK_THROWS_AS(weight_decay_groups(named, negative), Error);
}

TEST_CASE("parameter_groups: check_parameter_groups validates and fills names") {
  std::vector<ParameterGroup> unnamed = {ParameterGroup{{}, {ops::zeros({1})}},
                                         ParameterGroup{{}, {ops::zeros({1}), ops::zeros({2})}}};
  check_parameter_groups(unnamed, "test");
  CHECK(unnamed[1].names == std::vector<std::string>{"group1.0", "group1.1"});

  Tensor shared = ops::zeros({2});
  std::vector<ParameterGroup> twice = {ParameterGroup{{"a", "b"}, {shared, shared}}};
  CHECK_THROWS_WITH_AS(check_parameter_groups(twice, "test"), doctest::Contains("same tensor"),
                       Error);
  std::vector<ParameterGroup> negative = {ParameterGroup{{"a"}, {shared}, -1.0}};
  CHECK_THROWS_WITH_AS(check_parameter_groups(negative, "test"), doctest::Contains("weight_decay"),
                       Error);
  std::vector<ParameterGroup> bad_scale = {ParameterGroup{{"a"}, {shared}, 0.0, -1.0}};
  CHECK_THROWS_WITH_AS(check_parameter_groups(bad_scale, "test"), doctest::Contains("lr_scale"),
                       Error);
  std::vector<ParameterGroup> undefined = {ParameterGroup{{"a"}, {Tensor()}}};
  CHECK_THROWS_WITH_AS(check_parameter_groups(undefined, "test"), doctest::Contains("undefined"),
                       Error);
}
