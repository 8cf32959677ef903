// Tests for autograd/gradcheck.* and, through it, the backward formula of every differentiable op
// of autograd/functions.h. Truth: central finite differences in f64 (gradcheck), which only
// evaluate the forward kernels and never run a backward formula. Inputs are random f64 values on
// random-ish shapes, including broadcasting pairs and non-contiguous leaves (transposed, narrowed
// views). A deliberately wrong backward must fail, so the checker itself is shown to be able to
// fail.
#include <doctest/doctest.h>

#include <cmath>
#include <random>
#include <vector>

#include "autograd/functions.h"
#include "autograd/gradcheck.h"

using namespace qt;

namespace {

using Function = std::function<Tensor(const std::vector<Tensor>&)>;

// A dense f64 leaf with uniform values in [low, high), requiring grad.
Tensor uniform_leaf(const Shape& shape, unsigned seed, double low = -2, double high = 2) {
  std::mt19937 generator(seed);
  std::uniform_real_distribution<double> uniform(low, high);
  Tensor t = Tensor::empty(shape, DType::f64);
  for (int64_t i = 0; i < t.numel(); ++i) t.data<double>()[i] = uniform(generator);
  t.set_requires_grad();
  return t;
}

// Values in [low, high) whose magnitude is at least `margin`, random sign: keeps inputs away from a
// kink at 0 (relu, abs) or a pole (division) by far more than gradcheck's eps.
Tensor away_from_zero_leaf(const Shape& shape, unsigned seed, double margin = 0.2,
                           double high = 2) {
  std::mt19937 generator(seed);
  std::uniform_real_distribution<double> magnitude(margin, high);
  std::bernoulli_distribution negative(0.5);
  Tensor t = Tensor::empty(shape, DType::f64);
  for (int64_t i = 0; i < t.numel(); ++i)
    t.data<double>()[i] = negative(generator) ? -magnitude(generator) : magnitude(generator);
  t.set_requires_grad();
  return t;
}

// A non-contiguous leaf of `shape`: the transpose of a dense [shape[1], shape[0]] tensor.
Tensor transposed_leaf(const Shape& shape, unsigned seed, double low = -2, double high = 2) {
  Tensor base = uniform_leaf({shape[1], shape[0]}, seed, low, high);
  Tensor t = ops::transpose(base.detach(), 0, 1);
  t.set_requires_grad();
  REQUIRE(!t.is_contiguous());
  return t;
}

// A non-contiguous leaf of `shape`: columns 1..shape[last] of a wider dense tensor.
Tensor narrowed_leaf(const Shape& shape, unsigned seed, double low = -2, double high = 2) {
  Shape wide = shape;
  wide.back() += 3;
  Tensor base = uniform_leaf(wide, seed, low, high);
  Tensor t = ops::narrow(base.detach(), -1, 1, shape.back());
  t.set_requires_grad();
  REQUIRE(!t.is_contiguous());
  return t;
}

Tensor ids(const std::vector<int64_t>& values, const Shape& shape) {
  return ops::from_vector(values, shape);
}

void check_gradient(const Function& f, const std::vector<Tensor>& inputs,
                    const GradcheckOptions& options = {}) {
  const GradcheckResult result = gradcheck(f, inputs, options);
  INFO(result.message);
  CHECK(result.ok);
  CHECK(result.max_abs_error < 1e-6);
}

}  // namespace

TEST_CASE(
    "gradcheck: a deliberately wrong backward (2x the true gradient) fails; the true one passes") {
  // y = x^2 recorded by hand with backward factor * 2x: factor 1 is the truth, factor 2 is wrong.
  auto square_with_backward_factor = [](double factor) {
    return [factor](const std::vector<Tensor>& in) {
      const Tensor& x = in[0];
      return record(ops::mul(x, x), "test_square", {x},
                    [x = x.detach(), factor](const Tensor& grad,
                                             const std::vector<bool>&) -> std::vector<Tensor> {
                      return {ops::mul(grad, ops::mul_scalar(x, 2.0 * factor))};
                    });
    };
  };
  const Tensor x = uniform_leaf({3, 4}, 1);
  const GradcheckResult wrong = gradcheck(square_with_backward_factor(2.0), {x});
  CHECK_FALSE(wrong.ok);
  CHECK(wrong.max_abs_error > 1e-3);
  CHECK(wrong.message.find("input 0") != std::string::npos);
  CHECK(wrong.message.find("analytic") != std::string::npos);
  const GradcheckResult right = gradcheck(square_with_backward_factor(1.0), {x});
  INFO(right.message);
  CHECK(right.ok);
}

TEST_CASE("gradcheck: a gradient wrong in a single element is caught and that element is named") {
  // The true gradient of sum-projected x*3, except that element [1, 2] gets an extra 1e-3.
  const Function off_by_one_element = [](const std::vector<Tensor>& in) {
    return record(ops::mul_scalar(in[0], 3.0), "test_scale", {in[0]},
                  [](const Tensor& grad, const std::vector<bool>&) -> std::vector<Tensor> {
                    Tensor g = ops::clone(ops::mul_scalar(grad, 3.0));
                    g.data<double>()[1 * 4 + 2] += 1e-3;
                    return {g};
                  });
  };
  const Tensor x = uniform_leaf({3, 4}, 2);
  const GradcheckResult result = gradcheck(off_by_one_element, {x});
  CHECK_FALSE(result.ok);
  CHECK(result.message.find("[1, 2]") != std::string::npos);
  CHECK(result.max_abs_error == doctest::Approx(1e-3).epsilon(1e-3));
}

TEST_CASE(
    "gradcheck: leaves the inputs' values and existing .grad untouched; bad inputs are errors") {
  Tensor x = narrowed_leaf({3, 4}, 3);
  const std::vector<double> before = ops::to_vector<double>(x);
  const Tensor old_grad = ops::full({3, 4}, 7.0, DType::f64);
  x.set_grad(old_grad);
  const GradcheckResult result =
      gradcheck([](const std::vector<Tensor>& in) { return exp(in[0]); }, {x});
  CHECK(result.ok);
  CHECK(ops::to_vector<double>(x) == before);
  REQUIRE(x.grad().defined());
  CHECK(x.grad().is_same(old_grad));
  CHECK(ops::to_vector<double>(x.grad()) == std::vector<double>(12, 7.0));

  Tensor f32 = ops::ones({2}, DType::f32);
  f32.set_requires_grad();
  CHECK_THROWS_AS(gradcheck([](const std::vector<Tensor>& in) { return in[0]; }, {f32}), qt::Error);
  Tensor expanded = ops::expand(ops::ones({1, 3}, DType::f64), {4, 3});
  expanded.set_requires_grad();
  CHECK_THROWS_AS(gradcheck([](const std::vector<Tensor>& in) { return in[0]; }, {expanded}),
                  qt::Error);
}

TEST_CASE("gradcheck: inputs that do not require grad are held fixed and not checked") {
  Tensor x = uniform_leaf({2, 3}, 4);
  Tensor fixed = uniform_leaf({2, 3}, 5).detach();
  check_gradient([](const std::vector<Tensor>& in) { return mul(in[0], in[1]); }, {x, fixed});
  CHECK_FALSE(fixed.grad().defined());
}

TEST_CASE("gradcheck: views") {
  SUBCASE("view, reshape (of a transposed leaf: copies), flatten") {
    check_gradient(
        [](const std::vector<Tensor>& in) {
          return view(in[0], {4, 3});
        },
        {uniform_leaf({2, 6}, 10)});
    check_gradient([](const std::vector<Tensor>& in) { return reshape(in[0], {-1}); },
                   {transposed_leaf({3, 4}, 11)});
    check_gradient([](const std::vector<Tensor>& in) { return flatten(in[0], 1, 2); },
                   {uniform_leaf({2, 3, 2, 2}, 12)});
    check_gradient([](const std::vector<Tensor>& in) { return flatten(in[0]); },
                   {narrowed_leaf({2, 3}, 13)});
  }
  SUBCASE("permute, transpose") {
    check_gradient(
        [](const std::vector<Tensor>& in) {
          return permute(in[0], {2, 0, 1});
        },
        {uniform_leaf({2, 3, 4}, 14)});
    check_gradient(
        [](const std::vector<Tensor>& in) {
          return permute(in[0], {-1, 0});
        },
        {narrowed_leaf({3, 2}, 15)});
    check_gradient([](const std::vector<Tensor>& in) { return transpose(in[0], 0, -1); },
                   {uniform_leaf({2, 3, 4}, 16)});
  }
  SUBCASE("narrow, select (negative index)") {
    check_gradient([](const std::vector<Tensor>& in) { return narrow(in[0], 1, 1, 2); },
                   {uniform_leaf({3, 4}, 17)});
    check_gradient([](const std::vector<Tensor>& in) { return narrow(in[0], 0, 0, 1); },
                   {transposed_leaf({3, 4}, 18)});
    check_gradient([](const std::vector<Tensor>& in) { return select(in[0], 1, -1); },
                   {uniform_leaf({2, 3, 2}, 19)});
    check_gradient([](const std::vector<Tensor>& in) { return select(in[0], 0, 1); },
                   {narrowed_leaf({3, 4}, 20)});
  }
  SUBCASE("expand (new leading dims and size-1 dims), squeeze, unsqueeze, contiguous") {
    check_gradient(
        [](const std::vector<Tensor>& in) {
          return expand(in[0], {2, 3, 4});
        },
        {uniform_leaf({3, 1}, 21)});
    check_gradient(
        [](const std::vector<Tensor>& in) {
          return expand(in[0], {3, 4});
        },
        {uniform_leaf({4}, 22)});
    check_gradient([](const std::vector<Tensor>& in) { return squeeze(in[0], 1); },
                   {uniform_leaf({3, 1, 2}, 23)});
    check_gradient([](const std::vector<Tensor>& in) { return unsqueeze(in[0], -1); },
                   {transposed_leaf({2, 3}, 24)});
    check_gradient([](const std::vector<Tensor>& in) { return contiguous(in[0]); },
                   {transposed_leaf({2, 3}, 25)});
    check_gradient([](const std::vector<Tensor>& in) { return contiguous(in[0]); },
                   {uniform_leaf({2, 3}, 26)});
  }
  SUBCASE("chains of views read the right elements") {
    check_gradient(
        [](const std::vector<Tensor>& in) {
          return mul(select(transpose(in[0], 0, 1), 0, 2), narrow(reshape(in[0], {4, 3}), 0, 1, 3));
        },
        {uniform_leaf({3, 4}, 27)});
  }
}

TEST_CASE("gradcheck: unary elementwise ops") {
  const Function unary_ops[] = {
      [](const std::vector<Tensor>& in) { return neg(in[0]); },
      [](const std::vector<Tensor>& in) { return exp(in[0]); },
      [](const std::vector<Tensor>& in) { return tanh(in[0]); },
      [](const std::vector<Tensor>& in) { return erf(in[0]); },
      [](const std::vector<Tensor>& in) { return sigmoid(in[0]); },
      [](const std::vector<Tensor>& in) { return gelu(in[0]); },
      [](const std::vector<Tensor>& in) { return relu(in[0]); },
      [](const std::vector<Tensor>& in) { return abs(in[0]); },
      [](const std::vector<Tensor>& in) { return pow(in[0], 2.0); },
      [](const std::vector<Tensor>& in) { return pow(in[0], 3.0); },
      [](const std::vector<Tensor>& in) { return pow(in[0], 0.0); },
      [](const std::vector<Tensor>& in) { return add(in[0], 2.5); },
      [](const std::vector<Tensor>& in) { return mul(in[0], -1.5); },
  };
  for (size_t op = 0; op < std::size(unary_ops); ++op) {
    CAPTURE(op);
    // relu and abs have a kink at 0: all inputs keep |x| >= 0.2.
    check_gradient(unary_ops[op], {away_from_zero_leaf({3, 4}, 30 + op)});
    Tensor transposed = ops::transpose(away_from_zero_leaf({4, 3}, 50 + op).detach(), 0, 1);
    transposed.set_requires_grad();
    check_gradient(unary_ops[op], {transposed});
  }
  // Ops defined for positive inputs only.
  const Function positive_ops[] = {
      [](const std::vector<Tensor>& in) { return log(in[0]); },
      [](const std::vector<Tensor>& in) { return sqrt(in[0]); },
      [](const std::vector<Tensor>& in) { return rsqrt(in[0]); },
      [](const std::vector<Tensor>& in) { return pow(in[0], 0.5); },
      [](const std::vector<Tensor>& in) { return pow(in[0], -1.5); },
  };
  for (size_t op = 0; op < std::size(positive_ops); ++op) {
    CAPTURE(op);
    check_gradient(positive_ops[op], {uniform_leaf({3, 4}, 70 + op, 0.3, 3.0)});
    check_gradient(positive_ops[op], {narrowed_leaf({2, 3}, 80 + op, 0.3, 3.0)});
  }
}

TEST_CASE("gradcheck: clamp away from its boundaries, on both sides of them") {
  // Values at least 0.05 away from low = -0.5 and high = 0.7, on every side: below, inside, above.
  Tensor x =
      ops::from_vector(std::vector<double>{-1.5, -0.8, -0.45, 0.0, 0.3, 0.65, 0.75, 1.9}, {2, 4});
  x.set_requires_grad();
  check_gradient([](const std::vector<Tensor>& in) { return clamp(in[0], -0.5, 0.7); }, {x});
  Tensor t = ops::transpose(x.detach(), 0, 1);
  t.set_requires_grad();
  check_gradient([](const std::vector<Tensor>& in) { return clamp(in[0], -0.5, 0.7); }, {t});
}

TEST_CASE("gradcheck: binary elementwise ops with broadcasting and non-contiguous operands") {
  struct Pair {
    Tensor a, b;
  };
  // Pairs of shapes that broadcast in different ways, plus strided operands.
  auto pairs = [](unsigned seed, double low, double high) {
    return std::vector<Pair>{
        {uniform_leaf({3, 1, 4}, seed, low, high), uniform_leaf({5, 4}, seed + 1, low, high)},
        {uniform_leaf({2, 3}, seed + 2, low, high), uniform_leaf({2, 3}, seed + 3, low, high)},
        {uniform_leaf({4}, seed + 4, low, high), uniform_leaf({3, 1}, seed + 5, low, high)},
        {uniform_leaf({}, seed + 6, low, high), uniform_leaf({2, 3}, seed + 7, low, high)},
        {transposed_leaf({3, 4}, seed + 8, low, high), narrowed_leaf({3, 4}, seed + 9, low, high)},
        {narrowed_leaf({2, 1, 3}, seed + 10, low, high),
         transposed_leaf({4, 3}, seed + 11, low, high)},
    };
  };
  const Function ops_any_sign[] = {
      [](const std::vector<Tensor>& in) { return add(in[0], in[1]); },
      [](const std::vector<Tensor>& in) { return sub(in[0], in[1]); },
      [](const std::vector<Tensor>& in) { return mul(in[0], in[1]); },
      [](const std::vector<Tensor>& in) { return maximum(in[0], in[1]); },
      [](const std::vector<Tensor>& in) { return minimum(in[0], in[1]); },
  };
  for (size_t op = 0; op < std::size(ops_any_sign); ++op) {
    for (const Pair& pair : pairs(100 + 20 * op, -2, 2)) {
      CAPTURE(op);
      CAPTURE(shape_str(pair.a.shape()));
      CAPTURE(shape_str(pair.b.shape()));
      check_gradient(ops_any_sign[op], {pair.a, pair.b});
    }
  }
  // div: the denominator stays in [0.5, 2); pow: the base stays positive (d/db uses log a).
  for (const Pair& pair : pairs(300, 0.5, 2)) {
    CAPTURE(shape_str(pair.a.shape()));
    CAPTURE(shape_str(pair.b.shape()));
    check_gradient([](const std::vector<Tensor>& in) { return div(in[0], in[1]); },
                   {pair.a, pair.b});
    check_gradient([](const std::vector<Tensor>& in) { return pow(in[0], in[1]); },
                   {pair.a, pair.b});
    check_gradient([](const std::vector<Tensor>& in) { return div(in[1], in[0]); },
                   {pair.a, pair.b});
  }
}

TEST_CASE("gradcheck: where, with the condition broadcast against both branches") {
  const Tensor condition =
      ops::from_vector(std::vector<uint8_t>{1, 0, 0, 1, 1, 0, 1, 0}, {2, 1, 4});
  const Function f = [condition](const std::vector<Tensor>& in) {
    return where(condition, in[0], in[1]);
  };
  check_gradient(f, {uniform_leaf({3, 4}, 400), uniform_leaf({2, 3, 1}, 401)});
  check_gradient(f, {transposed_leaf({3, 4}, 402), uniform_leaf({}, 403)});
  // Only one branch requires grad.
  check_gradient(f, {uniform_leaf({2, 3, 4}, 404), uniform_leaf({4}, 405).detach()});
}

TEST_CASE("gradcheck: operators") {
  const Function operators[] = {
      [](const std::vector<Tensor>& in) { return in[0] + in[1]; },
      [](const std::vector<Tensor>& in) { return in[0] - in[1]; },
      [](const std::vector<Tensor>& in) { return in[0] * in[1]; },
      [](const std::vector<Tensor>& in) { return in[0] / (in[1] * in[1] + 1.0); },
      [](const std::vector<Tensor>& in) { return -in[0] * in[1]; },
      [](const std::vector<Tensor>& in) { return (in[0] + 2.0) * (2.0 + in[1]); },
      [](const std::vector<Tensor>& in) { return (in[0] - 2.0) * (3.0 - in[1]); },
      [](const std::vector<Tensor>& in) { return (in[0] * 2.0) * (3.0 * in[1]) + in[0] / 4.0; },
  };
  for (size_t op = 0; op < std::size(operators); ++op) {
    CAPTURE(op);
    check_gradient(operators[op],
                   {uniform_leaf({3, 1, 2}, 500 + op), transposed_leaf({4, 2}, 520 + op)});
  }
}

TEST_CASE("gradcheck: reductions over several axis sets, keepdim on and off, strided inputs") {
  const std::vector<Axes> axis_sets = {{}, {0}, {-1}, {1}, {0, 2}, {0, 1, 2}};
  for (const Axes& axes : axis_sets) {
    for (bool keepdim : {false, true}) {
      CAPTURE(fmt::format("[{}]", fmt::join(axes, ", ")));
      CAPTURE(keepdim);
      const Function all[] = {
          [&](const std::vector<Tensor>& in) { return sum(in[0], axes, keepdim); },
          [&](const std::vector<Tensor>& in) { return mean(in[0], axes, keepdim); },
          [&](const std::vector<Tensor>& in) { return max(in[0], axes, keepdim); },
          [&](const std::vector<Tensor>& in) { return min(in[0], axes, keepdim); },
          [&](const std::vector<Tensor>& in) { return var(in[0], axes, keepdim); },
          [&](const std::vector<Tensor>& in) { return var(in[0], axes, keepdim, 1); },
      };
      for (size_t op = 0; op < std::size(all); ++op) {
        CAPTURE(op);
        // Uniform random values: ties within eps of each other have probability ~1e-6.
        check_gradient(all[op], {uniform_leaf({2, 3, 4}, 600 + op)});
        Tensor permuted = ops::permute(uniform_leaf({4, 2, 3}, 620 + op).detach(), {1, 2, 0});
        permuted.set_requires_grad();
        check_gradient(all[op], {permuted});
      }
    }
  }
  // Rank 0 and rank 1 inputs.
  check_gradient([](const std::vector<Tensor>& in) { return sum(in[0]); }, {uniform_leaf({}, 640)});
  check_gradient([](const std::vector<Tensor>& in) { return max(in[0]); },
                 {uniform_leaf({5}, 641)});
  check_gradient([](const std::vector<Tensor>& in) { return var(in[0], {0}, true, 1); },
                 {uniform_leaf({5}, 642)});
}

TEST_CASE("gradcheck: softmax and log_softmax on every axis, strided inputs") {
  for (int64_t axis : {0, 1, 2, -1}) {
    CAPTURE(axis);
    check_gradient([axis](const std::vector<Tensor>& in) { return softmax(in[0], axis); },
                   {uniform_leaf({2, 3, 4}, 700)});
    check_gradient([axis](const std::vector<Tensor>& in) { return log_softmax(in[0], axis); },
                   {uniform_leaf({2, 3, 4}, 701)});
    Tensor permuted = ops::permute(uniform_leaf({4, 2, 3}, 702).detach(), {1, 2, 0});
    permuted.set_requires_grad();
    check_gradient([axis](const std::vector<Tensor>& in) { return softmax(in[0], axis); },
                   {permuted});
    check_gradient([axis](const std::vector<Tensor>& in) { return log_softmax(in[0], axis); },
                   {permuted});
  }
}

TEST_CASE("gradcheck: matmul for plain, batched, broadcast, rank-1 and transposed operands") {
  const Function f = [](const std::vector<Tensor>& in) { return matmul(in[0], in[1]); };
  struct Case {
    Shape a, b;
  };
  const Case cases[] = {
      {{3, 4}, {4, 5}},           // plain
      {{2, 3, 4}, {2, 4, 5}},     // batched
      {{2, 1, 3, 4}, {3, 4, 2}},  // batch dims broadcast both ways
      {{2, 3, 4}, {4, 5}},        // shared right operand (the Linear case)
      {{3, 4}, {2, 4, 5}},        // shared left operand
      {{4}, {4, 5}},              // rank-1 left
      {{3, 4}, {4}},              // rank-1 right
      {{4}, {4}},                 // dot product
      {{4}, {2, 4, 3}},           // rank-1 left, batched right
      {{2, 3, 4}, {4}},           // batched left, rank-1 right
      {{1, 1}, {1, 3}},           // size-1 everything
  };
  unsigned seed = 800;
  for (const Case& c : cases) {
    CAPTURE(shape_str(c.a));
    CAPTURE(shape_str(c.b));
    check_gradient(f, {uniform_leaf(c.a, seed), uniform_leaf(c.b, seed + 1)});
    seed += 2;
  }
  // Transposed and narrowed operands are handed to GEMM as strided views.
  check_gradient(f, {transposed_leaf({3, 4}, 850), transposed_leaf({4, 2}, 851)});
  check_gradient(f, {narrowed_leaf({3, 4}, 852), narrowed_leaf({4, 2}, 853)});
  Tensor batched_transposed = ops::transpose(uniform_leaf({2, 4, 3}, 854).detach(), 1, 2);
  batched_transposed.set_requires_grad();
  check_gradient(f, {batched_transposed, uniform_leaf({4, 5}, 855)});
  // Only one operand requires grad (the other one is then not kept for the backward pass).
  check_gradient(f, {uniform_leaf({2, 3, 4}, 857), uniform_leaf({4, 5}, 858).detach()});
  check_gradient(f, {uniform_leaf({3}, 859).detach(), uniform_leaf({2, 3, 4}, 860)});
  // The same operand on both sides: the two gradient contributions add.
  check_gradient(
      [](const std::vector<Tensor>& in) { return matmul(in[0], transpose(in[0], 0, 1)); },
      {uniform_leaf({3, 4}, 856)});
}

TEST_CASE("gradcheck: matmul followed by reductions (gradients that arrive as broadcast views)") {
  check_gradient([](const std::vector<Tensor>& in) { return sum(matmul(in[0], in[1])); },
                 {uniform_leaf({2, 3, 4}, 860), uniform_leaf({4, 2}, 861)});
  check_gradient(
      [](const std::vector<Tensor>& in) {
        return mean(matmul(in[0], in[1]), {0, 1});
      },
      {uniform_leaf({2, 3, 4}, 862), uniform_leaf({4, 2}, 863)});
  check_gradient(
      [](const std::vector<Tensor>& in) {
        return matmul(expand(in[0], {3, 4}), in[1]);
      },
      {uniform_leaf({4}, 864), uniform_leaf({4, 2}, 865)});
}

TEST_CASE("gradcheck: cat and stack on several axes; inputs that do not require grad get nothing") {
  for (int64_t axis : {0, 1, -1}) {
    CAPTURE(axis);
    Shape a{2, 3, 2}, b{2, 3, 2}, c{2, 3, 2};
    const int64_t normalized = axis < 0 ? axis + 3 : axis;
    a[normalized] = 1;
    c[normalized] = 3;
    const Tensor fixed = uniform_leaf(b, 901).detach();
    check_gradient(
        [axis](const std::vector<Tensor>& in) {
          return cat({in[0], in[1], in[2]}, axis);
        },
        {uniform_leaf(a, 904), fixed, uniform_leaf(c, 905)});
  }
  check_gradient(
      [](const std::vector<Tensor>& in) {
        return cat({in[0], in[1]}, 1);
      },
      {transposed_leaf({2, 3}, 906), narrowed_leaf({2, 2}, 907)});
  for (int64_t axis : {0, 1, 2, -1}) {
    CAPTURE(axis);
    check_gradient(
        [axis](const std::vector<Tensor>& in) {
          return stack({in[0], in[1], in[2]}, axis);
        },
        {uniform_leaf({2, 3}, 910), transposed_leaf({2, 3}, 911), uniform_leaf({2, 3}, 912)});
  }
  // The same tensor stacked twice collects both slices' gradients.
  check_gradient(
      [](const std::vector<Tensor>& in) {
        return stack({in[0], in[0]}, 1);
      },
      {uniform_leaf({3}, 913)});
}

TEST_CASE(
    "gradcheck: gather, index_select and embedding with repeated indices (w.r.t. the float "
    "input)") {
  // Repeated indices make the backward accumulate several gradients into one element.
  const Tensor gather_rows = ids({0, 2, 2, 1, 0, 0, 1, 1}, {2, 4});
  check_gradient(
      [gather_rows](const std::vector<Tensor>& in) { return gather(in[0], 0, gather_rows); },
      {uniform_leaf({3, 4}, 1000)});
  const Tensor gather_columns = ids({3, 3, 0, 1, 1, 1}, {3, 2});
  check_gradient(
      [gather_columns](const std::vector<Tensor>& in) { return gather(in[0], 1, gather_columns); },
      {transposed_leaf({3, 4}, 1001)});
  const Tensor gather_last = ids({0, 1, 1, 0, 2, 2, 0, 0, 1, 2, 1, 0}, {2, 3, 2});
  check_gradient(
      [gather_last](const std::vector<Tensor>& in) { return gather(in[0], -1, gather_last); },
      {uniform_leaf({2, 3, 3}, 1002)});

  const Tensor select_index = ids({2, 0, 2, 2}, {4});
  for (int64_t axis : {0, 1, -1}) {
    CAPTURE(axis);
    check_gradient(
        [select_index, axis](const std::vector<Tensor>& in) {
          return index_select(in[0], axis, select_index);
        },
        {uniform_leaf({3, 3, 3}, 1003)});
  }
  check_gradient(
      [select_index](const std::vector<Tensor>& in) {
        return index_select(in[0], 1, select_index);
      },
      {narrowed_leaf({2, 3}, 1004)});

  const Tensor token_ids = ids({4, 1, 4, 0, 1, 4}, {2, 3});
  check_gradient([token_ids](const std::vector<Tensor>& in) { return embedding(in[0], token_ids); },
                 {uniform_leaf({5, 3}, 1005)});
  check_gradient([token_ids](const std::vector<Tensor>& in) { return embedding(in[0], token_ids); },
                 {transposed_leaf({5, 2}, 1006)});
  const Tensor one_id = ids({3}, {});
  check_gradient([one_id](const std::vector<Tensor>& in) { return embedding(in[0], one_id); },
                 {uniform_leaf({5, 2}, 1007)});
}

TEST_CASE("gradcheck: a small network mixes everything (attention-like block)") {
  // softmax(q k^T / 2) v, then layer-norm-like centring, gelu and a mean: exercises the engine's
  // gradient summation where one leaf feeds several ops.
  const Function block = [](const std::vector<Tensor>& in) {
    const Tensor& x = in[0];
    const Tensor& w = in[1];
    const Tensor q = matmul(x, w);
    const Tensor scores = matmul(q, transpose(x, -1, -2)) / 2.0;
    const Tensor attended = matmul(softmax(scores, -1), x);
    const Tensor centred = attended - mean(attended, {-1}, true);
    const Tensor normed = centred * rsqrt(var(attended, {-1}, true) + 1e-2);
    return mean(gelu(normed), {1});
  };
  check_gradient(block, {uniform_leaf({2, 3, 4}, 1100, -1, 1), uniform_leaf({4, 4}, 1101, -1, 1)});
}
