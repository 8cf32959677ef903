// Tests for nn/embedding.*. Truth: naive row copies for the forward, a naive scatter-add loop
// (positions visited one by one) for the weight gradient, and finite differences (gradcheck).
#include <doctest/doctest.h>

#include <vector>

#include "autograd/functions.h"
#include "autograd/gradcheck.h"
#include "nn/embedding.h"
#include "tensor/threads.h"
#include "test_util.h"

using namespace qt;
using qt::test::elements;
using qt::test::random_ids;
using qt::test::random_tensor;

TEST_CASE("embedding: forward copies the rows of the ids (i64 and i32 ids, any ids shape)") {
  nn::InitRng rng{3};
  nn::Embedding table(11, 5, rng);
  CHECK(table.weight.shape() == Shape{11, 5});
  CHECK(table.named_parameters().front().first == "weight");
  const Tensor ids = random_ids({3, 4}, 0, 10, 1);
  const std::vector<int64_t> id_values = ops::to_vector<int64_t>(ids);
  const std::vector<double> w = elements(table.weight);
  for (const Tensor& given : {ids, ops::to(ids, DType::i32)}) {
    const Tensor y = table.forward(given);
    REQUIRE(y.shape() == Shape{3, 4, 5});
    const std::vector<double> yv = elements(y);
    for (size_t p = 0; p < id_values.size(); ++p)
      for (int64_t d = 0; d < 5; ++d) CHECK(yv[p * 5 + d] == w[id_values[p] * 5 + d]);
  }
}

TEST_CASE("embedding: weights are N(0, 1) as PyTorch's default") {
  nn::InitRng rng{5};
  nn::Embedding table(200, 50, rng);
  double sum = 0, sum_sq = 0;
  const std::vector<double> w = elements(table.weight);
  for (double v : w) {
    sum += v;
    sum_sq += v * v;
  }
  const double n = static_cast<double>(w.size());
  CHECK(std::abs(sum / n) < 0.03);           // standard error of the mean: 0.007
  CHECK(std::abs(sum_sq / n - 1.0) < 0.05);  // standard error of the variance: 0.014
}

TEST_CASE(
    "embedding: the weight gradient is the scatter-add of dy over repeated ids, the same "
    "with 1 and 2 threads") {
  nn::InitRng rng{7};
  nn::Embedding table(50, 64, rng);
  const Tensor ids = random_ids({40, 30}, 0, 49, 2);  // 1200 positions: many repeats per id
  const Tensor dy = random_tensor({40, 30, 64}, DType::f32, 3);
  auto weight_gradient = [&](int threads) {
    set_num_threads(threads);
    table.zero_grad();
    backward(table.forward(ids), dy);
    return ops::clone(table.weight.grad());
  };
  const int saved = num_threads();
  const Tensor one = weight_gradient(1), two = weight_gradient(2);
  set_num_threads(saved);
  CHECK(ops::max_abs_diff(one, two) == 0.0);

  std::vector<double> expected(50 * 64, 0.0);
  const std::vector<int64_t> id_values = ops::to_vector<int64_t>(ids);
  const std::vector<double> dyv = elements(dy);
  for (size_t p = 0; p < id_values.size(); ++p)
    for (int64_t d = 0; d < 64; ++d) expected[id_values[p] * 64 + d] += dyv[p * 64 + d];
  const std::vector<double> got = elements(one);
  for (size_t i = 0; i < got.size(); ++i) CHECK(std::abs(got[i] - expected[i]) < 1e-4);
}

TEST_CASE("embedding: gradcheck of the table in f64") {
  Tensor table = random_tensor({6, 3}, DType::f64, 4);
  table.set_requires_grad();
  const Tensor ids = test::ids_tensor({0, 5, 2, 2, 5, 5, 1, 0}, {2, 4});
  const GradcheckResult result =
      gradcheck([&](const std::vector<Tensor>& in) { return qt::embedding(in[0], ids); }, {table});
  INFO(result.message);
  CHECK(result.ok);
}

TEST_CASE("embedding: an id out of range throws naming the id; bad ids dtype or sizes throw") {
  nn::InitRng rng{9};
  nn::Embedding table(10, 4, rng);
  CHECK_THROWS_WITH_AS(table.forward(test::ids_tensor({1, 10, 2}, {3})), doctest::Contains("id 10"),
                       Error);
  CHECK_THROWS_WITH_AS(table.forward(test::ids_tensor({-3}, {1})), doctest::Contains("id -3"),
                       Error);
  CHECK_THROWS_WITH_AS(table.forward(ops::to(test::ids_tensor({1, 12}, {2}), DType::i32)),
                       doctest::Contains("id 12"), Error);
  CHECK_THROWS_WITH_AS(table.forward(ops::zeros({3})), doctest::Contains("f32"), Error);
  CHECK_THROWS_AS(nn::Embedding(0, 4, rng), Error);
  CHECK_THROWS_AS(nn::Embedding(4, -1, rng), Error);
}
