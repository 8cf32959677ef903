"""The safetensors writer shared by the fixture scripts (tools/make_*fixtures.py), and the matching
reader (tools/torch_model.py loads qtlab model files with it).

Written by hand (the format is an 8-byte header length, a JSON header, then the raw tensors) so the
scripts need nothing beyond Debian's python3-torch; qtlab's reader (tensor/safetensors.h) checks
every field it writes."""
import json
import os
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


DTYPES = {"F64": ("<f8", 8), "F32": ("<f4", 4), "I64": ("<i8", 8), "I32": ("<i4", 4), "I8": ("i1", 1), "U8": ("u1", 1)}


def read_safetensors(path, error=ValueError):
    """(dict name -> tensor, metadata dict) of a safetensors file, validated as qtlab's reader does
    (header length and JSON, dtype names, shapes against offsets, offsets inside the data section);
    anything wrong raises `error` with a message naming the file and the problem."""
    import numpy as np

    if not os.path.isfile(path):
        raise error("%s does not exist" % path)
    with open(path, "rb") as f:
        data = f.read()
    if len(data) < 8:
        raise error("%s is not a safetensors file (%d bytes, shorter than the 8-byte header length)" % (path, len(data)))
    (n,) = struct.unpack("<Q", data[:8])
    if n > len(data) - 8:
        raise error("%s is not a safetensors file (header length %d exceeds the file's %d bytes)" % (path, n, len(data)))
    try:
        header = json.loads(data[8:8 + n].decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as e:
        raise error("%s is not a safetensors file (its header is not JSON: %s)" % (path, e))
    if not isinstance(header, dict):
        raise error("%s is not a safetensors file (its header is not a JSON object)" % path)
    metadata = header.pop("__metadata__", {}) or {}
    body = memoryview(data)[8 + n:]
    tensors = {}
    for name, entry in header.items():
        try:
            dtype, shape, (begin, end) = entry["dtype"], entry["shape"], entry["data_offsets"]
        except (KeyError, TypeError, ValueError):
            raise error("%s: tensor %s has no dtype / shape / data_offsets" % (path, name))
        if dtype not in DTYPES:
            raise error("%s: tensor %s has dtype %s (supported: %s)" % (path, name, dtype, ", ".join(DTYPES)))
        numpy_type, size = DTYPES[dtype]
        count = 1
        for s in shape:
            count *= s
        if not 0 <= begin <= end <= len(body) or end - begin != count * size:
            raise error("%s: tensor %s %s %s has data_offsets [%d, %d] that do not fit its shape or the file"
                        % (path, name, dtype, shape, begin, end))
        array = np.frombuffer(body[begin:end], dtype=numpy_type).reshape(shape).copy()
        tensors[name] = torch.from_numpy(array)
    return tensors, metadata
