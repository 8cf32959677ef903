// `qtlab bench gemm`: GFLOP/s of the float GEMM backends (OpenBLAS, own) and GOP/s of the integer
// GEMM, measured side by side in one run at the shapes of a BERT-base-sized transformer
// (M = 4096 tokens = batch 32 x 128, hidden 768, FFN 3072).
//
// Method: warm-up rounds (every backend once per round) for at least 300 ms: page faults, pack
// buffers, thread pool start-up, and on virtual machines freshly allocated memory that stays slow
// for a few hundred milliseconds. Then `repeats` rounds; each round times every backend once
// (interleaved, so that frequency or neighbour noise hits all of them alike). Reported: the best
// time (GFLOP/s = 2*M*N*K / best) and the median time.
#include <fmt/format.h>
#include <omp.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdint>
#include <map>
#include <memory>
#include <new>
#include <nlohmann/json.hpp>
#include <random>
#include <string>
#include <tuple>
#include <vector>

#include "tensor/blas/gemm.h"
#include "tensor/cpu_peak.h"
#include "tensor/error.h"
#include "tensor/threads.h"
#include "tools/bench.h"

namespace {

using qt::blas::Backend;
using qt::blas::Trans;

// 64-byte aligned storage, like qt::Tensor's, so that rows of the operands start on cache lines
// whenever the leading dimension allows it.
template <typename T>
struct AlignedAllocator {
  using value_type = T;
  AlignedAllocator() = default;
  template <typename U>
  AlignedAllocator(const AlignedAllocator<U>&) {}
  T* allocate(size_t n) {
    return static_cast<T*>(::operator new(n * sizeof(T), std::align_val_t(64)));
  }
  void deallocate(T* p, size_t) { ::operator delete(p, std::align_val_t(64)); }
  bool operator==(const AlignedAllocator&) const { return true; }
};
template <typename T>
using AlignedVector = std::vector<T, AlignedAllocator<T>>;

struct Shape {
  int64_t M, N, K;
  bool trans_b;  // C = A * B^T with B stored [N, K] (a Linear layer's forward)
};

const char* kDefaultShapes =
    "4096,768,768;4096,768,768,t;4096,3072,768;4096,768,3072;4096,128,128;"
    "4096,256,1024";

std::vector<std::string> split(const std::string& text, char separator) {
  std::vector<std::string> parts;
  size_t start = 0;
  while (true) {
    const size_t end = text.find(separator, start);
    parts.push_back(text.substr(start, end == std::string::npos ? std::string::npos : end - start));
    if (end == std::string::npos) break;
    start = end + 1;
  }
  return parts;
}

std::string trim(const std::string& s) {
  const size_t b = s.find_first_not_of(" \t"), e = s.find_last_not_of(" \t");
  return b == std::string::npos ? std::string() : s.substr(b, e - b + 1);
}

// "M,N,K[,t];M,N,K[,t];..." (a trailing ",t" means B transposed, as in Linear).
std::vector<Shape> parse_shapes(const std::string& text) {
  std::vector<Shape> shapes;
  for (const std::string& raw : split(text, ';')) {
    const std::string item = trim(raw);
    if (item.empty()) continue;
    const std::vector<std::string> fields = split(item, ',');
    QT_CHECK(fields.size() == 3 || fields.size() == 4,
             "bench gemm: shape '{}' is not M,N,K or M,N,K,t", item);
    int64_t dims[3];
    for (int d = 0; d < 3; ++d) {
      const std::string f = trim(fields[d]);
      QT_CHECK(!f.empty() && f.find_first_not_of("0123456789") == std::string::npos &&
                   f.size() < 10 && std::stoll(f) > 0,
               "bench gemm: '{}' in shape '{}' is not a positive integer", f, item);
      dims[d] = std::stoll(f);
    }
    bool trans_b = false;
    if (fields.size() == 4) {
      const std::string t = trim(fields[3]);
      QT_CHECK(t == "t" || t == "n", "bench gemm: shape '{}': the 4th field must be 't' or 'n'",
               item);
      trans_b = t == "t";
    }
    shapes.push_back({dims[0], dims[1], dims[2], trans_b});
  }
  QT_CHECK(!shapes.empty(), "bench gemm: no shapes in '{}'", text);
  return shapes;
}

// Calls f until at least 300 ms have passed (at least twice).
template <typename F>
void warm_up(F&& f) {
  double total = 0;
  for (int calls = 0; calls < 2 || total < 300.0; ++calls) total += time_ms(f);
}

struct Result {
  std::string backend;
  Shape shape;
  Timing timing;
  double rel_diff = -1;  // own only: max|own - openblas| / max|openblas| (normwise)
  double gflops() const {
    return 2.0 * shape.M * shape.N * shape.K / (timing.best_ms * 1e-3) / 1e9;
  }
};

struct Options {
  bool json = false;
  int repeats = 5;
  std::string shapes = kDefaultShapes;
  std::string backends = "openblas,own,int8";
  int threads = 0;
};

void run_bench_gemm(const Options& opt) {
  QT_CHECK(opt.repeats >= 1, "bench gemm: --repeats {} (expected >= 1)", opt.repeats);
  if (opt.threads > 0) qt::set_num_threads(opt.threads);
  const std::vector<Shape> shapes = parse_shapes(opt.shapes);
  bool use_openblas = false, use_own = false, use_int8 = false;
  for (const std::string& raw : split(opt.backends, ',')) {
    const std::string b = trim(raw);
    if (b == "openblas") {
      use_openblas = true;
    } else if (b == "own") {
      use_own = true;
    } else if (b == "int8") {
      use_int8 = true;
    } else {
      qt::fail("bench gemm: unknown backend '{}' in --backends (expected openblas, own, int8)", b);
    }
  }

  std::mt19937 rng(1234);
  std::uniform_real_distribution<float> uniform(-1.0f, 1.0f);
  std::uniform_int_distribution<int> u8(0, 255), s8(-128, 127);

  std::vector<Result> results;
  // The integer GEMM is always A * B^T; measure it once per (M, N, K).
  std::map<std::tuple<int64_t, int64_t, int64_t>, Timing> int8_done;

  for (const Shape& s : shapes) {
    AlignedVector<float> A(s.M * s.K), B(s.K * s.N), C(s.M * s.N);
    for (float& v : A) v = uniform(rng);
    for (float& v : B) v = uniform(rng);
    const Trans tb = s.trans_b ? Trans::yes : Trans::no;
    const int64_t ldb = s.trans_b ? s.K : s.N;
    auto gemm = [&](Backend backend) {
      qt::blas::sgemm_with(backend, Trans::no, tb, s.M, s.N, s.K, 1.0f, A.data(), s.K, B.data(),
                           ldb, 0.0f, C.data(), s.N);
    };
    std::vector<Backend> backends;
    if (use_openblas) backends.push_back(Backend::openblas);
    if (use_own) backends.push_back(Backend::own);
    std::vector<std::vector<double>> ms(backends.size());
    warm_up([&] {
      for (Backend b : backends) gemm(b);
    });
    for (int r = 0; r < opt.repeats; ++r)
      for (size_t i = 0; i < backends.size(); ++i)
        ms[i].push_back(time_ms([&] { gemm(backends[i]); }));
    for (size_t i = 0; i < backends.size(); ++i)
      results.push_back({std::string(qt::blas::backend_name(backends[i])), s, summarize(ms[i])});
    if (use_openblas && use_own) {
      // Agreement of the two backends on this very problem (the tests check it on odd shapes).
      gemm(Backend::openblas);
      const AlignedVector<float> reference = C;
      gemm(Backend::own);
      double worst = 0, largest = 0;
      for (size_t i = 0; i < C.size(); ++i) {
        worst = std::max(worst, std::abs(double(C[i]) - reference[i]));
        largest = std::max(largest, std::abs(double(reference[i])));
      }
      results.back().rel_diff = worst / std::max(largest, 1e-30);
    }

    if (use_int8 && !int8_done.count({s.M, s.N, s.K})) {
      AlignedVector<uint8_t> Aq(s.M * s.K);
      AlignedVector<int8_t> Bq(s.N * s.K);
      AlignedVector<int32_t> Cq(s.M * s.N);
      for (uint8_t& v : Aq) v = static_cast<uint8_t>(u8(rng));
      for (int8_t& v : Bq) v = static_cast<int8_t>(s8(rng));
      auto igemm = [&] {
        qt::blas::gemm_u8s8s32(s.M, s.N, s.K, Aq.data(), s.K, Bq.data(), s.K, Cq.data(), s.N);
      };
      warm_up(igemm);
      std::vector<double> ims;
      for (int r = 0; r < opt.repeats; ++r) ims.push_back(time_ms(igemm));
      const Timing t = summarize(ims);
      int8_done[{s.M, s.N, s.K}] = t;
      results.push_back({"int8", {s.M, s.N, s.K, true}, t});
    }
  }

  // This CPU's peaks, measured now on the same threads (tensor/cpu_peak.h): every figure below is
  // also given as a fraction of them.
  const double fp32_peak = qt::cpu::measure_fp32_fma_peak(qt::num_threads()).gops;
  const double int8_peak = qt::cpu::measure_int8_vnni_peak(qt::num_threads()).gops;
  const auto of_peak = [&](const Result& r) {
    const double peak = r.backend == "int8" ? int8_peak : fp32_peak;
    return peak > 0 ? r.gflops() / peak : 0.0;
  };
  if (opt.json) {
    nlohmann::json out = nlohmann::json::array();
    for (const Result& r : results)
      out.push_back({{"backend", r.backend},
                     {"M", r.shape.M},
                     {"N", r.shape.N},
                     {"K", r.shape.K},
                     {"trans_b", r.shape.trans_b},
                     {"gflops", r.gflops()},
                     {"ms", r.timing.best_ms},
                     {"ms_median", r.timing.median_ms},
                     {"threads", qt::num_threads()},
                     {"fraction_of_peak", of_peak(r)},
                     {"peak", r.backend == "int8" ? int8_peak : fp32_peak}});
    for (size_t i = 0; i < results.size(); ++i)
      if (results[i].rel_diff >= 0) out[i]["max_rel_diff_vs_openblas"] = results[i].rel_diff;
    fmt::print("{}\n", out.dump(2));
    return;
  }

  // Table: one line per shape, the backends side by side.
  fmt::print("GEMM, {} threads, best of {} (median in parentheses); own kernel: {}; int8: {}\n",
             qt::num_threads(), opt.repeats, qt::blas::own_kernel_name(),
             qt::blas::int8_kernel_name());
  fmt::print(
      "measured peaks (bench peak): fp32 FMA {:.0f} GFLOP/s, int8 VNNI {:.0f} GOP/s; "
      "[x] = best as a fraction of the peak\n",
      fp32_peak, int8_peak);
  fmt::print("{:<22} {:>22} {:>22} {:>12} {:>10} {:>22}\n", "shape (C = A*op(B))",
             "openblas GFLOP/s", "own GFLOP/s", "own/openblas", "rel.diff", "int8 GOP/s");
  auto find = [&](const std::string& backend, const Shape& s) -> const Result* {
    for (const Result& r : results)
      if (r.backend == backend && r.shape.M == s.M && r.shape.N == s.N && r.shape.K == s.K &&
          (backend == "int8" || r.shape.trans_b == s.trans_b))
        return &r;
    return nullptr;
  };
  auto cell = [&](const Result* r) {
    if (!r) return fmt::format("{:>22}", "-");
    const double median_gflops = r->gflops() * r->timing.best_ms / r->timing.median_ms;
    return fmt::format(
        "{:>22}", fmt::format("{:.1f} ({:.1f}) [{:.2f}]", r->gflops(), median_gflops, of_peak(*r)));
  };
  for (const Shape& s : shapes) {
    const Result* ob = find("openblas", s);
    const Result* own = find("own", s);
    const std::string ratio = ob && own ? fmt::format("{:.2f}", own->gflops() / ob->gflops()) : "-";
    const std::string diff =
        own && own->rel_diff >= 0 ? fmt::format("{:.1e}", own->rel_diff) : std::string("-");
    fmt::print("{:<22} {} {} {:>12} {:>10} {}\n",
               fmt::format("{}x{}x{} {}", s.M, s.N, s.K, s.trans_b ? "A*B^T" : "A*B"), cell(ob),
               cell(own), ratio, diff, cell(find("int8", s)));
  }
}

}  // namespace

void add_bench_gemm(CLI::App* bench) {
  auto opt = std::make_shared<Options>();
  CLI::App* gemm = bench->add_subcommand(
      "gemm", "float GEMM (OpenBLAS vs own kernel) and int8 GEMM throughput at transformer shapes");
  gemm->add_flag("--json", opt->json, "print one JSON list instead of the table");
  gemm->add_option("--repeats", opt->repeats, "timed runs per backend and shape (after warm-up)")
      ->capture_default_str();
  gemm->add_option("--shapes", opt->shapes, "shapes \"M,N,K[,t];...\" (t: B transposed, [N,K])")
      ->capture_default_str();
  gemm->add_option("--backends", opt->backends, "comma-separated subset of openblas,own,int8")
      ->capture_default_str();
  gemm->add_option("--threads", opt->threads,
                   "thread count (default: QTLAB_NUM_THREADS or all cores)");
  gemm->callback([opt] { run_bench_gemm(*opt); });
}

CLI::App* add_bench_command(CLI::App& app) {
  CLI::App* bench = nullptr;
  try {
    bench = app.get_subcommand("bench");
  } catch (const CLI::OptionNotFound&) {
    bench = app.add_subcommand("bench", "performance benchmarks");
    bench->require_subcommand(1);
    add_bench_gemm(bench);
    add_bench_attention(bench);
    add_bench_train(bench);
    add_bench_infer(bench);
    add_bench_peak(bench);
  }
  return bench;
}
