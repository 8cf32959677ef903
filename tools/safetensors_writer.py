"""The safetensors writer shared by the fixture scripts (tools/make_*fixtures.py).

Written by hand (the format is an 8-byte header length, a JSON header, then the raw tensors) so the
scripts need nothing beyond Debian's python3-torch; qtlab's reader (tensor/safetensors.h) checks
every field it writes."""
import json
import struct

import torch


def write_safetensors(path, tensors, metadata, keep_float64=False):
    """tensors: list of (name, tensor). Floating tensors become F32 (float64 ones rounded to float32,
    as the layer fixtures want) or, with keep_float64, float64 stays F64; integers become I64."""
    entries = []
    for name, tensor in tensors:
        tensor = tensor.detach().cpu().contiguous()
        if tensor.dtype == torch.float64 and keep_float64:
            entries.append((name, "F64", list(tensor.shape), tensor.numpy().astype("<f8").tobytes()))
        elif tensor.is_floating_point():
            entries.append((name, "F32", list(tensor.shape),
                            tensor.to(torch.float32).numpy().astype("<f4").tobytes()))
        else:
            entries.append((name, "I64", list(tensor.shape),
                            tensor.to(torch.int64).numpy().astype("<i8").tobytes()))
    entries.sort(key=lambda e: 0 if e[1] in ("I64", "F64") else 1)  # 8-byte types first, stable
    header = {"__metadata__": {k: str(v) for k, v in metadata.items()}}
    offset = 0
    for name, dtype, shape, data in entries:
        assert name not in header, name
        header[name] = {"dtype": dtype, "shape": shape, "data_offsets": [offset, offset + len(data)]}
        offset += len(data)
    header_bytes = json.dumps(header, separators=(",", ":")).encode("utf-8")
    header_bytes += b" " * ((8 - len(header_bytes) % 8) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(header_bytes)))
        f.write(header_bytes)
        for _, _, _, data in entries:
            f.write(data)
