// `qtlab bench ...`: performance measurements. `bench` itself is created once by
// add_bench_command; each benchmark family registers a sub-subcommand on it from its own file
// (bench_gemm.cpp: `qtlab bench gemm`).
#pragma once

#include <CLI/CLI.hpp>

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
