// Seeded random mutations of a valid file, for the readers' fuzz tests: each case applies one to
// four edits — a flipped bit, a byte set to a value readers care about (a JSON bracket, quote,
// comma, digit or sign, 0x00, 0xff), a deleted or duplicated range, inserted bytes, a truncation —
// so that most cases are almost valid and get past the first checks. A reader passes when every
// case either loads or throws qt::Error (a clean message); any other exception fails the test and
// a crash ends the suite.
#pragma once

#include <doctest/doctest.h>

#include <cstdint>
#include <fstream>
#include <functional>
#include <random>
#include <string>

#include "tensor/error.h"

namespace qt::test {

inline std::string mutate(std::string bytes, std::mt19937& rng) {
  static const char kChars[] =
      "{}[]\",:-+.eE0123456789 \\"
      "\x00"
      "\xff";
  static const std::string kInteresting(kChars, sizeof kChars - 1);  // with the NUL
  const auto below = [&](size_t n) {
    return n == 0 ? size_t{0} : std::uniform_int_distribution<size_t>(0, n - 1)(rng);
  };
  const int edits = 1 + static_cast<int>(below(4));
  for (int e = 0; e < edits && !bytes.empty(); ++e) {
    const size_t at = below(bytes.size());
    const size_t length = 1 + below(std::min<size_t>(64, bytes.size() - at));
    switch (below(6)) {
      case 0:
        bytes[at] = static_cast<char>(bytes[at] ^ (1 << below(8)));
        break;
      case 1:
        bytes[at] = kInteresting[below(kInteresting.size())];
        break;
      case 2:
        bytes.erase(at, length);
        break;
      case 3:
        bytes.insert(at, bytes.substr(at, length));
        break;
      case 4:
        for (size_t i = 0; i < length; ++i)
          bytes.insert(bytes.begin() + static_cast<std::ptrdiff_t>(at),
                       kInteresting[below(kInteresting.size())]);
        break;
      default:
        bytes.resize(at);
        break;
    }
  }
  return bytes;
}

struct FuzzOutcome {
  int loaded = 0, rejected = 0;
};

// `cases` mutations of `valid` written to `path`, each handed to `load`.
inline FuzzOutcome fuzz_reader(const std::string& valid, const std::string& path, int cases,
                               unsigned seed, const std::function<void(const std::string&)>& load) {
  std::mt19937 rng(seed);
  FuzzOutcome outcome;
  for (int c = 0; c < cases; ++c) {
    const std::string bytes = mutate(valid, rng);
    {
      std::ofstream out(path, std::ios::binary | std::ios::trunc);
      out.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
    }
    try {
      load(path);
      ++outcome.loaded;
    } catch (const Error&) {
      ++outcome.rejected;
    } catch (const std::exception& e) {
      FAIL("case ", c, " (seed ", seed, "): not a qt::Error but ", typeid(e).name(), ": ",
           e.what());
    }
  }
  return outcome;
}

}  // namespace qt::test
