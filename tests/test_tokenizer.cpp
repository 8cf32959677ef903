// Tests for data/pretokenize.*, data/bpe_training.* and data/tokenizer.*: pre-tokenisation against
// hand-written splits (GPT-2 rules), BPE merges against a sequence computed by hand, encoding
// against hand-derived segmentations, exact round trips on tricky byte strings, determinism,
// save/load, and every kind of corrupt vocabulary file.
#include <doctest/doctest.h>

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <random>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include <unistd.h>

#include "data/bpe_training.h"
#include "data/pretokenize.h"
#include "data/tokenizer.h"
#include "tensor/error.h"
#include "tensor/threads.h"

#include "tests/mutations.h"
#include "tests/test_util.h"

using namespace qt;
using data::Merge;
using data::Tokenizer;

namespace {

std::filesystem::path test_directory() {
  return qt::test::scratch_directory("tokenizer");
}

std::vector<std::string> words_of(std::string_view text) {
  std::vector<std::string> words;
  for (std::string_view word : data::pretokenize(text)) words.emplace_back(word);
  return words;
}

int32_t byte_id(char c) {
  return data::kFirstByteId + static_cast<unsigned char>(c);
}

std::string read_text(const std::filesystem::path& path) {
  std::ifstream in(path, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(in), {});
}

void write_text(const std::filesystem::path& path, const std::string& text) {
  std::ofstream(path, std::ios::binary | std::ios::trunc) << text;
}

// A small English-like corpus for end-to-end tests.
std::vector<std::string> small_corpus() {
  return {"The quick brown fox jumps over the lazy dog. The dog sleeps; the fox doesn't.",
          "It's a truth universally acknowledged, that a single man in possession of a good "
          "fortune, must be in want of a wife.",
          "In 1961 the Brown Corpus held 1,014,312 words -- from 500 samples of 2,000+ words!",
          "The the the then there these those thesis theses, thermal thermos."};
}

}  // namespace

TEST_CASE("tokenizer: pretokenize follows the GPT-2 rules on hand-checked strings") {
  using V = std::vector<std::string>;
  CHECK(words_of("Hello world") == V{"Hello", " world"});
  CHECK(words_of("don't stop, we'll see") == V{"don", "'t", " stop", ",", " we", "'ll", " see"});
  CHECK(words_of("Price: $12.50!") == V{"Price", ":", " $", "12", ".", "50", "!"});
  CHECK(words_of("a  b") == V{"a", " ", " b"});
  CHECK(words_of("x\n\ny") == V{"x", "\n", "\n", "y"});
  CHECK(words_of("x \n y") == V{"x", " \n", " y"});
  CHECK(words_of("end  ") == V{"end", "  "});
  CHECK(words_of("  lead") == V{" ", " lead"});
  CHECK(words_of("naïve café") == V{"naïve", " café"});  // UTF-8 bytes count as letters
  CHECK(words_of("abc123def") == V{"abc", "123", "def"});
  CHECK(words_of("``quoted''") == V{"``", "quoted", "''"});
  CHECK(words_of("'s'") == V{"'s", "'"});
  CHECK(words_of("").empty());
}

TEST_CASE("tokenizer: pre-tokenised words partition any byte string") {
  std::mt19937 generator(17);
  // Bytes drawn from a small alphabet rich in boundary cases.
  const std::string alphabet = std::string("ab Z09'.,!\n\t\r-") + "\xc3\xa9" + '\0' + "\xff";
  std::uniform_int_distribution<size_t> pick(0, alphabet.size() - 1);
  std::uniform_int_distribution<int> length(0, 40);
  for (int trial = 0; trial < 500; ++trial) {
    std::string text;
    for (int i = length(generator); i > 0; --i) text += alphabet[pick(generator)];
    std::string joined;
    for (std::string_view word : data::pretokenize(text)) {
      REQUIRE(!word.empty());
      joined += word;
    }
    REQUIRE(joined == text);
  }
}

TEST_CASE("tokenizer: train_bpe reproduces a hand-computed merge sequence") {
  // Word counts of the classic example: hug 10, pug 5, pun 12, bun 4, hugs 5.
  //   pair counts: ug 20, pu 17, un 16, hu 15, gs 5, bu 4             -> merge (u, g)   [20]
  //   then: un 16, hug 15, pug 5, pu 12, ugs 5, bu 4                   -> merge (u, n)   [16]
  //   then: h+ug 15, p+un 12, p+ug 5, ug+s 5, b+un 4                   -> merge (h, ug)  [15]
  //   then: p+un 12, p+ug 5, hug+s 5, b+un 4                           -> merge (p, un)  [12]
  //   then: p+ug 5 and hug+s 5 tie; "hug" < "p"                        -> merge (hug, s) [5]
  //   then:                                                            -> merge (p, ug)  [5]
  //   then:                                                            -> merge (b, un)  [4]
  // after which every word is one token.
  const data::WordCounts counts = {{"hug", 10}, {"pug", 5}, {"pun", 12}, {"bun", 4}, {"hugs", 5}};
  const data::BpeTrainingResult result = data::train_bpe(counts, 1000, 1);
  const int32_t ug = data::kFirstMergeId, un = ug + 1, hug = ug + 2, pun = ug + 3, hugs = ug + 4;
  const std::vector<Merge> expected = {{byte_id('u'), byte_id('g')},
                                       {byte_id('u'), byte_id('n')},
                                       {byte_id('h'), ug},
                                       {byte_id('p'), un},
                                       {hug, byte_id('s')},
                                       {byte_id('p'), ug},
                                       {byte_id('b'), un}};
  CHECK(result.merges == expected);
  CHECK(result.merge_counts == std::vector<int64_t>{20, 16, 15, 12, 5, 5, 4});

  // The vocabulary size caps the number of merges; min_pair_count stops early.
  CHECK(data::train_bpe(counts, data::kFirstMergeId + 3, 1).merges.size() == 3);
  CHECK(data::train_bpe(counts, 1000, 13).merges.size() == 3);  // counts 20, 16, 15 >= 13

  // Encoding replays the merges: "hugs" is one token; "bugs" -> b ug s; "hugging" -> hug g i n g.
  const Tokenizer tokenizer(result.merges);
  CHECK(tokenizer.vocab_size() == data::kFirstMergeId + 7);
  CHECK(tokenizer.token_bytes(hugs) == "hugs");
  CHECK(tokenizer.token_bytes(pun) == "pun");
  CHECK(tokenizer.encode("hugs") == std::vector<int32_t>{hugs});
  CHECK(tokenizer.encode("bugs") == std::vector<int32_t>{byte_id('b'), ug, byte_id('s')});
  CHECK(tokenizer.encode("hugging") ==
        std::vector<int32_t>{hug, byte_id('g'), byte_id('i'), byte_id('n'), byte_id('g')});
}

TEST_CASE("tokenizer: merges apply left to right without overlap, in training and encoding") {
  // "aaaaa" x 3 has 4 overlapping (a, a) per word -> count 12; merged left to right it becomes
  // aa aa a, whose pairs (aa, aa) and (aa, a) both count 3; the tie goes to (aa, a) because
  // bytes "a" < "aa"; then aa aaa -> (aa, aaa).
  const data::WordCounts counts = {{"aaaaa", 3}};
  const data::BpeTrainingResult result = data::train_bpe(counts, 1000, 1);
  const int32_t aa = data::kFirstMergeId, aaa = aa + 1, aaaaa = aa + 2;
  const std::vector<Merge> expected = {{byte_id('a'), byte_id('a')}, {aa, byte_id('a')}, {aa, aaa}};
  CHECK(result.merges == expected);
  CHECK(result.merge_counts == std::vector<int64_t>{12, 3, 3});
  const Tokenizer tokenizer(result.merges);
  CHECK(tokenizer.encode("aaa") == std::vector<int32_t>{aaa});
  CHECK(tokenizer.encode("aaaa") == std::vector<int32_t>{aa, aa});  // (aa, aa) is no merge
  CHECK(tokenizer.encode("aaaaa") == std::vector<int32_t>{aaaaa});
}

TEST_CASE("tokenizer: ties are broken lexicographically, independent of insertion order") {
  data::WordCounts forward, backward;
  const std::vector<std::pair<std::string, int64_t>> words = {
      {"cd", 3}, {"ab", 3}, {"xy", 3}, {"ba", 3}, {"\xff\x01", 3}, {"B!", 3}};
  for (const auto& [word, count] : words) forward[word] = count;
  for (auto it = words.rbegin(); it != words.rend(); ++it) backward[it->first] = it->second;
  const std::vector<Merge> merges = data::train_bpe(forward, 1000).merges;
  CHECK(merges == data::train_bpe(backward, 1000).merges);
  // Byte order (unsigned): "B" (0x42) < "a" < "b" < "c" < "x" < 0xff.
  const std::vector<Merge> expected = {
      {byte_id('B'), byte_id('!')}, {byte_id('a'), byte_id('b')},
      {byte_id('b'), byte_id('a')}, {byte_id('c'), byte_id('d')},
      {byte_id('x'), byte_id('y')}, {byte_id('\xff'), byte_id('\x01')}};
  CHECK(merges == expected);
}

TEST_CASE("tokenizer: decode(encode(text)) == text for tricky strings") {
  const Tokenizer tokenizer = Tokenizer::train(small_corpus(), data::kFirstMergeId + 40);
  CHECK(tokenizer.vocab_size() == data::kFirstMergeId + 40);
  const std::vector<std::string> texts = {
      "",
      " ",
      "   \t\n\n  \r\n",
      "The quick brown fox -- doesn't!!! ...",
      "naïve café, Ærøskøbing, 日本語のテキスト, emoji 😀👍🏽",
      std::string("nul\0byte", 8),
      "\xff\xfe invalid UTF-8 \xc3",
      "[MASK] [CLS] </s> are just text here",
      "tab\tseparated\tvalues\nand\r\nCRLF",
      std::string(300, ' ') + "x" + std::string(100, '!'),
      "1,014,312 words in 1961; 3.14159e-10",
  };
  for (const std::string& text : texts) {
    const std::vector<int32_t> ids = tokenizer.encode(text);
    for (int32_t id : ids) REQUIRE(!data::is_special_token(id));
    CHECK(tokenizer.decode(ids) == text);
  }
  // Merges shorten common text: fewer tokens than bytes.
  CHECK(tokenizer.encode(small_corpus()[0]).size() < small_corpus()[0].size());
}

TEST_CASE("tokenizer: encode_all equals encode text by text") {
  const Tokenizer tokenizer = Tokenizer::train(small_corpus(), data::kFirstMergeId + 40);
  std::vector<std::string> texts;
  for (int copy = 0; copy < 50; ++copy)  // > 64 texts: the parallel path
    for (const std::string& text : small_corpus()) texts.push_back(text + std::to_string(copy));
  const std::vector<std::vector<int32_t>> all = tokenizer.encode_all(texts);
  REQUIRE(all.size() == texts.size());
  for (size_t i = 0; i < texts.size(); ++i) REQUIRE(all[i] == tokenizer.encode(texts[i]));
  // The same with one and with two threads.
  const int threads = num_threads();
  set_num_threads(1);
  const std::vector<std::vector<int32_t>> one_thread = tokenizer.encode_all(texts);
  set_num_threads(2);
  const std::vector<std::vector<int32_t>> two_threads = tokenizer.encode_all(texts);
  set_num_threads(threads);
  CHECK(one_thread == all);
  CHECK(two_threads == all);
}

TEST_CASE("tokenizer: decode of special tokens, skip_special, bad ids") {
  const Tokenizer tokenizer;
  CHECK(tokenizer.vocab_size() == data::kFirstMergeId);
  const std::vector<int32_t> ids = {data::kClsId, byte_id('h'), byte_id('i'), data::kSepId,
                                    data::kEndOfTextId};
  CHECK(tokenizer.decode(ids) == "[CLS]hi[SEP]</s>");
  CHECK(tokenizer.decode(ids, true) == "hi");
  const std::vector<int32_t> bad = {byte_id('a'), data::kFirstMergeId};
  CHECK_THROWS_WITH_AS(tokenizer.decode(bad), doctest::Contains("position 1"), Error);
  CHECK_THROWS_AS(tokenizer.token_bytes(-1), Error);
}

TEST_CASE("tokenizer: training is deterministic and independent of text order") {
  std::vector<std::string> texts = small_corpus();
  const Tokenizer first = Tokenizer::train(texts, data::kFirstMergeId + 30);
  const Tokenizer second = Tokenizer::train(texts, data::kFirstMergeId + 30);
  std::reverse(texts.begin(), texts.end());
  const Tokenizer reversed = Tokenizer::train(texts, data::kFirstMergeId + 30);
  CHECK(first.merges() == second.merges());
  CHECK(first.merges() == reversed.merges());
  CHECK(first.fingerprint() == reversed.fingerprint());
  const Tokenizer smaller = Tokenizer::train(texts, data::kFirstMergeId + 29);
  CHECK(smaller.fingerprint() != first.fingerprint());
}

TEST_CASE("tokenizer: save and load give the same tokenizer; the write is atomic") {
  const Tokenizer tokenizer = Tokenizer::train(small_corpus(), data::kFirstMergeId + 30);
  const std::filesystem::path path = test_directory() / "vocab.json";
  tokenizer.save(path.string());
  const Tokenizer loaded = Tokenizer::load(path.string());
  CHECK(loaded.merges() == tokenizer.merges());
  CHECK(loaded.vocab_size() == tokenizer.vocab_size());
  CHECK(loaded.fingerprint() == tokenizer.fingerprint());
  for (const std::string& text : small_corpus())
    CHECK(loaded.encode(text) == tokenizer.encode(text));
  for (const auto& entry : std::filesystem::directory_iterator(test_directory()))
    CHECK(entry.path().filename().string().find(".tmp") == std::string::npos);
  // A bytes-only tokenizer round-trips too.
  const std::filesystem::path empty_path = test_directory() / "bytes_only.json";
  Tokenizer().save(empty_path.string());
  CHECK(Tokenizer::load(empty_path.string()).vocab_size() == data::kFirstMergeId);
}

TEST_CASE("tokenizer: corrupt vocabulary files are errors that say what is wrong") {
  const Tokenizer tokenizer = Tokenizer::train(small_corpus(), data::kFirstMergeId + 5);
  const std::filesystem::path good = test_directory() / "good.json";
  tokenizer.save(good.string());
  const std::string text = read_text(good);
  const std::filesystem::path bad = test_directory() / "bad.json";
  auto load_altered = [&](const std::string& from, const std::string& to) {
    std::string altered = text;
    const size_t at = altered.find(from);
    REQUIRE(at != std::string::npos);
    altered.replace(at, from.size(), to);
    write_text(bad, altered);
    return Tokenizer::load(bad.string());
  };
  const std::string first_merge =
      fmt::format("[{}, {}]", tokenizer.merges()[0].first, tokenizer.merges()[0].second);

  CHECK_THROWS_WITH_AS(Tokenizer::load((test_directory() / "absent.json").string()),
                       doctest::Contains("cannot open"), Error);
  write_text(bad, text.substr(0, text.size() / 2));
  CHECK_THROWS_WITH_AS(Tokenizer::load(bad.string()), doctest::Contains("not valid JSON"), Error);
  write_text(bad, "[1, 2]");
  CHECK_THROWS_WITH_AS(Tokenizer::load(bad.string()), doctest::Contains("JSON object"), Error);
  CHECK_THROWS_WITH_AS(load_altered("qtlab-byte-bpe", "wordpiece"), doctest::Contains("format"),
                       Error);
  CHECK_THROWS_WITH_AS(load_altered("\"version\": 1", "\"version\": 7"),
                       doctest::Contains("version 7"), Error);
  CHECK_THROWS_WITH_AS(load_altered("[MASK]", "[MSK]"), doctest::Contains("special_tokens"), Error);
  CHECK_THROWS_WITH_AS(load_altered("\"merges\"", "\"merged\""), doctest::Contains("\"merges\""),
                       Error);
  CHECK_THROWS_WITH_AS(load_altered(first_merge, "[6, 262]"),
                       doctest::Contains("earlier non-special"), Error);  // refers to itself
  CHECK_THROWS_WITH_AS(load_altered(first_merge, "[2, 7]"),
                       doctest::Contains("earlier non-special"), Error);  // [CLS] in a merge
  CHECK_THROWS_WITH_AS(load_altered(first_merge, "[6, \"x\"]"),
                       doctest::Contains("pair of integer ids"), Error);
  CHECK_THROWS_WITH_AS(load_altered(first_merge, "[6, 99999999999]"),
                       doctest::Contains("out of range"), Error);
  const std::string vocab = fmt::format("\"vocab_size\": {}", tokenizer.vocab_size());
  CHECK_THROWS_WITH_AS(load_altered(vocab, "\"vocab_size\": 300"), doctest::Contains("vocab_size"),
                       Error);
  // A valid but different merge: only the fingerprint notices.
  CHECK_THROWS_WITH_AS(load_altered(first_merge, "[6, 7]"), doctest::Contains("fingerprint"),
                       Error);
  // A repeated merge.
  const std::string second_merge =
      fmt::format("[{}, {}]", tokenizer.merges()[1].first, tokenizer.merges()[1].second);
  CHECK_THROWS_WITH_AS(load_altered(second_merge, first_merge), doctest::Contains("repeats"),
                       Error);
}

TEST_CASE("tokenizer: invalid training arguments and merges are rejected") {
  CHECK_THROWS_AS(data::train_bpe({{"ab", 1}}, data::kFirstMergeId - 1), Error);
  CHECK_THROWS_AS(data::train_bpe({{"ab", 0}}, 1000), Error);
  CHECK_THROWS_AS(data::train_bpe({{"ab", 1}}, 1000, 0), Error);
  CHECK_THROWS_AS(Tokenizer(std::vector<Merge>{{byte_id('a'), data::kFirstMergeId}}), Error);
  CHECK_THROWS_AS(Tokenizer(std::vector<Merge>{{data::kMaskId, byte_id('a')}}), Error);
}

TEST_CASE("tokenizer: token text escapes bytes that are not UTF-8, keeps valid text") {
  using qt::data::escape_invalid_utf8;
  // Valid text, 1- to 4-byte characters, is unchanged: "a", "é" (C3 A9), "€" (E2 82 AC), "😀"
  // (F0 9F 98 80).
  const std::string valid = "a\xC3\xA9\xE2\x82\xAC\xF0\x9F\x98\x80";
  CHECK(escape_invalid_utf8(valid) == valid);
  CHECK(escape_invalid_utf8("") == "");
  // A byte-level BPE token cut inside a character: lead byte alone, continuation alone.
  CHECK(escape_invalid_utf8("\xE2\x82") == "\\xe2\\x82");
  CHECK(escape_invalid_utf8("\x82\xAC x") == "\\x82\\xac x");
  // Bytes UTF-8 never uses, overlong forms, a surrogate, and a code point above U+10FFFF.
  CHECK(escape_invalid_utf8("\xF8") == "\\xf8");
  CHECK(escape_invalid_utf8("\xC0\xAF") == "\\xc0\\xaf");           // overlong '/'
  CHECK(escape_invalid_utf8("\xE0\x80\xAF") == "\\xe0\\x80\\xaf");  // overlong '/'
  CHECK(escape_invalid_utf8("\xED\xA0\x80") == "\\xed\\xa0\\x80");  // U+D800
  CHECK(escape_invalid_utf8("\xF4\x90\x80\x80") == "\\xf4\\x90\\x80\\x80");
  // The largest code points of each length are valid.
  CHECK(escape_invalid_utf8("\xDF\xBF\xEF\xBF\xBF\xF4\x8F\xBF\xBF") ==
        "\xDF\xBF\xEF\xBF\xBF\xF4\x8F\xBF\xBF");
  // Every token of a trained tokenizer gives text that JSON accepts (it throws on invalid UTF-8).
  const qt::data::Tokenizer tokenizer =
      qt::data::Tokenizer::train({"na\xC3\xAFve caf\xC3\xA9 \xE2\x82\xAC \xE2\x82\xAC"}, 300);
  for (int32_t id = 0; id < tokenizer.vocab_size(); ++id) {
    CAPTURE(id);
    CHECK_NOTHROW((void)nlohmann::json(tokenizer.token_text(id)).dump());
  }
  CHECK(tokenizer.token_text(qt::data::kNumSpecialTokens + 0xE2) == "\\xe2");
}

TEST_CASE("tokenizer: a deeply nested field is an error, not a stack overflow") {
  const std::filesystem::path bad = test_directory() / "deep.json";
  write_text(bad, "{\"format\": \"qtlab-byte-bpe\", \"merges\": " + std::string(100000, '[') +
                      std::string(100000, ']') + "}");
  CHECK_THROWS_WITH_AS(Tokenizer::load(bad.string()), doctest::Contains("nests 100001 levels"),
                       Error);
}

TEST_CASE("tokenizer: fuzz — 300 mutations of a valid file load or throw qt::Error") {
  const Tokenizer tokenizer = Tokenizer::train(small_corpus(), data::kFirstMergeId + 12);
  const std::filesystem::path good = test_directory() / "fuzz-good.json";
  tokenizer.save(good.string());
  const qt::test::FuzzOutcome outcome =
      qt::test::fuzz_reader(read_text(good), (test_directory() / "fuzz.json").string(), 300, 99,
                            [](const std::string& file) { Tokenizer::load(file); });
  CHECK(outcome.rejected > 150);
}
