// Tests for quant/integer_add.* (residual add with rescaling) and quant/integer_embedding.*
// (embedding sums). Truth: hand-computed values and the float64 value
// sum_i S_i (q_i - Z_i) / S_o + Z_o, over every pair of u8 inputs.
#include <doctest/doctest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <random>
#include <vector>

#include "quant/integer_add.h"
#include "quant/integer_embedding.h"
#include "tensor/error.h"
#include "tests/test_integer_common.h"

using namespace qt::quant;
using qt::test::LsbError;

TEST_CASE("integer_add: hand-computed") {
  // 0.1 (40 - 10) + 0.2 (15 - 0) = 6.0; 6.0 / 0.3 + 5 = 25.
  const IntegerRescaleSum add =
      make_integer_add({0.1, 10}, {0.2, 0}, 0.3, 5, kU8Min, kU8Max, Requant::single_half_even);
  const uint8_t a[] = {40, 10, 255, 0}, b[] = {15, 0, 255, 0};
  uint8_t y[4];
  integer_add(add, a, b, 4, y);
  CHECK(y[0] == 25);
  CHECK(y[1] == 5);
  CHECK(y[2] == 255);  // (24.5 + 51) / 0.3 + 5 = 256.7 -> clamped
  CHECK(y[3] == 2);    // -1.0 / 0.3 + 5 = 1.67 -> 2
}

TEST_CASE("integer_add: every u8 pair, error in LSB against float64") {
  struct Config {
    double s_a;
    int32_t z_a;
    double s_b;
    int32_t z_b;
    double s_o;
    int32_t z_o;
  };
  for (const Config c :
       {Config{0.05, 128, 0.02, 100, 0.07, 120}, Config{0.013, 3, 0.4, 250, 0.41, 200},
        Config{1.0, 0, 1.0, 0, 2.0, 0}, Config{0.01, 77, 0.01, 77, 0.005, 128}}) {
    for (const Requant mode :
         {Requant::double_rounding, Requant::single_half_even, Requant::single_half_up}) {
      const IntegerRescaleSum add =
          make_integer_add({c.s_a, c.z_a}, {c.s_b, c.z_b}, c.s_o, c.z_o, kU8Min, kU8Max, mode);
      std::vector<uint8_t> a(65536), b(65536), y(65536);
      for (int i = 0; i < 65536; ++i) {
        a[i] = static_cast<uint8_t>(i & 255);
        b[i] = static_cast<uint8_t>(i >> 8);
      }
      integer_add(add, a.data(), b.data(), 65536, y.data());
      LsbError error;
      for (int i = 0; i < 65536; ++i) {
        const double t = (c.s_a * (a[i] - c.z_a) + c.s_b * (b[i] - c.z_b)) / c.s_o + c.z_o;
        error.add(y[i], std::clamp(t, 0.0, 255.0));
      }
      // Rounding of the terms at 2^-20 of their step: 2 max S / (2^21 S_o) LSB.
      const double term_error = 2 * std::max(c.s_a, c.s_b) / (std::ldexp(1.0, 21) * c.s_o);
      const std::string name = std::string("integer_add ") + std::string(requant_name(mode));
      INFO(error.summary(name));
      qt::test::report(error, name);
      if (mode == Requant::double_rounding) {
        CHECK(error.max_error <= 1.0 + term_error);
      } else {
        CHECK(error.max_error <= 0.5 + term_error + 1e-9);
      }
      CHECK(error.mean_error() <= 0.26);
    }
  }
}

TEST_CASE("integer_add: int16 output and bad parameters") {
  // A 16-bit pre-LayerNorm sum with a fine scale: 0.5 (200 - 0) + 0.25 (0 - 100) = 75 -> 7500.
  const IntegerRescaleSum wide =
      make_integer_add({0.5, 0}, {0.25, 100}, 0.01, 0, -32768, 32767, Requant::single_half_even);
  const uint8_t a[] = {200}, b[] = {0};
  int16_t y[1];
  integer_add(wide, a, b, 1, y);
  CHECK(y[0] == 7500);
  uint8_t y8[1];
  CHECK_THROWS_WITH_AS(integer_add(wide, a, b, 1, y8), doctest::Contains("does not fit u8"),
                       qt::Error);
  CHECK_THROWS_WITH_AS(
      make_integer_add({0.5, 0}, {-0.25, 0}, 0.01, 0, 0, 255, Requant::double_rounding),
      doctest::Contains("scale -0.25 of term 1"), qt::Error);
  CHECK_THROWS_WITH_AS(make_rescale_sum({{1, 0}, {1, 0}, {1, 0}, {1, 0}, {1, 0}}, 1, 0, 0, 255,
                                        Requant::double_rounding),
                       doctest::Contains("5 terms"), qt::Error);
  CHECK_THROWS_WITH_AS(
      make_integer_add({1e6, 0}, {1, 0}, 1e-9, 0, 0, 255, Requant::double_rounding),
      doctest::Contains("too large"), qt::Error);
  const IntegerRescaleSum off = make_rescale_sum({{1, 0}}, 1, 0, 0, 255, Requant::double_rounding);
  const int32_t q[] = {5000};
  CHECK_THROWS_WITH_AS(off(q), doctest::Contains("outside [-1023, 1023]"), qt::Error);
}

TEST_CASE("integer_embedding_sum: token + type + position, and a dense term") {
  std::mt19937 rng(31);
  std::uniform_int_distribution<int> code(-128, 127);
  const int64_t vocab = 50, positions = 16, types = 2, dim = 24, tokens = 16;
  std::vector<int8_t> word(vocab * dim), pos(positions * dim), type(types * dim);
  for (auto* t : {&word, &pos, &type})
    for (int8_t& v : *t) v = static_cast<int8_t>(code(rng));
  std::vector<int64_t> word_ids(tokens), pos_ids(tokens), type_ids(tokens);
  for (int64_t k = 0; k < tokens; ++k) {
    word_ids[k] = (k * 7 + 3) % vocab;
    pos_ids[k] = k;
    type_ids[k] = k >= 8;
  }
  const double s_word = 0.01, s_pos = 0.004, s_type = 0.002, s_o = 0.011;
  const int32_t z_o = 131;
  // BERT's order: (word + type) quantized, then (+ position) quantized.
  std::vector<uint8_t> first(tokens * dim), second(tokens * dim);
  const EmbeddingTerm w{word.data(), vocab, word_ids.data(), nullptr};
  const EmbeddingTerm t{type.data(), types, type_ids.data(), nullptr};
  const EmbeddingTerm p{pos.data(), positions, pos_ids.data(), nullptr};
  const EmbeddingTerm dense{nullptr, 0, nullptr, first.data()};
  const IntegerRescaleSum word_type =
      make_integer_embedding_sum({{s_word, 0}, {s_type, 0}}, s_o, z_o, Requant::single_half_even);
  const IntegerRescaleSum plus_position =
      make_integer_embedding_sum({{s_o, z_o}, {s_pos, 0}}, s_o, z_o, Requant::single_half_even);
  integer_embedding_sum(word_type, {w, t}, tokens, dim, first.data());
  integer_embedding_sum(plus_position, {dense, p}, tokens, dim, second.data());
  LsbError e1, e2;
  for (int64_t k = 0; k < tokens; ++k)
    for (int64_t j = 0; j < dim; ++j) {
      const double t1 =
          (s_word * word[word_ids[k] * dim + j] + s_type * type[type_ids[k] * dim + j]) / s_o + z_o;
      e1.add(first[k * dim + j], std::clamp(t1, 0.0, 255.0));
      const double t2 =
          (s_o * (first[k * dim + j] - z_o) + s_pos * pos[pos_ids[k] * dim + j]) / s_o + z_o;
      e2.add(second[k * dim + j], std::clamp(t2, 0.0, 255.0));
    }
  INFO(e1.summary("embedding word + type"));
  INFO(e2.summary("embedding (word + type) + position"));
  qt::test::report(e1, "embedding word + type");
  qt::test::report(e2, "embedding (word + type) + position");
  CHECK(e1.max_error <= 0.5 + 1e-5);
  CHECK(e2.max_error <= 0.5 + 1e-5);
  CHECK(e1.mean_error() <= 0.26);
  CHECK(e2.mean_error() <= 0.26);
  CHECK(e1.max_code_error() == 0);
  // A hand-computed element: word row 3 (token 0), type row 0, element 0.
  const double t0 = (s_word * word[3 * dim] + s_type * type[0]) / s_o + z_o;
  CHECK(first[0] == static_cast<uint8_t>(std::clamp(std::nearbyint(t0), 0.0, 255.0)));

  std::vector<int64_t> bad_ids(word_ids);
  bad_ids[5] = vocab;
  const EmbeddingTerm bad{word.data(), vocab, bad_ids.data(), nullptr};
  const IntegerRescaleSum one =
      make_integer_embedding_sum({{s_word, 0}}, s_o, z_o, Requant::double_rounding);
  CHECK_THROWS_WITH_AS(integer_embedding_sum(one, {bad}, tokens, dim, first.data()),
                       doctest::Contains("term 0: token 5 has id 50 outside the table's 50 rows"),
                       qt::Error);
  const IntegerRescaleSum zp =
      make_integer_embedding_sum({{s_word, 3}}, s_o, z_o, Requant::double_rounding);
  CHECK_THROWS_WITH_AS(integer_embedding_sum(zp, {w}, tokens, dim, first.data()),
                       doctest::Contains("zero point 3 must be 0"), qt::Error);
  CHECK_THROWS_WITH_AS(integer_embedding_sum(one, {w, t}, tokens, dim, first.data()),
                       doctest::Contains("2 terms for a sum built for 1"), qt::Error);
}
