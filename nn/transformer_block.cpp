// Transformer blocks (method.md §3; formulas and parameter names in transformer_block.h).
//
// Post-LN (BERT, method.md §3.1):
//   a  = Attention(h)                       (Q/K/V and the gate read h)
//   h1 = LN_1(Dropout(a) + h)
//   h' = LN_2(Dropout(W_2 GELU(W_1 h1 + b_1) + b_2) + h1)
// Pre-LN (OPT with ReLU, method.md §3.2; ViT with GELU, method.md §3.3):
//   x  = LN_attn(h)                         (Q/K/V and the gate read the LayerNorm-ed x)
//   h1 = h + Dropout(Attention(x))
//   h' = h1 + Dropout(W_2 act(W_1 LN_ffn(h1) + b_1) + b_2)
// Every step is a differentiable op or module, so the backward pass is assembled by autograd.
#include "nn/transformer_block.h"

#include "nn/activation_tap.h"

#include "autograd/functions.h"
#include "tensor/error.h"
#include "tensor/shape.h"

namespace qt::nn {

namespace {

std::shared_ptr<DropoutState> dropout_state_or_private(std::shared_ptr<DropoutState> state,
                                                       const BlockOptions& options) {
  if (state) return state;
  QT_CHECK(options.hidden_dropout == 0.0f && options.attention.probability_dropout == 0.0f,
           "TransformerBlock: hidden dropout {} / attention dropout {} need a DropoutState",
           options.hidden_dropout, options.attention.probability_dropout);
  return std::make_shared<DropoutState>();  // never drawn from: every rate is 0
}

}  // namespace

TransformerBlock::TransformerBlock(const BlockOptions& options_,
                                   std::shared_ptr<DropoutState> dropout_state, InitRng& rng)
    : options(options_) {
  QT_CHECK(options.ffn >= 1, "TransformerBlock: FFN width {} must be at least 1", options.ffn);
  QT_CHECK(options.hidden_dropout >= 0.0f && options.hidden_dropout < 1.0f,
           "TransformerBlock: hidden_dropout {} is outside [0, 1)", options.hidden_dropout);
  options.attention.dropout_layer_id = options.dropout_layer_id + 2;  // see the header
  dropout_state = dropout_state_or_private(std::move(dropout_state), options);
  const int64_t d = options.attention.hidden;
  // Registration order = HF's parameter order = InitRng draw order (see the header).
  attention = register_module("attention",
                              std::make_shared<Attention>(options.attention, dropout_state, rng));
  attention_layer_norm = register_module("attention_layer_norm",
                                         std::make_shared<LayerNorm>(d, options.layer_norm_eps));
  ffn_in = register_module("ffn_in", std::make_shared<Linear>(d, options.ffn, true, rng));
  ffn_out = register_module("ffn_out", std::make_shared<Linear>(options.ffn, d, true, rng));
  ffn_layer_norm =
      register_module("output_layer_norm", std::make_shared<LayerNorm>(d, options.layer_norm_eps));
  attention_output_dropout = register_module(
      "attention_output_dropout",
      std::make_shared<Dropout>(options.hidden_dropout, dropout_state, options.dropout_layer_id));
  ffn_output_dropout = register_module(
      "ffn_output_dropout", std::make_shared<Dropout>(options.hidden_dropout, dropout_state,
                                                      options.dropout_layer_id + 1));
}

Tensor TransformerBlock::forward(const Tensor& h, const Tensor& key_padding_mask) const {
  check_defined(h, "TransformerBlock");
  QT_CHECK(h.dim() == 3 && h.shape()[2] == options.attention.hidden,
           "TransformerBlock: input must be [B, T, {}], got {}", options.attention.hidden,
           shape_str(h.shape()));
  // The FFN: W_2 act(W_1 z + b_1) + b_2
  const auto feed_forward = [&](const Tensor& z) {
    const Tensor inner = ffn_in->forward(z);
    const Tensor activated =
        options.activation == Activation::gelu ? qt::gelu(inner) : qt::relu(inner);
    return ffn_out->forward(tap(*this, "ffn_activation", activated));
  };
  if (!options.pre_layer_norm) {
    // Post-LN (BERT): h1 = LN_1(Dropout(Attn(h)) + h); h' = LN_2(Dropout(FFN(h1)) + h1)
    const Tensor attended =
        attention_output_dropout->forward(attention->forward(h, key_padding_mask));
    const Tensor h1 =
        attention_layer_norm->forward(tap(*this, "attention_residual", qt::add(attended, h)));
    const Tensor transformed = ffn_output_dropout->forward(feed_forward(h1));
    return tap(*this, "output",
               ffn_layer_norm->forward(tap(*this, "ffn_residual", qt::add(transformed, h1))));
  }
  // Pre-LN (OPT / ViT): h1 = h + Dropout(Attn(LN_attn(h))); h' = h1 + Dropout(FFN(LN_ffn(h1)))
  const Tensor x = attention_layer_norm->forward(h);
  const Tensor h1 =
      tap(*this, "attention_residual",
          qt::add(h, attention_output_dropout->forward(attention->forward(x, key_padding_mask))));
  const Tensor out =
      qt::add(h1, ffn_output_dropout->forward(feed_forward(ffn_layer_norm->forward(h1))));
  // In pre-LN the FFN residual sum is the block output: one point, two names.
  return tap(*this, "output", tap(*this, "ffn_residual", out));
}

}  // namespace qt::nn
