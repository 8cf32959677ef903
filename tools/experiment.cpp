// `qtlab experiment PLAN`: runs an experiment plan (tools/experiment_plan.h) — trains every run,
// and at each of its evaluation steps quantizes the checkpoint over the plan's bit-width sweep
// (`qtlab quantize --sweep`) and analyses it (`qtlab analyze`), appending the results as JSON
// lines to the run's results file and publishing a copy (docs/results/<plan>/<run>.jsonl).
//
// Layout, per run:  RUNS_DIR/<plan>/<run>/                 the `qtlab pretrain` run directory
//                     snapshots/step-<N>.safetensors       the checkpoint at evaluation step N
//                     eval/step-<N>/                       quantize-sweep.jsonl, analysis.json
//                     results.jsonl                        every finished evaluation
//                     log.txt                              what the stages printed
//                     stage.json                           what the run is doing now
//                     reanalysis/step-<N>/analysis.json    --reanalyze: a newer analysis
//                     reanalysis.jsonl                     --reanalyze: its records
//
// Resumable and idempotent: each piece is skipped when its output exists (a result in
// results.jsonl, a stage's output file, a snapshot), training resumes from the run's checkpoint
// (bit-identical to an uninterrupted run), so rerunning the same command after an interruption —
// a crash, a kill, a new session — continues where it stopped. Each stage runs as a child process
// of this same binary, which the kernel ends if the driver dies (PR_SET_PDEATHSIG); every file is
// written atomically, so a kill at any moment loses at most the steps since the last checkpoint.
// On a machine whose runs/ is empty a run is retrained from step 0; at each evaluation step whose
// results are already published, training must reproduce the published training record bit for
// bit, and then the published evaluation is adopted instead of repeated (adopt_published_step).
//
// Re-analysis (--reanalyze): the analysis records of evaluations made by an older binary lack
// what a newer `qtlab analyze` measures (kAnalysisVersion, quant/outlier_analysis.h). --reanalyze
// recomputes the analysis of every existing snapshot whose recorded re-analysis is older than this
// build's version, without retraining, and writes the records (kind "analysis", with
// "reanalysis": true) to RUN/reanalysis.jsonl, published as <publish>/<run>.reanalysis.jsonl;
// `qtlab results` counts the higher analysis version of a step. It reads only snapshots, which are
// written once (by rename) and never changed, and writes only files that training and evaluation
// never touch, so it does not take the run's lock and runs beside a driver that is training the
// same run (sharing only the CPU); its own lock, RUN/.reanalysis.lock, keeps two re-analyses of
// one run apart. Idempotent: a step whose re-analysis is current is skipped. Runs one after
// another, each analysis with --threads-per-run threads.
//
// Parallelism: --parallel N runs N plan runs side by side, each with --threads-per-run threads
// (default 1: on this project's 2-core machines two bert-mini runs side by side train ~2,850
// tokens/s each against ~3,400 alone). Runs start in plan order.
#include <fcntl.h>
#include <fmt/format.h>
#include <fnmatch.h>
#include <signal.h>
#include <sys/file.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <map>
#include <nlohmann/json.hpp>
#include <set>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "models/config.h"
#include "optim/distributed.h"
#include "quant/outlier_analysis.h"
#include "tensor/atomic_file.h"
#include "tensor/blas/gemm.h"
#include "tensor/error.h"
#include "tensor/safetensors.h"
#include "tensor/version.h"
#include "tools/commands.h"
#include "tools/experiment_plan.h"

namespace fs = std::filesystem;
using nlohmann::json;
using qt::tools::ExperimentPlan;
using qt::tools::PlannedRun;

namespace {

struct ExperimentArguments {
  std::string plan_file;
  std::string runs_dir = "runs";
  std::string publish_dir;  // "": docs/results/<plan name>
  bool no_publish = false;
  bool no_adopt = false;  // evaluate every step afresh, even where published results exist
  // adopt published evaluations even where the retrained run does not reproduce them bit for bit
  bool adopt_unreproduced = false;
  int parallel = 1;
  int threads_per_run = 1;
  std::vector<std::string> only;  // run-name patterns (shell globs)
  int progress_seconds = 60;
  bool dry_run = false, status = false, reanalyze = false;
};

double now_seconds() {
  return std::chrono::duration<double>(std::chrono::system_clock::now().time_since_epoch()).count();
}

std::string duration_text(double seconds) {
  if (!(seconds >= 0) || seconds > 1e8) return "?";
  const int64_t s = static_cast<int64_t>(seconds + 0.5);
  if (s >= 3600) return fmt::format("{}h{:02}m", s / 3600, s / 60 % 60);
  if (s >= 60) return fmt::format("{}m{:02}s", s / 60, s % 60);
  return fmt::format("{}s", s);
}

std::string read_text(const fs::path& path) {
  std::ifstream in(path);
  std::stringstream text;
  text << in.rdbuf();
  return text.str();
}

// Every line of a JSON-lines file that parses (a torn last line, from a crash mid-append in a
// file written by something else, is skipped).
std::vector<json> read_json_lines(const fs::path& path) {
  std::vector<json> out;
  std::ifstream in(path);
  std::string line;
  while (std::getline(in, line)) {
    if (line.empty()) continue;
    json value = json::parse(line, nullptr, false);
    if (!value.is_discarded()) out.push_back(std::move(value));
  }
  return out;
}

struct RunPaths {
  fs::path dir, snapshots, eval, results, log, stage, lock, checkpoint;
  fs::path reanalysis, reanalysis_results, reanalysis_lock;  // --reanalyze
  fs::path snapshot(int64_t step) const {
    return snapshots / fmt::format("step-{}.safetensors", step);
  }
  fs::path eval_dir(int64_t step) const { return eval / fmt::format("step-{}", step); }
};

RunPaths run_paths(const ExperimentArguments& a, const ExperimentPlan& plan, const PlannedRun& r) {
  RunPaths p;
  p.dir = fs::path(a.runs_dir) / plan.name / r.name;
  p.snapshots = p.dir / "snapshots";
  p.eval = p.dir / "eval";
  p.results = p.dir / "results.jsonl";
  p.log = p.dir / "log.txt";
  p.stage = p.dir / "stage.json";
  p.lock = p.dir / ".lock";
  p.checkpoint = p.dir / "checkpoint.safetensors";
  p.reanalysis = p.dir / "reanalysis";
  p.reanalysis_results = p.dir / "reanalysis.jsonl";
  p.reanalysis_lock = p.dir / ".reanalysis.lock";
  return p;
}

fs::path publish_path(const ExperimentArguments& a, const ExperimentPlan& plan) {
  return a.publish_dir.empty() ? fs::path("docs/results") / plan.name : fs::path(a.publish_dir);
}

// The `qtlab pretrain` arguments of a run (without --resume / --stop-at).
std::vector<std::string> pretrain_arguments(const ExperimentArguments& a, const PlannedRun& run,
                                            const RunPaths& paths) {
  std::vector<std::string> args = {"pretrain",
                                   "--model",
                                   run.preset,
                                   "--seed",
                                   std::to_string(run.seed),
                                   "--steps",
                                   std::to_string(run.steps),
                                   "--run-dir",
                                   paths.dir.string(),
                                   "--threads",
                                   std::to_string(a.threads_per_run)};
  for (const auto& [key, value] : run.set) {
    args.push_back("--set");
    args.push_back(key + "=" + value);
  }
  return args;
}

// The run's configuration as `qtlab pretrain` will resolve it: checks every config key of the
// plan before anything starts (a misspelt key fails here, not hours later).
void check_run_config(const ExperimentArguments& a, const PlannedRun& run, const RunPaths& paths) {
  try {
    qt::models::RunConfig config = qt::models::preset(run.preset);
    qt::models::set_value(config, "train.seed", std::to_string(run.seed));
    qt::models::set_value(config, "train.steps", std::to_string(run.steps));
    qt::models::set_value(config, "train.run_dir", paths.dir.string());
    for (const auto& [key, value] : run.set) qt::models::set_value(config, key, value);
    qt::models::validate(config);
  } catch (const std::exception& e) {
    qt::fail("experiment: run '{}': {}", run.name, e.what());
  }
}

// The step of the run's training checkpoint, or -1 when it has none.
int64_t checkpoint_step(const RunPaths& paths) {
  if (!fs::exists(paths.checkpoint)) return -1;
  const auto metadata = qt::load_safetensors_metadata(paths.checkpoint.string());
  const auto it = metadata.find("training.step");
  QT_CHECK(it != metadata.end(), "experiment: {} has no training.step (not a training checkpoint)",
           paths.checkpoint.string());
  return std::stoll(it->second);
}

void write_stage(const RunPaths& paths, const std::string& stage, int64_t step) {
  qt::write_text_atomically(
      paths.stage.string(),
      json({{"stage", stage}, {"step", step}, {"since", now_seconds()}, {"pid", ::getpid()}})
              .dump() +
          "\n");
}

void log_line(const RunPaths& paths, const std::string& text) {
  std::ofstream log(paths.log, std::ios::app);
  log << "== " << text << "\n";
}

// Runs this binary with `args` as a child process, its output appended to `log`; returns its exit
// status (128 + signal when killed). The child dies with its parent (PR_SET_PDEATHSIG).
int run_stage(const std::vector<std::string>& args, const fs::path& log,
              const fs::path& stdout_file = {}) {
  std::string command = "qtlab";
  for (const std::string& arg : args) command += " " + arg;
  {
    std::ofstream out(log, std::ios::app);
    out << "== " << command << "\n";
  }
  const pid_t parent = ::getpid();
  const pid_t pid = ::fork();
  QT_CHECK(pid >= 0, "experiment: fork failed: {}", std::strerror(errno));
  if (pid == 0) {
    ::prctl(PR_SET_PDEATHSIG, SIGTERM);
    if (::getppid() != parent) ::_exit(126);  // the parent died before prctl took effect
    const int log_fd = ::open(log.c_str(), O_WRONLY | O_CREAT | O_APPEND, 0644);
    const int out_fd = stdout_file.empty()
                           ? log_fd
                           : ::open(stdout_file.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
    const int null_fd = ::open("/dev/null", O_RDONLY);
    if (log_fd < 0 || out_fd < 0 || null_fd < 0) ::_exit(125);
    ::dup2(null_fd, 0);
    ::dup2(out_fd, 1);
    ::dup2(log_fd, 2);
    std::vector<char*> argv;
    std::string program = "qtlab";
    argv.push_back(program.data());
    std::vector<std::string> copies = args;
    for (std::string& arg : copies) argv.push_back(arg.data());
    argv.push_back(nullptr);
    ::execv("/proc/self/exe", argv.data());
    ::_exit(127);
  }
  int status = 0;
  while (::waitpid(pid, &status, 0) < 0) {
    QT_CHECK(errno == EINTR, "experiment: waitpid failed: {}", std::strerror(errno));
  }
  return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
}

void check_stage(int status, const std::string& what, const PlannedRun& run, const RunPaths& p) {
  QT_CHECK(status == 0, "experiment: run '{}': {} failed (exit status {}); its output is in {}",
           run.name, what, status, p.log.string());
}

// The result records of the run's results file for evaluation step `step`.
struct StepRecords {
  bool training = false, analysis = false;
  std::set<std::string> quantized;  // spec texts
};

std::map<int64_t, StepRecords> recorded_steps(const std::vector<json>& records) {
  std::map<int64_t, StepRecords> out;
  for (const json& r : records) {
    if (!r.contains("step") || !r.contains("kind")) continue;
    StepRecords& s = out[r["step"].get<int64_t>()];
    const std::string kind = r["kind"].get<std::string>();
    if (kind == "training") s.training = true;
    if (kind == "analysis") s.analysis = true;
    if (kind == "quantize" && r.contains("spec")) s.quantized.insert(r["spec"].get<std::string>());
  }
  return out;
}

bool step_complete(const PlannedRun& run, const StepRecords& s) {
  if (!s.training || !s.analysis) return false;
  for (const auto& spec : run.sweep)
    if (s.quantized.count(spec.text) == 0) return false;
  return true;
}

// The float GEMM kernel training runs on here ("openblas", or "own avx512 12x32"): its blocking
// fixes the order of every sum, so a trajectory is reproduced bit for bit only on the same one.
std::string float_gemm_kernel() {
  const qt::blas::Backend backend = qt::blas::backend();
  std::string out(qt::blas::backend_name(backend));
  if (backend == qt::blas::Backend::own) out += " " + std::string(qt::blas::own_kernel_name());
  return out;
}

// The quantities that identify a record: which plan, run, variant, seed and step it belongs to.
json record_identity(const ExperimentPlan& plan, const PlannedRun& run, int64_t step,
                     const std::string& kind) {
  return {{"plan", plan.name},
          {"run", run.name},
          {"group", run.group},
          {"variant", run.variant},
          {"seed", run.seed},
          {"step", step},
          {"steps", run.steps},
          {"kind", kind},
          {"qtlab_version", std::string(qt::qtlab_version())},
          {"float_gemm", float_gemm_kernel()}};
}

// The metrics.jsonl record of `step` (the validation at a stop step is always logged).
json training_record(const RunPaths& p, int64_t step) {
  json found;
  for (const json& r : read_json_lines(p.dir / "metrics.jsonl"))
    if (r.contains("step") && r["step"].get<int64_t>() == step) found = r;
  QT_CHECK(!found.is_null(), "experiment: {} has no record of step {}",
           (p.dir / "metrics.jsonl").string(), step);
  return found;
}

// analysis.json without the plot data (histogram, one attention matrix): the metrics, outlier
// positions, delimiter attention and gate statistics, a few kB.
json analysis_summary(const fs::path& analysis_file) {
  json analysis = json::parse(read_text(analysis_file), nullptr, false);
  QT_CHECK(!analysis.is_discarded() && analysis.is_object(), "experiment: {} is not valid JSON",
           analysis_file.string());
  analysis.erase("histogram");
  analysis.erase("attention_matrix");
  analysis.erase("checkpoint");
  return analysis;
}

std::string json_lines_text(const std::vector<json>& records) {
  std::string text;
  for (const json& r : records) text += r.dump() + "\n";
  return text;
}

fs::path published_results_path(const ExperimentArguments& a, const ExperimentPlan& plan,
                                const PlannedRun& run) {
  return publish_path(a, plan) / (run.name + ".jsonl");
}

// Writes the run's results file and publishes it. `published` holds what the published file held
// when the worker started (see adopt_published_step): its steps that the run has not reached
// again stay in the published file, so that retraining a run on a new machine never drops a
// measurement from docs/results/ before it has been made again.
void write_results(const RunPaths& p, const std::vector<json>& records,
                   const std::vector<json>& published, const ExperimentArguments& a,
                   const ExperimentPlan& plan, const PlannedRun& run) {
  qt::write_text_atomically(p.results.string(), json_lines_text(records));
  if (a.no_publish) return;
  std::set<int64_t> steps;
  for (const json& r : records)
    if (r.contains("step")) steps.insert(r["step"].get<int64_t>());
  std::vector<json> out = records;
  for (const json& r : published)
    if (r.contains("step") && steps.count(r["step"].get<int64_t>()) == 0) out.push_back(r);
  std::stable_sort(out.begin(), out.end(), [](const json& x, const json& y) {
    return x.value("step", int64_t{0}) < y.value("step", int64_t{0});
  });
  fs::create_directories(publish_path(a, plan));
  qt::write_text_atomically(published_results_path(a, plan, run).string(), json_lines_text(out));
}

// Hard-links the checkpoint as the snapshot of `step` (the trainer replaces checkpoint files by
// rename, so the linked inode keeps this step's state); copies where links are not possible.
void take_snapshot(const RunPaths& p, int64_t step) {
  fs::create_directories(p.snapshots);
  const fs::path target = p.snapshot(step);
  const fs::path temporary = target.string() + ".tmp";
  fs::remove(temporary);
  std::error_code error;
  fs::create_hard_link(p.checkpoint, temporary, error);
  if (error) fs::copy_file(p.checkpoint, temporary);
  fs::rename(temporary, target);
}

// Trains the run to `step` (resuming from its checkpoint) and snapshots it, unless the snapshot
// exists.
void train_to_step(const ExperimentArguments& a, const PlannedRun& run, const RunPaths& p,
                   int64_t step) {
  const fs::path snapshot = p.snapshot(step);
  if (!fs::exists(snapshot)) {
    int64_t at = checkpoint_step(p);
    QT_CHECK(at <= step,
             "experiment: run '{}': its checkpoint is at step {}, past evaluation step {}, and "
             "{} does not exist; that evaluation cannot be made (delete {} to retrain the run)",
             run.name, at, step, snapshot.string(), p.dir.string());
    if (at < step) {
      write_stage(p, "train", step);
      std::vector<std::string> args = pretrain_arguments(a, run, p);
      if (at >= 0) args.push_back("--resume");
      args.insert(args.end(), {"--stop-at", std::to_string(step)});
      check_stage(run_stage(args, p.log), fmt::format("training to step {}", step), run, p);
      at = checkpoint_step(p);
      QT_CHECK(at == step, "experiment: run '{}': training stopped at step {}, not {}", run.name,
               at, step);
    }
    take_snapshot(p, step);
  }
}

// Adoption: a run retrained from scratch (a new machine starts with an empty runs/) reaches
// evaluation steps whose results are already published, measured by an earlier driver on the
// same plan. Training is bit-identical for the same seed, config and thread count, so when the
// retrained run's logged training record at `step` (loss, gradient norm, validation loss) equals
// the published one bit for bit, the checkpoint is the one that was evaluated and its evaluation
// (about as long as the training that led to it) need not be repeated: the published records of
// the step are taken over, marked "adopted": true. When the records differ, the published results
// came from another trajectory (another build's arithmetic, another thread count) and mixing them
// with new ones would be wrong: the driver stops and says so. Returns whether the step was adopted.
//
// --adopt-unreproduced relaxes this for a run retrained on another machine (another float GEMM
// kernel, so another rounding of the same computation): the published evaluation is adopted
// although the training records differ, and each adopted record says so ("reproduced": false,
// with this machine's training record beside the published one). Such a run's results file then
// holds two trajectories of one seed; the records name which is which.
bool adopt_published_step(const ExperimentArguments& a, const ExperimentPlan& plan,
                          const PlannedRun& run, const RunPaths& p, int64_t step,
                          const std::vector<json>& published, std::vector<json>& records) {
  std::vector<json> mine;
  for (const json& r : published)
    if (r.contains("step") && r["step"].get<int64_t>() == step) mine.push_back(r);
  const auto recorded = recorded_steps(mine);
  const auto it = recorded.find(step);
  if (it == recorded.end() || !step_complete(run, it->second)) return false;
  const json logged = training_record(p, step);
  std::string difference;  // the first training quantity that differs, or ""
  for (const json& r : mine) {
    if (r.value("kind", std::string()) != "training" || !difference.empty()) continue;
    const json& before = r.at("metrics");
    for (const char* key : {"loss", "grad_norm", "val_loss"}) {
      if (before.contains(key) && logged.contains(key) && before[key] == logged[key]) continue;
      difference = fmt::format(
          "its {} is {} but the published results say {} (published on float GEMM '{}', "
          "retrained on '{}')",
          key, logged.contains(key) ? logged[key].dump() : "missing",
          before.contains(key) ? before[key].dump() : "missing",
          r.value("float_gemm", std::string("not recorded")), float_gemm_kernel());
      break;
    }
  }
  QT_CHECK(difference.empty() || a.adopt_unreproduced,
           "experiment: run '{}': retrained to step {}, {}: they were measured on another "
           "trajectory (another machine's GEMM kernel, build or thread count). Rerun with "
           "--no-adopt to evaluate this run afresh and replace them, or with "
           "--adopt-unreproduced to keep them, marked as not reproduced",
           run.name, step, difference);
  for (json r : mine) {
    r["adopted"] = true;
    if (!difference.empty()) {
      r["reproduced"] = false;
      if (r.value("kind", std::string()) == "training") r["retrained_metrics"] = logged;
    }
    records.push_back(std::move(r));
  }
  log_line(p, difference.empty()
                  ? fmt::format("step {}: training reproduced the published record bit for bit; "
                                "its published evaluation is adopted",
                                step)
                  : fmt::format("step {}: retrained, {}; the published evaluation is adopted "
                                "anyway (--adopt-unreproduced), marked \"reproduced\": false",
                                step, difference));
  return true;
}

// One evaluation step: train to it (or find its snapshot), quantize the sweep, analyse, record.
void evaluate_step(const ExperimentArguments& a, const ExperimentPlan& plan, const PlannedRun& run,
                   const RunPaths& p, int64_t step, const std::vector<json>& published,
                   std::vector<json>& records) {
  train_to_step(a, run, p, step);
  std::erase_if(records, [step](const json& r) {
    return r.contains("step") && r["step"].get<int64_t>() == step;
  });
  if (adopt_published_step(a, plan, run, p, step, published, records)) {
    write_results(p, records, published, a, plan, run);
    return;
  }
  const fs::path snapshot = p.snapshot(step);
  const fs::path eval_dir = p.eval_dir(step);
  fs::create_directories(eval_dir);
  const double started = now_seconds();

  // 1. quantize: FP and every bit width of the sweep, on the full validation split
  const fs::path sweep_file = eval_dir / "quantize-sweep.jsonl";
  std::vector<json> sweep = read_json_lines(sweep_file);
  if (sweep.size() != run.sweep.size()) {
    write_stage(p, "quantize", step);
    check_stage(run_stage({"quantize", "--checkpoint", snapshot.string(), "--sweep",
                           qt::tools::sweep_argument(run), "--calib-batches",
                           std::to_string(run.calibration_batches), "--threads",
                           std::to_string(a.threads_per_run), "--results-out", sweep_file.string()},
                          p.log),
                fmt::format("quantizing step {}", step), run, p);
    sweep = read_json_lines(sweep_file);
    QT_CHECK(sweep.size() == run.sweep.size(), "experiment: {} holds {} results, expected {}",
             sweep_file.string(), sweep.size(), run.sweep.size());
  }
  // 2. analyze: the outlier metrics, positions, delimiter attention, gates
  const fs::path analysis_file = eval_dir / "analysis.json";
  if (!fs::exists(analysis_file)) {
    write_stage(p, "analyze", step);
    check_stage(run_stage({"analyze", "--checkpoint", snapshot.string(), "--batches",
                           std::to_string(run.analyze_batches), "--threads",
                           std::to_string(a.threads_per_run), "--out", eval_dir.string()},
                          p.log),
                fmt::format("analysing step {}", step), run, p);
  }

  // 3. record (whatever the results held for this step was removed above)
  json training = record_identity(plan, run, step, "training");
  training["metrics"] = training_record(p, step);
  training["evaluation_seconds"] = now_seconds() - started;
  records.push_back(training);
  for (json& q : sweep) {
    json record = record_identity(plan, run, step, "quantize");
    record["spec"] = q["spec"];
    q.erase("checkpoint");
    record["result"] = q;
    records.push_back(record);
  }
  json analysis = record_identity(plan, run, step, "analysis");
  analysis["analysis"] = analysis_summary(analysis_file);
  records.push_back(analysis);
  write_results(p, records, published, a, plan, run);
  log_line(p, fmt::format("step {} evaluated and recorded in {}", step, p.results.string()));
}

// Holds an exclusive lock file for the holder's lifetime: a second driver on the same run (or a
// second re-analysis of it) refuses with the first one's PID instead of writing beside it. `what`
// names the work in the message ("run 'x'").
class RunLock {
 public:
  RunLock(const fs::path& lock, const std::string& what) {
    fd_ = ::open(lock.c_str(), O_RDWR | O_CREAT, 0644);
    QT_CHECK(fd_ >= 0, "experiment: cannot open {}: {}", lock.string(), std::strerror(errno));
    if (::flock(fd_, LOCK_EX | LOCK_NB) != 0) {
      const std::string holder = read_text(lock);
      ::close(fd_);
      qt::fail("experiment: {} is being run by another process (pid {}); {}", what,
               holder.empty() ? "?" : holder, lock.string());
    }
    const std::string pid = std::to_string(::getpid());
    if (::ftruncate(fd_, 0) == 0 && ::write(fd_, pid.data(), pid.size()) < 0) {
    }
  }
  ~RunLock() { ::close(fd_); }
  RunLock(const RunLock&) = delete;
  RunLock& operator=(const RunLock&) = delete;

 private:
  int fd_ = -1;
};

// A worker process: takes one run through all its evaluation steps.
int run_worker(const ExperimentArguments& a, const ExperimentPlan& plan, const PlannedRun& run) {
  const RunPaths p = run_paths(a, plan, run);
  try {
    fs::create_directories(p.dir);
    RunLock lock(p.lock, fmt::format("run '{}'", run.name));
    std::vector<json> records = read_json_lines(p.results);
    const std::vector<json> published = a.no_publish || a.no_adopt
                                            ? std::vector<json>{}
                                            : read_json_lines(published_results_path(a, plan, run));
    const auto recorded = recorded_steps(records);
    for (const int64_t step : run.evaluate_at) {
      const auto it = recorded.find(step);
      if (it != recorded.end() && step_complete(run, it->second)) continue;
      evaluate_step(a, plan, run, p, step, published, records);
    }
    write_stage(p, "done", run.steps);
    return 0;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "experiment: %s\n", e.what());
    try {
      log_line(p, std::string("failed: ") + e.what());
      write_stage(p, "failed", -1);
    } catch (...) {
    }
    return 1;
  }
}

// The analysis version of an analysis object (1 when it names none).
int analysis_version(const json& analysis) {
  return analysis.is_object() ? analysis.value("version", 1) : 0;
}

// --reanalyze for one run (see the top of this file). Prints one line; throws on failure.
void reanalyze_run(const ExperimentArguments& a, const ExperimentPlan& plan,
                   const PlannedRun& run) {
  const RunPaths p = run_paths(a, plan, run);
  std::vector<std::string> analysed, current, missing;
  if (fs::exists(p.snapshots)) {
    RunLock lock(p.reanalysis_lock, fmt::format("the re-analysis of run '{}'", run.name));
    std::vector<json> records = read_json_lines(p.reanalysis_results);
    const fs::path log = p.reanalysis / "log.txt";
    RunPaths log_paths = p;  // failures name the re-analysis log
    log_paths.log = log;
    for (const int64_t step : run.evaluate_at) {
      const fs::path snapshot = p.snapshot(step);
      if (!fs::exists(snapshot)) {
        missing.push_back(std::to_string(step));
        continue;
      }
      const bool up_to_date = std::any_of(records.begin(), records.end(), [&](const json& r) {
        return r.value("step", int64_t{-1}) == step && r.value("kind", "") == "analysis" &&
               analysis_version(r.value("analysis", json())) >= qt::quant::kAnalysisVersion;
      });
      if (up_to_date) {
        current.push_back(std::to_string(step));
        continue;
      }
      const fs::path out = p.reanalysis / fmt::format("step-{}", step);
      const fs::path analysis_file = out / "analysis.json";
      fs::create_directories(out);
      // An analysis.json of this version left by an interrupted re-analysis is reused.
      const bool have = fs::exists(analysis_file) &&
                        analysis_version(json::parse(read_text(analysis_file), nullptr, false)) >=
                            qt::quant::kAnalysisVersion;
      if (!have)
        check_stage(run_stage({"analyze", "--checkpoint", snapshot.string(), "--batches",
                               std::to_string(run.analyze_batches), "--threads",
                               std::to_string(a.threads_per_run), "--out", out.string()},
                              log),
                    fmt::format("re-analysing step {}", step), run, log_paths);
      std::erase_if(records,
                    [step](const json& r) { return r.value("step", int64_t{-1}) == step; });
      json record = record_identity(plan, run, step, "analysis");
      record["reanalysis"] = true;
      record["analysis"] = analysis_summary(analysis_file);
      records.push_back(record);
      std::stable_sort(records.begin(), records.end(), [](const json& x, const json& y) {
        return x.value("step", int64_t{0}) < y.value("step", int64_t{0});
      });
      // Written after every step, as the evaluations are: nothing measured is lost.
      std::string text;
      for (const json& r : records) text += r.dump() + "\n";
      qt::write_text_atomically(p.reanalysis_results.string(), text);
      if (!a.no_publish) {
        const fs::path published = publish_path(a, plan);
        fs::create_directories(published);
        qt::write_text_atomically((published / (run.name + ".reanalysis.jsonl")).string(), text);
      }
      analysed.push_back(std::to_string(step));
    }
  }
  const auto steps = [](const std::vector<std::string>& list) {
    return list.empty() ? std::string("none") : fmt::format("{}", fmt::join(list, ", "));
  };
  std::printf(
      "  %-28s re-analysed: %s; already current: %s; no snapshot: %s\n", run.name.c_str(),
      steps(analysed).c_str(), steps(current).c_str(),
      steps(missing.empty() && !fs::exists(p.snapshots) ? std::vector<std::string>{"any step"}
                                                        : missing)
          .c_str());
  std::fflush(stdout);
}

void reanalyze(const ExperimentArguments& a, const ExperimentPlan& plan,
               const std::vector<size_t>& runs) {
  std::printf("plan %s: re-analysing the snapshots of %zu runs (analysis version %d)\n",
              plan.name.c_str(), runs.size(), qt::quant::kAnalysisVersion);
  std::vector<std::string> failed;
  for (const size_t i : runs) {
    try {
      reanalyze_run(a, plan, plan.runs[i]);
    } catch (const std::exception& e) {
      std::fprintf(stderr, "experiment: %s\n", e.what());
      failed.push_back(plan.runs[i].name);
    }
  }
  QT_CHECK(failed.empty(), "experiment: the re-analysis of {} run(s) failed: {}", failed.size(),
           fmt::join(failed, ", "));
}

// What a run has done so far, read from its files.
struct RunProgress {
  int64_t evaluations_done = 0;
  int64_t trained_step = 0;  // the last logged training step
  std::string stage = "queued";
  int64_t stage_step = 0;
  double stage_since = 0;
  double tokens_per_s = 0;
};

RunProgress run_progress(const ExperimentArguments& a, const ExperimentPlan& plan,
                         const PlannedRun& run) {
  const RunPaths p = run_paths(a, plan, run);
  RunProgress out;
  const auto recorded = recorded_steps(read_json_lines(p.results));
  for (const int64_t step : run.evaluate_at) {
    const auto it = recorded.find(step);
    if (it != recorded.end() && step_complete(run, it->second)) ++out.evaluations_done;
  }
  const std::vector<json> metrics = read_json_lines(p.dir / "metrics.jsonl");
  if (!metrics.empty()) {
    out.trained_step = metrics.back().value("step", int64_t{0});
    out.tokens_per_s = metrics.back().value("tokens_per_s", 0.0);
  }
  if (fs::exists(p.stage)) {
    const json stage = json::parse(read_text(p.stage), nullptr, false);
    if (stage.is_object()) {
      out.stage = stage.value("stage", std::string("?"));
      out.stage_step = stage.value("step", int64_t{0});
      out.stage_since = stage.value("since", 0.0);
    }
  }
  if (out.evaluations_done == static_cast<int64_t>(run.evaluate_at.size())) out.stage = "done";
  return out;
}

// The training rate (steps per second) observed for a run while the driver watches it.
struct RateWatch {
  double t0 = 0;
  int64_t s0 = -1;
  double rate = 0;
};

std::string progress_line(const PlannedRun& run, const RunProgress& r, const RateWatch& w) {
  const double now = now_seconds();
  std::string what;
  if (r.stage == "train")
    what = fmt::format("training step {}/{} (next evaluation at {}), {:.0f} tok/s, {:.3f} step/s",
                       r.trained_step, run.steps, r.stage_step, r.tokens_per_s, w.rate);
  else if (r.stage == "quantize" || r.stage == "analyze")
    what = fmt::format("{} step {} for {}", r.stage == "quantize" ? "quantizing" : "analysing",
                       r.stage_step, duration_text(now - r.stage_since));
  else
    what = r.stage;
  std::string eta;
  if (w.rate > 0 && r.stage != "done")
    eta = fmt::format(", training eta {}",
                      duration_text(static_cast<double>(run.steps - r.trained_step) / w.rate));
  return fmt::format("  {:<28} evaluations {}/{}  {}{}", run.name, r.evaluations_done,
                     run.evaluate_at.size(), what, eta);
}

std::vector<size_t> selected_runs(const ExperimentArguments& a, const ExperimentPlan& plan) {
  std::vector<size_t> out;
  for (size_t i = 0; i < plan.runs.size(); ++i) {
    bool chosen = a.only.empty();
    for (const std::string& pattern : a.only)
      chosen = chosen || ::fnmatch(pattern.c_str(), plan.runs[i].name.c_str(), 0) == 0;
    if (chosen) out.push_back(i);
  }
  QT_CHECK(!out.empty(), "experiment: no run of plan '{}' matches --only {}", plan.name,
           fmt::join(a.only, " "));
  return out;
}

void print_status(const ExperimentArguments& a, const ExperimentPlan& plan,
                  const std::vector<size_t>& runs) {
  std::printf("plan %s: %zu runs\n", plan.name.c_str(), runs.size());
  for (const size_t i : runs)
    std::printf("%s\n",
                progress_line(plan.runs[i], run_progress(a, plan, plan.runs[i]), {}).c_str());
}

void run_experiment(const ExperimentArguments& a) {
  QT_CHECK(!qt::distributed::active(),
           "experiment: run the driver as one process (not under mpirun); its runs are "
           "processes of their own");
  QT_CHECK(a.parallel >= 1, "experiment: --parallel must be >= 1, got {}", a.parallel);
  QT_CHECK(a.threads_per_run >= 1, "experiment: --threads-per-run must be >= 1, got {}",
           a.threads_per_run);
  QT_CHECK(!(a.no_adopt && a.adopt_unreproduced),
           "experiment: --no-adopt and --adopt-unreproduced exclude each other");
  QT_CHECK(a.progress_seconds >= 1, "experiment: --progress-every must be >= 1, got {}",
           a.progress_seconds);
  const ExperimentPlan plan = qt::tools::load_experiment_plan(a.plan_file);
  const std::vector<size_t> runs = selected_runs(a, plan);
  for (const size_t i : runs) check_run_config(a, plan.runs[i], run_paths(a, plan, plan.runs[i]));
  if (a.status) return print_status(a, plan, runs);
  if (a.reanalyze && !a.dry_run) return reanalyze(a, plan, runs);
  if (a.dry_run) {
    std::printf("plan %s: %zu runs, %d in parallel, %d thread(s) each\n", plan.name.c_str(),
                runs.size(), a.parallel, a.threads_per_run);
    for (const size_t i : runs) {
      const PlannedRun& run = plan.runs[i];
      const RunPaths p = run_paths(a, plan, run);
      std::printf("  %s (%s / %s, seed %llu): qtlab %s --stop-at N for N in %s; sweep %s\n",
                  run.name.c_str(), run.group.c_str(), run.variant.c_str(),
                  static_cast<unsigned long long>(run.seed),
                  fmt::format("{}", fmt::join(pretrain_arguments(a, run, p), " ")).c_str(),
                  fmt::format("{}", fmt::join(run.evaluate_at, ",")).c_str(),
                  qt::tools::sweep_argument(run).c_str());
    }
    return;
  }
  if (!a.no_publish) {
    const fs::path out = publish_path(a, plan);
    fs::create_directories(out);
    qt::write_text_atomically((out / "plan.json").string(), read_text(a.plan_file));
  }
  std::printf("plan %s: %zu runs, %d in parallel, %d thread(s) each; runs in %s\n",
              plan.name.c_str(), runs.size(), a.parallel, a.threads_per_run,
              (fs::path(a.runs_dir) / plan.name).string().c_str());
  std::fflush(stdout);

  std::vector<size_t> queue;
  for (const size_t i : runs)
    if (run_progress(a, plan, plan.runs[i]).stage != "done") queue.push_back(i);
  const size_t already_done = runs.size() - queue.size();
  std::map<pid_t, size_t> active;  // worker pid -> run index
  std::map<size_t, RateWatch> watches;
  std::vector<std::string> failed;
  size_t next = 0, finished = 0;
  const double start = now_seconds();
  double last_report = start;  // the first report after --progress-every seconds
  while (next < queue.size() || !active.empty()) {
    while (next < queue.size() && static_cast<int>(active.size()) < a.parallel) {
      const size_t index = queue[next++];
      std::fflush(stdout);
      std::fflush(stderr);
      const pid_t pid = ::fork();
      QT_CHECK(pid >= 0, "experiment: fork failed: {}", std::strerror(errno));
      if (pid == 0) {
        ::prctl(PR_SET_PDEATHSIG, SIGTERM);
        ::_exit(run_worker(a, plan, plan.runs[index]));
      }
      active[pid] = index;
      std::printf("[%s] started %s\n", duration_text(now_seconds() - start).c_str(),
                  plan.runs[index].name.c_str());
      std::fflush(stdout);
    }
    int status = 0;
    const pid_t done = ::waitpid(-1, &status, WNOHANG);
    if (done > 0 && active.count(done) == 1) {
      const size_t index = active[done];
      active.erase(done);
      ++finished;
      const bool ok = WIFEXITED(status) && WEXITSTATUS(status) == 0;
      if (!ok) failed.push_back(plan.runs[index].name);
      std::printf("[%s] %s %s (%zu of %zu runs finished or failed)\n",
                  duration_text(now_seconds() - start).c_str(), plan.runs[index].name.c_str(),
                  ok ? "finished" : "FAILED, see its log.txt", finished + already_done,
                  runs.size());
      std::fflush(stdout);
      continue;
    }
    const double now = now_seconds();
    if (now - last_report >= a.progress_seconds) {
      last_report = now;
      double remaining_seconds = 0;
      bool known = true;
      std::map<std::string, double> preset_rate;  // steps/s observed per preset
      std::vector<std::string> lines;
      for (const auto& [pid, index] : active) {
        const PlannedRun& run = plan.runs[index];
        const RunProgress r = run_progress(a, plan, run);
        RateWatch& w = watches[index];
        if (r.stage == "train") {
          if (w.s0 < 0 || r.trained_step < w.s0) {
            w.t0 = now;
            w.s0 = r.trained_step;
          } else if (now > w.t0 + 30 && r.trained_step > w.s0) {
            w.rate = static_cast<double>(r.trained_step - w.s0) / (now - w.t0);
          }
        }
        if (w.rate > 0) preset_rate[run.preset] = w.rate;
        lines.push_back(progress_line(run, r, w));
        if (w.rate > 0)
          remaining_seconds += static_cast<double>(run.steps - r.trained_step) / w.rate;
        else
          known = false;
      }
      for (size_t q = next; q < queue.size(); ++q) {
        const PlannedRun& run = plan.runs[queue[q]];
        const auto it = preset_rate.find(run.preset);
        if (it == preset_rate.end()) {
          known = false;
          continue;
        }
        remaining_seconds +=
            static_cast<double>(run.steps - run_progress(a, plan, run).trained_step) / it->second;
      }
      const std::string eta = known ? duration_text(remaining_seconds / a.parallel)
                              : remaining_seconds > 0
                                  ? fmt::format("> {} (not every run's rate is measured yet)",
                                                duration_text(remaining_seconds / a.parallel))
                                  : std::string("not known yet (no training rate measured)");
      std::printf(
          "[%s] plan %s: %zu done, %zu running, %zu queued; training eta %s, evaluations "
          "extra\n",
          duration_text(now - start).c_str(), plan.name.c_str(), finished + already_done,
          active.size(), queue.size() - next, eta.c_str());
      for (const std::string& line : lines) std::printf("%s\n", line.c_str());
      std::fflush(stdout);
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(500));
  }
  QT_CHECK(failed.empty(),
           "experiment: {} run(s) failed: {} (their log.txt says why; rerun the "
           "same command to retry)",
           failed.size(), fmt::join(failed, ", "));
  std::printf("plan %s: all %zu runs done in %s; results in %s\n", plan.name.c_str(), runs.size(),
              duration_text(now_seconds() - start).c_str(),
              a.no_publish ? (fs::path(a.runs_dir) / plan.name).string().c_str()
                           : publish_path(a, plan).string().c_str());
}

}  // namespace

void add_experiment_command(CLI::App& app) {
  auto arguments = std::make_shared<ExperimentArguments>();
  CLI::App* cmd = app.add_subcommand(
      "experiment",
      "run an experiment plan (experiments/*.json): train, quantize and analyse every run at its "
      "evaluation steps; resumable");
  cmd->add_option("plan", arguments->plan_file, "the plan file (JSON)")->required();
  cmd->add_option("--runs-dir", arguments->runs_dir,
                  "where the run directories go: RUNS_DIR/<plan>/<run> (default runs)");
  cmd->add_option("--publish", arguments->publish_dir,
                  "where each run's results.jsonl is copied after every evaluation (default "
                  "docs/results/<plan>)");
  cmd->add_flag("--no-publish", arguments->no_publish, "keep the results in the run directories");
  cmd->add_flag("--no-adopt", arguments->no_adopt,
                "evaluate every step afresh, even where the published results hold it (by "
                "default a retrained run whose training reproduces a published step bit for bit "
                "takes over that step's published evaluation)");
  cmd->add_flag("--adopt-unreproduced", arguments->adopt_unreproduced,
                "adopt published evaluations even where the retrained run does not reproduce "
                "their training records bit for bit (a run retrained on a machine with another "
                "GEMM kernel); each such record is marked \"reproduced\": false");
  cmd->add_option("--parallel", arguments->parallel, "runs side by side (default 1)");
  cmd->add_option("--threads-per-run", arguments->threads_per_run,
                  "OpenMP threads of each run (default 1)");
  cmd->add_option("--only", arguments->only, "run names (shell patterns, repeatable)");
  cmd->add_option("--progress-every", arguments->progress_seconds,
                  "seconds between progress reports (default 60)");
  cmd->add_flag("--dry-run", arguments->dry_run, "check the plan and print what would run");
  cmd->add_flag("--status", arguments->status, "print each run's progress and exit");
  cmd->add_flag("--reanalyze", arguments->reanalyze,
                "recompute the analysis of every existing snapshot older than this build's "
                "analysis version (no training; beside a running driver is fine)");
  cmd->callback([arguments] { run_experiment(*arguments); });
}
