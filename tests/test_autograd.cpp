// Tests for the autograd engine (autograd/node.*, autograd/engine.*) and for the behaviour of the
// differentiable ops where finite differences cannot decide (kinks, ties, dtype conversion).
// Truth: gradients computed by hand from the calculus (d(x*x)/dx = 2x, accumulation = sum of the
// passes, ...), and object lifetimes observed through weak_ptr.
#include <doctest/doctest.h>

#include <cmath>
#include <memory>
#include <vector>

#include "autograd/functions.h"

using namespace qt;

namespace {

Tensor leaf(const std::vector<double>& values, const Shape& shape) {
  Tensor t = ops::from_vector(values, shape);
  t.set_requires_grad();
  return t;
}

std::vector<double> values(const Tensor& t) {
  return ops::to_vector<double>(t);
}

void check_values(const Tensor& t, const std::vector<double>& expected, double tolerance = 1e-12) {
  REQUIRE(t.defined());
  const std::vector<double> got = values(t);
  REQUIRE(got.size() == expected.size());
  for (size_t i = 0; i < got.size(); ++i) {
    CAPTURE(i);
    CHECK(std::abs(got[i] - expected[i]) <= tolerance * (1 + std::abs(expected[i])));
  }
}

}  // namespace

TEST_CASE("autograd: d(sum(x*x))/dx = 2x, and x used twice gets both contributions") {
  Tensor x = leaf({1.0, -2.0, 3.5}, {3});
  backward(sum(mul(x, x)));
  check_values(x.grad(), {2.0, -4.0, 7.0});

  Tensor y = leaf({1.0, 2.0}, {2});
  backward(sum(add(y, y)));  // d(2y)/dy = 2
  check_values(y.grad(), {2.0, 2.0});
}

TEST_CASE("autograd: gradients accumulate across backward calls") {
  Tensor x = leaf({1.0, -2.0, 3.0}, {3});
  backward(sum(mul(x, x)));    // += 2x
  backward(sum(mul(x, 3.0)));  // += 3
  check_values(x.grad(), {5.0, -1.0, 9.0});
  x.set_grad(Tensor());  // zeroing = dropping the gradient
  backward(sum(x));
  check_values(x.grad(), {1.0, 1.0, 1.0});
}

TEST_CASE("autograd: retain_graph allows a second pass; a freed graph is an error") {
  Tensor x = leaf({2.0, -1.0}, {2});
  const Tensor loss = sum(mul(exp(x), x));  // d/dx (x e^x) = e^x (1 + x)
  backward(loss, Tensor(), /*retain_graph=*/true);
  backward(loss);  // the graph was retained: runs again, and frees it
  const double e2 = std::exp(2.0), e_1 = std::exp(-1.0);
  check_values(x.grad(), {2 * e2 * 3.0, 2 * e_1 * 0.0});
  CHECK_THROWS_AS(backward(loss), qt::Error);

  Tensor z = leaf({1.0}, {1});
  const Tensor twice = sum(mul(z, z));
  backward(twice);
  CHECK_THROWS_AS(backward(twice), qt::Error);
  // A new graph built from a value whose node was freed cannot reach through it either.
  Tensor w = leaf({1.0, 2.0}, {2});
  const Tensor hidden = mul(w, 2.0);
  backward(sum(hidden));
  CHECK_THROWS_AS(backward(sum(mul(hidden, 3.0))), qt::Error);
}

TEST_CASE("autograd: a non-scalar root needs grad_output of its shape and dtype") {
  Tensor x = leaf({1.0, 2.0, 3.0, 4.0}, {2, 2});
  const Tensor y = mul(x, x);
  CHECK_THROWS_AS(backward(y), qt::Error);
  CHECK_THROWS_AS(backward(y, ops::ones({4}, DType::f64)), qt::Error);
  CHECK_THROWS_AS(backward(y, ops::ones({2, 2}, DType::f32)), qt::Error);
  const Tensor grad_output = ops::from_vector(std::vector<double>{1.0, 0.5, -1.0, 2.0}, {2, 2});
  backward(y, grad_output);  // dL/dx = grad_output * 2x
  check_values(x.grad(), {2.0, 2.0, -6.0, 16.0});
  // A tensor that does not require grad cannot be a root.
  CHECK_THROWS_AS(backward(ops::ones({1}, DType::f64)), qt::Error);
}

TEST_CASE("autograd: NoGradGuard records nothing and nests") {
  Tensor x = leaf({1.0, 2.0}, {2});
  CHECK(grad_enabled());
  {
    NoGradGuard outer;
    CHECK_FALSE(grad_enabled());
    const Tensor y = mul(x, 3.0);
    CHECK_FALSE(y.requires_grad());
    CHECK(y.is_leaf());
    {
      NoGradGuard inner;
      CHECK_FALSE(grad_enabled());
    }
    CHECK_FALSE(grad_enabled());  // the inner guard restores "off", not "on"
    CHECK_THROWS_AS(backward(sum(y)), qt::Error);
  }
  CHECK(grad_enabled());
  const Tensor z = mul(x, 3.0);
  CHECK(z.requires_grad());
  CHECK_FALSE(z.is_leaf());
}

TEST_CASE("autograd: detach cuts the graph but shares the data") {
  Tensor x = leaf({1.0, 2.0}, {2});
  const Tensor detached = x.detach();
  CHECK_FALSE(detached.requires_grad());
  // y = stopgrad(x) * x: only the second factor carries a gradient, so dy/dx = x (not 2x).
  backward(sum(mul(detached, x)));
  check_values(x.grad(), {1.0, 2.0});
  detached.data<double>()[0] = 10.0;
  CHECK(x.at({0}) == 10.0);
}

TEST_CASE("autograd: only leaves that require grad receive .grad; backward records nothing") {
  Tensor x = leaf({1.0, 2.0}, {2});
  const Tensor constant = ops::from_vector(std::vector<double>{3.0, 4.0}, {2});
  const Tensor hidden = mul(x, constant);
  backward(sum(hidden));
  check_values(x.grad(), {3.0, 4.0});
  CHECK_FALSE(constant.grad().defined());
  CHECK_FALSE(hidden.grad().defined());  // not a leaf
  CHECK(x.grad().is_leaf());
  CHECK_FALSE(x.grad().requires_grad());
  CHECK(x.grad().is_contiguous());
}

TEST_CASE("autograd: shared subexpressions sum their consumers' gradients (diamond graph)") {
  Tensor a = leaf({1.5, -2.0}, {2});
  const Tensor b = mul(a, 2.0);
  const Tensor c = mul(a, 3.0);
  const Tensor d = mul(b, c);  // 6 a^2  ->  12 a
  backward(sum(d));
  check_values(a.grad(), {18.0, -24.0});

  Tensor x = leaf({1.0, 2.0}, {2});
  const Tensor y = mul(x, 2.0);
  backward(sum(add(mul(y, 3.0), mul(y, 4.0))));  // 14 x
  check_values(x.grad(), {14.0, 14.0});
}

TEST_CASE("autograd: two leaves never share one gradient tensor") {
  Tensor a = leaf({1.0, 2.0}, {2});
  Tensor b = leaf({3.0, 4.0}, {2});
  backward(sum(add(a, b)));  // both receive the same upstream gradient of ones
  REQUIRE(a.grad().defined());
  REQUIRE(b.grad().defined());
  CHECK(a.grad().storage() != b.grad().storage());
  a.grad().data<double>()[0] = 42.0;
  check_values(b.grad(), {1.0, 1.0});

  // A leaf root gets a copy of grad_output, not the caller's tensor.
  Tensor root = leaf({1.0, 2.0}, {2});
  const Tensor grad_output = ops::from_vector(std::vector<double>{5.0, 6.0}, {2});
  backward(root, grad_output);
  grad_output.data<double>()[0] = -1.0;
  check_values(root.grad(), {5.0, 6.0});

  // Views of the upstream gradient (contiguous, add) are not handed out as .grad either.
  Tensor p = leaf({1.0, 2.0, 3.0}, {3});
  const Tensor seed = ops::from_vector(std::vector<double>{1.0, 2.0, 3.0}, {3});
  backward(contiguous(p), seed);
  seed.data<double>()[1] = 100.0;
  check_values(p.grad(), {1.0, 2.0, 3.0});
}

TEST_CASE("autograd: a chain of 5000 ops runs backward without overflowing the stack") {
  Tensor x = leaf({1.0, -1.0}, {2});
  Tensor y = x;
  for (int i = 0; i < 5000; ++i) y = add(y, x);  // y = 5001 x
  backward(sum(y));
  check_values(x.grad(), {5001.0, 5001.0});
}

TEST_CASE("autograd: a very deep graph that is never differentiated is freed without recursion") {
  Tensor x = leaf({1.0}, {1});
  std::weak_ptr<Node> first_node;
  {
    Tensor y = add(x, 1.0);
    first_node = y.grad_fn();
    for (int i = 0; i < 200000; ++i) y = add(y, 1.0);
    CHECK_FALSE(first_node.expired());
  }  // y goes out of scope: 200001 nodes are freed
  CHECK(first_node.expired());
}

TEST_CASE("autograd: the graph is freed by backward, kept by retain_graph, and never leaks") {
  Tensor x = leaf({1.0, 2.0}, {2});
  Tensor w = leaf({3.0, 4.0}, {2});
  SUBCASE("freed by backward while the loss is still alive") {
    std::weak_ptr<Node> hidden_node;
    std::weak_ptr<TensorImpl> hidden_value;
    Tensor loss;
    {
      const Tensor hidden = exp(mul(x, w));
      hidden_node = hidden.grad_fn();
      hidden_value = hidden.impl_ptr();
      loss = sum(hidden);
    }
    CHECK_FALSE(hidden_node.expired());  // the loss's node holds it
    backward(loss);
    CHECK(hidden_node.expired());
    CHECK(hidden_value.expired());
  }
  SUBCASE("kept by retain_graph until the loss is dropped") {
    std::weak_ptr<Node> hidden_node, loss_node;
    {
      Tensor loss;
      {
        const Tensor hidden = exp(mul(x, w));
        hidden_node = hidden.grad_fn();
        loss = sum(hidden);
        loss_node = loss.grad_fn();
      }
      backward(loss, Tensor(), /*retain_graph=*/true);
      CHECK_FALSE(hidden_node.expired());
    }
    // No cycle (no closure captured its own result): dropping the loss frees the whole graph.
    CHECK(hidden_node.expired());
    CHECK(loss_node.expired());
  }
  SUBCASE("every op's closure is free of cycles: a graph using all kinds of ops is freed") {
    std::weak_ptr<Node> nodes[6];
    {
      const Tensor a = softmax(matmul(reshape(x, {1, 2}), reshape(w, {2, 1})), 0);
      const Tensor b = max(cat({sigmoid(x), tanh(w)}, 0));
      const Tensor c = var(stack({div(x, w), pow(x, w)}, 0));
      const Tensor d = sum(gelu(where(ops::gt(x, w), x, w)));
      nodes[0] = a.grad_fn();
      nodes[1] = b.grad_fn();
      nodes[2] = c.grad_fn();
      nodes[3] = d.grad_fn();
      const Tensor e = add(add(sum(a), b), add(c, d));
      nodes[4] = e.grad_fn();
      const Tensor f = exp(sqrt(e));
      nodes[5] = f.grad_fn();
      for (const auto& node : nodes) CHECK_FALSE(node.expired());
    }
    for (const auto& node : nodes) CHECK(node.expired());
  }
}

TEST_CASE("autograd: a leaf takes over a gradient nothing else holds, and copies a shared one") {
  // The op's backward returns a fresh tensor (its only handle): the leaf's .grad is that very
  // buffer, no copy.
  Tensor x = leaf({1.0, 2.0}, {2});
  const double* fresh_data = nullptr;
  const Tensor y =
      record(ops::clone(x), "test_fresh", {x},
             [&fresh_data](const Tensor& grad, const std::vector<bool>&) -> std::vector<Tensor> {
               Tensor fresh = ops::mul(grad, ops::scalar(3.0, DType::f64));
               fresh_data = fresh.data<double>();
               return {fresh};
             });
  backward(sum(y));
  REQUIRE(fresh_data != nullptr);
  CHECK(x.grad().data<double>() == fresh_data);
  check_values(x.grad(), {3.0, 3.0});

  // The backward keeps a handle to what it returns: the leaf gets a copy, and later writes to
  // the kept tensor do not reach .grad.
  Tensor z = leaf({1.0, 2.0}, {2});
  auto kept = std::make_shared<Tensor>();
  const Tensor w =
      record(ops::clone(z), "test_kept", {z},
             [kept](const Tensor& grad, const std::vector<bool>&) -> std::vector<Tensor> {
               *kept = ops::mul(grad, ops::scalar(2.0, DType::f64));
               return {*kept};
             });
  backward(sum(w));
  CHECK(z.grad().storage() != kept->storage());
  kept->data<double>()[0] = 99.0;
  check_values(z.grad(), {2.0, 2.0});

  // A view of a larger buffer (here: the first half of a fresh [4]) is copied, not handed over
  // with its hidden neighbours.
  Tensor v = leaf({1.0, 2.0}, {2});
  const Tensor u = record(ops::clone(v), "test_view", {v},
                          [](const Tensor& grad, const std::vector<bool>&) -> std::vector<Tensor> {
                            const Tensor wide = ops::cat({grad, grad}, 0);
                            return {ops::narrow(wide, 0, 2, 2)};
                          });
  backward(sum(u));
  CHECK(v.grad().offset() == 0);
  check_values(v.grad(), {1.0, 1.0});
}

TEST_CASE("autograd: record() passes needs_input_grad and validates what backward returns") {
  Tensor x = leaf({1.0, 2.0}, {2});
  const Tensor fixed = ops::from_vector(std::vector<double>{3.0, 4.0}, {2});
  std::vector<bool> seen_needs;
  const Tensor y = record(
      ops::mul(x, fixed), "test_mul", {x, fixed},
      [&seen_needs](const Tensor& grad, const std::vector<bool>& needs) -> std::vector<Tensor> {
        seen_needs = needs;
        return {grad, Tensor()};
      });
  backward(sum(y));
  CHECK(seen_needs == std::vector<bool>{true, false});
  check_values(x.grad(), {1.0, 1.0});

  // Nothing requires grad: the result is returned as is, with no node.
  const Tensor plain =
      record(ops::mul(fixed, fixed), "test_plain", {fixed},
             [](const Tensor&, const std::vector<bool>&) -> std::vector<Tensor> { return {}; });
  CHECK(plain.is_leaf());
  CHECK_FALSE(plain.requires_grad());

  const Tensor wrong_count =
      record(ops::clone(x), "test_count", {x},
             [](const Tensor& g, const std::vector<bool>&) -> std::vector<Tensor> {
               return {g, g};
             });
  CHECK_THROWS_AS(backward(sum(wrong_count)), qt::Error);
  const Tensor wrong_shape =
      record(ops::clone(x), "test_shape", {x},
             [](const Tensor&, const std::vector<bool>&) -> std::vector<Tensor> {
               return {ops::ones({3}, DType::f64)};
             });
  CHECK_THROWS_AS(backward(sum(wrong_shape)), qt::Error);
  const Tensor wrong_dtype =
      record(ops::clone(x), "test_dtype", {x},
             [](const Tensor&, const std::vector<bool>&) -> std::vector<Tensor> {
               return {ops::ones({2}, DType::f32)};
             });
  CHECK_THROWS_AS(backward(sum(wrong_dtype)), qt::Error);
}

TEST_CASE("autograd: a view-returning op gets its own node, the input stays a leaf") {
  Tensor x = leaf({1.0, 2.0, 3.0, 4.0}, {2, 2});  // already contiguous: ops::contiguous returns x
  const Tensor y = contiguous(x);
  CHECK(x.is_leaf());
  CHECK_FALSE(y.is_leaf());
  CHECK_FALSE(y.is_same(x));
  CHECK(y.storage() == x.storage());
  const Tensor same_dtype = to(x, DType::f64);
  CHECK(x.is_leaf());
  CHECK_FALSE(same_dtype.is_leaf());
}

TEST_CASE("autograd: set_requires_grad only on floating leaves") {
  Tensor integers = ops::zeros({2}, DType::i64);
  CHECK_THROWS_AS(integers.set_requires_grad(), qt::Error);
  Tensor x = leaf({1.0}, {1});
  Tensor y = mul(x, 2.0);
  CHECK_THROWS_AS(y.set_requires_grad(), qt::Error);
}

// ---- subgradients and conventions that finite differences cannot check

TEST_CASE("autograd functions: relu and abs have gradient 0 at 0; clamp passes its boundaries") {
  Tensor x = leaf({-1.0, 0.0, 2.0}, {3});
  backward(sum(relu(x)));
  check_values(x.grad(), {0.0, 0.0, 1.0});
  x.set_grad(Tensor());
  backward(sum(abs(x)));
  check_values(x.grad(), {-1.0, 0.0, 1.0});

  Tensor c = leaf({-1.0, -0.5, 0.0, 0.7, 0.9}, {5});
  backward(sum(clamp(c, -0.5, 0.7)));  // inclusive at both boundaries
  check_values(c.grad(), {0.0, 1.0, 1.0, 1.0, 0.0});
}

TEST_CASE("autograd functions: max/min reductions split the gradient evenly among ties") {
  Tensor x = leaf({1.0, 3.0, 3.0, 2.0, 5.0, 5.0, 5.0, 0.0}, {2, 4});
  backward(sum(max(x, {1})));
  check_values(x.grad(), {0.0, 0.5, 0.5, 0.0, 1.0 / 3, 1.0 / 3, 1.0 / 3, 0.0});
  x.set_grad(Tensor());
  backward(sum(max(x)));  // over everything: the three 5s share
  check_values(x.grad(), {0.0, 0.0, 0.0, 0.0, 1.0 / 3, 1.0 / 3, 1.0 / 3, 0.0});
  x.set_grad(Tensor());
  const Tensor column_min = min(x, {0}, /*keepdim=*/true);  // [[1, 3, 3, 0]], no ties
  backward(column_min, ops::from_vector(std::vector<double>{1.0, 2.0, 4.0, 8.0}, {1, 4}));
  check_values(x.grad(), {1.0, 2.0, 4.0, 0.0, 0.0, 0.0, 0.0, 8.0});

  Tensor all_equal = leaf({2.0, 2.0, 2.0, 2.0}, {4});
  backward(min(all_equal));
  check_values(all_equal.grad(), {0.25, 0.25, 0.25, 0.25});
}

TEST_CASE("autograd functions: maximum/minimum split a tie half and half") {
  Tensor a = leaf({1.0, 2.0, 3.0}, {3});
  Tensor b = leaf({2.0, 2.0, 1.0}, {3});
  backward(sum(maximum(a, b)));
  check_values(a.grad(), {0.0, 0.5, 1.0});
  check_values(b.grad(), {1.0, 0.5, 0.0});
  a.set_grad(Tensor());
  b.set_grad(Tensor());
  backward(sum(minimum(a, b)));
  check_values(a.grad(), {1.0, 0.5, 0.0});
  check_values(b.grad(), {0.0, 0.5, 1.0});
  // Broadcast scalar against a vector: the scalar's gradient is the sum of its shares.
  Tensor s = leaf({2.0}, {});
  Tensor v = leaf({1.0, 2.0, 3.0}, {3});
  backward(sum(maximum(s, v)));
  check_values(s.grad(), {1.5});
  check_values(v.grad(), {0.0, 0.5, 1.0});
}

TEST_CASE("autograd functions: to() is differentiable between f32 and f64, not to integers") {
  Tensor x32 = ops::from_vector(std::vector<float>{1.5f, -2.0f}, {2});
  x32.set_requires_grad();
  const Tensor weights = ops::from_vector(std::vector<double>{3.0, 0.25}, {2});
  backward(sum(mul(to(x32, DType::f64), weights)));
  REQUIRE(x32.grad().defined());
  CHECK(x32.grad().dtype() == DType::f32);
  check_values(x32.grad(), {3.0, 0.25});

  Tensor x64 = leaf({1.0, 2.0}, {2});
  const Tensor as32 = to(x64, DType::f32);
  CHECK(as32.dtype() == DType::f32);
  backward(sum(mul(as32, as32)));  // d/dx x^2 = 2x, returned as f64
  CHECK(x64.grad().dtype() == DType::f64);
  check_values(x64.grad(), {2.0, 4.0});

  const Tensor as_int = to(x64, DType::i64);
  CHECK_FALSE(as_int.requires_grad());
  CHECK(as_int.dtype() == DType::i64);
}

TEST_CASE("autograd functions: f32 graphs produce f32 gradients of the right value") {
  Tensor w = ops::from_vector(std::vector<float>{1.0f, 2.0f, 3.0f, 4.0f, 5.0f, 6.0f}, {3, 2});
  w.set_requires_grad();
  const Tensor x = ops::from_vector(std::vector<float>{1.0f, -1.0f, 2.0f}, {1, 3});
  // L = sum(x W): dL/dW[k][n] = x[k]
  backward(sum(matmul(x, w)));
  CHECK(w.grad().dtype() == DType::f32);
  check_values(w.grad(), {1.0, 1.0, -1.0, -1.0, 2.0, 2.0});
}

TEST_CASE("autograd functions: bad arguments are errors before anything is recorded") {
  Tensor a = leaf({1.0, 2.0, 3.0}, {3});
  Tensor b = leaf({1.0, 2.0}, {2});
  CHECK_THROWS_AS(add(a, b), qt::Error);
  CHECK_THROWS_AS(matmul(a, b), qt::Error);
  CHECK_THROWS_AS(sum(a, {1}), qt::Error);
  CHECK_THROWS_AS(max(a, {-2}), qt::Error);
  CHECK_THROWS_AS(softmax(a, 1), qt::Error);
  CHECK_THROWS_AS(narrow(a, 0, 2, 2), qt::Error);
  CHECK_THROWS_AS(permute(a, {0, 0}), qt::Error);
  CHECK_THROWS_AS(cat({a, ops::ones({2, 2}, DType::f64)}, 0), qt::Error);
  CHECK_THROWS_AS(index_select(a, 0, ops::from_vector(std::vector<int64_t>{3}, {1})), qt::Error);
  CHECK_THROWS_AS(embedding(reshape(a, {3, 1}), ops::from_vector(std::vector<int64_t>{-1}, {1})),
                  qt::Error);
  const Tensor a32 = ops::ones({3}, DType::f32);
  CHECK_THROWS_AS(mul(a, a32), qt::Error);
}
