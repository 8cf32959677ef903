// The models' own tables of quantization and analysis points (models/model_points.h), checked
// against what a forward pass really does: a plain tap records which points fire and in which
// order. Every activation row must fire, in the order the table lists it (graph order); every
// weight row must be a parameter of the model and precede the output of the module it belongs to;
// tied lookups and headline points must be rows that fire. A renamed tap point or module fails
// here, not in a quantization run.
#include <doctest/doctest.h>

#include <algorithm>
#include <map>
#include <set>
#include <string>
#include <vector>

#include "autograd/node.h"
#include "models/model.h"
#include "models/model_points.h"
#include "nn/activation_tap.h"
#include "tensor/error.h"
#include "tests/test_util.h"
#include "tests/tiny_run.h"

namespace {

using qt::models::AnalysisRole;
using qt::models::ModelPoint;
using qt::models::ModelPoints;
using qt::models::PointKind;

// The tap points of one forward pass, in the order they first fire.
struct FiringOrder : qt::nn::ActivationTaps {
  std::vector<std::string> order;
  std::set<std::string> seen;
  qt::Tensor at(const std::string& point, const qt::Tensor& x) override {
    if (seen.insert(point).second) order.push_back(point);
    return x;
  }
};

FiringOrder run_forward(const qt::models::Model& model, const qt::models::ModelConfig& c) {
  qt::models::Batch batch;
  if (c.family == qt::models::Family::vit)
    batch.images =
        qt::test::random_tensor({2, (c.image_size / c.patch_size) * (c.image_size / c.patch_size),
                                 c.patch_size * c.patch_size * c.channels},
                                qt::DType::f32, 3);
  else
    batch.input_ids = qt::test::random_ids({2, 8}, 0, c.vocab_size - 1, 4);
  FiringOrder taps;
  qt::NoGradGuard no_grad;
  qt::nn::TapScope scope(&taps);
  (void)model.logits(batch);
  return taps;
}

void check_table(const qt::models::ModelConfig& config) {
  const auto model = qt::models::build_model(config, 1);
  model->eval();
  const ModelPoints table = model->points();
  CHECK(table.family == qt::models::family_name(config.family));
  CHECK(table.layers == config.layers);
  CHECK(table.heads == config.heads);
  const FiringOrder fired = run_forward(*model, config);
  std::map<std::string, size_t> fire_index;
  for (size_t i = 0; i < fired.order.size(); ++i) fire_index[fired.order[i]] = i;

  std::set<std::string> parameters;
  for (const auto& [name, tensor] : model->named_parameters()) parameters.insert(name);

  std::set<std::string> rows;
  size_t last_fired = 0;
  bool first = true;
  for (size_t i = 0; i < table.points.size(); ++i) {
    const ModelPoint& p = table.points[i];
    CAPTURE(p.name);
    CHECK(rows.insert(p.name).second);  // no row twice
    if (p.kind == PointKind::weight) {
      CHECK(parameters.count(p.name) == 1);
      CHECK(p.role == AnalysisRole::none);
      // "<module>.weight" precedes "<module>:output" when the module has an output row.
      const std::string suffix = ".weight";
      if (p.name.size() > suffix.size() &&
          p.name.compare(p.name.size() - suffix.size(), suffix.size(), suffix) == 0) {
        const std::string output = p.name.substr(0, p.name.size() - suffix.size()) + ":output";
        for (size_t j = 0; j < i; ++j) CHECK(table.points[j].name != output);
      }
      if (!p.tied_lookup_point.empty()) CHECK(fire_index.count(p.tied_lookup_point) == 1);
      continue;
    }
    REQUIRE(fire_index.count(p.name) == 1);  // the tap point exists
    const size_t at = fire_index.at(p.name);
    if (!first) CHECK(at > last_fired);  // graph order
    first = false;
    last_fired = at;
    CHECK((p.layer >= -1 && p.layer < config.layers));
  }
  // Every layer has the analysis roles quant/outlier_analysis reads.
  for (int64_t l = 0; l < config.layers; ++l)
    for (AnalysisRole role : {AnalysisRole::ffn_output, AnalysisRole::residual_sum,
                              AnalysisRole::block_output, AnalysisRole::probabilities})
      CHECK(qt::models::point_with_role(table, l, role).layer == l);
  // Headline points are metric rows.
  std::set<std::string> metric_rows;
  for (const ModelPoint& p : table.points)
    if (p.metrics) metric_rows.insert(p.name);
  const auto& headline = table.analysis.headline;
  std::vector<std::string> all = headline.max_inf_norm_points;
  all.insert(all.end(), headline.kurtosis_points.begin(), headline.kurtosis_points.end());
  for (const auto& set : headline.extra_max_inf_norms)
    all.insert(all.end(), set.points.begin(), set.points.end());
  CHECK(!headline.max_inf_norm_points.empty());
  CHECK(!headline.kurtosis_points.empty());
  for (const std::string& name : all) {
    CAPTURE(name);
    CHECK(metric_rows.count(name) == 1);
  }
}

}  // namespace

TEST_CASE("test_model_points: every row fires, in graph order, for each model and variant") {
  qt::test::OneThread one_thread;
  for (const std::string family : {"bert", "opt", "vit"})
    for (const std::string gate : {"none", "linear"}) {
      CAPTURE(family);
      CAPTURE(gate);
      qt::models::ModelConfig c = qt::test::tiny_run_config(family).model;
      c.gate = qt::nn::parse_gate_kind(gate);
      check_table(c);
    }
  qt::models::ModelConfig vit = qt::test::tiny_run_config("vit").model;
  vit.patch_layer_norm = true;
  check_table(vit);
}

TEST_CASE("test_model_points: the rows per block and the model-level choices") {
  const auto bert = qt::models::build_model(qt::test::tiny_run_config("bert").model, 1)->points();
  const auto opt = qt::models::build_model(qt::test::tiny_run_config("opt").model, 1)->points();
  // Per block: Q, K, V, out (weight + output each), scores, probabilities, context, attention
  // residual, 2 x LN (gamma + output), ffn_in weight, activation, ffn_out (2), FFN residual, and
  // the analysis-only block output: 8 + 3 + 1 + 4 + 2 + 2 + 1 + 1 = 22 rows.
  int64_t block_rows = 0;
  for (const ModelPoint& p : bert.points) block_rows += p.layer == 0;
  CHECK(block_rows == 22);
  // Post-LN (BERT) quantizes the gated context, OPT the context before the gate.
  const auto has = [](const ModelPoints& t, const std::string& name) {
    return std::any_of(t.points.begin(), t.points.end(),
                       [&](const ModelPoint& p) { return p.name == name && p.quantized; });
  };
  CHECK(has(bert, "encoder.layer.0.attention:gated_context"));
  CHECK(!has(bert, "encoder.layer.0.attention:context"));
  CHECK(has(opt, "decoder.layers.0.attention:context"));
  CHECK(!has(opt, "decoder.layers.0.attention:gated_context"));
  // Pre-LN lists the attention LN before the attention; post-LN after it.
  const auto index = [](const ModelPoints& t, const std::string& name) {
    for (size_t i = 0; i < t.points.size(); ++i)
      if (t.points[i].name == name) return static_cast<int64_t>(i);
    return int64_t{-1};
  };
  CHECK(index(opt, "decoder.layers.0.attention_layer_norm:output") <
        index(opt, "decoder.layers.0.attention.query:output"));
  CHECK(index(bert, "encoder.layer.0.attention_layer_norm:output") >
        index(bert, "encoder.layer.0.attention.query:output"));
  // The final LN's bits and the model-level analysis choices.
  CHECK(bert.points[static_cast<size_t>(index(bert, "encoder.layer.1.output_layer_norm:output"))]
            .bits == qt::models::PointBits::final_layer_norm);
  CHECK(bert.points[static_cast<size_t>(index(bert, "encoder.layer.0.output_layer_norm:output"))]
            .bits == qt::models::PointBits::layer_norm);
  CHECK(bert.analysis.kurtosis_batches == 257);
  CHECK(opt.analysis.kurtosis_batches == 101);
  CHECK(opt.quantization.mse_weights);
  CHECK(!bert.quantization.mse_weights);
  CHECK(opt.analysis.headline.kurtosis_points.size() == 1 + 5 * 2);
  CHECK_THROWS_WITH_AS(qt::models::point_with_role(bert, 0, AnalysisRole::gate),
                       doctest::Contains("no gate point in layer 0"), qt::Error);
}
