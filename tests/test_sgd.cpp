// Tests for optim/sgd.*: SGD with momentum as torch.optim.SGD. Truth: values worked out by hand
// from the update rule (the arithmetic is written out in the comments).
#include <doctest/doctest.h>

#include <string>
#include <vector>

#include "optim/sgd.h"
#include "tensor/create.h"
#include "tensor/elementwise.h"
#include "tensor/view.h"

using namespace qt;
using qt::optim::ParameterGroup;
using qt::optim::SGD;
using qt::optim::SGDOptions;

namespace {

Tensor vec(std::vector<double> values, DType dtype) {
  Tensor t = ops::from_vector(values, {static_cast<int64_t>(values.size())});
  return dtype == DType::f64 ? t : ops::to(t, dtype);
}

}  // namespace

TEST_CASE("SGD: plain gradient descent p -= lr * g") {
  Tensor p = vec({1.0, -2.0}, DType::f64);
  p.set_grad(vec({0.5, 1.0}, DType::f64));
  SGD optimizer({ParameterGroup{{"p"}, {p}}});
  optimizer.step(0.1);
  CHECK(p.data<double>()[0] == doctest::Approx(0.95).epsilon(1e-15));
  CHECK(p.data<double>()[1] == doctest::Approx(-2.1).epsilon(1e-15));
  CHECK(optimizer.state_tensors().empty());  // no momentum, no state
}

TEST_CASE("SGD: momentum and weight decay, two steps by hand") {
  // p = [1, -2], lr 0.1, momentum 0.9, wd 0.01, g1 = [0.5, 1], g2 = [-1, 0.25].
  // step 1: d = g1 + 0.01 p = [0.51, 0.98]; buf = d;  p = p - 0.1 d = [0.949, -2.098]
  // step 2: d = g2 + 0.01 p = [-0.99051, 0.22902]
  //         buf = 0.9 [0.51, 0.98] + d = [-0.53151, 1.11102]
  //         p = [0.949 + 0.053151, -2.098 - 0.111102] = [1.002151, -2.209102]
  for (DType dtype : {DType::f64, DType::f32}) {
    CAPTURE(dtype_name(dtype));
    const double tolerance = dtype == DType::f64 ? 1e-14 : 1e-6;
    Tensor p = vec({1.0, -2.0}, dtype);
    SGD optimizer({ParameterGroup{{"p"}, {p}, 0.01, 1.0}}, SGDOptions{0.9, 0.0, false});
    p.set_grad(vec({0.5, 1.0}, dtype));
    optimizer.step(0.1);
    CHECK(p.at({0}) == doctest::Approx(0.949).epsilon(tolerance));
    CHECK(p.at({1}) == doctest::Approx(-2.098).epsilon(tolerance));
    CHECK(optimizer.momentum_buffer("p").at({0}) == doctest::Approx(0.51).epsilon(tolerance));
    p.set_grad(vec({-1.0, 0.25}, dtype));
    optimizer.step(0.1);
    CHECK(optimizer.momentum_buffer("p").at({0}) == doctest::Approx(-0.53151).epsilon(tolerance));
    CHECK(optimizer.momentum_buffer("p").at({1}) == doctest::Approx(1.11102).epsilon(tolerance));
    CHECK(p.at({0}) == doctest::Approx(1.002151).epsilon(tolerance));
    CHECK(p.at({1}) == doctest::Approx(-2.209102).epsilon(tolerance));
  }
}

TEST_CASE("SGD: dampening applies from the second step; nesterov") {
  // Dampening 0.5, momentum 0.9, lr 1, p = 0, g1 = 1, g2 = 2:
  //   step 1: buf = 1 (no dampening on the first step), p = -1
  //   step 2: buf = 0.9 * 1 + 0.5 * 2 = 1.9, p = -1 - 1.9 = -2.9
  Tensor p = vec({0.0}, DType::f64);
  SGD damped({ParameterGroup{{"p"}, {p}}}, SGDOptions{0.9, 0.5, false});
  p.set_grad(vec({1.0}, DType::f64));
  damped.step(1.0);
  CHECK(p.at({0}) == doctest::Approx(-1.0).epsilon(1e-15));
  p.set_grad(vec({2.0}, DType::f64));
  damped.step(1.0);
  CHECK(p.at({0}) == doctest::Approx(-2.9).epsilon(1e-15));

  // Nesterov, momentum 0.9, lr 1, p = 0, g1 = 1, g2 = 2:
  //   step 1: buf = 1, d = 1 + 0.9 * 1 = 1.9, p = -1.9
  //   step 2: buf = 0.9 + 2 = 2.9, d = 2 + 0.9 * 2.9 = 4.61, p = -6.51
  Tensor q = vec({0.0}, DType::f64);
  SGD nesterov({ParameterGroup{{"q"}, {q}}}, SGDOptions{0.9, 0.0, true});
  q.set_grad(vec({1.0}, DType::f64));
  nesterov.step(1.0);
  CHECK(q.at({0}) == doctest::Approx(-1.9).epsilon(1e-15));
  q.set_grad(vec({2.0}, DType::f64));
  nesterov.step(1.0);
  CHECK(q.at({0}) == doctest::Approx(-6.51).epsilon(1e-14));
}

TEST_CASE("SGD: lr_scale per group, parameters without grad are skipped") {
  Tensor a = vec({1.0}, DType::f64), b = vec({1.0}, DType::f64), c = vec({1.0}, DType::f64);
  SGD optimizer(
      {ParameterGroup{{"a", "c"}, {a, c}, 0.0, 1.0}, ParameterGroup{{"b"}, {b}, 0.0, 0.25}},
      SGDOptions{0.5});
  a.set_grad(vec({1.0}, DType::f64));
  b.set_grad(vec({1.0}, DType::f64));
  optimizer.step(0.4);
  CHECK(a.at({0}) == doctest::Approx(0.6).epsilon(1e-15));  // 1 - 0.4
  CHECK(b.at({0}) == doctest::Approx(0.9).epsilon(1e-15));  // 1 - 0.1
  CHECK(c.at({0}) == 1.0);
  CHECK_FALSE(optimizer.momentum_buffer("c").defined());
}

TEST_CASE("SGD: state round trip and validation") {
  Tensor p = vec({1.0, 2.0}, DType::f32), q = vec({1.0, 2.0}, DType::f32);
  SGD first({ParameterGroup{{"p"}, {p}}}, SGDOptions{0.9});
  SGD second({ParameterGroup{{"p"}, {q}}}, SGDOptions{0.9});
  p.set_grad(vec({0.5, -0.5}, DType::f32));
  first.step(0.1);
  ops::copy_into(q, p);
  second.load_state_tensors(first.state_tensors());
  p.set_grad(vec({0.25, 1.0}, DType::f32));
  q.set_grad(vec({0.25, 1.0}, DType::f32));
  first.step(0.1);
  second.step(0.1);
  CHECK(ops::to_vector<float>(p) == ops::to_vector<float>(q));

  CHECK_THROWS_WITH_AS(second.load_state_tensors({{"momentum.p", ops::zeros({3})}}),
                       doctest::Contains("'momentum.p'"), Error);
  CHECK_THROWS_WITH_AS(second.load_state_tensors({{"momentum.x", ops::zeros({2})}}),
                       doctest::Contains("unexpected entry 'momentum.x'"), Error);
  SGD plain({ParameterGroup{{"p"}, {q}}});
  CHECK_THROWS_WITH_AS(plain.load_state_tensors({{"momentum.p", ops::zeros({2})}}),
                       doctest::Contains("momentum 0"), Error);
}

TEST_CASE("SGD: invalid options throw") {
  Tensor p = ops::zeros({2});
  CHECK_THROWS_AS(SGD({ParameterGroup{{"p"}, {p}}}, SGDOptions{-0.1}), Error);
  CHECK_THROWS_WITH_AS(SGD({ParameterGroup{{"p"}, {p}}}, SGDOptions{0.9, 0.1, true}),
                       doctest::Contains("nesterov"), Error);
  CHECK_THROWS_WITH_AS(SGD({ParameterGroup{{"p"}, {p}}}, SGDOptions{0.0, 0.0, true}),
                       doctest::Contains("nesterov"), Error);
  SGD optimizer({ParameterGroup{{"p"}, {p}}});
  CHECK_THROWS_AS(optimizer.step(-1.0), Error);
}
