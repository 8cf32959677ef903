// The training loop (models/trainer.h) on the built-in synthetic data: learning, resume
// bit-identity, gradient accumulation, run-directory files, NaN stop and error cases. The MPI
// side (1 vs 2 ranks, a dead rank, mismatched configs) is in test_distributed.cpp.
#include <doctest/doctest.h>

#include <sys/wait.h>
#include <unistd.h>

#include <cmath>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <functional>
#include <map>
#include <nlohmann/json.hpp>
#include <sstream>
#include <string>
#include <vector>

#include "data/tokenizer.h"
#include "models/model.h"
#include "models/run_data.h"
#include "models/trainer.h"
#include "nn/checkpoint.h"
#include "tensor/error.h"
#include "tensor/file_lock.h"
#include "tensor/safetensors.h"
#include "tensor/threads.h"
#include "tests/test_util.h"
#include "tests/tiny_run.h"

namespace {

using qt::models::RunConfig;

// A tiny model (tests/tiny_run.h) with a short, evaluated, checkpointed run.
RunConfig tiny_config(const std::string& family, const std::string& run_dir) {
  RunConfig c = qt::test::tiny_run_config(family);
  c.train.steps = 6;
  c.train.lr = 3e-3;
  c.train.log_every = 1;
  c.train.eval_every = 3;
  c.train.eval_batches = 2;
  c.train.checkpoint_every = 3;
  c.train.run_dir = run_dir;
  return c;
}

std::string run_directory(const std::string& name) {
  const std::filesystem::path dir = qt::test::scratch_directory("trainer") / name;
  std::filesystem::remove_all(dir);
  return dir.string();
}

using qt::test::OneThread;

qt::models::TrainOptions quiet() {
  qt::models::TrainOptions options;
  options.progress = false;
  return options;
}

std::vector<nlohmann::json> read_metrics(const std::string& run_dir) {
  std::ifstream in(std::filesystem::path(run_dir) / "metrics.jsonl");
  std::vector<nlohmann::json> out;
  std::string line;
  while (std::getline(in, line)) out.push_back(nlohmann::json::parse(line));
  return out;
}

// Every tensor of two safetensors files has the same name, shape and bytes; metadata other than
// the config (which names the run directory) is equal too.
void check_same_tensors(const std::string& a_path, const std::string& b_path) {
  const qt::SafeTensors a = qt::load_safetensors(a_path), b = qt::load_safetensors(b_path);
  REQUIRE(a.tensors.size() == b.tensors.size());
  for (size_t i = 0; i < a.tensors.size(); ++i) {
    CAPTURE(a.tensors[i].first);
    REQUIRE(a.tensors[i].first == b.tensors[i].first);
    const qt::Tensor& x = a.tensors[i].second;
    const qt::Tensor& y = b.tensors[i].second;
    REQUIRE(x.shape() == y.shape());
    REQUIRE(x.dtype() == y.dtype());
    CHECK(std::memcmp(x.raw_data(), y.raw_data(), x.numel() * qt::dtype_size(x.dtype())) == 0);
  }
  for (const auto& [key, value] : a.metadata)
    if (key != "config") CHECK(b.metadata.at(key) == value);
}

}  // namespace

TEST_CASE("test_trainer: synthetic Markov text has the advertised successor structure") {
  // Independent check of the generator: every token is followed by at most 4 distinct tokens,
  // and the empirical conditional entropy is below the chain's 1.28 nats.
  const qt::data::TokenBlocks blocks = qt::models::synthetic_token_blocks(400, 32, 40, 7, false);
  std::map<int32_t, std::map<int32_t, int>> counts;
  for (int64_t b = 0; b < blocks.num_blocks(); ++b) {
    const auto block = blocks.block(b);
    for (size_t t = 0; t + 1 < block.size(); ++t) {
      CHECK(block[t] >= qt::data::kFirstByteId);
      CHECK(block[t] < 40);
      ++counts[block[t]][block[t + 1]];
    }
  }
  double entropy = 0, total = 0;
  for (const auto& [token, next] : counts) {
    CHECK(next.size() <= 4);
    double n = 0;
    for (const auto& [_, c] : next) n += c;
    for (const auto& [_, c] : next) entropy -= c * std::log(c / n);
    total += n;
  }
  CHECK(entropy / total < 1.29);
}

TEST_CASE("test_trainer: BERT and OPT learn the synthetic text; files of the run directory") {
  OneThread one_thread;
  for (const std::string family : {"bert", "opt"}) {
    CAPTURE(family);
    RunConfig config = tiny_config(family, run_directory("learn-" + family));
    config.train.steps = 400;
    config.train.batch_size = 16;
    config.train.log_every = 10;
    config.train.eval_every = 400;
    config.train.eval_batches = 8;
    config.train.lr = family == "opt" ? 1e-2 : 3e-3;
    config.model.hidden_dropout = 0.0;
    config.model.attention_dropout = 0.0;
    const qt::models::TrainResult result = qt::models::pretrain(config, quiet());
    CHECK(result.steps == 400);
    // Untrained, the loss is about ln(V) = 4.16, and a model that ignores the context cannot beat
    // the unigram entropy (close to ln(58) = 4.06 here); one that has learnt the successor table
    // approaches the chain's entropy (<= 1.28 nats). OPT sees the previous token directly; BERT
    // must recover a masked token from its neighbours with ~2 labels per sequence, so it learns
    // more slowly. Require a fall well below the context-free floor.
    const std::vector<nlohmann::json> metrics = read_metrics(config.train.run_dir);
    REQUIRE(metrics.size() == 40);
    CHECK(metrics.front()["loss"].get<double>() > 3.9);
    CHECK(result.validation.loss < (family == "opt" ? 2.0 : 3.8));
    CHECK(result.validation.perplexity == doctest::Approx(std::exp(result.validation.loss)));
    for (const char* key : {"step", "loss", "lr", "grad_norm", "tokens_per_s", "elapsed_s"})
      CHECK(metrics.back().contains(key));
    CHECK(metrics.back().contains("val_loss"));
    CHECK(metrics.back().contains("val_perplexity"));
    const std::filesystem::path dir = config.train.run_dir;
    // The resolved config round-trips to the run's config.
    const RunConfig stored = qt::models::load_config_file((dir / "config.json").string());
    CHECK(qt::models::to_json(stored) == qt::models::to_json(config));
    CHECK(std::filesystem::exists(dir / "checkpoint.safetensors"));
    CHECK(std::filesystem::exists(dir / "model.safetensors"));
  }
}

TEST_CASE(
    "test_trainer: the learning-rate schedule in metrics.jsonl is HF's linear warm-up/decay") {
  OneThread one_thread;
  RunConfig config = tiny_config("bert", run_directory("schedule"));
  config.train.steps = 10;
  config.train.warmup_fraction = 0.2;  // 2 warm-up steps
  qt::models::pretrain(config, quiet());
  const std::vector<nlohmann::json> metrics = read_metrics(config.train.run_dir);
  REQUIRE(metrics.size() == 10);
  // Record i logs the lr of step i (0-based): warm-up lr * i / 2, then lr * (10 - i) / 8.
  for (int i = 0; i < 10; ++i) {
    const double expected = i < 2 ? 3e-3 * i / 2.0 : 3e-3 * (10 - i) / 8.0;
    CHECK(metrics[i]["lr"].get<double>() == doctest::Approx(expected).epsilon(1e-12));
  }
}

TEST_CASE("test_trainer: a run stopped and resumed is bit-identical to an uninterrupted one") {
  OneThread one_thread;
  for (const std::string family : {"bert", "vit"}) {
    CAPTURE(family);
    // Dropout and augmentation stay on: their counter-based streams must resume exactly too.
    RunConfig whole = tiny_config(family, run_directory("whole-" + family));
    RunConfig pieces = tiny_config(family, run_directory("pieces-" + family));
    qt::models::pretrain(whole, quiet());
    qt::models::TrainOptions first = quiet();
    first.stop_at_step = 3;
    qt::models::pretrain(pieces, first);
    CHECK_FALSE(std::filesystem::exists(qt::models::final_model_path(pieces.train.run_dir)));
    qt::models::TrainOptions second = quiet();
    second.resume = true;
    qt::models::pretrain(pieces, second);
    // Same bytes: parameters, AdamW moments and step counts, dropout state.
    check_same_tensors(qt::models::final_model_path(whole.train.run_dir),
                       qt::models::final_model_path(pieces.train.run_dir));
    check_same_tensors(qt::models::checkpoint_path(whole.train.run_dir),
                       qt::models::checkpoint_path(pieces.train.run_dir));
    const auto a = read_metrics(whole.train.run_dir), b = read_metrics(pieces.train.run_dir);
    REQUIRE(a.size() == b.size());
    for (size_t i = 0; i < a.size(); ++i) {
      CHECK(a[i]["step"] == b[i]["step"]);
      CHECK(a[i]["loss"].get<double>() == b[i]["loss"].get<double>());
      CHECK(a[i]["grad_norm"].get<double>() == b[i]["grad_norm"].get<double>());
    }
  }
}

TEST_CASE("test_trainer: gradient accumulation gives the loss curve of the whole batch") {
  OneThread one_thread;
  // Without dropout, 2 micro-batches of 4 must follow the curve of one batch of 8 (the gradient is
  // of the mean over all labelled tokens either way), up to float rounding.
  RunConfig whole = tiny_config("bert", run_directory("accumulate-1"));
  whole.model.hidden_dropout = whole.model.attention_dropout = 0.0;
  RunConfig accumulated = whole;
  accumulated.train.run_dir = run_directory("accumulate-2");
  accumulated.train.accumulation = 2;
  qt::models::pretrain(whole, quiet());
  qt::models::pretrain(accumulated, quiet());
  const auto a = read_metrics(whole.train.run_dir), b = read_metrics(accumulated.train.run_dir);
  REQUIRE(a.size() == b.size());
  for (size_t i = 0; i < a.size(); ++i) {
    CHECK(b[i]["loss"].get<double>() == doctest::Approx(a[i]["loss"].get<double>()).epsilon(1e-5));
    CHECK(b[i]["grad_norm"].get<double>() ==
          doctest::Approx(a[i]["grad_norm"].get<double>()).epsilon(1e-4));
  }
}

TEST_CASE("test_trainer: ViT learns the synthetic images") {
  OneThread one_thread;
  RunConfig config = tiny_config("vit", run_directory("vit-learn"));
  config.train.steps = 40;
  config.train.batch_size = 32;
  config.train.eval_every = 40;
  config.train.eval_batches = 8;
  config.data.augment = false;
  const qt::models::TrainResult result = qt::models::pretrain(config, quiet());
  // Chance is 10%; the class is a bright square at a fixed cell.
  CHECK(result.validation.accuracy > 0.5);
  CHECK(result.validation.samples == 256);
}

TEST_CASE("test_trainer: a NaN loss stops the run and keeps the last good checkpoint") {
  OneThread one_thread;
  RunConfig config = tiny_config("bert", run_directory("nan"));
  qt::models::TrainOptions options = quiet();
  options.faults.poison_step = 4;  // 0-based: after the checkpoint of step 3
  std::string message;
  try {
    qt::models::pretrain(config, options);
  } catch (const qt::Error& e) {
    message = e.what();
  }
  CHECK(message.find("nan") != std::string::npos);
  CHECK(message.find("step 5") != std::string::npos);
  CHECK(message.find("checkpoint.safetensors") != std::string::npos);
  // The checkpoint is the one of step 3 and it resumes.
  qt::models::TrainOptions resume = quiet();
  resume.resume = true;
  const qt::models::TrainResult result = qt::models::pretrain(config, resume);
  CHECK(result.steps == 6);
  CHECK(read_metrics(config.train.run_dir).size() == 6);  // steps 4 and 5 were logged again
}

TEST_CASE("test_trainer: errors name the problem") {
  OneThread one_thread;
  RunConfig config = tiny_config("bert", run_directory("errors"));
  qt::models::TrainOptions resume = quiet();
  resume.resume = true;
  CHECK_THROWS_WITH_AS(qt::models::pretrain(config, resume), doctest::Contains("no checkpoint"),
                       qt::Error);
  config.train.steps = 3;
  qt::models::pretrain(config, quiet());
  // A second fresh run into the same directory would overwrite it.
  CHECK_THROWS_WITH_AS(qt::models::pretrain(config, quiet()), doctest::Contains("--resume"),
                       qt::Error);
  // Resuming with a configuration that changes the data order lists what differs.
  RunConfig changed = config;
  changed.train.seed = 7;
  CHECK_THROWS_WITH_AS(qt::models::pretrain(changed, resume), doctest::Contains("train.seed"),
                       qt::Error);
  // A micro-batch that does not split over... the batch must divide by the accumulation.
  RunConfig bad = tiny_config("bert", run_directory("errors-2"));
  bad.train.accumulation = 3;
  CHECK_THROWS_WITH_AS(qt::models::pretrain(bad, quiet()), doctest::Contains("train.accumulation"),
                       qt::Error);
  // Missing downloads name the directory.
  RunConfig missing = tiny_config("bert", run_directory("errors-3"));
  missing.data.dataset = "text";
  missing.data.dir = run_directory("no-such-data");
  CHECK_THROWS_AS(qt::models::pretrain(missing, quiet()), qt::Error);
}

namespace {

int64_t checkpoint_step(const std::string& run_dir) {
  return std::stoll(
      qt::load_safetensors_metadata(qt::models::checkpoint_path(run_dir)).at("training.step"));
}

// A tiny BERT run in `name` trained up to `stop_at` of its 6 steps (paused there, for --resume).
RunConfig paused_run(const std::string& name, int64_t stop_at) {
  RunConfig config = tiny_config("bert", run_directory(name));
  qt::models::TrainOptions first = quiet();
  first.stop_at_step = stop_at;
  qt::models::pretrain(config, first);
  return config;
}

std::string error_of(const std::function<void()>& f) {
  try {
    f();
  } catch (const qt::Error& e) {
    return e.what();
  }
  return "";
}

}  // namespace

TEST_CASE("test_trainer: the checkpoint is never the state whose forward pass diverged") {
  OneThread one_thread;
  RunConfig config = tiny_config("bert", run_directory("diverged"));
  config.train.checkpoint_every = 1;
  qt::models::TrainOptions options = quiet();
  options.faults.poison_step = 4;  // the forward pass of the state after 4 steps gives NaN
  const std::string message = error_of([&] { qt::models::pretrain(config, options); });
  CHECK(message.find("at step 5") != std::string::npos);
  // State 4 produced the NaN: it was never written; the checkpoint holds step 3, whose forward
  // pass (in step 4) was finite. (Written at once, the checkpoint held the diverging state 4.)
  CHECK(checkpoint_step(config.train.run_dir) == 3);
  CHECK(message.find("holds step 3") != std::string::npos);
  CHECK(message.find("--set train.lr=") != std::string::npos);
  CHECK(message.find("last good") == std::string::npos);
}

TEST_CASE("test_trainer: --resume may change the lr and the intervals, recorded at the step") {
  OneThread one_thread;
  const RunConfig config = paused_run("resume-change", 3);
  RunConfig lower = config;
  lower.train.lr = 1e-3;
  lower.train.eval_every = 2;
  qt::models::TrainOptions resume = quiet();
  resume.resume = true;
  CHECK(qt::models::pretrain(lower, resume).steps == 6);
  const std::filesystem::path dir = config.train.run_dir;
  std::ifstream changes_file(dir / "config_changes.jsonl");
  std::string line;
  REQUIRE(std::getline(changes_file, line));
  const nlohmann::json record = nlohmann::json::parse(line);
  CHECK(record["step"] == 3);
  REQUIRE(record["changes"].size() == 2);
  CHECK(record["changes"][0]["key"] == "train.eval_every");
  CHECK(record["changes"][1]["key"] == "train.lr");
  CHECK(record["changes"][1]["from"].get<double>() == 3e-3);
  CHECK(record["changes"][1]["to"].get<double>() == 1e-3);
  // config.json is the configuration now in force; metrics after step 3 use the new lr.
  CHECK(qt::models::load_config_file((dir / "config.json").string()).train.lr == 1e-3);
  const auto metrics = read_metrics(config.train.run_dir);
  REQUIRE(metrics.size() == 6);
  CHECK(metrics[3]["lr"].get<double>() < 1e-3);
  // A key that shapes the model or the data order is still refused, naming it and what may change.
  RunConfig wider = lower;
  wider.model.ffn = 128;
  wider.train.steps = 9;
  const std::string message = error_of([&] { qt::models::pretrain(wider, resume); });
  CHECK(message.find("model.ffn: 64 -> 128") != std::string::npos);
  CHECK(message.find("may change only train.lr") != std::string::npos);
}

TEST_CASE("test_trainer: resuming past train.steps or stopping before the checkpoint is an error") {
  OneThread one_thread;
  const RunConfig config = paused_run("past-the-end", 5);
  qt::models::TrainOptions resume = quiet();
  resume.resume = true;
  resume.stop_at_step = 2;
  CHECK(error_of([&] {
          qt::models::pretrain(config, resume);
        }).find("--stop-at 2 is before step 5") != std::string::npos);
  RunConfig shorter = config;
  shorter.train.steps = 4;
  resume.stop_at_step = -1;
  CHECK(error_of([&] {
          qt::models::pretrain(shorter, resume);
        }).find("holds step 5, beyond train.steps = 4") != std::string::npos);
  CHECK_FALSE(std::filesystem::exists(qt::models::final_model_path(config.train.run_dir)));
  // At the step where it stops, nothing is trained and nothing written.
  resume.stop_at_step = 5;
  CHECK(qt::models::pretrain(config, resume).steps_trained == 0);
}

TEST_CASE("test_trainer: a run holds a lock on its directory; killed writers' temp files go") {
  OneThread one_thread;
  RunConfig config = tiny_config("bert", run_directory("locked"));
  const std::filesystem::path dir = config.train.run_dir;
  std::filesystem::create_directories(dir);
  {
    const qt::FileLock other((dir / "pretrain.lock").string(), "another training");
    CHECK(error_of([&] {
            qt::models::pretrain(config, quiet());
          }).find("in use by process " + std::to_string(::getpid())) != std::string::npos);
  }
  // A writer killed mid-write left its temporary file; its PID is gone.
  const pid_t child = ::fork();
  if (child == 0) ::_exit(0);
  int status = 0;
  ::waitpid(child, &status, 0);
  const std::filesystem::path stale = dir / ("checkpoint.safetensors.tmp." + std::to_string(child));
  std::ofstream(stale) << "half a checkpoint";
  qt::models::pretrain(config, quiet());
  CHECK_FALSE(std::filesystem::exists(stale));
}

TEST_CASE("test_trainer: a checkpoint with non-finite weights does not resume") {
  OneThread one_thread;
  const RunConfig config = paused_run("nan-checkpoint", 3);
  const std::string path = qt::models::checkpoint_path(config.train.run_dir);
  qt::SafeTensors file = qt::load_safetensors(path);
  for (auto& [name, tensor] : file.tensors)
    if (name == "encoder.layer.0.ffn_in.weight") tensor.data<float>()[0] = INFINITY;
  qt::save_safetensors(path, file.tensors, file.metadata);
  qt::models::TrainOptions resume = quiet();
  resume.resume = true;
  CHECK(error_of([&] {
          qt::models::pretrain(config, resume);
        }).find("'encoder.layer.0.ffn_in.weight' holds inf") != std::string::npos);
}

TEST_CASE("test_trainer: a model far larger than memory is refused before it is allocated") {
  RunConfig config = tiny_config("bert", run_directory("too-large"));
  config.model.layers = 256;
  config.model.hidden = 1 << 16;
  config.model.heads = 1 << 10;
  config.model.ffn = 1 << 18;
  CHECK(error_of([&] { qt::models::pretrain(config, quiet()); }).find("is available") !=
        std::string::npos);
}

TEST_CASE("test_trainer: the ETA counts the validations still to come") {
  // Hand-computed: 100 s so far for 10 steps, of which 20 s in 2 validations: 8 s per step and
  // 10 s per validation. At step 10 of 100 with eval_every 25: 90 steps and validations at 25, 50,
  // 75, 100 left: 90 * 8 + 4 * 10 = 760 s.
  qt::models::EtaInputs in;
  in.steps = 100;
  in.eval_every = 25;
  in.step = 10;
  in.steps_done = 10;
  in.seconds = 100;
  in.evaluation_seconds = 20;
  in.evaluations = 2;
  in.eval_batches = 8;
  CHECK(qt::models::training_eta_seconds(in) == doctest::Approx(760));
  // 100 steps with eval_every 30: validations at 30, 60, 90 and the last step, 100.
  in.eval_every = 30;
  CHECK(qt::models::training_eta_seconds(in) == doctest::Approx(90 * 8 + 4 * 10));
  // Before any validation: estimated as a third of a step per validation batch (8 / 3 * 8).
  in.evaluation_seconds = 0;
  in.evaluations = 0;
  in.seconds = 80;
  CHECK(qt::models::training_eta_seconds(in) == doctest::Approx(90 * 8 + 4 * (8.0 * 8 / 3)));
  // At the end nothing is left.
  in.step = 100;
  CHECK(qt::models::training_eta_seconds(in) == doctest::Approx(0));
}
