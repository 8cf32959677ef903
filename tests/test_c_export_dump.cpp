// The C99 dump writer and reader (quant/export/qtlab_dump.c) and the example graph
// (quant/export/qtlab_example_graph.c): the C side of an export, end to end. The test generates
// the graph's parameter header from the reference manifest's op attributes (what the model
// exporter will do for a whole model), compiles the example with the export's flags, runs it on
// the reference dump's graph inputs and requires that
//   - the C++ reader accepts the C dump (format, every file's size and sha256) and
//   - `qtlab check` finds every tensor equal to the C++ reference, for two different inputs;
// and that the C reader refuses a truncated input file, naming it.
#include <doctest/doctest.h>

#include <filesystem>
#include <fstream>
#include <string>

#include <fmt/format.h>

#include "quant/example_graph.h"
#include "tests/c_export_support.h"

using namespace qt::quant;
namespace fs = std::filesystem;

namespace {

fs::path scratch(const std::string& name) {
  const fs::path dir = qt::test::scratch_directory("c_export_dump") / name;
  fs::remove_all(dir);
  fs::create_directories(dir);
  return dir;
}

// `qtlab check --write-example DIR --seed N`: the reference dump and the C header, as the
// worked example of docs/integer-reference.md makes them.
fs::path write_example(const std::string& name, unsigned seed) {
  const fs::path dir = scratch(name);
  const auto r = qt::test::run_command(
      fmt::format("{} check --write-example {} --seed {}", QTLAB_BINARY, dir.string(), seed));
  REQUIRE_MESSAGE(r.status == 0, r.output);
  return dir;
}

// The example compiled once, against the header written with the seed-7 reference.
const std::string& example() {
  static const std::string binary = [] {
    const fs::path include = write_example("include", 7);
    return qt::test::compiled_c_program(
        "qtlab_example_graph", {"quant/export/qtlab_int8.c", "quant/export/qtlab_dump.c",
                                "quant/export/qtlab_example_graph.c -I" + include.string()});
  }();
  return binary;
}

qt::test::CommandResult check(const fs::path& reference, const fs::path& candidate) {
  return qt::test::run_command(fmt::format("{} check --reference {} --candidate {}", QTLAB_BINARY,
                                           reference.string(), candidate.string()));
}

}  // namespace

TEST_CASE("test_c_export_dump: the C example's dump equals the C++ reference, bit for bit") {
  for (unsigned seed : {7u, 8u}) {
    const fs::path ref = write_example(fmt::format("reference{}", seed), seed);
    const TensorDump reference = read_tensor_dump(ref.string());
    CHECK(reference.tensor("y").values == qt::quant::example_graph(seed).tensor("y").values);
    const fs::path out = scratch(fmt::format("c_dump{}", seed));
    const auto run = qt::test::run_command(example() + " " + ref.string() + " " + out.string());
    REQUIRE_MESSAGE(run.status == 0, run.output);

    // The C++ reader validates the C writer's manifest, sizes and sha256s.
    const TensorDump c_dump = read_tensor_dump(out.string());
    REQUIRE(c_dump.tensors.size() == reference.tensors.size());
    REQUIRE(c_dump.ops.size() == reference.ops.size());
    for (const DumpTensor& t : reference.tensors) {
      INFO(t.name);
      CHECK(c_dump.tensor(t.name).values == t.values);
      CHECK(c_dump.tensor(t.name).sha256 == t.sha256);  // the C and C++ SHA-256 agree
      CHECK(c_dump.tensor(t.name).scale == t.scale);
    }
    for (size_t i = 0; i < reference.ops.size(); ++i) {
      CHECK(c_dump.ops[i].name == reference.ops[i].name);
      CHECK(c_dump.ops[i].inputs == reference.ops[i].inputs);
      CHECK(c_dump.ops[i].rounding == reference.ops[i].rounding);
    }
    const auto r = check(ref, out);
    CHECK_MESSAGE(r.status == 0, r.output);
    CHECK(r.output.find("PASS: all 10 tensors agree within 0 LSB") != std::string::npos);
  }
  // The seed-8 run against the seed-7 reference: caught at the graph input x.
  const auto other = check(qt::test::scratch_directory("c_export_dump") / "reference7",
                           qt::test::scratch_directory("c_export_dump") / "c_dump8");
  CHECK(other.status == 1);
  CHECK(other.output.find("graph inputs differ: x") != std::string::npos);
}

TEST_CASE("test_c_export_dump: the C reader refuses a truncated input, naming it") {
  TensorDump reference = qt::quant::example_graph(7);
  const fs::path ref = scratch("truncated_in");
  write_tensor_dump(ref.string(), reference);
  fs::resize_file(ref / "fc.bias.bin", 63);
  const auto run =
      qt::test::run_command(example() + " " + ref.string() + " " + scratch("unused").string());
  CHECK(run.status == 2);
  CHECK_MESSAGE(run.output.find("tensor \"fc.bias\"") != std::string::npos, run.output);
  CHECK(run.output.find("has 63 bytes, s32 needs 64") != std::string::npos);
}
