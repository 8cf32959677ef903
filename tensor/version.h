// The qtlab version: `git describe --always --dirty` of the source tree at build time (e.g.
// "cdadd57d1a2b" or "cdadd57d1a2b-dirty"; "unknown" outside a git checkout). Printed by
// `qtlab --version` and recorded in every model file, checkpoint and result record, so that a
// number can be traced to the code that produced it.
#pragma once

#include <string_view>

namespace qt {

std::string_view qtlab_version();

}  // namespace qt
