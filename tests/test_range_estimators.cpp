// Tests for quant/range_estimators.*: current / running min-max (with percentiles) and the MSE
// grid search.
// Truth: hand-computed ranges and percentiles, PyTorch/NumPy fixtures of the official repo's
// estimators re-stated in tools/make_quant_fixtures.py (running average in torch float32 or numpy
// float64, np.percentile, the MSE grid with its accumulated loss table), torch.quantile as a second
// opinion, and the defining property of the MSE range (its error is not above min-max's).
#include <doctest/doctest.h>

#include <cmath>
#include <cstring>
#include <string>
#include <vector>

#include "quant/range_estimators.h"
#include "quant/uniform_quantizer.h"
#include "tensor/ops.h"
#include "tensor/safetensors.h"
#include "tensor/threads.h"
#include "tests/test_util.h"

using namespace qt;
using namespace qt::test;
using quant::RangeEstimator;
using quant::RangeEstimatorOptions;
using quant::RangeMethod;

namespace {

const SafeTensors& range_fixture() {
  static const SafeTensors file =
      load_safetensors(std::string(QTLAB_TEST_DATA_DIR) + "/quant_range.safetensors");
  return file;
}

std::vector<float> floats(const Tensor& t) {
  return ops::to_vector<float>(t);
}

struct ThreadCountGuard {
  int saved = num_threads();
  ~ThreadCountGuard() { set_num_threads(saved); }
};

// Σ (x − Q(x))² in double for a per-tensor quantizer of `range`.
double quantization_error(const Tensor& x, float low, float high, int bits, bool symmetric) {
  const Tensor q =
      ops::fake_quantize(x, quant::quantization_parameters(low, high, bits, symmetric));
  const std::vector<double> a = elements(x), b = elements(q);
  double total = 0;
  for (size_t i = 0; i < a.size(); ++i) total += (a[i] - b[i]) * (a[i] - b[i]);
  return total;
}

}  // namespace

TEST_CASE("range estimators: hand-computed min-max, running average and percentiles") {
  // current min-max: the latest tensor only.
  RangeEstimator current(RangeEstimatorOptions{.method = RangeMethod::current_min_max});
  current.update(ops::from_vector(std::vector<float>{3, -1, 2, 0.5f}, {2, 2}));
  current.update(ops::from_vector(std::vector<float>{0.25f, -0.5f, 1}, {3}));
  CHECK(current.range().min == std::vector<float>{-0.5f});
  CHECK(current.range().max == std::vector<float>{1.0f});

  // running: first batch (-1, 2); second batch (-3, 4): cur = 0.9 cur + 0.1 new = (-1.2, 2.2).
  RangeEstimator running;  // default: running_min_max, momentum 0.9
  running.update(ops::from_vector(std::vector<float>{-1, 2, 0}, {3}));
  CHECK(running.range().min == std::vector<float>{-1.0f});
  CHECK(running.range().max == std::vector<float>{2.0f});
  running.update(ops::from_vector(std::vector<float>{4, -3}, {2}));
  CHECK(running.range().min[0] == doctest::Approx(-1.2).epsilon(1e-7));
  CHECK(running.range().max[0] == doctest::Approx(2.2).epsilon(1e-7));

  // Percentiles of 1..5 (numpy linear): h = 4 p/100. p = 50 -> 3; p = 10 -> h = 0.4 -> 1.4;
  // p = 90 -> h = 3.6 -> 4 + 0.6 = 4.6; p = 0 / 100 -> the ends.
  const Tensor five = ops::from_vector(std::vector<float>{5, 1, 4, 2, 3}, {5});
  CHECK(quant::percentile(five, 50) == 3.0);
  CHECK(quant::percentile(five, 10) == doctest::Approx(1.4).epsilon(1e-15));
  CHECK(quant::percentile(five, 90) == doctest::Approx(4.6).epsilon(1e-15));
  CHECK(quant::percentile(five, 0) == 1.0);
  CHECK(quant::percentile(five, 100) == 5.0);
  CHECK(quant::percentile(ops::full({1}, 7.0), 30) == 7.0);

  // Per-channel min-max along the last axis.
  const quant::QuantizationRange r =
      quant::min_max_range(ops::from_vector(std::vector<float>{1, -2, 3, 4, 5, -6}, {3, 2}), -1);
  CHECK(r.min == std::vector<float>{1, -6});  // columns {1, 3, 5} and {-2, 4, -6}
  CHECK(r.max == std::vector<float>{5, 4});
}

TEST_CASE("range estimators: running min-max matches the repo (per-tensor, per-channel, f32)") {
  const SafeTensors& f = range_fixture();
  {
    RangeEstimator e;
    const std::vector<float> mins = floats(f.get("running.min"));
    const std::vector<float> maxs = floats(f.get("running.max"));
    for (size_t i = 0; i < mins.size(); ++i) {
      e.update(f.get("running.batch" + std::to_string(i)));
      CAPTURE(i);
      CHECK(e.range().min == std::vector<float>{mins[i]});
      CHECK(e.range().max == std::vector<float>{maxs[i]});
    }
  }
  {
    RangeEstimator e(RangeEstimatorOptions{.channel_axis = 1});
    const Tensor mins = f.get("running_channel.min"), maxs = f.get("running_channel.max");
    for (int64_t i = 0; i < mins.size(0); ++i) {
      e.update(f.get("running_channel.batch" + std::to_string(i)));
      CAPTURE(i);
      CHECK(e.range().min == floats(ops::select(mins, 0, i)));
      CHECK(e.range().max == floats(ops::select(maxs, 0, i)));
      CHECK(e.range().channel_axis == std::optional<int64_t>(1));
    }
  }
}

TEST_CASE("range estimators: percentiles match numpy (and torch.quantile) exactly where defined") {
  const SafeTensors& f = range_fixture();
  const Tensor x = f.get("percentile.input");
  const std::vector<double> ps = elements(f.get("percentile.p"));
  const std::vector<double> numpy = elements(f.get("percentile.numpy"));
  const std::vector<double> torch = elements(f.get("percentile.torch"));
  for (size_t i = 0; i < ps.size(); ++i) {
    CAPTURE(ps[i]);
    const double got = quant::percentile(x, ps[i]);
    CHECK(got == numpy[i]);  // the same float64 arithmetic as numpy's _lerp
    CHECK(std::abs(got - torch[i]) <= 1e-5 * std::max(1.0, std::abs(got)));
  }

  // running_min_max with percentile 99.9: range [P(0.1), P(99.9)], averaged in float64.
  RangeEstimator running(RangeEstimatorOptions{.percentile = 99.9});
  const std::vector<double> mins = elements(f.get("running_percentile.min"));
  const std::vector<double> maxs = elements(f.get("running_percentile.max"));
  for (size_t i = 0; i < mins.size(); ++i) {
    running.update(f.get("running_percentile.batch" + std::to_string(i)));
    CAPTURE(i);
    CHECK(running.running_min[0] == mins[i]);
    CHECK(running.running_max[0] == maxs[i]);
    CHECK(running.range().min[0] == static_cast<float>(mins[i]));
    CHECK(running.range().max[0] == static_cast<float>(maxs[i]));
  }

  // current_min_max takes the repo's np.percentile(x, (p, 100 - p)) with the low p = 1.
  RangeEstimator current(
      RangeEstimatorOptions{.method = RangeMethod::current_min_max, .percentile = 1.0});
  current.update(f.get("current_percentile.input"));
  CHECK(current.range().min[0] == static_cast<float>(f.get("current_percentile.min").item()));
  CHECK(current.range().max[0] == static_cast<float>(f.get("current_percentile.max").item()));
}

TEST_CASE("range estimators: MSE grid search matches the repo's loss table and range") {
  const SafeTensors& f = range_fixture();
  int cases = 0;
  for (const auto& [key, text] : f.metadata) {
    if (key.rfind("mse_", 0) != 0) continue;
    ++cases;
    CAPTURE(key);
    const size_t a = text.find(','), b = text.rfind(',');
    RangeEstimatorOptions o{.method = RangeMethod::mse_grid};
    o.bits = std::stoi(text.substr(0, a));
    o.symmetric = text.substr(a + 1, b - a - 1) == "1";
    if (text.substr(b + 1) != "none") o.channel_axis = std::stoll(text.substr(b + 1));
    RangeEstimator e(o);
    for (int i = 0; f.contains(key + ".batch" + std::to_string(i)); ++i)
      e.update(f.get(key + ".batch" + std::to_string(i)));

    // The accumulated loss of every candidate (float32 Q(w), squared errors summed in double).
    const std::vector<double> want = elements(f.get(key + ".losses"));
    REQUIRE(e.mse.losses.size() == want.size());
    for (size_t i = 0; i < want.size(); ++i) {
      if (std::isinf(want[i])) {
        CHECK(std::isinf(e.mse.losses[i]));
      } else {
        CHECK(e.mse.losses[i] == doctest::Approx(want[i]).epsilon(1e-12));
      }
    }
    CHECK(e.range().min == floats(f.get(key + ".min")));
    CHECK(e.range().max == floats(f.get(key + ".max")));
  }
  CHECK(cases == 6);
}

TEST_CASE("range estimators: the MSE range has no more error than min-max on data with outliers") {
  // Gaussian weights with two large outliers: clipping them costs less than the coarse grid
  // min-max would impose on all the others.
  Tensor w = random_tensor({16, 64}, DType::f32, 5, 0.0, 0.02);
  w.data<float>()[7] = 0.4f;
  w.data<float>()[300] = -0.3f;
  for (int bits : {4, 8}) {
    CAPTURE(bits);
    RangeEstimator mse(RangeEstimatorOptions{.method = RangeMethod::mse_grid, .bits = bits});
    mse.update(w);
    const quant::QuantizationRange r = mse.range();
    CHECK(r.min[0] == -r.max[0]);  // symmetric candidates
    const double mse_error = quantization_error(w, r.min[0], r.max[0], bits, true);
    const double min_max_error = quantization_error(w, -0.3f, 0.4f, bits, true);
    CHECK(mse_error <= min_max_error);
    // The reported loss of the chosen candidate is this same error.
    CHECK(mse.mse.losses[mse.mse.best_candidate[0]] == doctest::Approx(mse_error).epsilon(1e-12));
    if (bits == 4) CHECK(r.max[0] < 0.4f);  // 4 bits: clipping the outliers pays off
  }
}

TEST_CASE("range estimators: freeze stops updates; reset forgets; parse names") {
  RangeEstimator e;
  e.update(ops::from_vector(std::vector<float>{-1, 1}, {2}));
  e.freeze();
  e.update(ops::from_vector(std::vector<float>{-5, 5}, {2}));
  CHECK(e.range().min == std::vector<float>{-1});
  CHECK(e.batches_seen == 1);
  const quant::QuantizationParameters p = e.parameters(8, false);
  CHECK(p.scale[0] == 2.0f / 255.0f);
  e.reset();
  CHECK_FALSE(e.frozen);
  CHECK_THROWS_WITH_AS(e.range(), doctest::Contains("no data"), qt::Error);
  e.update(ops::from_vector(std::vector<float>{-5, 5}, {2}));
  CHECK(e.range().max == std::vector<float>{5});

  CHECK(quant::parse_range_method("current_minmax") == RangeMethod::current_min_max);
  CHECK(quant::parse_range_method("running_minmax") == RangeMethod::running_min_max);
  CHECK(quant::parse_range_method("MSE") == RangeMethod::mse_grid);
  CHECK_THROWS_WITH_AS(quant::parse_range_method("minmax"), doctest::Contains("'minmax'"),
                       qt::Error);
  for (RangeMethod m :
       {RangeMethod::current_min_max, RangeMethod::running_min_max, RangeMethod::mse_grid})
    CHECK(quant::parse_range_method(quant::range_method_name(m)) == m);
}

TEST_CASE("range estimators: results are bit-identical with 1 and 2 threads") {
  ThreadCountGuard guard;
  const Tensor big = random_tensor({9, 8000}, DType::f32, 41, 0.1, 1.0);
  const Tensor w = random_tensor({12, 700}, DType::f32, 42, 0.0, 0.05);
  std::vector<std::vector<float>> ranges[2];
  std::vector<double> losses[2];
  for (int threads : {1, 2}) {
    set_num_threads(threads);
    RangeEstimator running;
    running.update(big);
    RangeEstimator channel(RangeEstimatorOptions{.channel_axis = 0});
    channel.update(big);
    RangeEstimator mse(RangeEstimatorOptions{.method = RangeMethod::mse_grid, .channel_axis = 0});
    mse.update(w);
    for (const RangeEstimator* e : {&running, &channel, &mse}) {
      ranges[threads - 1].push_back(e->range().min);
      ranges[threads - 1].push_back(e->range().max);
    }
    losses[threads - 1] = mse.mse.losses;
  }
  CHECK(ranges[0] == ranges[1]);
  REQUIRE(losses[0].size() == losses[1].size());
  CHECK(std::memcmp(losses[0].data(), losses[1].data(), losses[0].size() * sizeof(double)) == 0);
}

TEST_CASE("range estimators: bad inputs and options throw qt::Error naming the problem") {
  RangeEstimator e;
  CHECK_THROWS_WITH_AS(e.update(ops::zeros({0, 3})), doctest::Contains("empty"), qt::Error);
  CHECK_THROWS_WITH_AS(e.update(ops::from_vector(std::vector<float>{1, NAN}, {2})),
                       doctest::Contains("NaN"), qt::Error);
  CHECK_THROWS_AS(e.update(ops::from_vector(std::vector<float>{1, INFINITY}, {2})), qt::Error);
  CHECK_THROWS_AS(e.update(ops::zeros({3}, DType::i64)), qt::Error);
  CHECK(e.batches_seen == 0);  // failed updates change nothing

  RangeEstimator channels(RangeEstimatorOptions{.channel_axis = 2});
  CHECK_THROWS_AS(channels.update(ops::zeros({2, 2})), qt::Error);  // no axis 2
  channels.update(ops::zeros({2, 2, 3}));
  CHECK_THROWS_WITH_AS(channels.update(ops::zeros({2, 2, 4})), doctest::Contains("channels"),
                       qt::Error);

  CHECK_THROWS_WITH_AS(RangeEstimator(RangeEstimatorOptions{.method = RangeMethod::current_min_max,
                                                            .percentile = 99.999}),
                       doctest::Contains("low percentile"), qt::Error);
  CHECK_THROWS_WITH_AS(RangeEstimator(RangeEstimatorOptions{.percentile = 1.0}),
                       doctest::Contains("high percentile"), qt::Error);
  CHECK_THROWS_AS(RangeEstimator(RangeEstimatorOptions{.momentum = 1.5}), qt::Error);
  CHECK_THROWS_AS(RangeEstimator(RangeEstimatorOptions{.method = RangeMethod::mse_grid, .bits = 1}),
                  qt::Error);
  CHECK_THROWS_AS(
      RangeEstimator(RangeEstimatorOptions{.method = RangeMethod::mse_grid, .num_candidates = 0}),
      qt::Error);
  CHECK_THROWS_AS(quant::percentile(ops::ones({3}), 101), qt::Error);
  CHECK_THROWS_AS(quant::percentile(ops::zeros({0}), 50), qt::Error);
  CHECK_THROWS_AS(quant::min_max_range(ops::ones({3}), 1), qt::Error);
}
