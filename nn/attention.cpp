// Multi-head self-attention with clipped softmax and gating (formulas in attention.h): the
// projections and the gate are ordinary modules; the part between them (scores -> mask ->
// softmax -> clip -> dropout -> P V -> gate) is nn/attention_core.*. The fused path hands the
// Q/K/V projections to the core too (attention_core_projected: one GEMM for all three).
#include "nn/attention.h"

#include "autograd/functions.h"
#include "nn/activation_tap.h"
#include "nn/attention_core.h"
#include "nn/attention_gate.h"
#include "nn/clipped_softmax.h"

namespace qt::nn {

Attention::Attention(const AttentionOptions& options_, std::shared_ptr<DropoutState> dropout_state_,
                     InitRng& rng)
    : options(options_), dropout_state(std::move(dropout_state_)) {
  QT_CHECK(options.hidden > 0 && options.heads > 0 && options.hidden % options.heads == 0,
           "Attention: hidden size {} is not divisible by heads = {}", options.hidden,
           options.heads);
  QT_CHECK(options.probability_dropout >= 0.0f && options.probability_dropout < 1.0f,
           "Attention: probability_dropout {} is outside [0, 1)", options.probability_dropout);
  QT_CHECK(options.probability_dropout == 0.0f || dropout_state != nullptr,
           "Attention: probability_dropout {} needs a DropoutState", options.probability_dropout);
  if (options.softmax.clipped)
    check_clip_range(options.softmax.gamma, options.softmax.zeta, "Attention");
  QT_CHECK(options.sink == AttentionSink::none || !options.softmax.clipped,
           "Attention: a sink column (softmax1 / sink) goes with the plain softmax, not the "
           "clipped one");
  // Children in the reference repo's order (query, key, value, then the gate `alpha`), with the
  // output projection before the gate (see attention.h for the full name list).
  query =
      register_module("query", std::make_shared<Linear>(options.hidden, options.hidden, true, rng));
  key = register_module("key", std::make_shared<Linear>(options.hidden, options.hidden, true, rng));
  value =
      register_module("value", std::make_shared<Linear>(options.hidden, options.hidden, true, rng));
  output = register_module("output",
                           std::make_shared<Linear>(options.hidden, options.hidden, true, rng));
  if (options.gate != GateKind::none)
    gate = register_module("gate", std::make_shared<AttentionGate>(
                                       options.gate, options.hidden, options.heads,
                                       options.gate_pi_init, options.gate_mlp_hidden, rng));
  // The learned sink logits start at 0, i.e. as softmax1. Registered last; named_parameters()
  // lists a module's own parameters before its children's, so "sink" comes first there.
  if (options.sink == AttentionSink::learned)
    sink = register_parameter("sink", ops::zeros({options.heads}));
}

Tensor Attention::forward(const Tensor& x, const Tensor& key_padding_mask) const {
  check_defined(x, "Attention");
  QT_CHECK(x.dim() == 3 && x.shape()[2] == options.hidden,
           "Attention: input must be [B, T, {}], got {}", options.hidden, shape_str(x.shape()));
  AttentionCoreOptions core;
  core.heads = options.heads;
  core.softmax = options.softmax;
  core.causal = options.causal;
  if (is_training() && options.probability_dropout > 0.0f) {
    core.dropout = options.probability_dropout;
    core.dropout_seed = dropout_state->seed;
    core.dropout_stream = dropout_stream(options.dropout_layer_id, dropout_state->step);
  }
  // The gate reads the same x as the projections; pi [B, T, H].
  Tensor pi;
  if (gate) pi = tap(*this, "gate", gate->forward(x));
  // The sink column: the learned logits, or softmax1's constant 0 per head.
  Tensor sink_logits;
  if (options.sink == AttentionSink::learned) sink_logits = sink;
  if (options.sink == AttentionSink::zero) sink_logits = ops::zeros({options.heads}, x.dtype());
  Tensor context;
  // While activation taps are installed (nn/activation_tap.h) the composed path runs, so that the
  // query / key / value Linear outputs exist as tensors to observe.
  if (options.fused && !taps_active()) {
    // Q, K, V projections and the core as one op (one GEMM for the three projections).
    const QkvWeights weights{query->weight, query->bias,   key->weight,
                             key->bias,     value->weight, value->bias};
    context = attention_core_projected(x, weights, pi, key_padding_mask, core, sink_logits);
  } else {
    const Tensor q = query->forward(x), k = key->forward(x), v = value->forward(x);
    if (taps_active()) core.tap_owner = this;
    context = attention_core_composed(q, k, v, pi, key_padding_mask, core, sink_logits);
  }
  return output->forward(tap(*this, "gated_context", context));
}

}  // namespace qt::nn
