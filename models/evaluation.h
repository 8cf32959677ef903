// Evaluation on the validation split: what `qtlab eval` prints and what the trainer logs.
//
//   text (BERT, OPT):  loss = sum of token cross-entropies / number of labelled tokens (BERT: the
//                      masked positions of the fixed evaluation masks; OPT: every next token),
//                      perplexity = exp(loss);
//   images (ViT):      loss as above over images, accuracy = correct top-1 / images.
//
// Sums are accumulated in double per batch and over MPI ranks (each rank evaluates its shard of the
// validation batches; the sums are all-reduced), so the result does not depend on the rank count
// beyond float rounding inside a batch. The model runs in eval mode (no dropout) without autograd.
#pragma once

#include <string>

#include <cstdint>

#include "models/model.h"
#include "models/run_data.h"

namespace qt::models {

struct EvaluationResult {
  double loss = 0.0;
  double perplexity = 0.0;  // text
  double accuracy = 0.0;    // images
  int64_t samples = 0;      // sequences or images evaluated
  int64_t labels = 0;       // labelled tokens (text) or images
};

// Evaluates `max_batches` batches of `batch_size` (<= 0: the whole validation split, the last
// batch possibly smaller). Restores the model's train/eval mode afterwards.
EvaluationResult evaluate(Model& model, const RunData& data, int64_t batch_size,
                          int64_t max_batches);

// The pieces of evaluate() that another evaluator of the same batches reuses (the integer model,
// quant/integer_evaluation.h), so that both read exactly the same samples and sums:
//   the number of validation batches of `batch_size` read (max_batches <= 0: all);
int64_t validation_batch_count(const RunData& data, int64_t batch_size, int64_t max_batches);
//   validation batch b: samples [b * batch_size, min((b + 1) * batch_size, N));
Batch validation_batch_at(const RunData& data, int64_t b, int64_t batch_size);
//   sums over the batches and MPI ranks (all-reduced here): loss x labels, labels, correct top-1,
//   samples -> the result. `what` names the evaluator in the error for no labelled positions.
struct EvaluationSums {
  double loss = 0, labels = 0, correct = 0, samples = 0;
};
EvaluationResult finish_evaluation(EvaluationSums sums, int64_t batches, const char* what);

// Throws unless result.loss is finite: a NaN or infinite loss is no measurement (printing
// "perplexity nan" and exiting 0 would let it pass). `what` names the model in the message.
void require_finite_evaluation(const EvaluationResult& result, const std::string& what);

// models::Batch from the data pipeline's batch (the same three tensors).
Batch to_model_batch(const data::Batch& batch);

}  // namespace qt::models
