// The training and evaluation subcommands of build/qtlab (each defined in its own file).
#pragma once

#include <CLI/CLI.hpp>

// `qtlab pretrain`: train a model from a preset, a config file, flags and --set (pretrain.cpp).
void add_pretrain_command(CLI::App& app);
// `qtlab eval --checkpoint FILE`: validation perplexity or accuracy (eval.cpp).
void add_eval_command(CLI::App& app);
