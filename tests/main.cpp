// The doctest runner. Each module's tests live in tests/test_<module>.cpp beside this file.
#define DOCTEST_CONFIG_IMPLEMENT_WITH_MAIN
#include <doctest/doctest.h>
