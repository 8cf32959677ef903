// Tests for nn/module.* (named parameters and buffers, train/eval, parameter_count, zero_grad) and
// nn/activation.h (the GELU/ReLU module wrappers). Truth: the names and counts written out by hand
// for a small nested model shaped like BERT's ("encoder.layer.0.attention.query.weight"), and the
// closed forms of GELU and ReLU evaluated in double.
#include <doctest/doctest.h>

#include <cmath>
#include <memory>
#include <string>
#include <vector>

#include "autograd/functions.h"
#include "nn/activation.h"
#include "nn/module.h"
#include "test_util.h"

using namespace qt;

namespace {

// Leaf: one weight [out, in], one optional bias, one buffer.
struct Leaf : nn::Module {
  Leaf(int64_t in, int64_t out, bool with_bias) {
    weight = register_parameter("weight", ops::ones({out, in}));
    if (with_bias) bias = register_parameter("bias", ops::zeros({out}));
    register_buffer("calls", ops::zeros({1}, DType::i64));
  }
  Tensor weight, bias;
};

struct Attention : nn::Module {
  Attention() {
    query = register_module("query", std::make_shared<Leaf>(4, 4, true));
    key = register_module("key", std::make_shared<Leaf>(4, 4, false));
  }
  std::shared_ptr<Leaf> query, key;
};

struct Layer : nn::Module {
  Layer() {
    attention = register_module("attention", std::make_shared<Attention>());
    output = register_module("output", std::make_shared<Leaf>(4, 2, true));
  }
  std::shared_ptr<Attention> attention;
  std::shared_ptr<Leaf> output;
};

// "encoder.layer.<i>": children named by their index, as PyTorch's ModuleList.
struct LayerList : nn::Module {
  explicit LayerList(int count) {
    for (int i = 0; i < count; ++i)
      layers.push_back(register_module(std::to_string(i), std::make_shared<Layer>()));
  }
  std::vector<std::shared_ptr<Layer>> layers;
};

struct Encoder : nn::Module {
  Encoder() { layer = register_module("layer", std::make_shared<LayerList>(2)); }
  std::shared_ptr<LayerList> layer;
};

struct Model : nn::Module {
  Model() {
    scale = register_parameter("scale", ops::ones({3}));
    encoder = register_module("encoder", std::make_shared<Encoder>());
  }
  Tensor scale;
  std::shared_ptr<Encoder> encoder;
};

// A module that tries to register bad names (register_* are protected).
struct BadNames : nn::Module {
  void add(const std::string& name) { register_parameter(name, ops::ones({1})); }
  void add_buffer(const std::string& name) { register_buffer(name, ops::ones({1})); }
  void add_child(const std::string& name) {
    register_module(name, std::make_shared<Leaf>(1, 1, false));
  }
  void add_integer_parameter() { register_parameter("ids", ops::zeros({2}, DType::i64)); }
};

}  // namespace

TEST_CASE("module: named_parameters gives stable dotted names, depth first in registration order") {
  Model model;
  std::vector<std::string> names;
  for (const auto& [name, tensor] : model.named_parameters()) names.push_back(name);
  const std::vector<std::string> expected = {
      "scale",
      "encoder.layer.0.attention.query.weight",
      "encoder.layer.0.attention.query.bias",
      "encoder.layer.0.attention.key.weight",
      "encoder.layer.0.output.weight",
      "encoder.layer.0.output.bias",
      "encoder.layer.1.attention.query.weight",
      "encoder.layer.1.attention.query.bias",
      "encoder.layer.1.attention.key.weight",
      "encoder.layer.1.output.weight",
      "encoder.layer.1.output.bias",
  };
  CHECK(names == expected);
  // The named tensors are the modules' own handles, not copies.
  const nn::NamedTensors params = model.named_parameters();
  CHECK(params[1].second.is_same(model.encoder->layer->layers[0]->attention->query->weight));
  CHECK(params[10].second.is_same(model.encoder->layer->layers[1]->output->bias));
  for (const auto& [name, tensor] : params) CHECK(tensor.requires_grad());
  CHECK(model.parameters().size() == expected.size());

  std::vector<std::string> buffers;
  for (const auto& [name, tensor] : model.named_buffers()) buffers.push_back(name);
  CHECK(buffers.size() == 6);
  CHECK(buffers.front() == "encoder.layer.0.attention.query.calls");
  CHECK(buffers.back() == "encoder.layer.1.output.calls");
  for (const auto& [name, tensor] : model.named_buffers()) CHECK(!tensor.requires_grad());
}

TEST_CASE("module: parameter_count sums the elements of every parameter") {
  Model model;
  // scale 3; per layer: query 16 + 4, key 16, output 8 + 2 = 46; two layers.
  CHECK(model.parameter_count() == 3 + 2 * 46);
  CHECK(model.encoder->layer->layers[0]->parameter_count() == 46);
}

TEST_CASE("module: train and eval recurse into every child") {
  Model model;
  CHECK(model.is_training());
  model.eval();
  CHECK(!model.is_training());
  CHECK(!model.encoder->is_training());
  CHECK(!model.encoder->layer->layers[1]->attention->key->is_training());
  model.encoder->layer->layers[0]->train();  // a subtree only
  CHECK(model.encoder->layer->layers[0]->output->is_training());
  CHECK(!model.encoder->layer->layers[1]->output->is_training());
  CHECK(!model.is_training());
  model.train();
  CHECK(model.encoder->layer->layers[1]->attention->query->is_training());
}

TEST_CASE("module: zero_grad drops every parameter's gradient") {
  Model model;
  const Tensor& w = model.encoder->layer->layers[1]->attention->query->weight;
  Tensor loss = qt::sum(qt::mul(w, w));
  loss = qt::add(loss, qt::sum(model.scale));
  backward(loss);
  REQUIRE(w.grad().defined());
  CHECK(w.grad().at({0, 0}) == 2.0);  // d(w^2)/dw at w = 1
  REQUIRE(model.scale.grad().defined());
  model.zero_grad();
  for (const auto& [name, tensor] : model.named_parameters()) CHECK(!tensor.grad().defined());
}

TEST_CASE("module: bad or repeated names and non-float parameters throw") {
  BadNames m;
  m.add("weight");
  CHECK_THROWS_WITH_AS(m.add("weight"), doctest::Contains("'weight'"), Error);
  CHECK_THROWS_AS(m.add_buffer("weight"), Error);
  CHECK_THROWS_AS(m.add_child("weight"), Error);
  CHECK_THROWS_AS(m.add(""), Error);
  CHECK_THROWS_WITH_AS(m.add("a.b"), doctest::Contains("'a.b'"), Error);
  CHECK_THROWS_AS(m.add_integer_parameter(), Error);
  m.add_child("child");
  CHECK_THROWS_AS(m.add("child"), Error);
  CHECK(m.named_parameters().size() == 2);  // "weight" and "child.weight"
}

TEST_CASE("activation modules: GELU (erf form) and ReLU match their closed forms") {
  const Tensor x =
      ops::from_vector(std::vector<double>{-3.0, -1.0, -0.5, 0.0, 0.25, 1.0, 2.5}, {7});
  nn::GELU gelu;
  nn::ReLU relu;
  const std::vector<double> g = test::elements(gelu.forward(x)),
                            r = test::elements(relu.forward(x));
  for (size_t i = 0; i < g.size(); ++i) {
    const double v = test::elements(x)[i];
    CHECK(g[i] == doctest::Approx(0.5 * v * (1.0 + std::erf(v / std::sqrt(2.0)))).epsilon(1e-12));
    CHECK(r[i] == (v > 0 ? v : 0.0));
  }
  // GELU(1) = Phi(1) = 0.841344746068543 (standard normal CDF table value).
  CHECK(g[5] == doctest::Approx(0.841344746068543).epsilon(1e-12));
  CHECK(gelu.parameter_count() == 0);
  CHECK(relu.named_parameters().empty());
  // Gradients flow through the wrappers.
  Tensor leaf = ops::from_vector(std::vector<double>{-1.0, 2.0}, {2});
  leaf.set_requires_grad();
  backward(qt::sum(relu.forward(leaf)));
  CHECK(test::elements(leaf.grad()) == std::vector<double>{0.0, 1.0});
}
