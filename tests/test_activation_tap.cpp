// Activation taps (nn/activation_tap.h): module paths, which points a block passes through, that
// the observed values are the block's intermediate results (recomputed independently from its
// parameters with the plain layer functions), and that a tap can replace a value.
#include <doctest/doctest.h>

#include <cmath>
#include <map>
#include <string>
#include <vector>

#include "autograd/functions.h"
#include "nn/activation_tap.h"
#include "nn/attention.h"
#include "nn/layer_norm.h"
#include "nn/linear.h"
#include "nn/transformer_block.h"
#include "tensor/compare.h"
#include "tests/test_util.h"

namespace {

struct Recorder : qt::nn::ActivationTaps {
  std::vector<std::string> order;
  std::map<std::string, qt::Tensor> values;
  std::string replace_point;  // replaced by zeros
  qt::Tensor at(const std::string& point, const qt::Tensor& x) override {
    order.push_back(point);
    values[point] = x.detach();
    if (point == replace_point) return qt::ops::zeros(x.shape());
    return x;
  }
};

class Outer : public qt::nn::Module {
 public:
  explicit Outer(qt::nn::InitRng& rng) {
    qt::nn::BlockOptions o;
    o.attention.hidden = 8;
    o.attention.heads = 2;
    o.attention.probability_dropout = 0;
    o.ffn = 12;
    o.hidden_dropout = 0;
    block = register_module("block", std::make_shared<qt::nn::TransformerBlock>(o, nullptr, rng));
  }
  std::shared_ptr<qt::nn::TransformerBlock> block;
};

double max_difference(const qt::Tensor& a, const qt::Tensor& b) {
  double out = 0;
  const auto x = qt::test::elements(a), y = qt::test::elements(b);
  REQUIRE(x.size() == y.size());
  for (size_t i = 0; i < x.size(); ++i) out = std::max(out, std::abs(x[i] - y[i]));
  return out;
}

}  // namespace

TEST_CASE("test_activation_tap: paths follow the module tree, also when registered bottom-up") {
  qt::nn::InitRng rng{3, 0};
  Outer outer(rng);  // the block registers its children before it is registered itself
  CHECK(outer.path().empty());
  CHECK(outer.block->path() == "block");
  CHECK(outer.block->ffn_in->path() == "block.ffn_in");
  CHECK(outer.block->attention->query->path() == "block.attention.query");
}

TEST_CASE("test_activation_tap: a post-LN block's points hold its intermediate results") {
  qt::nn::InitRng rng{5, 0};
  Outer outer(rng);
  outer.eval();
  const qt::nn::TransformerBlock& b = *outer.block;
  const qt::Tensor h = qt::test::random_tensor({2, 4, 8}, qt::DType::f32, 9);
  const qt::Tensor untapped = b.forward(h);
  Recorder recorder;
  qt::Tensor tapped;
  {
    qt::nn::TapScope scope(&recorder);
    CHECK(qt::nn::taps_active());
    tapped = b.forward(h);
  }
  CHECK_FALSE(qt::nn::taps_active());
  // Observing changes nothing.
  CHECK(max_difference(tapped, untapped) == 0.0);
  for (const char* point : {"block.attention.query:output", "block.attention.output:output",
                            "block:attention_residual", "block.attention_layer_norm:output",
                            "block.ffn_in:output", "block:ffn_activation", "block.ffn_out:output",
                            "block:ffn_residual", "block.output_layer_norm:output", "block:output"})
    CHECK_MESSAGE(recorder.values.count(point) == 1, std::string(point));
  CHECK(recorder.order.back() == "block:output");
  // Recompute the FFN half from the recorded h1 with the plain functions.
  const qt::Tensor h1 = recorder.values["block.attention_layer_norm:output"];
  const qt::Tensor activated = qt::gelu(qt::nn::linear(h1, b.ffn_in->weight, b.ffn_in->bias));
  CHECK(max_difference(recorder.values["block:ffn_activation"], activated) < 1e-6);
  const qt::Tensor residual =
      qt::add(qt::nn::linear(activated, b.ffn_out->weight, b.ffn_out->bias), h1);
  CHECK(max_difference(recorder.values["block:ffn_residual"], residual) < 1e-5);
  CHECK(max_difference(untapped, qt::nn::layer_norm(residual, b.ffn_layer_norm->weight,
                                                    b.ffn_layer_norm->bias, 1e-12)) < 1e-5);
}

TEST_CASE("test_activation_tap: a tap can replace a value") {
  qt::nn::InitRng rng{6, 0};
  Outer outer(rng);
  outer.eval();
  const qt::nn::TransformerBlock& b = *outer.block;
  const qt::Tensor h = qt::test::random_tensor({1, 4, 8}, qt::DType::f32, 2);
  Recorder recorder;
  recorder.replace_point = "block:ffn_activation";
  qt::Tensor out;
  {
    qt::nn::TapScope scope(&recorder);
    out = b.forward(h);
  }
  // With a zero FFN intermediate the FFN outputs its bias: out = LN_2(b_2 + h1).
  const qt::Tensor h1 = recorder.values["block.attention_layer_norm:output"];
  const qt::Tensor expected = qt::nn::layer_norm(
      qt::add(h1, b.ffn_out->bias), b.ffn_layer_norm->weight, b.ffn_layer_norm->bias, 1e-12);
  CHECK(max_difference(out, expected) < 1e-5);
}

TEST_CASE("test_activation_tap: attention points hold scores, probabilities, context, gate") {
  qt::nn::AttentionOptions o;
  o.hidden = 8;
  o.heads = 2;
  o.gate = qt::nn::GateKind::linear_per_head;
  qt::nn::InitRng rng{8, 0};
  qt::nn::Attention attention(o, nullptr, rng);
  attention.eval();
  const qt::Tensor x = qt::test::random_tensor({2, 5, 8}, qt::DType::f32, 4);
  const qt::Tensor untapped = attention.forward(x);  // fused path
  Recorder recorder;
  qt::Tensor tapped;
  {
    qt::nn::TapScope scope(&recorder);
    tapped = attention.forward(x);  // composed path
  }
  CHECK(max_difference(tapped, untapped) < 1e-5);
  const qt::Tensor scores = recorder.values.at(":scores");
  REQUIRE(scores.shape() == qt::Shape{2, 2, 5, 5});
  const qt::Tensor probabilities = recorder.values.at(":probabilities");
  const qt::Tensor context = recorder.values.at(":context");
  const qt::Tensor gate = recorder.values.at(":gate");
  REQUIRE(gate.shape() == qt::Shape{2, 5, 2});
  // Naive recomputation: scores from the recorded Q, K; softmax rows; context = P V.
  const auto qv = qt::test::elements(recorder.values.at("query:output"));
  const auto kv = qt::test::elements(recorder.values.at("key:output"));
  const auto vv = qt::test::elements(recorder.values.at("value:output"));
  const auto s = qt::test::elements(scores), p = qt::test::elements(probabilities);
  const auto c = qt::test::elements(context), g = qt::test::elements(gate);
  const auto gc = qt::test::elements(recorder.values.at(":gated_context"));
  for (int b = 0; b < 2; ++b)
    for (int h = 0; h < 2; ++h)
      for (int i = 0; i < 5; ++i) {
        double row[5], sum = 0, maximum = -1e30;
        for (int j = 0; j < 5; ++j) {
          double dot = 0;
          for (int e = 0; e < 4; ++e)
            dot += qv[(b * 5 + i) * 8 + h * 4 + e] * kv[(b * 5 + j) * 8 + h * 4 + e];
          row[j] = dot / 2.0;
          CHECK(s[((b * 2 + h) * 5 + i) * 5 + j] == doctest::Approx(row[j]).epsilon(1e-5));
          maximum = std::max(maximum, row[j]);
        }
        for (int j = 0; j < 5; ++j) sum += std::exp(row[j] - maximum);
        for (int e = 0; e < 4; ++e) {
          double out = 0;
          for (int j = 0; j < 5; ++j) {
            const double pj = std::exp(row[j] - maximum) / sum;
            if (e == 0)
              CHECK(p[((b * 2 + h) * 5 + i) * 5 + j] == doctest::Approx(pj).epsilon(1e-5));
            out += pj * vv[(b * 5 + j) * 8 + h * 4 + e];
          }
          CHECK(c[((b * 2 + h) * 5 + i) * 4 + e] == doctest::Approx(out).epsilon(1e-4));
          // gated context = pi[b, i, h] * context, heads concatenated
          CHECK(gc[(b * 5 + i) * 8 + h * 4 + e] ==
                doctest::Approx(out * g[(b * 5 + i) * 2 + h]).epsilon(1e-4));
        }
      }
}
