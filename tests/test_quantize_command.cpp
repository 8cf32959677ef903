// The `qtlab quantize` command (tools/quantize.cpp), run as a user would on tiny checkpoints
// written by `qtlab pretrain`: both figures printed, the ranges file, the JSON report, the family
// defaults, and errors naming the bad input.
#include <doctest/doctest.h>

#include <cmath>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "tests/test_util.h"

namespace {

std::string qtlab(const std::string& arguments) {
  return std::string(QTLAB_BINARY) + " " + arguments;
}

const char* kTiny =
    "--dataset synthetic --threads 1 --steps 10 --set model.layers=1 --set model.hidden=32 "
    "--set model.heads=2 --set model.ffn=64 --set model.vocab_size=64 --set model.max_length=16 "
    "--set model.image_size=16 --set model.patch_size=4 --set train.batch_size=8 --set "
    "train.eval_batches=1 "
    "--set train.eval_every=1000 --quiet ";

// A checkpoint of a tiny model of `preset`, trained once per test process.
std::string checkpoint(const std::string& preset) {
  const std::filesystem::path dir = qt::test::scratch_directory("quantize_command") / preset;
  const std::filesystem::path model = dir / "model.safetensors";
  if (!std::filesystem::exists(model)) {
    const auto r = qt::test::run_command(
        qtlab("pretrain --model " + preset + " " + kTiny + "--run-dir " + dir.string()));
    REQUIRE_MESSAGE(r.status == 0, r.output);
  }
  return model.string();
}

const char* kQuick = " --threads 1 --calib-batches 2 --eval-batches 2 ";

nlohmann::json json_of(const std::string& output) {
  return nlohmann::json::parse(output.substr(output.find('{')));
}

}  // namespace

TEST_CASE("test_quantize_command: OPT prints FP and W8A8 perplexity and saves the ranges") {
  const std::string model = checkpoint("opt-mini");
  const auto r = qt::test::run_command(qtlab("quantize --checkpoint " + model + kQuick));
  REQUIRE_MESSAGE(r.status == 0, r.output);
  CHECK(r.output.find("FP32") != std::string::npos);
  CHECK(r.output.find("W8A8") != std::string::npos);
  CHECK(r.output.find("perplexity") != std::string::npos);
  // The family defaults of method.md §4.4.
  CHECK(r.output.find("weights MSE") != std::string::npos);
  CHECK(r.output.find("running_minmax:99.999") != std::string::npos);
  // One layer: 13 block points + embedding sum + final LN; 8 block weights + 2 tables + 1 gamma.
  CHECK(r.output.find("15 activation points, 11 weights (1 at their lookups)") !=
        std::string::npos);
  const auto ranges = std::filesystem::path(model).parent_path() / "quant-ranges-w8a8.json";
  REQUIRE(std::filesystem::exists(ranges));
  std::ifstream in(ranges);
  const nlohmann::json saved = nlohmann::json::parse(in);
  CHECK(saved["format"] == "qtlab.quant-ranges");
  CHECK(saved["activations"].size() == 15);
  CHECK(saved["weights"].size() == 11);
  CHECK(saved["calibration_batches"] == 2);

  // --json: the two figures as numbers; a W4A4 run is worse than W8A8 on the same batches.
  const auto j8 = qt::test::run_command(qtlab("quantize --json --checkpoint " + model + kQuick));
  REQUIRE_MESSAGE(j8.status == 0, j8.output);
  const nlohmann::json w8 = json_of(j8.output);
  // The same object is saved beside the model for `qtlab report`.
  const auto results = std::filesystem::path(model).parent_path() / "quantize-w8a8.json";
  REQUIRE(std::filesystem::exists(results));
  std::ifstream results_in(results);
  CHECK(nlohmann::json::parse(results_in) == w8);
  CHECK(w8["results"] == results.string());
  const std::string out4 = (std::filesystem::path(model).parent_path() / "w4.json").string();
  const auto j4 = qt::test::run_command(qtlab("quantize --json --wbits 4 --abits 4 --checkpoint " +
                                              model + kQuick + "--ranges-out " + out4));
  REQUIRE_MESSAGE(j4.status == 0, j4.output);
  const nlohmann::json w4 = json_of(j4.output);
  CHECK(std::filesystem::exists(out4));
  CHECK(w4["ranges"] == out4);
  const double fp = w8["fp"]["perplexity"], q8 = w8["quantized"]["perplexity"],
               q4 = w4["quantized"]["perplexity"];
  CHECK(w4["fp"]["perplexity"] == fp);  // same validation batches
  CHECK(std::isfinite(q8));
  CHECK(q8 != fp);
  CHECK(std::abs(q4 - fp) > std::abs(q8 - fp));
  CHECK(w8["activation_points"] == 15);
  // The flags override the defaults.
  const auto overridden = qt::test::run_command(
      qtlab("quantize --json --weight-range minmax --act-range running-minmax --head quantized "
            "--final-ln-bits 16 --checkpoint " +
            model + kQuick + "--ranges-out " + out4));
  REQUIRE_MESSAGE(overridden.status == 0, overridden.output);
  const nlohmann::json o = json_of(overridden.output);
  CHECK(o["weight_range"] == "current_minmax");
  CHECK(o["activation_range"] == "running_minmax");
  CHECK(o["head_quantized"] == true);
  CHECK(o["activation_points"] == 16);  // + the logits
  CHECK(o["weights_at_lookup"] == 0);
  std::ifstream in4(out4);
  const nlohmann::json saved4 = nlohmann::json::parse(in4);
  CHECK(saved4["activations"]["decoder.final_layer_norm:output"]["bits"] == 16);
  CHECK(saved4["activations"]["decoder.final_layer_norm:output"]["int_max"] == 65535);
}

TEST_CASE("test_quantize_command: BERT and ViT") {
  const auto bert = qt::test::run_command(
      qtlab("quantize --json --checkpoint " + checkpoint("bert-mini") + kQuick));
  REQUIRE_MESSAGE(bert.status == 0, bert.output);
  const nlohmann::json b = json_of(bert.output);
  CHECK(b["family"] == "bert");
  CHECK(b["weight_range"] == "current_minmax");
  CHECK(b["activation_range"] == "running_minmax");
  CHECK(b["head_quantized"] == false);
  CHECK(b["quantized"]["perplexity"].get<double>() > 1.0);
  const auto vit =
      qt::test::run_command(qtlab("quantize --checkpoint " + checkpoint("vit-tiny") + kQuick));
  REQUIRE_MESSAGE(vit.status == 0, vit.output);
  CHECK(vit.output.find("accuracy") != std::string::npos);
  CHECK(vit.output.find("quantized head") != std::string::npos);
  CHECK(vit.output.find("W8A8") != std::string::npos);
}

TEST_CASE("test_quantize_command: bad input gives errors naming it") {
  const auto missing =
      qt::test::run_command(qtlab("quantize --checkpoint /nonexistent/model.safetensors"));
  CHECK(missing.status != 0);
  CHECK(missing.output.find("/nonexistent/model.safetensors") != std::string::npos);
  const std::string model = checkpoint("opt-mini");
  const auto bits = qt::test::run_command(qtlab("quantize --wbits 1 --checkpoint " + model));
  CHECK(bits.status != 0);
  CHECK(bits.output.find("--wbits 1") != std::string::npos);
  const auto abits = qt::test::run_command(qtlab("quantize --abits 17 --checkpoint " + model));
  CHECK(abits.status != 0);
  CHECK(abits.output.find("--abits 17") != std::string::npos);
  const auto act =
      qt::test::run_command(qtlab("quantize --act-range maxabs --checkpoint " + model));
  CHECK(act.status != 0);
  CHECK(act.output.find("unknown --act-range 'maxabs'") != std::string::npos);
  const auto percentile =
      qt::test::run_command(qtlab("quantize --act-range percentile:abc --checkpoint " + model));
  CHECK(percentile.status != 0);
  CHECK(percentile.output.find("percentile:abc") != std::string::npos);
  const auto weights =
      qt::test::run_command(qtlab("quantize --weight-range l2 --checkpoint " + model));
  CHECK(weights.status != 0);
  CHECK(weights.output.find("unknown --weight-range 'l2'") != std::string::npos);
  const auto head = qt::test::run_command(qtlab("quantize --head half --checkpoint " + model));
  CHECK(head.status != 0);
  CHECK(head.output.find("--head 'half'") != std::string::npos);
}

TEST_CASE("test_quantize_command: --sweep evaluates FP once and each bit width as alone") {
  const std::string model = checkpoint("bert-mini");
  const auto dir = std::filesystem::path(model).parent_path();
  const auto single = qt::test::run_command(qtlab("quantize --checkpoint " + model + kQuick +
                                                  "--wbits 4 --abits 8 --weight-range mse --json"));
  REQUIRE_MESSAGE(single.status == 0, single.output);
  const nlohmann::json alone = json_of(single.output);
  const std::string sweep_file = (dir / "sweep.jsonl").string();
  const auto sweep =
      qt::test::run_command(qtlab("quantize --checkpoint " + model + kQuick +
                                  "--sweep W8A8,W4A8:mse,W8A4 --results-out " + sweep_file));
  REQUIRE_MESSAGE(sweep.status == 0, sweep.output);
  CHECK(sweep.output.find("sweep over 3 configurations") != std::string::npos);
  std::ifstream in(sweep_file);
  std::vector<nlohmann::json> lines;
  for (std::string line; std::getline(in, line);) lines.push_back(nlohmann::json::parse(line));
  REQUIRE(lines.size() == 3);
  CHECK(lines[0]["spec"] == "W8A8");
  CHECK(lines[1]["spec"] == "W4A8:mse");
  CHECK(lines[2]["activation_bits"] == 4);
  // The sweep's W4A8:mse entry is the model `quantize --wbits 4 --weight-range mse` measures.
  CHECK(lines[1]["weight_range"] == alone["weight_range"]);
  CHECK(lines[1]["quantized"] == alone["quantized"]);
  CHECK(lines[1]["fp"] == alone["fp"]);
  for (const auto& line : lines) CHECK(line["fp"] == lines[0]["fp"]);
  // A bad list fails before any evaluation, naming the entry.
  const auto bad =
      qt::test::run_command(qtlab("quantize --checkpoint " + model + kQuick + "--sweep W8A8,W9"));
  CHECK(bad.status != 0);
  CHECK(bad.output.find("quantization 'W9'") != std::string::npos);
  const auto twice =
      qt::test::run_command(qtlab("quantize --checkpoint " + model + kQuick + "--sweep W8A8,W8A8"));
  CHECK(twice.output.find("'W8A8' is listed twice") != std::string::npos);
}
