// Tests for nn/transformer_block.*: the post-LN (BERT) and pre-LN (OPT / ViT) blocks.
// Truth:
//  * a reference block composed by hand from differentiable qt ops (LayerNorm from mean / var /
//    rsqrt, GELU from erf, attention from matmul / softmax / clamp / sigmoid, the gate from the
//    per-head dot product), written from the formulas of method.md §3 and nn/transformer_block.h,
//    compared in float64 (output, dL/dh and dL/d(every parameter)) for both attention paths;
//  * the same reference with nn::dropout applied at the documented sites and layer ids (train
//  mode);
//  * central finite differences (gradcheck, f64) w.r.t. h and every parameter;
//  * the parameter names, shapes and order written out by hand (HF order, see the header).
// The PyTorch golden fixtures of the blocks are in test_pytorch_fixtures.cpp.
#include <doctest/doctest.h>

#include <cmath>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "autograd/functions.h"
#include "autograd/gradcheck.h"
#include "nn/dropout.h"
#include "nn/transformer_block.h"
#include "tensor/ops.h"
#include "tests/test_util.h"

using namespace qt;
using namespace qt::test;

namespace {

// Converts every parameter of `module` to f64 in place (same TensorImpl, so the module's members
// and its named_parameters() both see the f64 data), optionally scaling the ones whose name ends
// with one of `sharpen` by `factor` (sharper attention: more entries clipped).
void convert_parameters_to_f64(const nn::Module& module, const std::string& sharpen = "",
                               double factor = 1.0) {
  for (const auto& [name, parameter] : module.named_parameters()) {
    Tensor converted = ops::to(parameter, DType::f64);
    if (!sharpen.empty() && name == sharpen) converted = ops::mul_scalar(converted, factor);
    TensorImpl& impl = parameter.impl();
    impl.storage = converted.storage();
    impl.dtype = DType::f64;
    impl.strides = converted.strides();
    impl.offset = converted.offset();
  }
}

// Non-trivial LayerNorm parameters (gamma around 1, beta around 0) so that their use is checked.
void randomize_layer_norms(const nn::TransformerBlock& block, unsigned seed) {
  for (const auto& layer_norm : {block.attention_layer_norm, block.ffn_layer_norm}) {
    ops::copy_into(layer_norm->weight,
                   random_tensor({layer_norm->dim}, layer_norm->weight.dtype(), seed++, 1.0, 0.2));
    ops::copy_into(layer_norm->bias,
                   random_tensor({layer_norm->dim}, layer_norm->bias.dtype(), seed++, 0.0, 0.2));
  }
}

using Parameters = std::map<std::string, Tensor>;

// Separate f64 leaves holding the block's parameter values (the reference's own graph and grads).
Parameters reference_parameters(const nn::TransformerBlock& block) {
  Parameters parameters;
  for (const auto& [name, parameter] : block.named_parameters()) {
    Tensor leaf = ops::contiguous(ops::to(parameter.detach(), DType::f64));
    leaf = ops::mul_scalar(leaf, 1.0);  // a fresh buffer, never the module's
    leaf.set_requires_grad(true);
    parameters[name] = leaf;
  }
  return parameters;
}

// Dropout masks of the reference (train mode); rate 0 = none.
struct ReferenceDropout {
  float hidden = 0.0f, probabilities = 0.0f;
  uint64_t seed = 0, step = 0, first_layer_id = 0;
};

Tensor reference_linear(const Tensor& x, const Parameters& p, const std::string& name) {
  // y = x W^T + b
  return qt::add(qt::matmul(x, qt::transpose(p.at(name + ".weight"), 0, 1)), p.at(name + ".bias"));
}

Tensor reference_layer_norm(const Tensor& x, const Parameters& p, const std::string& name,
                            double eps) {
  // (x - mean) / sqrt(var + eps) * gamma + beta, biased variance over the last dim
  const Tensor centered = qt::sub(x, qt::mean(x, {-1}, true));
  const Tensor variance = qt::mean(qt::mul(centered, centered), {-1}, true);
  const Tensor normalized = qt::mul(centered, qt::rsqrt(qt::add(variance, eps)));
  return qt::add(qt::mul(normalized, p.at(name + ".weight")), p.at(name + ".bias"));
}

Tensor reference_gelu(const Tensor& x) {
  // x Phi(x) = 0.5 x (1 + erf(x / sqrt(2)))
  return qt::mul(qt::mul(x, 0.5), qt::add(qt::erf(qt::mul(x, 1.0 / std::sqrt(2.0))), 1.0));
}

// Multi-head attention of method.md §1, §2, §8.1 with gate none or linear_per_head.
// key_ok: [B * T] flags (1 = real token) or empty.
Tensor reference_attention(const Tensor& x, const std::vector<uint8_t>& key_ok,
                           const nn::AttentionOptions& o, const Parameters& p,
                           const ReferenceDropout& drop) {
  const int64_t B = x.shape()[0], T = x.shape()[1], d = o.hidden, H = o.heads, dh = d / H;
  const auto heads = [&](const Tensor& t) {  // [B, T, d] -> [B, H, T, d_h]
    return qt::permute(qt::reshape(t, {B, T, H, dh}), {0, 2, 1, 3});
  };
  const Tensor q = heads(reference_linear(x, p, "attention.query"));
  const Tensor k = heads(reference_linear(x, p, "attention.key"));
  const Tensor v = heads(reference_linear(x, p, "attention.value"));
  Tensor scores = qt::mul(qt::matmul(q, qt::transpose(k, -1, -2)), 1.0 / std::sqrt(double(dh)));
  // Additive mask: a huge negative score gives probability exactly 0 (no row is fully masked here).
  Tensor additive = ops::zeros({B, 1, T, T}, DType::f64);
  for (int64_t b = 0; b < B; ++b)
    for (int64_t i = 0; i < T; ++i)
      for (int64_t j = 0; j < T; ++j) {
        const bool hidden = (o.causal && j > i) || (!key_ok.empty() && key_ok[b * T + j] == 0);
        if (hidden) additive.data<double>()[(b * T + i) * T + j] = -1e300;
      }
  scores = qt::add(scores, additive);
  Tensor probabilities = qt::softmax(scores, -1);
  if (o.softmax.clipped)  // clip((zeta - gamma) p + gamma, 0, 1)
    probabilities = qt::clamp(
        qt::add(qt::mul(probabilities, o.softmax.zeta - o.softmax.gamma), o.softmax.gamma), 0.0,
        1.0);
  if (drop.probabilities > 0.0f)  // flat index into [B, H, T, T], layer id first + 2
    probabilities = nn::dropout(qt::contiguous(probabilities), drop.probabilities, drop.seed,
                                nn::dropout_stream(drop.first_layer_id + 2, drop.step));
  Tensor context = qt::matmul(probabilities, v);  // [B, H, T, d_h]
  if (o.gate == nn::GateKind::linear_per_head) {
    // pi[b, i, t] = sigmoid(x[b, t, i*d_h:(i+1)*d_h] . w_i + c_i), on the same x as Q/K/V
    const Tensor logits = qt::add(
        qt::sum(qt::mul(qt::reshape(x, {B, T, H, dh}), p.at("attention.gate.weight")), {-1}),
        p.at("attention.gate.bias"));  // [B, T, H]
    context = qt::mul(context, qt::unsqueeze(qt::permute(qt::sigmoid(logits), {0, 2, 1}), 3));
  } else {
    REQUIRE(o.gate == nn::GateKind::none);
  }
  const Tensor concatenated = qt::reshape(qt::permute(context, {0, 2, 1, 3}), {B, T, d});
  return reference_linear(concatenated, p, "attention.output");
}

Tensor reference_block(const Tensor& h, const std::vector<uint8_t>& key_ok,
                       const nn::BlockOptions& o, const Parameters& p,
                       const ReferenceDropout& drop) {
  const auto hidden_dropout = [&](const Tensor& t, uint64_t id_offset) {
    if (drop.hidden == 0.0f) return t;
    return nn::dropout(qt::contiguous(t), drop.hidden, drop.seed,
                       nn::dropout_stream(drop.first_layer_id + id_offset, drop.step));
  };
  const auto feed_forward = [&](const Tensor& z) {
    const Tensor inner = reference_linear(z, p, "ffn_in");
    return reference_linear(
        o.activation == nn::Activation::gelu ? reference_gelu(inner) : qt::relu(inner), p,
        "ffn_out");
  };
  const double eps = o.layer_norm_eps;
  if (!o.pre_layer_norm) {  // BERT
    const Tensor attended = hidden_dropout(reference_attention(h, key_ok, o.attention, p, drop), 0);
    const Tensor h1 = reference_layer_norm(qt::add(attended, h), p, "attention_layer_norm", eps);
    return reference_layer_norm(qt::add(hidden_dropout(feed_forward(h1), 1), h1), p,
                                "output_layer_norm", eps);
  }
  // OPT / ViT
  const Tensor x = reference_layer_norm(h, p, "attention_layer_norm", eps);
  const Tensor h1 =
      qt::add(h, hidden_dropout(reference_attention(x, key_ok, o.attention, p, drop), 0));
  return qt::add(
      h1, hidden_dropout(feed_forward(reference_layer_norm(h1, p, "output_layer_norm", eps)), 1));
}

nn::BlockOptions bert_options() {
  nn::BlockOptions o;
  o.attention.hidden = 8;
  o.attention.heads = 2;
  o.attention.softmax = nn::SoftmaxClip{true, -0.1, 1.0};
  o.ffn = 12;
  o.activation = nn::Activation::gelu;
  o.pre_layer_norm = false;
  o.layer_norm_eps = 1e-12;
  o.hidden_dropout = 0.0f;
  return o;
}

nn::BlockOptions opt_options() {
  nn::BlockOptions o;
  o.attention.hidden = 8;
  o.attention.heads = 2;
  o.attention.causal = true;
  o.attention.gate = nn::GateKind::linear_per_head;
  o.attention.gate_pi_init = 0.25;
  o.ffn = 12;
  o.activation = nn::Activation::relu;
  o.pre_layer_norm = true;
  o.layer_norm_eps = 1e-5;
  o.hidden_dropout = 0.0f;
  return o;
}

Tensor mask_tensor(const std::vector<uint8_t>& key_ok, int64_t B, int64_t T) {
  return key_ok.empty() ? Tensor() : ops::from_vector(key_ok, {B, T});
}

// Runs the module and the reference on the same f64 values and compares the output and every
// gradient; returns the largest deviation seen.
double compare_with_reference(const nn::BlockOptions& options, const std::vector<uint8_t>& key_ok,
                              const ReferenceDropout& drop, bool train, unsigned seed) {
  const int64_t B = 2, T = 5, d = options.attention.hidden;
  auto state = std::make_shared<nn::DropoutState>();
  state->seed = drop.seed;
  state->step = drop.step;
  nn::InitRng rng{seed};
  nn::TransformerBlock block(options, state, rng);
  block.train(train);
  randomize_layer_norms(block, seed + 10);
  convert_parameters_to_f64(block, "attention.query.weight", 3.0);
  Parameters reference = reference_parameters(block);

  Tensor h = random_tensor({B, T, d}, DType::f64, seed + 20);
  h.set_requires_grad(true);
  Tensor h_reference = ops::mul_scalar(h.detach(), 1.0);
  h_reference.set_requires_grad(true);
  const Tensor upstream = random_tensor({B, T, d}, DType::f64, seed + 21);

  const Tensor out = block.forward(h, mask_tensor(key_ok, B, T));
  const Tensor expected = reference_block(h_reference, key_ok, options, reference, drop);
  backward(out, upstream);
  backward(expected, upstream);

  double worst = ops::max_abs_diff(out, expected);
  CHECK(ops::allclose(out, expected, 1e-9, 1e-10));
  CHECK(ops::allclose(h.grad(), h_reference.grad(), 1e-9, 1e-10));
  worst = std::max(worst, ops::max_abs_diff(h.grad(), h_reference.grad()));
  for (const auto& [name, parameter] : block.named_parameters()) {
    INFO("parameter ", name);
    REQUIRE(parameter.grad().defined());
    CHECK(ops::allclose(parameter.grad(), reference.at(name).grad(), 1e-9, 1e-10));
    worst = std::max(worst, ops::max_abs_diff(parameter.grad(), reference.at(name).grad()));
  }
  return worst;
}

}  // namespace

TEST_CASE("TransformerBlock: parameter names, shapes and order (HF order, both block types)") {
  for (const bool pre : {false, true}) {
    nn::BlockOptions o = pre ? opt_options() : bert_options();
    nn::InitRng rng{5};
    nn::TransformerBlock block(o, std::make_shared<nn::DropoutState>(), rng);
    std::vector<std::pair<std::string, Shape>> expected = {
        {"attention.query.weight", {8, 8}},  {"attention.query.bias", {8}},
        {"attention.key.weight", {8, 8}},    {"attention.key.bias", {8}},
        {"attention.value.weight", {8, 8}},  {"attention.value.bias", {8}},
        {"attention.output.weight", {8, 8}}, {"attention.output.bias", {8}}};
    if (pre) {  // the OPT options have a per-head linear gate
      expected.push_back({"attention.gate.weight", {2, 4}});
      expected.push_back({"attention.gate.bias", {2}});
    }
    for (const auto& entry :
         std::vector<std::pair<std::string, Shape>>{{"attention_layer_norm.weight", {8}},
                                                    {"attention_layer_norm.bias", {8}},
                                                    {"ffn_in.weight", {12, 8}},
                                                    {"ffn_in.bias", {12}},
                                                    {"ffn_out.weight", {8, 12}},
                                                    {"ffn_out.bias", {8}},
                                                    {"output_layer_norm.weight", {8}},
                                                    {"output_layer_norm.bias", {8}}})
      expected.push_back(entry);
    const nn::NamedTensors named = block.named_parameters();
    REQUIRE(named.size() == expected.size());
    for (size_t i = 0; i < named.size(); ++i) {
      CHECK(named[i].first == expected[i].first);
      CHECK(named[i].second.shape() == expected[i].second);
      CHECK(named[i].second.requires_grad());
    }
    // The members are the registered tensors.
    CHECK(block.ffn_layer_norm->weight.is_same(named[named.size() - 2].second));
    CHECK(block.ffn_in->weight.is_same(named[named.size() - 6].second));
    // LayerNorms start at (1, 0) with the configured eps; the FFN has PyTorch's default init bound.
    CHECK(block.attention_layer_norm->eps == o.layer_norm_eps);
    CHECK(block.ffn_layer_norm->eps == o.layer_norm_eps);
    CHECK(ops::allclose(block.attention_layer_norm->weight, ops::ones({8})));
    CHECK(ops::allclose(block.ffn_layer_norm->bias, ops::zeros({8})));
    for (const double value : elements(block.ffn_out->weight))
      CHECK(std::abs(value) <= 1.0 / std::sqrt(12.0));
    // No buffers, and the dropouts carry no parameters.
    CHECK(block.named_buffers().empty());
  }
}

TEST_CASE("TransformerBlock: equals a reference composed from qt ops (f64, both attention paths)") {
  // Post-LN BERT (GELU, clipped softmax, padding) and pre-LN OPT (ReLU, causal, gate), eval mode.
  const std::vector<uint8_t> padding = {1, 1, 1, 1, 0, 1, 1, 1, 0, 0};
  double worst = 0;
  for (const bool fused : {true, false}) {
    nn::BlockOptions bert = bert_options();
    bert.attention.fused = fused;
    worst = std::max(worst, compare_with_reference(bert, padding, {}, false, 11));
    nn::BlockOptions opt = opt_options();
    opt.attention.fused = fused;
    worst = std::max(worst, compare_with_reference(opt, {}, {}, false, 12));
    // ViT-style: pre-LN with GELU, vanilla bidirectional attention.
    nn::BlockOptions vit = opt_options();
    vit.attention.causal = false;
    vit.attention.gate = nn::GateKind::none;
    vit.activation = nn::Activation::gelu;
    vit.layer_norm_eps = 1e-6;
    vit.attention.fused = fused;
    worst = std::max(worst, compare_with_reference(vit, padding, {}, false, 13));
  }
  QTLAB_NOTE("largest deviation from the composed reference (f64): ", worst);
}

TEST_CASE("TransformerBlock: train-mode dropout at the documented sites and layer ids") {
  // Hidden dropout after the attention output (id L) and after the FFN output (id L + 1);
  // attention-probability dropout with id L + 2; masks keyed by (seed, id, step).
  ReferenceDropout drop;
  drop.hidden = 0.3f;
  drop.probabilities = 0.2f;
  drop.seed = 77;
  drop.step = 5;
  drop.first_layer_id = 32;
  for (const bool pre : {false, true}) {
    for (const bool fused : {true, false}) {
      nn::BlockOptions o = pre ? opt_options() : bert_options();
      o.hidden_dropout = drop.hidden;
      o.attention.probability_dropout = drop.probabilities;
      o.attention.dropout_layer_id = 999;  // overridden by the block
      o.dropout_layer_id = drop.first_layer_id;
      o.attention.fused = fused;
      compare_with_reference(o, {}, drop, true, 21);
    }
  }
  // The ids the block hands out.
  nn::BlockOptions o = bert_options();
  o.dropout_layer_id = 48;
  nn::InitRng rng{1};
  nn::TransformerBlock block(o, std::make_shared<nn::DropoutState>(), rng);
  CHECK(block.attention_output_dropout->layer_id == 48);
  CHECK(block.ffn_output_dropout->layer_id == 49);
  CHECK(block.attention->options.dropout_layer_id == 50);
  CHECK(nn::kBlockDropoutLayerIds == 3);
}

TEST_CASE("TransformerBlock: eval() switches every dropout off; train output depends on step") {
  nn::BlockOptions o = opt_options();
  o.hidden_dropout = 0.5f;
  o.attention.probability_dropout = 0.5f;
  auto state = std::make_shared<nn::DropoutState>();
  state->seed = 3;
  nn::InitRng rng{2};
  nn::TransformerBlock block(o, state, rng);
  const Tensor h = random_tensor({2, 5, 8}, DType::f32, 4);
  NoGradGuard no_grad;
  block.train();
  const Tensor train_step0 = block.forward(h);
  CHECK(ops::allclose(block.forward(h), train_step0, 0, 0));  // same (seed, step): same masks
  state->step = 1;
  CHECK_FALSE(ops::allclose(block.forward(h), train_step0));
  // Eval equals the reference without any dropout (computed on a dropout-free twin block).
  block.eval();
  const Tensor evaluated = block.forward(h);
  nn::BlockOptions no_dropout = o;
  no_dropout.hidden_dropout = 0.0f;
  no_dropout.attention.probability_dropout = 0.0f;
  nn::InitRng same_rng{2};
  nn::TransformerBlock twin(no_dropout, nullptr, same_rng);  // same init draws
  twin.train();                                              // train mode, but every rate is 0
  CHECK(ops::allclose(evaluated, twin.forward(h), 0, 0));
}

TEST_CASE("TransformerBlock: gradcheck (f64) w.r.t. h and every parameter, both block types") {
  const std::vector<uint8_t> padding = {1, 1, 1, 1, 1, 0};
  for (const bool pre : {false, true}) {
    nn::BlockOptions o = pre ? opt_options() : bert_options();
    o.attention.hidden = 4;
    o.ffn = 6;
    o.layer_norm_eps = 1e-5;  // finite differences through LN need var + eps well above eps^2
    nn::InitRng rng{31};
    nn::TransformerBlock block(o, nullptr, rng);
    randomize_layer_norms(block, 40);
    convert_parameters_to_f64(block, "attention.query.weight", 2.0);
    Tensor h = random_tensor({2, 3, 4}, DType::f64, 41);
    h.set_requires_grad(true);
    std::vector<Tensor> inputs = {h};
    for (const auto& [name, parameter] : block.named_parameters()) inputs.push_back(parameter);
    const Tensor mask = pre ? Tensor() : mask_tensor(padding, 2, 3);
    const GradcheckResult result = gradcheck(
        [&](const std::vector<Tensor>& in) { return block.forward(in[0], mask); }, inputs);
    INFO(result.message);
    CHECK(result.ok);
  }
}

TEST_CASE("TransformerBlock: bad options and inputs throw naming the problem") {
  nn::InitRng rng{1};
  nn::BlockOptions o = bert_options();
  nn::TransformerBlock block(o, nullptr, rng);
  CHECK_THROWS_WITH_AS(block.forward(ops::zeros({2, 5, 6})),
                       doctest::Contains("TransformerBlock: input must be [B, T, 8]"), Error);
  CHECK_THROWS_WITH_AS(block.forward(ops::zeros({5, 8})), doctest::Contains("[5, 8]"), Error);
  CHECK_THROWS_WITH_AS(block.forward(Tensor()), doctest::Contains("TransformerBlock"), Error);

  nn::BlockOptions no_ffn = o;
  no_ffn.ffn = 0;
  CHECK_THROWS_WITH_AS(nn::TransformerBlock(no_ffn, nullptr, rng), doctest::Contains("FFN width 0"),
                       Error);
  nn::BlockOptions bad_dropout = o;
  bad_dropout.hidden_dropout = 1.0f;
  CHECK_THROWS_WITH_AS(nn::TransformerBlock(bad_dropout, std::make_shared<nn::DropoutState>(), rng),
                       doctest::Contains("hidden_dropout"), Error);
  nn::BlockOptions needs_state = o;
  needs_state.hidden_dropout = 0.1f;
  CHECK_THROWS_WITH_AS(nn::TransformerBlock(needs_state, nullptr, rng),
                       doctest::Contains("need a DropoutState"), Error);
  nn::BlockOptions bad_heads = o;
  bad_heads.attention.heads = 3;
  CHECK_THROWS_AS(nn::TransformerBlock(bad_heads, nullptr, rng), Error);
}
