// The C99 files of quant/export/ as text, compiled into qtlab (CMake generates the definition from
// the files themselves), so that `qtlab export-int` writes a self-contained model.c wherever it
// runs. Order: qtlab_int8.h, qtlab_int8.c, qtlab_dump.h, qtlab_dump.c, qtlab_model.h,
// qtlab_model.c (each after what it uses).
#pragma once

#include <vector>

namespace qt::quant {

struct ExportCSource {
  const char* name;
  const char* text;
};

const std::vector<ExportCSource>& export_c_sources();

}  // namespace qt::quant
