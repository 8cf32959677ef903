#!/usr/bin/python3
"""Golden fixtures for qtlab's quant/ library (tests/test_uniform_quantizer.cpp,
tests/test_range_estimators.cpp).

Run with the system Python that has torch 1.13 and numpy (never at test time; the files are
checked in):

    /usr/bin/python3 tools/make_quant_fixtures.py [output_dir]        (default: tests/data)

The reference is the official repo's quantization code (Qualcomm-AI-research/outlier-free-
transformers, quantization/quantizers/uniform_quantizers.py and quantization/range_estimators.py;
method.md §4.1, §4.2), re-stated below in a few lines of torch with the repo's exact arithmetic:
float32 tensors, torch.round (half to even), a true division x / scale, the round straight-through
estimator followed by torch.clamp (its autograd gives the STE gradient), the running min-max update
(1 - momentum) * new + momentum * cur, numpy's default (linear) percentile, and the MSE grid search
(max_thr = absmax + 0.5, 100 candidates k * step, losses accumulated over calls, first argmin).

Cross-checks run here (assertions): the re-stated quantizer agrees with
torch.fake_quantize_per_tensor_affine / per_channel_affine except at exact rounding ties (torch's
kernel multiplies by 1/scale; the current inputs hit none, all outputs agree), and numpy's
percentile agrees with torch.quantile to 1e-5 (torch.quantile computes in float32).

Files and tensor names:
  quant_uniform.safetensors   per case <c>: <c>.input, <c>.range_min, <c>.range_max (F32 [C]),
                              <c>.scale (F32 [C]), <c>.zero_point (I64 [C]), <c>.output,
                              <c>.grad_output, <c>.grad_input; __metadata__ "<c>" = "bits,symmetric,axis"
                              (axis "none" = per-tensor). Also params.range_min/max [K] with
                              params.<bits>.<sym|asym>.scale / .zero_point / .int_min / .int_max:
                              per-tensor parameters of K edge-case ranges.
  quant_range.safetensors     running min-max: running.batch<i> inputs, running.min/max [batches]
                              (F32); per-channel (axis 1): running_channel.batch<i>,
                              running_channel.min/max [batches, C]; percentile p = 99.9:
                              running_percentile.batch<i>, running_percentile.min/max (F64);
                              current percentile p = 1: current_percentile.input, .min/.max (F64);
                              percentile.input with percentile.p / .numpy (F64) / .torch (F32);
                              MSE: mse_<case>.batch<i>, mse_<case>.losses (F64, [C, 101(, skews, 2)]),
                              mse_<case>.min/max (F32 [C]); metadata "mse_<case>" =
                              "bits,symmetric,axis".

The losses stored are Σ (w − Q(w))² with Q(w) computed in float32 exactly as the repo does and the
squared error summed in float64 (the repo sums in float32; the script asserts both pick the same
candidate, so the chosen ranges are the repo's).

The safetensors format is written by hand (8-byte header length, JSON header padded to 8 bytes,
8-byte dtypes first); output is byte-identical from run to run.
"""

import os
import sys

import numpy as np
import torch

from safetensors_writer import write_safetensors

GENERATOR = "tools/make_quant_fixtures.py (torch %s, numpy %s)" % (
    torch.__version__.split("+")[0], np.__version__)
EPS = 1e-8


# write_safetensors: tools/safetensors_writer.py (one writer for every fixture script).


# --------------------------------------------------------------------------------------------
# The repo's uniform quantizers, re-stated (uniform_quantizers.py, quantizer_utils.py)


class RoundStraightThrough(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x):
        return torch.round(x)

    @staticmethod
    def backward(ctx, grad):
        return grad


def repo_parameters(x_min, x_max, bits, symmetric):
    """x_min, x_max: float32 tensors [C]. Returns scale [C], zero_point [C] (float), int_min, int_max."""
    x_min = torch.min(x_min, torch.zeros_like(x_min))  # _tensorize_min_max
    x_max = torch.max(x_max, torch.ones_like(x_max) * EPS)
    if not symmetric:
        int_min, int_max = 0.0, 2.0 ** bits - 1
        delta = (x_max - x_min) / int_max
        zero_float = -x_min / delta
        zero_point = torch.clamp(torch.round(zero_float), int_min, int_max)
        return torch.clamp(delta, min=EPS), zero_point, int_min, int_max
    signed = bool(x_min.min() < 0)
    int_min = -(2.0 ** (bits - 1)) if signed else 0.0
    int_max = 2.0 ** (bits - int(signed)) - 1
    delta = torch.max(x_min.abs(), x_max) / int_max
    return torch.clamp(delta, min=EPS), torch.zeros_like(delta), int_min, int_max


def channel_view(values, x, axis):
    if axis is None:
        return values.reshape([])
    shape = [1] * x.dim()
    shape[axis] = -1
    return values.view(shape)


def repo_fake_quantize(x, scale, zero_point, int_min, int_max, axis):
    s = channel_view(scale, x, axis)
    z = channel_view(zero_point, x, axis)
    x_int = RoundStraightThrough.apply(x / s) + z
    x_int = torch.clamp(x_int, int_min, int_max)
    return s * (x_int - z)


def uniform_case(name, generator, shape, bits, symmetric, axis, range_min, range_max, spread):
    x = (torch.randn(*shape, generator=generator) * spread).to(torch.float32)
    # a few values exactly at rounding ties and grid ends
    range_min = torch.tensor(range_min, dtype=torch.float32)
    range_max = torch.tensor(range_max, dtype=torch.float32)
    scale, zero_point, int_min, int_max = repo_parameters(range_min, range_max, bits, symmetric)
    x_leaf = x.clone().requires_grad_()
    out = repo_fake_quantize(x_leaf, scale, zero_point, int_min, int_max, axis)
    grad_output = torch.randn(*shape, generator=generator).to(torch.float32)
    (out * grad_output).sum().backward()

    # Cross-check against torch's own fake-quantize kernels (they multiply by 1/scale, so they
    # may differ from the true division at an exact tie: allow a few one-step differences).
    if axis is None:
        reference = torch.fake_quantize_per_tensor_affine(
            x, float(scale[0]), int(zero_point[0]), int(int_min), int(int_max))
    else:
        reference = torch.fake_quantize_per_channel_affine(
            x, scale, zero_point.to(torch.int32), axis, int(int_min), int(int_max))
    differ = (reference != out.detach())
    assert int(differ.sum()) <= 2, (name, int(differ.sum()))

    tensors = [
        (name + ".input", x), (name + ".range_min", range_min), (name + ".range_max", range_max),
        (name + ".scale", scale), (name + ".zero_point", zero_point.to(torch.int64)),
        (name + ".output", out.detach()), (name + ".grad_output", grad_output),
        (name + ".grad_input", x_leaf.grad),
    ]
    meta = {name: "%d,%d,%s" % (bits, int(symmetric), "none" if axis is None else axis)}
    return tensors, meta


def parameter_edge_cases():
    """Per-tensor parameters for ranges that exercise every clamp: positive-only, negative-only,
    tiny (below eps), zero-point ties, wide."""
    lows = [-1.0, 0.5, -3.0, -1e-9, 0.0, -0.3, -2.5, -1e-3, -7.25, -0.1, -100.0, -1.0, 0.0]
    highs = [2.75, 2.0, -1.0, 1e-9, 0.0, 0.7, 2.5, 5e-4, 1.0, 0.1, 1e-3, 1.0, 1e-12]
    range_min = torch.tensor(lows, dtype=torch.float32)
    range_max = torch.tensor(highs, dtype=torch.float32)
    tensors = [("params.range_min", range_min), ("params.range_max", range_max)]
    for bits in (2, 4, 8, 16):
        for symmetric in (False, True):
            scales, zeros, mins, maxs = [], [], [], []
            for k in range(len(lows)):
                s, z, lo, hi = repo_parameters(range_min[k:k + 1], range_max[k:k + 1], bits, symmetric)
                scales.append(s[0])
                zeros.append(z[0])
                mins.append(lo)
                maxs.append(hi)
            key = "params.%d.%s" % (bits, "sym" if symmetric else "asym")
            tensors += [(key + ".scale", torch.stack(scales)),
                        (key + ".zero_point", torch.stack(zeros).to(torch.int64)),
                        (key + ".int_min", torch.tensor(mins, dtype=torch.int64)),
                        (key + ".int_max", torch.tensor(maxs, dtype=torch.int64))]
    return tensors


def make_uniform(output_dir):
    g = torch.Generator().manual_seed(5)
    tensors, meta = [], {"generator": GENERATOR}
    cases = [
        # name, shape, bits, symmetric, axis, range_min, range_max, spread
        ("asym8", (6, 10), 8, False, None, [-1.3], [2.1], 1.5),
        ("sym8", (6, 10), 8, True, None, [-1.7], [0.9], 1.5),
        ("sym8_unsigned", (6, 10), 8, True, None, [0.4], [2.2], 1.5),
        ("asym4", (5, 12), 4, False, None, [-0.8], [1.6], 1.0),
        ("sym3", (5, 12), 3, True, None, [-1.1], [1.4], 1.0),
        ("asym16", (4, 8), 16, False, None, [-2.0], [3.0], 2.0),
        ("asym4_channel0", (4, 3, 5), 4, False, 0, [-1.0, -0.2, 0.3, -2.0], [1.0, 2.0, 1.5, -0.5], 1.2),
        ("sym6_channel1", (3, 4, 5), 6, True, 1, [-1.0, -0.2, -0.5, -2.0], [1.0, 2.0, 0.1, 0.5], 1.2),
        ("asym8_channel_last", (2, 3, 4), 8, False, 2, [-0.5, -1.0, 0.0, -3.0], [0.5, 0.2, 1.0, 3.0], 1.0),
    ]
    for case in cases:
        t, m = uniform_case(case[0], g, *case[1:])
        tensors += t
        meta.update(m)
    tensors += parameter_edge_cases()
    write_safetensors(os.path.join(output_dir, "quant_uniform.safetensors"), tensors, meta, keep_float64=True)


# --------------------------------------------------------------------------------------------
# The repo's range estimators, re-stated (range_estimators.py)


def running_min_max(batches, momentum=0.9, per_channel_axis=None, percentile=None):
    """Returns the (min, max) after every batch."""
    cur_min = cur_max = None
    history = []
    for x in batches:
        if per_channel_axis is not None:
            rows = x.transpose(0, per_channel_axis).reshape(x.shape[per_channel_axis], -1)
            x_min, x_max = rows.min(-1)[0], rows.max(-1)[0]
        elif percentile:
            x_min, x_max = np.percentile(x.numpy(), (100 - percentile, percentile))
            x_min, x_max = torch.tensor(x_min), torch.tensor(x_max)  # float64, as in the repo
        else:
            x_min, x_max = torch.min(x), torch.max(x)
        if cur_min is None:
            cur_min, cur_max = x_min, x_max
        else:
            cur_min = (1 - momentum) * x_min + momentum * cur_min
            cur_max = (1 - momentum) * x_max + momentum * cur_max
        history.append((cur_min.clone(), cur_max.clone()))
    return history


class MseGrid:
    """MSE_Estimator with OptMethod.grid for a quantizer (bits, symmetric); per_channel along dim 0
    of `data` (callers move the channel axis first)."""

    def __init__(self, bits, symmetric, per_channel, num_candidates=100, range_margin=0.5):
        self.bits, self.symmetric, self.per_channel = bits, symmetric, per_channel
        self.num_candidates, self.range_margin = num_candidates, range_margin
        self.max_int_skew = (2 ** bits) // 4
        self.loss32 = None  # the repo's float32 sums (decides the range)
        self.loss64 = None  # float64 sums of the same float32 errors (stored for the C++ test)

    def loss(self, data, neg_thr, pos_thr):
        scale, zero, int_min, int_max = repo_parameters(
            torch.tensor([neg_thr]).float(), torch.tensor([pos_thr]).float(), self.bits, self.symmetric)
        y = repo_fake_quantize(data, scale, zero, int_min, int_max, None)
        rows32 = torch.sum(((data - y) ** 2).view(len(data), -1), dim=1).numpy().astype(np.float64)
        rows64 = torch.sum(((data.double() - y.double()) ** 2).view(len(data), -1), dim=1).numpy()
        if not self.per_channel:
            return rows32.sum(dtype=np.float32).astype(np.float64), rows64.sum()
        return rows32, rows64

    def update(self, data):
        if self.loss32 is None:
            self.one_sided = bool((data.min() >= 0).item())
            self.channels = len(data) if self.per_channel else 1
            self.two_d = not (self.one_sided or self.symmetric)
            if not self.two_d:
                shape = (self.channels, self.num_candidates + 1)
                self.max_pos = max(abs(float(data.min())), float(data.max())) + self.range_margin
                self.max_neg = -self.max_pos
                search = self.max_pos
            else:
                shape = (self.channels, self.num_candidates + 1, self.max_int_skew, 2)
                self.max_pos = float(data.max()) + self.range_margin
                self.max_neg = float(data.min()) - self.range_margin
                search = max(abs(self.max_pos), abs(self.max_neg))
            self.step = search / self.num_candidates
            self.loss32, self.loss64 = np.zeros(shape), np.zeros(shape)
            self.loss32[:, 0] = np.inf
            self.loss64[:, 0] = np.inf
        for k in range(1, self.num_candidates + 1):
            if not self.two_d:
                neg = 0 if self.one_sided else -self.step * k
                l32, l64 = self.loss(data, neg, self.step * k)
                self.loss32[:, k] += l32
                self.loss64[:, k] += l64
                continue
            start, finish = -self.step * k, self.step * k
            delta = float(finish - start) / (2 ** self.bits - 1)
            for shift in range(self.max_int_skew):
                for reverse in range(2):
                    skew = ((-1) ** reverse) * shift * delta
                    neg = max(start + skew, self.max_neg)
                    pos = min(finish + skew, self.max_pos)
                    l32, l64 = self.loss(data, neg, pos)
                    self.loss32[:, k, shift, reverse] += l32
                    self.loss64[:, k, shift, reverse] += l64
        mins, maxs = [], []
        for c in range(self.channels):
            best32 = np.argmin(self.loss32[c])
            best64 = np.argmin(self.loss64[c])
            assert best32 == best64, "float32 and float64 losses choose different candidates"
            index = np.unravel_index(best32, self.loss32[c].shape)
            k = index[0]
            if not self.two_d:
                mins.append(0.0 if self.one_sided else -self.step * k)
                maxs.append(self.step * k)
            else:
                start, finish = -self.step * k, self.step * k
                delta = float(finish - start) / (2 ** self.bits - 1)
                skew = ((-1) ** index[2]) * index[1] * delta
                mins.append(max(start + skew, self.max_neg))
                maxs.append(min(finish + skew, self.max_pos))
        return torch.tensor(mins, dtype=torch.float32), torch.tensor(maxs, dtype=torch.float32)


def make_range(output_dir):
    g = torch.Generator().manual_seed(7)
    tensors, meta = [], {"generator": GENERATOR}

    # running min-max, per-tensor, float32 arithmetic
    batches = [(torch.randn(3, 40, generator=g) * (1.0 + 0.5 * i) + 0.1 * i).float() for i in range(4)]
    history = running_min_max(batches)
    tensors += [("running.batch%d" % i, b) for i, b in enumerate(batches)]
    tensors += [("running.min", torch.stack([h[0] for h in history])),
                ("running.max", torch.stack([h[1] for h in history]))]

    # per-channel along axis 1
    batches = [(torch.randn(2, 5, 6, generator=g) * (1.0 + 0.3 * i)).float() for i in range(3)]
    history = running_min_max(batches, per_channel_axis=1)
    tensors += [("running_channel.batch%d" % i, b) for i, b in enumerate(batches)]
    tensors += [("running_channel.min", torch.stack([h[0] for h in history])),
                ("running_channel.max", torch.stack([h[1] for h in history]))]

    # percentile 99.9 (float64 running state)
    batches = [(torch.randn(4, 250, generator=g) * (1.0 + 0.2 * i)).float() for i in range(3)]
    history = running_min_max(batches, percentile=99.9)
    tensors += [("running_percentile.batch%d" % i, b) for i, b in enumerate(batches)]
    tensors += [("running_percentile.min", torch.stack([h[0] for h in history]).double()),
                ("running_percentile.max", torch.stack([h[1] for h in history]).double())]

    # current min-max with the repo's np.percentile(x, (p, 100 - p)), p = 1
    x = torch.randn(7, 53, generator=g).float()
    low, high = np.percentile(x.numpy(), (1.0, 99.0))
    tensors += [("current_percentile.input", x),
                ("current_percentile.min", torch.tensor([low], dtype=torch.float64)),
                ("current_percentile.max", torch.tensor([high], dtype=torch.float64))]

    # plain percentiles, with torch.quantile as a second opinion
    x = (torch.randn(997, generator=g) ** 3).float()
    ps = [0.0, 0.001, 0.01, 1.0, 12.5, 50.0, 73.3, 99.0, 99.99, 99.999, 100.0]
    numpy_values = [float(np.percentile(x.numpy(), p)) for p in ps]
    torch_values = [float(torch.quantile(x, p / 100.0)) for p in ps]
    for n_value, t_value in zip(numpy_values, torch_values):
        # torch.quantile works in float32 throughout (also the index (n - 1) q), hence the tolerance
        assert abs(n_value - t_value) <= 1e-5 * max(1.0, abs(n_value)), (n_value, t_value)
    tensors += [("percentile.input", x), ("percentile.p", torch.tensor(ps, dtype=torch.float64)),
                ("percentile.numpy", torch.tensor(numpy_values, dtype=torch.float64)),
                ("percentile.torch", torch.tensor(torch_values, dtype=torch.float32))]

    # MSE grid searches
    def weight(*shape, scale=0.05):
        w = (torch.randn(*shape, generator=g) * scale).float()
        w.view(-1)[3] = 6.0 * scale  # an outlier makes clipping worthwhile
        return w

    mse_cases = [
        # name, bits, symmetric, axis, batches
        ("sym8", 8, True, None, [weight(8, 32)]),
        ("sym4_two_batches", 4, True, None, [weight(6, 20), weight(6, 20, scale=0.08)]),
        ("sym4_channel0", 4, True, 0, [weight(5, 24)]),
        ("sym3_one_sided", 3, True, None, [weight(4, 30).abs()]),
        ("asym3_2d", 3, False, None, [weight(4, 16) + 0.02]),
        ("asym2_2d_channel1", 2, False, 1, [weight(6, 3, 4)]),
    ]
    for name, bits, symmetric, axis, batches in mse_cases:
        search = MseGrid(bits, symmetric, per_channel=axis is not None)
        for i, b in enumerate(batches):
            data = b if axis is None else b.transpose(0, axis).reshape(b.shape[axis], -1)
            low, high = search.update(data)
            tensors.append(("mse_%s.batch%d" % (name, i), b))
        tensors += [("mse_%s.losses" % name, torch.tensor(search.loss64, dtype=torch.float64)),
                    ("mse_%s.min" % name, low), ("mse_%s.max" % name, high)]
        meta["mse_" + name] = "%d,%d,%s" % (bits, int(symmetric), "none" if axis is None else axis)
    write_safetensors(os.path.join(output_dir, "quant_range.safetensors"), tensors, meta, keep_float64=True)


def main():
    output_dir = sys.argv[1] if len(sys.argv) > 1 else "tests/data"
    os.makedirs(output_dir, exist_ok=True)
    torch.set_num_threads(1)
    make_uniform(output_dir)
    make_range(output_dir)


if __name__ == "__main__":
    main()
