// `qtlab export-int`'s writer (quant/integer_export.h): for a tiny BERT (MLP gate), OPT (clipped
// softmax, linear gate, integer head) and ViT, the exported directory builds with the export's
// strict flags (no warning allowed), `make check` reproduces every tensor of every test vector
// bit for bit (the vectors come from the C++ integer engine), `model run` dumps the same tensors,
// and `qtlab check` on a candidate with one code changed by one LSB names that tensor and index.
#include <doctest/doctest.h>

#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <string>

#include "quant/integer_export.h"
#include "quant/integer_model.h"
#include "quant/tensor_dump.h"
#include "tests/integer_model_support.h"
#include "tests/test_util.h"

namespace {

namespace fs = std::filesystem;

std::string exported(const qt::test::Variant& v, const std::string& name) {
  qt::test::Calibrated c = qt::test::calibrated(v);
  qt::quant::IntegerModelOptions options;
  options.integer_head = v.integer_head;
  const qt::quant::IntegerModel im =
      qt::quant::build_integer_model(*c.model, c.quantized->ranges(), options);
  const std::vector<qt::models::Batch> vectors = {qt::test::validation_batch(c, 2),
                                                  qt::test::validation_batch(c, 3)};
  const fs::path dir = qt::test::scratch_directory("integer_export") / name;
  qt::quant::export_integer_model(im, vectors, dir.string(), {"tiny", "", "test"});
  return dir.string();
}

}  // namespace

TEST_CASE("test_integer_export: make check reproduces every vector bit for bit") {
  const std::vector<std::pair<qt::test::Variant, std::string>> cases = {
      {{"bert"}, "bert-vanilla"},
      {{"bert", "mlp"}, "bert-mlp"},
      {{"opt"}, "opt-vanilla"},
      {{"opt", "linear", true, 1}, "opt-clipped-linear-integer-head"},
      {{"vit", "none", true}, "vit-clipped"},
      {{"vit", "linear"}, "vit-linear"}};
  for (const auto& [variant, name] : cases) {
    CAPTURE(name);
    const std::string dir = exported(variant, name);
    for (const char* file : {"model.c", "Makefile", "weights.safetensors", "manifest.json",
                             "vectors/0/manifest.json", "vectors/1/manifest.json"})
      CHECK_MESSAGE(fs::exists(fs::path(dir) / file), file);
    const qt::test::CommandResult build =
        qt::test::run_command("make -s -C " + dir + " model 2>&1");
    REQUIRE_MESSAGE(build.status == 0, build.output);
    CHECK_MESSAGE(build.output.find("warning") == std::string::npos, build.output);
    const qt::test::CommandResult check =
        qt::test::run_command("make -s -C " + dir + " check 2>&1");
    CHECK_MESSAGE(check.status == 0, check.output);
    CHECK(check.output.find("vectors/1: all tensors bit-identical") != std::string::npos);
    // The manifest lists every file with its sha256.
    std::ifstream in(fs::path(dir) / "manifest.json");
    const nlohmann::json manifest = nlohmann::json::parse(in);
    CHECK(manifest["format"] == "qtlab-int-export");
    CHECK(manifest["sha256"].contains("model.c"));
    CHECK(manifest["ops"].size() > 10);
  }
}

TEST_CASE(
    "test_integer_export: model run dumps the reference's tensors; check names a 1-LSB change") {
  const std::string dir = exported({"bert", "linear"}, "bert-linear-check");
  REQUIRE(qt::test::run_command("make -s -C " + dir + " model 2>&1").status == 0);
  const std::string candidate = dir + "/candidate";
  fs::remove_all(candidate);
  fs::create_directories(candidate);
  const qt::test::CommandResult run =
      qt::test::run_command("cd " + dir + " && ./model run vectors/0 candidate 2>&1");
  REQUIRE_MESSAGE(run.status == 0, run.output);
  const std::string qtlab = QTLAB_BINARY;
  const qt::test::CommandResult same = qt::test::run_command(
      qtlab + " check --reference " + dir + "/vectors/0 --candidate " + candidate + " 2>&1");
  CHECK_MESSAGE(same.status == 0, same.output);
  // One code of one intermediate tensor moved by one LSB.
  qt::quant::TensorDump dump = qt::quant::read_tensor_dump(candidate);
  qt::quant::DumpTensor* t = dump.find("encoder.layer.1.attention.value.output");
  REQUIRE(t != nullptr);
  t->values[37] = t->values[37] == 255 ? 254 : t->values[37] + 1;
  qt::quant::write_tensor_dump(candidate, dump);
  const qt::test::CommandResult bumped = qt::test::run_command(
      qtlab + " check --reference " + dir + "/vectors/0 --candidate " + candidate + " 2>&1");
  CHECK(bumped.status == 1);
  CHECK_MESSAGE(bumped.output.find("encoder.layer.1.attention.value") != std::string::npos,
                bumped.output);
  CHECK_MESSAGE(bumped.output.find("first to diverge") != std::string::npos, bumped.output);
}
