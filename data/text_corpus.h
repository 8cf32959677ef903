// The text corpus: Project Gutenberg books and Brown Corpus samples as fetched by
// tools/fetch_data.sh into DATA_DIR/text/{gutenberg,brown}/*.txt, cut into documents, with a fixed
// train / validation split.
//
// Document = one paragraph: a maximal run of non-blank lines, with every whitespace run (the hard
// line breaks of the printed page included) collapsed to one space. Paragraphs are the closest
// thing these sources have to the paper's texts (a BookCorpus line, a wiki40b paragraph block),
// and each becomes [CLS] ... [SEP] for BERT or </s> ... for OPT (token_blocks.h).
//
// Split (whole books / whole genres, so validation text is never seen in training, not even as a
// neighbouring paragraph):
//   validation = Gutenberg books "austen-persuasion" and "chesterton-thursday"
//                + Brown genre L (mystery and detective fiction, samples cl01 .. cl24);
//   train      = the other 16 books and 476 Brown samples.
// Both held-out parts have siblings in training (two other Austen novels, two other Chesterton
// books, Brown's other fiction genres K, N, P), so validation measures generalisation to unseen
// text of familiar kinds. About 6% of the bytes are held out.
#pragma once

#include <array>
#include <string>
#include <string_view>
#include <vector>

#include "data/split.h"

namespace qt::data {

inline constexpr std::array<std::string_view, 2> kValidationBooks = {"austen-persuasion",
                                                                     "chesterton-thursday"};
inline constexpr std::string_view kValidationBrownGenres = "l";  // the letter after "c" in "cl01"

struct TextDocument {
  std::string source;  // "gutenberg/austen-emma", "brown/ca01"
  std::string text;
};

// The paragraphs of a text (see above), in order.
std::vector<std::string> split_paragraphs(std::string_view raw_text);

// Does this file (a book name like "austen-emma" or a Brown sample name like "cl05") belong to the
// validation split?
bool is_validation_book(std::string_view book);
bool is_validation_brown_sample(std::string_view sample);

// The documents of one split, in a fixed order: Gutenberg books by file name, then Brown samples
// by file name, paragraphs in text order. Throws (naming the directory and `make data`) when the
// data is missing or a held-out book or genre is absent.
std::vector<TextDocument> load_text_documents(const std::string& data_dir, Split split);

}  // namespace qt::data
