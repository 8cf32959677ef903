// The doctest runner. Each module's tests live in tests/test_<module>.cpp beside this file.
//
// The suite runs on the own GEMM backend on every CPU unless QTLAB_GEMM_BACKEND says otherwise.
// The default backend depends on the CPU (own with AVX-512, OpenBLAS without), and tests that
// train a tiny model and check what it reached, or compare thread counts bit for bit, need the
// same arithmetic everywhere: the own kernel is bit-identical for any thread count, and its AVX2
// and AVX-512 micro-kernels agree bit for bit for K <= 256 (one K block), which covers the tiny
// models. test_gemm checks OpenBLAS against it explicitly.
//
// Progress: a listener prints one line per test file as it finishes (its cases, failures and
// seconds) to stderr, so a long run is never silent; doctest's own report (failures, the summary)
// is unchanged. QTLAB_TEST_QUIET=1 turns the progress lines off. Measured figures that tests
// print for the record (fixture deviations, perplexities) appear only with QTLAB_TEST_VERBOSE=1
// (QTLAB_NOTE in tests/test_util.h), so that the pass/fail stream holds only what needs reading.
#define DOCTEST_CONFIG_IMPLEMENT
#include <doctest/doctest.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <string>

#include "tensor/blas/gemm.h"

namespace {

struct ProgressListener : public doctest::IReporter {
  using Clock = std::chrono::steady_clock;
  explicit ProgressListener(const doctest::ContextOptions&) {}

  void report_query(const doctest::QueryData&) override {}
  void test_run_start() override {
    quiet_ = std::getenv("QTLAB_TEST_QUIET") != nullptr;
    run_start_ = Clock::now();
  }
  void test_run_end(const doctest::TestRunStats&) override { finish_file(); }
  void test_case_start(const doctest::TestCaseData& data) override {
    const std::string file = short_name(data.m_file.c_str());
    if (file != file_) {
      finish_file();
      file_ = file;
      file_start_ = Clock::now();
    }
  }
  void test_case_reenter(const doctest::TestCaseData&) override {}
  void test_case_end(const doctest::CurrentTestCaseStats& stats) override {
    ++cases_;
    if (stats.failure_flags != 0 || stats.numAssertsFailedCurrentTest > 0) ++failed_;
  }
  void test_case_exception(const doctest::TestCaseException&) override {}
  void subcase_start(const doctest::SubcaseSignature&) override {}
  void subcase_end() override {}
  void log_assert(const doctest::AssertData&) override {}
  void log_message(const doctest::MessageData&) override {}
  void test_case_skipped(const doctest::TestCaseData&) override {}

 private:
  static std::string short_name(const char* path) {
    const std::string p = path;
    const size_t slash = p.find_last_of('/');
    return slash == std::string::npos ? p : p.substr(slash + 1);
  }
  void finish_file() {
    if (file_.empty() || cases_ == 0) return;
    const double seconds = std::chrono::duration<double>(Clock::now() - file_start_).count();
    const double total = std::chrono::duration<double>(Clock::now() - run_start_).count();
    if (!quiet_)
      std::fprintf(stderr, "  %-36s %3d cases %s %6.1f s   (%.0f s so far)\n", file_.c_str(),
                   cases_, failed_ == 0 ? "ok    " : "FAILED", seconds, total);
    cases_ = failed_ = 0;
  }
  bool quiet_ = false;
  std::string file_;
  int cases_ = 0, failed_ = 0;
  Clock::time_point run_start_, file_start_;
};

}  // namespace

REGISTER_LISTENER("qtlab_progress", 1, ProgressListener);

int main(int argc, char** argv) {
  const char* chosen = std::getenv("QTLAB_GEMM_BACKEND");
  if (chosen == nullptr || *chosen == '\0') qt::blas::set_backend(qt::blas::Backend::own);
  doctest::Context context(argc, argv);
  return context.run();
}
