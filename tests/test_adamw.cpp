// Tests for optim/adamw.*: AdamW as torch.optim.AdamW.
// Truth: (1) the hand-checkable first step (each parameter moves by lr * sign(g), after the
// decoupled decay p * (1 - lr wd)); (2) a float64 reimplementation of the published update written
// out element by element here, over several steps with varying lr, two groups, and a parameter that
// misses its gradient on one step. Bit-identical results with 1 and 2 threads.
#include <doctest/doctest.h>

#include <cmath>
#include <cstring>
#include <random>
#include <string>
#include <vector>

#include "optim/adamw.h"
#include "tensor/create.h"
#include "tensor/threads.h"
#include "tensor/view.h"

#include "tests/test_util.h"

using namespace qt;
using namespace qt::test;
using qt::optim::AdamW;
using qt::optim::AdamWOptions;
using qt::optim::ParameterGroup;

namespace {

// The float64 reference: one parameter's values and state.
struct ReferenceParameter {
  std::vector<double> p, m, v;
  int64_t step = 0;
};

// One AdamW update of `r` written directly from the formula (Loshchilov & Hutter, PyTorch docs).
void reference_adamw_step(ReferenceParameter& r, const std::vector<double>& g, double lr, double wd,
                          double beta1, double beta2, double eps) {
  if (r.m.empty()) {
    r.m.assign(r.p.size(), 0.0);
    r.v.assign(r.p.size(), 0.0);
  }
  r.step += 1;
  const double bc1 = 1 - std::pow(beta1, r.step);
  const double bc2 = 1 - std::pow(beta2, r.step);
  for (size_t i = 0; i < r.p.size(); ++i) {
    r.p[i] *= 1 - lr * wd;
    r.m[i] = beta1 * r.m[i] + (1 - beta1) * g[i];
    r.v[i] = beta2 * r.v[i] + (1 - beta2) * g[i] * g[i];
    const double m_hat = r.m[i] / bc1;
    const double v_hat = r.v[i] / bc2;
    r.p[i] -= lr * m_hat / (std::sqrt(v_hat) + eps);
  }
}

std::vector<double> random_values(size_t n, unsigned seed, double std = 1.0) {
  std::mt19937 generator(seed);
  std::normal_distribution<double> normal(0.0, std);
  std::vector<double> out(n);
  for (double& x : out) x = normal(generator);
  return out;
}

Tensor tensor_from(const std::vector<double>& values, const Shape& shape, DType dtype) {
  Tensor t = Tensor::empty(shape, dtype);
  for (size_t i = 0; i < values.size(); ++i) {
    if (dtype == DType::f32)
      t.data<float>()[i] = static_cast<float>(values[i]);
    else
      t.data<double>()[i] = values[i];
  }
  return t;
}

// The values of a tensor as stored (f32 values widened exactly).
std::vector<double> values_of(const Tensor& t) {
  return elements(t);
}

}  // namespace

TEST_CASE("AdamW: the first step moves each parameter by lr * sign(g)") {
  const double lr = 1e-3;
  Tensor p = random_tensor({4, 5}, DType::f32, 1);
  const std::vector<double> before = values_of(p);
  Tensor g = random_tensor({4, 5}, DType::f32, 2);
  p.set_grad(g);
  AdamW optimizer({ParameterGroup{{"p"}, {p}, 0.0, 1.0}});
  optimizer.step(lr);
  const std::vector<double> after = values_of(p);
  const std::vector<double> grads = values_of(g);
  for (size_t i = 0; i < before.size(); ++i) {
    const double sign = grads[i] > 0 ? 1.0 : -1.0;
    // |g| >= ~1e-3 here, so eps changes the step by < 1e-5 relative; f32 rounding of p ~ 1e-7.
    CHECK(std::abs(after[i] - (before[i] - lr * sign)) < 4e-7);
  }
  CHECK(optimizer.state("p").step == 1);
}

TEST_CASE("AdamW: decoupled weight decay is applied before the Adam step") {
  const double lr = 0.01, wd = 0.1;
  Tensor p = ops::from_vector(std::vector<double>{2.0, -4.0, 0.5}, {3});
  p.set_grad(ops::from_vector(std::vector<double>{0.3, -0.2, -5.0}, {3}));
  AdamW optimizer({ParameterGroup{{"p"}, {p}, wd, 1.0}}, AdamWOptions{0.9, 0.999, 1e-8});
  optimizer.step(lr);
  // p * (1 - lr wd) - lr sign(g) (eps shifts the step by lr * eps / |g| <= 1e-9 relative):
  // 2 * 0.999 - 0.01 = 1.988; -4 * 0.999 + 0.01 = -3.986; 0.5 * 0.999 + 0.01 = 0.5095.
  const std::vector<double> expected = {1.988, -3.986, 0.5095};
  for (int i = 0; i < 3; ++i)
    CHECK(p.data<double>()[i] == doctest::Approx(expected[i]).epsilon(1e-9));
  // First moments (1 - beta1) g and second moments (1 - beta2) g^2.
  CHECK(optimizer.state("p").m.data<double>()[2] == doctest::Approx(0.1 * -5.0).epsilon(1e-12));
  CHECK(optimizer.state("p").v.data<double>()[2] == doctest::Approx(0.001 * 25.0).epsilon(1e-12));
}

TEST_CASE("AdamW: several steps match a float64 reference (groups, lr_scale, missing grads)") {
  const double beta1 = 0.9, beta2 = 0.95, eps = 1e-8;
  for (DType dtype : {DType::f32, DType::f64}) {
    CAPTURE(dtype_name(dtype));
    // Group 0: two decayed parameters; group 1: one without decay and half the learning rate.
    const std::vector<Shape> shapes = {{3, 4}, {7}, {2, 2, 3}};
    std::vector<ReferenceParameter> reference(3);
    std::vector<Tensor> params;
    for (size_t k = 0; k < 3; ++k) {
      reference[k].p = random_values(numel_of(shapes[k]), 10 + k);
      params.push_back(tensor_from(reference[k].p, shapes[k], dtype));
      // The reference starts from exactly the stored (possibly f32-rounded) values.
      reference[k].p = values_of(params[k]);
    }
    const std::vector<double> weight_decay = {0.1, 0.1, 0.0};
    const std::vector<double> lr_scale = {1.0, 1.0, 0.5};
    AdamW optimizer({ParameterGroup{{"a", "b"}, {params[0], params[1]}, 0.1, 1.0},
                     ParameterGroup{{"c"}, {params[2]}, 0.0, 0.5}},
                    AdamWOptions{beta1, beta2, eps});
    const std::vector<double> lrs = {1e-3, 2e-3, 3e-3, 2.5e-3, 1e-3, 5e-4};
    for (size_t t = 0; t < lrs.size(); ++t) {
      for (size_t k = 0; k < 3; ++k) {
        // Parameter "b" gets no gradient at step 2: it must be skipped, its step count frozen.
        if (k == 1 && t == 2) {
          params[k].set_grad(Tensor());
          continue;
        }
        const Tensor g =
            tensor_from(random_values(numel_of(shapes[k]), 100 * t + k, 0.5), shapes[k], dtype);
        params[k].set_grad(g);
        reference_adamw_step(reference[k], values_of(g), lrs[t] * lr_scale[k], weight_decay[k],
                             beta1, beta2, eps);
      }
      optimizer.step(lrs[t]);
    }
    const double tolerance = dtype == DType::f32 ? 2e-6 : 1e-13;
    const char* names[] = {"a", "b", "c"};
    for (size_t k = 0; k < 3; ++k) {
      CAPTURE(k);
      const std::vector<double> got = values_of(params[k]);
      const std::vector<double> m = values_of(optimizer.state(names[k]).m);
      const std::vector<double> v = values_of(optimizer.state(names[k]).v);
      CHECK(optimizer.state(names[k]).step == reference[k].step);
      for (size_t i = 0; i < got.size(); ++i) {
        CHECK(std::abs(got[i] - reference[k].p[i]) <=
              tolerance * (1 + std::abs(reference[k].p[i])));
        CHECK(std::abs(m[i] - reference[k].m[i]) <= tolerance * (1 + std::abs(reference[k].m[i])));
        CHECK(std::abs(v[i] - reference[k].v[i]) <= tolerance * (1 + std::abs(reference[k].v[i])));
      }
    }
    CHECK(optimizer.state("b").step == 5);
    CHECK(optimizer.state("a").step == 6);
  }
}

TEST_CASE("AdamW: a parameter that never had a gradient is untouched and has no state") {
  Tensor a = ops::ones({3});
  Tensor b = ops::ones({2});
  a.set_grad(ops::full({3}, 0.5));
  AdamW optimizer({ParameterGroup{{"a", "b"}, {a, b}, 0.5, 1.0}});
  optimizer.step(0.1);
  for (int i = 0; i < 2; ++i) CHECK(b.data<float>()[i] == 1.0f);  // not even weight decay
  CHECK(optimizer.state("b").step == 0);
  CHECK_FALSE(optimizer.state("b").m.defined());
  CHECK(optimizer.state_tensors().size() == 3);  // m, v, step of "a" only
}

TEST_CASE("AdamW: results are bit-identical with 1 and 2 threads") {
  const int saved = num_threads();
  const Shape shape = {300, 401};  // above the parallel threshold, several chunks
  std::vector<std::vector<float>> results;
  for (int threads : {1, 2}) {
    set_num_threads(threads);
    Tensor p = random_tensor(shape, DType::f32, 5);
    AdamW optimizer({ParameterGroup{{"p"}, {p}, 0.01, 1.0}});
    for (int t = 0; t < 3; ++t) {
      p.set_grad(random_tensor(shape, DType::f32, 50 + t));
      optimizer.step(1e-3);
    }
    results.push_back(ops::to_vector<float>(p));
  }
  set_num_threads(saved);
  CHECK(std::memcmp(results[0].data(), results[1].data(), results[0].size() * sizeof(float)) == 0);
}

TEST_CASE("AdamW: state round trip continues the run bit-identically") {
  auto make = [](unsigned seed) { return random_tensor({5, 6}, DType::f32, seed); };
  Tensor p1 = make(1), q1 = make(2);
  Tensor p2 = ops::clone(p1), q2 = ops::clone(q1);
  AdamW first({ParameterGroup{{"p", "q"}, {p1, q1}, 0.01, 1.0}});
  for (int t = 0; t < 2; ++t) {
    p1.set_grad(make(10 + t));
    if (t == 0)
      q1.set_grad(make(20));
    else
      q1.set_grad(Tensor());
    first.step(1e-2);
  }
  // A second optimizer over copies of the parameters, given the first one's state.
  ops::copy_into(p2, p1);
  ops::copy_into(q2, q1);
  AdamW second({ParameterGroup{{"p", "q"}, {p2, q2}, 0.01, 1.0}});
  second.load_state_tensors(first.state_tensors());
  CHECK(second.state("p").step == 2);
  CHECK(second.state("q").step == 1);
  for (int t = 2; t < 4; ++t) {
    p1.set_grad(make(10 + t));
    q1.set_grad(make(20 + t));
    p2.set_grad(make(10 + t));
    q2.set_grad(make(20 + t));
    first.step(1e-2);
    second.step(1e-2);
  }
  CHECK(ops::to_vector<float>(p1) == ops::to_vector<float>(p2));
  CHECK(ops::to_vector<float>(q1) == ops::to_vector<float>(q2));
  // The loaded state was copied, not shared: the two optimizers' m buffers are distinct.
  CHECK_FALSE(first.state("p").m.storage() == second.state("p").m.storage());
}

TEST_CASE("AdamW: load_state_tensors rejects bad state and reports every problem") {
  Tensor p = ops::zeros({2, 3});
  AdamW optimizer({ParameterGroup{{"p"}, {p}, 0.0, 1.0}});
  const optim::NamedTensors bad = {
      {"m.p", ops::zeros({3, 2})},              // wrong shape
      {"v.p", ops::zeros({2, 3}, DType::f64)},  // wrong dtype
      {"step.p", ops::scalar(0, DType::i64)},   // step must be >= 1
      {"m.unknown", ops::zeros({2, 3})},        // no such parameter
      {"w.p", ops::zeros({2, 3})},              // no such state kind
  };
  try {
    optimizer.load_state_tensors(bad);
    FAIL("expected an error");
  } catch (const Error& e) {
    const std::string message = e.what();
    CHECK(message.find("'m.p'") != std::string::npos);
    CHECK(message.find("'v.p'") != std::string::npos);
    CHECK(message.find("'step.p'") != std::string::npos);
    CHECK(message.find("'m.unknown'") != std::string::npos);
    CHECK(message.find("'w.p'") != std::string::npos);
  }
  // Incomplete state: m and step without v.
  CHECK_THROWS_WITH_AS(optimizer.load_state_tensors(
                           {{"m.p", ops::zeros({2, 3})}, {"step.p", ops::scalar(1, DType::i64)}}),
                       doctest::Contains("needs all of m, v and step"), Error);
  CHECK(optimizer.state("p").step == 0);  // unchanged by the failed loads
}

TEST_CASE("AdamW: invalid options, groups and learning rates throw") {
  Tensor p = ops::zeros({2, 3});
  CHECK_THROWS_AS(AdamW({ParameterGroup{{"p"}, {p}}}, AdamWOptions{1.0, 0.999, 1e-8}), Error);
  CHECK_THROWS_AS(AdamW({ParameterGroup{{"p"}, {p}}}, AdamWOptions{0.9, -0.1, 1e-8}), Error);
  CHECK_THROWS_AS(AdamW({ParameterGroup{{"p"}, {p}}}, AdamWOptions{0.9, 0.999, -1.0}), Error);
  CHECK_THROWS_WITH_AS(AdamW({ParameterGroup{{"p"}, {ops::transpose(p, 0, 1)}}}),
                       doctest::Contains("not contiguous"), Error);
  CHECK_THROWS_WITH_AS(AdamW({ParameterGroup{{"p"}, {ops::zeros({2}, DType::i64)}}}),
                       doctest::Contains("dtype i64"), Error);
  CHECK_THROWS_WITH_AS(AdamW({ParameterGroup{{"p", "q"}, {p}}}), doctest::Contains("2 names for 1"),
                       Error);
  CHECK_THROWS_WITH_AS(
      AdamW({ParameterGroup{{"p"}, {p}}, ParameterGroup{{"p"}, {ops::zeros({1})}}}),
      doctest::Contains("appears twice"), Error);
  AdamW optimizer({ParameterGroup{{"p"}, {p}}});
  CHECK_THROWS_AS(optimizer.step(-1e-3), Error);
  CHECK_THROWS_AS(optimizer.step(std::nan("")), Error);
  CHECK_THROWS_WITH_AS(optimizer.state("nope"), doctest::Contains("'nope'"), Error);
  // Without names, names are made up per group.
  AdamW unnamed({ParameterGroup{{}, {ops::zeros({1}), ops::zeros({1})}}});
  CHECK(unnamed.parameter_names() == std::vector<std::string>{"group0.0", "group0.1"});
}
