// Shared by the integer-model tests (tests/test_integer_model.cpp, tests/test_integer_export.cpp):
// a tiny model of one attention variant (random weights), calibrated for W8A8 on the built-in
// synthetic data, and its validation batches.
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "models/config.h"
#include "models/model.h"
#include "models/run_data.h"
#include "quant/quantization_setup.h"
#include "quant/quantized_model.h"
#include "tests/tiny_run.h"

namespace qt::test {

struct Variant {
  std::string family, gate = "none";
  bool clipped = false;
  int integer_head = -1;
  std::string softmax = "";  // a softmax kind other than vanilla / clipped (e.g. "sink")
};

inline std::string variant_name(const Variant& v) {
  return v.family + (v.clipped ? "+clipped" : "") + (v.gate != "none" ? "+gate:" + v.gate : "") +
         (v.integer_head == 1 ? "+integer_head" : "");
}

struct Calibrated {
  qt::models::RunConfig config;
  std::shared_ptr<qt::models::Model> model;
  std::shared_ptr<qt::models::RunData> data;
  std::unique_ptr<qt::quant::QuantizedModel> quantized;
};

inline Calibrated calibrated(const Variant& v, uint64_t seed = 7) {
  Calibrated c;
  c.config = qt::test::tiny_run_config(v.family);
  c.config.model.gate = qt::nn::parse_gate_kind(v.gate);
  if (v.clipped) {
    c.config.model.softmax = qt::nn::SoftmaxKind::clipped;
    c.config.model.gamma = -0.03;
    c.config.model.zeta = 1.0;
  }
  if (!v.softmax.empty()) c.config.model.softmax = qt::nn::parse_softmax_kind(v.softmax);
  c.model = qt::models::build_model(c.config.model, seed);
  c.data = std::make_shared<qt::models::RunData>(qt::models::load_run_data(c.config));
  qt::quant::QuantizationOptions options = qt::quant::paper_quantization_options(*c.model, 8);
  if (v.integer_head == 1) options.head_quantized = true;
  c.quantized = std::make_unique<qt::quant::QuantizedModel>(
      qt::quant::copy_model(*c.model), qt::quant::quantization_setup(*c.model, options));
  qt::quant::CalibrationOptions calibration;
  calibration.batches = 2;
  calibration.batch_size = 8;
  c.quantized->calibrate(*c.data, calibration);
  return c;
}

inline qt::models::Batch validation_batch(const Calibrated& c, int64_t size) {
  std::vector<int64_t> indices;
  for (int64_t i = 0; i < size; ++i) indices.push_back(i);
  const qt::data::Batch b = c.data->validation_batch(indices, 0);
  return qt::models::Batch{b.input_ids, b.images, b.labels};
}

}  // namespace qt::test
