// The integer forward of quant/integer_model.h: each op of the list, in order, on integer buffers.
// Every arithmetic step is one of the integer ops (quant/integer_*.h); this file only slices
// tensors into the rows, heads and sequences those ops take.
#include <fmt/format.h>
#include <algorithm>
#include <chrono>
#include <cmath>

#include "quant/integer_add.h"
#include "quant/integer_embedding.h"
#include "quant/integer_model.h"
#include "quant/integer_sigmoid.h"
#include "tensor/create.h"
#include "tensor/error.h"
#include "tensor/parallel_policy.h"
#include "tensor/view.h"

namespace qt::quant {

Shape IntegerActivations::shape(const IntegerModel& model, int tensor) const {
  const IntegerTensor& t = model.tensors[static_cast<size_t>(tensor)];
  const int64_t B = batch, T = length;
  switch (t.layout) {
    case IntegerLayout::tokens:
      return {B * T, t.width};
    case IntegerLayout::attention:
      return {B, model.heads, T, T};
    case IntegerLayout::token_ids:
      return {B, T};
    case IntegerLayout::images:
      return {B, model.patches, t.width};
    case IntegerLayout::first_rows:
      return {B, t.width};
  }
  return {};
}

IntegerInput integer_input(const IntegerModel& model, const models::Batch& batch) {
  IntegerInput in;
  if (model.patches > 0) {
    const Tensor& x = batch.images;
    QT_CHECK(x.defined() && x.dtype() == DType::f32 && x.dim() == 3 && x.size(1) == model.patches &&
                 x.size(2) == model.patch_dim,
             "integer model: images must be f32 [B, {}, {}], got {}", model.patches,
             model.patch_dim, x.defined() ? shape_str(x.shape()) : std::string("nothing"));
    const Tensor c = ops::contiguous(x);
    const IntegerTensor& grid = model.tensors[static_cast<size_t>(model.input)];
    in.batch = x.size(0);
    in.length = model.patches;
    in.images.resize(static_cast<size_t>(c.numel()));
    const float* v = c.data<float>();
    const float scale = static_cast<float>(grid.scale);
    for (size_t i = 0; i < in.images.size(); ++i) {
      QT_CHECK(std::isfinite(v[i]), "integer model: image value {} at flat index {} is not finite",
               v[i], i);
      // The input quantizer, as the simulation's fake quantizer rounds (f32, half to even).
      const float q = std::nearbyint(v[i] / scale) + static_cast<float>(grid.zero_point);
      in.images[i] = static_cast<uint8_t>(std::clamp(q, 0.0f, 255.0f));
    }
    return in;
  }
  const Tensor& ids = batch.input_ids;
  QT_CHECK(ids.defined() && ids.dtype() == DType::i64 && ids.dim() == 2 && ids.size(0) >= 1 &&
               ids.size(1) >= 1 && ids.size(1) <= model.max_length,
           "integer model: input_ids must be i64 [B, T] with 1 <= T <= {}, got {}",
           model.max_length, ids.defined() ? shape_str(ids.shape()) : std::string("nothing"));
  const Tensor c = ops::contiguous(ids);
  in.batch = ids.size(0);
  in.length = ids.size(1);
  in.ids.resize(static_cast<size_t>(c.numel()));
  const int64_t* v = c.data<int64_t>();
  for (size_t i = 0; i < in.ids.size(); ++i) {
    QT_CHECK(v[i] >= 0 && v[i] < model.vocab_size,
             "integer model: token id {} at flat index {} is outside [0, {})", v[i], i,
             model.vocab_size);
    in.ids[i] = static_cast<int32_t>(v[i]);
  }
  return in;
}

namespace {

// Plain int64 loops: acc[m, n] = sum_k (x[m, k] - Z) w[n, k] + bias[n], checked to fit int32.
void accumulators_ref(const IntegerLinear& layer, const uint8_t* x, int64_t rows, int32_t* acc,
                      int64_t x_stride) {
  const int64_t K = layer.in_features, N = layer.out_features;
  const int64_t ld = x_stride == 0 ? K : x_stride;
  for (int64_t m = 0; m < rows; ++m)
    for (int64_t n = 0; n < N; ++n) {
      int64_t sum = layer.bias.empty() ? 0 : layer.bias[static_cast<size_t>(n)];
      for (int64_t k = 0; k < K; ++k)
        sum += (static_cast<int64_t>(x[m * ld + k]) - layer.input_zero_point) *
               layer.weight[static_cast<size_t>(n * K + k)];
      QT_CHECK(sum >= INT32_MIN && sum <= INT32_MAX,
               "integer model: linear accumulator {} overflows int32", sum);
      acc[m * N + n] = static_cast<int32_t>(sum);
    }
}

struct Runner {
  const IntegerModel& model;
  bool reference;
  IntegerActivations& a;

  std::vector<uint8_t>& u8(int t) { return a.u8[static_cast<size_t>(t)]; }
  const IntegerTensor& info(int t) const { return model.tensors[static_cast<size_t>(t)]; }
  int64_t numel(int t) const { return numel_of(a.shape(model, t)); }

  void accumulators(const IntegerLinear& layer, const uint8_t* x, int64_t rows, int32_t* acc,
                    int64_t x_stride = 0) {
    if (reference)
      accumulators_ref(layer, x, rows, acc, x_stride);
    else
      integer_linear_accumulators(layer, x, rows, acc, x_stride);
  }
  void linear(const IntegerLinear& layer, const uint8_t* x, int64_t rows, uint8_t* y, bool relu,
              int64_t x_stride = 0) {
    if (!relu) {
      if (reference)
        integer_linear_ref(layer, x, rows, y, x_stride);
      else
        integer_linear(layer, x, rows, y, x_stride);
      return;
    }
    if (!reference) {
      integer_linear_relu(layer, x, rows, y, x_stride);
      return;
    }
    std::vector<int32_t> acc(static_cast<size_t>(rows * layer.out_features));
    accumulators_ref(layer, x, rows, acc.data(), x_stride);
    const int64_t N = layer.out_features;
    for (int64_t m = 0; m < rows; ++m)
      for (int64_t n = 0; n < N; ++n)
        y[m * N + n] = static_cast<uint8_t>(
            layer.output[static_cast<size_t>(n)](std::max(acc[static_cast<size_t>(m * N + n)], 0)));
  }
  void matmul(int64_t batch, int64_t M, int64_t N, int64_t K, const U8Matrix& A, const U8Matrix& B,
              BLayout layout, int32_t* C) {
    if (reference)
      integer_matmul_u8u8_ref(batch, M, N, K, A, B, layout, C);
    else
      integer_matmul_u8u8(batch, M, N, K, A, B, layout, C);
  }

  void text_embedding(const IntegerOp& op) {
    const int64_t B = a.batch, T = a.length, d = model.hidden;
    QT_CHECK(op.position_offset + T <= op.table_b_rows,
             "integer model: {} tokens need {} position rows, the table has {}", T,
             op.position_offset + T, op.table_b_rows);
    const std::vector<int32_t>& ids = a.s32[static_cast<size_t>(op.inputs[0])];
    std::vector<int64_t> tokens(ids.begin(), ids.end()), positions(static_cast<size_t>(B * T));
    for (int64_t b = 0; b < B; ++b)
      for (int64_t t = 0; t < T; ++t)
        positions[static_cast<size_t>(b * T + t)] = op.position_offset + t;
    const std::vector<EmbeddingTerm> terms = {
        {op.table_a.data(), op.table_a_rows, tokens.data(), nullptr},
        {op.table_b.data(), op.table_b_rows, positions.data(), nullptr}};
    integer_embedding_sum(op.sum, terms, B * T, d, u8(op.output).data());
  }

  void image_embedding(const IntegerOp& op) {
    const int64_t B = a.batch, N = model.patches, d = model.hidden, T = N + 1;
    const uint8_t* patches = u8(op.inputs[0]).data();
    uint8_t* y = u8(op.output).data();
    const std::vector<int64_t> zero = {0};
    std::vector<int64_t> positions(static_cast<size_t>(N));
    for (int64_t i = 0; i < N; ++i) positions[static_cast<size_t>(i)] = i + 1;
    for (int64_t b = 0; b < B; ++b) {
      const std::vector<EmbeddingTerm> first = {
          {op.table_a.data(), 1, zero.data(), nullptr},
          {op.table_b.data(), op.table_b_rows, zero.data(), nullptr}};
      integer_embedding_sum(op.first_sum, first, 1, d, y + b * T * d);
      const std::vector<EmbeddingTerm> rest = {
          {nullptr, 0, nullptr, patches + b * N * d},
          {op.table_b.data(), op.table_b_rows, positions.data(), nullptr}};
      integer_embedding_sum(op.sum, rest, N, d, y + (b * T + 1) * d);
    }
  }

  // Heads are independent (disjoint outputs, their own accumulators): head 0 runs alone first,
  // which checks the shapes every head shares, then an OpenMP team takes the others, so nothing
  // inside the team can throw. Bit-identical for any thread count (integer arithmetic).
  template <typename PerHead>
  void for_each_head(int64_t heads, int64_t work, PerHead&& per_head) {
    per_head(int64_t{0});
#pragma omp parallel for schedule(static) if (worth_parallel(work, WorkCost::standard))
    for (int64_t h = 1; h < heads; ++h) per_head(h);
  }

  void attention_scores(const IntegerOp& op) {
    const int64_t B = a.batch, T = a.length, H = op.heads, dh = op.head_dim, d = H * dh;
    const IntegerTensor &q = info(op.inputs[0]), &k = info(op.inputs[1]);
    a.scratch.resize(static_cast<size_t>(H * B * T * T));
    uint8_t* s = u8(op.output).data();
    for_each_head(H, B * T * T * dh, [&](int64_t h) {
      int32_t* acc = a.scratch.data() + h * B * T * T;
      const U8Matrix A{u8(op.inputs[0]).data() + h * dh, d, T * d, q.zero_point};
      const U8Matrix K{u8(op.inputs[1]).data() + h * dh, d, T * d, k.zero_point};
      matmul(B, T, T, dh, A, K, BLayout::nk, acc);
      for (int64_t b = 0; b < B; ++b)
        requantize(acc + b * T * T, T * T, op.requant, s + (b * H + h) * T * T);
    });
  }

  void softmax(const IntegerOp& op) {
    const int64_t B = a.batch, T = a.length, H = op.heads;
    const uint8_t* x = u8(op.inputs[0]).data();
    uint8_t* y = u8(op.output).data();
    if (!op.causal) {  // one call for all B H T rows (one team of threads over them)
      integer_softmax(op.softmax, x, B * H * T, T, nullptr, 0, y);
      return;
    }
    // Causal: the T x T mask (query i keeps keys 0..i), one call per sequence and head.
    std::vector<uint8_t> keep(static_cast<size_t>(T * T), 0);
    for (int64_t i = 0; i < T; ++i)
      for (int64_t j = 0; j <= i; ++j) keep[static_cast<size_t>(i * T + j)] = 1;
    for (int64_t bh = 0; bh < B * H; ++bh)
      integer_softmax(op.softmax, x + bh * T * T, T, T, keep.data(), T, y + bh * T * T);
  }

  void attention_context(const IntegerOp& op) {
    const int64_t B = a.batch, T = a.length, H = op.heads, dh = op.head_dim, d = H * dh;
    const IntegerTensor& v = info(op.inputs[1]);
    a.scratch.resize(static_cast<size_t>(H * B * T * dh));
    uint8_t* y = u8(op.output).data();
    for_each_head(H, B * T * T * dh, [&](int64_t h) {
      int32_t* acc = a.scratch.data() + h * B * T * dh;
      const U8Matrix P{u8(op.inputs[0]).data() + h * T * T, T, H * T * T, 0};
      const U8Matrix V{u8(op.inputs[1]).data() + h * dh, d, T * d, v.zero_point};
      matmul(B, T, dh, T, P, V, BLayout::kn, acc);
      for (int64_t row = 0; row < B * T; ++row)
        requantize(acc + row * dh, dh, op.requant, y + row * d + h * dh);
    });
  }

  void gate(const IntegerOp& op) {
    const IntegerGateParameters& g = op.gate;
    const int64_t R = a.batch * a.length, H = model.heads, d = model.hidden, dh = g.head_dim;
    uint8_t* y = u8(op.output).data();
    if (!g.constant.empty()) {
      for (int64_t r = 0; r < R; ++r)
        for (int64_t h = 0; h < H; ++h) y[r * H + h] = g.constant[static_cast<size_t>(h)];
      return;
    }
    const uint8_t* x = u8(op.inputs[0]).data();
    std::vector<int32_t> acc(static_cast<size_t>(R * H));
    if (g.all_heads) {
      accumulators(g.logit[0], x, R, acc.data());
    } else {
      std::vector<int32_t> head(static_cast<size_t>(R));
      std::vector<uint8_t> hidden(static_cast<size_t>(R * g.hidden_width));
      for (int64_t h = 0; h < H; ++h) {
        if (!g.hidden.empty()) {
          linear(g.hidden[static_cast<size_t>(h)], x + h * dh, R, hidden.data(), /*relu=*/true, d);
          accumulators(g.logit[static_cast<size_t>(h)], hidden.data(), R, head.data());
        } else {
          accumulators(g.logit[static_cast<size_t>(h)], x + h * dh, R, head.data(), d);
        }
        for (int64_t r = 0; r < R; ++r)
          acc[static_cast<size_t>(r * H + h)] = head[static_cast<size_t>(r)];
      }
    }
    apply_lut_activation(g.sigmoid, acc.data(), R, H, y);
  }

  void run_op(const IntegerOp& op) {
    const int64_t R = a.batch * a.length;
    switch (op.kind) {
      case IntegerOpKind::text_embedding:
        return text_embedding(op);
      case IntegerOpKind::image_embedding:
        return image_embedding(op);
      case IntegerOpKind::linear:
      case IntegerOpKind::linear_relu: {
        const int64_t rows = numel(op.inputs[0]) / op.linear.in_features;
        return linear(op.linear, u8(op.inputs[0]).data(), rows, u8(op.output).data(),
                      op.kind == IntegerOpKind::linear_relu);
      }
      case IntegerOpKind::linear_gelu: {
        std::vector<int32_t> acc(static_cast<size_t>(R * op.linear.out_features));
        accumulators(op.linear, u8(op.inputs[0]).data(), R, acc.data());
        return apply_lut_activation(op.activation, acc.data(), R, op.linear.out_features,
                                    u8(op.output).data());
      }
      case IntegerOpKind::gelu_table:
        return apply_lut(op.table, u8(op.inputs[0]).data(), numel(op.inputs[0]),
                         u8(op.output).data());
      case IntegerOpKind::layer_norm: {
        const int64_t rows = numel(op.inputs[0]) / op.layer_norm.channels;
        return integer_layer_norm(op.layer_norm, u8(op.inputs[0]).data(), rows,
                                  u8(op.output).data());
      }
      case IntegerOpKind::add:
        return integer_add(op.sum, u8(op.inputs[0]).data(), u8(op.inputs[1]).data(),
                           numel(op.output), u8(op.output).data());
      case IntegerOpKind::attention_scores:
        return attention_scores(op);
      case IntegerOpKind::softmax:
        return softmax(op);
      case IntegerOpKind::attention_context:
        return attention_context(op);
      case IntegerOpKind::gate:
        return gate(op);
      case IntegerOpKind::gate_multiply:
        return integer_gate_multiply(u8(op.inputs[0]).data(), u8(op.inputs[1]).data(), R, op.heads,
                                     op.head_dim, info(op.inputs[0]).zero_point, op.requant,
                                     u8(op.output).data());
      case IntegerOpKind::first_token: {
        const int64_t d = info(op.output).width;
        for (int64_t b = 0; b < a.batch; ++b)
          std::copy_n(u8(op.inputs[0]).data() + b * a.length * d, d, u8(op.output).data() + b * d);
        return;
      }
    }
  }

  void run(const IntegerInput& in) {
    QT_CHECK(model.input >= 0 && !model.ops.empty(), "integer model: the model is empty");
    const bool images = model.patches > 0;
    QT_CHECK(in.batch >= 1 && (images ? in.length == model.patches
                                      : in.length >= 1 && in.length <= model.max_length),
             "integer model: the input has batch {} and length {}", in.batch, in.length);
    a.batch = in.batch;
    a.length = images ? model.patches + 1 : in.length;
    a.u8.resize(model.tensors.size());
    a.s32.resize(model.tensors.size());
    // Every op writes all of its output, so buffers of the right size are reused as they are
    // (no allocation, no page faults from the second batch of a shape on; tested against a fresh
    // run).
    for (size_t t = 0; t < model.tensors.size(); ++t) {
      const auto n = static_cast<size_t>(numel(static_cast<int>(t)));
      if (model.tensors[t].dtype == DumpDType::s32)
        a.s32[t].resize(n);
      else
        a.u8[t].resize(n);
    }
    if (images) {
      QT_CHECK(in.images.size() == a.u8[static_cast<size_t>(model.input)].size(),
               "integer model: {} image codes for a [{}, {}, {}] input", in.images.size(), in.batch,
               model.patches, model.patch_dim);
      a.u8[static_cast<size_t>(model.input)] = in.images;
    } else {
      QT_CHECK(in.ids.size() == static_cast<size_t>(in.batch * in.length),
               "integer model: {} ids for a [{}, {}] input", in.ids.size(), in.batch, in.length);
      for (int32_t id : in.ids)
        QT_CHECK(id >= 0 && id < model.vocab_size, "integer model: token id {} is outside [0, {})",
                 id, model.vocab_size);
      a.s32[static_cast<size_t>(model.input)] = in.ids;
    }
    a.op_ms.assign(model.ops.size(), 0.0);
    for (size_t i = 0; i < model.ops.size(); ++i) {
      const auto start = std::chrono::steady_clock::now();
      run_op(model.ops[i]);
      a.op_ms[i] =
          std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - start)
              .count();
    }
  }
};

nlohmann::json requantizer_json(const Requantizer& r) {
  return {{"multiplier", r.multiplier.multiplier},
          {"shift", r.multiplier.shift},
          {"zero_point", r.zero_point},
          {"qmin", r.qmin},
          {"qmax", r.qmax}};
}

}  // namespace

IntegerActivations run_integer_model(const IntegerModel& model, const IntegerInput& input) {
  IntegerActivations a;
  Runner{model, false, a}.run(input);
  return a;
}

void run_integer_model(const IntegerModel& model, const IntegerInput& input,
                       IntegerActivations& activations) {
  Runner{model, false, activations}.run(input);
}

IntegerActivations run_integer_model_ref(const IntegerModel& model, const IntegerInput& input) {
  IntegerActivations a;
  Runner{model, true, a}.run(input);
  return a;
}

std::string requant_id(Requant mode) {
  return std::string(kDumpRoundings[static_cast<int>(mode)]);
}

std::string integer_dump_name(const std::string& tensor) {
  // A model-level tap point has an empty module path (":embedding_sum").
  std::string name = !tensor.empty() && tensor[0] == ':' ? tensor.substr(1) : tensor;
  std::replace(name.begin(), name.end(), ':', '.');
  return name;
}

TensorDump integer_model_dump(const IntegerModel& model, const IntegerActivations& activations) {
  TensorDump dump;
  const auto add = [&](int t) {
    const IntegerTensor& info = model.tensors[static_cast<size_t>(t)];
    const Shape shape = activations.shape(model, t);
    if (info.dtype == DumpDType::s32)
      dump.add_tensor(integer_dump_name(info.name), info.dtype, shape, info.scale, info.zero_point,
                      activations.s32[static_cast<size_t>(t)].data());
    else
      dump.add_tensor(integer_dump_name(info.name), info.dtype, shape, info.scale, info.zero_point,
                      activations.u8[static_cast<size_t>(t)].data());
  };
  add(model.input);
  const std::string rounding = requant_id(model.rounding);
  for (const IntegerOp& op : model.ops) {
    add(op.output);
    std::vector<std::string> inputs;
    for (int t : op.inputs)
      inputs.push_back(integer_dump_name(model.tensors[static_cast<size_t>(t)].name));
    const bool rounds =
        op.kind != IntegerOpKind::first_token && op.kind != IntegerOpKind::gelu_table;
    DumpOp& d =
        dump.add_op(op.name, integer_op_kind_name(op.kind), rounds ? rounding : "none", inputs,
                    {integer_dump_name(model.tensors[static_cast<size_t>(op.output)].name)});
    d.attributes["parameters"] = op.parameters;
    switch (op.kind) {
      case IntegerOpKind::linear:
      case IntegerOpKind::linear_relu:
        d.attributes["input_zero_point"] = op.linear.input_zero_point;
        d.attributes["output"] = requantizer_json(op.linear.output[0]);
        break;
      case IntegerOpKind::attention_scores:
      case IntegerOpKind::attention_context:
      case IntegerOpKind::gate_multiply:
        d.attributes["output"] = requantizer_json(op.requant);
        break;
      case IntegerOpKind::add:
        d.attributes["output"] = requantizer_json(op.sum.output);
        break;
      case IntegerOpKind::layer_norm:
        d.attributes["eps_term"] = op.layer_norm.eps_term;
        d.attributes["output"] = requantizer_json(op.layer_norm.output);
        break;
      case IntegerOpKind::softmax:
        d.attributes["exponent"] = {{"multiplier", op.softmax.exponent.multiplier},
                                    {"shift", op.softmax.exponent.shift}};
        d.attributes["stretch"] = op.softmax.stretch;
        d.attributes["offset"] = op.softmax.offset;
        d.attributes["causal"] = op.causal;
        break;
      default:
        break;
    }
  }
  return dump;
}

Tensor dequantize_output(const IntegerModel& model, const IntegerActivations& activations) {
  const IntegerTensor& t = model.tensors[static_cast<size_t>(model.output)];
  const Shape shape = activations.shape(model, model.output);
  Shape out_shape = t.layout == IntegerLayout::tokens
                        ? Shape{activations.batch, activations.length, t.width}
                        : shape;
  std::vector<float> values(static_cast<size_t>(numel_of(shape)));
  const std::vector<uint8_t>& q = activations.u8[static_cast<size_t>(model.output)];
  const float scale = static_cast<float>(t.scale);
  for (size_t i = 0; i < values.size(); ++i)
    values[i] = scale * static_cast<float>(static_cast<int32_t>(q[i]) - t.zero_point);
  return ops::from_vector(values, out_shape);
}

}  // namespace qt::quant
