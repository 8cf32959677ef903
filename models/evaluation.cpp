#include "models/evaluation.h"

#include <algorithm>
#include <cmath>
#include <numeric>
#include <vector>

#include "autograd/node.h"
#include "optim/distributed.h"
#include "tensor/error.h"
#include "tensor/reduce.h"

namespace qt::models {

Batch to_model_batch(const data::Batch& batch) {
  return Batch{batch.input_ids, batch.images, batch.labels};
}

void require_finite_evaluation(const EvaluationResult& result, const std::string& what) {
  QT_CHECK(std::isfinite(result.loss),
           "the validation loss of {} is {} on {} samples: the model computes non-finite values "
           "(diverged weights?)",
           what, result.loss, result.samples);
}

int64_t validation_batch_count(const RunData& data, int64_t batch_size, int64_t max_batches) {
  QT_CHECK(batch_size > 0, "evaluate: batch size must be > 0, got {}", batch_size);
  QT_CHECK(data.validation_samples > 0, "evaluate: the validation split is empty");
  const int64_t total_batches = (data.validation_samples + batch_size - 1) / batch_size;
  return max_batches > 0 ? std::min(max_batches, total_batches) : total_batches;
}

Batch validation_batch_at(const RunData& data, int64_t b, int64_t batch_size) {
  const int64_t begin = b * batch_size;
  const int64_t end = std::min(begin + batch_size, data.validation_samples);
  std::vector<int64_t> indices(static_cast<size_t>(end - begin));
  std::iota(indices.begin(), indices.end(), begin);
  return to_model_batch(data.validation_batch(indices, 0));
}

EvaluationResult finish_evaluation(EvaluationSums sums, int64_t batches, const char* what) {
  double all[4] = {sums.loss, sums.labels, sums.correct, sums.samples};
  distributed::allreduce_sum(all, 4);
  QT_CHECK(all[1] > 0, "{}: no labelled positions in {} validation batches", what, batches);
  EvaluationResult result;
  result.loss = all[0] / all[1];
  result.perplexity = std::exp(result.loss);
  result.accuracy = all[2] / all[1];
  result.labels = static_cast<int64_t>(all[1]);
  result.samples = static_cast<int64_t>(all[3]);
  return result;
}

EvaluationResult evaluate(Model& model, const RunData& data, int64_t batch_size,
                          int64_t max_batches) {
  const int64_t batches = validation_batch_count(data, batch_size, max_batches);
  const bool was_training = model.is_training();
  model.eval();
  NoGradGuard no_grad;
  const int rank = distributed::rank(), world = distributed::world_size();
  EvaluationSums sums;
  for (int64_t b = rank; b < batches; b += world) {
    const Batch batch = validation_batch_at(data, b, batch_size);
    const int64_t labels = Model::count_labels(batch.labels);
    if (labels == 0) continue;
    const double loss = model.loss(batch).item();
    sums.loss += loss * static_cast<double>(labels);
    sums.labels += static_cast<double>(labels);
    sums.samples += static_cast<double>(batch.labels.size(0));
    if (model.config.family == Family::vit) {
      const Tensor predicted = ops::argmax(model.logits(batch), 1);
      const int64_t* p = predicted.data<int64_t>();
      const int64_t* y = batch.labels.data<int64_t>();
      for (int64_t i = 0; i < predicted.numel(); ++i) sums.correct += p[i] == y[i] ? 1.0 : 0.0;
    }
  }
  model.train(was_training);
  return finish_evaluation(sums, batches, "evaluate");
}

}  // namespace qt::models
