#include "quant/quantization_setup.h"

#include "quant/quantization_parameters.h"
#include "tensor/error.h"

namespace qt::quant {
namespace {

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

QuantizationOptions paper_quantization_options(const models::ModelPoints& points, int bits) {
  QuantizationOptions o;
  o.weight_bits = bits;
  o.activation_bits = bits;
  const models::QuantizationDefaults& defaults = points.quantization;
  if (defaults.mse_weights) o.weight_range = RangeMethod::mse_grid;
  if (defaults.activation_percentile > 0) o.activation_percentile = defaults.activation_percentile;
  o.head_quantized = defaults.head_quantized;
  return o;
}

QuantizationOptions paper_quantization_options(const models::Model& model, int bits) {
  return paper_quantization_options(model.points(), bits);
}

QuantizationSetup quantization_setup(const models::Model& model,
                                     const QuantizationOptions& options) {
  check_options(options);
  const models::ModelPoints table = model.points();
  QuantizationSetup setup;
  setup.family = table.family;
  setup.options = options;
  const int norm_bits =
      options.layer_norm_bits != 0 ? options.layer_norm_bits : options.activation_bits;
  const int final_norm_bits =
      options.final_layer_norm_bits != 0 ? options.final_layer_norm_bits : norm_bits;
  const auto activation_bits = [&](models::PointBits bits) {
    switch (bits) {
      case models::PointBits::layer_norm:
        return norm_bits;
      case models::PointBits::final_layer_norm:
        return final_norm_bits;
      case models::PointBits::standard:
        break;
    }
    return options.activation_bits;
  };
  for (const models::ModelPoint& p : table.points) {
    if (!p.quantized || (p.in_head && !options.head_quantized)) continue;
    if (p.kind == models::PointKind::weight) {
      // A table tied to an FP head is quantized at its lookups (header, "Tied tables").
      setup.weights[p.name] = WeightPoint{options.weight_bits, options.weight_range,
                                          options.head_quantized ? "" : p.tied_lookup_point};
    } else {
      ActivationPoint a;
      a.bits = activation_bits(p.bits);
      a.estimator.method = RangeMethod::running_min_max;
      a.estimator.momentum = options.activation_momentum;
      a.estimator.percentile = options.activation_percentile;
      setup.activations[p.name] = a;
    }
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
