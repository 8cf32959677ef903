// Tests for tensor/atomic_file.*: the old file survives any failure; no temporary file is left.
// Truth: file contents read back with std::ifstream and directory listings.
#include <doctest/doctest.h>

#include <filesystem>
#include <fstream>
#include <stdexcept>
#include <string>

#include <unistd.h>

#include "tensor/atomic_file.h"
#include "tensor/error.h"

#include "tests/test_util.h"

using namespace qt;

namespace {

std::filesystem::path test_directory() {
  return qt::test::scratch_directory("atomic_file");
}

std::string read_text(const std::filesystem::path& path) {
  std::ifstream in(path, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(in), {});
}

void write_text(const std::filesystem::path& path, const std::string& text) {
  std::ofstream(path, std::ios::binary | std::ios::trunc) << text;
}

int temporary_files(const std::filesystem::path& dir) {
  int count = 0;
  for (const auto& entry : std::filesystem::directory_iterator(dir))
    if (entry.path().filename().string().find(".tmp.") != std::string::npos) ++count;
  return count;
}

}  // namespace

TEST_CASE("atomic_file: writes and replaces a file") {
  const std::filesystem::path path = test_directory() / "replace.txt";
  write_text(path, "old contents");
  write_file_atomically(path.string(), [](FileWriter& out) {
    out.write("new ", 4);
    out.write("contents!", 9);
    CHECK(out.bytes_written() == 13);
  });
  CHECK(read_text(path) == "new contents!");
  CHECK(temporary_files(test_directory()) == 0);
}

TEST_CASE("atomic_file: the existing file is untouched when the writer throws midway") {
  const std::filesystem::path path = test_directory() / "keep.txt";
  write_text(path, "precious");
  CHECK_THROWS_WITH_AS(write_file_atomically(path.string(),
                                             [](FileWriter& out) {
                                               out.write("partial garbage", 15);
                                               throw std::runtime_error("simulated failure");
                                             }),
                       "simulated failure", std::runtime_error);
  CHECK(read_text(path) == "precious");
  CHECK(temporary_files(test_directory()) == 0);
}

TEST_CASE("atomic_file: system errors name the path and the errno text") {
  const std::filesystem::path missing = test_directory() / "no_such_dir" / "file.txt";
  CHECK_THROWS_WITH_AS(
      write_file_atomically(missing.string(), [](FileWriter& out) { out.write("x", 1); }),
      doctest::Contains("No such file or directory"), Error);
  CHECK_THROWS_WITH_AS(write_file_atomically(missing.string(), [](FileWriter&) {}),
                       doctest::Contains(missing.string().c_str()), Error);
  // The target is a directory: the rename fails, the temporary file is removed.
  const std::filesystem::path dir_target = test_directory() / "a_directory";
  std::filesystem::create_directories(dir_target / "child");
  CHECK_THROWS_WITH_AS(
      write_file_atomically(dir_target.string(), [](FileWriter& out) { out.write("x", 1); }),
      doctest::Contains("rename"), Error);
  CHECK(std::filesystem::is_directory(dir_target));
  CHECK(temporary_files(test_directory()) == 0);
  CHECK_THROWS_AS(write_file_atomically("", [](FileWriter&) {}), Error);
}
