#include "models/memory_estimate.h"

#include <fmt/format.h>

#include "tensor/error.h"
#include "tensor/system_memory.h"

namespace qt::models {

namespace {

int64_t linear(int64_t in, int64_t out) {
  return in * out + out;
}
int64_t layer_norm(int64_t d) {
  return 2 * d;
}

// nn/attention_gate.cpp, per kind.
int64_t gate_parameters(const ModelConfig& m) {
  const int64_t heads = m.heads, head_dim = m.hidden / m.heads;
  switch (m.gate) {
    case nn::GateKind::none:
      return 0;
    case nn::GateKind::linear_per_head:
    case nn::GateKind::conditional_per_head:
      return heads * head_dim + heads;
    case nn::GateKind::mlp_per_head: {
      const int64_t n = m.gate_mlp_hidden == 0 ? head_dim / 4 : m.gate_mlp_hidden;
      return heads * n * head_dim + heads * n + heads * n + heads;
    }
    case nn::GateKind::all_heads_linear:
      return linear(m.hidden, heads);
    case nn::GateKind::unconditional_per_head:
      return heads;
  }
  return 0;
}

// nn/transformer_block.cpp: attention (four d x d projections and the gate), two LayerNorms, FFN.
int64_t block_parameters(const ModelConfig& m) {
  const int64_t d = m.hidden;
  return 4 * linear(d, d) + gate_parameters(m) + 2 * layer_norm(d) + linear(d, m.ffn) +
         linear(m.ffn, d);
}

std::string gigabytes(uint64_t bytes) {
  return fmt::format("{:.2f} GB", static_cast<double>(bytes) / 1e9);
}

}  // namespace

int64_t count_parameters(const ModelConfig& m) {
  const int64_t d = m.hidden, blocks = m.layers * block_parameters(m);
  switch (m.family) {
    case Family::bert:  // word + position embeddings, LN; head transform, LN, decoder bias (tied)
      return m.vocab_size * d + m.max_length * d + layer_norm(d) + blocks + linear(d, d) +
             layer_norm(d) + m.vocab_size;
    case Family::opt:  // token + position embeddings (offset 2), final LN; tied LM head
      return m.vocab_size * d + (m.max_length + 2) * d + blocks + layer_norm(d);
    case Family::vit: {
      const int64_t patches = (m.image_size / m.patch_size) * (m.image_size / m.patch_size);
      const int64_t patch_dim = m.patch_size * m.patch_size * m.channels;
      return linear(patch_dim, d) + (m.patch_layer_norm ? layer_norm(d) : 0) + d +
             (patches + 1) * d + blocks + layer_norm(d) + linear(d, m.num_classes);
    }
  }
  return 0;
}

MemoryEstimate estimate_training_memory(const RunConfig& config, int world_size) {
  const ModelConfig& m = config.model;
  MemoryEstimate e;
  e.parameters = count_parameters(m);
  e.parameter_bytes = 4 * sizeof(float) * static_cast<uint64_t>(e.parameters);
  const bool vit = m.family == Family::vit;
  const int64_t tokens_per_sample =
      vit ? (m.image_size / m.patch_size) * (m.image_size / m.patch_size) + 1 : m.max_length;
  const int64_t samples = std::max<int64_t>(
      1, config.train.batch_size / config.train.accumulation / std::max(world_size, 1));
  const double tokens = static_cast<double>(samples) * static_cast<double>(tokens_per_sample);
  const double per_token =
      static_cast<double>(m.layers) *
          (10.0 * static_cast<double>(m.hidden) + 2.0 * static_cast<double>(m.ffn) +
           2.0 * static_cast<double>(m.heads) * static_cast<double>(tokens_per_sample)) +
      (vit ? 0.0 : 2.0 * static_cast<double>(m.vocab_size));
  e.activation_bytes = static_cast<uint64_t>(tokens * per_token * sizeof(float));
  return e;
}

void check_training_fits(const RunConfig& config, int world_size) {
  const std::optional<uint64_t> available = available_memory_bytes();
  if (!available) return;
  const MemoryEstimate e = estimate_training_memory(config, world_size);
  QT_CHECK(e.total_bytes() <= *available,
           "pretrain: the run needs about {} per process ({} parameters: {} for weights, "
           "gradients and AdamW moments, {} for the activations of a micro-batch), but only {} "
           "is available; reduce model.layers / model.hidden / model.ffn or the micro-batch "
           "(train.batch_size / train.accumulation)",
           gigabytes(e.total_bytes()), e.parameters, gigabytes(e.parameter_bytes),
           gigabytes(e.activation_bytes), gigabytes(*available));
}

}  // namespace qt::models
