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

EvaluationResult evaluate(Model& model, const RunData& data, int64_t batch_size,
                          int64_t max_batches) {
  QT_CHECK(batch_size > 0, "evaluate: batch size must be > 0, got {}", batch_size);
  QT_CHECK(data.validation_samples > 0, "evaluate: the validation split is empty");
  const bool was_training = model.is_training();
  model.eval();
  NoGradGuard no_grad;
  const int64_t total_batches = (data.validation_samples + batch_size - 1) / batch_size;
  const int64_t batches = max_batches > 0 ? std::min(max_batches, total_batches) : total_batches;
  const int rank = distributed::rank(), world = distributed::world_size();
  // sums[0] = loss sum, [1] = labels, [2] = correct (images), [3] = samples
  double sums[4] = {0, 0, 0, 0};
  std::vector<int64_t> indices;
  for (int64_t b = rank; b < batches; b += world) {
    const int64_t begin = b * batch_size;
    const int64_t end = std::min(begin + batch_size, data.validation_samples);
    indices.resize(static_cast<size_t>(end - begin));
    std::iota(indices.begin(), indices.end(), begin);
    const Batch batch = to_model_batch(data.validation_batch(indices, 0));
    const int64_t labels = Model::count_labels(batch.labels);
    if (labels == 0) continue;
    const double loss = model.loss(batch).item();
    sums[0] += loss * static_cast<double>(labels);
    sums[1] += static_cast<double>(labels);
    sums[3] += static_cast<double>(end - begin);
    if (model.config.family == Family::vit) {
      const Tensor predicted = ops::argmax(model.logits(batch), 1);
      const int64_t* p = predicted.data<int64_t>();
      const int64_t* y = batch.labels.data<int64_t>();
      for (int64_t i = 0; i < predicted.numel(); ++i) sums[2] += p[i] == y[i] ? 1.0 : 0.0;
    }
  }
  distributed::allreduce_sum(sums, 4);
  model.train(was_training);
  QT_CHECK(sums[1] > 0, "evaluate: no labelled positions in {} validation batches", batches);
  EvaluationResult result;
  result.loss = sums[0] / sums[1];
  result.perplexity = std::exp(result.loss);
  result.accuracy = sums[2] / sums[1];
  result.labels = static_cast<int64_t>(sums[1]);
  result.samples = static_cast<int64_t>(sums[3]);
  return result;
}

}  // namespace qt::models
