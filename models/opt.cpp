#include "models/opt.h"

#include <string>

#include "autograd/functions.h"
#include "data/tokenizer.h"
#include "models/bert.h"
#include "models/point_table_builder.h"
#include "nn/activation_tap.h"
#include "nn/cross_entropy.h"
#include "nn/linear.h"
#include "tensor/create.h"

namespace qt::models {

Opt::Opt(const ModelConfig& c, uint64_t seed) : Model(c, seed) {
  nn::InitRng rng{seed, 0};
  token_embeddings = register_module_at(
      "decoder.embed_tokens", std::make_shared<nn::Embedding>(c.vocab_size, c.hidden, rng));
  position_embeddings = register_module_at(
      "decoder.embed_positions",
      std::make_shared<nn::Embedding>(c.max_length + kPositionOffset, c.hidden, rng));
  // HF OPT has no embedding dropout (so there is no module for one); its residual dropouts live
  // in the blocks.
  for (int64_t l = 0; l < c.layers; ++l) {
    auto block = std::make_shared<nn::TransformerBlock>(block_options(c, l), dropout_state, rng);
    layers.push_back(register_module_at("decoder.layers." + std::to_string(l), block));
  }
  final_layer_norm = register_module_at(
      "decoder.final_layer_norm", std::make_shared<nn::LayerNorm>(c.hidden, c.layer_norm_eps));

  // HF OPT init: N(0, init_std) for embeddings and FFN, zero biases; q/k/v/out_proj keep PyTorch's
  // default uniform init, as the paper's repo replaces the attention module (method.md §3.2, §8.4).
  init_normal(token_embeddings->weight, c.init_std, rng);
  init_normal(position_embeddings->weight, c.init_std, rng);
  for (const auto& block : layers) {
    for (const auto& linear : {block->ffn_in, block->ffn_out}) {
      init_normal(linear->weight, c.init_std, rng);
      init_zeros(linear->bias);
    }
  }
}

ModelPoints Opt::points() const {
  using B = PointTableBuilder;
  ModelPoints table = B::empty_table("opt", config.layers, config.heads);
  PointTableBuilder add(table);
  add.text_embeddings(*token_embeddings, *position_embeddings, *this);  // tokens tied to lm_head
  BlockPointOptions block;
  block.context = ContextPoint::before_gate;
  block.sublayer_metrics = true;  // the HF decoder's analysis set
  for (size_t l = 0; l < layers.size(); ++l) add.block(*layers[l], static_cast<int64_t>(l), block);
  ModelPoint& final_norm = add.layer_norm(*final_layer_norm, PointBits::final_layer_norm);
  final_norm.role = AnalysisRole::final_layer_norm;
  final_norm.metrics = true;
  // lm_head: its weight is the tied table; with a quantized head the logits are quantized too.
  add.activation(B::tap_point(*this, "logits")).in_head = true;

  GraphDescription& graph = table.graph;
  graph.token_table = B::parameter(*token_embeddings, "weight");
  graph.position_table = B::parameter(*position_embeddings, "weight");
  graph.position_offset = kPositionOffset;
  graph.embedding_sum = B::tap_point(*this, "embedding_sum");
  graph.final_layer_norm = final_layer_norm->path();
  graph.decoder_weight = graph.token_table;  // lm_head, tied, no bias
  graph.logits = B::tap_point(*this, "logits");

  AnalysisDescription& analysis = table.analysis;
  analysis.kurtosis_batches = 101;  // the repo's validate_clm: batch_idx <= 100
  analysis.delimiter_special_ids = {data::kEndOfTextId};
  HeadlineDefinition& headline = analysis.headline;
  std::vector<std::string> metric_points;
  for (const ModelPoint& p : table.points)
    if (p.metrics) metric_points.push_back(p.name);
  const auto ffn_outputs = points_with_role(table, AnalysisRole::ffn_output);
  const auto layer_outputs = points_with_role(table, AnalysisRole::block_output);
  headline.extra_max_inf_norms = {{"max_inf_norm_all", metric_points},
                                  {"max_ffn_inf_norm", ffn_outputs},
                                  {"max_layer_inf_norm", layer_outputs}};
  headline.max_inf_norm_points = layer_outputs;  // "Max layer inf norm" (the repo's README)
  headline.max_inf_norm_definition = "max layer inf norm: max over the layer outputs";
  // The 1 + 5L names of validate_clm (not the ffn_residual alias of each layer output).
  headline.kurtosis_points = {final_norm.name};
  for (int64_t l = 0; l < config.layers; ++l)
    for (AnalysisRole role :
         {AnalysisRole::block_output, AnalysisRole::ffn_output, AnalysisRole::ffn_layer_norm,
          AnalysisRole::attention_output, AnalysisRole::attention_layer_norm})
      headline.kurtosis_points.push_back(point_with_role(table, l, role).name);
  headline.kurtosis_definition = "mean over all 1 + 5L tensor names";

  table.quantization.mse_weights = true;              // the repo forces MSE for OPT weights
  table.quantization.activation_percentile = 99.999;  // best "in almost all cases" (paper §4.4)
  return table;
}

Tensor Opt::decode(const Tensor& input_ids) const {
  check_input_ids(input_ids, config, "opt");
  const int64_t T = input_ids.size(1);
  const Tensor positions = ops::arange(kPositionOffset, T + kPositionOffset, 1, DType::i64);
  // Activation taps (nn/activation_tap.h): the table lookups ("<table>:output") and their sum
  // (":embedding_sum"), the points method.md §4.3 quantizes (quant/quantization_setup.h).
  const Tensor tokens = nn::tap(*token_embeddings, "output", token_embeddings->forward(input_ids));
  const Tensor places =
      nn::tap(*position_embeddings, "output", position_embeddings->forward(positions));
  Tensor h = nn::tap(*this, "embedding_sum", qt::add(tokens, places));
  for (const auto& block : layers) h = block->forward(h);
  return final_layer_norm->forward(h);
}

Tensor Opt::loss(const Batch& batch, double label_smoothing) const {
  check_input_ids(batch.input_ids, config, "opt");
  check_text_labels(batch.labels, batch.input_ids, "opt");
  const Tensor h = decode(batch.input_ids);
  const LabelledRows rows = labelled_rows(batch.labels);
  const Tensor flat = qt::reshape(h, {h.size(0) * h.size(1), h.size(2)});
  const Tensor logits = nn::tap(
      *this, "logits",
      nn::linear(qt::index_select(flat, 0, rows.index), token_embeddings->weight, Tensor()));
  return nn::cross_entropy(logits, rows.labels, kIgnoreIndex, label_smoothing);
}

Tensor Opt::logits(const Batch& batch) const {
  return head_logits(decode(batch.input_ids));
}

Tensor Opt::head_logits(const Tensor& hidden) const {
  QT_CHECK(hidden.defined() && hidden.dim() == 3 && hidden.size(2) == config.hidden,
           "opt: head_logits takes hidden states [B, T, {}], got {}", config.hidden,
           hidden.defined() ? shape_str(hidden.shape()) : std::string("nothing"));
  return nn::tap(*this, "logits", nn::linear(hidden, token_embeddings->weight, Tensor()));
}

}  // namespace qt::models
