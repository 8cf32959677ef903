// Tests for tensor/file_lock.*: a second holder is refused with the first one's PID, and the lock
// is free again once the first one is gone. Truth: the PID of this process and of a forked child.
#include <doctest/doctest.h>

#include <sys/wait.h>
#include <unistd.h>

#include <filesystem>
#include <string>

#include "tensor/error.h"
#include "tensor/file_lock.h"
#include "tests/test_util.h"

using namespace qt;

TEST_CASE("file_lock: a second holder refuses naming the first one's PID; released on exit") {
  const std::string path = (qt::test::scratch_directory("file_lock") / "run.lock").string();
  {
    const FileLock first(path, "run A");
    // flock locks belong to open files, so a second open in this very process conflicts too.
    CHECK_THROWS_WITH_AS(
        FileLock(path, "run A"),
        doctest::Contains(("in use by process " + std::to_string(::getpid())).c_str()), Error);
    // Another process is refused as well (it exits 1 when its lock fails, 0 if it got it).
    const pid_t child = ::fork();
    if (child == 0) {
      try {
        const FileLock second(path, "run A");
        ::_exit(0);
      } catch (const Error&) {
        ::_exit(1);
      }
    }
    int status = 0;
    ::waitpid(child, &status, 0);
    CHECK(WEXITSTATUS(status) == 1);
  }
  // The first holder is gone: the lock can be taken again.
  CHECK_NOTHROW(FileLock(path, "run A"));
}
