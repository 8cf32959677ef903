// The integer tensor dump (quant/tensor_dump.h): SHA-256 against the FIPS 180-4 examples and
// coreutils' sha256sum, a round trip of the example graph (quant/example_graph.h) with the
// bytes checked little-endian, and every kind of corrupt dump rejected with a qt::Error naming the
// file and the tensor.
#include <doctest/doctest.h>

#include <filesystem>
#include <fstream>
#include <functional>
#include <random>
#include <string>

#include "quant/example_graph.h"
#include "tensor/error.h"
#include "tensor/sha256.h"
#include "tests/test_util.h"

using namespace qt::quant;
namespace fs = std::filesystem;

namespace {

std::string error_of(const std::function<void()>& f) {
  try {
    f();
  } catch (const qt::Error& e) {
    return e.what();
  }
  return "(no error)";
}

std::string read_text(const fs::path& path) {
  std::ifstream in(path, std::ios::binary);
  return {std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>()};
}
void write_text(const fs::path& path, const std::string& text) {
  std::ofstream(path, std::ios::binary) << text;
}

// A fresh copy of the example graph's dump in scratch/<name>.
fs::path fresh_dump(const std::string& name) {
  const fs::path dir = qt::test::scratch_directory("tensor_dump") / name;
  fs::remove_all(dir);
  TensorDump dump = qt::quant::example_graph(7);
  write_tensor_dump(dir.string(), dump);
  return dir;
}

// Edits the manifest of `dir` as JSON.
void edit_manifest(const fs::path& dir, const std::function<void(nlohmann::json&)>& edit) {
  nlohmann::json manifest = nlohmann::json::parse(read_text(dir / "manifest.json"));
  edit(manifest);
  write_text(dir / "manifest.json", manifest.dump(1));
}
nlohmann::json& tensor_entry(nlohmann::json& manifest, const std::string& name) {
  for (auto& t : manifest["tensors"]) {
    if (t["name"] == name) return t;
  }
  FAIL("no tensor " << name);
  return manifest;
}

bool contains(const std::string& text, const std::string& part) {
  return text.find(part) != std::string::npos;
}

}  // namespace

TEST_CASE("test_tensor_dump: sha256 matches FIPS 180-4 and sha256sum") {
  CHECK(qt::sha256_hex("", 0) ==
        "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
  CHECK(qt::sha256_hex("abc", 3) ==
        "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
  const std::string two_blocks = "abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq";
  CHECK(qt::sha256_hex(two_blocks.data(), two_blocks.size()) ==
        "248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1");
  // Every padding case (tail of 0..63 bytes, one or two final blocks) against coreutils.
  const fs::path dir = qt::test::scratch_directory("tensor_dump_sha");
  std::mt19937 rng(5);
  for (size_t n : {1, 55, 56, 57, 63, 64, 65, 119, 120, 128, 1000, 4097}) {
    std::string bytes(n, '\0');
    for (auto& c : bytes) c = static_cast<char>(rng());
    write_text(dir / "blob", bytes);
    const auto r = qt::test::run_command("sha256sum " + (dir / "blob").string());
    REQUIRE(r.status == 0);
    CHECK_MESSAGE(r.output.substr(0, 64) == qt::sha256_hex(bytes.data(), n), "n = " << n);
  }
}

TEST_CASE("test_tensor_dump: the example graph round-trips, little-endian, sha256 per file") {
  TensorDump dump = qt::quant::example_graph(7);
  const fs::path dir = qt::test::scratch_directory("tensor_dump") / "round_trip";
  write_tensor_dump(dir.string(), dump);
  const TensorDump back = read_tensor_dump(dir.string());
  REQUIRE(back.tensors.size() == 10);
  REQUIRE(back.ops.size() == 4);
  for (const DumpTensor& t : dump.tensors) {
    const DumpTensor& u = back.tensor(t.name);
    CHECK(u.dtype == t.dtype);
    CHECK(u.shape == t.shape);
    CHECK(u.scale == t.scale);  // JSON keeps 17 significant digits
    CHECK(u.zero_point == t.zero_point);
    CHECK(u.values == t.values);
    CHECK(u.sha256 == t.sha256);
    CHECK(u.sha256.size() == 64);
  }
  CHECK(back.ops[2].kind == "add");
  CHECK(back.ops[2].rounding == "single_half_even");
  CHECK(back.ops[2].inputs == std::vector<std::string>{"x", "g"});
  CHECK(back.ops[3].attributes["eps_term"] == dump.ops[3].attributes["eps_term"]);
  CHECK(back.producer("x") == -1);
  CHECK(back.producer("y") == 3);
  // r is s16: element 0 is bytes 0 (low) and 1 (high); fc.bias is s32, 4 bytes, low first.
  const std::string r = read_text(dir / "r.bin"), bias = read_text(dir / "fc.bias.bin");
  REQUIRE(r.size() == 2 * 96);
  const int32_t r0 = dump.tensor("r").values[0], b0 = dump.tensor("fc.bias").values[0];
  CHECK(static_cast<unsigned char>(r[0]) == (static_cast<uint32_t>(r0) & 0xff));
  CHECK(static_cast<unsigned char>(r[1]) == ((static_cast<uint32_t>(r0) >> 8) & 0xff));
  for (int b = 0; b < 4; ++b) {
    CHECK(static_cast<unsigned char>(bias[b]) == ((static_cast<uint32_t>(b0) >> (8 * b)) & 0xff));
  }
  CHECK(qt::sha256_hex(r.data(), r.size()) == dump.tensor("r").sha256);
  // The example has negative s16 residuals and negative s32 biases (sign extension is exercised).
  const auto& rv = dump.tensor("r").values;
  CHECK(*std::min_element(rv.begin(), rv.end()) < 0);
}

TEST_CASE("test_tensor_dump: corrupt dumps are errors naming the file and the tensor") {
  struct Case {
    const char* name;
    std::function<void(const fs::path&)> corrupt;
    std::vector<std::string> message;  // parts the error must contain
  };
  const std::vector<Case> cases = {
      {"no_manifest",
       [](const fs::path& d) { fs::remove(d / "manifest.json"); },
       {"manifest.json", "missing"}},
      {"malformed_json",
       [](const fs::path& d) {
         const std::string text = read_text(d / "manifest.json");
         write_text(d / "manifest.json", text.substr(0, text.size() / 2));
       },
       {"manifest.json", "not valid JSON"}},
      {"wrong_format",
       [](const fs::path& d) { edit_manifest(d, [](auto& m) { m["format"] = "npz"; }); },
       {"format \"npz\"", "qtlab-int-dump"}},
      {"wrong_version",
       [](const fs::path& d) { edit_manifest(d, [](auto& m) { m["version"] = 2; }); },
       {"version 2"}},
      {"missing_field",
       [](const fs::path& d) {
         edit_manifest(d, [](auto& m) { tensor_entry(m, "h").erase("scale"); });
       },
       {"tensor \"h\"", "missing field \"scale\""}},
      {"missing_file",
       [](const fs::path& d) { fs::remove(d / "g.bin"); },
       {"tensor \"g\"", "g.bin", "missing"}},
      {"truncated",
       [](const fs::path& d) { fs::resize_file(d / "r.bin", 191); },
       {"tensor \"r\"", "r.bin", "191 bytes", "[6, 16] of s16 needs 192", "truncated"}},
      {"too_long",
       [](const fs::path& d) { fs::resize_file(d / "y.bin", 97); },
       {"tensor \"y\"", "97 bytes", "too long"}},
      {"bad_sha",
       [](const fs::path& d) {
         std::string bytes = read_text(d / "h.bin");
         bytes[17] = static_cast<char>(bytes[17] ^ 1);
         write_text(d / "h.bin", bytes);
       },
       {"tensor \"h\"", "sha256 of", "h.bin", "the manifest says"}},
      {"mislabelled_dtype",
       [](const fs::path& d) {
         edit_manifest(d, [](auto& m) { tensor_entry(m, "g")["dtype"] = "s16"; });
       },
       {"tensor \"g\"", "96 bytes", "of s16 needs 192"}},
      {"unknown_dtype",
       [](const fs::path& d) {
         edit_manifest(d, [](auto& m) { tensor_entry(m, "g")["dtype"] = "f32"; });
       },
       {"tensor \"g\"", "unknown dtype \"f32\""}},
      {"negative_dimension",
       [](const fs::path& d) {
         edit_manifest(d, [](auto& m) { tensor_entry(m, "g")["shape"] = {-6, -16}; });
       },
       {"tensor \"g\"", "dimension -6"}},
      {"huge_shape",
       [](const fs::path& d) {
         edit_manifest(d, [](auto& m) {
           tensor_entry(m, "g")["shape"] = {int64_t{1} << 40, int64_t{1} << 40};
         });
       },
       {"tensor \"g\"", "more than 2^40 elements"}},
      {"zero_point_outside",
       [](const fs::path& d) {
         edit_manifest(d, [](auto& m) { tensor_entry(m, "h")["zero_point"] = 300; });
       },
       {"tensor \"h\"", "zero point 300 outside u8"}},
      {"path_in_name",
       [](const fs::path& d) {
         edit_manifest(d, [](auto& m) { tensor_entry(m, "h")["name"] = "../h"; });
       },
       {"tensor \"../h\"", "not [A-Za-z0-9_.-]+"}},
      {"op_unknown_input",
       [](const fs::path& d) {
         edit_manifest(d, [](auto& m) { m["ops"][1]["inputs"][0] = "hh"; });
       },
       {"op \"gelu\"", "input \"hh\" is not a tensor"}},
      {"op_order",
       [](const fs::path& d) {
         edit_manifest(d, [](auto& m) { std::swap(m["ops"][0], m["ops"][1]); });
       },
       {"op \"gelu\"", "input \"h\" is produced later, by op \"fc\""}},
      {"produced_twice",
       [](const fs::path& d) {
         edit_manifest(d, [](auto& m) { m["ops"][3]["outputs"][0] = "r"; });
       },
       {"op \"ln\"", "output \"r\" is produced twice"}},
      {"bad_rounding",
       [](const fs::path& d) {
         edit_manifest(d, [](auto& m) { m["ops"][0]["rounding"] = "stochastic"; });
       },
       {"op \"fc\"", "unknown rounding \"stochastic\""}},
  };
  for (const Case& c : cases) {
    const fs::path dir = fresh_dump(c.name);
    c.corrupt(dir);
    const std::string error = error_of([&] { read_tensor_dump(dir.string()); });
    INFO(c.name << ": " << error);
    CHECK(contains(error, dir.string()));
    for (const std::string& part : c.message) CHECK(contains(error, part));
  }
}

TEST_CASE("test_tensor_dump: the writer refuses values outside the dtype and bad graphs") {
  TensorDump dump = qt::quant::example_graph(7);
  dump.find("h")->values[3] = 256;
  const std::string dir = (qt::test::scratch_directory("tensor_dump") / "refused").string();
  CHECK(contains(error_of([&] { write_tensor_dump(dir, dump); }),
                 "tensor \"h\": value 256 at flat index 3 does not fit u8"));
  dump = qt::quant::example_graph(7);
  dump.find("r")->shape = {6, 15};
  CHECK(contains(error_of([&] { write_tensor_dump(dir, dump); }), "96 values for shape [6, 15]"));
  CHECK(!fs::exists(fs::path(dir) / "manifest.json"));
  CHECK(contains(error_of([&] { dump.tensor("nope"); }), "no tensor \"nope\""));
}

TEST_CASE(
    "test_tensor_dump: randomly damaged manifests give a qt::Error or a valid dump, never a "
    "crash") {
  const fs::path dir = fresh_dump("fuzz");
  const std::string original = read_text(dir / "manifest.json");
  std::mt19937 rng(99);
  const std::string alphabet = "{}[]\":,-0123456789eE.aznul \n";
  int errors = 0, accepted = 0;
  for (int i = 0; i < 3000; ++i) {
    std::string text = original;
    const int edits = 1 + static_cast<int>(rng() % 4);
    for (int e = 0; e < edits; ++e) {
      const size_t at = rng() % text.size();
      switch (rng() % 3) {
        case 0:
          text[at] = alphabet[rng() % alphabet.size()];
          break;
        case 1:
          text.erase(at, 1 + rng() % 8);
          break;
        case 2:
          text.insert(at, 1, alphabet[rng() % alphabet.size()]);
          break;
      }
      if (text.empty()) text.push_back('{');
    }
    write_text(dir / "manifest.json", text);
    try {
      read_tensor_dump(dir.string());
      ++accepted;  // e.g. an edit inside a scale's digits: still a consistent dump
    } catch (const qt::Error&) {
      ++errors;
    } catch (const std::exception& e) {
      FAIL_CHECK("edit " << i << ": " << e.what() << " is not a qt::Error\n" << text);
    }
  }
  QTLAB_NOTE("3000 damaged manifests: " << errors << " rejected, " << accepted << " still valid");
  CHECK(errors > 2000);
}
