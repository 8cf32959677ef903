// Tests for tensor/safetensors.*: the safetensors format.
// Truth: (1) a file assembled byte by byte in the test from the published format (8-byte
// little-endian header size, JSON, raw data), which the loader must read; (2) the bytes of a file
// we write, parsed here by hand (header size, alignment, JSON offsets, raw values); (3) corrupted
// files (truncations, bad JSON, bad dtype, inconsistent shapes and offsets, ...) must each throw
// qt::Error naming the problem.
#include <doctest/doctest.h>

#include <cstdint>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include <unistd.h>

#include "tensor/create.h"
#include "tensor/safetensors.h"
#include "tensor/view.h"

#include "tests/mutations.h"
#include "tests/test_util.h"

using namespace qt;
using namespace qt::test;

namespace {

std::string temp_path(const std::string& name) {
  return (scratch_directory("safetensors") / name).string();
}

std::string read_bytes(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(in), {});
}

void write_bytes(const std::string& path, const std::string& bytes) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
}

// A safetensors file assembled by hand: little-endian u64 header size, header, data.
std::string assemble(const std::string& header, const std::string& data) {
  std::string bytes(8, '\0');
  uint64_t size = header.size();
  for (int i = 0; i < 8; ++i) bytes[i] = static_cast<char>((size >> (8 * i)) & 0xff);
  return bytes + header + data;
}

template <typename T>
std::string raw(const std::vector<T>& values) {
  return std::string(reinterpret_cast<const char*>(values.data()), values.size() * sizeof(T));
}

// Loading `bytes` must throw qt::Error whose message contains `expected`.
void check_rejected(const std::string& bytes, const std::string& expected) {
  const std::string path = temp_path("corrupt.safetensors");
  write_bytes(path, bytes);
  CAPTURE(expected);
  CHECK_THROWS_WITH_AS(load_safetensors(path), doctest::Contains(expected.c_str()), Error);
}

}  // namespace

TEST_CASE("safetensors: loads a file assembled by hand from the format description") {
  // Two tensors, listed out of offset order in the JSON, with metadata, as PyTorch's writer does.
  const std::string header =
      R"({"__metadata__":{"format":"pt"},"b":{"dtype":"I64","shape":[2],"data_offsets":[16,32]},)"
      R"("a":{"dtype":"F32","shape":[2,2],"data_offsets":[0,16]}})";
  const std::string data =
      raw(std::vector<float>{1.5f, -2.0f, 0.25f, 8.0f}) + raw(std::vector<int64_t>{-7, 1LL << 40});
  const std::string path = temp_path("by_hand.safetensors");
  write_bytes(path, assemble(header, data));

  const SafeTensors file = load_safetensors(path);
  REQUIRE(file.tensors.size() == 2);
  CHECK(file.tensors[0].first == "a");  // file (offset) order
  CHECK(file.tensors[1].first == "b");
  CHECK(file.metadata.at("format") == "pt");
  const Tensor& a = file.get("a");
  CHECK(a.dtype() == DType::f32);
  CHECK(a.shape() == Shape{2, 2});
  CHECK(elements(a) == std::vector<double>{1.5, -2.0, 0.25, 8.0});
  const Tensor& b = file.get("b");
  CHECK(b.dtype() == DType::i64);
  CHECK(b.data<int64_t>()[0] == -7);
  CHECK(b.data<int64_t>()[1] == (1LL << 40));
  CHECK(file.contains("a"));
  CHECK_FALSE(file.contains("c"));
  CHECK_THROWS_WITH_AS(file.get("c"), doctest::Contains("no tensor 'c'"), Error);
}

TEST_CASE("safetensors: the bytes we write follow the format") {
  const std::string path = temp_path("written.safetensors");
  // The official writer's layout: larger alignment first ("z", f32, before "y", i8), "__metadata__"
  // first in the JSON, then the tensors in data order, fields in the order dtype, shape, offsets.
  save_safetensors(path,
                   {{"y", ops::from_vector(std::vector<int8_t>{-1, 5}, {2})},
                    {"z", ops::from_vector(std::vector<float>{1.0f, 2.0f, 3.0f}, {3})}},
                   {{"note", "hello"}});
  const std::string bytes = read_bytes(path);
  uint64_t header_size = 0;
  for (int i = 0; i < 8; ++i)
    header_size |= static_cast<uint64_t>(static_cast<uint8_t>(bytes[i])) << (8 * i);
  CHECK(header_size % 8 == 0);                      // padded so the data is 8-byte aligned
  CHECK(bytes.size() == 8 + header_size + 12 + 2);  // header + f32[3] + i8[2]
  const std::string header = bytes.substr(8, header_size);
  CHECK(header.rfind(R"({"__metadata__":{"note":"hello"},)"
                     R"("z":{"dtype":"F32","shape":[3],"data_offsets":[0,12]},)"
                     R"("y":{"dtype":"I8","shape":[2],"data_offsets":[12,14]}})",
                     0) == 0);
  CHECK(header.find_last_not_of(' ') == header.rfind('}'));  // only spaces after the JSON
  const std::string data = bytes.substr(8 + header_size);
  CHECK(data.substr(0, 12) == raw(std::vector<float>{1.0f, 2.0f, 3.0f}));
  CHECK(data.substr(12) == raw(std::vector<int8_t>{-1, 5}));
}

TEST_CASE("safetensors: round trip of every dtype, empty, scalar and strided tensors") {
  const std::string path = temp_path("roundtrip.safetensors");
  const Tensor f32 = random_tensor({3, 4}, DType::f32, 1);
  const Tensor f64 = random_tensor({2, 3, 2}, DType::f64, 2);
  const Tensor i8 = ops::from_vector(std::vector<int8_t>{-128, 0, 127}, {3});
  const Tensor u8 = ops::from_vector(std::vector<uint8_t>{0, 200, 255}, {3});
  const Tensor i32 = ops::from_vector(std::vector<int32_t>{-5, 1 << 30}, {2, 1});
  const Tensor i64 = random_ids({5}, -1000, 1000, 3);
  const Tensor empty = ops::zeros({0, 3});
  const Tensor scalar = ops::scalar(2.5, DType::f64);
  const Tensor strided = ops::transpose(random_tensor({3, 5}, DType::f32, 4), 0, 1);
  const std::vector<std::pair<std::string, Tensor>> tensors = {
      {"f32", f32}, {"f64", f64},     {"i8", i8},         {"u8", u8},          {"i32", i32},
      {"i64", i64}, {"empty", empty}, {"scalar", scalar}, {"strided", strided}};
  save_safetensors(path, tensors, {{"config", R"({"hidden": 768})"}, {"unicode", "γ = 1"}});
  const SafeTensors file = load_safetensors(path);
  CHECK(file.metadata.at("config") == R"({"hidden": 768})");
  CHECK(file.metadata.at("unicode") == "γ = 1");
  CHECK(load_safetensors_metadata(path) == file.metadata);  // the header alone
  REQUIRE(file.tensors.size() == tensors.size());
  // File order: item sizes never increase, so every tensor starts aligned to its item size.
  for (size_t i = 1; i < file.tensors.size(); ++i)
    CHECK(dtype_size(file.tensors[i - 1].second.dtype()) >=
          dtype_size(file.tensors[i].second.dtype()));
  for (const auto& [name, original] : tensors) {
    CAPTURE(name);
    const Tensor& loaded = file.get(name);
    CHECK(loaded.dtype() == original.dtype());
    CHECK(loaded.shape() == original.shape());
    CHECK(loaded.is_contiguous());
    CHECK(elements(loaded) == elements(original));
  }
  // Nothing else is left in the directory (the temporary file was renamed).
  for (const auto& entry :
       std::filesystem::directory_iterator(std::filesystem::path(path).parent_path()))
    CHECK(entry.path().string().find(".tmp.") == std::string::npos);
}

TEST_CASE("safetensors: corrupt files throw qt::Error naming the problem") {
  const std::string path = temp_path("valid.safetensors");
  save_safetensors(
      path, {{"w", random_tensor({4, 4}, DType::f32, 7)}, {"b", random_tensor({4}, DType::f32, 8)}},
      {{"k", "v"}});
  const std::string valid = read_bytes(path);
  uint64_t header_size = 0;
  std::memcpy(&header_size, valid.data(), 8);

  SUBCASE("truncations") {
    for (size_t cut : {size_t{0}, size_t{4}, size_t{8}, size_t{8 + header_size / 2},
                       size_t{8 + header_size}, size_t{8 + header_size + 10}, valid.size() - 1}) {
      CAPTURE(cut);
      const std::string truncated_path = temp_path("truncated.safetensors");
      write_bytes(truncated_path, valid.substr(0, cut));
      CHECK_THROWS_AS(load_safetensors(truncated_path), Error);
    }
    check_rejected(valid.substr(0, 4), "too few");
    check_rejected(valid.substr(0, 8 + header_size / 2), "header size");
    check_rejected(valid.substr(0, valid.size() - 1), "truncated");
    // The header-only reader validates the same way.
    write_bytes(temp_path("truncated.safetensors"), valid.substr(0, valid.size() - 1));
    CHECK_THROWS_WITH_AS(load_safetensors_metadata(temp_path("truncated.safetensors")),
                         doctest::Contains("truncated"), Error);
  }
  SUBCASE("header size larger than the file") {
    std::string bytes = valid;
    const uint64_t huge = 1ULL << 40;
    std::memcpy(bytes.data(), &huge, 8);
    check_rejected(bytes, "header size 1099511627776 is larger than the rest of the file");
  }
  SUBCASE("bad JSON") {
    check_rejected(assemble(R"({"w": {"dtype": "F32",)", ""), "not valid JSON");
    check_rejected(assemble("[1, 2]", ""), "not a JSON object");
  }
  SUBCASE("unsupported dtype") {
    check_rejected(assemble(R"({"w":{"dtype":"BF16","shape":[2],"data_offsets":[0,4]}})",
                            std::string(4, '\0')),
                   "unsupported dtype 'BF16'");
    check_rejected(
        assemble(R"({"w":{"dtype":7,"shape":[2],"data_offsets":[0,8]}})", std::string(8, '\0')),
        "'dtype' is not a string");
  }
  SUBCASE("missing keys and malformed fields") {
    check_rejected(assemble(R"({"w":{"dtype":"F32","data_offsets":[0,8]}})", std::string(8, '\0')),
                   "missing key 'shape'");
    check_rejected(assemble(R"({"w":{"dtype":"F32","shape":[2]}})", std::string(8, '\0')),
                   "missing key 'data_offsets'");
    check_rejected(assemble(R"({"w":{"dtype":"F32","shape":[-2],"data_offsets":[0,8]}})",
                            std::string(8, '\0')),
                   "non-negative integer");
    check_rejected(assemble(R"({"w":{"dtype":"F32","shape":[2.5],"data_offsets":[0,8]}})",
                            std::string(8, '\0')),
                   "non-negative integer");
    check_rejected(
        assemble(R"({"w":{"dtype":"F32","shape":[2],"data_offsets":[0]}})", std::string(8, '\0')),
        "'data_offsets' must be two");
    check_rejected(
        assemble(R"({"w":{"dtype":"F32","shape":[2],"data_offsets":[8,0]}})", std::string(8, '\0')),
        "end before they begin");
    check_rejected(assemble(R"({"w":[1,2]})", ""), "not a JSON object");
    check_rejected(
        assemble(R"({"w":{"dtype":"F32","shape":[4294967296,4294967296],"data_offsets":[0,8]}})",
                 std::string(8, '\0')),
        "too large");
  }
  SUBCASE("shape and offsets disagree") {
    check_rejected(
        assemble(R"({"w":{"dtype":"F32","shape":[3],"data_offsets":[0,8]}})", std::string(8, '\0')),
        "needs 12 bytes but data_offsets [0, 8] span 8 bytes");
  }
  SUBCASE("offsets overlapping, leaving gaps, out of range, trailing data") {
    const std::string two_floats = R"("dtype":"F32","shape":[2])";
    check_rejected(assemble(R"({"a":{)" + two_floats + R"(,"data_offsets":[0,8]},"b":{)" +
                                two_floats + R"(,"data_offsets":[4,12]}})",
                            std::string(12, '\0')),
                   "overlap");
    check_rejected(assemble(R"({"a":{)" + two_floats + R"(,"data_offsets":[0,8]},"b":{)" +
                                two_floats + R"(,"data_offsets":[12,20]}})",
                            std::string(20, '\0')),
                   "gap");
    check_rejected(
        assemble(R"({"a":{)" + two_floats + R"(,"data_offsets":[4,12]}})", std::string(12, '\0')),
        "gap");
    check_rejected(
        assemble(R"({"a":{)" + two_floats + R"(,"data_offsets":[0,8]}})", std::string(4, '\0')),
        "run past the end");
    check_rejected(
        assemble(R"({"a":{)" + two_floats + R"(,"data_offsets":[0,8]}})", std::string(9, '\0')),
        "1 bytes of trailing data");
    check_rejected(valid + "garbage", "trailing data");
  }
  SUBCASE("metadata must map strings to strings") {
    check_rejected(assemble(R"({"__metadata__":{"n":3}})", ""), "metadata 'n' is not a string");
    check_rejected(assemble(R"({"__metadata__":[1]})", ""), "'__metadata__' is not a JSON object");
  }
  SUBCASE("missing file") {
    CHECK_THROWS_WITH_AS(load_safetensors(temp_path("does_not_exist.safetensors")),
                         doctest::Contains("cannot read"), Error);
  }
}

TEST_CASE("safetensors: a header-only file and an empty tensor list are valid") {
  const std::string path = temp_path("empty.safetensors");
  save_safetensors(path, {});
  const SafeTensors file = load_safetensors(path);
  CHECK(file.tensors.empty());
  CHECK(file.metadata.empty());
}

TEST_CASE("safetensors: invalid tensors to save throw") {
  const std::string path = temp_path("bad_save.safetensors");
  CHECK_THROWS_WITH_AS(save_safetensors(path, {{"a", ops::zeros({1})}, {"a", ops::zeros({1})}}),
                       doctest::Contains("appears twice"), Error);
  CHECK_THROWS_WITH_AS(save_safetensors(path, {{"__metadata__", ops::zeros({1})}}),
                       doctest::Contains("reserved"), Error);
  CHECK_THROWS_WITH_AS(save_safetensors(path, {{"a", Tensor()}}), doctest::Contains("undefined"),
                       Error);
  CHECK_THROWS_WITH_AS(
      save_safetensors(temp_path("no_such_dir/x.safetensors"), {{"a", ops::zeros({1})}}),
      doctest::Contains("No such file or directory"), Error);
}

TEST_CASE("safetensors: deeply nested or huge headers give short errors, never a crash") {
  // A shape nested 100,000 levels deep overflowed the stack when the error message printed it.
  const std::string deep = std::string(100000, '[') + std::string(100000, ']');
  check_rejected(
      assemble(R"({"w": {"dtype": "F32", "shape": )" + deep + R"(, "data_offsets": [0, 0]}})", ""),
      "nests 100002 levels");
  // A 3 MB shape: the message names it by an excerpt, not in full.
  std::string shape = "[";
  for (int i = 0; i < 500000; ++i) shape += "1, ";
  shape += "\"x\"]";
  const std::string path = temp_path("huge-shape.safetensors");
  write_bytes(path, assemble(R"({"w": {"dtype": "F32", "shape": )" + shape +
                                 R"(, "data_offsets": [0, 4]}})",
                             raw(std::vector<float>{1})));
  std::string message;
  try {
    load_safetensors(path);
  } catch (const Error& e) {
    message = e.what();
  }
  CHECK(message.find("not a non-negative integer") != std::string::npos);
  CHECK(message.size() < 1000);
  CHECK(message.find("bytes)") != std::string::npos);  // the excerpt's length note
}

TEST_CASE("safetensors: fuzz — 400 mutations of a valid file load or throw qt::Error") {
  const std::string path = temp_path("fuzz-valid.safetensors");
  save_safetensors(path,
                   {{"w", random_tensor({3, 4}, DType::f32, 1)},
                    {"ids", random_ids({5}, 0, 9, 3)},
                    {"b", random_tensor({4}, DType::f64, 2)}},
                   {{"format", "qtlab.model"}, {"config", R"({"model": {"hidden": 4}})"}});
  const qt::test::FuzzOutcome outcome =
      qt::test::fuzz_reader(read_bytes(path), temp_path("fuzz.safetensors"), 400, 1234,
                            [](const std::string& file) { load_safetensors(file); });
  CHECK(outcome.loaded + outcome.rejected == 400);
  CHECK(outcome.rejected > 200);  // most mutations break the file, and each says so
}
