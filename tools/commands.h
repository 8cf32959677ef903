// The training and evaluation subcommands of build/qtlab (each defined in its own file).
#pragma once

#include <CLI/CLI.hpp>
#include <cstdint>
#include <string>

// `qtlab pretrain`: train a model from a preset, a config file, flags and --set (pretrain.cpp).
void add_pretrain_command(CLI::App& app);
// `qtlab eval --checkpoint FILE`: validation perplexity or accuracy (eval.cpp).
void add_eval_command(CLI::App& app);
// `qtlab quantize --checkpoint FILE`: W8A8 post-training quantization, FP vs quantized
// (quantize.cpp).
void add_quantize_command(CLI::App& app);
// `qtlab analyze --checkpoint FILE`: outlier metrics and positions, attention on delimiters, gate
// statistics, plot data -> analysis.json (analyze.cpp).
void add_analyze_command(CLI::App& app);
// Analyses a model file with the default options over `batches` validation batches and writes
// OUT_DIR/analysis.json (OUT_DIR empty: the checkpoint's directory); returns its path
// (analyze.cpp).
std::string write_checkpoint_analysis(const std::string& checkpoint, const std::string& out_dir,
                                      int64_t batches);
// `qtlab experiment PLAN`: run an experiment plan — train, quantize (bit-width sweep) and analyse
// every run at its evaluation steps, resumably (experiment.cpp).
void add_experiment_command(CLI::App& app);
// `qtlab results DIR`: tables and growth curves of an experiment from its committed results
// files (results.cpp).
void add_results_command(CLI::App& app);
// `qtlab report RUN_DIR...`: gnuplot figures and report.md comparing runs (report.cpp).
void add_report_command(CLI::App& app);
// `qtlab logits --checkpoint FILE --batch BATCH --out OUT`: a model's logits on a given batch
// (logits.cpp; tools/torch_model.py --check compares them with PyTorch's).
void add_logits_command(CLI::App& app);
// `qtlab check --reference DIR --candidate DIR`: integer tensor dumps compared (check.cpp).
void add_check_command(CLI::App& app);
// `qtlab export-int --checkpoint FILE --out DIR`: the integer model as C99 with test vectors
// (export_int.cpp).
void add_export_int_command(CLI::App& app);
