#include "quant/calibrated_ranges.h"

#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>

#include "tensor/atomic_file.h"
#include "tensor/error.h"
#include "tensor/json_parse.h"

namespace qt::quant {
namespace {

constexpr const char* kFormat = "qtlab.quant-ranges";
constexpr int kVersion = 1;

nlohmann::json range_to_json(const CalibratedRange& r) {
  nlohmann::json j = {{"bits", r.bits},
                      {"symmetric", r.symmetric},
                      {"signed", r.is_signed},
                      {"int_min", r.int_min},
                      {"int_max", r.int_max},
                      {"scale", r.scale},
                      {"zero_point", r.zero_point},
                      {"min", r.min},
                      {"max", r.max}};
  if (!r.lookup_point.empty()) j["lookup_point"] = r.lookup_point;
  return j;
}

// A required field of `object`, converted to T; errors name the file and the entry.
template <typename T>
T field(const nlohmann::json& object, const char* key, const std::string& where,
        const std::string& path) {
  QT_CHECK(object.is_object() && object.contains(key),
           "load_calibrated_ranges: {}: {} has no field '{}'", path, where, key);
  try {
    return object.at(key).get<T>();
  } catch (const nlohmann::json::exception&) {
    fail("load_calibrated_ranges: {}: field '{}' of {} has the wrong type", path, key, where);
  }
}

CalibratedRange range_from_json(const nlohmann::json& j, const std::string& where,
                                const std::string& path) {
  CalibratedRange r;
  r.bits = field<int>(j, "bits", where, path);
  r.symmetric = field<bool>(j, "symmetric", where, path);
  r.is_signed = field<bool>(j, "signed", where, path);
  r.int_min = field<int64_t>(j, "int_min", where, path);
  r.int_max = field<int64_t>(j, "int_max", where, path);
  r.scale = field<float>(j, "scale", where, path);
  r.zero_point = field<int32_t>(j, "zero_point", where, path);
  r.min = field<float>(j, "min", where, path);
  r.max = field<float>(j, "max", where, path);
  if (j.contains("lookup_point"))
    r.lookup_point = field<std::string>(j, "lookup_point", where, path);
  check_bits(r.bits, "load_calibrated_ranges");
  QT_CHECK(r.scale > 0.0f && r.int_min < r.int_max,
           "load_calibrated_ranges: {}: {} has scale {} and grid [{}, {}]", path, where, r.scale,
           r.int_min, r.int_max);
  return r;
}

}  // namespace

QuantizationParameters CalibratedRange::parameters() const {
  QuantizationParameters p;
  p.bits = bits;
  p.symmetric = symmetric;
  p.is_signed = is_signed;
  p.int_min = int_min;
  p.int_max = int_max;
  p.scale = {scale};
  p.zero_point = {zero_point};
  return p;
}

CalibratedRange calibrated_range(const QuantizationParameters& parameters, float min, float max) {
  QT_CHECK(parameters.channels() == 1 && !parameters.channel_axis.has_value(),
           "calibrated_range: only per-tensor quantizers are saved, got {} channels",
           parameters.channels());
  CalibratedRange r;
  r.bits = parameters.bits;
  r.symmetric = parameters.symmetric;
  r.is_signed = parameters.is_signed;
  r.int_min = parameters.int_min;
  r.int_max = parameters.int_max;
  r.scale = parameters.scale[0];
  r.zero_point = parameters.zero_point[0];
  r.min = min;
  r.max = max;
  return r;
}

void save_calibrated_ranges(const std::string& path, const CalibratedRanges& ranges) {
  nlohmann::json j = {{"format", kFormat},
                      {"version", kVersion},
                      {"family", ranges.family},
                      {"weight_bits", ranges.weight_bits},
                      {"activation_bits", ranges.activation_bits},
                      {"weight_range", ranges.weight_range},
                      {"activation_range", ranges.activation_range},
                      {"calibration_batches", ranges.calibration_batches},
                      {"calibration_seed", ranges.calibration_seed},
                      {"activations", nlohmann::json::object()},
                      {"weights", nlohmann::json::object()}};
  for (const auto& [name, r] : ranges.activations) j["activations"][name] = range_to_json(r);
  for (const auto& [name, r] : ranges.weights) j["weights"][name] = range_to_json(r);
  if (!ranges.observed.empty()) {
    j["observed"] = nlohmann::json::object();
    for (const auto& [name, r] : ranges.observed) j["observed"][name] = range_to_json(r);
  }
  const std::string text = j.dump(1) + "\n";
  write_text_atomically(path, text);
}

CalibratedRanges load_calibrated_ranges(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  QT_CHECK(in.is_open(), "load_calibrated_ranges: cannot open '{}'", path);
  std::stringstream buffer;
  buffer << in.rdbuf();
  const nlohmann::json j =
      parse_json(buffer.str(), fmt::format("load_calibrated_ranges: {}", path));
  QT_CHECK(j.is_object(), "load_calibrated_ranges: {} is not a JSON object", path);
  QT_CHECK(j.contains("format") && j["format"] == kFormat,
           "load_calibrated_ranges: {} is not a qtlab ranges file (format must be '{}')", path,
           kFormat);
  const std::string top = "the file";
  QT_CHECK(field<int>(j, "version", top, path) == kVersion,
           "load_calibrated_ranges: {}: unsupported version (expected {})", path, kVersion);
  CalibratedRanges r;
  r.family = field<std::string>(j, "family", top, path);
  r.weight_bits = field<int>(j, "weight_bits", top, path);
  r.activation_bits = field<int>(j, "activation_bits", top, path);
  r.weight_range = field<std::string>(j, "weight_range", top, path);
  r.activation_range = field<std::string>(j, "activation_range", top, path);
  r.calibration_batches = field<int64_t>(j, "calibration_batches", top, path);
  r.calibration_seed = field<uint64_t>(j, "calibration_seed", top, path);
  for (const char* group : {"activations", "weights"}) {
    QT_CHECK(j.contains(group) && j[group].is_object(),
             "load_calibrated_ranges: {} has no '{}' object", path, group);
    auto& out = std::string(group) == "activations" ? r.activations : r.weights;
    for (const auto& [name, value] : j[group].items())
      out[name] = range_from_json(value, std::string(group) + " entry '" + name + "'", path);
  }
  if (j.contains("observed")) {
    QT_CHECK(j["observed"].is_object(), "load_calibrated_ranges: {}: 'observed' is not an object",
             path);
    for (const auto& [name, value] : j["observed"].items())
      r.observed[name] = range_from_json(value, "observed entry '" + name + "'", path);
  }
  return r;
}

}  // namespace qt::quant
