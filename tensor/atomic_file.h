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
#include <vector>

namespace qt {

// The sink handed to the caller's writing function (`op` names the operation in its errors).
class FileWriter {
 public:
  FileWriter(int fd, std::string path, const char* op = "write_file_atomically")
      : fd_(fd), path_(std::move(path)), op_(op) {}
  // Writes all n bytes (retrying short writes and EINTR); throws qt::Error on failure.
  void write(const void* data, size_t n);
  size_t bytes_written() const { return bytes_written_; }

 private:
  int fd_;
  std::string path_;
  const char* op_;
  size_t bytes_written_ = 0;
};

void write_file_atomically(const std::string& path, const std::function<void(FileWriter&)>& write);

// The common case: a whole text (JSON, Markdown, a config) written atomically.
void write_text_atomically(const std::string& path, const std::string& text);

// Appends `text` to `path` (created if absent) and fsyncs it: when this returns, the record is on
// disk; a full disk or any failing call throws qt::Error naming the path and the errno text. For
// logs whose every record matters (metrics.jsonl): a buffered stream would report a full disk at
// some later flush, or never.
void append_durably(const std::string& path, const std::string& text);

// Removes the temporary files ("<name>.tmp.<pid>") that writers killed mid-write left in
// `directory` (not its subdirectories): those whose process no longer exists. Returns their paths.
std::vector<std::string> remove_stale_temporaries(const std::string& directory);

}  // namespace qt
