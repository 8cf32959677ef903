// Tests for tensor/atomic_file.*: the old file survives any failure; no temporary file is left.
// Truth: file contents read back with std::ifstream and directory listings.
#include <doctest/doctest.h>

#include <filesystem>
#include <fstream>
#include <stdexcept>
#include <string>

#include <sys/wait.h>
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

TEST_CASE("atomic_file: append_durably appends records and reports a full disk") {
  const auto path = test_directory() / "log.jsonl";
  std::filesystem::remove(path);
  append_durably(path.string(), "{\"step\": 1}\n");
  append_durably(path.string(), "{\"step\": 2}\n");
  CHECK(read_text(path) == "{\"step\": 1}\n{\"step\": 2}\n");
  // /dev/full fails every write with ENOSPC, as a full disk does: the append must say so (a
  // buffered stream checked before its flush reported nothing).
  if (std::filesystem::exists("/dev/full")) {
    CHECK_THROWS_WITH_AS(append_durably("/dev/full", "{\"step\": 3}\n"),
                         doctest::Contains("No space left on device"), Error);
  }
  CHECK_THROWS_WITH_AS(append_durably((test_directory() / "no-such-dir" / "x").string(), "x"),
                       doctest::Contains("no-such-dir"), Error);
}

TEST_CASE("atomic_file: remove_stale_temporaries removes only the files of writers that are gone") {
  const auto dir = test_directory() / "stale";
  std::filesystem::remove_all(dir);
  std::filesystem::create_directories(dir / "sub");
  // A process that has exited (and been reaped): its PID names no process now.
  const pid_t child = ::fork();
  if (child == 0) ::_exit(0);
  int status = 0;
  ::waitpid(child, &status, 0);
  const std::string dead = std::to_string(child), alive = std::to_string(::getpid());
  write_text(dir / ("checkpoint.safetensors.tmp." + dead), "half a checkpoint");
  write_text(dir / ("config.json.tmp." + alive), "being written by this process");
  write_text(dir / "config.json.tmp.1", "pid 1 exists");
  write_text(dir / "notes.tmp.txt", "not a temporary name");
  write_text(dir / "sub" / ("model.safetensors.tmp." + dead), "another directory");
  const std::vector<std::string> removed = remove_stale_temporaries(dir.string());
  REQUIRE(removed.size() == 1);
  CHECK(removed[0] == (dir / ("checkpoint.safetensors.tmp." + dead)).string());
  CHECK_FALSE(std::filesystem::exists(dir / ("checkpoint.safetensors.tmp." + dead)));
  CHECK(std::filesystem::exists(dir / ("config.json.tmp." + alive)));
  CHECK(std::filesystem::exists(dir / "config.json.tmp.1"));
  CHECK(std::filesystem::exists(dir / "notes.tmp.txt"));
  CHECK(std::filesystem::exists(dir / "sub" / ("model.safetensors.tmp." + dead)));
}
