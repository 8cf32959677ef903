#include "tools/gnuplot.h"

#include <sys/wait.h>

#include <cstdio>
#include <cstdlib>

namespace qt::tools {

int run_shell(const std::string& command, std::string& output) {
  FILE* pipe = ::popen((command + " 2>&1").c_str(), "r");
  if (pipe == nullptr) return -1;
  char buffer[4096];
  size_t n = 0;
  while ((n = std::fread(buffer, 1, sizeof buffer, pipe)) > 0) output.append(buffer, n);
  const int status = ::pclose(pipe);
  return WIFEXITED(status) ? WEXITSTATUS(status) : 128;
}

std::string shell_quote(const std::string& text) {
  std::string out = "'";
  for (const char c : text) out += c == '\'' ? std::string("'\\''") : std::string(1, c);
  return out + "'";
}

std::string gnuplot_program() {
  const char* configured = std::getenv("QTLAB_GNUPLOT");
  return configured != nullptr && configured[0] != '\0' ? configured : "gnuplot";
}

}  // namespace qt::tools
