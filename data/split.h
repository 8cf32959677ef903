// The two data splits. Which samples belong to which is fixed per dataset and documented in
// data/README.md: text — held-out books and Brown genres (text_corpus.h); images — the official
// train and test files (image_dataset.h).
#pragma once

#include <string_view>

namespace qt::data {

enum class Split { train, validation };

constexpr std::string_view split_name(Split split) {
  return split == Split::train ? "train" : "validation";
}

}  // namespace qt::data
