#include "quant/integer_export.h"

#include <fmt/format.h>
#include <unistd.h>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>

#include "quant/export_c_sources.h"
#include "quant/integer_lut.h"
#include "tensor/atomic_file.h"
#include "tensor/error.h"
#include "tensor/sha256.h"

namespace qt::quant {
namespace {

namespace fs = std::filesystem;

// ---- weights.safetensors

struct WeightEntry {
  std::string name, dtype;  // "I8", "I32", "U8"
  Shape shape;
  std::string bytes;  // little-endian (this host is little-endian: checked in the writer)
};

template <typename T>
WeightEntry weight_entry(const std::string& name, const char* dtype, const std::vector<T>& values,
                         Shape shape = {}) {
  if (shape.empty()) shape = {static_cast<int64_t>(values.size())};
  QT_CHECK(numel_of(shape) == static_cast<int64_t>(values.size()),
           "export-int: weight '{}' has {} values for shape {}", name, values.size(),
           shape_str(shape));
  WeightEntry e{
      name, dtype, shape,
      std::string(reinterpret_cast<const char*>(values.data()), values.size() * sizeof(T))};
  return e;
}

std::string safetensors_bytes(const std::vector<WeightEntry>& entries,
                              const nlohmann::json& metadata) {
  static_assert(sizeof(int32_t) == 4);
  const uint32_t probe = 1;
  QT_CHECK(*reinterpret_cast<const uint8_t*>(&probe) == 1,
           "export-int: the weights writer assumes a little-endian host");
  nlohmann::ordered_json header;
  header["__metadata__"] = metadata;
  size_t offset = 0;
  for (const WeightEntry& e : entries) {
    header[e.name] = {{"dtype", e.dtype},
                      {"shape", e.shape},
                      {"data_offsets", {offset, offset + e.bytes.size()}}};
    offset += e.bytes.size();
  }
  std::string text = header.dump();
  while ((text.size() + 8) % 8 != 0) text += ' ';
  std::string out(8, '\0');
  const uint64_t n = text.size();
  for (int i = 0; i < 8; ++i)
    out[static_cast<size_t>(i)] = static_cast<char>((n >> (8 * i)) & 0xff);
  out += text;
  for (const WeightEntry& e : entries) out += e.bytes;
  return out;
}

// ---- C literals

std::string c_requantizer(const Requantizer& r) {
  return fmt::format("{{{{{}, {}}}, {}, {}, {}, (qt_requant){}}}", r.multiplier.multiplier,
                     r.multiplier.shift, r.zero_point, r.qmin, r.qmax, static_cast<int>(r.mode));
}

std::string c_requantizers(const std::vector<Requantizer>& rs) {
  std::string s = "{";
  for (size_t i = 0; i < rs.size(); ++i) s += (i ? ", " : "") + c_requantizer(rs[i]);
  return s + "}";
}

std::string c_rescale_sum(const IntegerRescaleSum& sum) {
  std::string inputs, zeros;
  for (int i = 0; i < kMaxSumTerms; ++i) {
    inputs +=
        fmt::format("{}{{{}, {}}}", i ? ", " : "", sum.input[static_cast<size_t>(i)].multiplier,
                    sum.input[static_cast<size_t>(i)].shift);
    zeros += fmt::format("{}{}", i ? ", " : "", sum.zero_point[static_cast<size_t>(i)]);
  }
  return fmt::format("{{{}, {{{}}}, {{{}}}, {}}}", sum.terms, inputs, zeros,
                     c_requantizer(sum.output));
}

std::string c_string(const std::string& s) {
  std::string out = "\"";
  for (char c : s) {
    if (c == '"' || c == '\\') out += '\\';
    out += c;
  }
  return out + "\"";
}

const char* c_layout(IntegerLayout layout) {
  switch (layout) {
    case IntegerLayout::tokens:
      return "QT_LAYOUT_TOKENS";
    case IntegerLayout::attention:
      return "QT_LAYOUT_ATTENTION";
    case IntegerLayout::token_ids:
      return "QT_LAYOUT_TOKEN_IDS";
    case IntegerLayout::images:
      return "QT_LAYOUT_IMAGES";
    case IntegerLayout::first_rows:
      return "QT_LAYOUT_FIRST_ROWS";
  }
  return "?";
}

const char* layout_name(IntegerLayout layout) {
  switch (layout) {
    case IntegerLayout::tokens:
      return "tokens [B*T, width]";
    case IntegerLayout::attention:
      return "attention [B, H, T, T]";
    case IntegerLayout::token_ids:
      return "token_ids [B, T]";
    case IntegerLayout::images:
      return "images [B, N, width]";
    case IntegerLayout::first_rows:
      return "first_rows [B, width]";
  }
  return "?";
}

// The rows of a tensor in C, from its layout.
std::string c_rows(IntegerLayout layout) {
  switch (layout) {
    case IntegerLayout::images:
      return "B * N";
    case IntegerLayout::first_rows:
      return "B";
    default:
      return "R";
  }
}

// A 65536-entry table over the int16 grid, as qt_apply_lut_activation indexes it.
std::vector<uint8_t> int16_table(const IntegerLut& lut, const std::string& what) {
  QT_CHECK(lut.input_min == -32768 && lut.input_max == 32767,
           "export-int: the table of {} does not cover the int16 grid", what);
  return lut.table;
}

struct Generator {
  const IntegerModel& m;
  std::vector<WeightEntry> weights;
  std::string body;

  std::string buffer(int t) const {
    const IntegerTensor& info = m.tensors[static_cast<size_t>(t)];
    return fmt::format("{}(s->buffer[{}])",
                       info.dtype == DumpDType::s32 ? "(int32_t*)" : "(uint8_t*)", t);
  }
  std::string rows(int t) const { return c_rows(m.tensors[static_cast<size_t>(t)].layout); }

  std::string w8(const std::string& name, const std::vector<int8_t>& v, Shape shape = {}) {
    weights.push_back(weight_entry(name, "I8", v, shape));
    return fmt::format("qt_weight_s8({}, {})", c_string(name), v.size());
  }
  std::string w32(const std::string& name, const std::vector<int32_t>& v) {
    weights.push_back(weight_entry(name, "I32", v));
    return fmt::format("qt_weight_s32({}, {})", c_string(name), v.size());
  }
  std::string wu8(const std::string& name, const std::vector<uint8_t>& v) {
    weights.push_back(weight_entry(name, "U8", v));
    return fmt::format("qt_weight_u8({}, {})", c_string(name), v.size());
  }

  // qt_linear_params p = {...}; with its requantizers in `out_name`.
  std::string linear_params(const std::string& prefix, const IntegerLinear& l,
                            const std::string& var) {
    std::string s = fmt::format("    static const qt_requantizer {}_out[{}] = {};\n", var,
                                l.output.size(), c_requantizers(l.output));
    const std::string weight = w8(prefix + ".weight", l.weight, {l.out_features, l.in_features});
    const std::string bias = l.bias.empty() ? "NULL" : w32(prefix + ".bias", l.bias);
    s += fmt::format(
        "    qt_linear_params {} = {{{}, {}, NULL, NULL, {}, {}_out, {}}};\n    {}.weight = {};\n"
        "    {}.bias = {};\n",
        var, l.in_features, l.out_features, l.input_zero_point, var, l.output.size(), var, weight,
        var, bias);
    return s;
  }

  void op(size_t index, const IntegerOp& op) {
    const IntegerTensor& out = m.tensors[static_cast<size_t>(op.output)];
    std::string comment = fmt::format("  /* op {}: {} ({}) -> {}, u8 (S = {:.9g}, Z = {})", index,
                                      op.name, integer_op_kind_name(op.kind),
                                      integer_dump_name(out.name), out.scale, out.zero_point);
    std::string s;
    const int in0 = op.inputs.empty() ? -1 : op.inputs[0];
    const std::string name = op.name;
    switch (op.kind) {
      case IntegerOpKind::text_embedding:
        s += fmt::format("    static const qt_rescale_sum sum = {};\n", c_rescale_sum(op.sum));
        s += fmt::format(
            "    qt_model_text_embedding(&sum, {}, {}, {}, {}, {}, {}, B, T, {}, {});\n",
            w8(name + ".token_table", op.table_a, {op.table_a_rows, m.hidden}), op.table_a_rows,
            w8(name + ".position_table", op.table_b, {op.table_b_rows, m.hidden}), op.table_b_rows,
            op.position_offset, buffer(in0), m.hidden, buffer(op.output));
        break;
      case IntegerOpKind::image_embedding:
        s += fmt::format("    static const qt_rescale_sum first_sum = {};\n",
                         c_rescale_sum(op.first_sum));
        s += fmt::format("    static const qt_rescale_sum sum = {};\n", c_rescale_sum(op.sum));
        s += fmt::format(
            "    qt_model_image_embedding(&first_sum, &sum, {}, {}, {}, B, N, {}, {});\n",
            w8(name + ".cls_token", op.table_a),
            w8(name + ".position_table", op.table_b, {op.table_b_rows, m.hidden}), buffer(in0),
            m.hidden, buffer(op.output));
        break;
      case IntegerOpKind::linear:
      case IntegerOpKind::linear_relu:
        s += linear_params(name, op.linear, "p");
        s += fmt::format("    {}(&p, {}, {}, 0, {});\n",
                         op.kind == IntegerOpKind::linear ? "qt_linear" : "qt_linear_relu",
                         buffer(in0), rows(in0), buffer(op.output));
        break;
      case IntegerOpKind::linear_gelu:
        s += linear_params(name, op.linear, "p");
        s += fmt::format("    static const qt_requantizer to_input[{}] = {};\n",
                         op.activation.to_input.size(), c_requantizers(op.activation.to_input));
        s += fmt::format("    qt_model_linear_lut(&p, to_input, {}, {}, {}, {}, {});\n",
                         op.activation.to_input.size(),
                         wu8(name + ".gelu_table", int16_table(op.activation.lut, name)),
                         buffer(in0), rows(in0), buffer(op.output));
        break;
      case IntegerOpKind::gelu_table:
        s += fmt::format("    qt_apply_lut_u8({}, {}, {}, {} * {}, {});\n",
                         wu8(name + ".table", op.table.table), op.table.input_min, buffer(in0),
                         rows(in0), m.tensors[static_cast<size_t>(in0)].width, buffer(op.output));
        break;
      case IntegerOpKind::layer_norm: {
        const IntegerLayerNorm& ln = op.layer_norm;
        s += fmt::format(
            "    qt_layer_norm_params p = {{{}, NULL, NULL, {}LL, {}}};\n    p.gamma = {};\n"
            "    p.beta = {};\n    qt_layer_norm_u8(&p, {}, {}, {});\n",
            ln.channels, ln.eps_term, c_requantizer(ln.output), w8(name + ".gamma", ln.gamma),
            w32(name + ".beta", ln.beta), buffer(in0), rows(in0), buffer(op.output));
        break;
      }
      case IntegerOpKind::add:
        s += fmt::format("    static const qt_rescale_sum sum = {};\n", c_rescale_sum(op.sum));
        s += fmt::format("    qt_add_u8(&sum, {}, {}, {} * {}, {});\n", buffer(in0),
                         buffer(op.inputs[1]), rows(op.output), out.width, buffer(op.output));
        break;
      case IntegerOpKind::attention_scores:
        s += fmt::format("    static const qt_requantizer r = {};\n", c_requantizer(op.requant));
        s += fmt::format("    qt_model_attention_scores({}, {}, {}, {}, B, T, {}, {}, &r, {});\n",
                         buffer(in0), m.tensors[static_cast<size_t>(in0)].zero_point,
                         buffer(op.inputs[1]),
                         m.tensors[static_cast<size_t>(op.inputs[1])].zero_point, op.heads,
                         op.head_dim, buffer(op.output));
        break;
      case IntegerOpKind::softmax:
        s += fmt::format("    static const qt_softmax_params p = {{{{{}, {}}}, {}LL, {}LL}};\n",
                         op.softmax.exponent.multiplier, op.softmax.exponent.shift,
                         op.softmax.stretch, op.softmax.offset);
        s += fmt::format("    qt_model_softmax(&p, {}, B, {}, T, {}, {});\n", buffer(in0), op.heads,
                         op.causal ? 1 : 0, buffer(op.output));
        break;
      case IntegerOpKind::attention_context:
        s += fmt::format("    static const qt_requantizer r = {};\n", c_requantizer(op.requant));
        s += fmt::format("    qt_model_attention_context({}, {}, {}, B, T, {}, {}, &r, {});\n",
                         buffer(in0), buffer(op.inputs[1]),
                         m.tensors[static_cast<size_t>(op.inputs[1])].zero_point, op.heads,
                         op.head_dim, buffer(op.output));
        break;
      case IntegerOpKind::gate:
        s += gate(op, in0);
        break;
      case IntegerOpKind::gate_multiply:
        s += fmt::format("    static const qt_requantizer r = {};\n", c_requantizer(op.requant));
        s += fmt::format("    qt_gate_multiply({}, {}, R, {}, {}, {}, &r, {});\n", buffer(in0),
                         buffer(op.inputs[1]), op.heads, op.head_dim,
                         m.tensors[static_cast<size_t>(in0)].zero_point, buffer(op.output));
        break;
      case IntegerOpKind::first_token:
        s += fmt::format("    qt_model_first_token({}, B, T, {}, {});\n", buffer(in0), out.width,
                         buffer(op.output));
        break;
    }
    body += comment + " */\n  {\n" + s + "  }\n";
  }

  std::string gate(const IntegerOp& op, int in0) {
    const IntegerGateParameters& g = op.gate;
    const int64_t H = m.heads, dh = g.head_dim;
    const std::string name = op.name;
    std::string s;
    if (!g.constant.empty()) {
      std::string codes;
      for (size_t h = 0; h < g.constant.size(); ++h)
        codes += fmt::format("{}{}", h ? ", " : "", g.constant[h]);
      s += fmt::format("    static const uint8_t codes[{}] = {{{}}};\n", H, codes);
      return s +
             fmt::format("    qt_model_gate_constant(codes, R, {}, {});\n", H, buffer(op.output));
    }
    s += fmt::format("    static const qt_requantizer to_input[{}] = {};\n",
                     g.sigmoid.to_input.size(), c_requantizers(g.sigmoid.to_input));
    const std::string table = wu8(name + ".sigmoid_table", int16_table(g.sigmoid.lut, name));
    if (g.all_heads) {
      s += linear_params(name, g.logit[0], "p");
      return s + fmt::format("    qt_model_gate_all_heads(&p, to_input, {}, {}, R, {}, {});\n",
                             table, buffer(in0), H, buffer(op.output));
    }
    // Stack the per-head layers.
    std::vector<int8_t> w, w2;
    std::vector<int32_t> b, b2;
    std::vector<Requantizer> hidden_out;
    for (int64_t h = 0; h < H; ++h) {
      const IntegerLinear& logit = g.logit[static_cast<size_t>(h)];
      if (!g.hidden.empty()) {
        const IntegerLinear& hid = g.hidden[static_cast<size_t>(h)];
        w.insert(w.end(), hid.weight.begin(), hid.weight.end());
        b.insert(b.end(), hid.bias.begin(), hid.bias.end());
        hidden_out.push_back(hid.output[0]);
        w2.insert(w2.end(), logit.weight.begin(), logit.weight.end());
        b2.insert(b2.end(), logit.bias.begin(), logit.bias.end());
      } else {
        w.insert(w.end(), logit.weight.begin(), logit.weight.end());
        b.insert(b.end(), logit.bias.begin(), logit.bias.end());
      }
    }
    const int32_t x_zero = m.tensors[static_cast<size_t>(in0)].zero_point;
    if (g.hidden.empty())
      return s + fmt::format(
                     "    qt_model_gate_per_head({}, {}, {}, to_input, {}, {}, R, {}, {}, {});\n",
                     w8(name + ".weight", w, {H, dh}), w32(name + ".bias", b), x_zero, table,
                     buffer(in0), H, dh, buffer(op.output));
    s += fmt::format("    static const qt_requantizer hidden_out[{}] = {};\n", H,
                     c_requantizers(hidden_out));
    return s +
           fmt::format(
               "    qt_model_gate_mlp({}, {}, hidden_out, {}, {}, {}, {}, {}, to_input, {}, {}, "
               "R, {}, {}, {});\n",
               w8(name + ".hidden_weight", w, {H, g.hidden_width, dh}),
               w32(name + ".hidden_bias", b), x_zero, g.hidden_width,
               w8(name + ".output_weight", w2, {H, g.hidden_width}), w32(name + ".output_bias", b2),
               g.hidden_zero_point, table, buffer(in0), H, dh, buffer(op.output));
  }

  std::string source() {
    for (size_t i = 0; i < m.ops.size(); ++i) op(i, m.ops[i]);
    std::string s =
        "/* ======================================================================== "
        "the model (generated by qtlab export-int) */\n\n";
    s += fmt::format("const char* const qt_model_family = {};\n", c_string(m.family));
    s += fmt::format(
        "const int qt_model_tensor_count = {}, qt_model_op_count = {}, qt_model_input = {}, "
        "qt_model_output = {};\n",
        m.tensors.size(), m.ops.size(), m.input, m.output);
    s += fmt::format(
        "const int64_t qt_model_heads = {}, qt_model_max_length = {}, qt_model_vocab_size = {}, "
        "qt_model_patches = {};\n\n",
        m.heads, m.max_length, m.vocab_size, m.patches);
    s += "/* Every tensor: dump name, dtype, layout, width, scale, zero point. */\n";
    s += "const qt_model_tensor qt_model_tensors[] = {\n";
    for (const IntegerTensor& t : m.tensors)
      s += fmt::format("  {{{}, {}, {}, {}, {:.17g}, {}}},\n", c_string(integer_dump_name(t.name)),
                       t.dtype == DumpDType::s32 ? "QT_S32" : "QT_U8", c_layout(t.layout), t.width,
                       t.scale, t.zero_point);
    s += "};\n\n/* Every op in execution order: name, kind, rounding, inputs, output. */\n";
    s += "const qt_model_op qt_model_ops[] = {\n";
    const std::string rounding = requant_id(m.rounding);
    for (const IntegerOp& op : m.ops) {
      const bool rounds =
          op.kind != IntegerOpKind::first_token && op.kind != IntegerOpKind::gelu_table;
      s += fmt::format("  {{{}, \"{}\", \"{}\", {}, {{{}, {}}}, {}}},\n", c_string(op.name),
                       integer_op_kind_name(op.kind), rounds ? rounding : "none", op.inputs.size(),
                       op.inputs.empty() ? 0 : op.inputs[0],
                       op.inputs.size() > 1 ? op.inputs[1] : 0, op.output);
    }
    s += "};\n\n";
    s += "/* The forward: B sequences of T tokens (ViT: T = N + 1), R = B * T token rows. */\n";
    s += "void qt_model_forward(qt_model_state* s) {\n";
    s += "  const int64_t B = s->batch, T = s->length, R = B * T, N = qt_model_patches;\n";
    s += "  (void)T;\n  (void)R;\n  (void)N;\n";
    s += body;
    s += "}\n";
    return s;
  }
};

// model.c: the embedded C sources (local includes dropped, they are all in this one file), then
// the generated part.
std::string model_c(const IntegerModel& model, const std::string& generated) {
  std::string s = fmt::format(
      "/* model.c: the integer-only {} model exported by qtlab (`qtlab export-int`).\n"
      " * One C99 file, libc only. Build and check: make check (see the Makefile); run on any\n"
      " * input: ./model run INPUT_DIR OUT_DIR. Sections: qtlab_int8 (the ops), qtlab_dump (the\n"
      " * tensor dump), qtlab_model (weights, model-level ops, main), then the generated model. "
      "*/\n",
      model.family);
  for (const ExportCSource& source : export_c_sources()) {
    s += fmt::format(
        "\n/* ======================================================================== "
        "{} */\n",
        source.name);
    std::istringstream in(source.text);
    std::string line;
    while (std::getline(in, line)) {
      if (line.rfind("#include \"", 0) == 0) continue;  // qtlab's own headers: inlined above
      s += line + "\n";
    }
  }
  return s + "\n" + generated;
}

const char* kMakefile =
    "# The exported integer model: `make check` builds model.c with the strictest flags and\n"
    "# compares every tensor of every test vector bit for bit.\n"
    "CC ?= cc\n"
    "CFLAGS = -std=c99 -O2 -Wall -Wextra -Werror -pedantic\n"
    "model: model.c\n"
    "\t$(CC) $(CFLAGS) -o $@ model.c\n"
    "check: model\n"
    "\t./model check vectors/*\n"
    ".PHONY: check\n";

std::string read_file(const fs::path& path) {
  std::ifstream in(path, std::ios::binary);
  std::stringstream buffer;
  buffer << in.rdbuf();
  return buffer.str();
}

}  // namespace

void export_integer_model(const IntegerModel& model, const std::vector<models::Batch>& vectors,
                          const std::string& dir, const ExportDescription& description) {
  QT_CHECK(!vectors.empty(), "export-int: no test vectors to write");
  Generator generator{model, {}, {}};
  const std::string generated = generator.source();
  const fs::path final_dir(dir);
  const fs::path tmp = final_dir.string() + fmt::format(".tmp.{}", ::getpid());
  fs::remove_all(tmp);
  fs::create_directories(tmp / "vectors");
  nlohmann::json metadata = {{"format", "qtlab-int-weights"},
                             {"family", model.family},
                             {"checkpoint", description.checkpoint}};
  write_text_atomically((tmp / "weights.safetensors").string(),
                        safetensors_bytes(generator.weights, metadata));
  write_text_atomically((tmp / "model.c").string(), model_c(model, generated));
  write_text_atomically((tmp / "Makefile").string(), kMakefile);
  TensorDump first;
  for (size_t v = 0; v < vectors.size(); ++v) {
    const IntegerActivations a = run_integer_model(model, integer_input(model, vectors[v]));
    TensorDump dump = integer_model_dump(model, a);
    write_tensor_dump((tmp / "vectors" / fmt::format("{}", v)).string(), dump);
    if (v == 0) first = dump;
  }
  // The manifest.
  nlohmann::ordered_json manifest;
  manifest["format"] = "qtlab-int-export";
  manifest["version"] = 1;
  manifest["family"] = model.family;
  manifest["qtlab_version"] = description.qtlab_version;
  manifest["checkpoint"] = description.checkpoint;
  manifest["ranges"] = description.ranges;
  manifest["rounding"] = requant_id(model.rounding);
  manifest["weights_per_channel"] = model.per_channel_weights;
  manifest["integer_head"] = model.integer_head;
  manifest["geometry"] = {{"hidden", model.hidden},         {"heads", model.heads},
                          {"layers", model.layers},         {"max_length", model.max_length},
                          {"vocab_size", model.vocab_size}, {"patches", model.patches},
                          {"patch_dim", model.patch_dim}};
  manifest["bit_widths"] = {{"weights", "s8 symmetric"},
                            {"activations", "u8 asymmetric"},
                            {"biases, LayerNorm betas, accumulators", "s32"},
                            {"attention probabilities", "u8, scale 1/255"},
                            {"gate probabilities", "u8, scale 1/256"},
                            {"table inputs (GELU, sigmoid)", "s16"}};
  manifest["notes"] = model.notes;
  manifest["tensors"] = nlohmann::json::array();
  for (const IntegerTensor& t : model.tensors)
    manifest["tensors"].push_back({{"name", integer_dump_name(t.name)},
                                   {"dtype", std::string(dump_dtype_name(t.dtype))},
                                   {"layout", layout_name(t.layout)},
                                   {"width", t.width},
                                   {"scale", t.scale},
                                   {"zero_point", t.zero_point}});
  manifest["ops"] = nlohmann::json::array();
  for (const DumpOp& op : first.ops)
    manifest["ops"].push_back({{"name", op.name},
                               {"kind", op.kind},
                               {"rounding", op.rounding},
                               {"inputs", op.inputs},
                               {"outputs", op.outputs},
                               {"attributes", op.attributes}});
  manifest["weights"] = nlohmann::json::array();
  for (const WeightEntry& e : generator.weights)
    manifest["weights"].push_back({{"name", e.name}, {"dtype", e.dtype}, {"shape", e.shape}});
  nlohmann::ordered_json files = nlohmann::ordered_json::object();
  for (const auto& entry : fs::recursive_directory_iterator(tmp)) {
    if (!entry.is_regular_file()) continue;
    const std::string bytes = read_file(entry.path());
    files[fs::relative(entry.path(), tmp).string()] = sha256_hex(bytes.data(), bytes.size());
  }
  manifest["sha256"] = files;
  write_text_atomically((tmp / "manifest.json").string(), manifest.dump(1) + "\n");
  // Replace an earlier export in one rename of the finished directory.
  if (fs::exists(final_dir)) {
    QT_CHECK(fs::exists(final_dir / "manifest.json") || fs::is_empty(final_dir),
             "export-int: {} exists and is not an earlier export (no manifest.json); refusing to "
             "replace it",
             dir);
    fs::remove_all(final_dir);
  }
  fs::rename(tmp, final_dir);
}

}  // namespace qt::quant
