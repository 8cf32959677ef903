#!/usr/bin/python3
"""Golden fixtures for whole models (tests/test_models.cpp): BERT, OPT and ViT in plain PyTorch.

Run with the system Python that has torch 1.13 (never at test time; the files are checked in):

    /usr/bin/python3 tools/make_model_fixtures.py [output_dir]        (default: tests/data)

The three architectures are re-stated here directly in torch (no HF transformers, no timm), from
method.md §3 and the reference repo's attention (method.md §1, §2, §8):

  BERT (post-LN masked LM, HF BertForMaskedLM without token types and pooler):
      h0 = LN_emb(E_word[ids] + E_pos[0..T-1])
      per layer: h1 = LN_1(Attn(h) + h);  h' = LN_2(W_2 GELU(W_1 h1 + b_1) + b_2 + h1)
      logits = LN_head(GELU(h_L W_t^T + b_t)) E_word^T + b_dec              (tied decoder)
      loss = mean CE over the labelled (masked) positions, -100 elsewhere
  OPT (pre-LN causal LM, HF OPTForCausalLM):
      h0 = E_tok[ids] + E_pos[2..T+1]                                        (offset 2)
      per layer: h1 = h + Attn(LN_attn(h));  h' = h1 + W_2 ReLU(W_1 LN_ffn(h1) + b_1) + b_2
      logits = LN_final(h_L) E_tok^T                                         (tied, no bias)
      loss = mean CE(logits[:, :-1], ids[:, 1:])                             (HF's shift)
  ViT (pre-LN, timm VisionTransformer on already patchified images):
      x = patches W_p^T + b_p;  x = LN_patch(x) (optional);  x = [CLS; x] + E_pos
      per layer: as OPT with GELU and bidirectional attention
      logits = head(LN_final(x_L)[:, 0]);  loss = mean CE(logits, labels)

  Attention (BertSelfAttentionWithExtras / OPTAttentionWithExtras, dropout 0):
      S = Q K^T / sqrt(d_h) (+ dtype-min causal mask for OPT, where Q is scaled first)
      P = softmax(S), or clip((zeta - gamma) softmax(S) + gamma, 0, 1), with gamma = -alpha / max_length
          when alpha > 0 (the configured max_length, not the batch length)
      C_i = P_i V_i;  gated: C_i *= sigmoid(G_i(x_i)) with G_i = nn.Linear(d_h, 1) on head i's slice
      out = concat(C) W_o^T + b_o

Weights are arbitrary (PyTorch default inits, then LayerNorm gamma / beta and a few biases
perturbed so that every parameter's use shows in the gradients; the query weights are scaled up
where the clipped softmax must actually clip). The weights are stored under qtlab's parameter names
(Module::named_parameters()), with the per-head gates stacked as nn/attention_gate.h documents.

Precision: weights and inputs are float32 values; the forward and backward run in float64 on
them and the results are rounded to float32 for storage, so a float32 implementation should match
to its own rounding error.

Tensor names inside a file:
    input_ids  i64 [B, T]         text models          images  f32 [B, N, p*p*C]   ViT
    labels     i64 [B, T] (text: BERT -100 where not masked; OPT label[t] = ids[t+1], -100 at the
               end) or [B] (ViT)
    loss       f32 [1]            logits  f32 [B, T, V] (text) or [B, classes] (ViT)
    param.<name>, grad.param.<name>   every parameter and d(loss)/d(parameter)
The "__metadata__" holds the model configuration as qtlab config keys ("model.hidden" -> "12", ...)
so the test builds the model through models::set_value, plus a few statistics ("clipped_fraction").

The safetensors file is written by hand (8-byte little-endian header length, JSON header padded to
a multiple of 8, raw little-endian data; I64 tensors first so every tensor is aligned).
"""

import math
import os
import sys

import torch

from safetensors_writer import write_safetensors
import torch.nn as nn
import torch.nn.functional as F

GENERATOR = "tools/make_model_fixtures.py (torch %s)" % torch.__version__.split("+")[0]

# Tiny shapes: 2 layers, d = 12, H = 2 (d_h = 6), FFN 16, vocab 20, batch 3, T = 6 tokens with a
# configured max_length of 8 (so position rows 6, 7 exist but are unused, and alpha uses 8).
# The sizes keep all model_*.safetensors files together well under 300 KB.
LAYERS, HIDDEN, HEADS, FFN = 2, 12, 2, 16
HEAD_DIM = HIDDEN // HEADS
VOCAB, MAX_LENGTH, BATCH, TOKENS = 20, 8, 3, 6
IMAGE_SIZE, PATCH_SIZE, CHANNELS, CLASSES = 8, 4, 2, 5
NUM_PATCHES = (IMAGE_SIZE // PATCH_SIZE) ** 2
PATCH_DIM = PATCH_SIZE * PATCH_SIZE * CHANNELS
IGNORE = -100


# --------------------------------------------------------------------------------------------
# safetensors writer


# write_safetensors: tools/safetensors_writer.py (one writer for every fixture script).


# --------------------------------------------------------------------------------------------
# Attention (the reference repo's computation, dropout 0)


def logit(p, eps=1e-16):
    p = min(max(p, eps), 1 - eps)
    return -math.log(1 / p - 1)


class ReferenceAttention(nn.Module):
    """options: softmax, gamma, zeta, alpha, gate ('none' | 'linear'), gate_pi_init, causal, opt_style."""

    def __init__(self, options):
        super().__init__()
        self.o = options
        self.query = nn.Linear(HIDDEN, HIDDEN)
        self.key = nn.Linear(HIDDEN, HIDDEN)
        self.value = nn.Linear(HIDDEN, HIDDEN)
        self.output = nn.Linear(HIDDEN, HIDDEN)
        if options["gate"] == "linear":  # repo: conditional_per_token, H x nn.Linear(d_h, 1)
            self.alpha = nn.ModuleList([nn.Linear(HEAD_DIM, 1) for _ in range(HEADS)])
            for fc in self.alpha:
                nn.init.constant_(fc.bias, logit(options["gate_pi_init"]))
        else:
            assert options["gate"] == "none"
        self.last_probabilities = None  # P of the last forward (to check that clipping happens)

    def split_heads(self, x):  # [B, T, d] -> [B, H, T, d_h]
        B, T, _ = x.shape
        return x.view(B, T, HEADS, HEAD_DIM).permute(0, 2, 1, 3)

    def forward(self, x):
        B, T, _ = x.shape
        o = self.o
        q, k, v = self.split_heads(self.query(x)), self.split_heads(self.key(x)), self.split_heads(self.value(x))
        if o["opt_style"]:  # OPT scales Q before the product
            scores = torch.matmul(q * HEAD_DIM**-0.5, k.transpose(-1, -2))
        else:
            scores = torch.matmul(q, k.transpose(-1, -2)) / math.sqrt(HEAD_DIM)
        if o["causal"]:
            above = torch.triu(torch.ones(T, T, dtype=torch.bool), diagonal=1)
            scores = scores.masked_fill(above, torch.finfo(scores.dtype).min)
        p = F.softmax(scores, dim=-1)
        if o["alpha"] > 0:  # the alpha override ignores `softmax` (method.md §1.3)
            gamma, zeta = -o["alpha"] / o["max_length"], 1.0
            p = torch.clip((zeta - gamma) * p + gamma, 0, 1)
        elif o["softmax"] == "clipped":
            p = torch.clip((o["zeta"] - o["gamma"]) * p + o["gamma"], 0, 1)
        self.last_probabilities = p.detach()
        context = torch.matmul(p, v)  # [B, H, T, d_h]
        if o["gate"] == "linear":
            heads = self.split_heads(x)
            gate_logits = torch.stack([self.alpha[h](heads[:, h]) for h in range(HEADS)], dim=1)  # [B, H, T, 1]
            context = context * torch.sigmoid(gate_logits)
        context = context.permute(0, 2, 1, 3).contiguous().view(B, T, HIDDEN)
        return self.output(context)


class Block(nn.Module):
    """Post-LN (BERT) or pre-LN (OPT, ViT) transformer block; attribute names are qtlab's."""

    def __init__(self, options, eps, activation, pre_layer_norm):
        super().__init__()
        self.attention = ReferenceAttention(options)
        self.attention_layer_norm = nn.LayerNorm(HIDDEN, eps=eps)
        self.ffn_in = nn.Linear(HIDDEN, FFN)
        self.ffn_out = nn.Linear(FFN, HIDDEN)
        self.output_layer_norm = nn.LayerNorm(HIDDEN, eps=eps)
        self.activation = activation
        self.pre_layer_norm = pre_layer_norm

    def forward(self, h):
        ffn = lambda z: self.ffn_out(self.activation(self.ffn_in(z)))
        if not self.pre_layer_norm:  # BERT
            h1 = self.attention_layer_norm(self.attention(h) + h)
            return self.output_layer_norm(ffn(h1) + h1)
        h1 = h + self.attention(self.attention_layer_norm(h))  # the gate reads LN_attn(h) too
        return h1 + ffn(self.output_layer_norm(h1))


# --------------------------------------------------------------------------------------------
# The three models


class Bert(nn.Module):
    def __init__(self, options, eps):
        super().__init__()
        self.word_embeddings = nn.Embedding(VOCAB, HIDDEN)
        self.position_embeddings = nn.Embedding(MAX_LENGTH, HIDDEN)
        self.embedding_layer_norm = nn.LayerNorm(HIDDEN, eps=eps)
        self.layers = nn.ModuleList([Block(options, eps, F.gelu, False) for _ in range(LAYERS)])
        self.head_transform = nn.Linear(HIDDEN, HIDDEN)
        self.head_layer_norm = nn.LayerNorm(HIDDEN, eps=eps)
        self.head_bias = nn.Parameter(torch.zeros(VOCAB))

    def logits(self, ids):
        T = ids.shape[1]
        h = self.embedding_layer_norm(self.word_embeddings(ids) + self.position_embeddings(torch.arange(T)))
        for layer in self.layers:
            h = layer(h)
        t = self.head_layer_norm(F.gelu(self.head_transform(h)))
        return torch.matmul(t, self.word_embeddings.weight.t()) + self.head_bias

    def loss(self, ids, labels):
        logits = self.logits(ids)
        return F.cross_entropy(logits.reshape(-1, VOCAB), labels.reshape(-1), ignore_index=IGNORE), logits

    def qtlab_names(self):
        out = [
            ("embeddings.word_embeddings.weight", self.word_embeddings.weight),
            ("embeddings.position_embeddings.weight", self.position_embeddings.weight),
            ("embeddings.layer_norm.weight", self.embedding_layer_norm.weight),
            ("embeddings.layer_norm.bias", self.embedding_layer_norm.bias),
        ]
        for l, layer in enumerate(self.layers):
            out += block_names(layer, "encoder.layer.%d." % l)
        out += [
            ("head.transform.weight", self.head_transform.weight),
            ("head.transform.bias", self.head_transform.bias),
            ("head.layer_norm.weight", self.head_layer_norm.weight),
            ("head.layer_norm.bias", self.head_layer_norm.bias),
            ("head.bias", self.head_bias),
        ]
        return out


class Opt(nn.Module):
    POSITION_OFFSET = 2

    def __init__(self, options, eps):
        super().__init__()
        self.token_embeddings = nn.Embedding(VOCAB, HIDDEN)
        self.position_embeddings = nn.Embedding(MAX_LENGTH + self.POSITION_OFFSET, HIDDEN)
        self.layers = nn.ModuleList([Block(options, eps, F.relu, True) for _ in range(LAYERS)])
        self.final_layer_norm = nn.LayerNorm(HIDDEN, eps=eps)

    def logits(self, ids):
        T = ids.shape[1]
        h = self.token_embeddings(ids) + self.position_embeddings(torch.arange(T) + self.POSITION_OFFSET)
        for layer in self.layers:
            h = layer(h)
        return torch.matmul(self.final_layer_norm(h), self.token_embeddings.weight.t())

    def loss(self, ids, labels):  # HF's next-token loss; `labels` (pre-shifted) is not used
        logits = self.logits(ids)
        return F.cross_entropy(logits[:, :-1].reshape(-1, VOCAB), ids[:, 1:].reshape(-1)), logits

    def qtlab_names(self):
        out = [
            ("decoder.embed_tokens.weight", self.token_embeddings.weight),
            ("decoder.embed_positions.weight", self.position_embeddings.weight),
        ]
        for l, layer in enumerate(self.layers):
            out += block_names(layer, "decoder.layers.%d." % l)
        out += [
            ("decoder.final_layer_norm.weight", self.final_layer_norm.weight),
            ("decoder.final_layer_norm.bias", self.final_layer_norm.bias),
        ]
        return out


class Vit(nn.Module):
    def __init__(self, options, eps, patch_layer_norm):
        super().__init__()
        self.patch_embedding = nn.Linear(PATCH_DIM, HIDDEN)
        self.patch_layer_norm = nn.LayerNorm(HIDDEN, eps=eps) if patch_layer_norm else None
        self.cls_token = nn.Parameter(torch.randn(1, 1, HIDDEN))
        self.position_embeddings = nn.Parameter(torch.randn(1, NUM_PATCHES + 1, HIDDEN))
        self.layers = nn.ModuleList([Block(options, eps, F.gelu, True) for _ in range(LAYERS)])
        self.final_layer_norm = nn.LayerNorm(HIDDEN, eps=eps)
        self.head = nn.Linear(HIDDEN, CLASSES)

    def logits(self, patches):
        x = self.patch_embedding(patches)
        if self.patch_layer_norm is not None:
            x = self.patch_layer_norm(x)
        x = torch.cat([self.cls_token.expand(x.shape[0], 1, HIDDEN), x], dim=1) + self.position_embeddings
        for layer in self.layers:
            x = layer(x)
        return self.head(self.final_layer_norm(x)[:, 0])

    def loss(self, patches, labels):
        logits = self.logits(patches)
        return F.cross_entropy(logits, labels), logits

    def qtlab_names(self):
        out = [("patch_embedding.weight", self.patch_embedding.weight), ("patch_embedding.bias", self.patch_embedding.bias)]
        if self.patch_layer_norm is not None:
            out += [("patch_layer_norm.weight", self.patch_layer_norm.weight), ("patch_layer_norm.bias", self.patch_layer_norm.bias)]
        out += [("cls_token", self.cls_token), ("position_embeddings", self.position_embeddings)]
        for l, layer in enumerate(self.layers):
            out += block_names(layer, "layers.%d." % l)
        out += [
            ("layer_norm.weight", self.final_layer_norm.weight),
            ("layer_norm.bias", self.final_layer_norm.bias),
            ("head.weight", self.head.weight),
            ("head.bias", self.head.bias),
        ]
        return out


def block_names(block, prefix):
    """(qtlab name, parameter or stacked gate tensor) for one block. The per-head gate Linears are
    stacked over heads: gate.weight[i, :] = alpha.{i}.weight[0, :], gate.bias[i] = alpha.{i}.bias[0]
    (nn/attention_gate.h)."""
    a = block.attention
    out = []
    for name in ("query", "key", "value", "output"):
        out += [(prefix + "attention.%s.weight" % name, getattr(a, name).weight)]
        out += [(prefix + "attention.%s.bias" % name, getattr(a, name).bias)]
    if a.o["gate"] == "linear":
        out += [(prefix + "attention.gate.weight", [fc.weight for fc in a.alpha])]
        out += [(prefix + "attention.gate.bias", [fc.bias for fc in a.alpha])]
    for name in ("attention_layer_norm", "ffn_in", "ffn_out", "output_layer_norm"):
        out += [(prefix + name + ".weight", getattr(block, name).weight)]
        out += [(prefix + name + ".bias", getattr(block, name).bias)]
    return out


def values_and_grads(named):
    """[(name, value)], [(name, grad)] in float32-representable form; stacked gates flattened per head."""
    values, grads = [], []
    for name, p in named:
        if isinstance(p, list):  # stacked per-head gate: each [1, d_h] or [1] -> row i
            values.append((name, torch.stack([t.detach()[0] for t in p])))
            grads.append((name, torch.stack([t.grad[0] for t in p])))
        else:
            values.append((name, p.detach().clone()))
            grads.append((name, p.grad.clone()))
    return values, grads


# --------------------------------------------------------------------------------------------
# Fixtures


def perturb(model, generator, query_scale):
    """Arbitrary but float32-exact weights: LayerNorm (gamma, beta) = (1 + 0.2 n, 0.2 n), non-zero
    biases everywhere, embeddings at scale 0.5, and the query weights scaled by `query_scale`."""
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, nn.LayerNorm):
                module.weight.copy_(1 + 0.2 * torch.randn(module.weight.shape, generator=generator))
                module.bias.copy_(0.2 * torch.randn(module.bias.shape, generator=generator))
            elif isinstance(module, nn.Embedding):
                module.weight.mul_(0.5)
            elif isinstance(module, ReferenceAttention):
                module.query.weight.mul_(query_scale)
        for name, p in model.named_parameters():
            if name in ("head_bias", "cls_token", "position_embeddings"):
                p.copy_(0.5 * torch.randn(p.shape, generator=generator))


def clipped_fraction(model, options):
    """Fraction of attention probabilities the clip set to exactly 0, over every layer's last P
    (causally masked entries excluded: they are 0 with or without the clip)."""
    clipped, total = 0, 0
    for layer in model.layers:
        p = layer.attention.last_probabilities
        visible = torch.ones_like(p, dtype=torch.bool)
        if options["causal"]:
            T = p.shape[-1]
            visible = visible & ~torch.triu(torch.ones(T, T, dtype=torch.bool), diagonal=1)
        clipped += int(((p == 0) & visible).sum())
        total += int(visible.sum())
    return clipped / total


def model_fixture(seed, family, softmax="vanilla", gamma=0.0, alpha=0.0, gate="none", gate_pi_init=0.5,
                  patch_layer_norm=False, query_scale=1.0):
    torch.manual_seed(seed)
    generator = torch.Generator().manual_seed(seed + 1)
    eps = {"bert": 1e-12, "opt": 1e-5, "vit": 1e-6}[family]
    options = {
        "softmax": softmax, "gamma": gamma, "zeta": 1.0, "alpha": alpha, "max_length": MAX_LENGTH,
        "gate": gate, "gate_pi_init": gate_pi_init, "causal": family == "opt", "opt_style": family == "opt",
    }
    if family == "bert":
        model = Bert(options, eps)
    elif family == "opt":
        model = Opt(options, eps)
    else:
        options["max_length"] = NUM_PATCHES + 1
        model = Vit(options, eps, patch_layer_norm)
    perturb(model, generator, query_scale)

    tensors = []
    if family == "vit":
        inputs = torch.randn(BATCH, NUM_PATCHES, PATCH_DIM, generator=generator)
        labels = torch.randint(0, CLASSES, (BATCH,), generator=generator)
        tensors.append(("images", inputs))
    else:
        inputs = torch.randint(0, VOCAB, (BATCH, TOKENS), generator=generator)
        if family == "bert":  # about 40% of the positions labelled, the rest -100
            chosen = torch.rand(BATCH, TOKENS, generator=generator) < 0.4
            chosen[:, 0] = True  # at least one labelled position per sequence
            labels = torch.where(chosen, torch.randint(0, VOCAB, (BATCH, TOKENS), generator=generator),
                                 torch.full((BATCH, TOKENS), IGNORE))
        else:  # next-token labels as data/ builds them: label[t] = ids[t + 1], -100 at the end
            labels = torch.cat([inputs[:, 1:], torch.full((BATCH, 1), IGNORE)], dim=1)
        tensors.append(("input_ids", inputs))
    tensors.append(("labels", labels))

    model = model.double()
    loss, logits = model.loss(inputs.double() if family == "vit" else inputs, labels)
    loss.backward()
    named = model.qtlab_names()
    covered = [id(t) for _, p in named for t in (p if isinstance(p, list) else [p])]
    assert sorted(covered) == sorted(id(p) for p in model.parameters()), "a parameter has no qtlab name"
    values, grads = values_and_grads(named)
    tensors += [("loss", loss.detach().reshape(1)), ("logits", logits.detach())]
    tensors += [("param." + name, v) for name, v in values]
    tensors += [("grad.param." + name, g) for name, g in grads]

    metadata = {
        "generator": GENERATOR,
        "model.family": family,
        "model.layers": LAYERS,
        "model.hidden": HIDDEN,
        "model.heads": HEADS,
        "model.ffn": FFN,
        "model.layer_norm_eps": repr(eps),
        "model.hidden_dropout": "0",
        "model.attention_dropout": "0",
        "model.softmax": softmax,
        "model.gamma": repr(gamma),
        "model.zeta": "1",
        "model.alpha": repr(alpha),
        "model.gate": gate,
        "model.gate_pi_init": repr(gate_pi_init),
    }
    if family == "vit":
        metadata.update({
            "model.image_size": IMAGE_SIZE, "model.patch_size": PATCH_SIZE, "model.channels": CHANNELS,
            "model.num_classes": CLASSES, "model.patch_layer_norm": "true" if patch_layer_norm else "false",
        })
    else:
        metadata.update({"model.vocab_size": VOCAB, "model.max_length": MAX_LENGTH})
    fraction = clipped_fraction(model, options)
    metadata["clipped_fraction"] = "%.4f" % fraction
    if softmax == "clipped" or alpha > 0:
        assert fraction > 0.05, (family, fraction)  # the clip must actually act
    else:
        assert fraction == 0.0, (family, fraction)
    return tensors, metadata


FIXTURES = {
    "model_bert_vanilla": lambda: model_fixture(3001, "bert"),
    # gamma = -0.1: probabilities below 0.1 / 1.1 = 0.0909 become exactly 0.
    "model_bert_clipped": lambda: model_fixture(3002, "bert", softmax="clipped", gamma=-0.1, query_scale=3.0),
    "model_bert_gated": lambda: model_fixture(3003, "bert", gate="linear", gate_pi_init=0.25),
    "model_opt_vanilla": lambda: model_fixture(3004, "opt"),
    "model_opt_gated": lambda: model_fixture(3005, "opt", gate="linear", gate_pi_init=0.25),
    # alpha = 0.8 with max_length 8: gamma = -0.1 (the batch has T = 6 < max_length).
    "model_opt_alpha": lambda: model_fixture(3006, "opt", alpha=0.8, query_scale=3.0),
    "model_vit": lambda: model_fixture(3007, "vit"),
    "model_vit_patch_layer_norm": lambda: model_fixture(3008, "vit", patch_layer_norm=True),
}


def main():
    out_dir = sys.argv[1] if len(sys.argv) > 1 else "tests/data"
    os.makedirs(out_dir, exist_ok=True)
    torch.set_num_threads(1)
    total = 0
    for name, build in FIXTURES.items():
        tensors, metadata = build()
        path = os.path.join(out_dir, name + ".safetensors")
        write_safetensors(path, tensors, metadata)
        size = os.path.getsize(path)
        total += size
        print("%-40s %6d bytes  clipped_fraction %s" % (name + ".safetensors", size, metadata["clipped_fraction"]))
    print("total %d bytes" % total)


if __name__ == "__main__":
    main()
