#include "nn/activation_tap.h"

#include "nn/module.h"

namespace qt::nn {
namespace {
thread_local ActivationTaps* installed_taps = nullptr;
}  // namespace

TapScope::TapScope(ActivationTaps* taps) : previous_(installed_taps) {
  installed_taps = taps;
}
TapScope::~TapScope() {
  installed_taps = previous_;
}

bool taps_active() {
  return installed_taps != nullptr;
}

Tensor tap(const Module& module, const char* what, const Tensor& x) {
  if (installed_taps == nullptr) return x;
  return installed_taps->at(module.path() + ":" + what, x);
}

}  // namespace qt::nn
