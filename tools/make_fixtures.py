#!/usr/bin/python3
"""Golden fixtures from PyTorch for tests/test_pytorch_fixtures.cpp.

Run with the system Python that has torch 1.13 (never at test time; the files are checked in):

    /usr/bin/python3 tools/make_fixtures.py [output_dir [fixture ...]]   (default: tests/data, all)

Every fixture is one small safetensors file holding the inputs, the weights, the outputs and the
gradients of one module, computed by a PyTorch re-statement of the reference code:

  * HF / torch layers: LayerNorm, GELU (exact erf form), cross-entropy (ignore_index, label
    smoothing), the BERT post-LN block and the OPT pre-LN block (and a ViT-style pre-LN GELU block);
  * the paper's attention exactly as the official repo computes it (outlier-free-transformers,
    transformers_language/models/{bert_attention,softmax}.py; docs: method.md §1, §2, §8):
    clipped softmax = clip((zeta - gamma) * softmax(S) + gamma, 0, 1); the alpha override
    gamma = -alpha / max_seq_length, zeta = 1; gates as H separate nn.Linear / nn.Sequential
    modules (or one nn.Linear(d, H)) applied to the attention input, multiplied into P·V before the
    output projection; HF's dtype-min additive masks for padding and causality;
  * five torch.optim.AdamW steps with torch.nn.utils.clip_grad_norm_.

Precision. Inputs and weights are drawn in float32 and stored exactly. The module forward and
backward then run in float64 on those values, and the results are rounded to float32 for storage,
so the fixtures are the float32-rounded exact answers: a float32 implementation should match them
to its own rounding error only. (The AdamW fixture runs in float32, as a real optimizer step on
float32 parameters does; qtlab's AdamW claims PyTorch's float32 arithmetic.)

Dropout is 0 everywhere (masks are RNG-specific; the C++ dropout has its own tests).

Tensor names inside a file (the C++ test relies on them):
    input                 the module input x (cross-entropy: "logits", "target")
    key_padding_mask      [B, T] int64, 1 = real token, 0 = padding (attention / blocks, optional)
    param.<name>          a parameter, under its qtlab name (Module::named_parameters()) and in
                          qtlab's layout (per-head gates stacked, see attention_gate.h)
    output                the module output
    grad_output           the random upstream gradient dL/d(output), i.e. L = sum(output * grad_output)
    grad.input            dL/d(input)
    grad.param.<name>     dL/d(parameter)
The file's "__metadata__" holds the module options as strings (see each builder below).

The safetensors format is written by hand (no safetensors package): 8-byte little-endian header
length N, N bytes of JSON {"name": {"dtype", "shape", "data_offsets": [begin, end]}, ...} padded
with spaces to a multiple of 8, then the raw little-endian bytes. Output is deterministic (same
bytes on every run on the same machine).
"""

import math
import os
import sys

import torch

from safetensors_writer import write_safetensors
import torch.nn as nn
import torch.nn.functional as F

GENERATOR = "tools/make_fixtures.py (torch %s)" % torch.__version__.split("+")[0]

# Small shapes: B = 2 sequences, T = 5 tokens, d = 8 features, H = 2 heads (d_h = 4).
BATCH, TOKENS, HIDDEN, HEADS = 2, 5, 8, 2
HEAD_DIM = HIDDEN // HEADS
FFN = 16


# --------------------------------------------------------------------------------------------
# safetensors writer


# write_safetensors: tools/safetensors_writer.py (one writer for every fixture script).


def f32_randn(generator, *shape, scale=1.0, mean=0.0):
    return (torch.randn(*shape, generator=generator, dtype=torch.float32) * scale + mean).to(torch.float32)


def run_module(module, inputs, grad_output_seed, mask=None):
    """Forward + backward of `module` in float64 with a random upstream gradient.

    inputs: dict name -> float32 tensor (the differentiated inputs). Returns (output, grad_output,
    input grads dict, param grads dict) as float64 tensors."""
    module = module.double()
    leaves = {k: v.double().requires_grad_(True) for k, v in inputs.items()}
    output = module(*leaves.values()) if mask is None else module(*leaves.values(), mask)
    generator = torch.Generator().manual_seed(grad_output_seed)
    grad_output = f32_randn(generator, *output.shape).double()
    output.backward(grad_output)
    return (
        output.detach(),
        grad_output,
        {k: v.grad.detach() for k, v in leaves.items()},
        {k: p.grad.detach() for k, p in module.named_parameters()},
    )


# --------------------------------------------------------------------------------------------
# LayerNorm, GELU, cross-entropy


def fixture_layer_norm():
    g = torch.Generator().manual_seed(101)
    eps = 1e-5
    module = nn.LayerNorm(HIDDEN, eps=eps)
    with torch.no_grad():  # non-trivial gamma / beta so that their use is checked too
        module.weight.copy_(f32_randn(g, HIDDEN, scale=0.3, mean=1.0))
        module.bias.copy_(f32_randn(g, HIDDEN, scale=0.3))
    x = f32_randn(g, BATCH, TOKENS, HIDDEN, scale=2.0, mean=0.5)
    params = {k: v.detach().clone() for k, v in module.named_parameters()}
    out, gout, gin, gparam = run_module(module, {"input": x}, 102)
    tensors = [("input", x)]
    tensors += [("param." + k, v) for k, v in params.items()]
    tensors += [("output", out), ("grad_output", gout), ("grad.input", gin["input"])]
    tensors += [("grad.param." + k, v) for k, v in gparam.items()]
    return tensors, {"module": "layer_norm", "eps": repr(eps)}


class Gelu(nn.Module):
    def forward(self, x):
        return F.gelu(x)  # exact erf form (approximate='none')


def fixture_gelu():
    g = torch.Generator().manual_seed(201)
    # A grid over [-6, 6] (tails and the curved middle) plus random points.
    grid = torch.linspace(-6.0, 6.0, 25, dtype=torch.float32)
    x = torch.cat([grid, f32_randn(g, 15, scale=2.0)]).view(5, 8)
    out, gout, gin, _ = run_module(Gelu(), {"input": x}, 202)
    tensors = [("input", x), ("output", out), ("grad_output", gout), ("grad.input", gin["input"])]
    return tensors, {"module": "gelu"}


def cross_entropy_fixture(seed, ignore_index, label_smoothing, ignored_rows):
    g = torch.Generator().manual_seed(seed)
    rows, classes = 6, 7
    logits = f32_randn(g, rows, classes, scale=2.0)
    target = torch.randint(0, classes, (rows,), generator=g, dtype=torch.int64)
    for r in ignored_rows:
        target[r] = ignore_index
    if 0 <= ignore_index < classes:  # make sure a real class index equal to ignore_index is ignored
        assert (target == ignore_index).sum() >= 1
    leaf = logits.double().requires_grad_(True)
    loss = F.cross_entropy(leaf, target, ignore_index=ignore_index, label_smoothing=label_smoothing)
    grad_output = torch.tensor(0.75, dtype=torch.float64)  # upstream dL/d(loss), a scalar
    loss.backward(grad_output)
    tensors = [
        ("logits", logits),
        ("target", target),
        ("output", loss.detach()),
        ("grad_output", grad_output),
        ("grad.logits", leaf.grad),
    ]
    meta = {"module": "cross_entropy", "ignore_index": str(ignore_index), "label_smoothing": repr(label_smoothing)}
    return tensors, meta


def fixture_cross_entropy():
    return cross_entropy_fixture(301, -100, 0.0, ignored_rows=[1, 4])


def fixture_cross_entropy_smoothing():
    # A non-default ignore_index that is also a valid class id, plus label smoothing 0.1.
    return cross_entropy_fixture(302, 3, 0.1, ignored_rows=[2])


# --------------------------------------------------------------------------------------------
# Attention as the reference repo computes it


def logit(p, eps=1e-16):
    p = min(max(p, eps), 1 - eps)
    return -math.log(1 / p - 1)


def per_row_gamma(scores, alpha):
    """-alpha / n_i [B, H, T, 1], n_i the keys row i sees (masked scores are the dtype minimum); a
    row that sees none is uniform over all T keys and uses n_i = T."""
    seen = (scores != torch.finfo(scores.dtype).min).sum(dim=-1, keepdim=True).to(scores.dtype)
    seen = torch.where(seen == 0, torch.full_like(seen, scores.shape[-1]), seen)
    return -alpha / seen


def clipped_softmax(scores, gamma, zeta):
    """repo softmax.py: clip((zeta - gamma) * softmax + gamma, 0, 1); no renormalisation."""
    probabilities = F.softmax(scores, dim=-1)
    return torch.clip((zeta - gamma) * probabilities + gamma, 0, 1)


class ReferenceAttention(nn.Module):
    """BertSelfAttentionWithExtras + BertSelfOutput.dense (dropout 0), or OPT's attention (the same
    math, with Q scaled before the product and the causal mask) when `opt_style`.

    options: softmax ('vanilla' | 'clipped'), gamma, zeta, alpha, max_length, gate (qtlab GateKind
    name or 'none'), gate_pi_init, gate_mlp_hidden, causal."""

    def __init__(self, options, opt_style=False):
        super().__init__()
        self.o = options
        self.opt_style = opt_style
        self.query = nn.Linear(HIDDEN, HIDDEN)
        self.key = nn.Linear(HIDDEN, HIDDEN)
        self.value = nn.Linear(HIDDEN, HIDDEN)
        self.output = nn.Linear(HIDDEN, HIDDEN)
        gate = options.get("gate", "none")
        if gate == "unconditional_per_head":
            self.alpha = nn.Parameter(torch.zeros(HEADS))
        elif gate == "all_heads_linear":
            self.alpha = nn.Linear(HIDDEN, HEADS, bias=True)
        elif gate in ("linear_per_head", "conditional_per_head"):
            heads = []
            for _ in range(HEADS):
                fc = nn.Linear(HEAD_DIM, 1, bias=True)
                nn.init.constant_(fc.bias, logit(options["gate_pi_init"]))
                heads.append(fc)
            self.alpha = nn.ModuleList(heads)
        elif gate == "mlp_per_head":
            n_hid = options["gate_mlp_hidden"]
            self.alpha = nn.ModuleList(
                [nn.Sequential(nn.Linear(HEAD_DIM, n_hid), nn.ReLU(), nn.Linear(n_hid, 1)) for _ in range(HEADS)]
            )
        else:
            assert gate == "none", gate
        if options.get("softmax") == "sink":  # gpt-oss `sinks`: one learned logit per head
            self.sink = nn.Parameter(torch.zeros(HEADS))

    def softmax(self, scores):
        o = self.o
        if o.get("alpha_per_row", False):  # NCS: gamma_i = -alpha / (keys row i sees), zeta = 1
            return clipped_softmax(scores, per_row_gamma(scores, o["alpha"]), 1.0)
        if o.get("alpha", 0.0) > 0:  # the alpha override ignores `softmax`
            return clipped_softmax(scores, -o["alpha"] / o["max_length"], 1.0)
        if o.get("softmax", "vanilla") == "clipped":
            return clipped_softmax(scores, o["gamma"], o["zeta"])
        if o.get("softmax", "vanilla") in ("softmax1", "sink"):
            # gpt-oss eager_attention_forward: softmax over [scores, sink] with the sink column
            # dropped; softmax1 (Miller 2023) is the sink fixed at 0.
            B, H, T, _ = scores.shape
            sink = self.sink if o["softmax"] == "sink" else torch.zeros(H, dtype=scores.dtype)
            combined = torch.cat([scores, sink.view(1, H, 1, 1).expand(B, H, T, 1)], dim=-1)
            return F.softmax(combined, dim=-1)[..., :-1]
        return F.softmax(scores, dim=-1)

    def split_heads(self, x):  # [B, T, d] -> [B, H, T, d_h]
        B, T, _ = x.shape
        return x.view(B, T, HEADS, HEAD_DIM).permute(0, 2, 1, 3)

    def gate(self, x):  # -> gate probabilities broadcastable to [B, H, T, d_h]
        kind = self.o.get("gate", "none")
        if kind == "unconditional_per_head":
            return torch.sigmoid(self.alpha).view(-1, 1, 1)
        if kind == "all_heads_linear":
            return torch.sigmoid(self.alpha(x)).permute(0, 2, 1).unsqueeze(3)  # [B, H, T, 1]
        heads = self.split_heads(x)
        logits = []
        for h in range(HEADS):
            logit_h = self.alpha[h](heads[:, h])  # [B, T, 1]
            if kind == "conditional_per_head":
                logit_h = torch.mean(logit_h, dim=1, keepdim=True)  # mean over T, padding included
            logits.append(logit_h)
        return torch.sigmoid(torch.stack(logits, dim=1))  # [B, H, T or 1, 1]

    def forward(self, x, key_padding_mask=None):
        B, T, _ = x.shape
        q = self.split_heads(self.query(x))
        k = self.split_heads(self.key(x))
        v = self.split_heads(self.value(x))
        lowest = torch.finfo(x.dtype).min
        if self.opt_style:
            scores = torch.matmul(q * HEAD_DIM**-0.5, k.transpose(-1, -2))
        else:
            scores = torch.matmul(q, k.transpose(-1, -2)) / math.sqrt(HEAD_DIM)
        # HF's additive masks: 0 for visible keys, the dtype minimum for hidden ones (OPT clamps
        # the sum at the minimum; a masked_fill gives the same scores).
        hidden = torch.zeros(B, 1, T, T, dtype=torch.bool)
        if key_padding_mask is not None:
            hidden = hidden | (key_padding_mask == 0).view(B, 1, 1, T)
        if self.o.get("causal", False):
            hidden = hidden | torch.triu(torch.ones(T, T, dtype=torch.bool), diagonal=1).view(1, 1, T, T)
        scores = scores.masked_fill(hidden, lowest)
        probabilities = self.softmax(scores)
        context = torch.matmul(probabilities, v)  # dropout(P) V with dropout 0
        if self.o.get("gate", "none") != "none":
            context = context * self.gate(x)
        context = context.permute(0, 2, 1, 3).contiguous().view(B, T, HIDDEN)
        return self.output(context)


def attention_parameters_in_qtlab_layout(module, prefix="", grads=False):
    """(qtlab name, tensor) for every parameter of ReferenceAttention, in qtlab's layout.

    The per-head gate modules are stacked over heads as attention_gate.h documents:
      linear / conditional:  weight[i, :] = alpha.{i}.weight[0, :],  bias[i] = alpha.{i}.bias[0]
      mlp:  hidden_weight[i] = alpha.{i}.0.weight, hidden_bias[i] = alpha.{i}.0.bias,
            output_weight[i] = alpha.{i}.2.weight[0], output_bias[i] = alpha.{i}.2.bias[0]
      all_heads_linear: weight = alpha.weight, bias = alpha.bias;  unconditional: logit = alpha
    grads=True reads the gradients (.grad) instead of the values."""

    def pick(t, grads):
        return t.grad if grads else t

    def collect(grads):
        out = []
        for name in ("query", "key", "value", "output"):
            linear = getattr(module, name)
            out.append((prefix + name + ".weight", pick(linear.weight, grads)))
            out.append((prefix + name + ".bias", pick(linear.bias, grads)))
        kind = module.o.get("gate", "none")
        if kind == "unconditional_per_head":
            out.append((prefix + "gate.logit", pick(module.alpha, grads)))
        elif kind == "all_heads_linear":
            out.append((prefix + "gate.weight", pick(module.alpha.weight, grads)))
            out.append((prefix + "gate.bias", pick(module.alpha.bias, grads)))
        elif kind in ("linear_per_head", "conditional_per_head"):
            out.append((prefix + "gate.weight", torch.stack([pick(fc.weight, grads)[0] for fc in module.alpha])))
            out.append((prefix + "gate.bias", torch.stack([pick(fc.bias, grads)[0] for fc in module.alpha])))
        elif kind == "mlp_per_head":
            out.append((prefix + "gate.hidden_weight", torch.stack([pick(m[0].weight, grads) for m in module.alpha])))
            out.append((prefix + "gate.hidden_bias", torch.stack([pick(m[0].bias, grads) for m in module.alpha])))
            out.append((prefix + "gate.output_weight", torch.stack([pick(m[2].weight, grads)[0] for m in module.alpha])))
            out.append((prefix + "gate.output_bias", torch.stack([pick(m[2].bias, grads)[0] for m in module.alpha])))
        if module.o.get("softmax") == "sink":
            out.append((prefix + "sink", pick(module.sink, grads)))
        return [(k, v.detach().clone()) for k, v in out]

    return collect(grads)


def attention_metadata(options):
    meta = {
        "module": "attention",
        "hidden": str(HIDDEN),
        "heads": str(HEADS),
        "softmax": options.get("softmax", "vanilla"),
        "gamma": repr(options.get("gamma", 0.0)),
        "zeta": repr(options.get("zeta", 1.0)),
        "alpha": repr(options.get("alpha", 0.0)),
        "max_length": str(options.get("max_length", 128)),
        "gate": options.get("gate", "none"),
        "gate_pi_init": repr(options.get("gate_pi_init", 0.5)),
        "gate_mlp_hidden": str(options.get("gate_mlp_hidden", 0)),
        "causal": "1" if options.get("causal", False) else "0",
        "alpha_per_row": "1" if options.get("alpha_per_row", False) else "0",
    }
    return meta


def attention_fixture(seed, options, mask=False, require_low_clip=False, require_high_clip=False):
    """Builds an attention fixture; deterministic seeds, retried (seed + 1000 k) until the clip
    decisions are unambiguous in float32 (every stretched value is >= 1e-4 away from 0 and 1)."""
    for attempt in range(50):
        s = seed + 1000 * attempt
        torch.manual_seed(s)  # nn.Linear default init draws from the global generator
        module = ReferenceAttention(options)
        g = torch.Generator().manual_seed(s + 1)
        with torch.no_grad():
            # Sharper attention than the default init gives, so that clipping is exercised.
            module.query.weight.mul_(3.0)
            if options.get("gate") == "unconditional_per_head":  # not the all-zero init
                module.alpha.copy_(f32_randn(g, HEADS))
            if options.get("softmax") == "sink":  # not the all-zero init (= softmax1)
                module.sink.copy_(f32_randn(g, HEADS, scale=1.5))
        x = f32_randn(g, BATCH, TOKENS, HIDDEN, scale=1.5)
        key_padding_mask = None
        if mask:
            key_padding_mask = torch.ones(BATCH, TOKENS, dtype=torch.int64)
            key_padding_mask[1, TOKENS - 2 :] = 0  # second sequence: the last two tokens are padding
        values = attention_parameters_in_qtlab_layout(module)
        out, gout, gin, _ = run_module(module, {"input": x}, s + 2, mask=key_padding_mask)
        grads = attention_parameters_in_qtlab_layout(module, grads=True)
        ok, stats = check_clipping(module, x, key_padding_mask, options, require_low_clip, require_high_clip)
        if ok:
            break
    else:
        raise RuntimeError("no seed with unambiguous clipping for %s" % options)
    tensors = [("input", x)]
    if key_padding_mask is not None:
        tensors.append(("key_padding_mask", key_padding_mask))
    tensors += [("param." + k, v) for k, v in values]
    tensors += [("output", out), ("grad_output", gout), ("grad.input", gin["input"])]
    tensors += [("grad.param." + k, v) for k, v in grads]
    meta = attention_metadata(options)
    meta.update(stats)
    meta["seed"] = str(s)
    return tensors, meta


def check_clipping(module, x, key_padding_mask, options, require_low, require_high):
    """Recomputes the stretched probabilities s of the fixture's forward pass (float64) and checks
    that no s lies within 1e-4 of a clip boundary; records how many entries are clipped."""
    per_row = options.get("alpha_per_row", False)
    if per_row:
        gamma, zeta = None, 1.0  # per row, from the captured scores
    elif options.get("alpha", 0.0) > 0:
        gamma, zeta = -options["alpha"] / options["max_length"], 1.0
    elif options.get("softmax", "vanilla") == "clipped":
        gamma, zeta = options["gamma"], options["zeta"]
    else:
        return True, {}
    saved = module.softmax  # the bound method; patched on the instance below, then restored
    captured = {}

    def capture(scores):
        p = F.softmax(scores, dim=-1)
        g = per_row_gamma(scores, options["alpha"]) if per_row else gamma
        captured["s"] = (zeta - g) * p + g
        # Masked keys have p = 0 exactly (s = gamma: clipped for sure); a causal row with a single
        # visible key has p = 1 exactly (s = zeta, on the boundary when zeta = 1, where clamp passes
        # the gradient; the softmax gradient of a one-key row is 0 anyway). Neither is ambiguous.
        captured["exact"] = (scores == torch.finfo(scores.dtype).min) | (p == 1.0)
        return saved(scores)

    module.softmax = capture
    with torch.no_grad():
        module(x.double(), key_padding_mask)
    del module.softmax
    s, exact = captured["s"], captured["exact"]
    live = s[~exact]
    margin = torch.min(torch.minimum(live.abs(), (live - 1).abs())).item()
    low = int((s < 0).sum().item())
    high = int((s > 1).sum().item())
    ok = margin >= 1e-4 and (low > 0 or not require_low) and (high > 0 or not require_high)
    stats = {
        "clipped_to_zero": str(low),
        "clipped_to_one": str(high),
        "probabilities": str(s.numel()),
        "clip_margin": "%.3g" % margin,
    }
    return ok, stats


ATTENTION_FIXTURES = {
    "attention_vanilla": (1001, {}, False, False, False),
    "attention_clipped_m0.025_1": (1002, {"softmax": "clipped", "gamma": -0.025, "zeta": 1.0}, False, True, False),
    "attention_clipped_m0.1_1.1": (1003, {"softmax": "clipped", "gamma": -0.1, "zeta": 1.1}, False, True, True),
    # alpha override: softmax says vanilla, but alpha > 0 makes it clipped with gamma = -0.6/8.
    "attention_alpha": (1004, {"softmax": "vanilla", "alpha": 0.6, "max_length": 8}, False, True, False),
    "attention_gate_linear_per_head": (1005, {"gate": "linear_per_head", "gate_pi_init": 0.25}, False, False, False),
    "attention_gate_mlp_per_head": (1006, {"gate": "mlp_per_head", "gate_mlp_hidden": 2}, False, False, False),
    "attention_gate_all_heads_linear": (1007, {"gate": "all_heads_linear"}, False, False, False),
    "attention_gate_unconditional_per_head": (1008, {"gate": "unconditional_per_head"}, False, False, False),
    "attention_gate_conditional_per_head": (
        1009,
        {"gate": "conditional_per_head", "gate_pi_init": 0.25},
        False,
        False,
        False,
    ),
    "attention_causal": (1010, {"causal": True}, False, False, False),
    "attention_padding": (1011, {}, True, False, False),
    # Everything at once (OPT-like): causal + padding + clipped softmax + per-head linear gate.
    "attention_combined": (
        1012,
        {"causal": True, "softmax": "clipped", "gamma": -0.025, "zeta": 1.0, "gate": "linear_per_head",
         "gate_pi_init": 0.25},
        True,
        True,
        False,
    ),
    # No-op mechanisms beyond the paper (issue 15): softmax1 and the learned sink logit.
    "attention_softmax1": (1013, {"softmax": "softmax1"}, False, False, False),
    "attention_sink": (1014, {"softmax": "sink"}, False, False, False),
    "attention_sink_causal_padding": (1015, {"softmax": "sink", "causal": True}, True, False, False),
    # NCS (Liao & Monz 2024): the clipped softmax with gamma = -alpha / (keys the row sees).
    "attention_per_row_gamma": (
        1016,
        {"softmax": "clipped", "alpha": 0.6, "alpha_per_row": True, "max_length": 8, "causal": True},
        True,
        True,
        False,
    ),
}


# --------------------------------------------------------------------------------------------
# Transformer blocks (HF BertLayer, HF OPTDecoderLayer, timm ViT Block; dropout 0)


class BertLayer(nn.Module):
    """h1 = LN_1(Attention(h) + h);  h' = LN_2(W_2 GELU(W_1 h1 + b_1) + b_2 + h1)."""

    def __init__(self, attention_options, eps):
        super().__init__()
        self.attention = ReferenceAttention(attention_options)
        self.attention_layer_norm = nn.LayerNorm(HIDDEN, eps=eps)  # BERT attention.output.LayerNorm
        self.ffn_in = nn.Linear(HIDDEN, FFN)  # BERT intermediate.dense
        self.ffn_out = nn.Linear(FFN, HIDDEN)  # BERT output.dense
        self.output_layer_norm = nn.LayerNorm(HIDDEN, eps=eps)  # BERT output.LayerNorm

    def forward(self, h, key_padding_mask=None):
        h1 = self.attention_layer_norm(self.attention(h, key_padding_mask) + h)
        return self.output_layer_norm(self.ffn_out(F.gelu(self.ffn_in(h1))) + h1)


class PreLayerNormBlock(nn.Module):
    """x = LN_attn(h); h1 = h + Attention(x); h' = h1 + W_2 act(W_1 LN_ffn(h1) + b_1) + b_2.
    OPT: activation ReLU, Q scaled before the product, causal; ViT: GELU."""

    def __init__(self, attention_options, eps, activation, opt_style):
        super().__init__()
        self.attention = ReferenceAttention(attention_options, opt_style=opt_style)
        self.attention_layer_norm = nn.LayerNorm(HIDDEN, eps=eps)  # OPT self_attn_layer_norm
        self.ffn_in = nn.Linear(HIDDEN, FFN)  # OPT fc1
        self.ffn_out = nn.Linear(FFN, HIDDEN)  # OPT fc2
        self.output_layer_norm = nn.LayerNorm(HIDDEN, eps=eps)  # OPT final_layer_norm (per layer)
        self.activation = activation

    def forward(self, h, key_padding_mask=None):
        # The gate reads the LayerNorm-ed x, the same tensor as Q/K/V (method.md §2.1).
        h1 = h + self.attention(self.attention_layer_norm(h), key_padding_mask)
        return h1 + self.ffn_out(self.activation(self.ffn_in(self.output_layer_norm(h1))))


def block_parameters(block, grads=False):
    """(qtlab name, tensor) for every block parameter (values, or gradients when grads=True)."""
    out = attention_parameters_in_qtlab_layout(block.attention, "attention.", grads)
    for name in ("attention_layer_norm", "ffn_in", "ffn_out", "output_layer_norm"):
        module = getattr(block, name)
        for p in ("weight", "bias"):
            t = getattr(module, p)
            out.append((name + "." + p, (t.grad if grads else t).detach().clone()))
    return out


def block_fixture(seed, kind, attention_options, eps, mask):
    torch.manual_seed(seed)
    if kind == "bert":
        block = BertLayer(attention_options, eps)
    elif kind == "opt":
        block = PreLayerNormBlock(attention_options, eps, F.relu, opt_style=True)
    else:
        block = PreLayerNormBlock(attention_options, eps, F.gelu, opt_style=False)
    g = torch.Generator().manual_seed(seed + 1)
    with torch.no_grad():
        block.attention.query.weight.mul_(2.0)
        for ln in (block.attention_layer_norm, block.output_layer_norm):  # non-trivial gamma, beta
            ln.weight.copy_(f32_randn(g, HIDDEN, scale=0.2, mean=1.0))
            ln.bias.copy_(f32_randn(g, HIDDEN, scale=0.2))
    h = f32_randn(g, BATCH, TOKENS, HIDDEN, scale=1.0)
    key_padding_mask = None
    if mask:
        key_padding_mask = torch.ones(BATCH, TOKENS, dtype=torch.int64)
        key_padding_mask[0, TOKENS - 1] = 0
        key_padding_mask[1, TOKENS - 2 :] = 0
    values = block_parameters(block)
    out, gout, gin, _ = run_module(block, {"input": h}, seed + 2, mask=key_padding_mask)
    grads = block_parameters(block, grads=True)
    stats = {}
    if kind == "bert":  # post-LN: the attention input is h itself; check the clip decisions
        ok, stats = check_clipping(block.attention, h, key_padding_mask, attention_options, True, False)
        assert ok, stats
    tensors = [("input", h)]
    if key_padding_mask is not None:
        tensors.append(("key_padding_mask", key_padding_mask))
    tensors += [("param." + k, v) for k, v in values]
    tensors += [("output", out), ("grad_output", gout), ("grad.input", gin["input"])]
    tensors += [("grad.param." + k, v) for k, v in grads]
    meta = attention_metadata(attention_options)
    meta.update(
        {
            "module": "transformer_block",
            "block": kind,
            "pre_layer_norm": "0" if kind == "bert" else "1",
            "activation": "relu" if kind == "opt" else "gelu",
            "layer_norm_eps": repr(eps),
            "ffn": str(FFN),
        }
    )
    meta.update(stats)
    return tensors, meta


def fixture_block_bert():
    # BERT: post-LN, GELU, LN eps 1e-12, bidirectional attention with padding, clipped softmax.
    return block_fixture(2001, "bert", {"softmax": "clipped", "gamma": -0.025, "zeta": 1.0}, 1e-12, mask=True)


def fixture_block_opt():
    # OPT: pre-LN, ReLU, LN eps 1e-5, causal attention with a per-head linear gate (pi_init 0.25).
    return block_fixture(
        2002, "opt", {"causal": True, "gate": "linear_per_head", "gate_pi_init": 0.25}, 1e-5, mask=False
    )


def fixture_block_vit():
    # ViT: pre-LN, GELU, LN eps 1e-6, bidirectional, MLP gate.
    return block_fixture(2003, "vit", {"gate": "mlp_per_head", "gate_mlp_hidden": 2}, 1e-6, mask=False)


# --------------------------------------------------------------------------------------------
# AdamW + gradient-norm clipping


def fixture_adamw_clip():
    """Five steps of torch.optim.AdamW (foreach=False) on three parameters in two groups (decay
    0.1 for the weights, 0 for the bias), gradients given per step and clipped to global norm 1
    by clip_grad_norm_ before each step. The gradient scale varies so that some steps are clipped
    and some are not; "w2" has no gradient at step 3 (it must be skipped: neither moved nor its
    step count advanced). Learning rates per step are in the metadata ("lr")."""
    g = torch.Generator().manual_seed(3001)
    shapes = {"w1": (3, 4), "b1": (4,), "w2": (2, 2, 2)}
    params = {k: nn.Parameter(f32_randn(g, *s)) for k, s in shapes.items()}
    lrs = [0.01, 0.02, 0.015, 0.01, 0.005]
    grad_scales = [2.0, 0.05, 1.0, 0.02, 3.0]
    weight_decay, max_norm = 0.1, 1.0
    betas, eps = (0.9, 0.999), 1e-8
    optimizer = torch.optim.AdamW(
        [
            {"params": [params["w1"], params["w2"]], "weight_decay": weight_decay},
            {"params": [params["b1"]], "weight_decay": 0.0},
        ],
        lr=lrs[0],
        betas=betas,
        eps=eps,
        foreach=False,
    )
    tensors = [("param.initial." + k, p.detach().clone()) for k, p in params.items()]
    norms = []
    for step in range(1, 6):
        for k, p in params.items():
            if k == "w2" and step == 3:
                p.grad = None
                continue
            grad = f32_randn(g, *shapes[k], scale=grad_scales[step - 1])
            tensors.append(("grad.step%d.%s" % (step, k), grad.clone()))
            p.grad = grad
        norm = torch.nn.utils.clip_grad_norm_([p for p in params.values() if p.grad is not None], max_norm)
        norms.append(norm.item())
        for group in optimizer.param_groups:
            group["lr"] = lrs[step - 1]
        optimizer.step()
        for k, p in params.items():
            tensors.append(("param.step%d.%s" % (step, k), p.detach().clone()))
    tensors.append(("grad_norm", torch.tensor(norms, dtype=torch.float32)))
    meta = {
        "module": "adamw",
        "lr": ",".join(repr(x) for x in lrs),
        "beta1": repr(betas[0]),
        "beta2": repr(betas[1]),
        "eps": repr(eps),
        "weight_decay": repr(weight_decay),
        "decayed": "w1,w2",
        "not_decayed": "b1",
        "max_norm": repr(max_norm),
        "steps": "5",
        "clipped_steps": ",".join(str(i + 1) for i, n in enumerate(norms) if n > max_norm),
    }
    return tensors, meta


# --------------------------------------------------------------------------------------------


def all_fixtures():
    fixtures = {
        "layer_norm": fixture_layer_norm,
        "gelu": fixture_gelu,
        "cross_entropy": fixture_cross_entropy,
        "cross_entropy_smoothing": fixture_cross_entropy_smoothing,
        "block_bert_post_ln": fixture_block_bert,
        "block_opt_pre_ln": fixture_block_opt,
        "block_vit_pre_ln": fixture_block_vit,
        "adamw_clip": fixture_adamw_clip,
    }
    for name, (seed, options, mask, low, high) in ATTENTION_FIXTURES.items():
        fixtures[name] = (lambda s=seed, o=options, m=mask, lo=low, hi=high: attention_fixture(s, o, m, lo, hi))
    return fixtures


def main():
    out_dir = sys.argv[1] if len(sys.argv) > 1 else os.path.join(os.path.dirname(__file__), "..", "tests", "data")
    os.makedirs(out_dir, exist_ok=True)
    torch.set_num_threads(1)
    total = 0
    only = set(sys.argv[2:])  # fixture names to (re)write; all of them when none is given
    unknown = only - set(all_fixtures())
    if unknown:
        sys.exit("make_fixtures.py: unknown fixture(s): %s" % ", ".join(sorted(unknown)))
    for name, build in all_fixtures().items():
        if only and name not in only:
            continue
        tensors, meta = build()
        meta = dict(meta)
        meta["generator"] = GENERATOR
        meta["fixture"] = name
        path = os.path.join(out_dir, name + ".safetensors")
        write_safetensors(path, tensors, meta)
        size = os.path.getsize(path)
        total += size
        extra = ""
        if "clipped_to_zero" in meta:
            extra = " (clipped to 0: %s, to 1: %s of %s; margin %s)" % (
                meta["clipped_to_zero"],
                meta["clipped_to_one"],
                meta["probabilities"],
                meta["clip_margin"],
            )
        print("%-40s %6d bytes%s" % (name + ".safetensors", size, extra))
    print("total %d bytes" % total)


if __name__ == "__main__":
    main()
