// Tests for data/text_corpus.*, data/token_blocks.*, data/causal_lm_batches.* and
// data/text_dataset.*: paragraph splitting and the train/validation split on a hand-built corpus
// directory, block boundaries against hand-written token streams, causal-LM label shifting, and
// the tokenizer train-or-load step.
#include <doctest/doctest.h>

#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include <unistd.h>

#include "data/causal_lm_batches.h"
#include "data/text_corpus.h"
#include "data/text_dataset.h"
#include "data/token_blocks.h"
#include "data/tokenizer.h"
#include "tensor/create.h"
#include "tensor/error.h"

#include "tests/test_util.h"

using namespace qt;

namespace {

std::filesystem::path test_directory() {
  return qt::test::scratch_directory("text_corpus");
}

void write_text(const std::filesystem::path& path, const std::string& text) {
  std::filesystem::create_directories(path.parent_path());
  std::ofstream(path, std::ios::binary | std::ios::trunc) << text;
}

// A miniature of DATA_DIR/text: three books (two held out) and three Brown samples (one of
// genre L, held out).
std::string make_corpus(const std::string& name) {
  const std::filesystem::path root = test_directory() / name;
  const std::filesystem::path gutenberg = root / "text" / "gutenberg";
  const std::filesystem::path brown = root / "text" / "brown";
  write_text(gutenberg / "austen-emma.txt",
             "[Emma by Jane Austen 1816]\n\nEmma Woodhouse, handsome, clever,\nand rich.\n\n\n"
             "She was the youngest of the two daughters.\n");
  write_text(gutenberg / "austen-persuasion.txt", "Sir Walter Elliot, of Kellynch Hall.\n");
  write_text(gutenberg / "chesterton-thursday.txt",
             "The suburb of Saffron Park lay on the "
             "sunset side of London.\n");
  write_text(gutenberg / "README", "not a book\n");
  write_text(brown / "ca01.txt",
             "\n\n\tThe Fulton County Grand Jury said Friday .\n\n\n"
             "\tThe jury further said .\nIt was so .\n");
  write_text(brown / "cl01.txt", "\n\n\tThe detective smiled .\n");
  write_text(brown / "cr09.txt", "\n\n\tA funny thing happened .\n");
  return root.string();
}

std::vector<std::string> texts_of(const std::vector<data::TextDocument>& documents) {
  std::vector<std::string> texts;
  for (const auto& document : documents) texts.push_back(document.text);
  return texts;
}

}  // namespace

TEST_CASE("text_corpus: paragraphs are blocks of non-blank lines with whitespace collapsed") {
  using V = std::vector<std::string>;
  CHECK(data::split_paragraphs("one line") == V{"one line"});
  CHECK(data::split_paragraphs("a b\nc\td\n\ne  f\n") == V{"a b c d", "e f"});
  CHECK(data::split_paragraphs("\n\n  \t \n\nx\r\ny\r\n\r\n\r\nz") == V{"x y", "z"});
  CHECK(data::split_paragraphs("   \n \n").empty());
  CHECK(data::split_paragraphs("").empty());
}

TEST_CASE("text_corpus: the fixed split holds out two books and Brown genre L") {
  CHECK(data::is_validation_book("austen-persuasion"));
  CHECK(data::is_validation_book("chesterton-thursday"));
  CHECK_FALSE(data::is_validation_book("austen-emma"));
  CHECK(data::is_validation_brown_sample("cl01"));
  CHECK(data::is_validation_brown_sample("cl24"));
  CHECK_FALSE(data::is_validation_brown_sample("ck01"));
  CHECK_FALSE(data::is_validation_brown_sample("ca01"));
}

TEST_CASE("text_corpus: loads the documents of each split in file order") {
  const std::string dir = make_corpus("split");
  const std::vector<data::TextDocument> train = data::load_text_documents(dir, data::Split::train);
  const std::vector<data::TextDocument> validation =
      data::load_text_documents(dir, data::Split::validation);
  using V = std::vector<std::string>;
  CHECK(texts_of(train) == V{"[Emma by Jane Austen 1816]",
                             "Emma Woodhouse, handsome, clever, and rich.",
                             "She was the youngest of the two daughters.",
                             "The Fulton County Grand Jury said Friday .",
                             "The jury further said . It was so .", "A funny thing happened ."});
  CHECK(train[0].source == "gutenberg/austen-emma");
  CHECK(train[3].source == "brown/ca01");
  CHECK(train[5].source == "brown/cr09");
  CHECK(texts_of(validation) == V{"Sir Walter Elliot, of Kellynch Hall.",
                                  "The suburb of Saffron Park lay on the sunset side of London.",
                                  "The detective smiled ."});
  CHECK(validation[2].source == "brown/cl01");
}

TEST_CASE("text_corpus: missing data and missing held-out parts are errors that say `make data`") {
  CHECK_THROWS_WITH_AS(
      data::load_text_documents((test_directory() / "void").string(), data::Split::train),
      doctest::Contains("make data"), Error);
  const std::string dir = make_corpus("no_persuasion");
  std::filesystem::remove(std::filesystem::path(dir) / "text" / "gutenberg" /
                          "austen-persuasion.txt");
  CHECK_THROWS_WITH_AS(data::load_text_documents(dir, data::Split::train),
                       doctest::Contains("held-out book"), Error);
  const std::string dir2 = make_corpus("no_genre_l");
  std::filesystem::remove(std::filesystem::path(dir2) / "text" / "brown" / "cl01.txt");
  CHECK_THROWS_WITH_AS(data::load_text_documents(dir2, data::Split::validation),
                       doctest::Contains("held-out genre"), Error);
}

TEST_CASE("token_blocks: documents are wrapped, concatenated and cut at exact boundaries") {
  const std::vector<std::vector<int32_t>> documents = {{10, 11, 12}, {13}, {14, 15}};
  const int32_t cls[] = {data::kClsId};
  const int32_t sep[] = {data::kSepId};
  // Stream: CLS 10 11 12 SEP CLS 13 SEP CLS 14 15 SEP  (12 tokens).
  const data::TokenBlocks four = data::make_token_blocks(documents, cls, sep, 4);
  CHECK(four.num_blocks() == 3);
  CHECK(four.dropped_tokens == 0);
  CHECK(std::vector<int32_t>(four.block(1).begin(), four.block(1).end()) ==
        std::vector<int32_t>{3, 2, 13, 3});
  const data::TokenBlocks five = data::make_token_blocks(documents, cls, sep, 5);
  CHECK(five.num_blocks() == 2);
  CHECK(five.dropped_tokens == 2);
  CHECK(std::vector<int32_t>(five.block(1).begin(), five.block(1).end()) ==
        std::vector<int32_t>{2, 13, 3, 2, 14});
  const data::TokenBlocks too_long = data::make_token_blocks(documents, cls, sep, 13);
  CHECK(too_long.num_blocks() == 0);
  CHECK(too_long.dropped_tokens == 12);
  // OPT: </s> before every document, nothing after: </s> 10 11 12 </s> 13 </s> 14 15.
  const int32_t eos[] = {data::kEndOfTextId};
  const data::TokenBlocks causal = data::make_token_blocks(documents, eos, {}, 3);
  CHECK(causal.tokens == std::vector<int32_t>{5, 10, 11, 12, 5, 13, 5, 14, 15});
  CHECK_THROWS_AS(four.block(3), Error);
  CHECK_THROWS_AS(data::make_token_blocks(documents, cls, sep, 0), Error);
}

TEST_CASE("causal_lm_batches: labels are the next token, the last position ignored") {
  data::TokenBlocks blocks;
  blocks.block_length = 4;
  blocks.tokens = {5, 10, 11, 12, 5, 13, 5, 14};
  const std::vector<int64_t> indices = {1, 0};
  const data::Batch batch = data::make_causal_lm_batch(blocks, indices);
  CHECK(batch.input_ids.shape() == Shape{2, 4});
  CHECK(ops::to_vector<int64_t>(batch.input_ids) ==
        std::vector<int64_t>{5, 13, 5, 14, 5, 10, 11, 12});
  CHECK(ops::to_vector<int64_t>(batch.labels) ==
        std::vector<int64_t>{13, 5, 14, -100, 10, 11, 12, -100});
  const std::vector<int64_t> bad = {2};
  CHECK_THROWS_AS(data::make_causal_lm_batch(blocks, bad), Error);
}

TEST_CASE("text_dataset: trains the tokenizer once, saves it, and loads it afterwards") {
  const std::string dir = make_corpus("dataset");
  data::TextDataOptions options;
  options.data_dir = dir;
  options.vocab_size = data::kFirstMergeId + 20;
  options.sequence_length = 8;
  const data::TextData first = data::load_text_data(options);
  CHECK(first.tokenizer_path == data::default_tokenizer_path(dir, options.vocab_size));
  CHECK(std::filesystem::exists(first.tokenizer_path));
  CHECK(first.tokenizer.vocab_size() == options.vocab_size);
  CHECK(first.train.num_blocks() > 0);
  CHECK(first.validation.num_blocks() > 0);
  CHECK(first.train.block_length == 8);
  // The training stream starts with [CLS] and the first document's tokens; decoding it (without
  // specials) gives the document's text back.
  CHECK(first.train.tokens[0] == data::kClsId);
  const std::string start = first.tokenizer.decode(first.train.block(0), true);
  CHECK(std::string("[Emma by Jane Austen 1816]").rfind(start, 0) == 0);

  const data::TextData second = data::load_text_data(options);  // loads the saved file
  CHECK(second.tokenizer.fingerprint() == first.tokenizer.fingerprint());
  CHECK(second.train.tokens == first.train.tokens);

  // OPT blocks: </s> before each document.
  options.objective = data::TextObjective::causal_lm;
  const data::TextData causal = data::load_text_data(options);
  CHECK(causal.train.tokens[0] == data::kEndOfTextId);

  // The saved tokenizer has another size than asked for: an error that names the file.
  const std::vector<data::TextDocument> documents =
      data::load_text_documents(dir, data::Split::train);
  CHECK_THROWS_WITH_AS(
      data::load_or_train_tokenizer(first.tokenizer_path, documents, options.vocab_size + 1),
      doctest::Contains(first.tokenizer_path.c_str()), Error);
  // A corpus too small for the vocabulary.
  CHECK_THROWS_WITH_AS(
      data::load_or_train_tokenizer((test_directory() / "big.json").string(), documents, 5000),
      doctest::Contains("fewer than the 5000"), Error);
}
