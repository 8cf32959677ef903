// Running gnuplot from the commands that draw plots (qtlab report, qtlab results): the program is
// $QTLAB_GNUPLOT or "gnuplot" on PATH, run through the shell with its output captured.
#pragma once

#include <string>

namespace qt::tools {

// Runs a shell command; returns its exit status (128 when a signal ended it) and appends its
// combined stdout and stderr to `output`.
int run_shell(const std::string& command, std::string& output);

// `text` as one shell word (single quotes, embedded quotes escaped).
std::string shell_quote(const std::string& text);

// $QTLAB_GNUPLOT when set and non-empty, otherwise "gnuplot".
std::string gnuplot_program();

}  // namespace qt::tools
