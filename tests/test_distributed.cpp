// Data-parallel training under MPI (optim/distributed.h, models/trainer.h), tested by running the
// real program under `mpirun`: 1 rank vs 2 ranks on the same global batch, a rank that crashes,
// and ranks started with different configurations. Skipped (with a message) when qtlab was built
// without MPI or mpirun is missing.
#include <doctest/doctest.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "optim/distributed.h"
#include "tests/test_util.h"

namespace {

bool mpi_available() {
  if (!qt::distributed::built_with_mpi()) return false;
  return qt::test::run_command("command -v mpirun").status == 0;
}

// mpirun as root (CI containers) needs these; --oversubscribe lets 2 ranks share fewer cores.
std::string mpirun(const std::string& arguments, const std::string& exports = "") {
  return "OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 OMPI_MCA_btl=self,vader "
         "timeout 180 mpirun --oversubscribe --bind-to none " +
         exports + " " + arguments;
}

// A tiny synthetic BERT without dropout (masks are per rank, see models/trainer.h).
std::string pretrain_arguments(const std::string& run_dir, const std::string& extra = "") {
  return std::string(QTLAB_BINARY) +
         " pretrain --quiet --threads 1 --model bert-mini --dataset synthetic --steps 8 "
         "--batch-size 8 --lr 3e-3 --run-dir " +
         run_dir +
         " --set model.layers=2 --set model.hidden=32 --set model.heads=2 --set model.ffn=64 "
         "--set model.vocab_size=64 --set model.max_length=16 --set model.hidden_dropout=0 "
         "--set model.attention_dropout=0 --set train.log_every=1 --set train.eval_every=4 "
         "--set train.eval_batches=4 " +
         extra;
}

std::vector<nlohmann::json> read_metrics(const std::filesystem::path& run_dir) {
  std::ifstream in(run_dir / "metrics.jsonl");
  std::vector<nlohmann::json> out;
  std::string line;
  while (std::getline(in, line)) out.push_back(nlohmann::json::parse(line));
  return out;
}

std::filesystem::path fresh(const std::string& name) {
  const std::filesystem::path dir = qt::test::scratch_directory("distributed") / name;
  std::filesystem::remove_all(dir);
  return dir;
}

}  // namespace

TEST_CASE("test_distributed: 1 and 2 ranks follow the same loss curve on the same global batch") {
  if (!mpi_available()) {
    MESSAGE("skipped: qtlab built without MPI or mpirun not installed");
    return;
  }
  const auto one = fresh("one"), two = fresh("two");
  const auto a = qt::test::run_command(mpirun("-np 1 " + pretrain_arguments(one.string())));
  REQUIRE_MESSAGE(a.status == 0, a.output);
  const auto b = qt::test::run_command(mpirun("-np 2 " + pretrain_arguments(two.string())));
  REQUIRE_MESSAGE(b.status == 0, b.output);
  const auto x = read_metrics(one), y = read_metrics(two);
  REQUIRE(x.size() == 8);
  REQUIRE(y.size() == 8);
  for (size_t i = 0; i < x.size(); ++i) {
    CAPTURE(i);
    CHECK(y[i]["loss"].get<double>() == doctest::Approx(x[i]["loss"].get<double>()).epsilon(1e-5));
    CHECK(y[i]["grad_norm"].get<double>() ==
          doctest::Approx(x[i]["grad_norm"].get<double>()).epsilon(1e-4));
  }
  // Validation is sharded over the ranks and all-reduced: the same number.
  CHECK(y.back()["val_loss"].get<double>() ==
        doctest::Approx(x.back()["val_loss"].get<double>()).epsilon(1e-5));
  // Only rank 0 writes: one metrics line per step, not two.
  CHECK(std::filesystem::exists(two / "model.safetensors"));
}

TEST_CASE("test_distributed: a crashed rank ends the run with an error, not a hang") {
  if (!mpi_available()) {
    MESSAGE("skipped: qtlab built without MPI or mpirun not installed");
    return;
  }
  const auto dir = fresh("crash");
  const auto r = qt::test::run_command(
      mpirun("-np 2 " + pretrain_arguments(dir.string()), "-x QTLAB_FAULT_INJECT=1:3"));
  CHECK(r.status != 0);
  CHECK(r.status != 124);  // not ended by the timeout
  CHECK_MESSAGE(r.output.find("simulated crash") != std::string::npos, r.output);
  // Nothing was finished: no final model.
  CHECK_FALSE(std::filesystem::exists(dir / "model.safetensors"));
}

TEST_CASE("test_distributed: ranks started with different configurations stop with an error") {
  if (!mpi_available()) {
    MESSAGE("skipped: qtlab built without MPI or mpirun not installed");
    return;
  }
  const auto dir = fresh("mismatch");
  const std::string command = "-np 1 " + pretrain_arguments(dir.string(), "--set train.seed=1") +
                              " : -np 1 " + pretrain_arguments(dir.string(), "--set train.seed=2");
  const auto r = qt::test::run_command(mpirun(command));
  CHECK(r.status != 0);
  CHECK(r.status != 124);
  CHECK_MESSAGE(r.output.find("differs between rank 0 and rank 1") != std::string::npos, r.output);
}
