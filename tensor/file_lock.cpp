#include "tensor/file_lock.h"

#include <fcntl.h>
#include <sys/file.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include "tensor/error.h"

namespace qt {

namespace {

// The PID the holder wrote (what it says, for the message; "?" if it has not written it yet).
std::string holder_of(int fd) {
  char text[32] = {};
  const ssize_t n = ::pread(fd, text, sizeof text - 1, 0);
  return n > 0 ? std::string(text, static_cast<size_t>(n)) : std::string("?");
}

}  // namespace

FileLock::FileLock(const std::string& path, const std::string& what) {
  // O_CLOEXEC: programs this process starts do not inherit (and so do not prolong) the lock.
  fd_ = ::open(path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0644);
  QT_CHECK(fd_ >= 0, "{}: cannot open the lock file {}: {}", what, path, std::strerror(errno));
  if (::flock(fd_, LOCK_EX | LOCK_NB) != 0) {
    const int error = errno;
    const std::string holder = holder_of(fd_);
    ::close(fd_);
    QT_CHECK(error != EWOULDBLOCK, "{} is in use by process {} (lock file {}); wait for it to end",
             what, holder, path);
    fail("{}: cannot lock {}: {}", what, path, std::strerror(error));
  }
  const std::string pid = std::to_string(::getpid());
  if (::ftruncate(fd_, 0) != 0 || ::pwrite(fd_, pid.data(), pid.size(), 0) < 0) {
    const int error = errno;
    ::close(fd_);
    fail("{}: cannot write the lock file {}: {}", what, path, std::strerror(error));
  }
}

FileLock::~FileLock() {
  if (fd_ >= 0) ::close(fd_);
}

}  // namespace qt
