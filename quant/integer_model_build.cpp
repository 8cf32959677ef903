// Lowering a calibrated model to the integer op list of quant/integer_model.h. This is the one
// place of the integer model that computes in floating point: every scale ratio becomes a
// quantized multiplier, every weight its s8 codes, every bias its s32 codes, every table its
// entries. The forward (integer_model_run.cpp) only reads the results.
#include <fmt/format.h>
#include <fmt/ranges.h>
#include <algorithm>
#include <cmath>
#include <map>
#include <set>

#include "models/model.h"
#include "nn/attention_gate.h"
#include "quant/integer_embedding.h"
#include "quant/integer_gelu.h"
#include "quant/integer_model.h"
#include "quant/integer_sigmoid.h"
#include "tensor/error.h"
#include "tensor/view.h"

namespace qt::quant {

const char* integer_op_kind_name(IntegerOpKind kind) {
  switch (kind) {
    case IntegerOpKind::text_embedding:
      return "text_embedding";
    case IntegerOpKind::image_embedding:
      return "image_embedding";
    case IntegerOpKind::linear:
      return "linear";
    case IntegerOpKind::linear_relu:
      return "linear_relu";
    case IntegerOpKind::linear_gelu:
      return "linear_gelu";
    case IntegerOpKind::gelu_table:
      return "gelu_table";
    case IntegerOpKind::layer_norm:
      return "layer_norm";
    case IntegerOpKind::add:
      return "add";
    case IntegerOpKind::attention_scores:
      return "attention_scores";
    case IntegerOpKind::softmax:
      return "softmax";
    case IntegerOpKind::attention_context:
      return "attention_context";
    case IntegerOpKind::gate:
      return "gate";
    case IntegerOpKind::gate_multiply:
      return "gate_multiply";
    case IntegerOpKind::first_token:
      return "first_token";
  }
  return "?";
}

int IntegerModel::tensor_index(const std::string& name) const {
  for (size_t i = 0; i < tensors.size(); ++i)
    if (tensors[i].name == name) return static_cast<int>(i);
  return -1;
}

namespace {

// The gate's logits are covered by an int16 grid over [-16, 16]: round(256 sigmoid(x)) is 0 for
// x < -6.2 and 256 -> 255 for x > 6.2, so nothing beyond +-16 can change a code.
constexpr double kGateLogitBound = 16.0;
// The GELU table's int16 input covers at least [-8, 8]: GELU(-8) = -5e-15 (0 on any u8 grid).
constexpr double kGeluMinimumBound = 8.0;

struct Lowering {
  const models::Model& model;
  const CalibratedRanges& ranges;
  const IntegerModelOptions& options;
  IntegerModel out;
  std::map<std::string, Tensor> parameters;

  Lowering(const models::Model& m, const CalibratedRanges& r, const IntegerModelOptions& o)
      : model(m), ranges(r), options(o) {
    for (auto& [name, value] : model.named_parameters()) parameters[name] = ops::contiguous(value);
  }

  const Tensor& parameter(const std::string& name) const {
    const auto it = parameters.find(name);
    QT_CHECK(it != parameters.end(), "integer model: the {} model has no parameter '{}'",
             out.family, name);
    QT_CHECK(it->second.dtype() == DType::f32, "integer model: parameter '{}' is not f32", name);
    return it->second;
  }
  bool has_parameter(const std::string& name) const { return parameters.count(name) != 0; }

  static void check_eight_bits(const CalibratedRange& r, const std::string& name) {
    QT_CHECK(r.bits == 8,
             "integer model: '{}' was calibrated with {} bits; the integer engine is W8A8 (pass "
             "--wbits 8 --abits 8 and 8-bit LayerNorm outputs)",
             name, r.bits);
  }

  const CalibratedRange& activation_range(const std::string& point) const {
    const auto it = ranges.activations.find(point);
    QT_CHECK(it != ranges.activations.end(),
             "integer model: no calibrated range for the activation point '{}' (was the model "
             "quantized with this head setting? an integer head needs the head quantized)",
             point);
    check_eight_bits(it->second, point);
    return it->second;
  }
  const CalibratedRange& observed_range(const std::string& point, const char* why) const {
    const auto it = ranges.observed.find(point);
    QT_CHECK(it != ranges.observed.end(),
             "integer model: the ranges have no observed range for '{}' ({}); recalibrate with "
             "this version of qtlab (quantize writes it)",
             point, why);
    return it->second;
  }

  int add_tensor(const std::string& name, DumpDType dtype, IntegerLayout layout, int64_t width,
                 double scale, int32_t zero_point) {
    QT_CHECK(out.tensor_index(name) < 0, "integer model: tensor '{}' produced twice", name);
    out.tensors.push_back(IntegerTensor{name, dtype, layout, width, scale, zero_point});
    return static_cast<int>(out.tensors.size()) - 1;
  }
  // A u8 token tensor on a calibrated activation grid.
  int activation_tensor(const std::string& point, int64_t width,
                        IntegerLayout layout = IntegerLayout::tokens) {
    const CalibratedRange& r = activation_range(point);
    QT_CHECK(!r.symmetric && r.int_min == 0 && r.int_max == 255,
             "integer model: activation point '{}' is not an unsigned 8-bit grid", point);
    return add_tensor(point, DumpDType::u8, layout, width, r.scale, r.zero_point);
  }
  // A copy, not a reference: the lowering adds tensors while it holds these (a reference into
  // out.tensors would dangle when the vector grows; AddressSanitizer found one).
  IntegerTensor tensor(int index) const { return out.tensors[static_cast<size_t>(index)]; }

  IntegerOp& add_op(IntegerOpKind kind, const std::string& name, std::vector<int> inputs,
                    int output) {
    IntegerOp op;
    op.kind = kind;
    op.name = integer_dump_name(name);  // ops are named in dumps too
    op.inputs = std::move(inputs);
    op.output = output;
    out.ops.push_back(std::move(op));
    return out.ops.back();
  }

  // s8 codes of a quantized weight, as the simulation's fake quantizer rounds them (f32 division,
  // round half to even, clamp to the grid), and its scale.
  std::vector<std::string> unsigned_weights;  // re-gridded from [0, 255] to s8 (see weight_codes)

  std::vector<int8_t> weight_codes(const std::string& name, double* scale) {
    const auto it = ranges.weights.find(name);
    QT_CHECK(it != ranges.weights.end(), "integer model: no calibrated range for weight '{}'",
             name);
    const CalibratedRange& r = it->second;
    check_eight_bits(r, name);
    QT_CHECK(r.symmetric && r.zero_point == 0,
             "integer model: weight '{}' is not quantized symmetrically", name);
    const Tensor& w = parameter(name);
    std::vector<int8_t> codes(static_cast<size_t>(w.numel()));
    const float* v = w.data<float>();
    // The simulation's symmetric quantizer puts a tensor with no negative value on the unsigned
    // grid [0, 255] (the repo's rule; LayerNorm gammas usually). The integer ops take s8, so such
    // a tensor is re-gridded to [0, 127] at scale S 255 / 127: at most half of the new LSB away
    // from the simulation's value (written in the notes).
    float s = r.scale;
    float lo = static_cast<float>(r.int_min), hi = static_cast<float>(r.int_max);
    if (!r.is_signed) {
      s = static_cast<float>(static_cast<double>(r.scale) * static_cast<double>(r.int_max) / 127.0);
      lo = 0;
      hi = 127;
      unsigned_weights.push_back(name);
    }
    for (size_t i = 0; i < codes.size(); ++i) {
      const float q = std::nearbyint(v[i] / s);
      codes[i] = static_cast<int8_t>(std::clamp<float>(q, lo, hi));
    }
    *scale = s;
    return codes;
  }

  // Symmetric s8 codes with one min-max scale per row of `rows` x `columns` values (the gate's
  // weights, which the simulation leaves in floating point, and the per-channel option).
  static std::vector<int8_t> per_row_codes(const float* v, int64_t rows, int64_t columns,
                                           std::vector<double>* scales) {
    std::vector<int8_t> codes(static_cast<size_t>(rows * columns));
    scales->assign(static_cast<size_t>(rows), 1.0);
    for (int64_t r = 0; r < rows; ++r) {
      float largest = 0;
      for (int64_t c = 0; c < columns; ++c)
        largest = std::max(largest, std::fabs(v[r * columns + c]));
      const double s = largest > 0 ? static_cast<double>(largest) / 127.0 : 1.0;
      (*scales)[static_cast<size_t>(r)] = s;
      for (int64_t c = 0; c < columns; ++c)
        codes[static_cast<size_t>(r * columns + c)] = static_cast<int8_t>(
            std::clamp(std::nearbyint(static_cast<double>(v[r * columns + c]) / s), -127.0, 127.0));
    }
    return codes;
  }

  std::vector<int32_t> bias_codes(const float* bias, int64_t n, double input_scale,
                                  const std::vector<double>& weight_scales) const {
    std::vector<int32_t> codes(static_cast<size_t>(n));
    for (int64_t i = 0; i < n; ++i)
      codes[static_cast<size_t>(i)] =
          quantize_bias(bias[i], input_scale,
                        weight_scales[weight_scales.size() == 1 ? 0 : static_cast<size_t>(i)]);
    return codes;
  }

  // The IntegerLinear of module `path` (path.weight [out, in], optional path.bias) reading
  // `input`, with output grid (S_o, Z_o). Per-channel when the options ask for it.
  IntegerLinear linear_layer(const std::string& weight_name, const std::string& bias_name,
                             int input, double output_scale, int32_t output_zero_point,
                             std::vector<double>* weight_scales_out = nullptr) {
    const Tensor& w = parameter(weight_name);
    QT_CHECK(w.dim() == 2, "integer model: '{}' is not a matrix", weight_name);
    const int64_t n_out = w.size(0), n_in = w.size(1);
    std::vector<double> scales;
    std::vector<int8_t> codes;
    if (options.per_channel_weights) {
      codes = per_row_codes(w.data<float>(), n_out, n_in, &scales);
    } else {
      double s = 1;
      codes = weight_codes(weight_name, &s);
      scales = {s};
    }
    const IntegerTensor& x = tensor(input);
    QT_CHECK(x.width == n_in, "integer model: '{}' reads {} features but its input '{}' has {}",
             weight_name, n_in, x.name, x.width);
    std::vector<int32_t> bias;
    if (!bias_name.empty() && has_parameter(bias_name))
      bias = bias_codes(parameter(bias_name).data<float>(), n_out, x.scale, scales);
    if (weight_scales_out != nullptr) *weight_scales_out = scales;
    return make_integer_linear(codes.data(), n_out, n_in, bias.empty() ? nullptr : bias.data(),
                               x.scale, x.zero_point, scales, output_scale, output_zero_point,
                               options.rounding);
  }

  // A linear module: weight, optional bias, output tap "<path>:output".
  int linear(const std::string& path, int input, IntegerOpKind kind = IntegerOpKind::linear) {
    const std::string point = path + ":output";
    const int64_t width = parameter(path + ".weight").size(0);
    const int output = activation_tensor(point, width, tensor(input).layout);
    const IntegerTensor& y = tensor(output);
    IntegerOp& op = add_op(kind, path, {input}, output);
    op.linear = linear_layer(path + ".weight", path + ".bias", input, y.scale, y.zero_point);
    op.parameters = {path + ".weight"};
    if (has_parameter(path + ".bias")) op.parameters.push_back(path + ".bias");
    return output;
  }

  // A LayerNorm module reading `input`; its output tap "<path>:output".
  int layer_norm(const std::string& path, int input, double eps) {
    const std::string point = path + ":output";
    const int output = activation_tensor(point, tensor(input).width, tensor(input).layout);
    const IntegerTensor &x = tensor(input), &y = tensor(output);
    double gamma_scale = 1;
    const std::vector<int8_t> gamma = weight_codes(path + ".weight", &gamma_scale);
    std::vector<double> beta(static_cast<size_t>(x.width), 0.0);
    if (has_parameter(path + ".bias")) {
      const float* b = parameter(path + ".bias").data<float>();
      for (int64_t i = 0; i < x.width; ++i) beta[static_cast<size_t>(i)] = b[i];
    }
    IntegerOp& op = add_op(IntegerOpKind::layer_norm, path, {input}, output);
    op.layer_norm = make_integer_layer_norm(x.width, gamma.data(), gamma_scale, beta.data(),
                                            x.scale, eps, y.scale, y.zero_point, options.rounding);
    op.parameters = {path + ".weight", path + ".bias"};
    return output;
  }

  int add(const std::string& point, int a, int b) {
    const int output = activation_tensor(point, tensor(a).width);
    const IntegerTensor &x = tensor(a), &r = tensor(b), &y = tensor(output);
    IntegerOp& op = add_op(IntegerOpKind::add, point, {a, b}, output);
    op.sum = make_integer_add({x.scale, x.zero_point}, {r.scale, r.zero_point}, y.scale,
                              y.zero_point, kU8Min, kU8Max, options.rounding);
    return output;
  }

  // ---- embeddings

  int text_embedding(const models::GraphDescription& g) {
    const int ids = add_tensor("input_ids", DumpDType::s32, IntegerLayout::token_ids, 1, 1, 0);
    out.input = ids;
    const int64_t d = model.config.hidden;
    const int output = activation_tensor(g.embedding_sum, d);
    const IntegerTensor& y = tensor(output);
    IntegerOp& op = add_op(IntegerOpKind::text_embedding, g.embedding_sum, {ids}, output);
    double token_scale = 1, position_scale = 1;
    op.table_a = weight_codes(g.token_table, &token_scale);
    op.table_b = weight_codes(g.position_table, &position_scale);
    op.table_a_rows = parameter(g.token_table).size(0);
    op.table_b_rows = parameter(g.position_table).size(0);
    op.position_offset = g.position_offset;
    op.sum = make_integer_embedding_sum({{token_scale, 0}, {position_scale, 0}}, y.scale,
                                        y.zero_point, options.rounding);
    op.parameters = {g.token_table, g.position_table};
    return output;
  }

  int image_embedding(const models::GraphDescription& g) {
    const CalibratedRange& image_range = observed_range(g.images, "the ViT's input grid");
    const int64_t n = out.patches, d = model.config.hidden;
    const int images = add_tensor(g.images, DumpDType::u8, IntegerLayout::images, out.patch_dim,
                                  image_range.scale, image_range.zero_point);
    out.input = images;
    out.notes.push_back(fmt::format(
        "input images: u8 on the calibrated range [{}, {}] of {} (the simulation reads f32)",
        image_range.min, image_range.max, g.images));
    int patches = linear(g.patch_linear, images);
    if (!g.patch_layer_norm.empty())
      patches = layer_norm(g.patch_layer_norm, patches, model.config.layer_norm_eps);
    const int output = activation_tensor(g.embedding_sum, d);
    const IntegerTensor &p = tensor(patches), &y = tensor(output);
    IntegerOp& op = add_op(IntegerOpKind::image_embedding, g.embedding_sum, {patches}, output);
    double cls_scale = 1, position_scale = 1;
    op.table_a = weight_codes(g.cls_token, &cls_scale);
    op.table_b = weight_codes(g.position_table, &position_scale);
    op.table_a_rows = 1;
    op.table_b_rows = n + 1;
    QT_CHECK(static_cast<int64_t>(op.table_b.size()) == (n + 1) * d,
             "integer model: '{}' has {} values, expected {} x {}", g.position_table,
             op.table_b.size(), n + 1, d);
    op.first_sum = make_integer_embedding_sum({{cls_scale, 0}, {position_scale, 0}}, y.scale,
                                              y.zero_point, options.rounding);
    op.sum = make_integer_embedding_sum({{p.scale, p.zero_point}, {position_scale, 0}}, y.scale,
                                        y.zero_point, options.rounding);
    op.parameters = {g.cls_token, g.position_table};
    return output;
  }

  // ---- attention

  int gate(const std::string& path, const nn::AttentionOptions& a, int input) {
    const IntegerTensor& x = tensor(input);
    const int64_t H = a.heads, dh = a.hidden / a.heads;
    const int output =
        add_tensor(path + ":gate", DumpDType::u8, IntegerLayout::tokens, H, kGateScale, 0);
    IntegerOp& op = add_op(IntegerOpKind::gate, path + ".gate", {input}, output);
    IntegerGateParameters& g = op.gate;
    g.head_dim = dh;
    std::vector<double> acc_scales;
    const std::string prefix = path + ".gate.";
    switch (a.gate) {
      case nn::GateKind::linear_per_head: {
        const Tensor& w = parameter(prefix + "weight");
        const float* b = parameter(prefix + "bias").data<float>();
        std::vector<double> scales;
        const std::vector<int8_t> codes = per_row_codes(w.data<float>(), H, dh, &scales);
        for (int64_t h = 0; h < H; ++h) {
          const int32_t bias = quantize_bias(b[h], x.scale, scales[static_cast<size_t>(h)]);
          const double acc_scale = x.scale * scales[static_cast<size_t>(h)];
          g.logit.push_back(make_integer_linear(codes.data() + h * dh, 1, dh, &bias, x.scale,
                                                x.zero_point, {scales[static_cast<size_t>(h)]},
                                                acc_scale, 0, options.rounding));
          acc_scales.push_back(acc_scale);
        }
        op.parameters = {prefix + "weight", prefix + "bias"};
        break;
      }
      case nn::GateKind::mlp_per_head: {
        const Tensor& w1 = parameter(prefix + "hidden_weight");  // [H, n_hid, d_h]
        const int64_t n_hid = w1.size(1);
        const float* b1 = parameter(prefix + "hidden_bias").data<float>();
        const float* w2 = parameter(prefix + "output_weight").data<float>();  // [H, n_hid]
        const float* b2 = parameter(prefix + "output_bias").data<float>();
        const CalibratedRange& hr = observed_range(path + ".gate:hidden", "the MLP gate's units");
        g.hidden_width = n_hid;
        g.hidden_zero_point = hr.zero_point;
        for (int64_t h = 0; h < H; ++h) {
          std::vector<double> s1, s2;
          // One scale for the head's hidden layer (a [n_hid, d_h] matrix), one for its output.
          const std::vector<int8_t> c1 =
              per_row_codes(w1.data<float>() + h * n_hid * dh, 1, n_hid * dh, &s1);
          const std::vector<int8_t> c2 = per_row_codes(w2 + h * n_hid, 1, n_hid, &s2);
          const std::vector<int32_t> hb = bias_codes(b1 + h * n_hid, n_hid, x.scale, s1);
          g.hidden.push_back(make_integer_linear(c1.data(), n_hid, dh, hb.data(), x.scale,
                                                 x.zero_point, s1, hr.scale, hr.zero_point,
                                                 options.rounding));
          const int32_t ob = quantize_bias(b2[h], hr.scale, s2[0]);
          const double acc_scale = hr.scale * s2[0];
          g.logit.push_back(make_integer_linear(c2.data(), 1, n_hid, &ob, hr.scale, hr.zero_point,
                                                s2, acc_scale, 0, options.rounding));
          acc_scales.push_back(acc_scale);
        }
        out.notes.push_back(fmt::format(
            "{}: MLP gate hidden units u8 on the observed range [{}, {}]", path, hr.min, hr.max));
        op.parameters = {prefix + "hidden_weight", prefix + "hidden_bias", prefix + "output_weight",
                         prefix + "output_bias"};
        break;
      }
      case nn::GateKind::all_heads_linear: {
        const Tensor& w = parameter(prefix + "weight");  // [H, d]
        std::vector<double> scales;
        const std::vector<int8_t> codes = per_row_codes(w.data<float>(), H, a.hidden, &scales);
        const std::vector<int32_t> bias =
            bias_codes(parameter(prefix + "bias").data<float>(), H, x.scale, scales);
        g.all_heads = true;
        for (double s : scales) acc_scales.push_back(x.scale * s);
        // The output grid is unused (the accumulators go to the table); any valid one will do.
        g.logit.push_back(make_integer_linear(codes.data(), H, a.hidden, bias.data(), x.scale,
                                              x.zero_point, scales, acc_scales[0], 0,
                                              options.rounding));
        op.parameters = {prefix + "weight", prefix + "bias"};
        break;
      }
      case nn::GateKind::unconditional_per_head: {
        const float* logit = parameter(prefix + "logit").data<float>();
        for (int64_t h = 0; h < H; ++h) {
          const double pi = sigmoid_reference(logit[h]);
          g.constant.push_back(
              static_cast<uint8_t>(std::clamp(std::nearbyint(pi / kGateScale), 0.0, 255.0)));
        }
        op.parameters = {prefix + "logit"};
        break;
      }
      case nn::GateKind::conditional_per_head:
        fail(
            "integer model: {}: the conditional_per_head gate (logits averaged over the "
            "sequence) is not implemented by the integer engine",
            path);
      case nn::GateKind::none:
        fail("integer model: {} has no gate", path);
    }
    if (!acc_scales.empty())
      g.sigmoid = make_integer_sigmoid(acc_scales, kGateLogitBound, options.rounding);
    return output;
  }

  // Q, K, V, scores, softmax, context (and gate): returns the output projection's output.
  int attention(const std::string& path, const nn::AttentionOptions& a, int input,
                bool context_after_gate) {
    const int64_t H = a.heads, dh = a.hidden / a.heads;
    QT_CHECK(a.sink == nn::AttentionSink::none,
             "integer model: {} uses a softmax with a sink column (softmax1 / sink), which the "
             "integer engine does not implement yet (issue 15)",
             path);
    QT_CHECK(!a.softmax.per_row,
             "integer model: {} uses the per-row clipped softmax (model.alpha_per_row), which the "
             "integer engine does not implement yet (issue 15)",
             path);
    const int pi = a.gate != nn::GateKind::none ? gate(path, a, input) : -1;
    const int q = linear(path + ".query", input);
    const int k = linear(path + ".key", input);
    const int v = linear(path + ".value", input);
    const int scores = activation_tensor(path + ":scores", 0, IntegerLayout::attention);
    {
      const IntegerTensor &qt_ = tensor(q), &kt = tensor(k), &st = tensor(scores);
      IntegerOp& op = add_op(IntegerOpKind::attention_scores, path + ":scores", {q, k}, scores);
      op.heads = H;
      op.head_dim = dh;
      op.requant = make_requantizer(
          qt_.scale * kt.scale / (std::sqrt(static_cast<double>(dh)) * st.scale), st.zero_point,
          kU8Min, kU8Max, options.rounding, "integer model: attention scores");
    }
    const int probabilities = add_tensor(path + ":probabilities", DumpDType::u8,
                                         IntegerLayout::attention, 0, kSoftmaxOutputScale, 0);
    {
      IntegerOp& op =
          add_op(IntegerOpKind::softmax, path + ":probabilities", {scores}, probabilities);
      op.heads = H;
      op.causal = a.causal;
      const double gamma = a.softmax.clipped ? a.softmax.gamma : 0.0;
      const double zeta = a.softmax.clipped ? a.softmax.zeta : 1.0;
      op.softmax = make_integer_softmax(tensor(scores).scale, gamma, zeta);
    }
    // The context point of the simulation, and the tensor the output projection reads.
    int context = -1;
    const IntegerTensor& vt = tensor(v);
    const auto context_op = [&](int output) {
      const IntegerTensor& ct = tensor(output);
      IntegerOp& op = add_op(IntegerOpKind::attention_context, ct.name, {probabilities, v}, output);
      op.heads = H;
      op.head_dim = dh;
      op.requant =
          make_requantizer(kSoftmaxOutputScale * vt.scale / ct.scale, ct.zero_point, kU8Min, kU8Max,
                           options.rounding, "integer model: attention context");
    };
    const auto gate_multiply = [&](int c, int output) {
      const IntegerTensor &ct = tensor(c), &yt = tensor(output);
      IntegerOp& op = add_op(IntegerOpKind::gate_multiply, yt.name, {c, pi}, output);
      op.heads = H;
      op.head_dim = dh;
      op.requant =
          make_gate_multiply(ct.scale, ct.zero_point, yt.scale, yt.zero_point, options.rounding);
    };
    if (context_after_gate) {
      if (pi < 0) {
        context = activation_tensor(path + ":gated_context", a.hidden);
        context_op(context);
      } else {
        // P V on V's grid (a convex combination of V's rows), then the gate into the
        // simulation's gated-context grid.
        const int ungated = add_tensor(path + ":context", DumpDType::u8, IntegerLayout::tokens,
                                       a.hidden, vt.scale, vt.zero_point);
        context_op(ungated);
        context = activation_tensor(path + ":gated_context", a.hidden);
        gate_multiply(ungated, context);
      }
    } else {
      const int ungated = activation_tensor(path + ":context", a.hidden);
      context_op(ungated);
      context = ungated;
      if (pi >= 0) {
        // The simulation feeds the gated context to the output projection unquantized; here it
        // stays on the context grid.
        const IntegerTensor& ct = tensor(ungated);
        context = add_tensor(path + ":gated_context", DumpDType::u8, IntegerLayout::tokens,
                             a.hidden, ct.scale, ct.zero_point);
        gate_multiply(ungated, context);
      }
    }
    return linear(path + ".output", context);
  }

  // The FFN's first linear with its activation fused, output tap "<block>:ffn_activation".
  int ffn_in(const std::string& block, const nn::BlockOptions& b, int input) {
    const std::string path = block + ".ffn_in", point = block + ":ffn_activation";
    const int output = activation_tensor(point, b.ffn);
    const IntegerTensor& y = tensor(output);
    const CalibratedRange& r = activation_range(point);
    if (b.activation == nn::Activation::relu) {
      IntegerOp& op = add_op(IntegerOpKind::linear_relu, path, {input}, output);
      op.linear = linear_layer(path + ".weight", path + ".bias", input, y.scale, y.zero_point);
      op.parameters = {path + ".weight", path + ".bias"};
      return output;
    }
    IntegerOp& op = add_op(IntegerOpKind::linear_gelu, path, {input}, output);
    std::vector<double> weight_scales;
    op.linear = linear_layer(path + ".weight", path + ".bias", input, y.scale, y.zero_point,
                             &weight_scales);
    std::vector<double> acc_scales;
    for (double s : weight_scales) acc_scales.push_back(tensor(input).scale * s);
    const double bound = std::max({kGeluMinimumBound, std::fabs(static_cast<double>(r.max)),
                                   std::fabs(static_cast<double>(r.min))});
    op.activation = make_integer_gelu(acc_scales, bound, y.scale, y.zero_point, options.rounding);
    op.parameters = {path + ".weight", path + ".bias"};
    return output;
  }

  int block(int64_t l, int input) {
    const models::ModelPoints& table = points;
    const std::string block_path = strip_suffix(
        models::point_with_role(table, l, models::AnalysisRole::block_output).name, ":output");
    const nn::BlockOptions b = models::block_options(model.config, l);
    bool after_gate = false;
    for (const models::ModelPoint& p : table.points)
      if (p.layer == l && p.name == block_path + ".attention:gated_context" && p.quantized)
        after_gate = true;
    const std::string attention_path = block_path + ".attention";
    const double eps = b.layer_norm_eps;
    if (!b.pre_layer_norm) {
      // h1 = LN_1(Attn(h) + h); h' = LN_2(FFN(h1) + h1)
      const int attended = attention(attention_path, b.attention, input, after_gate);
      const int r1 = add(block_path + ":attention_residual", attended, input);
      const int h1 = layer_norm(block_path + ".attention_layer_norm", r1, eps);
      const int f = linear(block_path + ".ffn_out", ffn_in(block_path, b, h1));
      const int r2 = add(block_path + ":ffn_residual", f, h1);
      return layer_norm(block_path + ".output_layer_norm", r2, eps);
    }
    // h1 = h + Attn(LN_attn(h)); h' = h1 + FFN(LN_ffn(h1))
    const int x = layer_norm(block_path + ".attention_layer_norm", input, eps);
    const int attended = attention(attention_path, b.attention, x, after_gate);
    const int h1 = add(block_path + ":attention_residual", attended, input);
    const int z = layer_norm(block_path + ".output_layer_norm", h1, eps);
    const int f = linear(block_path + ".ffn_out", ffn_in(block_path, b, z));
    return add(block_path + ":ffn_residual", f, h1);
  }

  static std::string strip_suffix(const std::string& s, const std::string& suffix) {
    QT_CHECK(
        s.size() > suffix.size() && s.compare(s.size() - suffix.size(), suffix.size(), suffix) == 0,
        "integer model: point '{}' does not end in '{}'", s, suffix);
    return s.substr(0, s.size() - suffix.size());
  }

  // ---- head (integer)

  int head(const models::GraphDescription& g, int hidden) {
    int x = hidden;
    if (g.first_token) {
      const IntegerTensor& h = tensor(hidden);
      x = add_tensor(h.name + ".first_token", DumpDType::u8, IntegerLayout::first_rows, h.width,
                     h.scale, h.zero_point);
      add_op(IntegerOpKind::first_token, h.name + ".first_token", {hidden}, x);
    }
    if (!g.transform.empty()) {
      x = linear(g.transform, x);
      // GELU on the transform's u8 codes, into a grid spanning GELU's values over that grid.
      const IntegerTensor& t = tensor(x);
      double lo = 0, hi = 0;
      for (int q = 0; q < 256; ++q) {
        const double v = gelu_reference(t.scale * (q - t.zero_point));
        lo = std::min(lo, v);
        hi = std::max(hi, v);
      }
      const double scale = (hi - lo) / 255.0;
      const int32_t zero =
          static_cast<int32_t>(std::clamp(std::nearbyint(-lo / scale), 0.0, 255.0));
      const int activated = add_tensor(g.transform + ":gelu", DumpDType::u8, IntegerLayout::tokens,
                                       t.width, scale, zero);
      IntegerOp& op = add_op(IntegerOpKind::gelu_table, g.transform + ":gelu", {x}, activated);
      op.table = make_integer_gelu_u8(t.scale, t.zero_point, scale, zero);
      out.notes.push_back(
          fmt::format("{}: GELU output u8 on [{:.6g}, {:.6g}] (the simulation keeps it f32)",
                      g.transform, lo, hi));
      x = layer_norm(g.transform_layer_norm, activated, model.config.layer_norm_eps);
    }
    // The decoder: a linear layer on the tied table (text) or the classifier.
    const int64_t width = parameter(g.decoder_weight).size(0);
    const int output = activation_tensor(
        g.logits, width, g.first_token ? IntegerLayout::first_rows : IntegerLayout::tokens);
    const IntegerTensor& y = tensor(output);
    IntegerOp& op = add_op(IntegerOpKind::linear,
                           g.decoder_module.empty() ? g.logits : g.decoder_module, {x}, output);
    op.linear = linear_layer(g.decoder_weight, g.decoder_bias, x, y.scale, y.zero_point);
    op.parameters = {g.decoder_weight};
    if (!g.decoder_bias.empty()) op.parameters.push_back(g.decoder_bias);
    return output;
  }

  models::ModelPoints points;

  void run() {
    points = model.points();
    const models::GraphDescription& g = points.graph;
    out.family = points.family;
    out.rounding = options.rounding;
    out.per_channel_weights = options.per_channel_weights;
    out.integer_head =
        options.integer_head < 0 ? points.quantization.head_quantized : options.integer_head == 1;
    const models::ModelConfig& c = model.config;
    out.hidden = c.hidden;
    out.heads = c.heads;
    out.layers = c.layers;
    out.max_length = c.max_length;
    out.vocab_size = c.vocab_size;
    if (g.image) {
      out.patches = (c.image_size / c.patch_size) * (c.image_size / c.patch_size);
      out.patch_dim = c.patch_size * c.patch_size * c.channels;
    }
    int h = g.image ? image_embedding(g) : text_embedding(g);
    if (!g.embedding_layer_norm.empty())
      h = layer_norm(g.embedding_layer_norm, h, c.layer_norm_eps);
    for (int64_t l = 0; l < c.layers; ++l) h = block(l, h);
    if (!g.final_layer_norm.empty()) h = layer_norm(g.final_layer_norm, h, c.layer_norm_eps);
    out.output = out.integer_head ? head(g, h) : h;
    out.notes.push_back(out.integer_head ? "head: integer"
                                         : "head: floating point (the paper's W8A8)");
    if (!unsigned_weights.empty())
      out.notes.push_back(fmt::format(
          "{} weight tensor(s) had no negative value and were calibrated on the unsigned grid "
          "[0, 255]; re-gridded to s8 [0, 127] at scale x 255/127: {}",
          unsigned_weights.size(), fmt::join(unsigned_weights, ", ")));
    // Dump names are the tap points with ':' written as '.'; they must stay unique.
    std::set<std::string> names;
    for (const IntegerTensor& t : out.tensors) {
      const std::string name = integer_dump_name(t.name);
      QT_CHECK(names.insert(name).second, "integer model: two tensors dump as '{}'", name);
    }
  }
};

}  // namespace

IntegerModel build_integer_model(const models::Model& model, const CalibratedRanges& ranges,
                                 const IntegerModelOptions& options) {
  Lowering lowering(model, ranges, options);
  lowering.run();
  return std::move(lowering.out);
}

}  // namespace qt::quant
