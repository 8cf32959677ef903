// `qtlab check --reference DIR --candidate DIR [--tolerance-lsb N] [--json]`: compares a
// candidate's integer tensor dump with the reference's (quant/dump_compare.h; the format is
// quant/tensor_dump.h and docs/integer-reference.md). Exit codes: 0 every tensor agrees, 1 a
// mismatch (the first op that diverges while its inputs agree is named), 2 unusable input (a
// missing tensor, a wrong dtype or shape, a corrupt or truncated file, a bad manifest).
// `qtlab check --write-example DIR [--seed N]` writes the example graph's reference dump
// (quant/example_graph.h) and the C header for quant/export/qtlab_example_graph.c into DIR: the
// worked example of docs/integer-reference.md.
#include <cstdio>
#include <cstdlib>
#include <memory>
#include <nlohmann/json.hpp>
#include <string>

#include <fmt/format.h>

#include "optim/distributed.h"
#include "quant/dump_compare.h"
#include "quant/example_graph.h"
#include "tensor/atomic_file.h"
#include "tensor/error.h"
#include "tools/commands.h"

namespace {

using namespace qt::quant;

constexpr int kExitMismatch = 1, kExitUnusable = 2;

struct CheckArguments {
  std::string reference, candidate;
  int64_t tolerance_lsb = 0;
  bool json = false;
  std::string write_example;
  unsigned seed = 7;
};

std::string producer_label(const TensorDump& reference, int64_t producer) {
  if (producer < 0) return "(input)";
  const DumpOp& op = reference.ops[producer];
  return op.name + " (" + op.kind + ")";
}

std::string first_mismatch(const TensorComparison& t) {
  if (t.agrees()) return "";
  return fmt::format("[{}]: {} vs {}", fmt::join(t.first_index, ", "), t.first_reference,
                     t.first_candidate);
}

// One sentence for the verdict: which op diverged first, with its first differing output.
std::string verdict(const TensorDump& reference, const DumpComparison& c) {
  if (c.pass()) {
    return fmt::format("PASS: all {} tensors agree within {} LSB", c.tensors.size(),
                       c.tolerance_lsb);
  }
  std::string text = "FAIL:";
  if (c.first_divergent_op >= 0) {
    const DumpOp& op = reference.ops[c.first_divergent_op];
    for (const std::string& out : op.outputs) {
      const TensorComparison& t = c.tensor(out);
      if (t.agrees()) continue;
      text += fmt::format(
          " op \"{}\" ({}) is the first to diverge: its inputs agree, its output \"{}\" differs "
          "in {} of {} codes (max {} LSB), first at [{}]: reference {}, candidate {}.",
          op.name, op.kind, out, t.mismatches, t.elements, t.max_abs_diff,
          fmt::join(t.first_index, ", "), t.first_reference, t.first_candidate);
      break;
    }
  }
  if (!c.divergent_inputs.empty()) {
    text += fmt::format(" graph inputs differ: {}.", fmt::join(c.divergent_inputs, ", "));
  }
  return text;
}

void print_table(const TensorDump& reference, const DumpComparison& c, const CheckArguments& a) {
  fmt::print("qtlab check: reference {} ({} ops, {} tensors), candidate {}, tolerance {} LSB\n",
             a.reference, reference.ops.size(), c.tensors.size(), a.candidate, c.tolerance_lsb);
  fmt::print("{:<24} {:<28} {:<5} {:<16} {:>16} {:>8}  {}\n", "tensor", "produced by", "dtype",
             "shape", "mismatches", "max|d|", "first mismatch: reference vs candidate");
  for (const TensorComparison& t : c.tensors) {
    const DumpTensor& r = reference.tensor(t.name);
    fmt::print("{:<24} {:<28} {:<5} {:<16} {:>16} {:>8}  {}\n", t.name,
               producer_label(reference, t.producer), dump_dtype_name(r.dtype),
               qt::shape_str(r.shape), fmt::format("{}/{}", t.mismatches, t.elements),
               t.max_abs_diff, first_mismatch(t));
  }
  fmt::print("{}\n", verdict(reference, c));
}

nlohmann::json comparison_json(const TensorDump& reference, const DumpComparison& c,
                               const CheckArguments& a) {
  nlohmann::json tensors = nlohmann::json::array();
  for (const TensorComparison& t : c.tensors) {
    const DumpTensor& r = reference.tensor(t.name);
    nlohmann::json row = {
        {"name", t.name},
        {"producer",
         t.producer < 0 ? nlohmann::json(nullptr) : nlohmann::json(reference.ops[t.producer].name)},
        {"dtype", dump_dtype_name(r.dtype)},
        {"shape", r.shape},
        {"elements", t.elements},
        {"equal", t.agrees()},
        {"mismatches", t.mismatches},
        {"max_abs_diff_lsb", t.max_abs_diff}};
    if (!t.agrees()) {
      row["first_mismatch"] = {{"index", t.first_index},
                               {"reference", t.first_reference},
                               {"candidate", t.first_candidate}};
    }
    tensors.push_back(row);
  }
  nlohmann::json first = nullptr;
  if (c.first_divergent_op >= 0) {
    const DumpOp& op = reference.ops[c.first_divergent_op];
    first = {{"name", op.name}, {"kind", op.kind}, {"outputs", op.outputs}};
  }
  return {{"status", c.pass() ? "pass" : "mismatch"},
          {"reference", a.reference},
          {"candidate", a.candidate},
          {"tolerance_lsb", c.tolerance_lsb},
          {"first_divergent_op", first},
          {"divergent_inputs", c.divergent_inputs},
          {"tensors", tensors},
          {"message", verdict(reference, c)}};
}

[[noreturn]] void finish(int code) {
  std::fflush(stdout);
  qt::distributed::finalize();
  std::exit(code);
}

void write_example(const CheckArguments& a) {
  TensorDump dump = example_graph(a.seed);
  write_tensor_dump(a.write_example, dump);
  const std::string header = a.write_example + "/qtlab_graph_params.h";
  qt::write_text_atomically(header, example_graph_params_header(dump));
  fmt::print("wrote the example graph's reference dump (seed {}, {} tensors, {} ops) and {}\n",
             a.seed, dump.tensors.size(), dump.ops.size(), header);
}

void run_check(const CheckArguments& a) {
  if (!a.write_example.empty()) return write_example(a);
  TensorDump reference, candidate;
  DumpComparison comparison;
  try {
    QT_CHECK(!a.reference.empty() && !a.candidate.empty(),
             "qtlab check needs --reference DIR and --candidate DIR");
    try {
      reference = read_tensor_dump(a.reference);
    } catch (const qt::Error& e) {
      throw qt::Error(std::string("reference: ") + e.what());
    }
    try {
      candidate = read_tensor_dump(a.candidate);
    } catch (const qt::Error& e) {
      throw qt::Error(std::string("candidate: ") + e.what());
    }
    comparison = compare_dumps(reference, candidate, a.tolerance_lsb);
  } catch (const std::exception& e) {
    // Unusable input (a qt::Error naming the problem, or a system error such as running out of
    // memory on a huge shape): say what, never compare half a dump.
    if (a.json) {
      fmt::print("{}\n", nlohmann::json({{"status", "unusable"}, {"error", e.what()}}).dump(1));
    }
    std::fprintf(stderr, "error: %s\n", e.what());
    finish(kExitUnusable);
  }
  if (a.json) {
    fmt::print("{}\n", comparison_json(reference, comparison, a).dump(1));
  } else {
    print_table(reference, comparison, a);
  }
  if (!comparison.pass()) finish(kExitMismatch);
}

}  // namespace

void add_check_command(CLI::App& app) {
  auto arguments = std::make_shared<CheckArguments>();
  CLI::App* cmd = app.add_subcommand(
      "check", "compare a candidate's integer tensor dump with a reference dump, in graph order");
  cmd->add_option("--reference", arguments->reference, "reference dump directory");
  cmd->add_option("--candidate", arguments->candidate, "candidate dump directory");
  cmd->add_option("--tolerance-lsb", arguments->tolerance_lsb,
                  "codes may differ by this many LSB (default 0: bit for bit)");
  cmd->add_flag("--json", arguments->json, "one JSON object instead of the table");
  cmd->add_option("--write-example", arguments->write_example,
                  "write the example graph's reference dump and its C header into DIR, and exit");
  cmd->add_option("--seed", arguments->seed, "with --write-example: the input's seed (default 7)");
  cmd->callback([arguments] { run_check(*arguments); });
}
