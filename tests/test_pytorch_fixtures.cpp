// Golden tests against PyTorch: every fixture in tests/data (written by tools/make_fixtures.py with
// torch 1.13, see docs/fixtures.md) holds a module's inputs, weights, outputs and gradients. Each
// test builds the qtlab module, copies the weights in by qtlab parameter name, runs forward and
// backward with the fixture's upstream gradient, and compares the output, dL/d(input) and
// dL/d(every parameter). The fixtures are the float32-rounded float64 answers of PyTorch, so the
// deviations measured here are qtlab's own float32 error. Attention and blocks run through both the
// fused and the composed attention path. The AdamW fixture replays five torch.optim.AdamW steps
// with clip_grad_norm_.
#include <doctest/doctest.h>
#include <fmt/format.h>

#include <algorithm>
#include <map>
#include <memory>
#include <set>
#include <sstream>
#include <string>
#include <vector>

#include "autograd/functions.h"
#include "nn/attention.h"
#include "nn/cross_entropy.h"
#include "nn/layer_norm.h"
#include "nn/transformer_block.h"
#include "optim/adamw.h"
#include "optim/clip_grad.h"
#include "tensor/ops.h"
#include "tensor/safetensors.h"
#include "tests/test_util.h"

using namespace qt;

namespace {

// Tolerance for float32 results against the rounded exact answers: |a - e| <= kAtol + kRtol |e|.
constexpr double kAtol = 1e-5;
constexpr double kRtol = 1e-5;

SafeTensors load_fixture(const std::string& name) {
  return load_safetensors(std::string(QTLAB_TEST_DATA_DIR) + "/" + name + ".safetensors");
}

const std::string& meta(const SafeTensors& fixture, const std::string& key) {
  const auto it = fixture.metadata.find(key);
  REQUIRE_MESSAGE(it != fixture.metadata.end(), "fixture metadata has no '", key, "'");
  return it->second;
}

// The largest deviation seen over a fixture (for the report), with where it occurred.
struct Deviation {
  double worst = 0;
  std::string where;
  void update(double value, const std::string& what) {
    if (value > worst) worst = value, where = what;
  }
};

// Checks actual ~= expected (shapes equal, elementwise tolerance) and records the deviation.
void expect_close(const Tensor& actual, const Tensor& expected, const std::string& what,
                  Deviation& deviation, double atol = kAtol, double rtol = kRtol) {
  INFO(what);
  REQUIRE(actual.defined());
  REQUIRE(actual.shape() == expected.shape());
  const double difference = ops::max_abs_diff(actual, expected);
  deviation.update(difference, what);
  CHECK_MESSAGE(ops::allclose(actual, expected, rtol, atol), what, ": max |difference| ",
                difference);
}

// Copies every "param.<name>" of the fixture into the module's parameter <name>, and checks that
// the fixture has no parameter the module lacks (a naming mismatch would otherwise go unnoticed).
void load_parameters(const nn::Module& module, const SafeTensors& fixture) {
  std::set<std::string> module_names;
  for (const auto& [name, parameter] : module.named_parameters()) {
    module_names.insert(name);
    REQUIRE_MESSAGE(fixture.contains("param." + name), "fixture lacks param.", name);
    ops::copy_into(parameter, fixture.get("param." + name));
  }
  for (const auto& [name, tensor] : fixture.tensors)
    if (name.rfind("param.", 0) == 0)
      CHECK_MESSAGE(module_names.count(name.substr(6)) == 1, "module has no parameter ",
                    name.substr(6));
}

// Compares dL/d(parameter) with the fixture's "grad.param.<name>" for every parameter.
void expect_parameter_gradients(const nn::Module& module, const SafeTensors& fixture,
                                Deviation& deviation) {
  for (const auto& [name, parameter] : module.named_parameters())
    expect_close(parameter.grad(), fixture.get("grad.param." + name), "grad of " + name, deviation);
}

// The fixture writer's gate names are qtlab's GateKind enumerator names.
nn::GateKind gate_kind(const std::string& name) {
  if (name == "none") return nn::GateKind::none;
  if (name == "linear_per_head") return nn::GateKind::linear_per_head;
  if (name == "mlp_per_head") return nn::GateKind::mlp_per_head;
  if (name == "all_heads_linear") return nn::GateKind::all_heads_linear;
  if (name == "unconditional_per_head") return nn::GateKind::unconditional_per_head;
  if (name == "conditional_per_head") return nn::GateKind::conditional_per_head;
  FAIL("unknown gate kind in fixture: ", name);
  return nn::GateKind::none;
}

nn::AttentionOptions attention_options(const SafeTensors& fixture, bool fused) {
  nn::AttentionOptions o;
  o.hidden = std::stoll(meta(fixture, "hidden"));
  o.heads = std::stoll(meta(fixture, "heads"));
  const nn::SoftmaxKind softmax = nn::parse_softmax_kind(meta(fixture, "softmax"));
  const auto per_row = fixture.metadata.find("alpha_per_row");  // fixtures since issue 15
  o.softmax = nn::resolve_softmax_clip(
      softmax, std::stod(meta(fixture, "gamma")), std::stod(meta(fixture, "zeta")),
      std::stod(meta(fixture, "alpha")), std::stoll(meta(fixture, "max_length")),
      per_row != fixture.metadata.end() && per_row->second == "1");
  o.sink = nn::attention_sink_of(softmax);
  o.gate = gate_kind(meta(fixture, "gate"));
  o.gate_pi_init = std::stod(meta(fixture, "gate_pi_init"));
  o.gate_mlp_hidden = std::stoll(meta(fixture, "gate_mlp_hidden"));
  o.causal = meta(fixture, "causal") == "1";
  o.probability_dropout = 0.0f;
  o.fused = fused;
  return o;
}

// Forward with the fixture input (and key padding mask if present), backward with its upstream
// gradient; compares the output, dL/d(input) and every parameter gradient.
template <typename M>
Deviation check_module_against_fixture(const M& module, const SafeTensors& fixture) {
  Deviation deviation;
  load_parameters(module, fixture);
  Tensor input = ops::clone(fixture.get("input"));
  input.set_requires_grad(true);
  const Tensor mask =
      fixture.contains("key_padding_mask") ? fixture.get("key_padding_mask") : Tensor();
  const Tensor output = module.forward(input, mask);
  expect_close(output, fixture.get("output"), "output", deviation);
  backward(output, fixture.get("grad_output"));
  expect_close(input.grad(), fixture.get("grad.input"), "grad of input", deviation);
  expect_parameter_gradients(module, fixture, deviation);
  return deviation;
}

// One line per fixture and path, printed once per test case (the measured deviations).
struct Report {
  std::string lines;
  void add(const std::string& fixture, const std::string& path, const Deviation& deviation) {
    lines += fmt::format("\n  {:<40} {:<9} max |qtlab - PyTorch| = {:.3g}  ({})", fixture, path,
                         deviation.worst, deviation.where);
  }
};

const std::vector<std::string> kAttentionFixtures = {
    "attention_vanilla",
    "attention_clipped_m0.025_1",
    "attention_clipped_m0.1_1.1",
    "attention_alpha",
    "attention_gate_linear_per_head",
    "attention_gate_mlp_per_head",
    "attention_gate_all_heads_linear",
    "attention_gate_unconditional_per_head",
    "attention_gate_conditional_per_head",
    "attention_causal",
    "attention_padding",
    "attention_combined",
    "attention_softmax1",
    "attention_sink",
    "attention_sink_causal_padding",
    "attention_per_row_gamma",
};

const std::vector<std::string> kBlockFixtures = {
    "block_bert_post_ln",
    "block_opt_pre_ln",
    "block_vit_pre_ln",
};

}  // namespace

TEST_CASE("PyTorch fixtures: LayerNorm (torch.nn.LayerNorm, eps 1e-5)") {
  const SafeTensors fixture = load_fixture("layer_norm");
  nn::LayerNorm layer_norm(fixture.get("param.weight").shape()[0], std::stod(meta(fixture, "eps")));
  Deviation deviation;
  load_parameters(layer_norm, fixture);
  Tensor input = ops::clone(fixture.get("input"));
  input.set_requires_grad(true);
  const Tensor output = layer_norm.forward(input);
  expect_close(output, fixture.get("output"), "output", deviation);
  backward(output, fixture.get("grad_output"));
  expect_close(input.grad(), fixture.get("grad.input"), "grad of input", deviation);
  expect_parameter_gradients(layer_norm, fixture, deviation);
  Report report;
  report.add("layer_norm", "fused", deviation);
  QTLAB_NOTE(report.lines);
}

TEST_CASE("PyTorch fixtures: GELU (exact erf form)") {
  const SafeTensors fixture = load_fixture("gelu");
  Deviation deviation;
  Tensor input = ops::clone(fixture.get("input"));
  input.set_requires_grad(true);
  const Tensor output = qt::gelu(input);
  expect_close(output, fixture.get("output"), "output", deviation);
  backward(output, fixture.get("grad_output"));
  expect_close(input.grad(), fixture.get("grad.input"), "grad of input", deviation);
  Report report;
  report.add("gelu", "qt::gelu", deviation);
  QTLAB_NOTE(report.lines);
}

TEST_CASE("PyTorch fixtures: cross-entropy with ignore_index and label smoothing") {
  Report report;
  for (const std::string name : {"cross_entropy", "cross_entropy_smoothing"}) {
    INFO(name);
    const SafeTensors fixture = load_fixture(name);
    Deviation deviation;
    Tensor logits = ops::clone(fixture.get("logits"));
    logits.set_requires_grad(true);
    const Tensor loss =
        nn::cross_entropy(logits, fixture.get("target"), std::stoll(meta(fixture, "ignore_index")),
                          std::stod(meta(fixture, "label_smoothing")));
    expect_close(loss, fixture.get("output"), "loss", deviation);
    backward(loss, fixture.get("grad_output"));
    expect_close(logits.grad(), fixture.get("grad.logits"), "grad of logits", deviation);
    report.add(name, "fused", deviation);
  }
  QTLAB_NOTE(report.lines);
}

TEST_CASE("PyTorch fixtures: attention, every variant, fused and composed paths") {
  Report report;
  for (const std::string& name : kAttentionFixtures) {
    const SafeTensors fixture = load_fixture(name);
    REQUIRE(meta(fixture, "module") == "attention");
    for (const bool fused : {true, false}) {
      INFO(name, std::string(fused ? " (fused)" : " (composed)"));
      nn::InitRng rng{1};
      nn::Attention attention(attention_options(fixture, fused), nullptr, rng);
      const Deviation deviation = check_module_against_fixture(attention, fixture);
      report.add(name, fused ? "fused" : "composed", deviation);
    }
  }
  QTLAB_NOTE(report.lines);
}

TEST_CASE("PyTorch fixtures: transformer blocks (post-LN BERT, pre-LN OPT, pre-LN ViT)") {
  Report report;
  for (const std::string& name : kBlockFixtures) {
    const SafeTensors fixture = load_fixture(name);
    REQUIRE(meta(fixture, "module") == "transformer_block");
    for (const bool fused : {true, false}) {
      INFO(name, std::string(fused ? " (fused)" : " (composed)"));
      nn::BlockOptions options;
      options.attention = attention_options(fixture, fused);
      options.ffn = std::stoll(meta(fixture, "ffn"));
      options.activation =
          meta(fixture, "activation") == "relu" ? nn::Activation::relu : nn::Activation::gelu;
      options.pre_layer_norm = meta(fixture, "pre_layer_norm") == "1";
      options.layer_norm_eps = std::stod(meta(fixture, "layer_norm_eps"));
      options.hidden_dropout = 0.0f;
      nn::InitRng rng{1};
      nn::TransformerBlock block(options, nullptr, rng);
      const Deviation deviation = check_module_against_fixture(block, fixture);
      report.add(name, fused ? "fused" : "composed", deviation);
    }
  }
  QTLAB_NOTE(report.lines);
}

TEST_CASE("PyTorch fixtures: five AdamW steps with clip_grad_norm_ (torch.optim.AdamW)") {
  const SafeTensors fixture = load_fixture("adamw_clip");
  // Parameters w1, w2 (weight decay) and b1 (none), starting from the fixture's initial values.
  std::map<std::string, Tensor> parameters;
  for (const std::string name : {"w1", "b1", "w2"}) {
    parameters[name] = ops::clone(fixture.get("param.initial." + name));
    parameters[name].set_requires_grad(true);
  }
  const double weight_decay = std::stod(meta(fixture, "weight_decay"));
  std::vector<optim::ParameterGroup> groups(2);
  groups[0].names = {"w1", "w2"};
  groups[0].parameters = {parameters["w1"], parameters["w2"]};
  groups[0].weight_decay = weight_decay;
  groups[1].names = {"b1"};
  groups[1].parameters = {parameters["b1"]};
  groups[1].weight_decay = 0.0;
  optim::AdamWOptions adamw_options;
  adamw_options.beta1 = std::stod(meta(fixture, "beta1"));
  adamw_options.beta2 = std::stod(meta(fixture, "beta2"));
  adamw_options.eps = std::stod(meta(fixture, "eps"));
  optim::AdamW optimizer(groups, adamw_options);
  const double max_norm = std::stod(meta(fixture, "max_norm"));

  std::vector<double> learning_rates;
  std::stringstream lr_list(meta(fixture, "lr"));
  for (std::string item; std::getline(lr_list, item, ',');)
    learning_rates.push_back(std::stod(item));
  const int64_t steps = std::stoll(meta(fixture, "steps"));
  REQUIRE(static_cast<int64_t>(learning_rates.size()) == steps);
  const Tensor expected_norms = fixture.get("grad_norm");

  Deviation deviation;
  double worst_norm_error = 0;
  for (int64_t step = 1; step <= steps; ++step) {
    const std::string prefix = "step" + std::to_string(step) + ".";
    for (auto& [name, parameter] : parameters) {
      // A parameter without a gradient in this step (w2 at step 3) must be skipped.
      const std::string grad_name = "grad." + prefix + name;
      parameter.set_grad(fixture.contains(grad_name) ? ops::clone(fixture.get(grad_name))
                                                     : Tensor());
    }
    const double norm = optim::clip_grad_norm(optim::all_parameters(optimizer.groups()), max_norm);
    const double expected_norm = expected_norms.at({step - 1});
    worst_norm_error = std::max(worst_norm_error, std::abs(norm - expected_norm) / expected_norm);
    CHECK(norm == doctest::Approx(expected_norm).epsilon(1e-6));
    optimizer.step(learning_rates[static_cast<size_t>(step - 1)]);
    for (const auto& [name, parameter] : parameters)
      expect_close(parameter, fixture.get("param." + prefix + name), "step " + prefix + name,
                   deviation, 1e-6, 1e-6);
  }
  // w2 got no gradient at step 3: PyTorch neither moved it nor advanced its step count.
  CHECK(optimizer.state("w1").step == steps);
  CHECK(optimizer.state("w2").step == steps - 1);
  QTLAB_NOTE("adamw_clip: max |qtlab - PyTorch| over 5 steps = ", deviation.worst, " (",
             deviation.where, "); max relative grad-norm error = ", worst_norm_error,
             "; clipped steps: ", meta(fixture, "clipped_steps"));
}
