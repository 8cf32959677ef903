// The layer order of docs/architecture.md, checked on the source tree: every quoted #include of
// every file under a layer directory may name only its own layer or a lower one,
//
//   tensor < autograd < nn < optim < data < models < quant < tools
//
// (tensor/blas is part of tensor; tests may include anything). A lower layer that includes a
// higher one fails here with the file, the line and the include. A directory that is not in the
// list fails too, so a new layer has to be placed in the order (and in the document) first.
#include <doctest/doctest.h>

#include <filesystem>
#include <fstream>
#include <map>
#include <sstream>
#include <string>
#include <vector>

namespace {

// Rank of each layer directory: a file may include a layer of the same or lower rank.
const std::map<std::string, int>& layer_ranks() {
  static const std::map<std::string, int> ranks = {
      {"tensor", 0}, {"autograd", 1}, {"nn", 2},    {"optim", 3},
      {"data", 4},   {"models", 5},   {"quant", 6}, {"tools", 7},
  };
  return ranks;
}

struct Violation {
  std::string file;
  int line = 0;
  std::string include;
};

// The layer-breaking includes of one file's text: `#include "<dir>/..."` lines whose <dir> ranks
// above `layer`, or names a directory outside the order.
std::vector<Violation> check_includes(const std::string& file, const std::string& layer,
                                      const std::string& text) {
  std::vector<Violation> out;
  const int own = layer_ranks().at(layer);
  std::istringstream lines(text);
  std::string line;
  for (int number = 1; std::getline(lines, line); ++number) {
    const size_t hash = line.find_first_not_of(" \t");
    if (hash == std::string::npos || line.compare(hash, 8, "#include") != 0) continue;
    const size_t open = line.find('"', hash);
    if (open == std::string::npos) continue;  // <system> header
    const size_t slash = line.find('/', open);
    const size_t close = line.find('"', open + 1);
    if (slash == std::string::npos || close == std::string::npos || slash > close) {
      // The C99 export library (quant/export/) is compiled on its own with -I quant/export and
      // concatenated into exported model.c files: its headers include their siblings by name.
      if (file.rfind("quant/export/", 0) == 0 && close != std::string::npos) continue;
      out.push_back({file, number, line});  // every project include names its layer
      continue;
    }
    const std::string target = line.substr(open + 1, slash - open - 1);
    const auto rank = layer_ranks().find(target);
    if (rank == layer_ranks().end() || rank->second > own) out.push_back({file, number, line});
  }
  return out;
}

std::string read_text(const std::filesystem::path& path) {
  std::ifstream in(path, std::ios::binary);
  std::ostringstream text;
  text << in.rdbuf();
  return text.str();
}

}  // namespace

TEST_CASE("test_layering: the include checker finds an upward include and accepts downward ones") {
  const std::string ok =
      "#include <vector>\n#include \"nn/module.h\"\n  #include \"tensor/tensor.h\"\n"
      "// #include \"models/model.h\" is only a comment\n";
  CHECK(check_includes("nn/x.cpp", "nn", ok).empty());
  const std::string bad = "#include \"tensor/tensor.h\"\n#include \"optim/optimizer.h\"\n";
  const auto found = check_includes("nn/checkpoint.h", "nn", bad);
  REQUIRE(found.size() == 1);
  CHECK(found[0].line == 2);
  CHECK(found[0].include == "#include \"optim/optimizer.h\"");
  CHECK(check_includes("quant/x.cpp", "quant", "#include \"tools/cli.h\"\n").size() == 1);
  CHECK(check_includes("quant/x.cpp", "quant", "#include \"models/model.h\"\n").empty());
  CHECK(check_includes("data/x.cpp", "data", "#include \"plugins/x.h\"\n").size() == 1);
}

TEST_CASE("test_layering: no source file includes a higher layer (docs/architecture.md)") {
  namespace fs = std::filesystem;
  const fs::path root = QTLAB_SOURCE_DIR;
  int files = 0;
  std::vector<Violation> violations;
  for (const fs::directory_entry& top : fs::directory_iterator(root)) {
    if (!top.is_directory()) continue;
    const std::string layer = top.path().filename().string();
    if (layer_ranks().count(layer) == 0) continue;  // tests, docs, build, ...
    for (const fs::directory_entry& entry : fs::recursive_directory_iterator(top.path())) {
      const std::string ext = entry.path().extension().string();
      if (!entry.is_regular_file() || (ext != ".h" && ext != ".cpp")) continue;
      ++files;
      const std::string file = fs::relative(entry.path(), root).string();
      for (Violation& v : check_includes(file, layer, read_text(entry.path())))
        violations.push_back(std::move(v));
    }
  }
  CHECK(files > 100);  // the tree was found
  for (const Violation& v : violations) {
    INFO(v.file << ":" << v.line << ": " << v.include);
    CHECK_MESSAGE(false, "a lower layer includes a higher one");
  }
}
