// Whole-model tests for models/ (BERT, OPT, ViT; method.md §3):
//   * golden fixtures from an independent plain-PyTorch re-statement of the three architectures
//     (tools/make_model_fixtures.py): loss, logits and every parameter's gradient, with the weights
//     copied in by qtlab parameter name (every name must match both ways);
//   * the parameter count against the closed-form count of each family;
//   * the initialisation statistics of method.md §3 on mid-size models;
//   * OPT causality and BERT key padding, as bit-identical invariances;
//   * bad inputs throwing qt::Error that names the problem;
//   * loss and gradients bit-identical with 1 and 2 threads.
#include <doctest/doctest.h>

#include <cmath>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <set>
#include <string>
#include <vector>

#include "autograd/engine.h"
#include "models/bert.h"
#include "models/config.h"
#include "models/model.h"
#include "models/opt.h"
#include "models/vit.h"
#include "tensor/blas/gemm.h"
#include "tensor/compare.h"
#include "tensor/create.h"
#include "tensor/elementwise.h"
#include "tensor/error.h"
#include "tensor/safetensors.h"
#include "tensor/threads.h"
#include "tensor/view.h"
#include "test_util.h"

using namespace qt;
using qt::models::Batch;
using qt::models::ModelConfig;

namespace {

// ---------------------------------------------------------------------------------------------
// Helpers

// The message of the qt::Error `action` throws ("" if it throws nothing, which fails the check).
template <typename F>
std::string error_message(F&& action) {
  try {
    action();
  } catch (const Error& e) {
    return e.what();
  }
  FAIL_CHECK("expected a qt::Error");
  return "";
}

bool contains(const std::string& text, const std::string& part) {
  return text.find(part) != std::string::npos;
}

// Bitwise equality of two f32 tensors of the same shape (any layout).
bool bit_identical(const Tensor& a, const Tensor& b) {
  if (a.shape() != b.shape() || a.dtype() != b.dtype()) return false;
  const Tensor x = ops::contiguous(a), y = ops::contiguous(b);
  return std::memcmp(x.data<float>(), y.data<float>(), x.numel() * sizeof(float)) == 0;
}

// Rows [first, first + count) of axis 1 of a [B, T, ...] tensor.
Tensor positions(const Tensor& t, int64_t first, int64_t count) {
  return ops::contiguous(ops::narrow(t, 1, first, count));
}

// A small model config of the given family, dropout off.
ModelConfig small_config(const std::string& family) {
  ModelConfig c;
  c.family = models::parse_family(family);
  c.layers = 2;
  c.hidden = 32;
  c.heads = 2;
  c.ffn = 64;
  c.vocab_size = 64;
  c.max_length = 16;
  c.hidden_dropout = 0.0;
  c.attention_dropout = 0.0;
  c.layer_norm_eps = family == "bert" ? 1e-12 : (family == "opt" ? 1e-5 : 1e-6);
  c.image_size = 8;
  c.patch_size = 4;
  c.channels = 1;
  c.num_classes = 5;
  return c;
}

// ---------------------------------------------------------------------------------------------
// PyTorch fixtures

constexpr double kAtol = 1e-5;  // |qtlab - pytorch| <= kAtol + kRtol |pytorch|
constexpr double kRtol = 1e-4;

void expect_close(const Tensor& actual, const Tensor& expected, const std::string& what,
                  double& worst) {
  INFO(what);
  REQUIRE(actual.defined());
  REQUIRE(actual.shape() == expected.shape());
  const double difference = ops::max_abs_diff(actual, expected);
  worst = std::max(worst, difference);
  CHECK_MESSAGE(ops::allclose(actual, expected, kRtol, kAtol), what, ": max |difference| ",
                difference);
}

// Builds the fixture's model (config from the "model.*" metadata keys), copies the weights in by
// name, and compares loss, logits and every gradient with PyTorch's.
void check_fixture(const std::string& name) {
  INFO("fixture " << name);
  const SafeTensors fixture =
      load_safetensors(std::string(QTLAB_TEST_DATA_DIR) + "/" + name + ".safetensors");
  models::RunConfig run;
  for (const auto& [key, value] : fixture.metadata)
    if (key.rfind("model.", 0) == 0) models::set_value(run, key, value);
  const auto model = models::build_model(run.model, 7);
  model->eval();

  // Names must match both ways: every model parameter is in the fixture, with its shape, and
  // every fixture parameter exists in the model.
  std::set<std::string> model_names;
  for (const auto& [parameter_name, parameter] : model->named_parameters()) {
    model_names.insert(parameter_name);
    REQUIRE_MESSAGE(fixture.contains("param." + parameter_name), "fixture lacks param.",
                    parameter_name);
    const Tensor& value = fixture.get("param." + parameter_name);
    REQUIRE_MESSAGE(value.shape() == parameter.shape(), parameter_name, ": model ",
                    shape_str(parameter.shape()), " vs fixture ", shape_str(value.shape()));
    ops::copy_into(parameter, value);
  }
  int64_t fixture_parameters = 0;
  for (const auto& [tensor_name, tensor] : fixture.tensors) {
    if (tensor_name.rfind("param.", 0) != 0) continue;
    ++fixture_parameters;
    CHECK_MESSAGE(model_names.count(tensor_name.substr(6)) == 1, "model has no parameter ",
                  tensor_name.substr(6));
  }
  CHECK(fixture_parameters == static_cast<int64_t>(model_names.size()));

  Batch batch;
  if (run.model.family == models::Family::vit) {
    batch.images = fixture.get("images");
  } else {
    batch.input_ids = fixture.get("input_ids");
  }
  batch.labels = fixture.get("labels");

  double worst = 0;
  model->zero_grad();
  const Tensor loss = model->loss(batch);
  REQUIRE(loss.numel() == 1);
  expect_close(ops::reshape(loss, {1}), fixture.get("loss"), "loss", worst);
  backward(loss);
  for (const auto& [parameter_name, parameter] : model->named_parameters())
    expect_close(parameter.grad(), fixture.get("grad.param." + parameter_name),
                 "grad of " + parameter_name, worst);
  expect_close(model->logits(batch), fixture.get("logits"), "logits", worst);
  if (std::getenv("QTLAB_PRINT_DEVIATIONS")) MESSAGE(name, ": largest |qtlab - pytorch| = ", worst);
}

TEST_CASE("test_models: BERT vanilla matches PyTorch") {
  check_fixture("model_bert_vanilla");
}
TEST_CASE("test_models: BERT clipped softmax (gamma = -0.1) matches PyTorch") {
  check_fixture("model_bert_clipped");
}
TEST_CASE("test_models: BERT gated attention (linear per head) matches PyTorch") {
  check_fixture("model_bert_gated");
}
TEST_CASE("test_models: OPT vanilla (causal) matches PyTorch") {
  check_fixture("model_opt_vanilla");
}
TEST_CASE("test_models: OPT gated attention matches PyTorch") {
  check_fixture("model_opt_gated");
}
TEST_CASE("test_models: OPT alpha parameterisation (gamma = -alpha / max_length) matches PyTorch") {
  check_fixture("model_opt_alpha");
}
TEST_CASE("test_models: ViT without patch LayerNorm matches PyTorch") {
  check_fixture("model_vit");
}
TEST_CASE("test_models: ViT with patch LayerNorm matches PyTorch") {
  check_fixture("model_vit_patch_layer_norm");
}

// ---------------------------------------------------------------------------------------------
// Parameter count

// Parameters of one attention gate (method.md §2.2; paper Table 4 overheads).
int64_t gate_parameter_count(const ModelConfig& c) {
  const int64_t H = c.heads, d = c.hidden, dh = c.hidden / c.heads;
  if (c.gate == nn::GateKind::none) return 0;
  if (c.gate == nn::GateKind::linear_per_head || c.gate == nn::GateKind::conditional_per_head)
    return H * (dh + 1);
  if (c.gate == nn::GateKind::mlp_per_head) {
    const int64_t n = c.gate_mlp_hidden > 0 ? c.gate_mlp_hidden : dh / 4;
    return H * (n * dh + n + n + 1);  // Linear(d_h -> n) and Linear(n -> 1), both with bias
  }
  if (c.gate == nn::GateKind::all_heads_linear) return H * (d + 1);
  if (c.gate == nn::GateKind::unconditional_per_head) return H;
  FAIL("unknown gate ", nn::gate_kind_name(c.gate));
  return 0;
}

// Closed-form parameter count of one model (method.md §3).
int64_t closed_form_count(const ModelConfig& c) {
  const int64_t d = c.hidden, f = c.ffn, V = c.vocab_size, L = c.layers;
  // Q, K, V, O (d x d + d each), two LayerNorms (2d each), FFN d -> f -> d, the gate.
  const int64_t block =
      4 * (d * d + d) + 2 * (2 * d) + (d * f + f) + (f * d + d) + gate_parameter_count(c);
  if (c.family ==
      models::Family::bert)  // word + position embeddings, embedding LN, blocks, MLM head
    return V * d + c.max_length * d + 2 * d + L * block + (d * d + d) + 2 * d + V;
  if (c.family ==
      models::Family::opt)  // token + position embeddings (2 extra rows), blocks, final LN
    return V * d + (c.max_length + 2) * d + L * block + 2 * d;
  const int64_t patches = (c.image_size / c.patch_size) * (c.image_size / c.patch_size);
  const int64_t patch_dim = c.patch_size * c.patch_size * c.channels;
  return (patch_dim * d + d) + (c.patch_layer_norm ? 2 * d : 0) + d + (patches + 1) * d +
         L * block + 2 * d + (d * c.num_classes + c.num_classes);
}

TEST_CASE("test_models: parameter count equals the closed form for every family and gate") {
  for (const std::string family : {"bert", "opt", "vit"}) {
    for (const std::string gate :
         {"none", "linear", "mlp", "all-heads-linear", "unconditional", "conditional-per-head"}) {
      ModelConfig c = small_config(family);
      c.layers = 3;
      c.ffn = 48;
      c.gate = nn::parse_gate_kind(gate);
      c.patch_layer_norm = gate == "mlp";  // ViT both with and without the patch LN
      INFO(family << " gate " << gate);
      const auto model = models::build_model(c, 1);
      CHECK(model->parameter_count() == closed_form_count(c));
    }
  }
  // BERT-base as a sanity check of the formula itself: about 109M parameters (method.md §3.1), of
  // which 1536 are the token-type embeddings qtlab does not model.
  ModelConfig base;
  base.family = models::Family::bert;
  base.layers = 12, base.hidden = 768, base.heads = 12, base.ffn = 3072, base.vocab_size = 30522,
  base.max_length = 512;
  CHECK(closed_form_count(base) + 2 * 768 == 109514298);  // HF BertForMaskedLM, bert-base-uncased
}

// ---------------------------------------------------------------------------------------------
// Initialisation (method.md §3)

struct Moments {
  double mean = 0, std = 0, max_abs = 0;
  int64_t count = 0;
};

Moments moments(const Tensor& t) {
  const std::vector<float> values = ops::to_vector<float>(ops::contiguous(t));
  Moments m;
  m.count = static_cast<int64_t>(values.size());
  for (double v : values) m.mean += v, m.max_abs = std::max(m.max_abs, std::abs(v));
  m.mean /= m.count;
  for (double v : values) m.std += (v - m.mean) * (v - m.mean);
  m.std = std::sqrt(m.std / m.count);
  return m;
}

// Draws from N(0, std^2): the sample mean and std agree with the target within 5 standard errors
// (standard error of the mean std / sqrt(n), of the sample std about std / sqrt(2n)).
void expect_normal(const Tensor& t, double std, const std::string& what) {
  const Moments m = moments(t);
  INFO(what << ": mean " << m.mean << " std " << m.std << " over " << m.count);
  CHECK(std::abs(m.mean) < 5 * std / std::sqrt(m.count));
  CHECK(std::abs(m.std / std - 1) < 5 / std::sqrt(2.0 * m.count));
}

// Draws from PyTorch's default Linear init U(-1/sqrt(fan_in), 1/sqrt(fan_in)): inside the bound,
// with the uniform's std bound / sqrt(3).
void expect_default_uniform(const Tensor& t, int64_t fan_in, const std::string& what) {
  const double bound = 1.0 / std::sqrt(static_cast<double>(fan_in));
  const Moments m = moments(t);
  INFO(what << ": max |w| " << m.max_abs << " std " << m.std << " bound " << bound);
  CHECK(m.max_abs <= bound);
  CHECK(m.max_abs > 0.9 * bound);
  // The sample std of U(-b, b): relative standard error sqrt(0.8 / (4 n)) ~ 0.45 / sqrt(n).
  CHECK(std::abs(m.std / (bound / std::sqrt(3.0)) - 1) < 5 * 0.45 / std::sqrt(m.count));
}

void expect_constant(const Tensor& t, double value, const std::string& what) {
  INFO(what);
  CHECK(ops::allclose(t, ops::full(t.shape(), value), 0.0, 1e-7));
}

ModelConfig mid_size_config(const std::string& family) {
  ModelConfig c = small_config(family);
  c.hidden = 128;
  c.heads = 4;
  c.ffn = 256;
  c.vocab_size = 512;
  c.max_length = 128;
  c.image_size = 32;
  c.channels = 3;
  return c;
}

// The parts every block shares: LayerNorms (1, 0), Q/K/V default uniform, FFN N(0, std) with
// zero bias, and the gate (linear per head: U(+-1/sqrt(d_h)) weight, bias logit(pi_init)).
void expect_block_init(const nn::TransformerBlock& block, const ModelConfig& c,
                       const std::string& prefix) {
  expect_constant(block.attention_layer_norm->weight, 1.0, prefix + "attention LN gamma");
  expect_constant(block.attention_layer_norm->bias, 0.0, prefix + "attention LN beta");
  expect_constant(block.ffn_layer_norm->weight, 1.0, prefix + "output LN gamma");
  expect_constant(block.ffn_layer_norm->bias, 0.0, prefix + "output LN beta");
  for (const auto& [name, linear] :
       {std::pair{"query", block.attention->query}, std::pair{"key", block.attention->key},
        std::pair{"value", block.attention->value}}) {
    expect_default_uniform(linear->weight, c.hidden, prefix + name + ".weight");
    expect_default_uniform(linear->bias, c.hidden, prefix + name + ".bias");
  }
  expect_normal(block.ffn_in->weight, c.init_std, prefix + "ffn_in.weight");
  expect_constant(block.ffn_in->bias, 0.0, prefix + "ffn_in.bias");
  expect_normal(block.ffn_out->weight, c.init_std, prefix + "ffn_out.weight");
  expect_constant(block.ffn_out->bias, 0.0, prefix + "ffn_out.bias");
  if (c.gate == nn::GateKind::linear_per_head) {
    const auto named = block.attention->gate->named_parameters();
    REQUIRE(named.size() == 2);
    expect_default_uniform(named[0].second, c.hidden / c.heads, prefix + "gate.weight");
    // logit(pi) = ln(pi / (1 - pi)), computed here in double (method.md §2.2).
    expect_constant(named[1].second, std::log(c.gate_pi_init / (1 - c.gate_pi_init)),
                    prefix + "gate.bias");
  }
}

TEST_CASE("test_models: BERT initialisation follows HF BERT and the repo's attention (spec 3.1)") {
  ModelConfig c = mid_size_config("bert");
  c.gate = nn::GateKind::linear_per_head;
  c.gate_pi_init = 0.25;
  const models::Bert bert(c, 11);
  expect_normal(bert.word_embeddings->weight, 0.02, "word embeddings");
  expect_normal(bert.position_embeddings->weight, 0.02, "position embeddings");
  expect_constant(bert.embedding_layer_norm->weight, 1.0, "embedding LN gamma");
  expect_constant(bert.embedding_layer_norm->bias, 0.0, "embedding LN beta");
  for (size_t l = 0; l < bert.layers.size(); ++l) {
    const auto& block = *bert.layers[l];
    const std::string prefix = "layer " + std::to_string(l) + " ";
    expect_block_init(block, c, prefix);
    // HF keeps N(0, 0.02) / zero bias on attention.output.dense (only self-attention is replaced).
    expect_normal(block.attention->output->weight, 0.02, prefix + "output.weight");
    expect_constant(block.attention->output->bias, 0.0, prefix + "output.bias");
  }
  expect_normal(bert.head_transform->weight, 0.02, "head transform");
  expect_constant(bert.head_transform->bias, 0.0, "head transform bias");
  expect_constant(bert.head_layer_norm->weight, 1.0, "head LN gamma");
  expect_constant(bert.head_layer_norm->bias, 0.0, "head LN beta");
  expect_constant(bert.head_bias, 0.0, "decoder bias");
  // Every layer draws its own weights.
  CHECK_FALSE(ops::allclose(bert.layers[0]->ffn_in->weight, bert.layers[1]->ffn_in->weight));
  CHECK_FALSE(ops::allclose(bert.layers[0]->attention->query->weight,
                            bert.layers[1]->attention->query->weight));
}

TEST_CASE("test_models: OPT initialisation: N(0, init_std) embeddings and FFN (spec 3.2)") {
  ModelConfig c = mid_size_config("opt");
  c.init_std = 0.006;
  c.gate = nn::GateKind::linear_per_head;
  c.gate_pi_init = 0.25;
  const models::Opt opt(c, 12);
  expect_normal(opt.token_embeddings->weight, 0.006, "token embeddings");
  expect_normal(opt.position_embeddings->weight, 0.006, "position embeddings");
  CHECK(opt.position_embeddings->weight.shape() == Shape{c.max_length + 2, c.hidden});
  for (size_t l = 0; l < opt.layers.size(); ++l) {
    const auto& block = *opt.layers[l];
    const std::string prefix = "layer " + std::to_string(l) + " ";
    expect_block_init(block, c, prefix);
    // The repo's replacement attention module owns out_proj too: default uniform (method.md §3.2).
    expect_default_uniform(block.attention->output->weight, c.hidden, prefix + "out_proj.weight");
  }
  expect_constant(opt.final_layer_norm->weight, 1.0, "final LN gamma");
  expect_constant(opt.final_layer_norm->bias, 0.0, "final LN beta");
}

TEST_CASE("test_models: ViT initialisation (timm-style, spec 3.3)") {
  ModelConfig c = mid_size_config("vit");
  c.patch_layer_norm = true;
  c.gate = nn::GateKind::linear_per_head;
  const models::Vit vit(c, 13);
  const int64_t patch_dim = c.patch_size * c.patch_size * c.channels;
  expect_default_uniform(vit.patch_embedding->weight, patch_dim, "patch embedding");
  expect_constant(vit.patch_layer_norm->weight, 1.0, "patch LN gamma");
  expect_constant(vit.patch_layer_norm->bias, 0.0, "patch LN beta");
  expect_normal(vit.position_embeddings, 0.02, "position embeddings");
  CHECK(vit.position_embeddings.shape() == Shape{1, 65, c.hidden});  // 8 x 8 patches + CLS
  CHECK(moments(vit.cls_token).max_abs > 0);
  for (size_t l = 0; l < vit.layers.size(); ++l)
    expect_block_init(*vit.layers[l], c, "layer " + std::to_string(l) + " ");
  expect_normal(vit.classifier->weight, 0.02, "head");
  expect_constant(vit.classifier->bias, 0.0, "head bias");
  expect_constant(vit.final_layer_norm->weight, 1.0, "final LN gamma");
  // The init_std key applies to ViT too.
  c.init_std = 0.05;
  const models::Vit wider(c, 13);
  expect_normal(wider.position_embeddings, 0.05, "position embeddings at init_std 0.05");
}

TEST_CASE("test_models: the same seed builds the same weights, another seed others") {
  const ModelConfig c = small_config("bert");
  const auto a = models::build_model(c, 5), b = models::build_model(c, 5),
             other = models::build_model(c, 6);
  const auto pa = a->parameters(), pb = b->parameters(), po = other->parameters();
  REQUIRE(pa.size() == pb.size());
  for (size_t i = 0; i < pa.size(); ++i) CHECK(bit_identical(pa[i], pb[i]));
  CHECK_FALSE(bit_identical(pa[0], po[0]));
}

// ---------------------------------------------------------------------------------------------
// Invariances

TEST_CASE("test_models: OPT is causal: changing token t+1 leaves logits at <= t bit-identical") {
  // conditional-per-head is left out on purpose: it averages the gate logits over all T tokens
  // (as the repo does), which lets later tokens influence earlier ones.
  for (const std::string variant : {"vanilla", "linear", "alpha"}) {
    INFO("variant " << variant);
    ModelConfig c = small_config("opt");
    if (variant == "linear") c.gate = nn::GateKind::linear_per_head;
    if (variant == "alpha") c.alpha = 2.0;
    const auto model = models::build_model(c, 21);
    model->eval();
    const int64_t T = 12;
    const Tensor ids = test::random_ids({2, T}, 0, c.vocab_size - 1, 31);
    const Tensor reference = model->logits(Batch{ids, {}, {}});
    for (const int64_t t : {0, 4, 10}) {
      Tensor changed = ops::clone(ids);
      for (int64_t b = 0; b < 2; ++b) {
        int64_t* row = changed.data<int64_t>() + b * T;
        row[t + 1] = (row[t + 1] + 1 + b) % c.vocab_size;
      }
      const Tensor logits = model->logits(Batch{changed, {}, {}});
      CHECK(bit_identical(positions(logits, 0, t + 1), positions(reference, 0, t + 1)));
      // ... while position t+1 itself does see the change (the test can fail).
      CHECK_FALSE(ops::allclose(positions(logits, t + 1, 1), positions(reference, t + 1, 1)));
    }
  }
}

TEST_CASE("test_models: BERT padding: padded keys do not change the outputs at real tokens") {
  for (const std::string softmax : {"vanilla", "clipped"}) {
    INFO("softmax " << softmax);
    ModelConfig c = small_config("bert");
    c.softmax = nn::parse_softmax_kind(softmax);
    c.gamma = softmax == "clipped" ? -0.05 : 0.0;
    models::Bert bert(c, 22);
    bert.eval();
    const int64_t T = 10, real = 7;  // sequence 1 has 3 padded positions at the end
    const Tensor ids = test::random_ids({2, T}, 0, c.vocab_size - 1, 41);
    std::vector<int64_t> mask_values(2 * T, 1);
    for (int64_t t = real; t < T; ++t) mask_values[T + t] = 0;
    const Tensor mask = ops::from_vector(mask_values, {2, T});
    const Tensor reference = bert.encode(ids, mask);

    Tensor changed = ops::clone(ids);
    for (int64_t t = real; t < T; ++t)
      changed.data<int64_t>()[T + t] = (changed.data<int64_t>()[T + t] + 5) % c.vocab_size;
    const Tensor out = bert.encode(changed, mask);
    const auto sequence = [](const Tensor& t, int64_t b) { return ops::narrow(t, 0, b, 1); };
    CHECK(bit_identical(sequence(out, 0), sequence(reference, 0)));
    CHECK(bit_identical(positions(sequence(out, 1), 0, real),
                        positions(sequence(reference, 1), 0, real)));

    // The padded sequence equals the same tokens run alone, unpadded (float rounding aside).
    const Tensor alone = bert.encode(positions(sequence(ids, 1), 0, real));
    CHECK(ops::allclose(positions(sequence(reference, 1), 0, real), alone, 1e-5, 1e-5));

    // Without the mask the padding does change the real tokens' outputs (the check can fail).
    CHECK_FALSE(ops::allclose(positions(bert.encode(changed), 0, real),
                              positions(bert.encode(ids), 0, real)));
    // A mask of the wrong shape is an error naming it.
    CHECK(contains(error_message([&] {
                     bert.encode(ids, ops::ones({2, T + 1}, DType::i64));
                   }),
                   "key_padding_mask"));
  }
}

// ---------------------------------------------------------------------------------------------
// Bad inputs

TEST_CASE("test_models: bad text inputs throw qt::Error naming the problem") {
  for (const std::string family : {"bert", "opt"}) {
    INFO(family);
    const ModelConfig c = small_config(family);
    const auto model = models::build_model(c, 3);
    const Tensor ids = test::random_ids({2, 6}, 0, c.vocab_size - 1, 51);
    const Tensor labels = test::random_ids({2, 6}, 0, c.vocab_size - 1, 52);

    Tensor too_big = ops::clone(ids);
    too_big.data<int64_t>()[7] = c.vocab_size;
    std::string message = error_message([&] { model->loss(Batch{too_big, {}, labels}); });
    CHECK(contains(message, family + ":"));
    CHECK(contains(message, "vocab"));
    CHECK(contains(message, std::to_string(c.vocab_size)));
    Tensor negative = ops::clone(ids);
    negative.data<int64_t>()[0] = -1;
    CHECK(contains(error_message([&] { model->logits(Batch{negative, {}, {}}); }), "vocab"));

    CHECK(contains(error_message([&] {
                     model->loss(Batch{ids, {}, ops::narrow(labels, 1, 0, 5)});
                   }),
                   "labels"));
    CHECK(contains(error_message([&] { model->loss(Batch{ids, {}, {}}); }), "no labels"));
    CHECK(contains(error_message([&] {
                     model->loss(Batch{ids, {}, ops::to(labels, DType::i32)});
                   }),
                   "labels"));
    Tensor bad_label = ops::clone(labels);
    bad_label.data<int64_t>()[3] = c.vocab_size + 4;
    CHECK(contains(error_message([&] { model->loss(Batch{ids, {}, bad_label}); }), "out of range"));

    CHECK(contains(error_message([&] {
                     model->logits(Batch{ops::to(ids, DType::f32), {}, {}});
                   }),
                   "i64"));
    CHECK(contains(error_message([&] {
                     model->logits(Batch{ops::reshape(ids, {12}), {}, {}});
                   }),
                   "[B, T]"));
    const Tensor long_ids = test::random_ids({1, c.max_length + 1}, 0, c.vocab_size - 1, 53);
    CHECK(contains(error_message([&] { model->logits(Batch{long_ids, {}, {}}); }), "max_length"));
    CHECK(contains(error_message([&] { model->logits(Batch{}); }), "no input_ids"));
  }
}

TEST_CASE("test_models: bad image inputs throw qt::Error naming the problem") {
  const ModelConfig c = small_config("vit");  // 8x8 images, 4x4 patches: [B, 4, 16]
  const auto model = models::build_model(c, 4);
  const Tensor images = test::random_tensor({3, 4, 16}, DType::f32, 61);
  const Tensor labels = ops::from_vector(std::vector<int64_t>{0, 4, 2}, {3});
  CHECK(std::isfinite(model->loss(Batch{{}, images, labels}).item()));

  for (const Shape& shape : {Shape{3, 4, 17}, Shape{3, 5, 16}, Shape{3, 64}, Shape{1, 3, 8, 8}}) {
    const Tensor bad = test::random_tensor(shape, DType::f32, 62);
    const std::string message = error_message([&] { model->logits(Batch{{}, bad, {}}); });
    CHECK(contains(message, "vit: images"));
    CHECK(contains(message, shape_str(shape)));
  }
  CHECK(contains(error_message([&] {
                   model->logits(Batch{{}, ops::to(images, DType::f64), {}});
                 }),
                 "f32"));
  CHECK(contains(error_message([&] { model->logits(Batch{}); }), "no images"));
  CHECK(contains(error_message([&] {
                   model->loss(Batch{{}, images, ops::reshape(labels, {3, 1})});
                 }),
                 "labels"));
  CHECK(contains(error_message([&] {
                   model->loss(Batch{{}, images, ops::narrow(labels, 0, 0, 2)});
                 }),
                 "labels must be i64 [B] = [3]"));
  CHECK(contains(error_message([&] { model->loss(Batch{{}, images, {}}); }), "no labels"));
  const Tensor bad_class = ops::from_vector(std::vector<int64_t>{0, 5, 2}, {3});
  CHECK(contains(error_message([&] {
                   model->loss(Batch{{}, images, bad_class});
                 }),
                 "out of range"));
}

TEST_CASE("test_models: an unknown family or a bad ViT geometry is an error") {
  CHECK(
      contains(error_message([&] { models::parse_family("gpt"); }), "unknown model family 'gpt'"));
  ModelConfig c = small_config("vit");
  c.patch_size = 3;
  CHECK(contains(error_message([&] { models::build_model(c, 1); }), "patch_size 3"));
}

// ---------------------------------------------------------------------------------------------
// Threads

// Loss and every gradient after one forward/backward in train mode (dropout on), by name.
std::vector<std::pair<std::string, Tensor>> loss_and_gradients(models::Model& model,
                                                               const Batch& batch) {
  model.train();
  model.zero_grad();
  model.dropout_state->step = 3;
  const Tensor loss = model.loss(batch);
  backward(loss);
  std::vector<std::pair<std::string, Tensor>> out{{"loss", ops::contiguous(loss)}};
  for (const auto& [name, p] : model.named_parameters())
    out.emplace_back("grad of " + name, ops::contiguous(p.grad()));
  return out;
}

TEST_CASE("test_models: loss and gradients are bit-identical with 1 and 2 threads") {
  // OpenBLAS's sgemm is not bit-identical across thread counts on every CPU (tests/test_linear.cpp
  // measured it; the models differ by ~1e-8 with it), so the check runs on the framework's own
  // GEMM, whose results do not depend on the thread count.
  const int saved_threads = num_threads();
  const blas::Backend saved_backend = blas::backend();
  for (const std::string family : {"bert", "opt", "vit"}) {
    INFO(family);
    // Big enough that the kernels' parallel thresholds (2^14..2^16 elements) are crossed: the
    // [B, T, d] activations have 5 * 64 * 128 = 40960 elements, the FFN's four times that.
    ModelConfig c = small_config(family);
    c.layers = 1;  // one block exercises every kernel
    c.hidden = 128;
    c.heads = 4;
    c.ffn = 256;
    c.vocab_size = 128;
    c.max_length = 64;
    c.image_size = 32;  // 64 patches + CLS
    c.hidden_dropout = 0.1;
    c.attention_dropout = 0.1;
    c.gate = nn::GateKind::linear_per_head;
    c.softmax = nn::SoftmaxKind::clipped;
    c.gamma = -0.01;
    const auto model = models::build_model(c, 9);
    Batch batch;
    if (family == "vit") {
      batch.images = test::random_tensor({5, 64, 16}, DType::f32, 71);
      batch.labels = test::random_ids({5}, 0, c.num_classes - 1, 72);
    } else {
      batch.input_ids = test::random_ids({5, 64}, 0, c.vocab_size - 1, 73);
      batch.labels = test::random_ids({5, 64}, 0, c.vocab_size - 1, 74);
      for (int64_t i = 0; i < batch.labels.numel(); i += 3)  // some positions unlabelled
        batch.labels.data<int64_t>()[i] = models::kIgnoreIndex;
    }
    blas::set_backend(blas::Backend::own);
    set_num_threads(1);
    const auto one = loss_and_gradients(*model, batch);
    set_num_threads(2);
    const auto two = loss_and_gradients(*model, batch);
    REQUIRE(one.size() == two.size());
    for (size_t i = 0; i < one.size(); ++i) {
      INFO(one[i].first << ": max |1 thread - 2 threads| "
                        << ops::max_abs_diff(one[i].second, two[i].second));
      CHECK(bit_identical(one[i].second, two[i].second));
    }
  }
  blas::set_backend(saved_backend);
  set_num_threads(saved_threads);
}

}  // namespace
