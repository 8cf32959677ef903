// Tests for tensor/elementwise*.cpp: every op against a naive float64 loop over multi-indices.
//
// Truth: inputs come from std::mt19937_64 (not from the framework's RNG); each expected element is
// computed in double from the input elements read with Tensor::at (core code, independent of the
// kernels), with broadcasting done by hand on the index. Special values (gelu(1), sigmoid(+-1000),
// erf) are hand-computed constants; gelu_backward is also checked against finite differences.
#include <doctest/doctest.h>

#include <cmath>
#include <cstring>
#include <functional>
#include <limits>
#include <numbers>
#include <random>
#include <string>
#include <vector>

#include "tensor/create.h"
#include "tensor/elementwise.h"
#include "tensor/threads.h"
#include "tensor/view.h"

using namespace qt;

namespace {

// ---- helpers

// Uniform values in [low, high) from mt19937_64, rounded to the dtype (integers: floor).
Tensor random_tensor(const Shape& shape, DType dtype, uint64_t seed, double low = -3,
                     double high = 3) {
  std::mt19937_64 engine(seed);
  std::uniform_real_distribution<double> uniform(low, high);
  Tensor t = Tensor::empty(shape, dtype);
  dispatch_dtype(dtype, [&](auto tag) {
    using T = decltype(tag);
    T* data = t.data<T>();
    for (int64_t i = 0; i < t.numel(); ++i) {
      const double v = uniform(engine);
      data[i] = std::is_floating_point_v<T> ? static_cast<T>(v) : static_cast<T>(std::floor(v));
    }
  });
  return t;
}

// Every multi-index of `shape` in row-major order (one empty index for rank 0, none if numel is 0).
std::vector<std::vector<int64_t>> all_indices(const Shape& shape) {
  std::vector<std::vector<int64_t>> result;
  if (numel_of(shape) == 0) return result;
  std::vector<int64_t> index(shape.size(), 0);
  while (true) {
    result.push_back(index);
    int64_t axis = static_cast<int64_t>(shape.size()) - 1;
    while (axis >= 0 && ++index[axis] == shape[axis]) index[axis--] = 0;
    if (axis < 0) return result;
  }
}

// The element of `t` that broadcasting reads for output index `index` (right-aligned; size-1 -> 0).
double broadcast_at(const Tensor& t, const std::vector<int64_t>& index) {
  std::vector<int64_t> source(t.dim());
  const size_t lead = index.size() - t.shape().size();
  for (size_t i = 0; i < source.size(); ++i) source[i] = t.shape()[i] == 1 ? 0 : index[i + lead];
  return t.at(source);
}

// NumPy broadcast shape computed independently of qt::broadcast_shapes.
Shape expected_broadcast(const Shape& a, const Shape& b) {
  Shape out(std::max(a.size(), b.size()), 1);
  for (size_t i = 0; i < out.size(); ++i) {
    const int64_t da = i < a.size() ? a[a.size() - 1 - i] : 1;
    const int64_t db = i < b.size() ? b[b.size() - 1 - i] : 1;
    out[out.size() - 1 - i] = da == 1 ? db : da;
  }
  return out;
}

bool close(double actual, double expected, double rtol, double atol) {
  if (std::isnan(expected)) return std::isnan(actual);
  if (std::isinf(expected)) return actual == expected;
  return std::abs(actual - expected) <= atol + rtol * std::abs(expected);
}

struct Tolerance {
  double rtol, atol;
};
Tolerance tolerance_for(DType dtype) {
  if (dtype == DType::f32) return {3e-6, 1e-6};
  if (dtype == DType::f64) return {1e-13, 1e-15};
  return {0, 0};  // integers: exact
}

using UnaryOp = std::function<Tensor(const Tensor&)>;
using BinaryOp = std::function<Tensor(const Tensor&, const Tensor&)>;

void check_unary(const char* name, const UnaryOp& op,
                 const std::function<double(double)>& reference, const Tensor& x, DType out_dtype) {
  CAPTURE(name);
  CAPTURE(shape_str(x.shape()));
  CAPTURE(dtype_name(x.dtype()));
  const Tensor y = op(x);
  REQUIRE(y.shape() == x.shape());
  REQUIRE(y.dtype() == out_dtype);
  const Tolerance tol = tolerance_for(x.dtype());
  int64_t mismatches = 0;
  for (const auto& index : all_indices(x.shape())) {
    const double input = x.at(index), expected = reference(input), actual = y.at(index);
    if (!close(actual, expected, tol.rtol, tol.atol)) {
      if (mismatches++ < 3)
        FAIL_CHECK(name << "(" << input << ") = " << actual << ", expected " << expected);
    }
  }
  CHECK(mismatches == 0);
}

void check_binary(const char* name, const BinaryOp& op,
                  const std::function<double(double, double)>& reference, const Tensor& a,
                  const Tensor& b, DType out_dtype) {
  CAPTURE(name);
  CAPTURE(shape_str(a.shape()));
  CAPTURE(shape_str(b.shape()));
  CAPTURE(dtype_name(a.dtype()));
  const Tensor y = op(a, b);
  REQUIRE(y.shape() == expected_broadcast(a.shape(), b.shape()));
  REQUIRE(y.dtype() == out_dtype);
  REQUIRE(y.is_contiguous());
  const Tolerance tol = tolerance_for(a.dtype());
  int64_t mismatches = 0;
  for (const auto& index : all_indices(y.shape())) {
    const double x = broadcast_at(a, index), z = broadcast_at(b, index);
    const double expected = reference(x, z), actual = y.at(index);
    if (!close(actual, expected, tol.rtol, tol.atol)) {
      if (mismatches++ < 3)
        FAIL_CHECK(name << "(" << x << ", " << z << ") = " << actual << ", expected " << expected);
    }
  }
  CHECK(mismatches == 0);
}

// Layout variants of one logical tensor shape family: dense, transposed, narrowed, expanded,
// rank-0 and empty. Returned with a label for messages.
struct Variant {
  std::string label;
  Tensor tensor;
};

std::vector<Variant> layout_variants(DType dtype, uint64_t seed, double low, double high) {
  std::vector<Variant> v;
  v.push_back({"dense [4, 7]", random_tensor({4, 7}, dtype, seed, low, high)});
  v.push_back({"transposed [7, 4]",
               ops::transpose(random_tensor({4, 7}, dtype, seed + 1, low, high), 0, 1)});
  v.push_back({"narrowed [3, 2, 4] of [3, 5, 4]",
               ops::narrow(random_tensor({3, 5, 4}, dtype, seed + 2, low, high), 1, 2, 2)});
  v.push_back({"inner narrow [6, 3] of [6, 8]",
               ops::narrow(random_tensor({6, 8}, dtype, seed + 3, low, high), 1, 4, 3)});
  v.push_back({"expanded [3, 5] of [3, 1]",
               ops::expand(random_tensor({3, 1}, dtype, seed + 4, low, high), {3, 5})});
  v.push_back({"rank-0", random_tensor({}, dtype, seed + 5, low, high)});
  v.push_back({"empty [0, 3]", random_tensor({0, 3}, dtype, seed + 6, low, high)});
  v.push_back({"large dense [300, 130]", random_tensor({300, 130}, dtype, seed + 7, low, high)});
  v.push_back({"large transposed [130, 300]",
               ops::transpose(random_tensor({300, 130}, dtype, seed + 8, low, high), 0, 1)});
  return v;
}

double reference_gelu(double x) {
  return 0.5 * x * (1 + std::erf(x / std::sqrt(2.0)));
}
double reference_sigmoid(double x) {
  return 1 / (1 + std::exp(-x));
}

}  // namespace

// ---- unary

TEST_CASE("elementwise: floating unary ops match a float64 reference on every layout") {
  struct Case {
    const char* name;
    UnaryOp op;
    std::function<double(double)> reference;
    double low, high;  // input range
  };
  const std::vector<Case> cases = {
      {"neg", [](const Tensor& x) { return ops::neg(x); }, [](double x) { return -x; }, -3, 3},
      {"abs", [](const Tensor& x) { return ops::abs(x); }, [](double x) { return std::fabs(x); },
       -3, 3},
      {"exp", [](const Tensor& x) { return ops::exp(x); }, [](double x) { return std::exp(x); }, -5,
       5},
      {"log", [](const Tensor& x) { return ops::log(x); }, [](double x) { return std::log(x); },
       0.01, 10},
      {"sqrt", [](const Tensor& x) { return ops::sqrt(x); }, [](double x) { return std::sqrt(x); },
       0, 10},
      {"rsqrt", [](const Tensor& x) { return ops::rsqrt(x); },
       [](double x) { return 1 / std::sqrt(x); }, 0.01, 10},
      {"tanh", [](const Tensor& x) { return ops::tanh(x); }, [](double x) { return std::tanh(x); },
       -4, 4},
      {"erf", [](const Tensor& x) { return ops::erf(x); }, [](double x) { return std::erf(x); }, -3,
       3},
      {"sigmoid", [](const Tensor& x) { return ops::sigmoid(x); }, reference_sigmoid, -20, 20},
      {"relu", [](const Tensor& x) { return ops::relu(x); },
       [](double x) { return x > 0 ? x : 0.0; }, -3, 3},
      {"gelu", [](const Tensor& x) { return ops::gelu(x); }, reference_gelu, -4, 4},
      {"clamp", [](const Tensor& x) { return ops::clamp(x, -1.5, 0.75); },
       [](double x) { return std::min(std::max(x, -1.5), 0.75); }, -3, 3},
      {"pow_scalar 3", [](const Tensor& x) { return ops::pow_scalar(x, 3); },
       [](double x) { return x * x * x; }, -3, 3},
      {"pow_scalar 2", [](const Tensor& x) { return ops::pow_scalar(x, 2); },
       [](double x) { return x * x; }, -3, 3},
      {"pow_scalar 0.5", [](const Tensor& x) { return ops::pow_scalar(x, 0.5); },
       [](double x) { return std::sqrt(x); }, 0, 9},
      {"pow_scalar -1.5", [](const Tensor& x) { return ops::pow_scalar(x, -1.5); },
       [](double x) { return std::pow(x, -1.5); }, 0.1, 9},
      {"add_scalar", [](const Tensor& x) { return ops::add_scalar(x, 0.25); },
       [](double x) { return x + 0.25; }, -3, 3},
      {"mul_scalar", [](const Tensor& x) { return ops::mul_scalar(x, -1.5); },
       [](double x) { return x * -1.5; }, -3, 3},
  };
  for (DType dtype : {DType::f32, DType::f64}) {
    uint64_t seed = 100;
    for (const Case& c : cases) {
      for (const Variant& v : layout_variants(dtype, seed += 10, c.low, c.high)) {
        CAPTURE(v.label);
        check_unary(c.name, c.op, c.reference, v.tensor, dtype);
      }
    }
  }
}

TEST_CASE("elementwise: hand-computed values of gelu, sigmoid, erf and their edge cases") {
  for (DType dtype : {DType::f32, DType::f64}) {
    CAPTURE(dtype_name(dtype));
    const double tol = dtype == DType::f32 ? 1e-7 : 1e-15;
    const Tensor x = ops::to(ops::from_vector(std::vector<double>{1, -1, 2.5, -3, 0}, {5}), dtype);
    const Tensor g = ops::gelu(x);
    CHECK(g.at({0}) == doctest::Approx(0.8413447460685429).epsilon(tol));
    CHECK(g.at({1}) == doctest::Approx(-0.15865525393145707).epsilon(tol));
    CHECK(g.at({2}) == doctest::Approx(2.4844758366855597).epsilon(tol));
    CHECK(g.at({3}) ==
          doctest::Approx(-0.00404969409489031).epsilon(dtype == DType::f32 ? 1e-5 : 1e-13));
    CHECK(g.at({4}) == 0.0);

    const Tensor big =
        ops::to(ops::from_vector(std::vector<double>{-1000, 1000, 0, 2, -30}, {5}), dtype);
    const Tensor s = ops::sigmoid(big);
    CHECK(s.at({0}) == 0.0);  // exactly: no 1 / inf, no NaN
    CHECK(s.at({1}) == 1.0);
    CHECK(s.at({2}) == 0.5);
    CHECK(s.at({3}) == doctest::Approx(0.8807970779778823).epsilon(tol));
    // sigmoid(-30) = 9.357622968839299e-14: relative accuracy far from 0 (no 1 - (1 - tiny)
    // cancellation).
    CHECK(s.at({4}) / 9.357622968839299e-14 ==
          doctest::Approx(1.0).epsilon(dtype == DType::f32 ? 1e-6 : 1e-13));

    const Tensor e =
        ops::erf(ops::to(ops::from_vector(std::vector<double>{0.5, -1.5, 0}, {3}), dtype));
    CHECK(e.at({0}) == doctest::Approx(0.5204998778130465).epsilon(tol));
    CHECK(e.at({1}) == doctest::Approx(-0.9661051464753108).epsilon(tol));
    CHECK(e.at({2}) == 0.0);

    // relu and clamp let NaN through instead of hiding it.
    const Tensor nan = ops::full({1}, std::numeric_limits<double>::quiet_NaN(), dtype);
    CHECK(std::isnan(ops::relu(nan).item()));
    CHECK(std::isnan(ops::clamp(nan, 0, 1).item()));
    CHECK(std::isnan(ops::sigmoid(nan).item()));
  }
}

TEST_CASE(
    "elementwise: gelu_backward matches Phi(x) + x phi(x), hand values and finite differences") {
  // Hand values: d gelu/dx at 1 = Phi(1) + phi(1); at -0.5 = Phi(-0.5) - 0.5 phi(-0.5).
  const Tensor x = ops::from_vector(std::vector<double>{1.0, -0.5}, {2});
  const Tensor ones = ops::ones({2}, DType::f64);
  const Tensor d = ops::gelu_backward(ones, x);
  CHECK(d.at({0}) == doctest::Approx(1.0833154705876864).epsilon(1e-15));
  CHECK(d.at({1}) == doctest::Approx(0.13250487534383712).epsilon(1e-15));

  // Central differences of gelu in f64, scaled by a random incoming gradient.
  const Tensor points = random_tensor({64}, DType::f64, 7, -4, 4);
  const Tensor grad = random_tensor({64}, DType::f64, 8, -2, 2);
  const Tensor analytic = ops::gelu_backward(grad, points);
  const double h = 1e-5;
  const Tensor plus = ops::gelu(ops::add_scalar(points, h)),
               minus = ops::gelu(ops::add_scalar(points, -h));
  for (int64_t i = 0; i < 64; ++i) {
    const double numeric = grad.at({i}) * (plus.at({i}) - minus.at({i})) / (2 * h);
    CHECK(analytic.at({i}) == doctest::Approx(numeric).epsilon(1e-7));
  }

  // Formula check in f32 and f64 with broadcasting of the gradient over a transposed input.
  for (DType dtype : {DType::f32, DType::f64}) {
    const Tensor input = ops::transpose(random_tensor({5, 6}, dtype, 9), 0, 1);
    const Tensor upstream = random_tensor({6, 1}, dtype, 10);
    check_binary(
        "gelu_backward", [](const Tensor& g, const Tensor& v) { return ops::gelu_backward(g, v); },
        [](double g, double v) {
          const double cdf = 0.5 * (1 + std::erf(v / std::sqrt(2.0)));
          const double density = std::exp(-v * v / 2) / std::sqrt(2 * std::numbers::pi);
          return g * (cdf + v * density);
        },
        upstream, input, dtype);
    check_binary(
        "relu_backward", [](const Tensor& g, const Tensor& v) { return ops::relu_backward(g, v); },
        [](double g, double v) { return v > 0 ? g : 0.0; }, upstream, input, dtype);
  }
}

TEST_CASE("elementwise: signed-integer neg/abs, integer clamp and scalar ops") {
  for (DType dtype : {DType::i8, DType::i32, DType::i64}) {
    CAPTURE(dtype_name(dtype));
    const Tensor x = ops::transpose(random_tensor({4, 6}, dtype, 21, -50, 50), 0, 1);
    check_unary(
        "neg", [](const Tensor& t) { return ops::neg(t); }, [](double v) { return -v; }, x, dtype);
    check_unary(
        "abs", [](const Tensor& t) { return ops::abs(t); }, [](double v) { return std::fabs(v); },
        x, dtype);
    check_unary(
        "clamp", [](const Tensor& t) { return ops::clamp(t, -10.5, 20); },
        [](double v) { return std::min(std::max(v, -10.0), 20.0); }, x, dtype);
    check_unary(
        "add_scalar", [](const Tensor& t) { return ops::add_scalar(t, 7); },
        [](double v) { return v + 7; }, x, dtype);
    check_unary(
        "mul_scalar", [](const Tensor& t) { return ops::mul_scalar(t, -2); },
        [](double v) { return -2 * v; }, x, dtype);
  }
  const Tensor u = random_tensor({9}, DType::u8, 22, 0, 120);
  check_unary(
      "clamp u8", [](const Tensor& t) { return ops::clamp(t, 10, 100); },
      [](double v) { return std::min(std::max(v, 10.0), 100.0); }, u, DType::u8);
  check_unary(
      "add_scalar u8", [](const Tensor& t) { return ops::add_scalar(t, 3); },
      [](double v) { return v + 3; }, u, DType::u8);

  // Two's-complement wrap-around, computed by hand.
  const Tensor lowest = ops::from_vector(std::vector<int8_t>{-128, 127, -5}, {3});
  CHECK(ops::neg(lowest).at({0}) == -128);
  CHECK(ops::abs(lowest).at({0}) == -128);
  CHECK(ops::neg(lowest).at({1}) == -127);
  CHECK(ops::abs(lowest).at({2}) == 5);
  CHECK(ops::add_scalar(lowest, 1).at({1}) == -128);

  CHECK_THROWS_AS(ops::neg(u), Error);  // u8 has no negation
  CHECK_THROWS_AS(ops::abs(u), Error);
  CHECK_THROWS_AS(ops::add_scalar(lowest, 0.5), Error);  // not an integer
  CHECK_THROWS_AS(ops::add_scalar(lowest, 300), Error);  // not representable in i8
  CHECK_THROWS_AS(ops::mul_scalar(u, -1.25), Error);
}

TEST_CASE("elementwise: floating math on integer tensors and bad arguments are errors") {
  const Tensor ids = ops::from_vector(std::vector<int64_t>{1, 2, 3}, {3});
  CHECK_THROWS_AS(ops::log(ids), Error);
  CHECK_THROWS_AS(ops::exp(ids), Error);
  CHECK_THROWS_AS(ops::gelu(ids), Error);
  CHECK_THROWS_AS(ops::sigmoid(ops::to(ids, DType::u8)), Error);
  CHECK_THROWS_AS(ops::pow_scalar(ids, 2), Error);
  CHECK_THROWS_AS(ops::relu(ids), Error);
  CHECK_THROWS_AS(ops::exp(Tensor()), Error);
  CHECK_THROWS_AS(ops::clamp(ops::ones({2}), 1, 0), Error);
  try {
    ops::log(ids);
    FAIL("log(i64) did not throw");
  } catch (const Error& e) {
    const std::string message = e.what();
    CHECK(message.find("log") != std::string::npos);
    CHECK(message.find("i64") != std::string::npos);
    CHECK(message.find("[3]") != std::string::npos);
  }
  // gelu_backward: grad and x must agree in dtype and broadcast.
  CHECK_THROWS_AS(ops::gelu_backward(ops::ones({3}, DType::f64), ops::ones({3})), Error);
  CHECK_THROWS_AS(ops::gelu_backward(ops::ones({4}), ops::ones({3})), Error);
}

// ---- binary

TEST_CASE("elementwise: binary ops broadcast like NumPy on floating dtypes") {
  struct Case {
    const char* name;
    BinaryOp op;
    std::function<double(double, double)> reference;
    bool positive_base;  // pow needs a > 0
  };
  const std::vector<Case> cases = {
      {"add", [](const Tensor& a, const Tensor& b) { return ops::add(a, b); }, std::plus<double>(),
       false},
      {"sub", [](const Tensor& a, const Tensor& b) { return ops::sub(a, b); }, std::minus<double>(),
       false},
      {"mul", [](const Tensor& a, const Tensor& b) { return ops::mul(a, b); },
       std::multiplies<double>(), false},
      {"div", [](const Tensor& a, const Tensor& b) { return ops::div(a, b); },
       std::divides<double>(), false},
      {"pow", [](const Tensor& a, const Tensor& b) { return ops::pow(a, b); },
       [](double a, double b) { return std::pow(a, b); }, true},
      {"maximum", [](const Tensor& a, const Tensor& b) { return ops::maximum(a, b); },
       [](double a, double b) { return std::max(a, b); }, false},
      {"minimum", [](const Tensor& a, const Tensor& b) { return ops::minimum(a, b); },
       [](double a, double b) { return std::min(a, b); }, false},
  };
  // Pairs of (a, b) shapes and layouts.
  auto pairs = [](DType dtype, double low, double high, uint64_t seed) {
    std::vector<std::pair<Tensor, Tensor>> p;
    auto r = [&](const Shape& s) { return random_tensor(s, dtype, seed++, low, high); };
    p.push_back({r({4, 5}), r({4, 5})});                        // same shape, dense: the fast path
    p.push_back({r({3, 1, 5}), r({4, 1})});                     // both broadcast
    p.push_back({r({2, 3}), r({})});                            // tensor op rank-0 scalar
    p.push_back({r({}), r({2, 3})});                            // scalar op tensor
    p.push_back({r({}), r({})});                                // rank-0 result
    p.push_back({r({5}), r({2, 1})});                           // different ranks
    p.push_back({ops::transpose(r({5, 4}), 0, 1), r({4, 5})});  // non-contiguous a
    p.push_back({r({3, 4}), ops::narrow(r({3, 9}), 1, 2, 4)});  // narrowed b
    p.push_back({ops::expand(r({1, 6}), {3, 6}), ops::transpose(r({6, 3}), 0, 1)});  // expanded a
    p.push_back({r({0, 4}), r({4})});                                                // empty result
    p.push_back({r({2, 0, 3}), r({1, 3})});
    p.push_back({r({200, 1, 70}), r({1, 3, 70})});  // large enough for the parallel row loop
    p.push_back({ops::transpose(r({256, 200}), 0, 1), r({200, 256})});  // large strided
    return p;
  };
  for (DType dtype : {DType::f32, DType::f64}) {
    for (const Case& c : cases) {
      const double low = c.positive_base ? 0.1 : -3;
      for (const auto& [a, b] : pairs(dtype, low, 3, 500)) {
        // Keep divisors away from 0 so the f32 relative error of a / b stays meaningful.
        const Tensor divisor = std::string(c.name) == "div" ? ops::add_scalar(ops::abs(b), 0.5) : b;
        check_binary(c.name, c.op, c.reference, a, divisor, dtype);
      }
    }
  }
}

TEST_CASE("elementwise: binary ops on integer dtypes are exact and wrap like two's complement") {
  struct Case {
    const char* name;
    BinaryOp op;
    std::function<double(double, double)> reference;
  };
  const std::vector<Case> cases = {
      {"add", [](const Tensor& a, const Tensor& b) { return ops::add(a, b); }, std::plus<double>()},
      {"sub", [](const Tensor& a, const Tensor& b) { return ops::sub(a, b); },
       std::minus<double>()},
      {"mul", [](const Tensor& a, const Tensor& b) { return ops::mul(a, b); },
       std::multiplies<double>()},
      {"maximum", [](const Tensor& a, const Tensor& b) { return ops::maximum(a, b); },
       [](double a, double b) { return std::max(a, b); }},
      {"minimum", [](const Tensor& a, const Tensor& b) { return ops::minimum(a, b); },
       [](double a, double b) { return std::min(a, b); }},
      // C division truncates toward zero: trunc of the exact quotient.
      {"div", [](const Tensor& a, const Tensor& b) { return ops::div(a, b); },
       [](double a, double b) { return std::trunc(a / b); }},
  };
  for (DType dtype : {DType::i8, DType::i32, DType::i64, DType::u8}) {
    CAPTURE(dtype_name(dtype));
    // Values small enough that no result overflows even i8 (|a op b| <= 11 * 11 = 121).
    const double low = dtype == DType::u8 ? 0 : -11, high = 12;
    const Tensor a = random_tensor({3, 1, 5}, dtype, 41, low, high);
    const Tensor b = random_tensor({4, 1}, dtype, 42, low, high);
    const Tensor a_strided = ops::transpose(random_tensor({5, 4}, dtype, 43, low, high), 0, 1);
    // Divisors: b with its zeros replaced by 1 (negative divisors stay).
    const Tensor nonzero_b =
        ops::where(ops::eq(b, ops::zeros({1}, dtype)), ops::ones({1}, dtype), b);
    for (const Case& c : cases) {
      const Tensor rhs = std::string(c.name) == "div" ? nonzero_b : b;
      auto reference = c.reference;
      if (std::string(c.name) == "sub" && dtype == DType::u8) {
        // u8 differences wrap modulo 256.
        reference = [](double x, double y) { return std::fmod(x - y + 256, 256); };
      }
      check_binary(c.name, c.op, reference, a, rhs, dtype);
      check_binary(c.name, c.op, reference, a_strided, ops::expand(rhs, {4, 1}), dtype);
    }
  }
  // Hand-computed wrap-around and truncation.
  const Tensor i8 = ops::from_vector(std::vector<int8_t>{127, -128, 100, -7}, {4});
  const Tensor i8_rhs = ops::from_vector(std::vector<int8_t>{1, 1, 3, 2}, {4});
  CHECK(ops::to_vector<int64_t>(ops::add(i8, i8_rhs)) == std::vector<int64_t>{-128, -127, 103, -5});
  CHECK(ops::to_vector<int64_t>(ops::sub(i8, i8_rhs)) == std::vector<int64_t>{126, 127, 97, -9});
  CHECK(ops::to_vector<int64_t>(ops::mul(i8, i8_rhs)) ==
        std::vector<int64_t>{127, -128, 44, -14});  // 300 -> 44
  CHECK(ops::to_vector<int64_t>(ops::div(i8, i8_rhs)) == std::vector<int64_t>{127, -128, 33, -3});
  const Tensor u8 = ops::from_vector(std::vector<uint8_t>{3, 250}, {2});
  const Tensor u8_rhs = ops::from_vector(std::vector<uint8_t>{5, 10}, {2});
  CHECK(ops::to_vector<int64_t>(ops::sub(u8, u8_rhs)) == std::vector<int64_t>{254, 240});
  CHECK(ops::to_vector<int64_t>(ops::add(u8, u8_rhs)) == std::vector<int64_t>{8, 4});  // 260 -> 4
  const int32_t int_min = std::numeric_limits<int32_t>::min();
  const Tensor i32 = ops::from_vector(std::vector<int32_t>{int_min, 7, -7, 7}, {4});
  const Tensor i32_rhs = ops::from_vector(std::vector<int32_t>{-1, -2, 2, 2}, {4});
  CHECK(ops::to_vector<int64_t>(ops::div(i32, i32_rhs)) ==
        std::vector<int64_t>{int_min, -3, -3, 3});
  CHECK(ops::to_vector<int64_t>(
            ops::add(i32, ops::from_vector(std::vector<int32_t>{-1}, {1})))[0] == INT32_MAX);
  const Tensor i64 = ops::from_vector(std::vector<int64_t>{INT64_MAX}, {1});
  CHECK(ops::to_vector<int64_t>(ops::mul(i64, ops::full({1}, 2, DType::i64)))[0] == -2);

  // Integer division by zero is reported, not a SIGFPE.
  const Tensor zero_inside = ops::from_vector(std::vector<int32_t>{1, 0, 3, 4}, {4});
  CHECK_THROWS_AS(ops::div(i32, zero_inside), Error);
  CHECK_THROWS_AS(ops::div(i32, ops::expand(ops::full({1}, 0, DType::i32), {4})), Error);
  // pow is floating-only.
  CHECK_THROWS_AS(ops::pow(i32, i32_rhs), Error);
  // Floating division by zero is IEEE.
  const Tensor fd = ops::div(ops::from_vector(std::vector<float>{1, -1, 0}, {3}), ops::zeros({3}));
  CHECK(std::isinf(fd.at({0})));
  CHECK(fd.at({0}) > 0);
  CHECK(fd.at({1}) < 0);
  CHECK(std::isnan(fd.at({2})));
}

TEST_CASE("elementwise: maximum and minimum propagate NaN from either side") {
  const double nan = std::numeric_limits<double>::quiet_NaN();
  for (DType dtype : {DType::f32, DType::f64}) {
    const Tensor a = ops::to(ops::from_vector(std::vector<double>{nan, 1, 2, -0.5}, {4}), dtype);
    const Tensor b = ops::to(ops::from_vector(std::vector<double>{1, nan, 3, -1}, {4}), dtype);
    for (const Tensor& r :
         {ops::maximum(a, b), ops::minimum(a, b), ops::maximum(b, a), ops::minimum(b, a)}) {
      CHECK(std::isnan(r.at({0})));
      CHECK(std::isnan(r.at({1})));
    }
    CHECK(ops::maximum(a, b).at({2}) == 3);
    CHECK(ops::minimum(a, b).at({3}) == -1);
  }
}

TEST_CASE("elementwise: comparisons return u8 0/1 with broadcasting and IEEE NaN rules") {
  struct Case {
    const char* name;
    BinaryOp op;
    std::function<bool(double, double)> reference;
  };
  const std::vector<Case> cases = {
      {"eq", [](const Tensor& a, const Tensor& b) { return ops::eq(a, b); },
       std::equal_to<double>()},
      {"ne", [](const Tensor& a, const Tensor& b) { return ops::ne(a, b); },
       std::not_equal_to<double>()},
      {"lt", [](const Tensor& a, const Tensor& b) { return ops::lt(a, b); }, std::less<double>()},
      {"le", [](const Tensor& a, const Tensor& b) { return ops::le(a, b); },
       std::less_equal<double>()},
      {"gt", [](const Tensor& a, const Tensor& b) { return ops::gt(a, b); },
       std::greater<double>()},
      {"ge", [](const Tensor& a, const Tensor& b) { return ops::ge(a, b); },
       std::greater_equal<double>()},
  };
  for (DType dtype : {DType::f32, DType::f64, DType::i8, DType::u8, DType::i32, DType::i64}) {
    CAPTURE(dtype_name(dtype));
    // Integer-valued inputs in a small range so that equality actually happens.
    const double low = dtype == DType::u8 ? 0 : -3;
    const Tensor a = ops::to(random_tensor({3, 1, 5}, DType::i64, 61, low, 3), dtype);
    const Tensor b =
        ops::transpose(ops::to(random_tensor({1, 4}, DType::i64, 62, low, 3), dtype), 0, 1);
    for (const Case& c : cases) {
      auto reference = c.reference;
      check_binary(
          c.name, c.op, [reference](double x, double y) { return reference(x, y) ? 1.0 : 0.0; }, a,
          b, DType::u8);
    }
  }
  const double nan = std::numeric_limits<double>::quiet_NaN();
  const Tensor x = ops::from_vector(std::vector<double>{nan, nan, 1}, {3});
  const Tensor y = ops::from_vector(std::vector<double>{nan, 1, nan}, {3});
  CHECK(ops::to_vector<int64_t>(ops::eq(x, y)) == std::vector<int64_t>{0, 0, 0});
  CHECK(ops::to_vector<int64_t>(ops::ne(x, y)) == std::vector<int64_t>{1, 1, 1});
  CHECK(ops::to_vector<int64_t>(ops::le(x, y)) == std::vector<int64_t>{0, 0, 0});
  CHECK(ops::to_vector<int64_t>(ops::ge(x, y)) == std::vector<int64_t>{0, 0, 0});
}

TEST_CASE("elementwise: where picks from a or b, all three broadcast together") {
  for (DType dtype : {DType::f32, DType::f64, DType::i32, DType::u8}) {
    CAPTURE(dtype_name(dtype));
    const Tensor condition = ops::to(random_tensor({3, 1, 1}, DType::i64, 71, 0, 2), DType::u8);
    const Tensor a = random_tensor({1, 4, 1}, dtype, 72, 0, 50);
    const Tensor b = ops::transpose(random_tensor({5, 4}, dtype, 73, 0, 50), 0, 1);
    const Tensor out = ops::where(condition, a, b);
    REQUIRE(out.shape() == Shape{3, 4, 5});
    REQUIRE(out.dtype() == dtype);
    for (const auto& index : all_indices(out.shape())) {
      const double expected =
          broadcast_at(condition, index) != 0 ? broadcast_at(a, index) : broadcast_at(b, index);
      CHECK(out.at(index) == expected);
    }
  }
  // Nonzero (not just 1) counts as true; rank-0 and empty cases.
  const Tensor c = ops::from_vector(std::vector<uint8_t>{0, 7, 255}, {3});
  CHECK(ops::to_vector<double>(ops::where(c, ops::scalar(1), ops::scalar(-1))) ==
        std::vector<double>{-1, 1, 1});
  CHECK(ops::where(ops::scalar(1, DType::u8), ops::scalar(2), ops::scalar(3)).item() == 2);
  CHECK(ops::where(ops::zeros({0, 2}, DType::u8), ops::ones({2}), ops::ones({1})).shape() ==
        Shape{0, 2});
  // Errors: condition not u8, a/b dtypes differ, shapes that do not broadcast.
  CHECK_THROWS_AS(ops::where(ops::ones({3}), ops::ones({3}), ops::ones({3})), Error);
  CHECK_THROWS_AS(ops::where(c, ops::ones({3}), ops::ones({3}, DType::f64)), Error);
  CHECK_THROWS_AS(ops::where(c, ops::ones({4}), ops::ones({3})), Error);
}

TEST_CASE("elementwise: broadcast mismatch and dtype mismatch are errors that name both shapes") {
  const Tensor a = ops::ones({3, 4}), b = ops::ones({5});
  for (const BinaryOp& op : std::vector<BinaryOp>{
           [](const Tensor&x, const Tensor&y) { return ops::add(x, y); },
           [](const Tensor&x, const Tensor&y) { return ops::mul(x, y); },
           [](const Tensor&x, const Tensor&y) { return ops::pow(x, y); },
           [](const Tensor&x, const Tensor&y) { return ops::lt(x, y); },
       }) {
    CHECK_THROWS_AS(op(a, b), Error);
    CHECK_THROWS_AS(op(a, ops::ones({3, 4}, DType::f64)), Error);
  }
  try {
    ops::sub(a, b);
    FAIL("sub([3, 4], [5]) did not throw");
  } catch (const Error& e) {
    const std::string message = e.what();
    CHECK(message.find("sub") != std::string::npos);
    CHECK(message.find("[3, 4]") != std::string::npos);
    CHECK(message.find("[5]") != std::string::npos);
  }
  try {
    ops::add(a, ops::ones({3, 4}, DType::i32));
    FAIL("add(f32, i32) did not throw");
  } catch (const Error& e) {
    const std::string message = e.what();
    CHECK(message.find("f32") != std::string::npos);
    CHECK(message.find("i32") != std::string::npos);
  }
  CHECK_THROWS_AS(ops::add(a, Tensor()), Error);
}

// ---- conversion and in-place

TEST_CASE("elementwise: to() converts between all dtypes with C-cast truncation and saturation") {
  const double nan = std::numeric_limits<double>::quiet_NaN();
  const Tensor f =
      ops::from_vector(std::vector<double>{-2.7, 2.7, -0.5, 1e10, -1e10, nan, 100.9, 300}, {8});
  CHECK(ops::to_vector<int64_t>(ops::to(f, DType::i32)) ==
        std::vector<int64_t>{-2, 2, 0, INT32_MAX, INT32_MIN, 0, 100, 300});
  CHECK(ops::to_vector<int64_t>(ops::to(f, DType::u8)) ==
        std::vector<int64_t>{0, 2, 0, 255, 0, 0, 100, 255});
  CHECK(ops::to_vector<int64_t>(ops::to(f, DType::i8)) ==
        std::vector<int64_t>{-2, 2, 0, 127, -128, 0, 100, 127});
  CHECK(ops::to_vector<int64_t>(ops::to(ops::to(f, DType::f32), DType::i64)) ==
        std::vector<int64_t>{-2, 2, 0, 10000000000, -10000000000, 0, 100, 300});
  // Integer -> narrower integer keeps the low bits (a C cast): 300 -> 44, -129 -> 127.
  const Tensor wide = ops::from_vector(std::vector<int64_t>{300, -129, 255, -1}, {4});
  CHECK(ops::to_vector<int64_t>(ops::to(wide, DType::i8)) == std::vector<int64_t>{44, 127, -1, -1});
  CHECK(ops::to_vector<int64_t>(ops::to(wide, DType::u8)) ==
        std::vector<int64_t>{44, 127, 255, 255});
  // f64 -> f32 rounds to nearest.
  CHECK(ops::to(ops::scalar(0.1, DType::f64), DType::f32).item() == static_cast<double>(0.1f));
  // Same dtype: the same tensor, no copy.
  CHECK(ops::to(f, DType::f64).is_same(f));
  // Every pair of dtypes on a non-contiguous input of small integers (exactly representable
  // everywhere).
  const Tensor small = ops::transpose(random_tensor({3, 4}, DType::i64, 81, 0, 100), 0, 1);
  for (DType from : {DType::f32, DType::f64, DType::i8, DType::u8, DType::i32, DType::i64}) {
    const Tensor source = ops::transpose(ops::to(small, from), 0, 1);  // strided in a different way
    for (DType target : {DType::f32, DType::f64, DType::i8, DType::u8, DType::i32, DType::i64}) {
      CAPTURE(dtype_name(from));
      CAPTURE(dtype_name(target));
      const Tensor converted = ops::to(source, target);
      REQUIRE(converted.dtype() == target);
      REQUIRE(converted.shape() == source.shape());
      for (const auto& index : all_indices(source.shape()))
        CHECK(converted.at(index) == source.at(index));
    }
  }
}

TEST_CASE("elementwise: add_ accumulates in place with broadcasting into any layout") {
  for (DType dtype : {DType::f32, DType::f64, DType::i32}) {
    CAPTURE(dtype_name(dtype));
    // Dense destination, broadcast source [4, 1] into [3, 4, 5].
    Tensor dst = random_tensor({3, 4, 5}, dtype, 91, 0, 20);
    const Tensor before = ops::clone(dst);
    const Tensor src = random_tensor({4, 1}, dtype, 92, 0, 20);
    ops::add_(dst, src);
    for (const auto& index : all_indices(dst.shape())) {
      CHECK(dst.at(index) ==
            doctest::Approx(before.at(index) + broadcast_at(src, index)).epsilon(1e-6));
    }
    // Strided destination: a transposed, narrowed view writes through to its base tensor only.
    Tensor base = random_tensor({6, 5}, dtype, 93, 0, 20);
    const Tensor base_before = ops::clone(base);
    Tensor view = ops::narrow(ops::transpose(base, 0, 1), 1, 1, 3);  // [5, 3] = base[1:4, :]^T
    const Tensor addend = random_tensor({5, 3}, dtype, 94, 0, 20);
    ops::add_(view, addend);
    for (int64_t i = 0; i < 6; ++i) {
      for (int64_t j = 0; j < 5; ++j) {
        const double expected =
            base_before.at({i, j}) + (i >= 1 && i < 4 ? addend.at({j, i - 1}) : 0.0);
        CHECK(base.at({i, j}) == doctest::Approx(expected).epsilon(1e-6));
      }
    }
  }
  // Large dense same-shape fast path.
  Tensor big = random_tensor({100000}, DType::f64, 95);
  const Tensor big_before = ops::clone(big);
  const Tensor big_src = random_tensor({100000}, DType::f64, 96);
  ops::add_(big, big_src);
  for (int64_t i = 0; i < 100000; i += 997)
    CHECK(big.at({i}) == big_before.at({i}) + big_src.at({i}));

  // Errors: src larger than dst, dtype mismatch, expanded (self-overlapping) destination.
  Tensor small = ops::zeros({4, 1});
  CHECK_THROWS_AS(ops::add_(small, ops::ones({4, 5})), Error);
  CHECK_THROWS_AS(ops::add_(small, ops::ones({4, 1}, DType::f64)), Error);
  CHECK_THROWS_AS(ops::add_(ops::expand(small, {4, 5}), ops::ones({4, 5})), Error);
  CHECK_THROWS_AS(ops::add_(small, ops::ones({3})), Error);
  // Empty and rank-0.
  Tensor empty = ops::zeros({0, 4});
  ops::add_(empty, ops::ones({4}));
  Tensor empty_inner = ops::zeros({2, 0});  // dense strides [0, 1]: not an overlapping view
  ops::add_(empty_inner, ops::ones({1}));
  Tensor s = ops::scalar(1.5);
  ops::add_(s, ops::scalar(2));
  CHECK(s.item() == 3.5);
}

TEST_CASE("elementwise: results are bit-identical with 1 and 2 threads") {
  const Tensor x =
      random_tensor({512, 300}, DType::f32, 111);  // 153600 elements: above the threshold
  const Tensor row = random_tensor({300}, DType::f32, 112);
  auto run = [&]() {
    std::vector<Tensor> results;
    results.push_back(ops::gelu(x));
    results.push_back(ops::sigmoid(ops::transpose(x, 0, 1)));
    results.push_back(ops::add(x, row));
    results.push_back(ops::mul(ops::transpose(x, 0, 1), ops::unsqueeze(row, 1)));
    results.push_back(ops::gelu_backward(ops::narrow(x, 1, 1, 299), ops::narrow(x, 1, 0, 299)));
    results.push_back(ops::to(x, DType::i32));
    Tensor acc = ops::clone(x);
    ops::add_(acc, row);
    results.push_back(acc);
    return results;
  };
  const int previous = num_threads();
  set_num_threads(1);
  const std::vector<Tensor> one = run();
  set_num_threads(2);
  const std::vector<Tensor> two = run();
  set_num_threads(previous);
  REQUIRE(one.size() == two.size());
  for (size_t i = 0; i < one.size(); ++i) {
    CAPTURE(i);
    REQUIRE(one[i].shape() == two[i].shape());
    const size_t bytes = static_cast<size_t>(one[i].numel()) * dtype_size(one[i].dtype());
    CHECK(std::memcmp(one[i].raw_data(), two[i].raw_data(), bytes) == 0);
  }
}
