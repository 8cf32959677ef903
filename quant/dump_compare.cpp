// Comparing integer tensor dumps (see the header).
#include "quant/dump_compare.h"

#include <cmath>
#include <cstdlib>
#include <map>

#include "tensor/error.h"

namespace qt::quant {
namespace {

// The reference's tensor names in graph order: graph inputs in manifest order, then each op's
// outputs in execution order.
std::vector<std::string> graph_order(const TensorDump& dump) {
  std::vector<std::string> order;
  for (const DumpTensor& t : dump.tensors) {
    if (dump.producer(t.name) < 0) order.push_back(t.name);
  }
  for (const DumpOp& op : dump.ops) {
    for (const std::string& out : op.outputs) order.push_back(out);
  }
  return order;
}

void check_comparable(const DumpTensor& r, const DumpTensor* c) {
  QT_CHECK(c != nullptr, "candidate: tensor \"{}\" is missing (the reference has it)", r.name);
  QT_CHECK(c->dtype == r.dtype, "candidate: tensor \"{}\" is {}, the reference's is {}", r.name,
           dump_dtype_name(c->dtype), dump_dtype_name(r.dtype));
  QT_CHECK(c->shape == r.shape, "candidate: tensor \"{}\" has shape {}, the reference's is {}",
           r.name, shape_str(c->shape), shape_str(r.shape));
  // Codes are compared in LSBs only if both sides mean the same grid. The scale is a decimal in
  // JSON on both sides; 1e-9 relative absorbs a writer that prints fewer digits than 17.
  QT_CHECK(std::fabs(c->scale - r.scale) <= 1e-9 * r.scale && c->zero_point == r.zero_point,
           "candidate: tensor \"{}\" has scale {} and zero point {}, the reference's are {} and {}",
           r.name, c->scale, c->zero_point, r.scale, r.zero_point);
}

TensorComparison compare_tensor(const DumpTensor& r, const DumpTensor& c, int64_t tolerance) {
  TensorComparison out;
  out.name = r.name;
  out.elements = static_cast<int64_t>(r.values.size());
  for (int64_t i = 0; i < out.elements; ++i) {
    const int64_t delta = std::llabs(int64_t{c.values[i]} - int64_t{r.values[i]});
    out.max_abs_diff = std::max(out.max_abs_diff, delta);
    if (delta <= tolerance) continue;
    if (out.mismatches++ == 0) {
      out.first_index = unravel_index(i, r.shape);
      out.first_reference = r.values[i];
      out.first_candidate = c.values[i];
    }
  }
  return out;
}

}  // namespace

bool DumpComparison::pass() const {
  for (const TensorComparison& t : tensors) {
    if (!t.agrees()) return false;
  }
  return true;
}

const TensorComparison& DumpComparison::tensor(const std::string& name) const {
  for (const TensorComparison& t : tensors) {
    if (t.name == name) return t;
  }
  fail("dump comparison: no tensor \"{}\"", name);
}

DumpComparison compare_dumps(const TensorDump& reference, const TensorDump& candidate,
                             int64_t tolerance_lsb) {
  QT_CHECK(tolerance_lsb >= 0, "qtlab check: --tolerance-lsb {} is negative", tolerance_lsb);
  DumpComparison result;
  result.tolerance_lsb = tolerance_lsb;
  // Every tensor is checked for usability before any is compared, so an unusable candidate is
  // always reported as such (exit 2), never as a mismatch.
  const std::vector<std::string> order = graph_order(reference);
  for (const std::string& name : order)
    check_comparable(reference.tensor(name), candidate.find(name));

  std::map<std::string, bool> agrees;
  for (const std::string& name : order) {
    TensorComparison t =
        compare_tensor(reference.tensor(name), *candidate.find(name), tolerance_lsb);
    t.producer = reference.producer(name);
    agrees[name] = t.agrees();
    if (t.producer < 0 && !t.agrees()) result.divergent_inputs.push_back(name);
    result.tensors.push_back(std::move(t));
  }
  for (size_t i = 0; i < reference.ops.size() && result.first_divergent_op < 0; ++i) {
    const DumpOp& op = reference.ops[i];
    bool inputs_agree = true, outputs_agree = true;
    for (const std::string& in : op.inputs) inputs_agree = inputs_agree && agrees[in];
    for (const std::string& out : op.outputs) outputs_agree = outputs_agree && agrees[out];
    if (inputs_agree && !outputs_agree) result.first_divergent_op = static_cast<int64_t>(i);
  }
  return result;
}

}  // namespace qt::quant
