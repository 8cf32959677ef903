#include "models/bert.h"

#include <string>

#include "autograd/functions.h"
#include "data/tokenizer.h"
#include "models/point_table_builder.h"
#include "nn/activation_tap.h"
#include "nn/cross_entropy.h"
#include "tensor/create.h"
#include "tensor/view.h"

namespace qt::models {

LabelledRows labelled_rows(const Tensor& labels) {
  const Tensor dense = ops::contiguous(labels);
  const int64_t* values = dense.data<int64_t>();
  const int64_t n = Model::count_labels(dense);
  LabelledRows rows{Tensor::empty({n}, DType::i64), Tensor::empty({n}, DType::i64)};
  int64_t* index = rows.index.data<int64_t>();
  int64_t* kept = rows.labels.data<int64_t>();
  for (int64_t i = 0, at = 0; i < dense.numel(); ++i) {
    if (values[i] == kIgnoreIndex) continue;
    index[at] = i;
    kept[at++] = values[i];
  }
  return rows;
}

Bert::Bert(const ModelConfig& c, uint64_t seed) : Model(c, seed) {
  nn::InitRng rng{seed, 0};
  word_embeddings = register_module_at(
      "embeddings.word_embeddings", std::make_shared<nn::Embedding>(c.vocab_size, c.hidden, rng));
  position_embeddings =
      register_module_at("embeddings.position_embeddings",
                         std::make_shared<nn::Embedding>(c.max_length, c.hidden, rng));
  embedding_layer_norm = register_module_at(
      "embeddings.layer_norm", std::make_shared<nn::LayerNorm>(c.hidden, c.layer_norm_eps));
  embedding_dropout = register_module_at(
      "embeddings.dropout",
      std::make_shared<nn::Dropout>(static_cast<float>(c.hidden_dropout), dropout_state, 1));
  for (int64_t l = 0; l < c.layers; ++l) {
    auto block = std::make_shared<nn::TransformerBlock>(block_options(c, l), dropout_state, rng);
    layers.push_back(register_module_at("encoder.layer." + std::to_string(l), block));
  }
  head_transform = register_module_at("head.transform",
                                      std::make_shared<nn::Linear>(c.hidden, c.hidden, true, rng));
  head_layer_norm = register_module_at("head.layer_norm",
                                       std::make_shared<nn::LayerNorm>(c.hidden, c.layer_norm_eps));
  head_bias = register_parameter_at("head.bias", ops::zeros({c.vocab_size}));

  // HF BERT init: N(0, init_std) for embeddings and dense layers, zero biases; the attention's
  // Q/K/V keep PyTorch's default uniform init, as the paper's repo (method.md §3.1, §8.4).
  init_normal(word_embeddings->weight, c.init_std, rng);
  init_normal(position_embeddings->weight, c.init_std, rng);
  for (const auto& block : layers) {
    for (const auto& linear : {block->attention->output, block->ffn_in, block->ffn_out}) {
      init_normal(linear->weight, c.init_std, rng);
      init_zeros(linear->bias);
    }
  }
  init_normal(head_transform->weight, c.init_std, rng);
  init_zeros(head_transform->bias);
}

ModelPoints Bert::points() const {
  using B = PointTableBuilder;
  ModelPoints table = B::empty_table("bert", config.layers, config.heads);
  PointTableBuilder add(table);
  // The word table is tied to the MLM decoder. word + position [+ type, absorbed]: the paper's two
  // embedding sums are one point here.
  add.text_embeddings(*word_embeddings, *position_embeddings, *this);
  add.layer_norm(*embedding_layer_norm, PointBits::layer_norm);
  for (size_t l = 0; l < layers.size(); ++l) {
    BlockPointOptions block;
    block.context = ContextPoint::after_gate;
    // The last block's output LN feeds the head.
    if (l + 1 == layers.size()) block.ffn_layer_norm_bits = PointBits::final_layer_norm;
    add.block(*layers[l], static_cast<int64_t>(l), block);
  }
  // The MLM head (transform, GELU, LN, tied decoder): FP unless the head is quantized.
  add.linear(*head_transform, -1, /*in_head=*/true);
  add.layer_norm(*head_layer_norm, PointBits::layer_norm, -1, /*in_head=*/true);
  add.activation(B::tap_point(*this, "logits")).in_head = true;

  GraphDescription& graph = table.graph;
  graph.token_table = B::parameter(*word_embeddings, "weight");
  graph.position_table = B::parameter(*position_embeddings, "weight");
  graph.embedding_sum = B::tap_point(*this, "embedding_sum");
  graph.embedding_layer_norm = embedding_layer_norm->path();
  graph.transform = head_transform->path();
  graph.transform_layer_norm = head_layer_norm->path();
  graph.decoder_weight = graph.token_table;
  graph.decoder_bias = "head.bias";
  graph.logits = B::tap_point(*this, "logits");

  AnalysisDescription& analysis = table.analysis;
  analysis.kurtosis_batches = 257;  // the repo's validate_mlm: batch_idx <= 256
  analysis.delimiter_special_ids = {data::kClsId, data::kSepId};
  analysis.delimiter_texts = {".", ","};
  HeadlineDefinition& headline = analysis.headline;
  const auto ffn_outputs = points_with_role(table, AnalysisRole::ffn_output);
  const auto block_outputs = points_with_role(table, AnalysisRole::block_output);
  headline.extra_max_inf_norms = {
      {"max_ffn_output_inf_norm", ffn_outputs},
      {"max_block_output_inf_norm", block_outputs},
      {"max_residual_sum_inf_norm", points_with_role(table, AnalysisRole::residual_sum)}};
  // Which of the three norms the paper's tables use is not stated [inferred]; all are reported.
  headline.max_inf_norm_points = ffn_outputs;
  headline.max_inf_norm_definition = "max over layers of the FFN output (output.dense) inf norm";
  headline.kurtosis_points = ffn_outputs;
  headline.kurtosis_points.insert(headline.kurtosis_points.end(), block_outputs.begin(),
                                  block_outputs.end());
  headline.kurtosis_definition = "mean over the 2L FFN outputs and block outputs";
  return table;  // quantization defaults: min-max weights, running min-max, FP head
}

Tensor Bert::encode(const Tensor& input_ids, const Tensor& attention_mask) const {
  check_input_ids(input_ids, config, "bert");
  const int64_t T = input_ids.size(1);
  const Tensor positions = ops::arange(0, T, 1, DType::i64);
  // Activation taps (nn/activation_tap.h): the table lookups ("<table>:output") and their sum
  // (":embedding_sum"), the points method.md §4.3 quantizes (quant/quantization_setup.h).
  const Tensor words = nn::tap(*word_embeddings, "output", word_embeddings->forward(input_ids));
  const Tensor places =
      nn::tap(*position_embeddings, "output", position_embeddings->forward(positions));
  Tensor h = nn::tap(*this, "embedding_sum", qt::add(words, places));
  h = embedding_dropout->forward(embedding_layer_norm->forward(h));
  for (const auto& block : layers) h = block->forward(h, attention_mask);
  return h;
}

Tensor Bert::head(const Tensor& hidden_rows) const {
  const Tensor t = head_layer_norm->forward(qt::gelu(head_transform->forward(hidden_rows)));
  // tied decoder: t E_word^T + b_dec; the logits are the tap point ":logits"
  return nn::tap(*this, "logits", nn::linear(t, word_embeddings->weight, head_bias));
}

Tensor Bert::loss(const Batch& batch, double label_smoothing) const {
  check_input_ids(batch.input_ids, config, "bert");
  check_text_labels(batch.labels, batch.input_ids, "bert");
  const Tensor h = encode(batch.input_ids);
  const LabelledRows rows = labelled_rows(batch.labels);
  const Tensor flat = qt::reshape(h, {h.size(0) * h.size(1), h.size(2)});
  const Tensor logits = head(qt::index_select(flat, 0, rows.index));
  return nn::cross_entropy(logits, rows.labels, kIgnoreIndex, label_smoothing);
}

Tensor Bert::head_logits(const Tensor& hidden) const {
  QT_CHECK(hidden.defined() && hidden.dim() == 3 && hidden.size(2) == config.hidden,
           "bert: head_logits takes hidden states [B, T, {}], got {}", config.hidden,
           hidden.defined() ? shape_str(hidden.shape()) : std::string("nothing"));
  const Tensor flat = qt::reshape(hidden, {hidden.size(0) * hidden.size(1), hidden.size(2)});
  return qt::reshape(head(flat), {hidden.size(0), hidden.size(1), config.vocab_size});
}

Tensor Bert::logits(const Batch& batch) const {
  const Tensor h = encode(batch.input_ids);
  const Tensor flat = qt::reshape(h, {h.size(0) * h.size(1), h.size(2)});
  return qt::reshape(head(flat), {h.size(0), h.size(1), config.vocab_size});
}

}  // namespace qt::models
