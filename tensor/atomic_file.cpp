#include "tensor/atomic_file.h"

#include <fcntl.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <filesystem>

#include "tensor/error.h"

namespace qt {

namespace {

std::string errno_text(int error) {
  return std::strerror(error);
}

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
      fail("write_file_atomically '{}': write failed after {} bytes: {}", path_, bytes_written_,
           errno_text(errno));
    }
    bytes += written;
    n -= static_cast<size_t>(written);
    bytes_written_ += static_cast<size_t>(written);
  }
}

void write_file_atomically(const std::string& path, const std::function<void(FileWriter&)>& write) {
  QT_CHECK(!path.empty(), "write_file_atomically: empty path");
  const std::string temporary = path + ".tmp." + std::to_string(::getpid());
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

}  // namespace qt
