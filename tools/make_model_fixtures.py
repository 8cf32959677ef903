#!/usr/bin/python3
"""Golden fixtures for whole models (tests/test_models.cpp): BERT, OPT and ViT in plain PyTorch.

Run with the system Python that has torch 1.13 (never at test time; the files are checked in):

    /usr/bin/python3 tools/make_model_fixtures.py [output_dir]        (default: tests/data)

The three architectures are stated directly in torch (no HF transformers, no timm), from
docs/method.md §3 and the reference repo's attention (method.md §1, §2, §8), in tools/torch_model.py (the classes that
also load qtlab checkpoints into PyTorch); this script builds them with arbitrary weights:

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

import os
import sys

import torch

from safetensors_writer import write_safetensors
from torch_model import Attention, ModelSpec, PerHead, build_model, check_names_cover, clip_counts
import torch.nn as nn
import torch.nn.functional as F

GENERATOR = "tools/make_model_fixtures.py (torch %s)" % torch.__version__.split("+")[0]

# Tiny shapes: 2 layers, d = 12, H = 2 (d_h = 6), FFN 16, vocab 20, batch 3, T = 6 tokens with a
# configured max_length of 8 (so position rows 6, 7 exist but are unused, and alpha uses 8).
# The sizes keep all model_*.safetensors files together well under 300 KB.
LAYERS, HIDDEN, HEADS, FFN = 2, 12, 2, 16
VOCAB, MAX_LENGTH, BATCH, TOKENS = 20, 8, 3, 6
IMAGE_SIZE, PATCH_SIZE, CHANNELS, CLASSES = 8, 4, 2, 5
NUM_PATCHES = (IMAGE_SIZE // PATCH_SIZE) ** 2
PATCH_DIM = PATCH_SIZE * PATCH_SIZE * CHANNELS
IGNORE = -100


# --------------------------------------------------------------------------------------------
# safetensors writer


# write_safetensors: tools/safetensors_writer.py (one writer for every fixture script).


# --------------------------------------------------------------------------------------------
# The models: tools/torch_model.py (Attention, Block, Bert, Opt, Vit and their qtlab names), built
# from a ModelSpec of the fixture's model.* values. The losses:
#   BERT: mean CE over the labelled (masked) positions, -100 elsewhere
#   OPT:  HF's next-token loss, mean CE(logits[:, :-1], ids[:, 1:]) (the pre-shifted labels unused)
#   ViT:  mean CE(logits, labels)


def loss(model, family, inputs, labels):
    logits = model.logits(inputs)
    if family == "bert":
        return F.cross_entropy(logits.reshape(-1, VOCAB), labels.reshape(-1), ignore_index=IGNORE), logits
    if family == "opt":
        return F.cross_entropy(logits[:, :-1].reshape(-1, VOCAB), inputs[:, 1:].reshape(-1)), logits
    return F.cross_entropy(logits, labels), logits


def values_and_grads(named):
    """[(name, value)], [(name, grad)] in float32-representable form; stacked gates flattened per head."""
    values, grads = [], []
    for name, p in named:
        if isinstance(p, PerHead):  # stacked per-head gate: each [1, d_h] or [1] -> row i
            values.append((name, p.stack()))
            grads.append((name, p.stack(lambda t: t.grad)))
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
            elif isinstance(module, Attention):
                module.query.weight.mul_(query_scale)
        for name, p in model.named_parameters():
            if name in ("head_bias", "cls_token", "position_embeddings"):
                p.copy_(0.5 * torch.randn(p.shape, generator=generator))


def clipped_fraction(model, spec):
    """Fraction of attention probabilities the clip set to exactly 0, over every layer's last P
    (causally masked entries excluded: they are 0 with or without the clip)."""
    zeros, _, total = clip_counts(model, spec)
    return zeros / total


def model_fixture(seed, family, softmax="vanilla", gamma=0.0, alpha=0.0, gate="none", gate_pi_init=0.5,
                  patch_layer_norm=False, query_scale=1.0):
    torch.manual_seed(seed)
    generator = torch.Generator().manual_seed(seed + 1)
    eps = {"bert": 1e-12, "opt": 1e-5, "vit": 1e-6}[family]
    spec = ModelSpec({
        "family": family, "layers": LAYERS, "hidden": HIDDEN, "heads": HEADS, "ffn": FFN, "vocab_size": VOCAB,
        "max_length": MAX_LENGTH, "layer_norm_eps": eps, "softmax": softmax, "gamma": gamma, "alpha": alpha,
        "gate": gate, "gate_pi_init": gate_pi_init, "image_size": IMAGE_SIZE, "patch_size": PATCH_SIZE,
        "channels": CHANNELS, "num_classes": CLASSES, "patch_layer_norm": patch_layer_norm,
    })
    model = build_model(spec)
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
    value, logits = loss(model, family, inputs.double() if family == "vit" else inputs, labels)
    value.backward()
    check_names_cover(model)
    values, grads = values_and_grads(model.qtlab_names())
    tensors += [("loss", value.detach().reshape(1)), ("logits", logits.detach())]
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
    fraction = clipped_fraction(model, spec)
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
