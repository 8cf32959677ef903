// `qtlab check` (tools/check.cpp) run as a user would, on dumps of the example integer graph
// (quant/example_graph.h: linear -> GELU table -> add into s16 -> LayerNorm, the real ops):
// identical dumps pass; one code off by one LSB is found, named by tensor, multi-index and both
// values, and blamed on the op that produced it; a real off-by-one in the linear layer, propagated
// through the downstream ops, blames the linear layer and not them; --tolerance-lsb; --json; and
// unusable candidates (truncated, mislabelled dtype, missing tensor, other shape, bad sha256,
// malformed manifest) exit 2 with a message naming the problem.
#include <doctest/doctest.h>

#include <filesystem>
#include <fstream>
#include <functional>
#include <nlohmann/json.hpp>
#include <string>

#include "quant/example_graph.h"
#include "tests/test_util.h"

using namespace qt::quant;
namespace fs = std::filesystem;

namespace {

fs::path dump_dir(const std::string& name) {
  return qt::test::scratch_directory("check_command") / name;
}

// Writes `dump` to scratch/<name> and returns the directory.
std::string write_dump(const std::string& name, TensorDump dump) {
  const fs::path dir = dump_dir(name);
  fs::remove_all(dir);
  write_tensor_dump(dir.string(), dump);
  return dir.string();
}

const std::string& reference() {
  static const std::string dir = write_dump("reference", qt::quant::example_graph(7));
  return dir;
}

qt::test::CommandResult check(const std::string& candidate, const std::string& extra = "") {
  return qt::test::run_command(std::string(QTLAB_BINARY) + " check --reference " + reference() +
                               " --candidate " + candidate + " " + extra);
}

nlohmann::json json_of(const std::string& output) {
  return nlohmann::json::parse(output.substr(output.find('{')));
}

bool contains(const std::string& text, const std::string& part) {
  return text.find(part) != std::string::npos;
}

void edit_manifest(const std::string& dir, const std::function<void(nlohmann::json&)>& edit) {
  const fs::path path = fs::path(dir) / "manifest.json";
  std::ifstream in(path);
  nlohmann::json manifest = nlohmann::json::parse(in);
  in.close();
  edit(manifest);
  std::ofstream(path) << manifest.dump(1);
}

}  // namespace

TEST_CASE("test_check_command: an identical dump passes with exit 0") {
  const auto r = check(write_dump("same", qt::quant::example_graph(7)));
  REQUIRE_MESSAGE(r.status == 0, r.output);
  CHECK(contains(r.output, "PASS: all 10 tensors agree within 0 LSB"));
  // A dump of other inputs is caught at its first tensor, the graph input x, with no op to blame.
  const auto other = check(write_dump("other_input", qt::quant::example_graph(8)), "--json");
  CHECK(other.status == 1);
  const auto j = json_of(other.output);
  CHECK(j["divergent_inputs"] == nlohmann::json::array({"x"}));
  CHECK(j["first_divergent_op"].is_null());
}

TEST_CASE("test_check_command: one code off by one LSB is named by tensor, index and op") {
  // g (the GELU output) at [3, 9] raised by one, nothing else changed.
  TensorDump candidate = qt::quant::example_graph(7);
  const int64_t flat = qt::test::ravel({3, 9}, {kExampleGraphRows, kExampleGraphChannels});
  int32_t& code = candidate.find("g")->values[flat];
  const int32_t before = code;
  code = before == 255 ? 254 : before + 1;
  const std::string dir = write_dump("one_lsb", candidate);

  const auto r = check(dir);
  REQUIRE_MESSAGE(r.status == 1, r.output);
  INFO(r.output);
  CHECK(contains(r.output, "op \"gelu\" (gelu_table) is the first to diverge"));
  CHECK(contains(r.output, fmt::format("output \"g\" differs in 1 of 96 codes (max 1 LSB), first "
                                       "at [3, 9]: reference {}, candidate {}",
                                       before, code)));
  CHECK(contains(r.output, fmt::format("[3, 9]: {} vs {}", before, code)));

  const auto j = check(dir, "--json");
  REQUIRE(j.status == 1);
  const auto report = json_of(j.output);
  CHECK(report["status"] == "mismatch");
  CHECK(report["first_divergent_op"]["name"] == "gelu");
  for (const auto& t : report["tensors"]) {
    INFO(t.dump());
    CHECK(t["equal"] == (t["name"] != "g"));
    if (t["name"] != "g") continue;
    CHECK(t["mismatches"] == 1);
    CHECK(t["max_abs_diff_lsb"] == 1);
    CHECK(t["first_mismatch"]["index"] == nlohmann::json::array({3, 9}));
    CHECK(t["first_mismatch"]["reference"] == before);
    CHECK(t["first_mismatch"]["candidate"] == code);
  }

  const auto tolerant = check(dir, "--tolerance-lsb 1");
  CHECK_MESSAGE(tolerant.status == 0, tolerant.output);
  CHECK(contains(tolerant.output, "PASS: all 10 tensors agree within 1 LSB"));
}

TEST_CASE("test_check_command: an off-by-one linear layer is blamed, not the ops downstream") {
  // The candidate's linear layer is one code high at a position where GELU is steep (h well above
  // its zero point), and the real GELU, add and LayerNorm then run on that h.
  const TensorDump good = qt::quant::example_graph(7);
  const auto& h = good.tensor("h").values;
  int64_t at = 0;
  while (at < static_cast<int64_t>(h.size()) && h[at] < 160) ++at;
  REQUIRE(at < static_cast<int64_t>(h.size()));
  const std::string dir = write_dump("linear_off", qt::quant::example_graph(7, at));
  const auto r = check(dir, "--json");
  REQUIRE_MESSAGE(r.status == 1, r.output);
  const auto report = json_of(r.output);
  INFO(report.dump(1));
  CHECK(report["first_divergent_op"]["name"] == "fc");
  // The error really propagated: every tensor downstream differs too, yet only fc is blamed.
  for (const auto& t : report["tensors"]) {
    const bool downstream =
        t["name"] == "h" || t["name"] == "g" || t["name"] == "r" || t["name"] == "y";
    CHECK(t["equal"] == !downstream);
  }
  const auto& h_row = report["tensors"][6];
  REQUIRE(h_row["name"] == "h");
  CHECK(h_row["mismatches"] == 1);
  const std::vector<int64_t> index =
      qt::unravel_index(at, {kExampleGraphRows, kExampleGraphChannels});
  CHECK(h_row["first_mismatch"]["index"] == index);
  // The residual is on a 5x finer grid than g, so 1 LSB of g is 5 LSB of r: tolerance 1 fails.
  CHECK(check(dir, "--tolerance-lsb 1").status == 1);
  const auto text = check(dir);
  CHECK(contains(text.output, "op \"fc\" (linear) is the first to diverge"));
  CHECK(!contains(text.output, "op \"gelu\" (gelu_table) is the first"));
}

TEST_CASE("test_check_command: unusable candidates exit 2 naming the problem") {
  struct Case {
    const char* name;
    std::function<void(TensorDump&)> change;         // before writing
    std::function<void(const std::string&)> damage;  // after writing
    std::vector<std::string> message;
  };
  const std::vector<Case> cases = {
      {"truncated",
       nullptr,
       [](const std::string& d) { fs::resize_file(fs::path(d) / "r.bin", 100); },
       {"candidate", "tensor \"r\"", "r.bin", "100 bytes", "truncated"}},
      {"mislabelled_dtype",  // h written and labelled s8: a consistent file of the wrong dtype
       [](TensorDump& t) {
         t.find("h")->dtype = DumpDType::s8;
         t.find("h")->zero_point = 0;
         for (auto& v : t.find("h")->values) v -= 128;
       },
       nullptr,
       {"candidate: tensor \"h\" is s8, the reference's is u8"}},
      {"mislabelled_in_manifest",
       nullptr,  // the file holds u8, the manifest says s16
       [](const std::string& d) {
         edit_manifest(d, [](auto& m) { m["tensors"][7]["dtype"] = "s16"; });
       },
       {"candidate", "tensor \"g\"", "96 bytes", "of s16 needs 192"}},
      {"missing_tensor",
       [](TensorDump& t) {
         t.tensors.erase(t.tensors.begin() + 9);  // y, the last op's output
         t.ops.pop_back();
       },
       nullptr,
       {"candidate: tensor \"y\" is missing"}},
      {"shape",
       [](TensorDump& t) {
         t.find("r")->shape = {16, 6};
       },
       nullptr,
       {"candidate: tensor \"r\" has shape [16, 6], the reference's is [6, 16]"}},
      {"other_grid",
       [](TensorDump& t) { t.find("h")->scale *= 2; },
       nullptr,
       {"candidate: tensor \"h\" has scale"}},
      {"bad_sha",
       nullptr,
       [](const std::string& d) {
         std::fstream f(fs::path(d) / "y.bin", std::ios::in | std::ios::out | std::ios::binary);
         f.seekp(40);
         f.put('\x7f');
       },
       {"candidate", "tensor \"y\"", "sha256", "the manifest says"}},
      {"malformed_manifest",
       nullptr,
       [](const std::string& d) {
         std::ofstream(fs::path(d) / "manifest.json") << "{\"format\": ";
       },
       {"candidate", "manifest.json", "not valid JSON"}},
      {"no_dump",
       nullptr,
       [](const std::string& d) { fs::remove_all(d); },
       {"candidate", "manifest.json", "missing"}},
  };
  for (const Case& c : cases) {
    TensorDump dump = qt::quant::example_graph(7);
    if (c.change) c.change(dump);
    const std::string dir = write_dump(c.name, dump);
    if (c.damage) c.damage(dir);
    const auto r = check(dir);
    INFO(c.name << ": " << r.output);
    CHECK(r.status == 2);
    for (const std::string& part : c.message) CHECK(contains(r.output, part));
    CHECK(!contains(r.output, "PASS"));
    CHECK(!contains(r.output, "FAIL"));
  }
  // --json still says why, as JSON.
  const auto j = check(dump_dir("truncated").string(), "--json");
  CHECK(j.status == 2);
  CHECK(json_of(j.output)["status"] == "unusable");
  CHECK(contains(json_of(j.output)["error"].get<std::string>(), "truncated"));
  // A broken reference is named as the reference.
  const auto swapped =
      qt::test::run_command(std::string(QTLAB_BINARY) + " check --reference " +
                            dump_dir("bad_sha").string() + " --candidate " + reference());
  CHECK(swapped.status == 2);
  CHECK(contains(swapped.output, "reference: tensor dump"));
}
