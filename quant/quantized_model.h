// A model under simulated W`b`A`b` post-training quantization (method.md §4): the paper's
// "wrap the model, calibrate, freeze, evaluate" (method.md §4.4) on top of the activation taps of
// nn/activation_tap.h, with the points and weights of quant/quantization_setup.h.
//
//   construction  every weight of the setup is fake-quantized IN PLACE in the model it is given
//                 (a private copy: copy_model), symmetric per-tensor with its own range (current
//                 min-max or MSE grid, computed once: weights do not change). Biases, LayerNorm
//                 betas, gates and FP heads are untouched. A table tied to an FP head stays FP and
//                 is quantized at its lookups (quantization_setup.h, "Tied tables").
//   calibration   N batches in eval mode without autograd. At every quantized point the quantizer
//                 first updates its running range with the tensor it sees, then fake-quantizes
//                 the tensor with the CURRENT range (method.md §4.4 step 3), so later points
//                 already see quantized inputs while calibrating:
//                   batch 1:  (x_min, x_max) = (m, M)      m, M = min, max (or percentiles) of x
//                   later:    x_min ← 0.9 x_min + 0.1 m,  x_max ← 0.9 x_max + 0.1 M
//                 (asymmetric: s = (x_max − x_min) / (2^b − 1), z = ⌊−x_min / s⌉, method.md §4.1)
//   freeze        the ranges are fixed; forward passes only fake-quantize.
//
// The paper calibrates on 16 batches sampled at random from the training set (method.md §4.4); the
// sample indices here come from a seeded Fisher–Yates shuffle of the training split.
//
// QuantizedModel is the ActivationTaps implementation itself: loss / logits / evaluate install it
// for the duration of the call (nn::TapScope). A test may install a wrapper that forwards to at()
// to watch what the quantizers see.
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <set>
#include <string>

#include "models/evaluation.h"
#include "models/model.h"
#include "models/run_data.h"
#include "nn/activation_tap.h"
#include "quant/calibrated_ranges.h"
#include "quant/quantization_setup.h"
#include "quant/range_estimators.h"

namespace qt::quant {

// A fresh model of the same configuration holding a copy of every parameter and buffer.
std::shared_ptr<models::Model> copy_model(const models::Model& model);

struct CalibrationOptions {
  int64_t batches = 16;     // the paper's 16 training batches
  int64_t batch_size = 32;  // `qtlab quantize` passes the run's train.batch_size
  uint64_t seed = 2000;     // the repo's --seed 2000
};

class QuantizedModel : public nn::ActivationTaps {
 public:
  // Takes `model` (its weights are overwritten: pass a copy) and quantizes its weights. The setup
  // must have been made for this model (quantization_setup(*model, options)).
  QuantizedModel(std::shared_ptr<models::Model> model, QuantizationSetup setup);

  const QuantizationSetup& setup() const { return setup_; }
  models::Model& model() const { return *model_; }

  // The taps: quantizes at the setup's points (calibrating until freeze), passes others through.
  Tensor at(const std::string& point, const Tensor& x) override;

  // One calibration forward (the model's loss) on `batch`, eval mode, no autograd.
  void calibrate_batch(const models::Batch& batch);
  // options.batches training batches drawn at random (seeded), one calibrate_batch each, then
  // freeze(). Throws if the training split is empty or options are invalid.
  void calibrate(const models::RunData& data, const CalibrationOptions& options);
  // Fixes every range. Throws naming the quantized points no forward pass has reached (a tap point
  // missing from the model would otherwise silently stay FP).
  void freeze();
  bool frozen() const { return frozen_; }
  int64_t calibration_batches() const { return calibration_batches_; }

  // Quantized forward passes (after freeze; eval mode, taps installed).
  Tensor loss(const models::Batch& batch);
  Tensor logits(const models::Batch& batch);
  // models::evaluate with the quantizers installed (after freeze).
  models::EvaluationResult evaluate(const models::RunData& data, int64_t batch_size,
                                    int64_t max_batches);

  // The ranges of every activation point (once reached) and every weight.
  CalibratedRanges ranges() const;
  // Per quantized activation point / lookup point: how many tensors it has quantized.
  const std::map<std::string, int64_t>& quantized_visits() const { return activation_visits_; }
  const std::map<std::string, int64_t>& lookup_visits() const { return lookup_visits_; }
  // The points a forward pass reached that are not quantized.
  const std::set<std::string>& unquantized_points() const { return unquantized_points_; }

 private:
  struct ActivationQuantizer {
    int bits = 8;
    RangeEstimator estimator;
    QuantizationParameters parameters;  // of the current range; fixed after freeze
  };
  struct WeightQuantizer {
    int bits = 8;
    QuantizationParameters parameters;
    float min = 0, max = 0;
    std::string lookup_point;
  };
  void quantize_weights();
  Tensor forward(const models::Batch& batch, bool logits);

  std::shared_ptr<models::Model> model_;
  QuantizationSetup setup_;
  std::map<std::string, ActivationQuantizer> activations_;
  std::map<std::string, WeightQuantizer> weights_;
  std::map<std::string, const WeightQuantizer*> lookups_;  // lookup point -> its table's quantizer
  std::map<std::string, int64_t> activation_visits_, lookup_visits_;
  std::set<std::string> unquantized_points_;
  // Unquantized points, watched while calibrating (CalibratedRanges::observed).
  std::map<std::string, RangeEstimator> observed_;
  bool frozen_ = false;
  int64_t calibration_batches_ = 0;
  uint64_t calibration_seed_ = 0;
};

// "running_minmax" or "running_minmax:<p>" (the activation estimator of `options`, for reports).
std::string activation_range_name(const QuantizationOptions& options);

}  // namespace qt::quant
