// Everything a text run needs, from the downloads to token blocks:
//
//   documents of each split (text_corpus.h)
//   -> tokenizer: loaded from tokenizer_path, or trained on the training documents and saved there
//   -> encoded documents -> blocks of T tokens (token_blocks.h):
//        masked LM (BERT): [CLS] doc [SEP] ...     causal LM (OPT): </s> doc ...
//
// Then a BatchLoader (batch_loader.h) draws batches with make_mlm_batch / make_causal_lm_batch.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "data/text_corpus.h"
#include "data/token_blocks.h"
#include "data/tokenizer.h"

namespace qt::data {

enum class TextObjective { masked_lm, causal_lm };

struct TextDataOptions {
  std::string data_dir = "data/downloads";
  std::string tokenizer_path;  // empty: default_tokenizer_path(data_dir, vocab_size)
  int64_t vocab_size = 8192;
  int64_t sequence_length = 128;
  TextObjective objective = TextObjective::masked_lm;
};

struct TextData {
  Tokenizer tokenizer;
  std::string tokenizer_path;
  TokenBlocks train;
  TokenBlocks validation;
};

// DATA_DIR/tokenizer-<vocab_size>.json: training is deterministic, so runs with the same corpus and
// vocabulary size share one file.
std::string default_tokenizer_path(const std::string& data_dir, int64_t vocab_size);

// Loads the tokenizer at `path` (its vocabulary must have exactly vocab_size tokens), or trains one
// on the documents and saves it there atomically (the corpus must yield vocab_size tokens).
Tokenizer load_or_train_tokenizer(const std::string& path,
                                  const std::vector<TextDocument>& training_documents,
                                  int64_t vocab_size);

// Encodes the documents and cuts them into blocks with the objective's boundary tokens.
TokenBlocks make_text_blocks(const Tokenizer& tokenizer, const std::vector<TextDocument>& documents,
                             int64_t sequence_length, TextObjective objective);

TextData load_text_data(const TextDataOptions& options);

}  // namespace qt::data
