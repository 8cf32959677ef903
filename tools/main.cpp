// build/qtlab: the command-line front end. Each subcommand lives in its own file in tools/ and
// registers itself here; this file only sets up the program (and MPI, when launched by mpirun)
// and turns errors into messages.
//
// Under mpirun the job's first collective is a handshake, right after the command line is parsed
// and before any subcommand runs: every rank states what it is about to run (the subcommand and
// any flag that ends it early, such as --list-keys), and ranks that disagree all stop with the
// difference named. A rank that ends before the handshake — its command line fails to parse, or
// asks for --help — aborts the whole job with its reason, since the others would otherwise wait
// for it forever.
#include <fmt/format.h>

#include <CLI/CLI.hpp>
#include <cstdio>
#include <string>

#include "optim/distributed.h"
#include "tensor/version.h"
#include "tools/bench.h"
#include "tools/commands.h"

namespace {

// Flags after which a subcommand prints something and returns without joining a run.
constexpr const char* kEarlyExitFlags[] = {"--list-keys"};

// What this rank is about to run, for the handshake.
qt::distributed::LaunchEntries launch_entries(const CLI::App& app) {
  qt::distributed::LaunchEntries entries;
  for (const CLI::App* sub : app.get_subcommands()) {
    entries.emplace_back("subcommand", sub->get_name());
    for (const char* flag : kEarlyExitFlags) {
      const CLI::Option* option = sub->get_option_no_throw(flag);
      if (option != nullptr)
        entries.emplace_back(flag, option->count() > 0 ? "given" : "not given");
    }
  }
  return entries;
}

// Every subcommand's --threads takes a positive count (0 or a negative number would otherwise
// quietly mean "all cores").
void require_positive_threads(CLI::App& app) {
  for (CLI::App* sub : app.get_subcommands({}))
    if (CLI::Option* threads = sub->get_option_no_throw("--threads"))
      threads->check(CLI::Range(1, 1 << 16));
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"qtlab: quantizable transformers on CPUs (clipped softmax, gated attention, W8A8)"};
  app.require_subcommand(1);
  app.set_version_flag("--version", "qtlab " + std::string(qt::qtlab_version()),
                       "print the qtlab version (the git commit it was built from) and exit");
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
  require_positive_threads(app);
  // Command-line errors read like every other error ("error: --threads: Value -3 not in range").
  app.failure_message([](const CLI::App* failed, const CLI::Error& e) {
    return "error: " + CLI::FailureMessage::simple(failed, e);
  });
  app.parse_complete_callback(
      [&app] { qt::distributed::check_identical("the command line", launch_entries(app)); });
  try {
    qt::distributed::init(&argc, &argv);
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    const int code = app.exit(e);
    if (qt::distributed::active())
      qt::distributed::abort_all(fmt::format(
          "this rank's command line ended the program ({}) before the job's first collective; "
          "ending every rank",
          e.get_exit_code() == 0 ? "--help" : e.what()));
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
