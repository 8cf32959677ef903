// build/qtlab: the command-line front end. Each subcommand lives in its own file in tools/ and
// registers itself here; this file only sets up the program and turns errors into messages.
#include <CLI/CLI.hpp>
#include <cstdio>

#include "tensor/error.h"
#include "tools/bench.h"

int main(int argc, char** argv) {
  CLI::App app{"qtlab: quantizable transformers on CPUs (clipped softmax, gated attention, W8A8)"};
  app.require_subcommand(1);
  add_bench_command(app);
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    return app.exit(e);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "error: %s\n", e.what());
    return 1;
  }
  return 0;
}
