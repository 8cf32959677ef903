// Loading the text corpus and cutting it into paragraph documents (see text_corpus.h).
#include "data/text_corpus.h"

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <sstream>

#include "tensor/error.h"

namespace qt::data {

namespace {

bool is_blank(char c) {
  return c == ' ' || c == '\t' || c == '\r' || c == '\v' || c == '\f';
}

// The *.txt files of a directory, sorted by name.
std::vector<std::filesystem::path> text_files(const std::filesystem::path& dir) {
  QT_CHECK(std::filesystem::is_directory(dir),
           "load_text_documents: directory '{}' not found: run `make data` (tools/fetch_data.sh) "
           "or point data.dir at the downloads",
           dir.string());
  std::vector<std::filesystem::path> files;
  for (const auto& entry : std::filesystem::directory_iterator(dir))
    if (entry.is_regular_file() && entry.path().extension() == ".txt")
      files.push_back(entry.path());
  std::sort(files.begin(), files.end());
  QT_CHECK(!files.empty(), "load_text_documents: no .txt files in '{}': run `make data`",
           dir.string());
  return files;
}

std::string read_file(const std::filesystem::path& path) {
  std::ifstream in(path, std::ios::binary);
  QT_CHECK(in.is_open(), "load_text_documents: cannot open '{}'", path.string());
  std::stringstream buffer;
  buffer << in.rdbuf();
  return buffer.str();
}

void add_documents(const std::string& source, const std::string& raw,
                   std::vector<TextDocument>& documents) {
  for (std::string& paragraph : split_paragraphs(raw))
    documents.push_back({source, std::move(paragraph)});
}

}  // namespace

std::vector<std::string> split_paragraphs(std::string_view raw_text) {
  std::vector<std::string> paragraphs;
  std::string current;
  size_t line_start = 0;
  while (line_start <= raw_text.size()) {
    size_t line_end = raw_text.find('\n', line_start);
    if (line_end == std::string_view::npos) line_end = raw_text.size();
    const std::string_view line = raw_text.substr(line_start, line_end - line_start);
    bool line_is_blank = true;
    // Append the line's whitespace-separated words, one space between words.
    size_t i = 0;
    while (i < line.size()) {
      while (i < line.size() && is_blank(line[i])) ++i;
      const size_t word_start = i;
      while (i < line.size() && !is_blank(line[i])) ++i;
      if (i > word_start) {
        if (!current.empty()) current += ' ';
        current.append(line.substr(word_start, i - word_start));
        line_is_blank = false;
      }
    }
    if (line_is_blank && !current.empty()) {
      paragraphs.push_back(std::move(current));
      current.clear();
    }
    line_start = line_end + 1;
  }
  if (!current.empty()) paragraphs.push_back(std::move(current));
  return paragraphs;
}

bool is_validation_book(std::string_view book) {
  return std::find(kValidationBooks.begin(), kValidationBooks.end(), book) !=
         kValidationBooks.end();
}

bool is_validation_brown_sample(std::string_view sample) {
  return sample.size() >= 2 && kValidationBrownGenres.find(sample[1]) != std::string_view::npos;
}

std::vector<TextDocument> load_text_documents(const std::string& data_dir, Split split) {
  const std::filesystem::path text_dir = std::filesystem::path(data_dir) / "text";
  const bool want_validation = split == Split::validation;
  std::vector<TextDocument> documents;

  int validation_books_found = 0;
  for (const auto& path : text_files(text_dir / "gutenberg")) {
    const std::string book = path.stem().string();
    const bool held_out = is_validation_book(book);
    validation_books_found += held_out;
    if (held_out == want_validation) add_documents("gutenberg/" + book, read_file(path), documents);
  }
  QT_CHECK(validation_books_found == static_cast<int>(kValidationBooks.size()),
           "load_text_documents: '{}' lacks a held-out book ({}): run `make data`",
           (text_dir / "gutenberg").string(), fmt::join(kValidationBooks, ", "));

  int validation_samples_found = 0;
  for (const auto& path : text_files(text_dir / "brown")) {
    const std::string sample = path.stem().string();
    const bool held_out = is_validation_brown_sample(sample);
    validation_samples_found += held_out;
    if (held_out == want_validation) add_documents("brown/" + sample, read_file(path), documents);
  }
  QT_CHECK(validation_samples_found > 0,
           "load_text_documents: '{}' has no sample of the held-out genre(s) '{}': run `make data`",
           (text_dir / "brown").string(), kValidationBrownGenres);
  return documents;
}

}  // namespace qt::data
