// Tests for nn/checkpoint.*: model files and training checkpoints.
// Truth: (1) bit-identical resumption — a tiny two-Linear model with dropout trained with AdamW,
// gradient clipping and a warm-up schedule for 6 steps straight must end with exactly the same
// parameters and optimizer state as 3 steps + save + load into freshly built (differently
// initialised) objects + 3 steps; (2) mismatching models are rejected with every problem named and
// nothing modified.
#include <doctest/doctest.h>

#include <cmath>
#include <cstring>
#include <filesystem>
#include <memory>
#include <string>
#include <vector>

#include <unistd.h>

#include "autograd/engine.h"
#include "autograd/functions.h"
#include "models/training_checkpoint.h"
#include "nn/checkpoint.h"
#include "nn/dropout.h"
#include "nn/linear.h"
#include "optim/adamw.h"
#include "optim/clip_grad.h"
#include "optim/parameter_groups.h"
#include "optim/schedule.h"
#include "optim/sgd.h"
#include "tensor/create.h"
#include "tensor/safetensors.h"
#include "tensor/view.h"

#include "tests/test_util.h"

using namespace qt;
using namespace qt::test;

namespace {

std::string temp_path(const std::string& name) {
  return (scratch_directory("checkpoint") / name).string();
}

// x -> Linear(4, hidden) -> relu -> dropout(0.25) -> Linear(hidden, 3), plus an i64 buffer.
class TinyModel : public nn::Module {
 public:
  TinyModel(uint64_t init_seed, std::shared_ptr<nn::DropoutState> dropout_state, int64_t hidden = 8,
            const std::string& second_name = "second") {
    nn::InitRng rng{init_seed};
    first = register_module("first", std::make_shared<nn::Linear>(4, hidden, true, rng));
    second = register_module(second_name, std::make_shared<nn::Linear>(hidden, 3, true, rng));
    dropout = register_module("dropout", std::make_shared<nn::Dropout>(0.25f, dropout_state, 1));
    steps_seen = register_buffer("steps_seen", ops::zeros({1}, DType::i64));
  }
  Tensor forward(const Tensor& x) const {
    return second->forward(dropout->forward(qt::relu(first->forward(x))));
  }

  std::shared_ptr<nn::Linear> first, second;
  std::shared_ptr<nn::Dropout> dropout;
  Tensor steps_seen;
};

const optim::Schedule kSchedule{optim::ScheduleKind::linear, 1e-2, 2, 6};

std::unique_ptr<optim::AdamW> make_optimizer(const TinyModel& model) {
  optim::WeightDecayRule rule;
  rule.weight_decay = 0.01;
  return std::make_unique<optim::AdamW>(optim::weight_decay_groups(model.named_parameters(), rule),
                                        optim::AdamWOptions{0.9, 0.95, 1e-8});
}

// Training steps [begin, end): the batch, the dropout masks and the lr depend only on the step.
void train(TinyModel& model, optim::AdamW& optimizer, nn::DropoutState& dropout_state,
           int64_t begin, int64_t end) {
  for (int64_t step = begin; step < end; ++step) {
    dropout_state.step = static_cast<uint64_t>(step);
    const Tensor x = random_tensor({6, 4}, DType::f32, 1000 + static_cast<unsigned>(step));
    const Tensor target = random_tensor({6, 3}, DType::f32, 2000 + static_cast<unsigned>(step));
    optimizer.zero_grad();
    qt::backward(qt::mean(qt::pow(qt::sub(model.forward(x), target), 2.0)));
    optim::clip_grad_norm(optim::all_parameters(optimizer.groups()), 1.0);
    optimizer.step(optim::lr_at(kSchedule, step));
    model.steps_seen.data<int64_t>()[0] = step + 1;
  }
}

bool bitwise_equal(const Tensor& a, const Tensor& b) {
  if (a.shape() != b.shape() || a.dtype() != b.dtype()) return false;
  const Tensor ca = ops::contiguous(a), cb = ops::contiguous(b);
  return std::memcmp(ca.raw_data(), cb.raw_data(), a.numel() * dtype_size(a.dtype())) == 0;
}

}  // namespace

TEST_CASE("checkpoint: resuming from a training checkpoint is bit-identical") {
  // Uninterrupted run: 6 steps.
  auto straight_dropout = std::make_shared<nn::DropoutState>(nn::DropoutState{77, 0});
  TinyModel straight(1, straight_dropout);
  auto straight_optimizer = make_optimizer(straight);
  train(straight, *straight_optimizer, *straight_dropout, 0, 6);

  // Interrupted run: 3 steps, save.
  const std::string path = temp_path("training.safetensors");
  {
    auto dropout_state = std::make_shared<nn::DropoutState>(nn::DropoutState{77, 0});
    TinyModel model(1, dropout_state);
    auto optimizer = make_optimizer(model);
    train(model, *optimizer, *dropout_state, 0, 3);
    qt::models::TrainingState state{
        3, *dropout_state, {{"data_position", "18"}, {"loss_scale", "65536"}}};
    qt::models::save_training_checkpoint(path, model, *optimizer, state, R"({"hidden":8})");
  }
  // Fresh objects with other weights and another dropout seed, restored from the file.
  auto dropout_state = std::make_shared<nn::DropoutState>(nn::DropoutState{5, 0});
  TinyModel resumed(12345, dropout_state);
  auto optimizer = make_optimizer(resumed);
  CHECK_FALSE(bitwise_equal(resumed.first->weight, straight.first->weight));
  const qt::models::TrainingState state =
      qt::models::load_training_checkpoint(path, resumed, *optimizer);
  CHECK(state.step == 3);
  CHECK(state.dropout.seed == 77);
  CHECK(state.dropout.step == 2);  // the last step's counter
  CHECK(state.extra.at("data_position") == "18");
  CHECK(state.extra.at("loss_scale") == "65536");
  CHECK(state.extra.size() == 2);
  CHECK(resumed.steps_seen.data<int64_t>()[0] == 3);
  *dropout_state = state.dropout;
  train(resumed, *optimizer, *dropout_state, state.step, 6);

  const auto expected = straight.named_parameters();
  const auto got = resumed.named_parameters();
  REQUIRE(expected.size() == got.size());
  for (size_t i = 0; i < got.size(); ++i) {
    CAPTURE(got[i].first);
    CHECK(bitwise_equal(got[i].second, expected[i].second));
    CHECK(
        bitwise_equal(optimizer->state(got[i].first).m, straight_optimizer->state(got[i].first).m));
    CHECK(
        bitwise_equal(optimizer->state(got[i].first).v, straight_optimizer->state(got[i].first).v));
    CHECK(optimizer->state(got[i].first).step == 6);
  }
  CHECK(resumed.steps_seen.data<int64_t>()[0] == 6);
  CHECK(nn::read_model_config(path) == R"({"hidden":8})");

  // The file is a plain safetensors file: model tensors under their names, optimizer state under
  // "optimizer.".
  const SafeTensors raw = load_safetensors(path);
  CHECK(raw.contains("first.weight"));
  CHECK(raw.contains("optimizer.m.first.weight"));
  CHECK(raw.contains("optimizer.v.second.bias"));
  CHECK(raw.get("optimizer.step.first.bias").data<int64_t>()[0] == 3);
  CHECK(raw.metadata.at("optimizer") == "adamw");
  CHECK(raw.metadata.at("training.step") == "3");

  // A model alone can be loaded from a training checkpoint.
  TinyModel evaluation(999, std::make_shared<nn::DropoutState>());
  CHECK(nn::load_model(path, evaluation) == R"({"hidden":8})");
}

TEST_CASE("checkpoint: model files round trip and mismatches are reported together") {
  auto dropout_state = std::make_shared<nn::DropoutState>();
  TinyModel model(3, dropout_state);
  model.steps_seen.data<int64_t>()[0] = 42;
  const std::string path = temp_path("model.safetensors");
  nn::save_model(path, model, R"({"name":"tiny"})");

  TinyModel other(4, dropout_state);
  CHECK(nn::load_model(path, other) == R"({"name":"tiny"})");
  for (const auto& [name, tensor] : model.named_parameters()) {
    CAPTURE(name);
    bool found = false;
    for (const auto& [other_name, other_tensor] : other.named_parameters())
      if (other_name == name) found = bitwise_equal(tensor, other_tensor);
    CHECK(found);
  }
  CHECK(other.steps_seen.data<int64_t>()[0] == 42);

  // Different hidden size and a renamed layer: every problem in one message, nothing copied.
  TinyModel wrong(5, dropout_state, 6, "third");
  const Tensor before = ops::clone(wrong.first->weight);
  try {
    nn::load_model(path, wrong);
    FAIL("expected an error");
  } catch (const Error& e) {
    const std::string message = e.what();
    CHECK(message.find("first.weight (file f32 [8, 4], model f32 [6, 4])") != std::string::npos);
    CHECK(message.find("first.bias") != std::string::npos);
    CHECK(message.find("missing: third.weight, third.bias") != std::string::npos);
    CHECK(message.find("unexpected: second.bias, second.weight") != std::string::npos);
  }
  CHECK(bitwise_equal(wrong.first->weight, before));
}

TEST_CASE("checkpoint: training checkpoint errors") {
  auto dropout_state = std::make_shared<nn::DropoutState>();
  TinyModel model(3, dropout_state);
  auto adamw = make_optimizer(model);
  const std::string model_path = temp_path("only_model.safetensors");
  nn::save_model(model_path, model, "{}");
  CHECK_THROWS_WITH_AS(qt::models::load_training_checkpoint(model_path, model, *adamw),
                       doctest::Contains("not a training checkpoint"), Error);

  const std::string path = temp_path("checkpoint.safetensors");
  qt::models::save_training_checkpoint(path, model, *adamw, qt::models::TrainingState{}, "{}");
  optim::SGD sgd({optim::ParameterGroup{{}, model.parameters()}});
  CHECK_THROWS_WITH_AS(qt::models::load_training_checkpoint(path, model, sgd),
                       doctest::Contains("holds adamw state, the optimizer is sgd"), Error);

  // Corrupt metadata.
  SafeTensors file = load_safetensors(path);
  file.metadata["training.step"] = "3x";
  const std::string corrupt = temp_path("corrupt_checkpoint.safetensors");
  save_safetensors(corrupt, file.tensors, file.metadata);
  CHECK_THROWS_WITH_AS(qt::models::load_training_checkpoint(corrupt, model, *adamw),
                       doctest::Contains("'training.step' = '3x' is not a valid integer"), Error);
  file.metadata.erase("training.step");
  save_safetensors(corrupt, file.tensors, file.metadata);
  CHECK_THROWS_WITH_AS(qt::models::load_training_checkpoint(corrupt, model, *adamw),
                       doctest::Contains("metadata 'training.step' is missing"), Error);

  // Optimizer state for a parameter the optimizer does not have.
  file = load_safetensors(path);
  file.tensors.emplace_back("optimizer.m.nonexistent", ops::zeros({1}));
  save_safetensors(corrupt, file.tensors, file.metadata);
  CHECK_THROWS_WITH_AS(qt::models::load_training_checkpoint(corrupt, model, *adamw),
                       doctest::Contains("unexpected entry 'm.nonexistent'"), Error);

  // A model tensor named like the optimizer prefix cannot be saved.
  struct Clashing : nn::Module {
    Clashing() { register_parameter("optimizer", ops::zeros({1})); }
  };
  Clashing clashing;
  CHECK_NOTHROW(nn::save_model(temp_path("clash_model.safetensors"), clashing, "{}"));
  struct Nested : nn::Module {
    Nested() { register_module("optimizer", std::make_shared<Clashing>()); }
  };
  Nested nested;
  optim::SGD nested_sgd({optim::ParameterGroup{{}, nested.parameters()}});
  CHECK_THROWS_WITH_AS(
      qt::models::save_training_checkpoint(temp_path("clash.safetensors"), nested, nested_sgd,
                                           qt::models::TrainingState{}, "{}"),
      doctest::Contains("clashes"), Error);
}

TEST_CASE(
    "checkpoint: weights or optimizer state holding NaN or Inf are refused, naming the tensor") {
  auto dropout_state = std::make_shared<nn::DropoutState>();
  TinyModel model(3, dropout_state);
  auto adamw = make_optimizer(model);
  train(model, *adamw, *dropout_state, 0, 2);  // AdamW's moments exist after a step
  const std::string path = temp_path("finite.safetensors");
  qt::models::save_training_checkpoint(path, model, *adamw, qt::models::TrainingState{}, "{}");
  SafeTensors file = load_safetensors(path);
  const std::string corrupt = temp_path("not_finite.safetensors");
  const auto poison = [&](const std::string& name, double value) {
    SafeTensors copy = file;
    REQUIRE(copy.contains(name));
    for (auto& [tensor_name, tensor] : copy.tensors)
      if (tensor_name == name) {
        tensor = ops::clone(tensor);
        tensor.data<float>()[1] = static_cast<float>(value);
      }
    save_safetensors(corrupt, copy.tensors, copy.metadata);
  };
  TinyModel target(4, dropout_state);
  poison("first.weight", std::nan(""));
  CHECK_THROWS_WITH_AS(nn::load_model(corrupt, target),
                       doctest::Contains("tensor 'first.weight' holds nan at element 1"), Error);
  CHECK_THROWS_WITH_AS(qt::models::load_training_checkpoint(corrupt, target, *adamw),
                       doctest::Contains("'first.weight' holds nan"), Error);
  poison("optimizer.v.second.bias", INFINITY);
  CHECK_THROWS_WITH_AS(qt::models::load_training_checkpoint(corrupt, target, *adamw),
                       doctest::Contains("'v.second.bias' holds inf"), Error);
}
