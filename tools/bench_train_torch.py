#!/usr/bin/python3
"""PyTorch baseline for `qtlab bench train`: the same post-LN BERT MLM model (method.md §3.1,
sized by the flags), the same synthetic batches and the same work per step (forward, MLM loss on the
~15% selected positions, backward, gradient clipping, AdamW), timed the same way.

Like qtlab's Bert, the MLM head runs only on the selected rows (a pure speed-up with identical loss
and gradients), so the comparison measures the framework, not an algorithmic shortcut.

Usage: tools/bench_train_torch.py [--layers 4 --hidden 256 --heads 4 --ffn 1024 --vocab 8192
                                   --seq 128 --batch 32 --steps 10 --threads 2] [--json]
Run with Debian's /usr/bin/python3 (python3-torch). Prints one JSON object with --json.
"""
import argparse
import json
import math
import os
import resource
import time

import torch
import torch.nn as nn
import torch.nn.functional as F


def blas_library():
    """The BLAS shared library this process really runs (Debian's python3-torch calls the system
    libblas.so.3, which the alternatives system points at OpenBLAS (OpenMP or pthreads build),
    BLIS or the reference BLAS): the resolved path of the mapped library, read after a matmul."""
    torch.ones(64, 64) @ torch.ones(64, 64)
    found = set()
    with open("/proc/self/maps") as maps:
        for line in maps:
            path = line.split()[-1] if len(line.split()) >= 6 else ""
            name = path.rsplit("/", 1)[-1]
            if "blas" in name or "blis" in name:
                found.add(os.path.realpath(path))
    return sorted(found)


def blas_kind(paths):
    """"openblas-openmp" (the build qtlab links, so both share one OpenMP pool), or what else."""
    text = " ".join(paths)
    if "openblas-openmp" in text:
        return "openblas-openmp"
    if "openblas-pthread" in text:
        return "openblas-pthread"
    if "openblas-serial" in text:
        return "openblas-serial"
    if "blis" in text:
        return "blis"
    if "libblas" in text:
        return "reference-blas"
    return "unknown"


class Block(nn.Module):
    def __init__(self, d, heads, ffn, eps, p):
        super().__init__()
        self.heads, self.dh, self.p = heads, d // heads, p
        self.query, self.key, self.value = nn.Linear(d, d), nn.Linear(d, d), nn.Linear(d, d)
        self.output = nn.Linear(d, d)
        self.ln1 = nn.LayerNorm(d, eps=eps)
        self.ffn_in, self.ffn_out = nn.Linear(d, ffn), nn.Linear(ffn, d)
        self.ln2 = nn.LayerNorm(d, eps=eps)

    def forward(self, h):
        B, T, d = h.shape
        split = lambda x: x.view(B, T, self.heads, self.dh).transpose(1, 2)
        q, k, v = split(self.query(h)), split(self.key(h)), split(self.value(h))
        scores = q @ k.transpose(-1, -2) / math.sqrt(self.dh)
        probs = F.dropout(torch.softmax(scores, dim=-1), self.p, self.training)
        context = (probs @ v).transpose(1, 2).reshape(B, T, d)
        h1 = self.ln1(F.dropout(self.output(context), self.p, self.training) + h)
        f = self.ffn_out(F.gelu(self.ffn_in(h1)))
        return self.ln2(F.dropout(f, self.p, self.training) + h1)


class Bert(nn.Module):
    def __init__(self, a):
        super().__init__()
        eps, self.p = 1e-12, 0.1
        self.word = nn.Embedding(a.vocab, a.hidden)
        self.position = nn.Embedding(a.seq, a.hidden)
        self.ln = nn.LayerNorm(a.hidden, eps=eps)
        self.layers = nn.ModuleList(Block(a.hidden, a.heads, a.ffn, eps, self.p) for _ in range(a.layers))
        self.transform = nn.Linear(a.hidden, a.hidden)
        self.head_ln = nn.LayerNorm(a.hidden, eps=eps)
        self.head_bias = nn.Parameter(torch.zeros(a.vocab))

    def forward(self, ids, labels):
        T = ids.shape[1]
        h = self.word(ids) + self.position(torch.arange(T))
        h = F.dropout(self.ln(h), self.p, self.training)
        for block in self.layers:
            h = block(h)
        selected = labels.view(-1) != -100
        rows = h.reshape(-1, h.shape[-1])[selected]
        t = self.head_ln(F.gelu(self.transform(rows)))
        logits = t @ self.word.weight.t() + self.head_bias
        return F.cross_entropy(logits, labels.view(-1)[selected])


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    for name, default in [("layers", 4), ("hidden", 256), ("heads", 4), ("ffn", 1024), ("vocab", 8192),
                          ("seq", 128), ("batch", 32), ("steps", 10), ("warmup", 2), ("threads", 2)]:
        parser.add_argument("--" + name, type=int, default=default)
    parser.add_argument("--json", action="store_true")
    a = parser.parse_args()
    torch.manual_seed(0)
    torch.set_num_threads(a.threads)
    model = Bert(a)
    decay = [p for n, p in model.named_parameters() if "bias" not in n and "ln" not in n]
    no_decay = [p for n, p in model.named_parameters() if "bias" in n or "ln" in n]
    optimizer = torch.optim.AdamW([{"params": decay, "weight_decay": 0.01},
                                   {"params": no_decay, "weight_decay": 0.0}], lr=1e-4)
    generator = torch.Generator().manual_seed(1)
    ids = torch.randint(5, a.vocab, (a.batch, a.seq), generator=generator)
    selected = torch.rand(a.batch, a.seq, generator=generator) < 0.15
    labels = torch.where(selected, ids, torch.full_like(ids, -100))

    def step():
        optimizer.zero_grad(set_to_none=True)
        loss = model(ids, labels)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        return loss.item()

    for _ in range(a.warmup):
        step()
    times = []
    for _ in range(a.steps):
        t0 = time.perf_counter()
        step()
        times.append(time.perf_counter() - t0)
    times.sort()
    median = times[len(times) // 2]
    params = sum(p.numel() for p in model.parameters())
    # Model FLOPs per step: 6 * (non-embedding params) * tokens for the dense layers, plus the
    # attention matmuls (2 * 2 * B * T^2 * d forward per layer, x3 with backward), plus the MLM head
    # on the selected rows (6 * V * d * selected).
    tokens = a.batch * a.seq
    dense = a.layers * (4 * a.hidden * a.hidden + 2 * a.hidden * a.ffn) + a.hidden * a.hidden
    flops = 6 * dense * tokens + a.layers * 3 * 4 * a.batch * a.seq * a.seq * a.hidden \
        + 6 * a.vocab * a.hidden * int(selected.sum())
    blas = blas_library()
    result = {"framework": "pytorch", "torch": torch.__version__, "threads": a.threads,
              "torch_threads": torch.get_num_threads(), "blas": blas_kind(blas),
              "blas_paths": blas,
              "layers": a.layers, "hidden": a.hidden, "heads": a.heads, "ffn": a.ffn, "vocab": a.vocab,
              "seq": a.seq, "batch": a.batch, "steps": a.steps, "parameters": params,
              "step_ms_median": median * 1e3, "tokens_per_s": tokens / median,
              "gflops": flops / median / 1e9,
              "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0}
    if a.json:
        print(json.dumps(result))
    else:
        print(f"pytorch {torch.__version__} ({result['torch_threads']} threads, BLAS "
              f"{result['blas']}: {', '.join(blas) or 'none mapped'})")
        print(f"pytorch {torch.__version__}: {result['tokens_per_s']:.0f} tokens/s, "
              f"{result['step_ms_median']:.1f} ms/step, {result['gflops']:.1f} GFLOP/s, "
              f"peak RSS {result['peak_rss_mb']:.0f} MB")


if __name__ == "__main__":
    main()
