#!/usr/bin/env python3
"""make_seeds.py - regenerate the small binary seeds of corpus/npy and
corpus/checkpoint (the text seeds are plain files). Deterministic; run
from anywhere: python3 tests/fuzz/make_seeds.py"""
import os
import struct

HERE = os.path.dirname(os.path.abspath(__file__))


def npy(descr, shape, values, major=1, align=64, fortran=False):
    dims = f"{shape[0]}," if len(shape) == 1 else \
        ", ".join(str(d) for d in shape)
    d = (f"{{'descr': '{descr}', 'fortran_order': {fortran}, "
         f"'shape': ({dims}), }}").encode()
    pre = 10 if major == 1 else 12
    total = (pre + len(d) + 1 + align - 1) // align * align
    hdr = d + b" " * (total - pre - len(d) - 1) + b"\n"
    lenf = struct.pack("<H", len(hdr)) if major == 1 else \
        struct.pack("<I", len(hdr))
    fmt = "<%d%s" % (len(values), "f" if descr == "<f4" else "d")
    return b"\x93NUMPY" + bytes([major, 0]) + lenf + hdr + \
        struct.pack(fmt, *values)


def write(sub, name, data):
    path = os.path.join(HERE, "corpus", sub)
    os.makedirs(path, exist_ok=True)
    with open(os.path.join(path, name), "wb") as f:
        f.write(data)


def npy_seeds():
    write("npy", "f4_2x3.npy", npy("<f4", (2, 3), [1, 2, 3, 4, 5, 6]))
    write("npy", "f8_3.npy", npy("<f8", (3,), [0.5, -1e300, 7]))
    write("npy", "v2_f4_1x2.npy", npy("<f4", (1, 2), [1, 2], major=2))
    write("npy", "empty_0x4.npy", npy("<f4", (0, 4), []))
    write("npy", "fortran.npy", npy("<f4", (1, 1), [1], fortran=True))
    write("npy", "i8.npy", npy("<f8", (1, 1), [1]).replace(b"<f8", b"<i8"))
    write("npy", "truncated.npy", npy("<f4", (4, 4), [0] * 16)[:-9])
    write("npy", "rank3.npy", npy("<f4", (1, 2, 3), [0] * 6))


def crc32c(data, crc=0):
    crc ^= 0xffffffff
    for b in data:
        crc ^= b
        for _ in range(8):
            crc = (crc >> 1) ^ (0x82f63b78 if crc & 1 else 0)
    return crc ^ 0xffffffff


def name(s, n=32):
    return s.encode().ljust(n, b"\0")


def ckpt(tensors, hparams=(), metrics=(), chunk=1 << 20, version=3):
    """checkpoint.h encoding: tensors are (name, rows, cols, init)."""
    layout, off = [], 0
    for t_name, rows, cols, init in tensors:
        layout.append((t_name, off, rows, cols, init))
        off = (off + rows * cols + 15) // 16 * 16
    arena = struct.pack("<%df" % off, *[i * 0.25 - 1 for i in range(off)])
    hlen = 160 + 40 * (len(hparams) + len(metrics)) + 80 * len(layout) + 4
    h = bytearray(160)
    h[0:8] = b"SGBDCKPT"
    struct.pack_into("<II Q", h, 8, 1, hlen, version)
    h[24:56] = name("lightgcn")
    h[56:88] = name("sgbd")
    struct.pack_into("<QIIII QQ Q II III", h, 88, 1234, 7, 5, 9, chunk, 42,
                     1700000000000, off, (off * 4 + chunk - 1) // chunk,
                     crc32c(arena), len(hparams), len(metrics), len(layout))
    for k, v in list(hparams) + list(metrics):
        h += name(k) + struct.pack("<d", v)
    for t_name, o, rows, cols, init in layout:
        h += name(t_name) + struct.pack("<QQQI4xQQ", o, rows, cols, init,
                                        cols, rows)
    h += struct.pack("<I", crc32c(bytes(h)))
    assert len(h) == hlen
    return bytes(h) + arena


def ckpt_seeds():
    good = ckpt([("user_emb", 3, 4, 1), ("item_emb", 5, 4, 1)],
                hparams=[("embedding_size", 4), ("reg_weight", 1e-4)],
                metrics=[("recall@20", 0.0712)])
    write("checkpoint", "valid", b"\0" + good)
    write("checkpoint", "valid_fixcrc", b"\1" + good)
    write("checkpoint", "empty_arena", b"\0" + ckpt([]))
    write("checkpoint", "small_chunks",
          b"\0" + ckpt([("w", 1, 2, 3)], chunk=4096))
    bad = bytearray(good)
    bad[200] ^= 1
    write("checkpoint", "bad_header_crc", b"\0" + bytes(bad))
    write("checkpoint", "bad_tensor_fixcrc",
          b"\1" + good.replace(b"item_emb", b"user_emb"))
    write("checkpoint", "truncated", b"\0" + good[:-4])
    write("checkpoint", "newer_format",
          b"\1" + good[:8] + struct.pack("<I", 2) + good[12:])


if __name__ == "__main__":
    npy_seeds()
    ckpt_seeds()
