#include "quant/integer_evaluation.h"

#include <algorithm>
#include <cmath>
#include <map>

#include "autograd/functions.h"
#include "autograd/node.h"
#include "models/model.h"
#include "nn/activation_tap.h"
#include "nn/cross_entropy.h"
#include "optim/distributed.h"
#include "tensor/create.h"
#include "tensor/error.h"
#include "tensor/reduce.h"
#include "tensor/view.h"

namespace qt::quant {
namespace {

// Records what the simulated model's quantizers output, forwarding to the QuantizedModel.
struct Watcher : nn::ActivationTaps {
  QuantizedModel* simulated = nullptr;
  std::map<std::string, Tensor> seen;
  Tensor at(const std::string& point, const Tensor& x) override {
    Tensor y = simulated->at(point, x);
    seen[point] = y;
    return y;
  }
};

void compare(const IntegerModel& integer, const IntegerActivations& a, const Watcher& watcher,
             const CalibratedRanges& ranges, std::vector<TensorAgreement>* out) {
  for (size_t t = 0; t < integer.tensors.size(); ++t) {
    const IntegerTensor& info = integer.tensors[t];
    const auto seen = watcher.seen.find(info.name);
    if (seen == watcher.seen.end() || ranges.activations.count(info.name) == 0) continue;
    // The simulation's per-head context is [B, H, T, d_h] (OPT's "context" point); the integer
    // model keeps tokens [B*T, H*d_h].
    Tensor sim = seen->second;
    if (sim.dim() == 4 && info.layout == IntegerLayout::tokens) sim = permute(sim, {0, 2, 1, 3});
    sim = ops::contiguous(sim);
    const std::vector<uint8_t>& codes = a.u8[t];
    QT_CHECK(static_cast<size_t>(sim.numel()) == codes.size(),
             "integer evaluation: '{}' has {} values in the simulation, {} in the integer model",
             info.name, sim.numel(), codes.size());
    auto it = std::find_if(out->begin(), out->end(),
                           [&](const TensorAgreement& x) { return x.name == info.name; });
    if (it == out->end()) {
      out->push_back(TensorAgreement{info.name});
      it = out->end() - 1;
    }
    const float* v = sim.data<float>();
    for (size_t i = 0; i < codes.size(); ++i) {
      const double d = std::fabs(static_cast<double>(v[i]) / info.scale + info.zero_point -
                                 static_cast<double>(codes[i]));
      ++it->elements;
      it->exact += d < 0.5;
      it->within_one += d < 1.5;
      it->sum_abs += d;
      it->max_abs = std::max(it->max_abs, d);
    }
  }
}

}  // namespace

Tensor integer_logits(const IntegerModel& integer, const models::Model& model,
                      const models::Batch& batch) {
  const IntegerActivations a = run_integer_model(integer, integer_input(integer, batch));
  const Tensor out = dequantize_output(integer, a);
  return integer.integer_head ? out : model.head_logits(out);
}

IntegerEvaluation evaluate_integer(const IntegerModel& integer, QuantizedModel& simulated,
                                   const models::RunData& data, int64_t batch_size,
                                   int64_t max_batches, int64_t agreement_batches) {
  const int64_t batches = models::validation_batch_count(data, batch_size, max_batches);
  QT_CHECK(simulated.frozen(), "evaluate_integer: the simulated model is not calibrated");
  models::Model& model = simulated.model();
  const bool was_training = model.is_training();
  model.eval();
  NoGradGuard no_grad;
  const CalibratedRanges ranges = simulated.ranges();
  const bool images = integer.patches > 0;
  const int rank = distributed::rank(), world = distributed::world_size();
  models::EvaluationSums sums;
  IntegerEvaluation out;
  IntegerActivations a;  // reused across batches
  for (int64_t b = rank; b < batches; b += world) {
    const models::Batch batch = models::validation_batch_at(data, b, batch_size);
    const int64_t labels = models::Model::count_labels(batch.labels);
    if (labels == 0) continue;
    run_integer_model(integer, integer_input(integer, batch), a);
    if (out.agreement_batches < agreement_batches) {
      Watcher watcher;
      watcher.simulated = &simulated;
      {
        nn::TapScope scope(&watcher);
        (void)model.logits(batch);
      }
      compare(integer, a, watcher, ranges, &out.agreement);
      ++out.agreement_batches;
    }
    const Tensor real = dequantize_output(integer, a);
    Tensor logits;
    Tensor targets;
    if (images) {
      logits = integer.integer_head ? real : model.head_logits(real);
      targets = batch.labels;
    } else {
      // Only the labelled positions go through the head (as the models' loss does).
      const Tensor flat_labels = reshape(batch.labels, {batch.labels.numel()});
      std::vector<int64_t> rows, wanted;
      const int64_t* y = ops::contiguous(flat_labels).data<int64_t>();
      for (int64_t i = 0; i < flat_labels.numel(); ++i)
        if (y[i] != models::kIgnoreIndex) {
          rows.push_back(i);
          wanted.push_back(y[i]);
        }
      const Tensor index = ops::from_vector(rows, {static_cast<int64_t>(rows.size())});
      targets = ops::from_vector(wanted, {static_cast<int64_t>(wanted.size())});
      if (integer.integer_head) {
        const int64_t V = real.size(2);
        logits = index_select(reshape(real, {real.size(0) * real.size(1), V}), 0, index);
      } else {
        const int64_t d = real.size(2);
        const Tensor hidden =
            index_select(reshape(real, {real.size(0) * real.size(1), d}), 0, index);
        const Tensor l = model.head_logits(reshape(hidden, {1, hidden.size(0), d}));
        logits = reshape(l, {l.size(1), l.size(2)});
      }
    }
    const double loss = nn::cross_entropy(logits, targets, models::kIgnoreIndex, 0.0).item();
    sums.loss += loss * static_cast<double>(labels);
    sums.labels += static_cast<double>(labels);
    sums.samples += static_cast<double>(batch.labels.size(0));
    if (images) {
      const Tensor predicted = ops::argmax(logits, 1);
      const int64_t* p = predicted.data<int64_t>();
      const int64_t* t = ops::contiguous(targets).data<int64_t>();
      for (int64_t i = 0; i < predicted.numel(); ++i) sums.correct += p[i] == t[i] ? 1.0 : 0.0;
    }
  }
  model.train(was_training);
  out.result = models::finish_evaluation(sums, batches, "evaluate_integer");
  return out;
}

}  // namespace qt::quant
