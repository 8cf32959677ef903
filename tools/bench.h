// `qtlab bench ...`: performance measurements. `bench` itself is created once by
// add_bench_command; each benchmark family registers a sub-subcommand on it from its own file
// (bench_gemm.cpp: `qtlab bench gemm`).
#pragma once

#include <CLI/CLI.hpp>

#include <algorithm>
#include <chrono>
#include <vector>

// Shared timing helpers: wall time of one call, and the best / median of a set of runs.
struct Timing {
  double best_ms = 0, median_ms = 0;
};

inline Timing summarize(std::vector<double> ms) {
  std::sort(ms.begin(), ms.end());
  return {ms.front(), ms[ms.size() / 2]};
}

template <typename F>
double time_ms(F&& f) {
  const auto t0 = std::chrono::steady_clock::now();
  f();
  const auto t1 = std::chrono::steady_clock::now();
  return std::chrono::duration<double, std::milli>(t1 - t0).count();
}

// Creates the `bench` subcommand of app (or returns it if it already exists), registers every
// benchmark below on it, and returns it.
CLI::App* add_bench_command(CLI::App& app);

// `qtlab bench gemm [--json] [--repeats N] [--shapes "M,N,K[,t];..."] [--backends ...]
//                   [--threads N]`: float GEMM through OpenBLAS and the own kernel side by side,
// and the integer GEMM (u8 x s8 -> s32), at transformer-sized shapes.
void add_bench_gemm(CLI::App* bench);

// `qtlab bench attention [--json] [--batch 32 --seq 128 --heads 4 --hidden 256 --repeats N]`:
// forward + backward of the Attention module, fused core vs composed ops (bench_attention.cpp).
void add_bench_attention(CLI::App* bench);
// `qtlab bench train [--model bert-mini --batch 32 --seq 128 --steps N] [--json]`: full training
// steps on synthetic tokens (bench_train.cpp); tools/bench_train_torch.py is the PyTorch twin.
void add_bench_train(CLI::App* bench);
// `qtlab bench infer`: FP32 vs integer-only inference (bench_infer.cpp).
void add_bench_infer(CLI::App* bench);
// `qtlab bench peak [--threads N] [--json]`: the fp32 FMA and int8 VNNI peaks (bench_peak.cpp).
void add_bench_peak(CLI::App* bench);
