// Byte-level BPE tokenizer (see tokenizer.h): encoding by merge rank, decoding by concatenation,
// the JSON vocabulary file.
#include "data/tokenizer.h"

#include <climits>
#include <fstream>
#include <sstream>

#include <nlohmann/json.hpp>

#include "data/pretokenize.h"
#include "tensor/atomic_file.h"
#include "tensor/error.h"
#include "tensor/json_parse.h"
#include "tensor/threads.h"

namespace qt::data {

namespace {

constexpr std::string_view kFormatName = "qtlab-byte-bpe";
constexpr int kFormatVersion = 1;

uint64_t pair_key(int32_t left, int32_t right) {
  return (uint64_t{static_cast<uint32_t>(left)} << 32) | static_cast<uint32_t>(right);
}

// Merges every non-overlapping (left, right) of `symbols` into `merged`, left to right.
void apply_merge(std::vector<int32_t>& symbols, int32_t left, int32_t right, int32_t merged) {
  size_t out = 0;
  for (size_t i = 0; i < symbols.size(); ++i) {
    if (i + 1 < symbols.size() && symbols[i] == left && symbols[i + 1] == right) {
      symbols[out++] = merged;
      ++i;
    } else {
      symbols[out++] = symbols[i];
    }
  }
  symbols.resize(out);
}

}  // namespace

Tokenizer::Tokenizer() : Tokenizer(std::vector<Merge>{}) {}

Tokenizer::Tokenizer(std::vector<Merge> merges) : merges_(std::move(merges)) {
  for (std::string_view name : kSpecialTokenNames) token_bytes_.emplace_back(name);
  for (int byte = 0; byte < 256; ++byte) token_bytes_.emplace_back(1, static_cast<char>(byte));
  merge_rank_.reserve(merges_.size());
  for (size_t rank = 0; rank < merges_.size(); ++rank) {
    const auto [left, right] = merges_[rank];
    const int64_t id = kFirstMergeId + static_cast<int64_t>(rank);
    QT_CHECK(left >= kFirstByteId && left < id && right >= kFirstByteId && right < id,
             "Tokenizer: merge {} (token {}) = ({}, {}) must join two earlier non-special tokens "
             "(ids in [{}, {}))",
             rank, id, left, right, kFirstByteId, id);
    const bool inserted = merge_rank_.emplace(pair_key(left, right), rank).second;
    QT_CHECK(inserted, "Tokenizer: merge {} = ({}, {}) repeats an earlier merge", rank, left,
             right);
    token_bytes_.push_back(token_bytes_[left] + token_bytes_[right]);
  }
}

Tokenizer Tokenizer::train(const std::vector<std::string>& texts, int64_t vocab_size) {
  return Tokenizer(train_bpe(count_words(texts), vocab_size).merges);
}

const std::string& Tokenizer::token_bytes(int32_t id) const {
  QT_CHECK(id >= 0 && id < vocab_size(), "Tokenizer::token_bytes: id {} is not in [0, {})", id,
           vocab_size());
  return token_bytes_[id];
}

std::vector<int32_t> Tokenizer::encode_word(std::string_view word) const {
  std::vector<int32_t> symbols;
  symbols.reserve(word.size());
  for (unsigned char byte : word) symbols.push_back(kFirstByteId + byte);
  // Apply the lowest-ranked merge present, until none applies. Ranks only increase along the
  // way (a new token can only take part in later merges), so this replays training's merges.
  while (symbols.size() > 1) {
    int64_t best_rank = INT64_MAX;
    for (size_t i = 0; i + 1 < symbols.size(); ++i) {
      const auto found = merge_rank_.find(pair_key(symbols[i], symbols[i + 1]));
      if (found != merge_rank_.end() && found->second < best_rank) best_rank = found->second;
    }
    if (best_rank == INT64_MAX) break;
    apply_merge(symbols, merges_[best_rank].first, merges_[best_rank].second,
                static_cast<int32_t>(kFirstMergeId + best_rank));
  }
  return symbols;
}

std::vector<int32_t> Tokenizer::encode(std::string_view text) const {
  std::vector<int32_t> ids;
  for (std::string_view word : pretokenize(text)) {
    const std::vector<int32_t> word_ids = encode_word(word);
    ids.insert(ids.end(), word_ids.begin(), word_ids.end());
  }
  return ids;
}

std::vector<std::vector<int32_t>> Tokenizer::encode_all(
    const std::vector<std::string>& texts) const {
  std::vector<std::vector<int32_t>> encoded(texts.size());
  const int64_t count = static_cast<int64_t>(texts.size());
  const int threads = num_threads();  // QTLAB_NUM_THREADS
#pragma omp parallel num_threads(threads) if (count > 64)
  {
    // Most words repeat: a cache per thread turns encoding into one hash lookup per word.
    std::unordered_map<std::string, std::vector<int32_t>> cache;
#pragma omp for schedule(dynamic, 64)
    for (int64_t t = 0; t < count; ++t) {
      std::vector<int32_t>& ids = encoded[t];
      for (std::string_view word : pretokenize(texts[t])) {
        auto found = cache.find(std::string(word));
        if (found == cache.end()) found = cache.emplace(word, encode_word(word)).first;
        ids.insert(ids.end(), found->second.begin(), found->second.end());
      }
    }
  }
  return encoded;
}

std::string Tokenizer::decode(std::span<const int32_t> ids, bool skip_special) const {
  std::string text;
  for (size_t i = 0; i < ids.size(); ++i) {
    const int32_t id = ids[i];
    QT_CHECK(id >= 0 && id < vocab_size(),
             "Tokenizer::decode: id {} at position {} is not in [0, {})", id, i, vocab_size());
    if (skip_special && is_special_token(id)) continue;
    text += token_bytes_[id];
  }
  return text;
}

std::string Tokenizer::fingerprint() const {
  // FNV-1a, 64 bit: hash = (hash XOR byte) * prime for every byte of the merge list (each id as
  // 4 little-endian bytes).
  uint64_t hash = 0xcbf29ce484222325ull;
  auto add = [&hash](uint32_t value) {
    for (int b = 0; b < 4; ++b) {
      hash ^= (value >> (8 * b)) & 0xff;
      hash *= 0x100000001b3ull;
    }
  };
  add(static_cast<uint32_t>(kFirstMergeId));
  for (const auto& [left, right] : merges_) {
    add(static_cast<uint32_t>(left));
    add(static_cast<uint32_t>(right));
  }
  return fmt::format("{:016x}", hash);
}

void Tokenizer::save(const std::string& path) const {
  std::string text = fmt::format(
      "{{\"format\": \"{}\", \"version\": {},\n \"special_tokens\": [\"{}\"],\n"
      " \"vocab_size\": {}, \"fingerprint\": \"{}\",\n \"merges\": [",
      kFormatName, kFormatVersion, fmt::join(kSpecialTokenNames, "\", \""), vocab_size(),
      fingerprint());
  for (size_t r = 0; r < merges_.size(); ++r)
    text += fmt::format("{}\n  [{}, {}]", r == 0 ? "" : ",", merges_[r].first, merges_[r].second);
  text += "\n]}\n";
  write_text_atomically(path, text);
}

Tokenizer Tokenizer::load(const std::string& path) {
  const char* op = "Tokenizer::load";
  std::ifstream in(path, std::ios::binary);
  QT_CHECK(in.is_open(), "{}: cannot open '{}'", op, path);
  std::stringstream buffer;
  buffer << in.rdbuf();
  const nlohmann::json json = parse_json(buffer.str(), fmt::format("{}: '{}'", op, path));
  QT_CHECK(json.is_object(), "{}: '{}' must hold a JSON object", op, path);
  auto field = [&](const char* key) -> const nlohmann::json& {
    QT_CHECK(json.contains(key), "{}: '{}' has no \"{}\" field", op, path, key);
    return json.at(key);
  };
  QT_CHECK(field("format") == kFormatName, "{}: '{}' is not a {} vocabulary (format {})", op, path,
           kFormatName, json_excerpt(field("format")));
  QT_CHECK(field("version") == kFormatVersion, "{}: '{}' has version {}, this build reads {}", op,
           path, json_excerpt(field("version")), kFormatVersion);
  const nlohmann::json& specials = field("special_tokens");
  bool specials_match = specials.is_array() && specials.size() == kNumSpecialTokens;
  for (int i = 0; specials_match && i < kNumSpecialTokens; ++i)
    specials_match = specials[i] == kSpecialTokenNames[i];
  QT_CHECK(specials_match, "{}: '{}' special_tokens {} differ from [\"{}\"]", op, path,
           json_excerpt(specials), fmt::join(kSpecialTokenNames, "\", \""));

  const nlohmann::json& merge_list = field("merges");
  QT_CHECK(merge_list.is_array(), "{}: '{}': \"merges\" must be an array", op, path);
  std::vector<Merge> merges;
  merges.reserve(merge_list.size());
  for (size_t r = 0; r < merge_list.size(); ++r) {
    const nlohmann::json& merge = merge_list[r];
    QT_CHECK(merge.is_array() && merge.size() == 2 && merge[0].is_number_integer() &&
                 merge[1].is_number_integer(),
             "{}: '{}': merge {} must be a pair of integer ids, got {}", op, path, r,
             json_excerpt(merge));
    const int64_t left = merge[0].get<int64_t>();
    const int64_t right = merge[1].get<int64_t>();
    QT_CHECK(left >= 0 && left <= INT32_MAX && right >= 0 && right <= INT32_MAX,
             "{}: '{}': merge {} = {} has an id out of range", op, path, r, json_excerpt(merge));
    merges.emplace_back(static_cast<int32_t>(left), static_cast<int32_t>(right));
  }
  Tokenizer tokenizer = [&] {
    try {
      return Tokenizer(std::move(merges));
    } catch (const Error& error) {
      fail("{}: '{}': {}", op, path, error.what());
    }
  }();
  const nlohmann::json& vocab = field("vocab_size");
  QT_CHECK(vocab.is_number_integer() && vocab.get<int64_t>() == tokenizer.vocab_size(),
           "{}: '{}' says vocab_size {} but its {} merges give {}", op, path, json_excerpt(vocab),
           tokenizer.merges().size(), tokenizer.vocab_size());
  QT_CHECK(field("fingerprint") == tokenizer.fingerprint(),
           "{}: '{}' fingerprint {} does not match its merges ({}): the file was altered", op, path,
           json_excerpt(field("fingerprint")), tokenizer.fingerprint());
  return tokenizer;
}

// UTF-8 (RFC 3629, table 3-7 of the Unicode standard): the lead byte gives the length and the
// allowed range of the second byte (narrower after E0, ED, F0, F4, which would otherwise encode
// overlong forms, surrogates or code points above U+10FFFF); later bytes are 80..BF.
std::string escape_invalid_utf8(std::string_view bytes) {
  std::string out;
  out.reserve(bytes.size());
  const auto byte = [&bytes](size_t i) { return static_cast<unsigned char>(bytes[i]); };
  size_t i = 0;
  while (i < bytes.size()) {
    const unsigned char lead = byte(i);
    int length = 0;
    unsigned char second_low = 0x80, second_high = 0xBF;
    if (lead < 0x80) {
      length = 1;
    } else if (lead >= 0xC2 && lead <= 0xDF) {
      length = 2;
    } else if (lead >= 0xE0 && lead <= 0xEF) {
      length = 3;
      if (lead == 0xE0) second_low = 0xA0;
      if (lead == 0xED) second_high = 0x9F;
    } else if (lead >= 0xF0 && lead <= 0xF4) {
      length = 4;
      if (lead == 0xF0) second_low = 0x90;
      if (lead == 0xF4) second_high = 0x8F;
    }
    bool valid = length > 0 && i + static_cast<size_t>(length) <= bytes.size();
    for (int k = 1; valid && k < length; ++k) {
      const unsigned char c = byte(i + static_cast<size_t>(k));
      valid = k == 1 ? (c >= second_low && c <= second_high) : (c >= 0x80 && c <= 0xBF);
    }
    if (valid) {
      out.append(bytes.substr(i, static_cast<size_t>(length)));
      i += static_cast<size_t>(length);
    } else {
      static const char kHex[] = "0123456789abcdef";
      out += "\\x";
      out += kHex[lead >> 4];
      out += kHex[lead & 15];
      ++i;
    }
  }
  return out;
}

}  // namespace qt::data
