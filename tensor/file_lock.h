// An exclusive advisory lock (flock) on a file, held for the object's lifetime, with the holder's
// PID written into the file: two processes that must not work on the same thing (two trainings in
// one run directory) refuse each other instead of interleaving their writes. The kernel releases
// the lock when the holder exits, however it exits, so a killed holder never leaves it stuck.
#pragma once

#include <string>

namespace qt {

class FileLock {
 public:
  // Creates `path` if needed and locks it without waiting; throws qt::Error "<what> is in use by
  // process PID (lock file PATH)" when another process holds it.
  FileLock(const std::string& path, const std::string& what);
  ~FileLock();
  FileLock(const FileLock&) = delete;
  FileLock& operator=(const FileLock&) = delete;

 private:
  int fd_ = -1;
};

}  // namespace qt
