// Writing a file atomically: readers (and a crash at any moment) see either the old file or the
// complete new one, never a half-written file.
//
//   1. write everything to "<path>.tmp.<pid>" in the same directory (same file system, so the
//      rename below is atomic);
//   2. fsync the temporary file (its data is on disk before it gets the real name);
//   3. rename it over <path>;
//   4. fsync the directory (the rename itself is on disk).
//
// On any error — a failing system call, or an exception thrown by the caller's writing function —
// the temporary file is removed, <path> is left untouched, and the exception propagates (system
// errors as qt::Error naming the path and the errno text).
#pragma once

#include <cstddef>
#include <functional>
#include <string>
#include <utility>

namespace qt {

// The sink handed to the caller's writing function.
class FileWriter {
 public:
  FileWriter(int fd, std::string path) : fd_(fd), path_(std::move(path)) {}
  // Writes all n bytes (retrying short writes and EINTR); throws qt::Error on failure.
  void write(const void* data, size_t n);
  size_t bytes_written() const { return bytes_written_; }

 private:
  int fd_;
  std::string path_;
  size_t bytes_written_ = 0;
};

void write_file_atomically(const std::string& path, const std::function<void(FileWriter&)>& write);

// The common case: a whole text (JSON, Markdown, a config) written atomically.
void write_text_atomically(const std::string& path, const std::string& text);

}  // namespace qt
