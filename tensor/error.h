// Errors. Every check that guards user input throws qt::Error with a message that names the
// operation and the offending shapes or values. Checks never compile away in Release builds:
// a wrong shape must never turn into a segfault or silent garbage.
#pragma once

#include <fmt/format.h>
#include <fmt/ranges.h>

#include <stdexcept>
#include <string>

namespace qt {

struct Error : std::runtime_error {
  using std::runtime_error::runtime_error;
};

template <typename... Args>
[[noreturn]] void fail(fmt::format_string<Args...> format, Args&&... args) {
  throw Error(fmt::format(format, std::forward<Args>(args)...));
}

}  // namespace qt

// QT_CHECK(condition, "op: message {} {}", args...) throws qt::Error when condition is false.
#define QT_CHECK(condition, ...)               \
  do {                                         \
    if (!(condition)) ::qt::fail(__VA_ARGS__); \
  } while (0)
