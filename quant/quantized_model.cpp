#include "quant/quantized_model.h"

#include <fmt/format.h>
#include <fmt/ranges.h>

#include <algorithm>
#include <numeric>
#include <random>
#include <set>
#include <string>
#include <vector>

#include "autograd/node.h"
#include "models/model_points.h"
#include "quant/uniform_quantizer.h"
#include "tensor/error.h"
#include "tensor/view.h"

namespace qt::quant {

std::shared_ptr<models::Model> copy_model(const models::Model& model) {
  std::shared_ptr<models::Model> copy = models::build_model(model.config, 0);
  const auto copy_all = [](const nn::NamedTensors& to, const nn::NamedTensors& from) {
    QT_CHECK(to.size() == from.size(), "copy_model: {} tensors in the copy, {} in the model",
             to.size(), from.size());
    for (size_t i = 0; i < to.size(); ++i) {
      QT_CHECK(to[i].first == from[i].first,
               "copy_model: tensor {} is '{}' in the copy, '{}' in "
               "the model",
               i, to[i].first, from[i].first);
      ops::copy_into(to[i].second, from[i].second);
    }
  };
  copy_all(copy->named_parameters(), model.named_parameters());
  copy_all(copy->named_buffers(), model.named_buffers());
  copy->train(model.is_training());
  return copy;
}

std::string activation_range_name(const QuantizationOptions& options) {
  std::string name = range_method_name(RangeMethod::running_min_max);
  if (options.activation_percentile) name += fmt::format(":{}", *options.activation_percentile);
  return name;
}

QuantizedModel::QuantizedModel(std::shared_ptr<models::Model> model, QuantizationSetup setup)
    : model_(std::move(model)), setup_(std::move(setup)) {
  QT_CHECK(model_ != nullptr, "QuantizedModel: no model");
  // The setup must come from this model's own point table (quantization_setup(model, ...)).
  const models::ModelPoints table = model_->points();
  std::set<std::string> rows;
  for (const models::ModelPoint& p : table.points) rows.insert(p.name);
  const auto check_row = [&](const std::string& name) {
    QT_CHECK(rows.count(name) != 0,
             "QuantizedModel: the setup is for a {} model, the model is {} (its points have no "
             "'{}')",
             setup_.family, table.family, name);
  };
  for (const auto& entry : setup_.activations) check_row(entry.first);
  for (const auto& entry : setup_.weights) check_row(entry.first);
  for (const auto& [point, settings] : setup_.activations) {
    check_bits(settings.bits, "QuantizedModel: activation bits");
    activations_.emplace(
        point, ActivationQuantizer{settings.bits, RangeEstimator(settings.estimator), {}});
  }
  quantize_weights();
}

void QuantizedModel::quantize_weights() {
  std::map<std::string, Tensor> parameters;
  for (const auto& [name, tensor] : model_->named_parameters()) parameters[name] = tensor;
  NoGradGuard no_grad;
  for (const auto& [name, settings] : setup_.weights) {
    const auto found = parameters.find(name);
    QT_CHECK(found != parameters.end(), "QuantizedModel: the model has no parameter '{}'", name);
    const Tensor& weight = found->second;
    // Symmetric per-tensor, the range from the whole tensor (min-max, or the MSE grid search
    // whose quantizer is the one applied: same bits, symmetric).
    RangeEstimatorOptions estimator_options;
    estimator_options.method = settings.method;
    estimator_options.bits = settings.bits;
    estimator_options.symmetric = true;
    RangeEstimator estimator(estimator_options);
    estimator.update(weight);
    WeightQuantizer quantizer;
    quantizer.bits = settings.bits;
    quantizer.parameters = estimator.parameters(settings.bits, /*symmetric=*/true);
    quantizer.min = estimator.range().min[0];
    quantizer.max = estimator.range().max[0];
    quantizer.lookup_point = settings.lookup_point;
    if (settings.lookup_point.empty())
      ops::copy_into(weight, ops::fake_quantize(weight, quantizer.parameters));  // Ŵ in place
    const auto [entry, inserted] = weights_.emplace(name, quantizer);
    if (!settings.lookup_point.empty()) lookups_[settings.lookup_point] = &entry->second;
  }
}

Tensor QuantizedModel::at(const std::string& point, const Tensor& x) {
  const auto activation = activations_.find(point);
  if (activation != activations_.end()) {
    ActivationQuantizer& q = activation->second;
    if (!frozen_) {
      // Calibration: update the running range, then quantize with it (method.md §4.4 step 3).
      q.estimator.update(x);
      q.parameters = q.estimator.parameters(q.bits, /*symmetric=*/false);
    }
    ++activation_visits_[point];
    return fake_quantize(x, q.parameters);
  }
  const auto lookup = lookups_.find(point);
  if (lookup != lookups_.end()) {
    ++lookup_visits_[point];
    return fake_quantize(x, lookup->second->parameters);  // = a lookup into the quantized table
  }
  unquantized_points_.insert(point);
  if (!frozen_ && x.defined() && is_floating(x.dtype())) {
    // A point the simulation leaves in floating point: its range is still recorded (running
    // min-max, as the activations), for an integer engine that needs a grid there.
    auto watched = observed_.find(point);
    if (watched == observed_.end())
      watched = observed_.emplace(point, RangeEstimator(RangeEstimatorOptions{})).first;
    watched->second.update(x);
  }
  return x;
}

Tensor QuantizedModel::forward(const models::Batch& batch, bool logits) {
  const bool was_training = model_->is_training();
  model_->eval();
  NoGradGuard no_grad;
  Tensor out;
  {
    nn::TapScope scope(this);
    out = logits ? model_->logits(batch) : model_->loss(batch);
  }
  model_->train(was_training);
  return out;
}

void QuantizedModel::calibrate_batch(const models::Batch& batch) {
  QT_CHECK(!frozen_, "QuantizedModel::calibrate_batch: the ranges are frozen");
  forward(batch, /*logits=*/false);
  ++calibration_batches_;
}

void QuantizedModel::calibrate(const models::RunData& data, const CalibrationOptions& options) {
  QT_CHECK(options.batches >= 1, "QuantizedModel::calibrate: batches must be >= 1, got {}",
           options.batches);
  QT_CHECK(data.train_samples > 0, "QuantizedModel::calibrate: the training split is empty");
  QT_CHECK(options.batch_size >= 1, "QuantizedModel::calibrate: batch size must be >= 1, got {}",
           options.batch_size);
  const int64_t size = std::min(options.batch_size, data.train_samples);
  // Random training samples: a seeded Fisher–Yates shuffle of the split, taken in order (and
  // reshuffled if the batches need more samples than the split holds).
  std::mt19937_64 generator(options.seed);
  std::vector<int64_t> order(static_cast<size_t>(data.train_samples));
  size_t next = order.size();
  std::vector<int64_t> indices;
  for (int64_t b = 0; b < options.batches; ++b) {
    indices.clear();
    for (int64_t i = 0; i < size; ++i) {
      if (next == order.size()) {
        std::iota(order.begin(), order.end(), int64_t{0});
        for (size_t k = order.size(); k > 1; --k) std::swap(order[k - 1], order[generator() % k]);
        next = 0;
      }
      indices.push_back(order[next++]);
    }
    calibrate_batch(models::to_model_batch(data.train_batch(indices, 0)));
  }
  calibration_seed_ = options.seed;
  freeze();
}

void QuantizedModel::freeze() {
  std::vector<std::string> unreached;
  for (const auto& [point, q] : activations_)
    if (q.estimator.batches_seen == 0) unreached.push_back(point);
  QT_CHECK(unreached.empty(),
           "QuantizedModel::freeze: {} quantized point(s) never reached by a calibration forward "
           "pass (missing tap points?): {}",
           unreached.size(), fmt::join(unreached, ", "));
  for (auto& [point, q] : activations_) q.estimator.freeze();
  frozen_ = true;
}

Tensor QuantizedModel::loss(const models::Batch& batch) {
  QT_CHECK(frozen_, "QuantizedModel::loss: calibrate (and freeze) first");
  return forward(batch, /*logits=*/false);
}

Tensor QuantizedModel::logits(const models::Batch& batch) {
  QT_CHECK(frozen_, "QuantizedModel::logits: calibrate (and freeze) first");
  return forward(batch, /*logits=*/true);
}

models::EvaluationResult QuantizedModel::evaluate(const models::RunData& data, int64_t batch_size,
                                                  int64_t max_batches) {
  QT_CHECK(frozen_, "QuantizedModel::evaluate: calibrate (and freeze) first");
  nn::TapScope scope(this);
  return models::evaluate(*model_, data, batch_size, max_batches);
}

CalibratedRanges QuantizedModel::ranges() const {
  CalibratedRanges out;
  out.family = setup_.family;
  out.weight_bits = setup_.options.weight_bits;
  out.activation_bits = setup_.options.activation_bits;
  out.weight_range = range_method_name(setup_.options.weight_range);
  out.activation_range = activation_range_name(setup_.options);
  out.calibration_batches = calibration_batches_;
  out.calibration_seed = calibration_seed_;
  for (const auto& [point, q] : activations_) {
    if (q.estimator.batches_seen == 0) continue;
    const QuantizationRange& range = q.estimator.range();
    out.activations[point] = calibrated_range(q.parameters, range.min[0], range.max[0]);
  }
  for (const auto& [point, estimator] : observed_) {
    if (estimator.batches_seen == 0) continue;
    const QuantizationRange& range = estimator.range();
    out.observed[point] =
        calibrated_range(estimator.parameters(8, /*symmetric=*/false), range.min[0], range.max[0]);
  }
  for (const auto& [name, q] : weights_) {
    CalibratedRange r = calibrated_range(q.parameters, q.min, q.max);
    r.lookup_point = q.lookup_point;
    out.weights[name] = r;
  }
  return out;
}

}  // namespace qt::quant
