// Shared by the tests of the C99 export (tests/test_c_export*.cpp): compiling C sources with the
// export's flags once per test process, and a batch of cases for the C driver with the C++
// results expected for them.
#pragma once

#include <doctest/doctest.h>

#include <cstdint>
#include <filesystem>
#include <fstream>
#include <map>
#include <sstream>
#include <string>
#include <vector>

#include "tests/test_util.h"

namespace qt::test {

// The flags `make -C DIR check` of an export uses (issue 13).
inline constexpr const char* kCFlags = "-std=c99 -O2 -Wall -Wextra -Werror -pedantic";

// Compiles `sources` (paths relative to the source tree) with -I quant/export into
// scratch/c_export/<name>, once per process; REQUIREs success, showing the compiler's output.
inline std::string compiled_c_program(const std::string& name,
                                      const std::vector<std::string>& sources) {
  static std::map<std::string, std::string> built;
  if (auto it = built.find(name); it != built.end()) return it->second;
  const std::string src = QTLAB_SOURCE_DIR;
  const std::string binary = (scratch_directory("c_export") / name).string();
  std::string command = std::string("cc ") + kCFlags + " -I" + src + "/quant/export";
  for (const std::string& s : sources) command += " " + src + "/" + s;
  command += " -o " + binary;
  const CommandResult r = run_command(command);
  REQUIRE_MESSAGE(r.status == 0, command << "\n" << r.output);
  REQUIRE_MESSAGE(r.output.empty(), "compiler warnings: " << r.output);
  built[name] = binary;
  return binary;
}

// Cases for tests/c/qtlab_int8_driver.c: the input text, and the values the C++ ops produced,
// with a label per case to name the one that differs.
class DriverCases {
 public:
  // Starts a case: writes the op name.
  void begin(const std::string& op, const std::string& label) {
    input_ << "\n" << op;
    labels_.push_back({expected_.size(), op + ": " + label});
  }
  template <typename T>
  void put(T value) {
    input_ << ' ' << static_cast<long long>(value);
  }
  template <typename T>
  void put_all(const std::vector<T>& values) {
    for (const T& v : values) put(v);
  }
  void put_u64(uint64_t value) { input_ << ' ' << value; }
  template <typename T>
  void expect(T value) {
    expected_.push_back(static_cast<int64_t>(value));
  }
  template <typename T>
  void expect_all(const std::vector<T>& values) {
    for (const T& v : values) expect(v);
  }
  size_t cases() const { return labels_.size(); }
  size_t values() const { return expected_.size(); }

  // Runs the driver on the cases and CHECKs every output value against the C++ one; reports the
  // first difference by case label.
  void run_and_compare(const std::string& driver, const std::string& tag) const {
    const std::filesystem::path dir = scratch_directory("c_export");
    const std::string in = (dir / (tag + ".in")).string(), out = (dir / (tag + ".out")).string();
    std::ofstream(in) << input_.str() << "\n";
    const CommandResult r = run_command(driver + " < " + in + " > " + out);
    REQUIRE_MESSAGE(r.status == 0, tag << ": the driver failed: " << r.output);
    std::ifstream got(out);
    std::vector<int64_t> values;
    long long v = 0;
    while (got >> v) values.push_back(v);
    REQUIRE_MESSAGE(values.size() == expected_.size(), tag << ": " << values.size()
                                                           << " values from C, " << expected_.size()
                                                           << " from C++");
    for (size_t i = 0; i < values.size(); ++i) {
      if (values[i] == expected_[i]) continue;
      size_t c = 0;
      while (c + 1 < labels_.size() && labels_[c + 1].first <= i) ++c;
      FAIL_CHECK(tag << ": C gives " << values[i] << ", C++ " << expected_[i] << " at value "
                     << i - labels_[c].first << " of case " << c << " (" << labels_[c].second
                     << ")");
      return;
    }
  }

 private:
  std::ostringstream input_;
  std::vector<int64_t> expected_;
  std::vector<std::pair<size_t, std::string>> labels_;
};

}  // namespace qt::test
