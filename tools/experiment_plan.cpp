#include "tools/experiment_plan.h"

#include <fmt/format.h>

#include <cmath>
#include <fstream>
#include <nlohmann/json.hpp>
#include <set>
#include <sstream>

#include "tensor/error.h"
#include "tensor/json_parse.h"

namespace qt::tools {
namespace {

using nlohmann::json;

const std::set<std::string> kRunKeys = {
    "name",           "group", "variant",     "preset", "seed",
    "steps",          "set",   "evaluate_at", "sweep",  "calibration_batches",
    "analyze_batches"};

int64_t positive_integer(const json& value, const std::string& where) {
  QT_CHECK(value.is_number_integer() && value.get<int64_t>() > 0,
           "{}: expected a positive integer, got {}", where, value.dump().substr(0, 80));
  return value.get<int64_t>();
}

std::string nonempty_string(const json& value, const std::string& where) {
  QT_CHECK(value.is_string() && !value.get<std::string>().empty(),
           "{}: expected a non-empty string, got {}", where, value.dump().substr(0, 80));
  return value.get<std::string>();
}

// A config value as `qtlab pretrain --set key=value` takes it.
std::string value_text(const json& value, const std::string& where) {
  if (value.is_string()) return value.get<std::string>();
  if (value.is_boolean()) return value.get<bool>() ? "true" : "false";
  if (value.is_number_integer()) return std::to_string(value.get<int64_t>());
  if (value.is_number_unsigned()) return std::to_string(value.get<uint64_t>());
  if (value.is_number_float()) {
    const double x = value.get<double>();
    QT_CHECK(std::isfinite(x), "{}: not a finite number", where);
    return fmt::format("{}", x);  // shortest text that reads back as the same double
  }
  fail("{}: expected a string, number or boolean, got {}", where, value.dump().substr(0, 80));
}

bool safe_name(const std::string& name) {
  if (name.empty() || name == "." || name == "..") return false;
  for (const char c : name)
    if (!(std::isalnum(static_cast<unsigned char>(c)) || c == '-' || c == '_' || c == '.'))
      return false;
  return true;
}

// A plan or run name, which names a directory: letters, digits, '-', '_', '.'.
std::string directory_name(const json& value, const std::string& where) {
  const std::string name = nonempty_string(value, where);
  QT_CHECK(safe_name(name),
           "{}: '{}' may hold only letters, digits, '-', '_' and '.' (it names a directory)", where,
           name);
  return name;
}

PlannedRun parse_run(const json& object, const std::string& where) {
  PlannedRun run;
  for (const auto& [key, value] : object.items())
    QT_CHECK(kRunKeys.count(key) == 1, "{}: unknown key '{}'", where, key);
  QT_CHECK(object.contains("name"), "{}: 'name' is missing", where);
  run.name = directory_name(object["name"], where + ".name");
  const std::string at = fmt::format("{} ('{}')", where, run.name);
  for (const char* required : {"group", "variant", "preset", "steps", "evaluate_at", "sweep"})
    QT_CHECK(object.contains(required), "{}: '{}' is missing", at, required);
  run.group = nonempty_string(object["group"], at + ".group");
  run.variant = nonempty_string(object["variant"], at + ".variant");
  run.preset = nonempty_string(object["preset"], at + ".preset");
  run.steps = positive_integer(object["steps"], at + ".steps");
  if (object.contains("seed")) {
    QT_CHECK(object["seed"].is_number_unsigned(), "{}.seed: expected an integer >= 0", at);
    run.seed = object["seed"].get<uint64_t>();
  }
  if (object.contains("set")) {
    QT_CHECK(object["set"].is_object(), "{}.set: expected an object of config keys", at);
    for (const auto& [key, value] : object["set"].items()) {
      QT_CHECK(key != "train.seed" && key != "train.steps" && key != "train.run_dir",
               "{}.set: '{}' is set by the plan's own keys (seed, steps, the run directory)", at,
               key);
      run.set.emplace_back(key, value_text(value, at + ".set." + key));
    }
  }
  const json& steps = object["evaluate_at"];
  QT_CHECK(steps.is_array() && !steps.empty(), "{}.evaluate_at: expected a non-empty list", at);
  for (const json& s : steps) {
    const int64_t step = positive_integer(s, at + ".evaluate_at");
    QT_CHECK(run.evaluate_at.empty() || step > run.evaluate_at.back(),
             "{}.evaluate_at: steps must ascend ({} after {})", at, step, run.evaluate_at.back());
    run.evaluate_at.push_back(step);
  }
  QT_CHECK(run.evaluate_at.back() == run.steps,
           "{}.evaluate_at: the last evaluation must be the last step {} (got {})", at, run.steps,
           run.evaluate_at.back());
  const json& sweep = object["sweep"];
  QT_CHECK(sweep.is_array() && !sweep.empty(), "{}.sweep: expected a non-empty list", at);
  std::set<std::string> seen;
  for (const json& s : sweep) {
    const std::string text = nonempty_string(s, at + ".sweep");
    QT_CHECK(seen.insert(text).second, "{}.sweep: '{}' is listed twice", at, text);
    run.sweep.push_back(parse_quantization_spec(text));
  }
  if (object.contains("calibration_batches"))
    run.calibration_batches =
        positive_integer(object["calibration_batches"], at + ".calibration_batches");
  if (object.contains("analyze_batches"))
    run.analyze_batches = positive_integer(object["analyze_batches"], at + ".analyze_batches");
  return run;
}

}  // namespace

ExperimentPlan parse_experiment_plan(const std::string& text, const std::string& source) {
  const json document = qt::parse_json(text, fmt::format("experiment plan {}", source));
  QT_CHECK(document.is_object(), "experiment plan {}: expected a JSON object", source);
  for (const auto& [key, value] : document.items())
    QT_CHECK(key == "name" || key == "description" || key == "defaults" || key == "runs",
             "experiment plan {}: unknown key '{}' (known: name, description, defaults, runs)",
             source, key);
  ExperimentPlan plan;
  QT_CHECK(document.contains("name"), "experiment plan {}: 'name' is missing", source);
  plan.name = directory_name(document["name"], fmt::format("experiment plan {}: name", source));
  if (document.contains("description"))
    plan.description = nonempty_string(document["description"], source + ": description");
  json defaults = json::object();
  if (document.contains("defaults")) {
    defaults = document["defaults"];
    QT_CHECK(defaults.is_object(), "experiment plan {}: defaults must be an object", source);
    QT_CHECK(!defaults.contains("name"), "experiment plan {}: defaults cannot hold a name", source);
  }
  QT_CHECK(document.contains("runs") && document["runs"].is_array() && !document["runs"].empty(),
           "experiment plan {}: 'runs' must be a non-empty list", source);
  std::set<std::string> names;
  for (size_t i = 0; i < document["runs"].size(); ++i) {
    const json& entry = document["runs"][i];
    const std::string where = fmt::format("experiment plan {}: runs[{}]", source, i);
    QT_CHECK(entry.is_object(), "{}: expected an object", where);
    json merged = defaults;
    for (const auto& [key, value] : entry.items()) {
      if (key == "set" && merged.contains("set") && value.is_object() && merged["set"].is_object())
        merged["set"].update(value);  // a run's config keys add to the defaults' ones
      else
        merged[key] = value;
    }
    PlannedRun run = parse_run(merged, where);
    QT_CHECK(names.insert(run.name).second, "{}: the run name '{}' is used twice", where, run.name);
    plan.runs.push_back(std::move(run));
  }
  return plan;
}

ExperimentPlan load_experiment_plan(const std::string& path) {
  std::ifstream in(path);
  QT_CHECK(in.good(), "experiment plan {}: cannot open the file", path);
  std::stringstream text;
  text << in.rdbuf();
  return parse_experiment_plan(text.str(), path);
}

std::string sweep_argument(const PlannedRun& run) {
  std::string out;
  for (const QuantizationSpec& spec : run.sweep) out += (out.empty() ? "" : ",") + spec.text;
  return out;
}

}  // namespace qt::tools
