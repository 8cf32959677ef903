// The outlier analysis taps (quant/outlier_analysis.h) on tiny BERT, OPT and ViT models, against an
// independent record of the same forward pass: a plain tap that copies every activation, and naive
// double loops for the method.md §5 metrics (per-row inf norm and kurtosis, averaged), the
// attention mass on delimiter keys, the gate statistics and the histogram. A planted outlier (one
// FFN unit that fires only on one token and writes a huge value into hidden dim k) must be found at
// dim k on exactly that token. Plus the JSON round trip, thread independence and the error cases.
#include <doctest/doctest.h>

#include <algorithm>
#include <cmath>
#include <map>
#include <memory>
#include <nlohmann/json.hpp>
#include <set>
#include <string>
#include <vector>

#include "autograd/node.h"
#include "data/tokenizer.h"
#include "models/model.h"
#include "models/opt.h"
#include "models/run_data.h"
#include "nn/activation_tap.h"
#include "quant/outlier_analysis.h"
#include "tensor/error.h"
#include "tensor/ops.h"
#include "tensor/threads.h"
#include "tests/test_util.h"
#include "tests/tiny_run.h"

namespace {

using qt::Tensor;
using qt::quant::AnalysisOptions;
using qt::quant::AnalysisResult;
using qt::quant::OutlierAnalysis;

using qt::test::OneThread;

// Copies every activation it sees, per point name, one entry per forward pass.
struct Recorder : qt::nn::ActivationTaps {
  std::map<std::string, std::vector<std::vector<double>>> values;
  std::map<std::string, qt::Shape> shapes;
  Tensor at(const std::string& point, const Tensor& x) override {
    values[point].push_back(qt::test::elements(x));
    shapes[point] = x.shape();
    return x;
  }
};

qt::models::ModelConfig tiny(const std::string& family, const std::string& gate = "none") {
  qt::models::ModelConfig c;
  c.family = qt::models::parse_family(family);
  c.layers = 2;
  c.hidden = 16;
  c.heads = 2;
  c.ffn = 32;
  c.vocab_size = 64;
  c.max_length = 12;
  c.image_size = 16;
  c.patch_size = 4;
  c.num_classes = 10;
  c.gate = qt::nn::parse_gate_kind(gate);
  c.init_std = 0.2;  // larger weights: activations with some structure
  c.layer_norm_eps = family == "bert" ? 1e-12 : 1e-5;
  return c;
}

qt::models::Batch text_batch(const Tensor& ids) {
  qt::models::Batch b;
  b.input_ids = ids;
  return b;
}

qt::models::Batch image_batch(int64_t batch, unsigned seed) {
  qt::models::Batch b;
  b.images = qt::test::random_tensor({batch, 16, 16}, qt::DType::f32, seed);
  return b;
}

// One forward pass of `model` on `batch` with `taps` installed (eval mode, no autograd).
void forward(const qt::models::Model& model, const qt::models::Batch& batch,
             qt::nn::ActivationTaps* taps) {
  qt::NoGradGuard no_grad;
  qt::nn::TapScope scope(taps);
  (void)model.logits(batch);
}

// Naive per-row statistics of method.md §5: rows of `n` values.
double row_inf(const double* v, int64_t n) {
  double m = 0;
  for (int64_t i = 0; i < n; ++i) m = std::max(m, std::fabs(v[i]));
  return m;
}
double row_kurtosis(const double* v, int64_t n) {
  double mean = 0;
  for (int64_t i = 0; i < n; ++i) mean += v[i];
  mean /= static_cast<double>(n);
  double m2 = 0, m4 = 0;
  for (int64_t i = 0; i < n; ++i) {
    m2 += (v[i] - mean) * (v[i] - mean);
    m4 += std::pow(v[i] - mean, 4);
  }
  const double s = std::sqrt(m2 / static_cast<double>(n - 1));
  return (m4 / static_cast<double>(n)) / (std::pow(s, 4) + 1e-6);
}

// The averages of one recorded name: inf norm over all passes, kurtosis over the first
// `kurtosis_passes`; rows of `row_length` values.
qt::quant::NameMetrics naive_metrics(const std::vector<std::vector<double>>& passes,
                                     int64_t row_length, size_t kurtosis_passes = 1000) {
  double inf = 0, kurt = 0;
  int64_t inf_rows = 0, kurt_rows = 0;
  for (size_t p = 0; p < passes.size(); ++p) {
    const int64_t rows = static_cast<int64_t>(passes[p].size()) / row_length;
    for (int64_t r = 0; r < rows; ++r) {
      inf += row_inf(passes[p].data() + r * row_length, row_length);
      ++inf_rows;
      if (p < kurtosis_passes) {
        kurt += row_kurtosis(passes[p].data() + r * row_length, row_length);
        ++kurt_rows;
      }
    }
  }
  return {inf / static_cast<double>(inf_rows), kurt / static_cast<double>(kurt_rows)};
}

AnalysisOptions options_for(const qt::models::ModelConfig&) {
  return AnalysisOptions{};
}

// The points of one layer spelled out from the HF-like module paths (independent of the models'
// own point tables, which must agree).
qt::quant::LayerPoints spelled_points(const std::string& family, int64_t layer) {
  const std::string index = std::to_string(layer);
  const std::string path = family == "bert"  ? "encoder.layer." + index
                           : family == "opt" ? "decoder.layers." + index
                                             : "layers." + index;
  qt::quant::LayerPoints p;
  p.ffn_output = path + ".ffn_out:output";
  p.residual_sum = path + ":ffn_residual";
  p.block_output = path + ":output";
  p.attention_output = path + ".attention.output:output";
  p.attention_layer_norm = path + ".attention_layer_norm:output";
  p.ffn_layer_norm = path + ".output_layer_norm:output";
  p.probabilities = path + ".attention:probabilities";
  p.gate = path + ".attention:gate";
  p.value = path + ".attention.value:output";
  return p;
}

// Runs the analysis and a Recorder over the same batches.
struct Observed {
  AnalysisResult result;
  Recorder recorder;
};
Observed observe(const qt::models::Model& model, const std::vector<qt::models::Batch>& batches,
                 const AnalysisOptions& options) {
  Observed out;
  OutlierAnalysis analysis(model.points(), options);
  for (const auto& batch : batches) {
    analysis.begin_batch(batch.input_ids, batch.images);
    forward(model, batch, &analysis);
    forward(model, batch, &out.recorder);
  }
  out.result = analysis.result();
  return out;
}

void check_close(const qt::quant::NameMetrics& got, const qt::quant::NameMetrics& want,
                 const std::string& what) {
  INFO(what);
  CHECK(got.inf_norm == doctest::Approx(want.inf_norm).epsilon(1e-9));
  CHECK(got.kurtosis == doctest::Approx(want.kurtosis).epsilon(1e-9));
}

}  // namespace

TEST_CASE("test_outlier_analysis: BERT per-layer metrics, headline and histogram vs naive loops") {
  OneThread one_thread;
  const auto config = tiny("bert");
  auto model = qt::models::build_model(config, 7);
  model->eval();
  const std::vector<qt::models::Batch> batches = {
      text_batch(qt::test::random_ids({3, 12}, 0, 63, 1)),
      text_batch(qt::test::random_ids({2, 12}, 0, 63, 2))};
  AnalysisOptions options = options_for(config);
  options.kurtosis_batches = 1;  // kurtosis rows from the first batch only (method.md §5 step 4)
  const Observed o = observe(*model, batches, options);
  const AnalysisResult& r = o.result;
  CHECK(r.batches == 2);
  CHECK(r.sequences == 5);
  REQUIRE(r.layer_metrics.size() == 2);
  const int64_t row = 12 * 16;  // one row per sequence: T * d
  std::vector<double> ffn_inf, kurtoses;
  for (int64_t l = 0; l < 2; ++l) {
    const auto p = spelled_points("bert", l);
    const auto ffn = naive_metrics(o.recorder.values.at(p.ffn_output), row, 1);
    const auto residual = naive_metrics(o.recorder.values.at(p.residual_sum), row, 1);
    const auto block = naive_metrics(o.recorder.values.at(p.block_output), row, 1);
    check_close(r.layer_metrics[l].ffn_output, ffn, p.ffn_output);
    check_close(r.layer_metrics[l].residual_sum, residual, p.residual_sum);
    check_close(r.layer_metrics[l].block_output, block, p.block_output);
    // In post-LN BERT the residual sum and the block output (its LayerNorm) really differ.
    CHECK(residual.inf_norm != doctest::Approx(block.inf_norm));
    ffn_inf.push_back(ffn.inf_norm);
    kurtoses.push_back(ffn.kurtosis);
    kurtoses.push_back(block.kurtosis);
    CHECK(r.headline.extra.at("max_block_output_inf_norm") >= block.inf_norm - 1e-12);
    CHECK(r.headline.extra.at("max_residual_sum_inf_norm") >= residual.inf_norm - 1e-12);
  }
  // Headline (Table 2): max over layers of the FFN-output inf norm; mean kurtosis of 2L names.
  CHECK(r.headline.max_inf_norm ==
        doctest::Approx(*std::max_element(ffn_inf.begin(), ffn_inf.end())).epsilon(1e-12));
  double mean = 0;
  for (double k : kurtoses) mean += k / static_cast<double>(kurtoses.size());
  CHECK(r.headline.avg_kurtosis == doctest::Approx(mean).epsilon(1e-9));
  CHECK(r.names.size() == 6);  // 3 names per layer
  // The kurtosis of batch 1 is excluded: with it the average would differ.
  const auto all =
      naive_metrics(o.recorder.values.at(spelled_points("bert", 1).ffn_output), row, 2);
  CHECK(r.layer_metrics[1].ffn_output.kurtosis != doctest::Approx(all.kurtosis));

  // Histogram of the last layer's FFN output over both batches: naive bin counts.
  std::vector<double> values;
  for (const auto& pass : o.recorder.values.at("encoder.layer.1.ffn_out:output"))
    values.insert(values.end(), pass.begin(), pass.end());
  const auto& h = r.histogram;
  CHECK(h.point == "encoder.layer.1.ffn_out:output");
  CHECK(h.values == static_cast<int64_t>(values.size()));
  CHECK(h.low == *std::min_element(values.begin(), values.end()));
  CHECK(h.high == *std::max_element(values.begin(), values.end()));
  REQUIRE(h.counts.size() == 100);
  std::vector<int64_t> counts(100, 0);
  for (double v : values)
    ++counts[std::min<size_t>(99, static_cast<size_t>((v - h.low) / ((h.high - h.low) / 100)))];
  CHECK(counts == h.counts);
  CHECK(r.gates.empty());  // not gated
}

TEST_CASE("test_outlier_analysis: OPT tensor set, per-token rows and the max layer inf norm") {
  OneThread one_thread;
  const auto config = tiny("opt");
  auto model = qt::models::build_model(config, 8);
  model->eval();
  const std::vector<qt::models::Batch> batches = {
      text_batch(qt::test::random_ids({2, 10}, 0, 63, 3)),
      text_batch(qt::test::random_ids({2, 10}, 0, 63, 4))};
  const Observed o = observe(*model, batches, options_for(config));
  const AnalysisResult& r = o.result;
  const int64_t d = 16, sequence_row = 10 * 16;
  // 1 + 5L names (method.md §5) plus the per-layer FFN-residual alias of the layer output.
  std::vector<std::string> spec_names = {"decoder.final_layer_norm:output"};
  std::vector<double> layer_inf, all_inf, fc2_inf, kurtoses;
  for (int64_t l = 0; l < 2; ++l) {
    const auto p = spelled_points("opt", l);
    for (const auto& name : {p.block_output, p.ffn_output, p.ffn_layer_norm, p.attention_output,
                             p.attention_layer_norm})
      spec_names.push_back(name);
    // fc2 and final_layer_norm: one row per token; the others one row per sequence.
    const auto fc2 = naive_metrics(o.recorder.values.at(p.ffn_output), d);
    check_close(r.layer_metrics[l].ffn_output, fc2, p.ffn_output);
    check_close(r.names.at(p.ffn_layer_norm),
                naive_metrics(o.recorder.values.at(p.ffn_layer_norm), d), p.ffn_layer_norm);
    const auto block = naive_metrics(o.recorder.values.at(p.block_output), sequence_row);
    check_close(r.layer_metrics[l].block_output, block, p.block_output);
    check_close(r.layer_metrics[l].residual_sum, block, "pre-LN: residual sum = block output");
    check_close(r.names.at(p.attention_output),
                naive_metrics(o.recorder.values.at(p.attention_output), sequence_row),
                p.attention_output);
    layer_inf.push_back(block.inf_norm);
    fc2_inf.push_back(fc2.inf_norm);
  }
  check_close(r.names.at("decoder.final_layer_norm:output"),
              naive_metrics(o.recorder.values.at("decoder.final_layer_norm:output"), sequence_row),
              "final LN");
  for (const auto& name : spec_names) {
    const bool per_token = name.find("ffn_out:") != std::string::npos ||
                           name.find("output_layer_norm:") != std::string::npos;
    const auto m = naive_metrics(o.recorder.values.at(name), per_token ? d : sequence_row);
    all_inf.push_back(m.inf_norm);
    kurtoses.push_back(m.kurtosis);
  }
  CHECK(r.headline.max_inf_norm ==
        doctest::Approx(*std::max_element(layer_inf.begin(), layer_inf.end())).epsilon(1e-12));
  CHECK(r.headline.extra.at("max_ffn_inf_norm") ==
        doctest::Approx(*std::max_element(fc2_inf.begin(), fc2_inf.end())).epsilon(1e-12));
  CHECK(r.headline.extra.at("max_inf_norm_all") ==
        doctest::Approx(*std::max_element(all_inf.begin(), all_inf.end())).epsilon(1e-12));
  // Avg kurtosis over the 1 + 5L spec names (the ffn_residual alias equals the layer output, so
  // it would not change a max but must not be double counted in the mean).
  double mean = 0;
  for (double k : kurtoses) mean += k / static_cast<double>(kurtoses.size());
  CHECK(r.headline.avg_kurtosis == doctest::Approx(mean).epsilon(1e-9));
}

TEST_CASE("test_outlier_analysis: a planted outlier is found at its hidden dim on its token") {
  OneThread one_thread;
  auto config = tiny("opt");
  config.hidden = 32;
  config.ffn = 64;
  config.max_length = 16;
  config.init_std = 0.006;  // OPT's init: everything small but the planted path
  auto model = qt::models::build_model(config, 9);
  model->eval();
  auto opt = std::dynamic_pointer_cast<qt::models::Opt>(model);
  REQUIRE(opt);
  const int64_t d = 32, ffn = 64;
  const int64_t dot = qt::data::kFirstByteId + '.';  // the token that gets the outlier
  const int64_t j = 5, k = 11, unit = 7;             // input dim, outlier dim, FFN unit
  // 1. Token '.' has a large embedding in dim j (so LN_ffn(h1) at that token is ~sqrt(d - 1) in j).
  float* embedding = opt->token_embeddings->weight.data<float>();
  embedding[dot * d + j] = 50.0f;
  for (const auto& block : opt->layers) {
    // 2. No attention output: h1 = h, so no other token receives part of the large value.
    qt::ops::fill_(block->attention->output->weight, 0.0);
    qt::ops::fill_(block->attention->output->bias, 0.0);
  }
  const auto& last = opt->layers[1];
  // 3. FFN unit `unit` of the last layer fires only for a dominant dim j: 10 z_j - 45 > 0.
  float* w1 = last->ffn_in->weight.data<float>();
  for (int64_t c = 0; c < d; ++c) w1[unit * d + c] = c == j ? 10.0f : 0.0f;
  last->ffn_in->bias.data<float>()[unit] = -45.0f;
  // 4. ... and writes 50 x its activation into hidden dim k.
  float* w2 = last->ffn_out->weight.data<float>();
  for (int64_t r = 0; r < d; ++r) w2[r * ffn + unit] = r == k ? 50.0f : 0.0f;

  // '.' at three positions of two sequences, other tokens random non-delimiters.
  Tensor ids = qt::test::random_ids({2, 16}, qt::data::kFirstByteId, 40, 10);
  const std::vector<std::pair<int64_t, int64_t>> planted = {{0, 3}, {0, 9}, {1, 14}};
  for (const auto& [b, t] : planted) ids.data<int64_t>()[b * 16 + t] = dot;
  AnalysisOptions options = options_for(config);
  options.delimiter_ids = {dot};  // count the outliers on '.' as on the delimiter set
  for (int64_t id = 0; id < 64; ++id)
    options.token_strings.push_back(
        id < qt::data::kFirstMergeId ? qt::data::Tokenizer().token_bytes(static_cast<int32_t>(id))
                                     : "#");
  const Observed o = observe(*model, {text_batch(ids)}, options);
  const auto& ffn_outliers = o.result.outliers[2];  // layer 1 FFN output (order: ffn, block)
  REQUIRE(ffn_outliers.point == "decoder.layers.1.ffn_out:output");
  CHECK(ffn_outliers.elements == 2 * 16 * d);
  CHECK(ffn_outliers.count == 3);
  REQUIRE(ffn_outliers.hidden_dims.size() == 1);
  CHECK(ffn_outliers.hidden_dims[0].index == k);
  CHECK(ffn_outliers.hidden_dims[0].count == 3);
  REQUIRE(ffn_outliers.tokens.size() == 1);
  CHECK(ffn_outliers.tokens[0].index == dot);
  CHECK(ffn_outliers.tokens[0].text == ".");
  CHECK(ffn_outliers.tokens[0].count == 3);
  REQUIRE(ffn_outliers.on_token_sets.size() == 1);
  CHECK(ffn_outliers.on_token_sets[0] == 3);  // all three sit on the delimiter set
  // The mechanism's total is the sum over the outlier points.
  int64_t on = 0, all = 0;
  for (const auto& point : o.result.outliers) {
    on += point.on_token_sets[0];
    all += point.count;
  }
  CHECK(o.result.mechanism.token_sets[0].outliers_on == on);
  CHECK(o.result.mechanism.token_sets[0].outliers == all);
  CHECK(on >= 3);
  // The recorded FFN output holds the planted values exactly there (independent of find_outliers).
  const auto& recorded = o.recorder.values.at("decoder.layers.1.ffn_out:output")[0];
  for (const auto& [b, t] : planted) CHECK(recorded[(b * 16 + t) * d + k] > 200.0);
  // Layer 0 has no outliers, and the last layer's FFN output dominates the FFN norms.
  CHECK(o.result.outliers[0].count == 0);
  CHECK(o.result.headline.extra.at("max_ffn_inf_norm") ==
        doctest::Approx(o.result.layer_metrics[1].ffn_output.inf_norm));
}

TEST_CASE(
    "test_outlier_analysis: attention mass, value norms and gates per token set vs hand sums") {
  OneThread one_thread;
  for (const std::string family : {"bert", "opt", "vit"}) {
    CAPTURE(family);
    const auto config = tiny(family, "linear");
    auto model = qt::models::build_model(config, 11);
    model->eval();
    AnalysisOptions options = options_for(config);
    options.delimiter_ids = qt::quant::delimiter_token_ids(model->points(), {});
    options.attention_layer = 0;
    options.attention_head = 1;
    std::vector<qt::models::Batch> batches;
    int64_t T = 0;
    // ViT background patches: every value equal to the background value. Patches 0 and 5 of
    // image 0 and 15 of image 1 (of the first batch); patch 3 of image 1 differs in one pixel.
    const float background = -0.4242f;
    std::set<std::pair<int64_t, int64_t>> background_keys;  // (sequence of batch 0, position)
    if (family == "vit") {
      batches = {image_batch(2, 5), image_batch(3, 6)};
      T = 17;  // 16 patches + CLS
      options.background_value = background;
      float* pixels = batches[0].images.data<float>();
      for (const auto& [b, n] : std::vector<std::pair<int64_t, int64_t>>{{0, 0}, {0, 5}, {1, 15}}) {
        for (int64_t k = 0; k < 16; ++k) pixels[(b * 16 + n) * 16 + k] = background;
        background_keys.insert({b, n + 1});
      }
      for (int64_t k = 0; k < 16; ++k) pixels[(16 + 3) * 16 + k] = k == 7 ? 0.0f : background;
    } else {
      T = 12;
      for (unsigned s = 0; s < 2; ++s) {
        Tensor ids = qt::test::random_ids({2, T}, qt::data::kFirstByteId, 40, 20 + s);
        int64_t* v = ids.data<int64_t>();
        if (family == "bert") {  // [CLS] ... '.' ... ',' ... [SEP]
          v[0] = qt::data::kClsId;
          v[4] = qt::data::kFirstByteId + '.';
          v[T + 7] = qt::data::kFirstByteId + ',';
          v[T - 1] = qt::data::kSepId;
        } else {  // </s> at the start of each sequence and once inside
          v[0] = v[T] = qt::data::kEndOfTextId;
          v[6] = qt::data::kEndOfTextId;
        }
        batches.push_back(text_batch(ids));
      }
    }
    const Observed o = observe(*model, batches, options);
    // Token set s of (batch p, sequence b, position t), by the definitions (not the code's masks).
    const auto in_set = [&](size_t s, size_t p, int64_t b, int64_t t) {
      if (family == "vit") return s == 0 ? t == 0 : p == 0 && background_keys.count({b, t}) == 1;
      const int64_t id = batches[p].input_ids.data<int64_t>()[b * T + t];
      return family == "bert"
                 ? (id == qt::data::kClsId || id == qt::data::kSepId ||
                    id == qt::data::kFirstByteId + '.' || id == qt::data::kFirstByteId + ',')
                 : id == qt::data::kEndOfTextId;
    };
    const auto& sets = o.result.mechanism.token_sets;
    REQUIRE(sets.size() == (family == "vit" ? 2u : 1u));
    CHECK(sets[0].name == (family == "vit" ? "cls" : "delimiters"));
    if (family == "vit") {
      CHECK(sets[1].name == "background");
      CHECK(sets[1].tokens == 3);
      CHECK(sets[1].all_tokens == 5 * 17);
    }
    for (size_t s = 0; s < sets.size(); ++s)
      for (int64_t l = 0; l < 2; ++l) {
        CAPTURE(s);
        CAPTURE(l);
        const auto points = spelled_points(family, l);
        const auto& probabilities = o.recorder.values.at(points.probabilities);
        const auto& values = o.recorder.values.at(points.value);
        const auto& gates = o.recorder.values.at(points.gate);
        for (int64_t h = 0; h < 2; ++h) {
          double mass = 0, norm_in = 0, norm_out = 0, gate_in = 0, gate_out = 0;
          int64_t queries = 0, in = 0, out = 0;
          for (size_t p = 0; p < batches.size(); ++p) {
            const int64_t B = static_cast<int64_t>(values[p].size()) / (T * 16);
            for (int64_t b = 0; b < B; ++b)
              for (int64_t t = 0; t < T; ++t) {
                for (int64_t i = 0; i < T; ++i)
                  if (in_set(s, p, b, t)) mass += probabilities[p][((b * 2 + h) * T + i) * T + t];
                double squares = 0;
                for (int64_t c = h * 8; c < (h + 1) * 8; ++c)
                  squares += std::pow(values[p][(b * T + t) * 16 + c], 2);
                const double g = gates[p][(b * T + t) * 2 + h];
                if (in_set(s, p, b, t)) {
                  norm_in += std::sqrt(squares);
                  gate_in += g;
                  ++in;
                } else {
                  norm_out += std::sqrt(squares);
                  gate_out += g;
                  ++out;
                }
                ++queries;
              }
          }
          REQUIRE(in > 0);
          CHECK(sets[s].mass[l][h] == doctest::Approx(mass / queries).epsilon(1e-12));
          CHECK(sets[s].value_norm_in[l][h] == doctest::Approx(norm_in / in).epsilon(1e-12));
          CHECK(sets[s].value_norm_out[l][h] == doctest::Approx(norm_out / out).epsilon(1e-12));
          CHECK(sets[s].gate_in[l][h] == doctest::Approx(gate_in / in).epsilon(1e-12));
          CHECK(sets[s].gate_out[l][h] == doctest::Approx(gate_out / out).epsilon(1e-12));
        }
      }
    for (int64_t l = 0; l < 2; ++l) {
      const std::string point = spelled_points(family, l).probabilities;
      const auto& passes = o.recorder.values.at(point);
      std::vector<double> mass(2, 0.0);
      int64_t queries = 0;
      for (size_t p = 0; p < passes.size(); ++p) {
        const int64_t B = static_cast<int64_t>(passes[p].size()) / (2 * T * T);
        for (int64_t b = 0; b < B; ++b) {
          for (int64_t h = 0; h < 2; ++h)
            for (int64_t i = 0; i < T; ++i)
              for (int64_t jj = 0; jj < T; ++jj) {
                bool delimiter = false;
                if (family == "vit") {
                  delimiter = jj == 0;
                } else {
                  const int64_t id = batches[p].input_ids.data<int64_t>()[b * T + jj];
                  delimiter = family == "bert"
                                  ? (id == qt::data::kClsId || id == qt::data::kSepId ||
                                     id == qt::data::kFirstByteId + '.' ||
                                     id == qt::data::kFirstByteId + ',')
                                  : id == qt::data::kEndOfTextId;
                }
                if (delimiter) mass[h] += passes[p][((b * 2 + h) * T + i) * T + jj];
              }
          queries += T;
        }
      }
      for (int64_t h = 0; h < 2; ++h) {
        CHECK(o.result.delimiter_attention[l][h] == sets[0].mass[l][h]);
        CHECK(o.result.delimiter_attention[l][h] ==
              doctest::Approx(mass[h] / static_cast<double>(queries)).epsilon(1e-12));
        CHECK(o.result.delimiter_attention[l][h] > 0.0);
        CHECK(o.result.delimiter_attention[l][h] <= 1.0 + 1e-9);
      }
    }
    // The dumped matrix is P[0, head 1] of layer 0 in the first batch.
    const auto& m = o.result.attention;
    CHECK(m.layer == 0);
    CHECK(m.head == 1);
    REQUIRE(m.length == T);
    const auto& first = o.recorder.values.at(spelled_points(family, 0).probabilities)[0];
    for (int64_t i = 0; i < T * T; ++i) CHECK(m.probabilities[i] == first[T * T + i]);
    REQUIRE(m.tokens.size() == static_cast<size_t>(T));
    if (family == "bert") CHECK(m.tokens[0] == "#2");  // no token strings given: ids
    if (family == "vit") CHECK(m.tokens[0] == "[CLS]");
    if (family == "opt")  // causal: the first query sees only the first key
      CHECK(m.probabilities[0] == doctest::Approx(1.0));
  }
}

TEST_CASE("test_outlier_analysis: gate statistics per head equal the recorded gate") {
  OneThread one_thread;
  for (const std::string gate : {"linear", "all-heads-linear"}) {
    CAPTURE(gate);
    auto config = tiny("bert", gate);
    auto model = qt::models::build_model(config, 12);
    model->eval();
    const std::vector<qt::models::Batch> batches = {
        text_batch(qt::test::random_ids({2, 12}, 0, 63, 30)),
        text_batch(qt::test::random_ids({3, 12}, 0, 63, 31))};
    const Observed o = observe(*model, batches, options_for(config));
    REQUIRE(o.result.gates.size() == 2);
    for (int64_t l = 0; l < 2; ++l) {
      const auto& passes = o.recorder.values.at(spelled_points("bert", l).gate);
      for (int64_t h = 0; h < 2; ++h) {
        double sum = 0, low = 2, high = -1;
        int64_t n = 0;
        for (const auto& pass : passes)
          for (size_t i = static_cast<size_t>(h); i < pass.size(); i += 2) {
            sum += pass[i];
            low = std::min(low, pass[i]);
            high = std::max(high, pass[i]);
            ++n;
          }
        CHECK(n == 5 * 12);
        const auto& g = o.result.gates[l][h];
        CHECK(g.mean == doctest::Approx(sum / static_cast<double>(n)).epsilon(1e-12));
        CHECK(g.min == low);
        CHECK(g.max == high);
        CHECK(g.min < g.max);  // input-dependent gates vary over tokens
      }
    }
  }
}

TEST_CASE("test_outlier_analysis: the sink's share of attention, against its closed form") {
  // Query and key projections zeroed: every score is 0, so with sink logit a each of the T keys
  // gets 1 / (T + e^a) and the sink e^a / (T + e^a), in every row (no padding, not causal).
  OneThread one_thread;
  auto config = tiny("bert");
  config.softmax = qt::nn::SoftmaxKind::sink;
  auto model = qt::models::build_model(config, 15);
  model->eval();
  int sinks = 0;
  for (const auto& [name, parameter] : model->named_parameters()) {
    const auto ends_with = [&](const std::string& tail) {
      return name.size() >= tail.size() &&
             name.compare(name.size() - tail.size(), tail.size(), tail) == 0;
    };
    if (ends_with("query.weight") || ends_with("query.bias") || ends_with("key.weight") ||
        ends_with("key.bias"))
      qt::ops::copy_into(parameter, qt::ops::zeros(parameter.shape()));
    if (ends_with(".sink")) {
      qt::ops::copy_into(parameter,
                         qt::ops::from_vector(std::vector<float>{-1.0f, 2.0f + sinks}, {2}));
      ++sinks;
    }
  }
  REQUIRE(sinks == 2);
  const std::vector<qt::models::Batch> batches = {
      text_batch(qt::test::random_ids({2, 12}, 0, 63, 32))};
  const Observed o = observe(*model, batches, options_for(config));
  REQUIRE(o.result.sink_attention.size() == 2);
  for (int64_t l = 0; l < 2; ++l)
    for (int64_t h = 0; h < 2; ++h) {
      const double a = h == 0 ? -1.0 : 2.0 + static_cast<double>(l);
      CAPTURE(l);
      CAPTURE(h);
      CHECK(o.result.sink_attention[l][h] ==
            doctest::Approx(std::exp(a) / (12.0 + std::exp(a))).epsilon(1e-6));
    }
  // A vanilla model gives its sink column nothing (up to float rounding).
  auto vanilla = qt::models::build_model(tiny("bert"), 15);
  vanilla->eval();
  const Observed v = observe(*vanilla, batches, options_for(tiny("bert")));
  for (const auto& layer : v.result.sink_attention)
    for (double share : layer) CHECK(std::fabs(share) < 1e-6);
}

TEST_CASE("test_outlier_analysis: JSON round trip and thread independence") {
  const auto config = tiny("bert", "linear");
  auto model = qt::models::build_model(config, 13);
  model->eval();
  const std::vector<qt::models::Batch> batches = {
      text_batch(qt::test::random_ids({4, 12}, 0, 63, 40))};
  AnalysisOptions options = options_for(config);
  options.delimiter_ids = qt::quant::delimiter_token_ids(model->points(), {});
  options.token_strings = {"[PAD]", "a\"b\n"};  // strings needing escapes
  AnalysisResult results[2];
  for (int threads : {1, 2}) {
    const int previous = qt::num_threads();
    qt::set_num_threads(threads);
    OutlierAnalysis analysis(model->points(), options);
    analysis.begin_batch(batches[0].input_ids);
    forward(*model, batches[0], &analysis);
    results[threads - 1] = analysis.result();
    qt::set_num_threads(previous);
  }
  const nlohmann::json json = qt::quant::to_json(results[0]);
  CHECK(json.dump() == qt::quant::to_json(results[1]).dump());  // bit-identical with 2 threads
  CHECK(json["format"] == "qtlab.analysis");
  CHECK(json["layer_metrics"].size() == 2);
  CHECK(json["attention_matrix"]["probabilities"].size() == 12);
  CHECK(json["gates"].size() == 2);
  const AnalysisResult back = qt::quant::analysis_from_json(nlohmann::json::parse(json.dump()));
  CHECK(qt::quant::to_json(back) == json);
  CHECK(back.headline.max_inf_norm == results[0].headline.max_inf_norm);
  CHECK(back.attention.probabilities == results[0].attention.probabilities);
  CHECK(back.gates[1][1].max == results[0].gates[1][1].max);
  CHECK(json["version"] == qt::quant::kAnalysisVersion);
  CHECK(json["mechanism"]["token_sets"][0]["name"] == "delimiters");
  CHECK(json["outliers"][0]["on_token_sets"].contains("delimiters"));
  CHECK(back.mechanism.token_sets[0].mass == results[0].mechanism.token_sets[0].mass);
  CHECK(back.sink_attention == results[0].sink_attention);
  nlohmann::json without_sink = json;
  without_sink.erase("sink_attention");  // analyses written before it existed
  CHECK(qt::quant::analysis_from_json(without_sink).sink_attention.empty());
  // A version-1 file (before the mechanism) reads with an empty mechanism.
  nlohmann::json old = json;
  old["version"] = 1;
  old.erase("mechanism");
  for (auto& point : old["outliers"]) point.erase("on_token_sets");
  const AnalysisResult first = qt::quant::analysis_from_json(old);
  CHECK(first.mechanism.token_sets.empty());
  CHECK(first.outliers[0].on_token_sets.empty());
  CHECK(first.headline.max_inf_norm == results[0].headline.max_inf_norm);
  old["version"] = 3;
  CHECK_THROWS_WITH_AS(qt::quant::analysis_from_json(old), doctest::Contains("version 3"),
                       qt::Error);
  // Malformed input names the problem.
  nlohmann::json broken = json;
  broken.erase("headline");
  CHECK_THROWS_WITH_AS(qt::quant::analysis_from_json(broken), doctest::Contains("headline"),
                       qt::Error);
  CHECK_THROWS_WITH_AS(qt::quant::analysis_from_json(nlohmann::json{{"format", "other"}}),
                       doctest::Contains("not a qtlab analysis"), qt::Error);
}

TEST_CASE("test_outlier_analysis: analyze_model over synthetic validation batches") {
  OneThread one_thread;
  qt::models::RunConfig run = qt::models::preset("bert-mini");
  run.model = tiny("bert");
  run.model.max_length = 12;
  run.data.dataset = "synthetic";
  auto model = qt::models::build_model(run.model, 14);
  const qt::models::RunData data = qt::models::load_run_data(run);
  AnalysisOptions options;
  options.delimiter_ids = qt::quant::delimiter_token_ids(model->points(), {});
  model->train();
  const AnalysisResult r = qt::quant::analyze_model(*model, data, options, 4, 3);
  CHECK(model->is_training());  // mode restored
  CHECK(r.family == "bert");
  CHECK(r.batches == 3);
  CHECK(r.sequences == 12);
  CHECK(r.layer_metrics.size() == 2);
  CHECK(r.headline.max_inf_norm > 0);
  CHECK(r.headline.avg_kurtosis >= 1.0);  // Pearson kurtosis is >= 1 for any distribution
}

TEST_CASE("test_outlier_analysis: bad options and misuse throw naming the problem") {
  const auto config = tiny("bert");
  auto model = qt::models::build_model(config, 15);
  const qt::models::ModelPoints points = model->points();
  AnalysisOptions options = options_for(config);
  CHECK_THROWS_WITH_AS(qt::quant::layer_points(points, 2), doctest::Contains("layer 2"), qt::Error);
  options.attention_head = 2;
  CHECK_THROWS_WITH_AS((OutlierAnalysis{points, options}), doctest::Contains("attention head 2"),
                       qt::Error);
  options = options_for(config);
  options.attention_layer = 5;
  CHECK_THROWS_WITH_AS((OutlierAnalysis{points, options}), doctest::Contains("attention layer 5"),
                       qt::Error);
  qt::models::ModelPoints empty = points;
  empty.layers = 0;
  CHECK_THROWS_WITH_AS((OutlierAnalysis{empty, options_for(config)}),
                       doctest::Contains("layers >= 1"), qt::Error);

  model->eval();
  const auto batch = text_batch(qt::test::random_ids({2, 12}, 0, 63, 50));
  {
    OutlierAnalysis analysis(points, options_for(config));
    CHECK_THROWS_WITH_AS(analysis.result(), doctest::Contains("no batch"), qt::Error);
    CHECK_THROWS_WITH_AS(forward(*model, batch, &analysis), doctest::Contains("begin_batch"),
                         qt::Error);
    CHECK_THROWS_WITH_AS(analysis.begin_batch(Tensor()), doctest::Contains("input_ids"), qt::Error);
  }
  {
    // A histogram point that does not exist never fires: result() names it.
    AnalysisOptions o = options_for(config);
    o.histogram_point = "encoder.layer.9.ffn_out:output";
    OutlierAnalysis analysis(points, o);
    analysis.begin_batch(batch.input_ids);
    forward(*model, batch, &analysis);
    CHECK_THROWS_WITH_AS(analysis.result(), doctest::Contains("encoder.layer.9.ffn_out:output"),
                         qt::Error);
  }
  {
    // Analysis options for a deeper model than the one run: the missing layer is named.
    AnalysisOptions o = options_for(config);
    auto deeper = config;
    deeper.layers = 3;
    o.histogram_point = "encoder.layer.1.ffn_out:output";
    OutlierAnalysis analysis(qt::models::build_model(deeper, 15)->points(), o);
    analysis.begin_batch(batch.input_ids);
    forward(*model, batch, &analysis);
    CHECK_THROWS_WITH_AS(analysis.result(), doctest::Contains("encoder.layer.2"), qt::Error);
  }
  {
    // input_ids that do not belong to the batch being run.
    OutlierAnalysis analysis(points, options_for(config));
    analysis.begin_batch(qt::test::random_ids({3, 12}, 0, 63, 51));
    CHECK_THROWS_WITH_AS(forward(*model, batch, &analysis), doctest::Contains("input_ids"),
                         qt::Error);
  }
  // ViT takes no input_ids.
  const auto vit_points = qt::models::build_model(tiny("vit"), 15)->points();
  OutlierAnalysis vit(vit_points, options_for(tiny("vit")));
  CHECK_THROWS_WITH_AS(vit.begin_batch(qt::test::random_ids({2, 3}, 0, 5, 52)),
                       doctest::Contains("images take no input_ids"), qt::Error);
  // Background patches: only for images, and they need the batch's images.
  AnalysisOptions with_background = options_for(config);
  with_background.background_value = 0.0f;
  CHECK_THROWS_WITH_AS((OutlierAnalysis{points, with_background}),
                       doctest::Contains("a background value is for images"), qt::Error);
  OutlierAnalysis vit_background(vit_points, with_background);
  CHECK_THROWS_WITH_AS(vit_background.begin_batch(Tensor()),
                       doctest::Contains("need the batch's images"), qt::Error);
  CHECK_THROWS_WITH_AS(
      vit_background.begin_batch(Tensor(), qt::test::random_ids({2, 16, 16}, 0, 5, 53)),
      doctest::Contains("f32 [B, N, P]"), qt::Error);
}
