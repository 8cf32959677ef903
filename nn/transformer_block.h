// Transformer blocks (method.md §3).
//
// Post-LN encoder block (BERT):
//   h1 = LN_1(Dropout(Attention(h)) + h);  h' = LN_2(Dropout(W_2 GELU(W_1 h1 + b_1) + b_2) + h1)
// Pre-LN block (OPT with ReLU, ViT with GELU):
//   x = LN_attn(h); h1 = h + Dropout(Attention(x)); h' = h1 + Dropout(W_2 act(W_1 LN_ffn(h1) + b_1)
//   + b_2)
#pragma once

#include <cstdint>
#include <memory>

#include "nn/attention.h"
#include "nn/dropout.h"
#include "nn/layer_norm.h"
#include "nn/linear.h"
#include "nn/module.h"

namespace qt::nn {

enum class Activation { gelu, relu };

// A block draws its dropout masks from three consecutive layer ids starting at
// BlockOptions::dropout_layer_id: +0 the attention-output dropout, +1 the FFN-output dropout, +2
// the attention-probability dropout (it overrides options.attention.dropout_layer_id).
inline constexpr uint64_t kBlockDropoutLayerIds = 3;

struct BlockOptions {
  AttentionOptions attention;  // attention.hidden is the block width d
  int64_t ffn = 1024;
  Activation activation = Activation::gelu;
  bool pre_layer_norm = false;  // false: BERT (post-LN); true: OPT / ViT
  double layer_norm_eps = 1e-12;
  float hidden_dropout = 0.1f;
  // The first of the kBlockDropoutLayerIds consecutive dropout ids this block uses.
  uint64_t dropout_layer_id = 0;
};

class TransformerBlock : public Module {
 public:
  // Parameters, registered (and drawn from InitRng) in this order, with the HF names they
  // correspond to (BERT: prefix encoder.layer.<l>.; OPT: prefix decoder.layers.<l>.):
  //   qtlab                         BERT (post-LN)                 OPT (pre-LN)
  //   attention.*                   attention.self.* and           self_attn.*
  //                                 attention.output.dense.*       (names in nn/attention.h)
  //   attention_layer_norm.{weight,bias}  attention.output.LayerNorm  self_attn_layer_norm
  //   ffn_in.{weight [ffn, d], bias}      intermediate.dense         fc1
  //   ffn_out.{weight [d, ffn], bias}     output.dense               fc2
  //   output_layer_norm.{weight,bias}     output.LayerNorm           final_layer_norm (per layer)
  // The member `ffn_layer_norm` is the child registered as "output_layer_norm": the LayerNorm of
  // the FFN sub-block (after it in post-LN, before it in pre-LN). ffn_in / ffn_out get PyTorch's
  // default Linear init (models re-initialise them as their spec says); LayerNorms start at (1, 0).
  // The dropouts are children too ("attention_output_dropout", "ffn_output_dropout"; no
  // parameters), so train() / eval() reach them.
  //
  // dropout_state may be null only when every dropout probability is 0 (a private state is used).
  // Throws on an FFN width < 1 or a hidden dropout outside [0, 1).
  TransformerBlock(const BlockOptions& options, std::shared_ptr<DropoutState> dropout_state,
                   InitRng& rng);
  // h [B, T, d] -> [B, T, d]; key_padding_mask as Attention::forward ([B, T], nonzero = token).
  Tensor forward(const Tensor& h, const Tensor& key_padding_mask = Tensor()) const;

  BlockOptions options;
  std::shared_ptr<Attention> attention;
  std::shared_ptr<LayerNorm> attention_layer_norm, ffn_layer_norm;
  std::shared_ptr<Linear> ffn_in, ffn_out;
  std::shared_ptr<Dropout> attention_output_dropout, ffn_output_dropout;
};

}  // namespace qt::nn
