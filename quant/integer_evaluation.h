// The integer model on the validation split, beside the simulated W8A8 model it was lowered from:
// what `qtlab quantize --integer` reports.
//
//   evaluation   as models::evaluate (same batches, same sums, loss = mean cross-entropy over the
//                labelled positions, perplexity = exp(loss), ViT accuracy = top-1): the integer
//                forward gives the hidden states (or, with an integer head, the logits) as codes;
//                their real values feed the FP head (Model::head_logits) or the loss directly.
//                The loss itself is computed in floating point: it is the metric, not the model.
//   agreement    on the first `agreement_batches` batches, every tensor of the integer model that
//                the simulation quantizes is compared with the simulation's codes at that point
//                (in the integer tensor's LSBs): share of identical codes, share within 1 LSB,
//                mean and max |difference|.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "models/evaluation.h"
#include "models/run_data.h"
#include "quant/integer_model.h"
#include "quant/quantized_model.h"

namespace qt::quant {

struct TensorAgreement {
  std::string name;
  int64_t elements = 0, exact = 0, within_one = 0;
  double sum_abs = 0, max_abs = 0;
  double mean_abs() const { return elements > 0 ? sum_abs / static_cast<double>(elements) : 0; }
};

struct IntegerEvaluation {
  models::EvaluationResult result;
  std::vector<TensorAgreement> agreement;  // graph order
  int64_t agreement_batches = 0;
};

// `simulated` must be the frozen QuantizedModel whose ranges built `integer`.
IntegerEvaluation evaluate_integer(const IntegerModel& integer, QuantizedModel& simulated,
                                   const models::RunData& data, int64_t batch_size,
                                   int64_t max_batches, int64_t agreement_batches = 2);

// Integer logits (or hidden states through the FP head) of one batch, as models::Model::logits
// returns them ([B, T, V] / [B, classes]).
Tensor integer_logits(const IntegerModel& integer, const models::Model& model,
                      const models::Batch& batch);

}  // namespace qt::quant
