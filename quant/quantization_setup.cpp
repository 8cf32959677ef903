#include "quant/quantization_setup.h"

#include "models/bert.h"
#include "models/opt.h"
#include "models/vit.h"
#include "nn/transformer_block.h"
#include "quant/quantization_parameters.h"
#include "tensor/error.h"

namespace qt::quant {
namespace {

// Which attention point carries the context quantizer (method.md §4.3).
enum class ContextPoint { after_gate, before_gate };

std::string point(const nn::Module& module, const char* what) {
  return module.path() + ":" + what;
}
std::string parameter(const nn::Module& module, const char* name) {
  return module.path().empty() ? std::string(name) : module.path() + "." + name;
}

// Collects the entries with their bits; validates nothing (quantization_setup does).
struct SetupBuilder {
  QuantizationSetup& setup;
  int layer_norm_bits;

  void activation(const std::string& name, int bits) {
    ActivationPoint p;
    p.bits = bits;
    p.estimator.method = RangeMethod::running_min_max;
    p.estimator.momentum = setup.options.activation_momentum;
    p.estimator.percentile = setup.options.activation_percentile;
    setup.activations[name] = p;
  }
  void activation(const std::string& name) { activation(name, setup.options.activation_bits); }
  void weight(const std::string& name, const std::string& lookup_point = "") {
    setup.weights[name] =
        WeightPoint{setup.options.weight_bits, setup.options.weight_range, lookup_point};
  }
  // A LayerNorm: gamma weight-quantized (beta FP), output quantized with `bits`.
  void layer_norm(const nn::LayerNorm& norm, int bits) {
    weight(parameter(norm, "weight"));
    activation(point(norm, "output"), bits);
  }
  // A Linear whose output is quantized (bias FP).
  void linear(const nn::Linear& layer) {
    weight(parameter(layer, "weight"));
    activation(point(layer, "output"));
  }

  // The per-block table (header). `output_norm_bits`: the bits of the block's second LN output.
  void block(const nn::TransformerBlock& b, ContextPoint context, int output_norm_bits) {
    const nn::Attention& attention = *b.attention;
    linear(*attention.query);
    linear(*attention.key);
    linear(*attention.value);
    activation(point(attention, "scores"));
    activation(point(attention, "probabilities"));
    activation(point(attention, context == ContextPoint::after_gate ? "gated_context" : "context"));
    linear(*attention.output);
    activation(point(b, "attention_residual"));
    layer_norm(*b.attention_layer_norm, layer_norm_bits);
    weight(parameter(*b.ffn_in, "weight"));  // output fused with the activation: not quantized
    activation(point(b, "ffn_activation"));
    linear(*b.ffn_out);
    activation(point(b, "ffn_residual"));
    layer_norm(*b.ffn_layer_norm, output_norm_bits);
  }
};

void check_options(const QuantizationOptions& o) {
  check_bits(o.weight_bits, "quantization_setup: weight bits");
  check_bits(o.activation_bits, "quantization_setup: activation bits");
  if (o.layer_norm_bits != 0) check_bits(o.layer_norm_bits, "quantization_setup: LayerNorm bits");
  if (o.final_layer_norm_bits != 0)
    check_bits(o.final_layer_norm_bits, "quantization_setup: final LayerNorm bits");
  QT_CHECK(
      o.weight_range == RangeMethod::current_min_max || o.weight_range == RangeMethod::mse_grid,
      "quantization_setup: weights use current_minmax or MSE, not {}",
      range_method_name(o.weight_range));
  // The activation estimator validates momentum and percentile bounds.
  RangeEstimatorOptions activation;
  activation.momentum = o.activation_momentum;
  activation.percentile = o.activation_percentile;
  RangeEstimator check(activation);
}

}  // namespace

QuantizationOptions paper_quantization_options(const std::string& family, int bits) {
  QT_CHECK(family == "bert" || family == "opt" || family == "vit",
           "paper_quantization_options: unknown family '{}' (expected bert, opt or vit)", family);
  QuantizationOptions o;
  o.weight_bits = bits;
  o.activation_bits = bits;
  if (family == "opt") {
    o.weight_range = RangeMethod::mse_grid;  // the repo forces MSE for OPT weights
    o.activation_percentile = 99.999;        // best "in almost all cases" (method.md §4.4)
  }
  o.head_quantized = family == "vit";  // BERT / OPT: FP head ("fp32_head"); ViT: all quantized
  return o;
}

QuantizationSetup quantization_setup(const models::Model& model,
                                     const QuantizationOptions& options) {
  check_options(options);
  QuantizationSetup setup;
  setup.family = model.config.family;
  setup.options = options;
  const int norm_bits =
      options.layer_norm_bits != 0 ? options.layer_norm_bits : options.activation_bits;
  const int final_norm_bits =
      options.final_layer_norm_bits != 0 ? options.final_layer_norm_bits : norm_bits;
  SetupBuilder add{setup, norm_bits};

  if (const auto* bert = dynamic_cast<const models::Bert*>(&model)) {
    // A table tied to an FP head is quantized at its lookups (header, "Tied tables").
    const nn::Embedding& word = *bert->word_embeddings;
    add.weight(parameter(word, "weight"), options.head_quantized ? "" : point(word, "output"));
    add.weight(parameter(*bert->position_embeddings, "weight"));
    add.activation(point(*bert, "embedding_sum"));
    add.layer_norm(*bert->embedding_layer_norm, norm_bits);
    for (size_t l = 0; l < bert->layers.size(); ++l) {
      const bool last = l + 1 == bert->layers.size();  // its output LN feeds the head
      add.block(*bert->layers[l], ContextPoint::after_gate, last ? final_norm_bits : norm_bits);
    }
    if (options.head_quantized) {
      add.linear(*bert->head_transform);
      add.layer_norm(*bert->head_layer_norm, norm_bits);
      add.activation(point(*bert, "logits"));
    }
  } else if (const auto* opt = dynamic_cast<const models::Opt*>(&model)) {
    const nn::Embedding& tokens = *opt->token_embeddings;
    add.weight(parameter(tokens, "weight"), options.head_quantized ? "" : point(tokens, "output"));
    add.weight(parameter(*opt->position_embeddings, "weight"));
    add.activation(point(*opt, "embedding_sum"));
    for (const auto& block : opt->layers) add.block(*block, ContextPoint::before_gate, norm_bits);
    add.layer_norm(*opt->final_layer_norm, final_norm_bits);
    if (options.head_quantized) add.activation(point(*opt, "logits"));  // weight: the tied table
  } else if (const auto* vit = dynamic_cast<const models::Vit*>(&model)) {
    add.linear(*vit->patch_embedding);
    if (vit->patch_layer_norm) add.layer_norm(*vit->patch_layer_norm, norm_bits);
    add.weight("cls_token");
    add.weight("position_embeddings");
    add.activation(point(*vit, "embedding_sum"));
    for (const auto& block : vit->layers) add.block(*block, ContextPoint::after_gate, norm_bits);
    add.layer_norm(*vit->final_layer_norm, final_norm_bits);
    if (options.head_quantized) add.linear(*vit->classifier);
  } else {
    fail(
        "quantization_setup: model family '{}' has no quantization table (expected a bert, opt "
        "or vit model)",
        model.config.family);
  }

  // Every weight named must exist (a renamed parameter would otherwise silently stay FP).
  const nn::NamedTensors parameters = model.named_parameters();
  for (const auto& [name, unused] : setup.weights) {
    bool found = false;
    for (const auto& entry : parameters) found = found || entry.first == name;
    QT_CHECK(found, "quantization_setup: the {} model has no parameter '{}'", setup.family, name);
  }
  return setup;
}

}  // namespace qt::quant
