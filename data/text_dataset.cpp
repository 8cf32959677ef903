// Text data preparation: documents -> tokenizer -> blocks (see text_dataset.h).
#include "data/text_dataset.h"

#include <filesystem>

#include "tensor/error.h"

namespace qt::data {

std::string default_tokenizer_path(const std::string& data_dir, int64_t vocab_size) {
  return (std::filesystem::path(data_dir) / fmt::format("tokenizer-{}.json", vocab_size)).string();
}

Tokenizer load_or_train_tokenizer(const std::string& path,
                                  const std::vector<TextDocument>& training_documents,
                                  int64_t vocab_size) {
  if (std::filesystem::exists(path)) {
    Tokenizer tokenizer = Tokenizer::load(path);
    QT_CHECK(tokenizer.vocab_size() == vocab_size,
             "load_or_train_tokenizer: '{}' has {} tokens, but {} were asked for (remove the file "
             "to train a new tokenizer, or use another path)",
             path, tokenizer.vocab_size(), vocab_size);
    return tokenizer;
  }
  std::vector<std::string> texts;
  texts.reserve(training_documents.size());
  for (const TextDocument& document : training_documents) texts.push_back(document.text);
  Tokenizer tokenizer = Tokenizer::train(texts, vocab_size);
  QT_CHECK(tokenizer.vocab_size() == vocab_size,
           "load_or_train_tokenizer: the training text yields only {} tokens (pairs occurring at "
           "least twice), fewer than the {} asked for",
           tokenizer.vocab_size(), vocab_size);
  const std::filesystem::path parent = std::filesystem::path(path).parent_path();
  if (!parent.empty()) std::filesystem::create_directories(parent);
  tokenizer.save(path);
  return tokenizer;
}

TokenBlocks make_text_blocks(const Tokenizer& tokenizer, const std::vector<TextDocument>& documents,
                             int64_t sequence_length, TextObjective objective) {
  std::vector<std::string> texts;
  texts.reserve(documents.size());
  for (const TextDocument& document : documents) texts.push_back(document.text);
  const std::vector<std::vector<int32_t>> encoded = tokenizer.encode_all(texts);
  static constexpr int32_t cls[] = {kClsId};
  static constexpr int32_t sep[] = {kSepId};
  static constexpr int32_t end_of_text[] = {kEndOfTextId};
  if (objective == TextObjective::masked_lm)
    return make_token_blocks(encoded, cls, sep, sequence_length);
  return make_token_blocks(encoded, end_of_text, {}, sequence_length);
}

TextData load_text_data(const TextDataOptions& options) {
  const std::vector<TextDocument> train = load_text_documents(options.data_dir, Split::train);
  const std::vector<TextDocument> validation =
      load_text_documents(options.data_dir, Split::validation);
  TextData data;
  data.tokenizer_path = options.tokenizer_path.empty()
                            ? default_tokenizer_path(options.data_dir, options.vocab_size)
                            : options.tokenizer_path;
  data.tokenizer = load_or_train_tokenizer(data.tokenizer_path, train, options.vocab_size);
  data.train = make_text_blocks(data.tokenizer, train, options.sequence_length, options.objective);
  data.validation =
      make_text_blocks(data.tokenizer, validation, options.sequence_length, options.objective);
  return data;
}

}  // namespace qt::data
