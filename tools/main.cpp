// build/qtlab: the command-line front end. Each subcommand lives in its own file in tools/ and
// registers itself here; this file only sets up the program (and MPI, when launched by mpirun)
// and turns errors into messages.
#include <CLI/CLI.hpp>
#include <cstdio>

#include "optim/distributed.h"
#include "tools/bench.h"
#include "tools/commands.h"

int main(int argc, char** argv) {
  CLI::App app{"qtlab: quantizable transformers on CPUs (clipped softmax, gated attention, W8A8)"};
  app.require_subcommand(1);
  add_bench_command(app);
  add_pretrain_command(app);
  add_eval_command(app);
  add_quantize_command(app);
  add_analyze_command(app);
  add_report_command(app);
  add_experiment_command(app);
  add_results_command(app);
  add_logits_command(app);
  add_check_command(app);
  add_export_int_command(app);
  try {
    qt::distributed::init(&argc, &argv);
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    const int code = app.exit(e);
    qt::distributed::finalize();
    return code;
  } catch (const std::exception& e) {
    // Under mpirun one failing rank must take the others down rather than leave them waiting in a
    // collective: abort_all prints the message with the rank and calls MPI_Abort.
    if (qt::distributed::active()) qt::distributed::abort_all(e.what());
    std::fprintf(stderr, "error: %s\n", e.what());
    return 1;
  }
  qt::distributed::finalize();
  return 0;
}
