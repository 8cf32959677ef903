// The no-op mechanism statistics (quant/attention_mechanism.h) on attention patterns, value
// vectors and gates written out by hand, where the attention mass on the token set, the value
// norms on and off it, the gates, the top heads and the correlation are known in advance; Pearson's
// r on series with known r; accumulation over batches of different lengths; the JSON round trip;
// and misuse.
#include <doctest/doctest.h>

#include <nlohmann/json.hpp>
#include <vector>

#include "quant/attention_mechanism.h"
#include "tensor/create.h"
#include "tensor/error.h"
#include "tensor/tensor.h"

namespace {

using qt::Tensor;
using qt::quant::AttentionMechanism;

Tensor tensor(const std::vector<float>& values, const qt::Shape& shape) {
  Tensor t = Tensor::empty(shape, qt::DType::f32);
  for (size_t i = 0; i < values.size(); ++i) t.data<float>()[i] = values[i];
  REQUIRE(static_cast<int64_t>(values.size()) == t.numel());
  return t;
}

// Two layers of two heads over one sequence of three tokens; token 0 is the delimiter.
//   layer 0 head 0: P rows (.5 .25 .25) (.8 .1 .1) (.2 .4 .4)   mass (.5 + .8 + .2) / 3 = .5
//           head 1: P rows (.1 .45 .45) (.1 .8 .1) (.4 .3 .3)   mass (.1 + .1 + .4) / 3 = .2
//   layer 1 head 0: uniform 1/3                                  mass 1/3
//           head 1: every query on token 0                       mass 1
//   values (d = 4, d_h = 2), per token (head 0 | head 1):
//     layer 0: (3, 4 | 0, 1)  (6, 8 | 1, 0)  (0, 10 | 0, 3)  norms 5 | 1, 10 | 1, 10 | 3
//              head 0: on 5, off (10 + 10) / 2 = 10, ratio .5;  head 1: on 1, off 2, ratio .5
//     layer 1: (2, 0 | 0, .5) (0, 2 | 0, 2) (2, 0 | 2, 0)    head 0: ratio 1;  head 1: .5 / 2 = .25
//   gates (head 0, head 1) per token, both layers: (.1, .9) (.5, .7) (.7, .5)
//     head 0: on .1, off .6;  head 1: on .9, off .6
struct HandPattern {
  AttentionMechanism mechanism{2, 2, {"delimiters"}, 3};
  HandPattern() {
    mechanism.begin_batch(1, 3, {{1, 0, 0}});
    const Tensor gate = tensor({.1f, .9f, .5f, .7f, .7f, .5f}, {1, 3, 2});
    const float third = 1.0f / 3.0f;
    mechanism.observe_gate(0, gate);
    mechanism.observe_value(0, tensor({3, 4, 0, 1, 6, 8, 1, 0, 0, 10, 0, 3}, {1, 3, 4}));
    mechanism.observe_probabilities(0, tensor({.5f, .25f, .25f, .8f, .1f, .1f, .2f, .4f, .4f, .1f,
                                               .45f, .45f, .1f, .8f, .1f, .4f, .3f, .3f},
                                              {1, 2, 3, 3}));
    mechanism.observe_gate(1, gate);
    mechanism.observe_value(1, tensor({2, 0, 0, .5f, 0, 2, 0, 2, 2, 0, 2, 0}, {1, 3, 4}));
    mechanism.observe_probabilities(1, tensor({third, third, third, third, third, third, third,
                                               third, third, 1, 0, 0, 1, 0, 0, 1, 0, 0},
                                              {1, 2, 3, 3}));
  }
};

}  // namespace

TEST_CASE("test_attention_mechanism: Pearson's r of series with known r") {
  using qt::quant::pearson_correlation;
  CHECK(*pearson_correlation({1, 2, 3}, {2, 4, 6}) == doctest::Approx(1.0));
  CHECK(*pearson_correlation({1, 2, 3}, {3, 2, 1}) == doctest::Approx(-1.0));
  // deviations (-1.5, -.5, .5, 1.5) and (-1.5, .5, -.5, 1.5): 4 / sqrt(5 * 5) = 0.8
  CHECK(*pearson_correlation({1, 2, 3, 4}, {1, 3, 2, 4}) == doctest::Approx(0.8));
  CHECK_FALSE(pearson_correlation({1, 2}, {1, 2}).has_value());        // too few
  CHECK_FALSE(pearson_correlation({1, 2, 3}, {5, 5, 5}).has_value());  // constant
  CHECK_THROWS_AS(pearson_correlation({1, 2, 3}, {1, 2}), qt::Error);
}

TEST_CASE("test_attention_mechanism: mass, value norms, gates and top heads of a hand pattern") {
  HandPattern pattern;
  const qt::quant::MechanismResult r = pattern.mechanism.result();
  REQUIRE(r.token_sets.size() == 1);
  const auto& s = r.token_sets[0];
  CHECK(s.name == "delimiters");
  CHECK(s.tokens == 1);
  CHECK(s.all_tokens == 3);
  REQUIRE(s.mass.size() == 2);
  CHECK(s.mass[0][0] == doctest::Approx(0.5));
  CHECK(s.mass[0][1] == doctest::Approx(0.2));
  CHECK(s.mass[1][0] == doctest::Approx(1.0 / 3.0));
  CHECK(s.mass[1][1] == doctest::Approx(1.0));
  CHECK(s.value_norm_in[0][0] == doctest::Approx(5.0));
  CHECK(s.value_norm_out[0][0] == doctest::Approx(10.0));
  CHECK(s.value_norm_in[0][1] == doctest::Approx(1.0));
  CHECK(s.value_norm_out[0][1] == doctest::Approx(2.0));
  CHECK(s.value_norm_in[1][0] == doctest::Approx(2.0));
  CHECK(s.value_norm_out[1][0] == doctest::Approx(2.0));
  CHECK(s.value_norm_in[1][1] == doctest::Approx(0.5));
  CHECK(s.value_norm_out[1][1] == doctest::Approx(2.0));
  REQUIRE(s.gate_in.size() == 2);
  for (int l = 0; l < 2; ++l) {
    CHECK(s.gate_in[l][0] == doctest::Approx(0.1));
    CHECK(s.gate_out[l][0] == doctest::Approx(0.6));
    CHECK(s.gate_in[l][1] == doctest::Approx(0.9));
    CHECK(s.gate_out[l][1] == doctest::Approx(0.6));
  }
  // Top heads by mass: L1.H1 (1, ratio .25), L0.H0 (.5, ratio .5), L1.H0 (1/3, ratio 1).
  REQUIRE(s.top_heads.size() == 3);
  CHECK(s.top_heads[0].layer == 1);
  CHECK(s.top_heads[0].head == 1);
  CHECK(*s.top_heads[0].value_norm_ratio == doctest::Approx(0.25));
  CHECK(*s.top_heads[0].gate_in == doctest::Approx(0.9));
  CHECK(s.top_heads[1].layer == 0);
  CHECK(s.top_heads[1].head == 0);
  CHECK(*s.top_heads[1].value_norm_ratio == doctest::Approx(0.5));
  CHECK(*s.top_heads[1].gate_out == doctest::Approx(0.6));
  CHECK(s.top_heads[2].layer == 1);
  CHECK(s.top_heads[2].head == 0);
  // r of mass (.5, .2, 1/3, 1) and ratio (.5, .5, 1, .25), computed separately: -0.63704.
  REQUIRE(s.mass_value_ratio_correlation.has_value());
  CHECK(*s.mass_value_ratio_correlation == doctest::Approx(-0.6370369907789021));
  CHECK(s.outliers == 0);

  // The JSON round trip keeps everything, including absent optionals.
  const nlohmann::json json = qt::quant::to_json(r);
  const auto back = qt::quant::mechanism_from_json(nlohmann::json::parse(json.dump()));
  CHECK(qt::quant::to_json(back) == json);
  CHECK(back.token_sets[0].top_heads[2].gate_in == s.top_heads[2].gate_in);
}

TEST_CASE("test_attention_mechanism: batches of different lengths accumulate per query and token") {
  // One layer, one head, no gate. Batch 1: T = 2, token 0 in the set, P rows (1, 0) (.5, .5):
  // 1.5 of mass over 2 queries; value norms 1 (in), 3 (out). Batch 2: T = 4, token 3 in the
  // set, every row puts .25 on it: 1 over 4 queries; norms 2, 2, 2 (out) and 4 (in).
  // Mass (1.5 + 1) / 6; norm on the set (1 + 4) / 2 = 2.5, off it (3 + 2 + 2 + 2) / 4 = 2.25.
  AttentionMechanism m(1, 1, {"s", "empty"});
  m.begin_batch(1, 2, {{1, 0}, {0, 0}});
  m.observe_value(0, tensor({1, 0, 0, 3}, {1, 2, 2}));
  m.observe_probabilities(0, tensor({1, 0, .5f, .5f}, {1, 1, 2, 2}));
  m.add_outliers({2, 0}, 5);
  m.begin_batch(1, 4, {{0, 0, 0, 1}, {0, 0, 0, 0}});
  m.observe_value(0, tensor({2, 0, 0, 2, 2, 0, 0, 4}, {1, 4, 2}));
  m.observe_probabilities(
      0, tensor({.25f, .25f, .25f, .25f, .5f, 0, .25f, .25f, 0, .75f, 0, .25f, 0, 0, .75f, .25f},
                {1, 1, 4, 4}));
  m.add_outliers({1, 0}, 1);
  const auto r = m.result();
  const auto& s = r.token_sets[0];
  CHECK(s.tokens == 2);
  CHECK(s.all_tokens == 6);
  CHECK(s.mass[0][0] == doctest::Approx(2.5 / 6.0));
  CHECK(s.value_norm_in[0][0] == doctest::Approx(2.5));
  CHECK(s.value_norm_out[0][0] == doctest::Approx(2.25));
  CHECK(s.gate_in.empty());  // not gated
  CHECK(s.outliers_on == 3);
  CHECK(s.outliers == 6);
  CHECK_FALSE(s.mass_value_ratio_correlation.has_value());  // one head
  // A set no token belongs to: no mass, no ratio.
  const auto& empty = r.token_sets[1];
  CHECK(empty.tokens == 0);
  CHECK(empty.mass[0][0] == 0.0);
  CHECK_FALSE(empty.top_heads[0].value_norm_ratio.has_value());
  CHECK(empty.value_norm_out[0][0] == doctest::Approx((1 + 3 + 2 + 2 + 2 + 4) / 6.0));
}

TEST_CASE("test_attention_mechanism: misuse throws naming the problem") {
  CHECK_THROWS_WITH_AS(AttentionMechanism(0, 2, {"s"}), doctest::Contains("layers >= 1"),
                       qt::Error);
  AttentionMechanism m(2, 2, {"s"});
  const Tensor p = qt::ops::zeros({1, 2, 3, 3}, qt::DType::f32);
  CHECK_THROWS_WITH_AS(m.observe_probabilities(0, p), doctest::Contains("begin_batch"), qt::Error);
  CHECK_THROWS_WITH_AS(m.begin_batch(1, 3, {{1, 0}}), doctest::Contains("holds 2 entries"),
                       qt::Error);
  CHECK_THROWS_WITH_AS(m.begin_batch(1, 3, {}), doctest::Contains("0 token-set masks for 1"),
                       qt::Error);
  m.begin_batch(1, 3, {{1, 0, 0}});
  CHECK_THROWS_WITH_AS(m.observe_probabilities(0, qt::ops::zeros({2, 2, 3, 3}, qt::DType::f32)),
                       doctest::Contains("token sets are [1, 3]"), qt::Error);
  CHECK_THROWS_WITH_AS(m.observe_probabilities(0, qt::ops::zeros({1, 3, 3, 3}, qt::DType::f32)),
                       doctest::Contains("[B, 2, T, T]"), qt::Error);
  CHECK_THROWS_WITH_AS(m.observe_value(0, qt::ops::zeros({1, 3, 5}, qt::DType::f32)),
                       doctest::Contains("divisible by 2 heads"), qt::Error);
  CHECK_THROWS_WITH_AS(m.observe_gate(0, qt::ops::zeros({1, 3, 3}, qt::DType::f32)),
                       doctest::Contains("[B, T, 2]"), qt::Error);
  m.observe_probabilities(0, p);
  m.observe_value(0, qt::ops::zeros({1, 3, 4}, qt::DType::f32));
  CHECK_THROWS_WITH_AS(m.result(), doctest::Contains("layer 1 produced no attention"), qt::Error);
}
