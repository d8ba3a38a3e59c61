#!/usr/bin/env python3
"""py_test_quant.py - `moec quantize` and the safetensors convention for quantized weights.

Run by ctest from the repo root:
    <python> tests/py_test_quant.py --moec <moec binary> --build-dir <build dir>

For tiny random checkpoints of tests/ref/make_tiny.py whose widths are whole 32-element blocks
(mixtral: bf16, untied lm_head; olmoe: bf16) and for --type q8 and q4 (and q8 with
--keep-router-f32):
  1. `moec quantize` writes a directory with config.json and generation_config.json copied and a
     model.safetensors that the `safetensors` package opens; every tensor follows the policy of
     docs/formats.md: experts/attention in the chosen type, embeddings and lm_head Q8_0, norms F32,
     routers in their checkpoint dtype (F32 with --keep-router-f32); a quantized tensor is U8
     [rows, row bytes] with __metadata__ "moec.quant.<name>" = "Q8_0" | "Q4_0", and its blocks
     equal, byte for byte, a numpy re-implementation of ggml's quantize_row_q8_0_ref /
     quantize_row_q4_0_ref applied to the checkpoint's weights.
  2. `moec logits` on the quantized checkpoint against the PyTorch reference (tests/ref/torch_ref)
     run on the DEQUANTIZED weights, with the activations of every quantized matmul rounded to
     8-bit blocks as moec's (and ggml's) quantized kernels do (d = max|x| / 127 in fp32, q =
     round-half-even(x / d)): max|diff| <= ROW_REL = 1e-5    # per token, relative to the logit scale
ROW_SHARE = 0.9   # of the tokens
ANY_REL = 5e-2    # every token * max|ref| (the remaining error is
     fp32 summation order and the odd activation that sits on a rounding tie).
     The error against the reference on the original weights is printed (not checked).
  3. `moec info` lists the format in its "formats:" line.
  4. Errors, one line and non-zero exit: bad --type, missing -m, an output that exists, rows not a
     multiple of 32 (qwen3_moe: expert width 40); and the reader on damaged quantized files:
     truncation, an unknown format name, a U8 tensor without its key, a key naming no tensor, a
     row that is not whole blocks, a bit flip in the header.
Ends with `N passed, M failed`; exits 1 on any failure.
"""

import argparse
import json
import os
import shutil
import struct
import subprocess
import sys

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "ref"))

import torch  # noqa: E402
from safetensors import safe_open  # noqa: E402

import make_tiny  # noqa: E402
import torch_ref  # noqa: E402

IDS = [5, 17, 99, 3, 250, 42, 7, 130, 64, 1, 200, 33, 90, 11, 27, 8]
ROW_REL = 1e-5    # per token, relative to the logit scale
ROW_SHARE = 0.9   # of the tokens
ANY_REL = 5e-2    # every token
QB = {"Q8_0": 34, "Q4_0": 18}
passed = failed = 0


def check(ok, msg):
    global passed, failed
    if ok:
        passed += 1
    else:
        failed += 1
        print("FAIL:", msg)
    return ok


def run(cmd):
    return subprocess.run(cmd, capture_output=True, text=True, errors="replace")


# ----------------------------------------------------------------- ggml's quantizers in numpy
def f32(a):
    return np.asarray(a, dtype=np.float32)


def roundf(v):  # C roundf: half away from zero (exact: |v| + 0.5 in float64)
    v = v.astype(np.float64)
    return np.sign(v) * np.floor(np.abs(v) + 0.5)


def quant_q8_0(x):
    x = f32(x).reshape(-1, 32)
    amax = np.abs(x).max(1)
    d = f32(amax / np.float32(127))
    with np.errstate(divide="ignore"):
        idv = np.where(d != 0, f32(np.float32(1) / d), np.float32(0)).astype(np.float32)
    q = roundf(f32(x * idv[:, None])).astype(np.int8)
    out = np.zeros((x.shape[0], 34), np.uint8)
    out[:, :2] = d.astype(np.float16).view(np.uint8).reshape(-1, 2)
    out[:, 2:] = q.view(np.uint8)
    return out


def quant_q4_0(x):
    x = f32(x).reshape(-1, 32)
    i = np.abs(x).argmax(1)  # first of the largest |x|, as ggml's strict '<'
    mx = x[np.arange(x.shape[0]), i]
    d = f32(mx / np.float32(-8))
    with np.errstate(divide="ignore"):
        idv = np.where(d != 0, f32(np.float32(1) / d), np.float32(0)).astype(np.float32)
    v = f32(f32(x * idv[:, None]) + np.float32(8.5))
    q = np.minimum(15, np.trunc(v).astype(np.int8)).astype(np.uint8)
    out = np.zeros((x.shape[0], 18), np.uint8)
    out[:, :2] = d.astype(np.float16).view(np.uint8).reshape(-1, 2)
    out[:, 2:] = q[:, :16] | (q[:, 16:] << 4)
    return out


def dequant(blocks, fmt, shape):
    b = blocks.reshape(-1, QB[fmt])
    d = b[:, :2].copy().view(np.float16).astype(np.float32)
    if fmt == "Q8_0":
        q = b[:, 2:].view(np.int8).astype(np.float32)
    else:
        q = np.concatenate([b[:, 2:] & 15, b[:, 2:] >> 4], 1).astype(np.float32) - 8
    return (d * q).reshape(shape)


# ----------------------------------------------------------------- safetensors reading
def read_header(path):
    with open(path, "rb") as f:
        n = struct.unpack("<Q", f.read(8))[0]
        hdr = json.loads(f.read(n))
        data = f.read()
    return hdr, data


def fake_quant_x(x):
    """Activations as moec's quantized kernels see them: Q8 blocks along the last dim, fp32."""
    shp = x.shape
    xb = x.reshape(-1, 32).to(torch.float32)
    d = xb.abs().amax(1) / 127.0
    idv = torch.where(d > 0, 1.0 / d, torch.zeros_like(d))
    q = torch.round(xb * idv[:, None]).clamp(-127, 127)  # torch.round: half to even, as nearbyintf
    return (q * d[:, None]).reshape(shp)


class QMat:
    """A dequantized weight whose products quantize the activations first (h @ W.t() included)."""

    def __init__(self, w):
        self.w, self.shape = w, w.shape

    def t(self):
        return QMatT(self.w)

    def to(self, *a, **k):
        return self


class QMatT:
    def __init__(self, w):
        self.w = w

    def __rmatmul__(self, x):
        return fake_quant_x(x).to(torch.float64).matmul(self.w.to(torch.float64).t()).to(torch.float32)


def reference_quantized(qdir, ids):
    """torch_ref on the dequantized weights, quantized matmuls emulated."""
    cfg = torch_ref.load_config(qdir)
    hdr, data = read_header(os.path.join(qdir, "model.safetensors"))
    meta = hdr.pop("__metadata__")
    W = {}
    for name, t in hdr.items():
        raw = np.frombuffer(data[t["data_offsets"][0]:t["data_offsets"][1]], np.uint8)
        fmt = meta.get("moec.quant." + name)
        if fmt:
            shape = t["shape"][:-1] + [t["shape"][-1] // QB[fmt] * 32]
            W[name] = QMat(torch.from_numpy(dequant(raw, fmt, shape)))
        else:
            dt = {"F32": np.float32, "F16": np.float16}.get(t["dtype"])
            if dt is None:  # BF16
                a = (raw.view(np.uint16).astype(np.uint32) << 16).view(np.float32)
            else:
                a = raw.view(dt).astype(np.float32)
            W[name] = torch.from_numpy(a.reshape(t["shape"]).copy())
    orig_linear = torch_ref.linear

    def linear(x, w, b=None):
        if isinstance(w, QMat):
            y = x @ w.t()
            return y + b if b is not None else y
        return orig_linear(x, w, b)

    class Emb:  # the embedding lookup dequantizes the row (no activation rounding)
        def __init__(self, q):
            self.q, self.shape = q, q.shape

        def __getitem__(self, i):
            return self.q.w[i]

        def t(self):
            return self.q.t()

    if isinstance(W.get("model.embed_tokens.weight"), QMat):
        W["model.embed_tokens.weight"] = Emb(W["model.embed_tokens.weight"])
    torch_ref.linear = linear
    try:
        ref = torch_ref.Reference(cfg, W)
        return ref.forward(ids).numpy().astype(np.float32)
    finally:
        torch_ref.linear = orig_linear


def moec_logits(moec, d, out):
    r = run([moec, "logits", "-m", d, "--ids", ",".join(map(str, IDS)), "-o", out, "-t", "2"])
    if r.returncode:
        raise RuntimeError(f"moec logits {d}: {r.stderr.strip()}")
    return np.load(out)


def rel(a, b):
    return float(np.abs(a - b).max() / np.abs(b).max())


def is_router(name):
    return name.endswith(".gate.weight") or ".gate." in name


def check_quantized(tag, src, qdir, fmt, keep_f32):
    if not check(all(os.path.exists(os.path.join(qdir, f)) for f in ("config.json", "generation_config.json")),
                 f"{tag}: config files not copied"):
        return
    with open(os.path.join(src, "config.json"), "rb") as a, open(os.path.join(qdir, "config.json"), "rb") as b:
        check(a.read() == b.read(), f"{tag}: config.json differs from the source's")
    path = os.path.join(qdir, "model.safetensors")
    with safe_open(path, "np") as f:  # the safetensors package opens it (U8 tensors)
        check(len(list(f.keys())) > 0, f"{tag}: safetensors sees no tensors")
    hdr, data = read_header(path)
    meta = hdr.pop("__metadata__")
    keys = {k for k in meta if k.startswith("moec.quant.")}
    src_w = torch_ref.load_weights(src)
    src_hdr, _ = read_header(os.path.join(src, "model.safetensors"))
    check(set(hdr) == set(src_w), f"{tag}: tensor names differ from the source's")
    n_q = 0
    for name, t in hdr.items():
        w = src_w[name].numpy()
        q = meta.get("moec.quant." + name)
        if w.ndim == 1:
            want = None
            check(t["dtype"] == "F32", f"{tag}: vector {name} is {t['dtype']}, want F32")
        elif is_router(name):
            want = None
            wd = "F32" if keep_f32 else src_hdr[name]["dtype"]
            check(t["dtype"] == wd and not q, f"{tag}: router {name} is {t['dtype']} {q}, want {wd}")
        else:
            want = "Q8_0" if name in ("model.embed_tokens.weight", "lm_head.weight") else fmt
        if want is None:
            continue
        n_q += 1
        if not check(q == want and t["dtype"] == "U8" and t["shape"] == [w.shape[0], w.shape[1] // 32 * QB[want]],
                     f"{tag}: {name}: {t['dtype']} {t['shape']} {q}, want U8 blocks of {want}"):
            continue
        mine = np.frombuffer(data[t["data_offsets"][0]:t["data_offsets"][1]], np.uint8).reshape(-1, QB[want])
        theirs = (quant_q8_0 if want == "Q8_0" else quant_q4_0)(w)
        if not check(np.array_equal(mine, theirs), f"{tag}: {name} {want} blocks differ from ggml's quantizer "
                     f"({int((mine != theirs).any(1).sum())} of {len(mine)} blocks)"):
            continue
    check(len(keys) == n_q and n_q > 0, f"{tag}: {len(keys)} moec.quant keys for {n_q} quantized tensors")


def corrupt_cases(moec, qdir, work):
    """The reader on damaged quantized files: one line, non-zero exit, never a crash."""
    path = os.path.join(qdir, "model.safetensors")
    with open(path, "rb") as f:
        raw = f.read()
    n = struct.unpack("<Q", raw[:8])[0]
    hdr = json.loads(raw[8:8 + n])
    body = raw[8 + n:]
    qname = next(k for k in hdr["__metadata__"] if k.startswith("moec.quant."))[len("moec.quant."):]

    def write(tag, h=None, b=None, whole=None):
        d = os.path.join(work, "bad", tag)
        shutil.rmtree(d, ignore_errors=True)
        shutil.copytree(qdir, d)
        if whole is None:
            hb = json.dumps(h).encode()
            hb += b" " * ((8 - len(hb) % 8) % 8)
            whole = struct.pack("<Q", len(hb)) + hb + (body if b is None else b)
        with open(os.path.join(d, "model.safetensors"), "wb") as f:
            f.write(whole)
        return d

    def expect(tag, d, needle):
        r = run([moec, "info", "-m", d])
        err = r.stderr.strip()
        check(r.returncode != 0 and needle.lower() in err.lower() and len(err.splitlines()) <= 2
              and "Sanitizer" not in err and "internal error" not in err, f"bad {tag}: rc {r.returncode}: {err[:300]}")

    def edit(fn):
        h = json.loads(json.dumps(hdr))
        fn(h)
        return h

    expect("truncated", write("truncated", whole=raw[:len(raw) - 100]), "past end")
    expect("format", write("format", edit(lambda h: h["__metadata__"].update({"moec.quant." + qname: "Q9_9"}))),
           "unknown quantized format 'Q9_9'")
    expect("f32_format", write("f32_format", edit(lambda h: h["__metadata__"].update({"moec.quant." + qname: "F32"}))),
           "unknown quantized format")
    expect("no_key", write("no_key", edit(lambda h: h["__metadata__"].pop("moec.quant." + qname))), "unsupported dtype U8")
    expect("stray_key", write("stray_key", edit(lambda h: h["__metadata__"].update({"moec.quant.nope": "Q8_0"}))),
           "moec.quant.")

    def reshape(h):  # same bytes, but a row of non-whole blocks
        t = h[qname]
        rows, rb = t["shape"]
        t["shape"] = [rows * rb // 2, 2]  # 2 bytes per row: not a whole block
    expect("blocks", write("blocks", edit(reshape)), "whole")
    # bit flips in the header: every one is an error or a valid file, never a crash
    rng = np.random.default_rng(7)
    crashes = 0
    for k in range(60):
        b = bytearray(raw)
        pos = 8 + int(rng.integers(0, n))
        b[pos] ^= 1 << int(rng.integers(0, 8))
        d = write("flip", whole=bytes(b))
        r = run([moec, "info", "-m", d])
        if r.returncode not in (0, 1) or "Sanitizer" in r.stderr or "internal error" in r.stderr:
            crashes += 1
            print(f"flip {k} at {pos}: rc {r.returncode} {r.stderr[-300:]}")
    check(crashes == 0, f"header bit flips: {crashes} crashes")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--moec", required=True)
    ap.add_argument("--build-dir", required=True)
    args = ap.parse_args()
    moec = os.path.abspath(args.moec)
    work = os.path.join(os.path.abspath(args.build_dir), "quant_test")
    shutil.rmtree(work, ignore_errors=True)
    os.makedirs(work)
    for model in ("mixtral", "olmoe"):
        src = make_tiny.write_model(model, os.path.join(work, "src"))
        ref0 = torch_ref.reference_logits(src, IDS)
        for typ, fmt, extra in (("q8", "Q8_0", []), ("q4", "Q4_0", []), ("q8", "Q8_0", ["--keep-router-f32"])):
            tag = f"{model} {typ}{' ' + extra[0] if extra else ''}"
            q = os.path.join(work, f"{model}.{typ}{'.f32r' if extra else ''}")
            r = run([moec, "quantize", "-m", src, "-o", q, "--type", typ] + extra)
            if not check(r.returncode == 0, f"{tag}: quantize failed: {r.stderr.strip()}"):
                continue
            check_quantized(tag, src, q, fmt, bool(extra))
            got = moec_logits(moec, q, os.path.join(work, "l.npy"))
            ref = reference_quantized(q, IDS)
            rows = np.abs(got - ref).max(1) / np.abs(ref).max()
            share = float((rows <= ROW_REL).mean())
            print(f"{tag}: moec logits vs reference on dequantized weights: {share:.0%} of tokens within "
                  f"{ROW_REL:g}, max rel {rows.max():.2e} (vs the original weights: {rel(got, ref0):.2e})")
            check(share >= ROW_SHARE and rows.max() <= ANY_REL,
                  f"{tag}: {share:.0%} of tokens within {ROW_REL:g} (want {ROW_SHARE:.0%}), max {rows.max():.2e}")
            info = run([moec, "info", "-m", q])
            fl = [ln for ln in info.stdout.splitlines() if ln.startswith("formats:")]
            check(info.returncode == 0 and fl and fmt in fl[0], f"{tag}: moec info formats: {fl} {info.stderr}")
            if model == "mixtral" and typ == "q4" and not extra:
                corrupt_cases(moec, q, work)
    # usage and input errors: one line, exit 2 (usage) or 1
    src = os.path.join(work, "src", "mixtral")
    bad = make_tiny.write_model("qwen3_moe", os.path.join(work, "src"))
    for tag, cmd, code, needle in (
            ("bad type", ["-m", src, "-o", os.path.join(work, "x1"), "--type", "q5"], 2, "--type expects q8 or q4"),
            ("no -m", ["-o", os.path.join(work, "x2"), "--type", "q8"], 2, "required"),
            ("exists", ["-m", src, "-o", os.path.join(work, "mixtral.q8"), "--type", "q8"], 1, "already exists"),
            ("not a dir", ["-m", os.path.join(work, "nope"), "-o", os.path.join(work, "x3"), "--type", "q8"], 1, "nope"),
            ("K % 32", ["-m", bad, "-o", os.path.join(work, "x4"), "--type", "q4"], 1, "not a multiple of 32")):
        r = run([moec, "quantize"] + cmd)
        err = r.stderr.strip()
        check(r.returncode == code and needle in err and len(err.splitlines()) <= 2,
              f"quantize {tag}: rc {r.returncode} (want {code}): {err[:300]}")
        check(not os.path.exists(os.path.join(work, "x4")) and
              not any(f.startswith("x4.tmp") for f in os.listdir(work)), f"quantize {tag}: left output behind")
    print(f"{passed} passed, {failed} failed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
