#!/usr/bin/python3
"""qtlab's BERT, OPT and ViT in PyTorch, loaded from a qtlab model file (issue 16).

Needs only Debian's python3-torch (1.13) and numpy. Use it as a library:

    sys.path.insert(0, "tools"); import torch_model
    model, config = torch_model.load_qtlab_model("runs/x/model.safetensors")   # eval mode, float64
    logits = model(input_ids)          # BERT / OPT: i64 [B, T] -> [B, T, V]
    logits = model(patches)            # ViT: f32/f64 [B, N, p*p*C] (patchified) -> [B, classes]

or from the command line:

    tools/torch_model.py --checkpoint RUN/model.safetensors             summary of the loaded model
    tools/torch_model.py --checkpoint RUN/model.safetensors --check     qtlab vs PyTorch logits
    tools/torch_model.py --list-keys                                    the model.* keys it knows

`--check` builds a deterministic batch (seeded torch.Generator: token ids uniform in [0, V), or
N(0, 1) patches), writes it as a safetensors file, runs `qtlab logits` on it (build/qtlab, or
--qtlab), runs the PyTorch model on the same batch and compares. Exit status: 0 when every
checkpoint agrees, 1 when one disagrees, 2 on bad input (missing file, not a qtlab model, unknown
config key, unknown gate kind, tensors that do not fit the configured model).

Tolerance. PyTorch runs in float64 on the stored float32 weights (the reference); qtlab runs in
float32. The check passes when

    max |logit_qtlab - logit_torch| <= rtol * max(1, max |logit_torch|),   rtol = 1e-4 (--rtol)

float32 rounds at 2^-24 = 6e-8 relative per operation; the few hundred operations on each logit's
path (LayerNorm, GEMM sums of d terms, softmax) leave errors of order 1e-6 relative to the logits'
scale in the trained models measured, so 1e-4 has a wide margin yet fails on any wrongly mapped,
transposed or unused weight, which moves the logits by orders of magnitude more (tests/
test_torch_model.cpp corrupts one weight per variant and sees the check fail).

The architectures (docs/method.md §3; the same equations as qtlab's models/ and nn/):

  BERT (post-LN masked LM, HF BertForMaskedLM without the token-type table and the pooler):
      h0 = LN_emb(E_word[ids] + E_pos[0..T-1])
      per layer: h1 = LN_1(Attn(h) + h);  h' = LN_2(W_2 GELU(W_1 h1 + b_1) + b_2 + h1)
      logits = LN_head(GELU(h_L W_t^T + b_t)) E_word^T + b_dec              (tied decoder)
  OPT (pre-LN causal LM, HF OPTForCausalLM):
      h0 = E_tok[ids] + E_pos[2..T+1]                                        (offset 2)
      per layer: h1 = h + Attn(LN_attn(h));  h' = h1 + W_2 ReLU(W_1 LN_ffn(h1) + b_1) + b_2
      logits = LN_final(h_L) E_tok^T                                         (tied, no bias)
  ViT (pre-LN, timm VisionTransformer on already patchified images):
      x = patches W_p^T + b_p;  x = LN_patch(x) (model.patch_layer_norm);  x = [CLS; x] + E_pos
      per layer: as OPT with GELU and bidirectional attention
      logits = head(LN_final(x_L)[:, 0])

  Attention (the paper repo's BertSelfAttentionWithExtras / OPTAttentionWithExtras, eval mode):
      S = Q K^T / sqrt(d_h)   (OPT scales Q by d_h^-1/2 first, and adds dtype-min above the
                               diagonal: the causal mask)
      P = softmax(S)                                         model.softmax = vanilla
        = e^S / (e^a + sum e^S)                              model.softmax = softmax1 (a = 0) / sink (a learned)
        = clip((zeta - gamma) softmax(S) + gamma, 0, 1)      model.softmax = clipped (gamma, zeta)
          with gamma = -alpha / L, zeta = 1 when model.alpha > 0 (overrides model.softmax; L = the
          configured model.max_length, ViT: patches + 1, not the batch length)
      C_i = P_i V_i;  gated: C_i *= pi_i(x) (x = the attention's input), per model.gate:
          linear                pi_i = sigmoid(x_i . w_i + b_i)            (x_i: head i's d_h slice)
          mlp                   pi_i = sigmoid(w2_i . ReLU(W1_i x_i + b1_i) + b2_i)
          all-heads-linear      pi   = sigmoid(W x + b)                    (one Linear(d, H))
          unconditional         pi_i = sigmoid(l_i)                        (no input)
          conditional-per-head  pi_i = sigmoid(mean_t (x_i[t] . w_i + b_i)) (one value per sequence)
      out = concat(C) W_o^T + b_o

Name mapping. The modules are laid out as the paper's repo does (per-head gates are H separate
nn.Linear / nn.Sequential in the attention's `alpha`); `qtlab_names()` lists which qtlab tensor
each parameter comes from. qtlab stores per-head networks stacked over heads (nn/attention_gate.h):
gate.weight[i] = alpha[i].weight[0], gate.hidden_weight[i] = alpha[i][0].weight ([n_hid, d_h],
which is nn.Linear's own [out, in] layout: no transpose, unlike a batched `x @ W` formulation that
would keep [d_h, n_hid]), and so on. There is no token-type table, no pooler and no buffer.

tools/make_model_fixtures.py builds its golden-fixture models from these classes.
"""

import argparse
import json
import math
import os
import subprocess
import sys
import tempfile

import torch
import torch.nn as nn
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from safetensors_writer import read_safetensors, write_safetensors  # noqa: E402

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DEFAULT_RTOL = 1e-4


class QtlabModelError(Exception):
    """Bad input: the message names the file and the problem."""


# --------------------------------------------------------------------------------------------
# The configuration: qtlab's model.* keys (models/config.h ModelConfig), with qtlab's defaults
# (a key absent from a stored config takes its default, as models::from_json does). The train.*
# and data.* sections do not change the forward pass and are not read.

GATES = ("none", "linear", "mlp", "all-heads-linear", "unconditional", "conditional-per-head")
MODEL_KEYS = {  # key: (default, choices or None)
    "family": ("bert", ("bert", "opt", "vit")),
    "layers": (4, None),
    "hidden": (256, None),
    "heads": (4, None),
    "ffn": (1024, None),
    "vocab_size": (8192, None),
    "max_length": (128, None),
    "layer_norm_eps": (1e-12, None),
    "hidden_dropout": (0.1, None),       # dropout: unused in eval mode
    "attention_dropout": (0.1, None),
    "init_std": (0.02, None),            # init: unused, every weight is loaded
    "softmax": ("vanilla", ("vanilla", "clipped", "softmax1", "sink")),
    "gamma": (0.0, None),
    "zeta": (1.0, None),
    "alpha": (0.0, None),
    "alpha_per_row": (False, None),
    "gate": ("none", GATES),
    "gate_pi_init": (0.5, None),
    "gate_mlp_hidden": (0, None),
    "image_size": (28, None),
    "channels": (1, None),
    "patch_size": (4, None),
    "num_classes": (10, None),
    "patch_layer_norm": (False, None),
}


class ModelSpec:
    """The model.* values, as attributes (spec.hidden, spec.gate, ...)."""

    def __init__(self, values=None, where="config"):
        values = dict(values or {})
        for key, value in values.items():
            if key not in MODEL_KEYS:
                close = [k for k in MODEL_KEYS if k[:3] == key[:3] or key in k]
                hint = " (did you mean %s?)" % ", ".join("model." + k for k in close) if close else ""
                raise QtlabModelError("%s: unknown config key model.%s%s; tools/torch_model.py knows %s"
                                      % (where, key, hint, ", ".join("model." + k for k in MODEL_KEYS)))
        for key, (default, choices) in MODEL_KEYS.items():
            value = values.get(key, default)
            if isinstance(default, bool):
                ok = isinstance(value, bool)
            elif isinstance(default, int):  # 3.0 is accepted for an integer, as qtlab does
                if isinstance(value, float) and value.is_integer():
                    value = int(value)
                ok = isinstance(value, int) and not isinstance(value, bool)
            elif isinstance(default, float):
                ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
                value = float(value) if ok else value
            else:
                ok = isinstance(value, str) and (choices is None or value in choices)
            if not ok:
                want = "one of " + ", ".join(choices) if choices else type(default).__name__
                raise QtlabModelError("%s: model.%s = %s is not valid: expected %s"
                                      % (where, key, json.dumps(value), want))
            setattr(self, key, value)
        if self.hidden <= 0 or self.heads <= 0 or self.hidden % self.heads:
            raise QtlabModelError("%s: model.hidden = %d is not divisible by model.heads = %d"
                                  % (where, self.hidden, self.heads))
        if self.family == "vit" and (self.patch_size <= 0 or self.image_size % self.patch_size):
            raise QtlabModelError("%s: model.patch_size = %d does not divide model.image_size = %d"
                                  % (where, self.patch_size, self.image_size))
        self.head_dim = self.hidden // self.heads
        self.num_patches = (self.image_size // self.patch_size) ** 2 if self.family == "vit" else 0
        self.patch_dim = self.patch_size * self.patch_size * self.channels
        if self.gate == "mlp":
            self.gate_mlp_hidden = self.gate_mlp_hidden or self.head_dim // 4  # the repo's d_h / 4
            if self.gate_mlp_hidden < 1:
                raise QtlabModelError("%s: model.gate = mlp with d_head = %d < 4 needs model.gate_mlp_hidden > 0"
                                      % (where, self.head_dim))
        if self.alpha_per_row and self.alpha <= 0:
            raise QtlabModelError("%s: model.alpha_per_row = true needs model.alpha > 0" % where)
        if self.alpha > 0 and self.softmax in ("softmax1", "sink"):
            raise QtlabModelError("%s: model.alpha = %g makes the softmax clipped, which does not go with "
                                  "model.softmax = %s" % (where, self.alpha, self.softmax))
        if self.softmax == "clipped" and self.alpha <= 0 and not (self.gamma <= 0 and self.zeta >= 1):
            raise QtlabModelError("%s: model.gamma = %g, model.zeta = %g (the clipped softmax needs gamma <= 0, "
                                  "zeta >= 1)" % (where, self.gamma, self.zeta))

    def attention_length(self):
        """L of gamma = -alpha / L: the configured sequence length (ViT: patches + CLS)."""
        return self.num_patches + 1 if self.family == "vit" else self.max_length

    def clip_range(self):
        """(gamma, zeta) of the clipped softmax, or None for the plain softmax (method.md §1.3)."""
        if self.alpha > 0:
            return -self.alpha / self.attention_length(), 1.0
        if self.softmax == "clipped":
            return self.gamma, self.zeta
        return None

    def describe(self):
        clip = self.clip_range()
        if self.softmax in ("softmax1", "sink"):
            softmax = "softmax1" if self.softmax == "softmax1" else "learned sink logit softmax"
        elif clip is None:
            softmax = "vanilla softmax"
        elif self.alpha > 0:
            softmax = "clipped softmax (alpha %g: gamma %.6g, zeta 1)" % (self.alpha, clip[0])
        else:
            softmax = "clipped softmax (gamma %g, zeta %g)" % clip
        gate = "" if self.gate == "none" else ", gate %s" % self.gate
        return "%s %dx%d, %d heads, %s%s" % (self.family, self.layers, self.hidden, self.heads, softmax, gate)


# --------------------------------------------------------------------------------------------
# Attention (the reference repo's computation, eval mode)


def logit(p, eps=1e-16):
    """The repo's helper: logit(p) = -ln(1/p - 1), p clipped to [eps, 1 - eps]."""
    p = min(max(p, eps), 1 - eps)
    return -math.log(1 / p - 1)


class PerHead:
    """A qtlab tensor stacked over heads from H per-head PyTorch tensors: qtlab[i] = tensors[i],
    without tensors[i]'s leading dimension of 1 when drop_leading (a Linear(n, 1) weight [1, n] is
    row [n] of qtlab's [H, n], its bias [1] entry i of qtlab's [H])."""

    def __init__(self, tensors, drop_leading):
        self.tensors, self.drop_leading = list(tensors), drop_leading

    def stack(self, get=lambda t: t.detach()):
        return torch.stack([get(t)[0] if self.drop_leading else get(t) for t in self.tensors])

    def shape(self):
        one = self.tensors[0].shape[1:] if self.drop_leading else self.tensors[0].shape
        return (len(self.tensors),) + tuple(one)

    def load(self, value):
        for i, t in enumerate(self.tensors):
            t.copy_(value[i].reshape(t.shape))


class Attention(nn.Module):
    """Multi-head self-attention with the clipped softmax and every gate of model.gate."""

    def __init__(self, spec):
        super().__init__()
        self.spec = spec
        d, H, dh = spec.hidden, spec.heads, spec.head_dim
        self.causal = self.opt_style = spec.family == "opt"
        self.query = nn.Linear(d, d)
        self.key = nn.Linear(d, d)
        self.value = nn.Linear(d, d)
        self.output = nn.Linear(d, d)
        # The gate `alpha`, as the repo builds it (layouts: nn/attention_gate.h).
        if spec.gate in ("linear", "conditional-per-head"):  # H x nn.Linear(d_h, 1), bias logit(pi)
            self.alpha = nn.ModuleList([nn.Linear(dh, 1) for _ in range(H)])
            for fc in self.alpha:
                nn.init.constant_(fc.bias, logit(spec.gate_pi_init))
        elif spec.gate == "mlp":  # H x [Linear(d_h, n_hid), ReLU, Linear(n_hid, 1)]
            n = spec.gate_mlp_hidden
            self.alpha = nn.ModuleList([nn.Sequential(nn.Linear(dh, n), nn.ReLU(), nn.Linear(n, 1)) for _ in range(H)])
        elif spec.gate == "all-heads-linear":  # one nn.Linear(d, H) on the whole input
            self.alpha = nn.Linear(d, H)
        elif spec.gate == "unconditional":  # a free logit per head, pi = sigmoid(0) = 0.5 at init
            self.alpha = nn.Parameter(torch.zeros(H))
        else:
            assert spec.gate == "none", spec.gate
        if spec.softmax == "sink":  # gpt-oss `sinks`: a learned logit per head, 0 at init
            self.sink = nn.Parameter(torch.zeros(H))
        self.last_probabilities = None  # P of the last forward (clip statistics)
        self.last_gate = None           # pi [B, H, T, 1] of the last forward

    def split_heads(self, x):  # [B, T, d] -> [B, H, T, d_h]
        B, T, _ = x.shape
        return x.view(B, T, self.spec.heads, self.spec.head_dim).permute(0, 2, 1, 3)

    def gate_probabilities(self, x):
        """pi [B, H, T, 1] (or broadcastable to it) from the attention input x [B, T, d]."""
        gate, H = self.spec.gate, self.spec.heads
        if gate == "unconditional":
            return torch.sigmoid(self.alpha).view(1, H, 1, 1)
        if gate == "all-heads-linear":
            return torch.sigmoid(self.alpha(x)).permute(0, 2, 1).unsqueeze(-1)
        heads = self.split_heads(x)
        gate_logits = torch.stack([self.alpha[h](heads[:, h]) for h in range(H)], dim=1)  # [B, H, T, 1]
        if gate == "conditional-per-head":  # mean over the T tokens, then the sigmoid
            gate_logits = gate_logits.mean(dim=2, keepdim=True)
        return torch.sigmoid(gate_logits)

    def forward(self, x):
        B, T, _ = x.shape
        dh = self.spec.head_dim
        q, k, v = self.split_heads(self.query(x)), self.split_heads(self.key(x)), self.split_heads(self.value(x))
        if self.opt_style:  # OPT scales Q before the product
            scores = torch.matmul(q * dh**-0.5, k.transpose(-1, -2))
        else:
            scores = torch.matmul(q, k.transpose(-1, -2)) / math.sqrt(dh)
        if self.causal:
            above = torch.triu(torch.ones(T, T, dtype=torch.bool), diagonal=1)
            scores = scores.masked_fill(above, torch.finfo(scores.dtype).min)
        if self.spec.softmax in ("softmax1", "sink"):
            # softmax over [scores, a_h] with the sink column dropped (softmax1: a_h = 0)
            H = self.spec.heads
            sink = self.sink if self.spec.softmax == "sink" else torch.zeros(H, dtype=scores.dtype)
            column = sink.to(scores.dtype).view(1, H, 1, 1).expand(B, H, T, 1)
            p = F.softmax(torch.cat([scores, column], dim=-1), dim=-1)[..., :-1]
        else:
            p = F.softmax(scores, dim=-1)
        clip = self.spec.clip_range()
        if self.spec.alpha_per_row:  # NCS: gamma_i = -alpha / (keys row i sees), zeta = 1
            seen = torch.tril(torch.ones(T, T)).sum(-1) if self.causal else torch.full((T,), float(T))
            gamma = (-self.spec.alpha / seen).to(p.dtype).view(1, 1, T, 1)
            p = torch.clip((1 - gamma) * p + gamma, 0, 1)
        elif clip is not None:
            gamma, zeta = clip
            p = torch.clip((zeta - gamma) * p + gamma, 0, 1)
        self.last_probabilities = p.detach()
        context = torch.matmul(p, v)  # [B, H, T, d_h]
        if self.spec.gate != "none":
            pi = self.gate_probabilities(x)
            self.last_gate = pi.detach()
            context = context * pi
        context = context.permute(0, 2, 1, 3).contiguous().view(B, T, self.spec.hidden)
        return self.output(context)

    def gate_names(self, prefix):
        """(qtlab name, parameter or PerHead) of the gate."""
        a, gate = self.alpha if self.spec.gate != "none" else None, self.spec.gate
        if gate in ("linear", "conditional-per-head"):
            return [(prefix + "weight", PerHead([fc.weight for fc in a], True)),
                    (prefix + "bias", PerHead([fc.bias for fc in a], True))]
        if gate == "mlp":
            return [(prefix + "hidden_weight", PerHead([s[0].weight for s in a], False)),
                    (prefix + "hidden_bias", PerHead([s[0].bias for s in a], False)),
                    (prefix + "output_weight", PerHead([s[2].weight for s in a], True)),
                    (prefix + "output_bias", PerHead([s[2].bias for s in a], True))]
        if gate == "all-heads-linear":
            return [(prefix + "weight", a.weight), (prefix + "bias", a.bias)]
        if gate == "unconditional":
            return [(prefix + "logit", a)]
        return []


class Block(nn.Module):
    """Post-LN (BERT) or pre-LN (OPT, ViT) transformer block; attribute names are qtlab's."""

    def __init__(self, spec, activation, pre_layer_norm):
        super().__init__()
        eps = spec.layer_norm_eps
        self.attention = Attention(spec)
        self.attention_layer_norm = nn.LayerNorm(spec.hidden, eps=eps)
        self.ffn_in = nn.Linear(spec.hidden, spec.ffn)
        self.ffn_out = nn.Linear(spec.ffn, spec.hidden)
        self.output_layer_norm = nn.LayerNorm(spec.hidden, eps=eps)
        self.activation = activation
        self.pre_layer_norm = pre_layer_norm

    def forward(self, h):
        ffn = lambda z: self.ffn_out(self.activation(self.ffn_in(z)))  # noqa: E731
        if not self.pre_layer_norm:  # BERT
            h1 = self.attention_layer_norm(self.attention(h) + h)
            return self.output_layer_norm(ffn(h1) + h1)
        h1 = h + self.attention(self.attention_layer_norm(h))  # the gate reads LN_attn(h) too
        return h1 + ffn(self.output_layer_norm(h1))


def weight_bias(name, module):
    """(name.weight, module.weight), (name.bias, module.bias) of a Linear or LayerNorm."""
    return [(name + ".weight", module.weight), (name + ".bias", module.bias)]


def block_names(block, prefix):
    """(qtlab name, parameter or PerHead) for one block (nn/transformer_block.h, nn/attention.h)."""
    a = block.attention
    out = []
    for name in ("query", "key", "value", "output"):
        out += weight_bias(prefix + "attention." + name, getattr(a, name))
    out += a.gate_names(prefix + "attention.gate.")
    if a.spec.softmax == "sink":
        out.append((prefix + "attention.sink", a.sink))
    for name in ("attention_layer_norm", "ffn_in", "ffn_out", "output_layer_norm"):
        out += weight_bias(prefix + name, getattr(block, name))
    return out


# --------------------------------------------------------------------------------------------
# The three models


class Bert(nn.Module):
    def __init__(self, spec):
        super().__init__()
        self.spec = spec
        eps = spec.layer_norm_eps
        self.word_embeddings = nn.Embedding(spec.vocab_size, spec.hidden)
        self.position_embeddings = nn.Embedding(spec.max_length, spec.hidden)
        self.embedding_layer_norm = nn.LayerNorm(spec.hidden, eps=eps)
        self.layers = nn.ModuleList([Block(spec, F.gelu, False) for _ in range(spec.layers)])
        self.head_transform = nn.Linear(spec.hidden, spec.hidden)
        self.head_layer_norm = nn.LayerNorm(spec.hidden, eps=eps)
        self.head_bias = nn.Parameter(torch.zeros(spec.vocab_size))

    def logits(self, ids):
        T = ids.shape[1]
        h = self.embedding_layer_norm(self.word_embeddings(ids) + self.position_embeddings(torch.arange(T)))
        for layer in self.layers:
            h = layer(h)
        t = self.head_layer_norm(F.gelu(self.head_transform(h)))
        return torch.matmul(t, self.word_embeddings.weight.t()) + self.head_bias

    forward = logits

    def qtlab_names(self):
        out = [
            ("embeddings.word_embeddings.weight", self.word_embeddings.weight),
            ("embeddings.position_embeddings.weight", self.position_embeddings.weight),
        ] + weight_bias("embeddings.layer_norm", self.embedding_layer_norm)
        for l, layer in enumerate(self.layers):
            out += block_names(layer, "encoder.layer.%d." % l)
        out += weight_bias("head.transform", self.head_transform) + weight_bias("head.layer_norm", self.head_layer_norm)
        return out + [("head.bias", self.head_bias)]


class Opt(nn.Module):
    POSITION_OFFSET = 2  # HF OPT's learned positions start at row 2

    def __init__(self, spec):
        super().__init__()
        self.spec = spec
        self.token_embeddings = nn.Embedding(spec.vocab_size, spec.hidden)
        self.position_embeddings = nn.Embedding(spec.max_length + self.POSITION_OFFSET, spec.hidden)
        self.layers = nn.ModuleList([Block(spec, F.relu, True) for _ in range(spec.layers)])
        self.final_layer_norm = nn.LayerNorm(spec.hidden, eps=spec.layer_norm_eps)

    def logits(self, ids):
        T = ids.shape[1]
        h = self.token_embeddings(ids) + self.position_embeddings(torch.arange(T) + self.POSITION_OFFSET)
        for layer in self.layers:
            h = layer(h)
        return torch.matmul(self.final_layer_norm(h), self.token_embeddings.weight.t())

    forward = logits

    def qtlab_names(self):
        out = [
            ("decoder.embed_tokens.weight", self.token_embeddings.weight),
            ("decoder.embed_positions.weight", self.position_embeddings.weight),
        ]
        for l, layer in enumerate(self.layers):
            out += block_names(layer, "decoder.layers.%d." % l)
        return out + weight_bias("decoder.final_layer_norm", self.final_layer_norm)


class Vit(nn.Module):
    def __init__(self, spec):
        super().__init__()
        self.spec = spec
        eps, d = spec.layer_norm_eps, spec.hidden
        self.patch_embedding = nn.Linear(spec.patch_dim, d)
        self.patch_layer_norm = nn.LayerNorm(d, eps=eps) if spec.patch_layer_norm else None
        self.cls_token = nn.Parameter(torch.randn(1, 1, d))
        self.position_embeddings = nn.Parameter(torch.randn(1, spec.num_patches + 1, d))
        self.layers = nn.ModuleList([Block(spec, F.gelu, True) for _ in range(spec.layers)])
        self.final_layer_norm = nn.LayerNorm(d, eps=eps)
        self.head = nn.Linear(d, spec.num_classes)

    def logits(self, patches):
        x = self.patch_embedding(patches)
        if self.patch_layer_norm is not None:
            x = self.patch_layer_norm(x)
        x = torch.cat([self.cls_token.expand(x.shape[0], 1, self.spec.hidden), x], dim=1) + self.position_embeddings
        for layer in self.layers:
            x = layer(x)
        return self.head(self.final_layer_norm(x)[:, 0])

    forward = logits

    def qtlab_names(self):
        out = weight_bias("patch_embedding", self.patch_embedding)
        if self.patch_layer_norm is not None:
            out += weight_bias("patch_layer_norm", self.patch_layer_norm)
        out += [("cls_token", self.cls_token), ("position_embeddings", self.position_embeddings)]
        for l, layer in enumerate(self.layers):
            out += block_names(layer, "layers.%d." % l)
        return out + weight_bias("layer_norm", self.final_layer_norm) + weight_bias("head", self.head)


def build_model(spec):
    return {"bert": Bert, "opt": Opt, "vit": Vit}[spec.family](spec)


def check_names_cover(model):
    """Every PyTorch parameter has exactly one qtlab name (a model definition error otherwise)."""
    covered = [id(t) for _, p in model.qtlab_names() for t in (p.tensors if isinstance(p, PerHead) else [p])]
    assert sorted(covered) == sorted(id(p) for p in model.parameters()), "a parameter has no qtlab name"


# --------------------------------------------------------------------------------------------
# Loading a qtlab model file (nn/checkpoint.h)


def read_qtlab_config(path, metadata):
    """The model.* values of the run configuration stored in a model file or training checkpoint."""
    fmt = metadata.get("format")
    if fmt not in ("qtlab.model", "qtlab.training") or "config" not in metadata:
        raise QtlabModelError("%s is not a qtlab model file (metadata format = %s, %s config; expected format "
                              "qtlab.model or qtlab.training with the run configuration, as `qtlab pretrain` "
                              "writes)" % (path, json.dumps(fmt), "a" if "config" in metadata else "no"))
    try:
        config = json.loads(metadata["config"])
    except ValueError as e:
        raise QtlabModelError("%s: the stored configuration is not valid JSON: %s" % (path, e))
    if not isinstance(config, dict):
        raise QtlabModelError("%s: the stored configuration is not a JSON object" % path)
    # Nested ({"model": {"hidden": 32}}) or dotted ({"model.hidden": 32}) keys, as qtlab accepts.
    flat = {}

    def walk(obj, prefix):
        for key, value in obj.items():
            if isinstance(value, dict):
                walk(value, prefix + key + ".")
            else:
                flat[prefix + key] = value
    walk(config, "")
    model = {}
    for key, value in flat.items():
        section = key.split(".", 1)[0]
        if section not in ("model", "train", "data") or "." not in key:
            raise QtlabModelError("%s: unknown config key %s (qtlab's keys start with model., train. or data.)"
                                  % (path, key))
        if section == "model":
            model[key[len("model."):]] = value
    return ModelSpec(model, where=path)


def load_qtlab_state(model, tensors, path):
    """Copies the file's tensors into the model after checking names and shapes (all problems
    reported at once). A training checkpoint's optimizer.* tensors are skipped."""
    named = model.qtlab_names()
    problems = []
    expected = {}
    for name, p in named:
        expected[name] = tuple(p.shape()) if isinstance(p, PerHead) else tuple(p.shape)
    stored = {k: v for k, v in tensors.items() if not k.startswith("optimizer.")}
    for name, shape in expected.items():
        if name not in stored:
            problems.append("missing tensor %s %s" % (name, list(shape)))
        elif tuple(stored[name].shape) != shape:
            problems.append("%s has shape %s, the configured model needs %s" % (name, list(stored[name].shape), list(shape)))
        elif not stored[name].is_floating_point():
            problems.append("%s has dtype %s, expected a floating type" % (name, stored[name].dtype))
    for name in stored:
        if name not in expected:
            problems.append("unexpected tensor %s %s" % (name, list(stored[name].shape)))
    if problems:
        raise QtlabModelError("%s does not match its configured model (%s): %s"
                              % (path, model.spec.describe(), "; ".join(problems)))
    with torch.no_grad():
        for name, p in named:
            value = stored[name].to(torch.float64)
            if isinstance(p, PerHead):
                p.load(value)
            else:
                p.copy_(value.reshape(p.shape))


def load_qtlab_model(path, dtype=torch.float64):
    """(model in eval mode, ModelSpec) from a qtlab model file or training checkpoint."""
    tensors, metadata = read_safetensors(path, QtlabModelError)
    spec = read_qtlab_config(path, metadata)
    model = build_model(spec)
    check_names_cover(model)
    load_qtlab_state(model, tensors, path)
    return model.to(dtype).eval(), spec


# --------------------------------------------------------------------------------------------
# --check: qtlab and PyTorch on the same batch


def make_batch(spec, batch_size, tokens, seed):
    """A deterministic batch: token ids uniform in [0, V) ([B, T], T = tokens or max_length) or
    N(0, 1) patchified images [B, N, p*p*C]."""
    generator = torch.Generator().manual_seed(seed)
    if spec.family == "vit":
        return "images", torch.randn(batch_size, spec.num_patches, spec.patch_dim, generator=generator)
    T = tokens or spec.max_length
    if not 1 <= T <= spec.max_length:
        raise QtlabModelError("--tokens %d is outside [1, model.max_length = %d]" % (T, spec.max_length))
    return "input_ids", torch.randint(0, spec.vocab_size, (batch_size, T), generator=generator)


def clip_counts(model, spec):
    """(entries clipped to exactly 0, entries clipped to exactly 1, visible entries) of the attention
    probabilities of the last forward, over every layer (causally masked entries excluded: they are
    0 with or without the clip)."""
    zeros = ones = total = 0
    for layer in model.layers:
        p = layer.attention.last_probabilities
        visible = torch.ones_like(p, dtype=torch.bool)
        if spec.family == "opt":
            T = p.shape[-1]
            visible = visible & ~torch.triu(torch.ones(T, T, dtype=torch.bool), diagonal=1)
        zeros += int(((p == 0) & visible).sum())
        ones += int(((p == 1) & visible).sum())
        total += int(visible.sum())
    return zeros, ones, total


def attention_statistics(model, spec):
    """", clipped to 0: z%, to 1: o%" (clipped softmax) and ", mean gate g" (gated) of the last forward."""
    out = ""
    if spec.clip_range() is not None:
        zeros, ones, total = clip_counts(model, spec)
        out += ", clipped to 0: %.1f%%, to 1: %.1f%%" % (100 * zeros / total, 100 * ones / total)
    gates = [float(layer.attention.last_gate.mean()) for layer in model.layers if layer.attention.last_gate is not None]
    if gates:
        out += ", mean gate %.3f" % (sum(gates) / len(gates))
    return out


def run_qtlab_logits(qtlab, checkpoint, batch_path, out_path, threads):
    if not os.path.exists(qtlab):
        raise QtlabModelError("the qtlab binary %s does not exist (build it with `make build`, or pass --qtlab)" % qtlab)
    command = [qtlab, "logits", "--checkpoint", checkpoint, "--batch", batch_path, "--out", out_path]
    if threads:
        command += ["--threads", str(threads)]
    result = subprocess.run(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, universal_newlines=True)
    if result.returncode != 0:
        raise QtlabModelError("`%s` failed (exit %d): %s" % (" ".join(command), result.returncode, result.output.strip()))
    tensors, _ = read_safetensors(out_path, QtlabModelError)
    return tensors["logits"]


def check(checkpoint, qtlab_checkpoint, args, work_dir):
    """Compares PyTorch (on `checkpoint`) with qtlab (on `qtlab_checkpoint`); True when they agree."""
    model, spec = load_qtlab_model(checkpoint, torch.float64 if args.dtype == "float64" else torch.float32)
    name, inputs = make_batch(spec, args.batch_size, args.tokens, args.seed)
    batch_path = os.path.join(work_dir, "batch.safetensors")
    out_path = os.path.join(work_dir, "logits.safetensors")
    write_safetensors(batch_path, [(name, inputs)], {"generator": "tools/torch_model.py --check"})
    reference = run_qtlab_logits(args.qtlab, qtlab_checkpoint, batch_path, out_path, args.threads)
    with torch.no_grad():
        logits = model(inputs.to(next(model.parameters()).dtype) if name == "images" else inputs)
    if tuple(reference.shape) != tuple(logits.shape):
        raise QtlabModelError("qtlab's logits have shape %s, PyTorch's %s" % (list(reference.shape), list(logits.shape)))
    difference = float((reference.double() - logits.double()).abs().max())
    scale = float(logits.abs().max())
    tolerance = args.rtol * max(1.0, scale)
    agree = difference <= tolerance  # NaN compares False: never agrees
    against = "" if qtlab_checkpoint == checkpoint else " (qtlab on %s)" % qtlab_checkpoint
    print("%s%s: %s; logits %s, max |logit| %.4g; max |dlogit| = %.3g, tolerance %.3g (rtol %g): %s%s"
          % (checkpoint, against, spec.describe(), "x".join(map(str, logits.shape)), scale, difference,
             tolerance, args.rtol, "agree" if agree else "DISAGREE", attention_statistics(model, spec)))
    return agree


def list_keys():
    for key, (default, choices) in MODEL_KEYS.items():
        print("model.%-22s default %s%s" % (key, json.dumps(default), "  (one of %s)" % ", ".join(choices) if choices else ""))


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter,
                                     epilog="Exit status: 0 agree (or loaded), 1 a check disagrees, 2 bad input.")
    parser.add_argument("--checkpoint", action="append", default=[],
                        help="RUN/model.safetensors or a training checkpoint (repeatable)")
    parser.add_argument("--check", action="store_true", help="compare the logits with qtlab's on one batch")
    parser.add_argument("--qtlab-checkpoint", action="append", default=[],
                        help="run qtlab on this file instead of --checkpoint (one per --checkpoint, in order): "
                             "to see the check fail on a changed copy")
    parser.add_argument("--qtlab", default=os.path.join(REPO, "build", "qtlab"), help="default: build/qtlab")
    parser.add_argument("--batch-size", type=int, default=2)
    parser.add_argument("--tokens", type=int, default=0, help="text models: T (default: model.max_length)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the batch")
    parser.add_argument("--dtype", choices=("float64", "float32"), default="float64", help="PyTorch's precision")
    parser.add_argument("--rtol", type=float, default=DEFAULT_RTOL,
                        help="pass when max |dlogit| <= rtol * max(1, max |logit|) (default %g)" % DEFAULT_RTOL)
    parser.add_argument("--threads", type=int, default=0, help="threads for PyTorch and qtlab (default: all)")
    parser.add_argument("--list-keys", action="store_true", help="print the model.* keys known here")
    args = parser.parse_args(argv)
    if args.list_keys:
        list_keys()
        return 0
    if not args.checkpoint:
        parser.error("--checkpoint is required (or --list-keys)")
    if args.qtlab_checkpoint and len(args.qtlab_checkpoint) != len(args.checkpoint):
        parser.error("give one --qtlab-checkpoint per --checkpoint (%d vs %d)"
                     % (len(args.qtlab_checkpoint), len(args.checkpoint)))
    if args.batch_size < 1:
        parser.error("--batch-size must be >= 1")
    if args.threads > 0:
        torch.set_num_threads(args.threads)
    try:
        if not args.check:
            for path in args.checkpoint:
                model, spec = load_qtlab_model(path)
                print("%s: %s; %d parameters" % (path, spec.describe(), sum(p.numel() for p in model.parameters())))
            return 0
        agree = True
        with tempfile.TemporaryDirectory(prefix="qtlab_torch_check.") as work_dir:
            for i, path in enumerate(args.checkpoint):
                agree &= check(path, args.qtlab_checkpoint[i] if args.qtlab_checkpoint else path, args, work_dir)
        return 0 if agree else 1
    except QtlabModelError as e:
        print("error: %s" % e, file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
