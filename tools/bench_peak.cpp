// `qtlab bench peak`: this CPU's fp32 FMA and int8 VNNI peaks on all threads (tensor/cpu_peak.h),
// the figures the other benchmarks print their results as a fraction of.
#include <fmt/format.h>

#include <memory>
#include <nlohmann/json.hpp>

#include "tensor/cpu_peak.h"
#include "tensor/threads.h"
#include "tools/bench.h"

namespace {

struct Options {
  int threads = 0, repeats = 10;
  bool json = false;
};

void run_bench_peak(const Options& opt) {
  if (opt.threads > 0) qt::set_num_threads(opt.threads);
  const int threads = qt::num_threads();
  const qt::cpu::PeakMeasurement fp = qt::cpu::measure_fp32_fma_peak(threads, opt.repeats);
  const qt::cpu::PeakMeasurement i8 = qt::cpu::measure_int8_vnni_peak(threads, opt.repeats);
  if (opt.json) {
    fmt::print("{}\n", nlohmann::json({{"threads", threads},
                                       {"repeats", opt.repeats},
                                       {"fp32_gflops", fp.gops},
                                       {"fp32_instruction", fp.instruction},
                                       {"int8_gops", i8.gops},
                                       {"int8_instruction", i8.instruction}})
                           .dump());
    return;
  }
  fmt::print("bench peak: {} thread(s), best of {} runs of independent chains on every thread\n",
             threads, opt.repeats);
  fmt::print("  fp32 FMA   {:>9.1f} GFLOP/s  ({}; {:.1f} per thread)\n", fp.gops, fp.instruction,
             fp.gops / threads);
  if (i8.gops > 0)
    fmt::print("  int8 VNNI  {:>9.1f} GOP/s    ({}; {:.1f} per thread; {:.2f}x the fp32 peak)\n",
               i8.gops, i8.instruction, i8.gops / threads, i8.gops / fp.gops);
  else
    fmt::print("  int8 VNNI  {}\n", i8.instruction);
}

}  // namespace

void add_bench_peak(CLI::App* bench) {
  auto opt = std::make_shared<Options>();
  CLI::App* cmd = bench->add_subcommand(
      "peak", "this CPU's fp32 FMA and int8 VNNI peaks (independent chains, all threads)");
  cmd->add_option("--threads", opt->threads, "threads (default: all)");
  cmd->add_option(
      "--repeats", opt->repeats,
      "timed runs, the best is reported (default 10; the best of many resists a noisy machine)");
  cmd->add_flag("--json", opt->json, "one JSON object");
  cmd->callback([opt] { run_bench_peak(*opt); });
}
