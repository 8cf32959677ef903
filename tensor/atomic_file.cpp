#include "tensor/atomic_file.h"

#include <fcntl.h>
#include <unistd.h>

#include <signal.h>

#include <cerrno>
#include <charconv>
#include <cstring>
#include <filesystem>

#include "tensor/error.h"

namespace qt {

namespace {

std::string errno_text(int error) {
  return std::strerror(error);
}

// The temporary name of `path` written by process `pid` (step 1 in atomic_file.h).
std::string temporary_path(const std::string& path, long pid) {
  return path + ".tmp." + std::to_string(pid);
}
constexpr std::string_view kTemporaryMarker = ".tmp.";

// fsync a directory so that a rename inside it is durable.
void sync_directory(const std::string& directory, const std::string& path) {
  const int fd = ::open(directory.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (fd < 0)
    fail("write_file_atomically '{}': cannot open directory '{}': {}", path, directory,
         errno_text(errno));
  const int result = ::fsync(fd);
  const int error = errno;
  ::close(fd);
  // Some file systems do not support fsync on directories (EINVAL); the rename is still done.
  if (result != 0 && error != EINVAL)
    fail("write_file_atomically '{}': fsync of directory '{}' failed: {}", path, directory,
         errno_text(error));
}

}  // namespace

void FileWriter::write(const void* data, size_t n) {
  const char* bytes = static_cast<const char*>(data);
  while (n > 0) {
    const ssize_t written = ::write(fd_, bytes, n);
    if (written < 0) {
      if (errno == EINTR) continue;
      fail("{} '{}': write failed after {} bytes: {}", op_, path_, bytes_written_,
           errno_text(errno));
    }
    bytes += written;
    n -= static_cast<size_t>(written);
    bytes_written_ += static_cast<size_t>(written);
  }
}

void write_file_atomically(const std::string& path, const std::function<void(FileWriter&)>& write) {
  QT_CHECK(!path.empty(), "write_file_atomically: empty path");
  const std::string temporary = temporary_path(path, ::getpid());
  const std::filesystem::path parent = std::filesystem::path(path).parent_path();
  const std::string directory = parent.empty() ? std::string(".") : parent.string();

  const int fd = ::open(temporary.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (fd < 0)
    fail("write_file_atomically '{}': cannot create '{}': {}", path, temporary, errno_text(errno));
  bool fd_open = true;
  try {
    FileWriter writer(fd, path);
    write(writer);
    if (::fsync(fd) != 0)
      fail("write_file_atomically '{}': fsync failed: {}", path, errno_text(errno));
    fd_open = false;
    if (::close(fd) != 0)
      fail("write_file_atomically '{}': close failed: {}", path, errno_text(errno));
    if (::rename(temporary.c_str(), path.c_str()) != 0)
      fail("write_file_atomically '{}': rename from '{}' failed: {}", path, temporary,
           errno_text(errno));
  } catch (...) {
    if (fd_open) ::close(fd);
    ::unlink(temporary.c_str());
    throw;
  }
  sync_directory(directory, path);
}

void write_text_atomically(const std::string& path, const std::string& text) {
  write_file_atomically(path, [&text](FileWriter& out) { out.write(text.data(), text.size()); });
}

void append_durably(const std::string& path, const std::string& text) {
  const int fd = ::open(path.c_str(), O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0644);
  if (fd < 0) fail("append_durably '{}': cannot open: {}", path, errno_text(errno));
  try {
    FileWriter(fd, path, "append_durably").write(text.data(), text.size());
    if (::fsync(fd) != 0) fail("append_durably '{}': fsync failed: {}", path, errno_text(errno));
  } catch (...) {
    ::close(fd);
    throw;
  }
  if (::close(fd) != 0) fail("append_durably '{}': close failed: {}", path, errno_text(errno));
}

std::vector<std::string> remove_stale_temporaries(const std::string& directory) {
  std::vector<std::string> removed;
  std::error_code error;
  for (const auto& entry : std::filesystem::directory_iterator(directory, error)) {
    if (!entry.is_regular_file(error)) continue;
    const std::string name = entry.path().filename().string();
    const size_t marker = name.rfind(kTemporaryMarker);
    if (marker == std::string::npos || marker == 0) continue;
    const std::string_view digits = std::string_view(name).substr(marker + kTemporaryMarker.size());
    long pid = 0;
    const auto [end, parsed] = std::from_chars(digits.data(), digits.data() + digits.size(), pid);
    if (parsed != std::errc() || end != digits.data() + digits.size() || pid <= 0) continue;
    // kill(pid, 0) probes without signalling: ESRCH means no such process, so nobody is writing
    // the file any more. (EPERM: the process exists under another user; leave its file.)
    if (pid == ::getpid() || ::kill(static_cast<pid_t>(pid), 0) == 0 || errno != ESRCH) continue;
    if (std::filesystem::remove(entry.path(), error)) removed.push_back(entry.path().string());
  }
  return removed;
}

}  // namespace qt
