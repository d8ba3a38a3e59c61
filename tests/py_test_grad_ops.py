#!/usr/bin/env python3
"""py_test_grad_ops.py - the dense training kernels (src/nn/ops_train.h, src/nn/linear.h)
against PyTorch autograd in float32.

For every case (fixed seeds; odd sizes, GQA H=4/Hkv=2, MQA, B=2 packed sequences whose
positions restart at 0, an ignored target, head_dim > 64, strided linear layers) this script
computes the outputs with PyTorch, back-propagates a random upstream gradient g through
L = sum(y * g) (for the losses: L = dscale * loss), and writes inputs, outputs and gradients to
<build-dir>/grad_ops/ref.bin (format: tests/tool_grad_ops.c, version 1). It then runs
<build-dir>/tool_grad_ops, which recomputes everything with the C kernels and prints, per
tensor, the max relative error max|c - torch| / max(max|torch|, 1e-30).

Tolerance: relative error <= 1e-4 for every tensor (fp32 kernels against fp32 autograd; the
two differ only in summation order, so observed errors are ~1e-6). Every reference tensor
must be reported. Negative controls: a reference file with one gradient element perturbed by
1e-3 of its tensor's max must be reported above the tolerance, and files with a bad magic,
an unknown version or a truncated body must be refused (exit 2, no crash).

Run by ctest from the repo root:
    <python> tests/py_test_grad_ops.py --moec <moec binary> --build-dir <build dir>
Ends with `N passed, M failed`; exits 1 on any failure."""
import argparse
import math
import os
import struct
import subprocess
import sys

import numpy as np
import torch
import torch.nn.functional as F

TOL = 1e-4          # max relative error per tensor (see docstring)
MAGIC = b"MOECGRAD"
VERSION = 1
RUN_TIMEOUT = 60
CRASH_MARKERS = ("AddressSanitizer", "LeakSanitizer", "runtime error", "Segmentation", "core dumped")

passed = failed = 0


def check(ok, label, detail=""):
    global passed, failed
    if ok:
        passed += 1
        print(f"PASS {label} {detail}")
    else:
        failed += 1
        print(f"FAIL {label} {detail}")


# ----------------------------------------------------------------------------- file writer
class RefFile:
    """Named float32/int32 arrays, written in insertion order."""

    def __init__(self):
        self.arrays = []  # (name, np.ndarray)

    def add(self, name, a):
        if isinstance(a, torch.Tensor):
            a = a.detach().cpu().numpy()
        a = np.asarray(a)
        if a.dtype.kind == "f":
            a = a.astype("<f4")
        elif a.dtype.kind in "iu":
            a = a.astype("<i4")
        else:
            raise TypeError(f"{name}: unsupported dtype {a.dtype}")
        self.arrays.append((name, np.ascontiguousarray(a)))

    def refs(self):
        return [n for n, _ in self.arrays if "/ref." in n]

    def to_bytes(self, override=None):
        out = [MAGIC, struct.pack("<II", VERSION, len(self.arrays))]
        for name, a in self.arrays:
            if override and name in override:
                a = override[name]
            nb = name.encode()
            out.append(struct.pack("<I", len(nb)) + nb)
            out.append(struct.pack("<II", 0 if a.dtype.kind == "f" else 1, a.ndim))
            out.append(struct.pack(f"<{a.ndim}q", *a.shape))
            out.append(a.tobytes())
        return b"".join(out)


def rnd(gen, *shape, scale=1.0):
    return (torch.randn(*shape, generator=gen, dtype=torch.float32) * scale).requires_grad_(True)


def backprop(y, gen):
    """Random upstream gradient g; L = sum(y * g)."""
    g = torch.randn(*y.shape, generator=gen, dtype=torch.float32)
    (y * g).sum().backward()
    return g


# ----------------------------------------------------------------------------- torch references
def rmsnorm_ref(x, w, eps):
    return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + eps) * w


def rope_tables(n_ctx, hd, theta):
    """Same math as moec_rope_tables: double precision, rounded to float32."""
    inv = 1.0 / np.power(float(theta), np.arange(0, hd, 2, dtype=np.float64) / hd)
    ang = np.arange(n_ctx, dtype=np.float64)[:, None] * inv[None, :]
    return (torch.from_numpy(np.cos(ang).astype(np.float32)), torch.from_numpy(np.sin(ang).astype(np.float32)))


def rope_ref(x, cos, sin, pos):
    """x [T, nh, hd], HF rotate-half; pos [T] long."""
    c = torch.cat([cos[pos], cos[pos]], -1)[:, None, :]
    s = torch.cat([sin[pos], sin[pos]], -1)[:, None, :]
    half = x.shape[-1] // 2
    rot = torch.cat([-x[..., half:], x[..., :half]], -1)
    return x * c + rot * s


def attention_ref(q, k, v, B, S, H, Hkv, hd):
    """q [B*S, H*hd], k/v [B*S, Hkv*hd] -> out [B*S, H*hd], probs [B, H, S, S]."""
    qh = q.view(B, S, H, hd).transpose(1, 2)
    kh = k.view(B, S, Hkv, hd).transpose(1, 2).repeat_interleave(H // Hkv, dim=1)
    vh = v.view(B, S, Hkv, hd).transpose(1, 2).repeat_interleave(H // Hkv, dim=1)
    sc = (qh @ kh.transpose(-1, -2)) * (1.0 / math.sqrt(hd))
    mask = torch.triu(torch.ones(S, S, dtype=torch.bool), diagonal=1)
    p = torch.softmax(sc.masked_fill(mask, float("-inf")), dim=-1)
    out = (p @ vh).transpose(1, 2).reshape(B * S, H * hd)
    return out, p


# ----------------------------------------------------------------------------- cases
def case_rmsnorm(f, tag, seed, rows, n, eps, scale=1.0):
    gen = torch.Generator().manual_seed(seed)
    c = f"rmsnorm.{tag}"
    x, w = rnd(gen, rows, n, scale=scale), rnd(gen, n)
    rstd = torch.rsqrt(x.detach().pow(2).mean(-1) + eps)
    y = rmsnorm_ref(x, w, eps)
    g = backprop(y, gen)
    f.add(f"{c}/dims", [rows, n]); f.add(f"{c}/eps", [eps])
    f.add(f"{c}/x", x); f.add(f"{c}/w", w); f.add(f"{c}/dy", g)
    f.add(f"{c}/ref.y", y); f.add(f"{c}/ref.rstd", rstd); f.add(f"{c}/ref.dx", x.grad); f.add(f"{c}/ref.dw", w.grad)


def case_rope(f, tag, seed, pos, nh, hd, n_ctx, theta):
    gen = torch.Generator().manual_seed(seed)
    c = f"rope.{tag}"
    T = len(pos)
    cos, sin = rope_tables(n_ctx, hd, theta)
    x = rnd(gen, T, nh * hd)
    y = rope_ref(x.view(T, nh, hd), cos, sin, torch.tensor(pos, dtype=torch.long)).reshape(T, nh * hd)
    g = backprop(y, gen)
    f.add(f"{c}/dims", [T, nh, hd, n_ctx]); f.add(f"{c}/theta", [theta]); f.add(f"{c}/pos", pos)
    f.add(f"{c}/x", x); f.add(f"{c}/dy", g)
    f.add(f"{c}/ref.cos", cos); f.add(f"{c}/ref.sin", sin); f.add(f"{c}/ref.y", y); f.add(f"{c}/ref.dx", x.grad)


def case_attn(f, tag, seed, B, S, H, Hkv, hd, scale=1.0):
    gen = torch.Generator().manual_seed(seed)
    c = f"attn.{tag}"
    q, k, v = rnd(gen, B * S, H * hd, scale=scale), rnd(gen, B * S, Hkv * hd, scale=scale), rnd(gen, B * S, Hkv * hd)
    out, p = attention_ref(q, k, v, B, S, H, Hkv, hd)
    g = backprop(out, gen)
    f.add(f"{c}/dims", [B, S, H, Hkv, hd])
    f.add(f"{c}/q", q); f.add(f"{c}/k", k); f.add(f"{c}/v", v); f.add(f"{c}/dout", g)
    f.add(f"{c}/ref.out", out); f.add(f"{c}/ref.probs", p)
    f.add(f"{c}/ref.dq", q.grad); f.add(f"{c}/ref.dk", k.grad); f.add(f"{c}/ref.dv", v.grad)


def case_swiglu(f, tag, seed, n, scale):
    gen = torch.Generator().manual_seed(seed)
    c = f"swiglu.{tag}"
    gate, up = rnd(gen, n, scale=scale), rnd(gen, n)
    h = F.silu(gate) * up
    g = backprop(h, gen)
    f.add(f"{c}/dims", [n]); f.add(f"{c}/gate", gate); f.add(f"{c}/up", up); f.add(f"{c}/dh", g)
    f.add(f"{c}/ref.h", h); f.add(f"{c}/ref.dgate", gate.grad); f.add(f"{c}/ref.dup", up.grad)


def case_embed(f, tag, seed, V, d, ids):
    gen = torch.Generator().manual_seed(seed)
    c = f"embed.{tag}"
    W = rnd(gen, V, d)
    x = F.embedding(torch.tensor(ids, dtype=torch.long), W)
    g = backprop(x, gen)
    f.add(f"{c}/dims", [V, d, len(ids)]); f.add(f"{c}/W", W); f.add(f"{c}/ids", ids); f.add(f"{c}/dy", g)
    f.add(f"{c}/ref.x", x); f.add(f"{c}/ref.dW", W.grad)


def case_ce(f, tag, seed, T, V, targets, dscale, scale=1.0, offset=0.0):
    gen = torch.Generator().manual_seed(seed)
    c = f"ce.{tag}"
    z = (torch.randn(T, V, generator=gen) * scale + offset).requires_grad_(True)
    loss = F.cross_entropy(z, torch.tensor(targets, dtype=torch.long), ignore_index=-1)
    (dscale * loss).backward()
    lse = torch.logsumexp(z.detach(), dim=-1)
    f.add(f"{c}/dims", [T, V]); f.add(f"{c}/logits", z); f.add(f"{c}/targets", targets); f.add(f"{c}/dscale", [dscale])
    f.add(f"{c}/ref.loss", [loss.item()]); f.add(f"{c}/ref.loss_nograd", [loss.item()])
    f.add(f"{c}/ref.dlogits", z.grad); f.add(f"{c}/ref.lse", lse)


def case_linear(f, tag, seed, T, K, N, ldx, ldy, lddy, bias):
    """x and dy live in wider row buffers (strides ldx, lddy); their extra columns hold random
    values the kernel must not read. y's extra columns must stay 0; dx's too."""
    gen = torch.Generator().manual_seed(seed)
    c = f"linear.{tag}"
    x_full = rnd(gen, T, ldx)
    W, b = rnd(gen, N, K), rnd(gen, N) if bias else None
    y = F.linear(x_full[:, :K], W, b)
    dy_full = torch.randn(T, lddy, generator=gen)
    (y * dy_full[:, :N]).sum().backward()
    y_full = torch.zeros(T, ldy)
    y_full[:, :N] = y.detach()
    f.add(f"{c}/dims", [T, K, N, ldx, ldy, lddy, int(bias)])
    f.add(f"{c}/x", x_full); f.add(f"{c}/W", W); f.add(f"{c}/dy", dy_full)
    if bias:
        f.add(f"{c}/b", b)
    f.add(f"{c}/ref.y", y_full); f.add(f"{c}/ref.dx", x_full.grad); f.add(f"{c}/ref.dW", W.grad)
    if bias:
        f.add(f"{c}/ref.db", b.grad)


def case_block(f, tag, seed, B, S, d, H, Hkv, hd, eps, theta):
    gen = torch.Generator().manual_seed(seed)
    c = f"block.{tag}"
    T, nq, nk, n_ctx = B * S, H * hd, Hkv * hd, S + 3
    pos = [s for _ in range(B) for s in range(S)]
    cos, sin = rope_tables(n_ctx, hd, theta)
    post = torch.tensor(pos, dtype=torch.long)
    x = rnd(gen, T, d)
    ln_w, qn_w, kn_w = ((1.0 + 0.1 * torch.randn(m, generator=gen)).requires_grad_(True) for m in (d, hd, hd))
    p = {}
    for name, shape, sc in (("Wq", (nq, d), d ** -0.5), ("bq", (nq,), 0.1), ("Wk", (nk, d), d ** -0.5),
                            ("bk", (nk,), 0.1), ("Wv", (nk, d), d ** -0.5), ("bv", (nk,), 0.1),
                            ("Wo", (d, nq), nq ** -0.5)):
        p[name] = rnd(gen, *shape, scale=sc)
    n = rmsnorm_ref(x, ln_w, eps)
    q = rmsnorm_ref(F.linear(n, p["Wq"], p["bq"]).view(T, H, hd), qn_w, eps)
    k = rmsnorm_ref(F.linear(n, p["Wk"], p["bk"]).view(T, Hkv, hd), kn_w, eps)
    v = F.linear(n, p["Wv"], p["bv"])
    q = rope_ref(q, cos, sin, post).reshape(T, nq)
    k = rope_ref(k, cos, sin, post).reshape(T, nk)
    att, _ = attention_ref(q, k, v, B, S, H, Hkv, hd)
    y = x + F.linear(att, p["Wo"])
    g = backprop(y, gen)
    f.add(f"{c}/dims", [B, S, d, H, Hkv, hd, n_ctx]); f.add(f"{c}/eps", [eps]); f.add(f"{c}/theta", [theta])
    f.add(f"{c}/pos", pos); f.add(f"{c}/x", x); f.add(f"{c}/dy", g)
    f.add(f"{c}/ln_w", ln_w); f.add(f"{c}/qn_w", qn_w); f.add(f"{c}/kn_w", kn_w)
    for name, t in p.items():
        f.add(f"{c}/{name}", t)
    f.add(f"{c}/ref.y", y); f.add(f"{c}/ref.dx", x.grad)
    f.add(f"{c}/ref.dln_w", ln_w.grad); f.add(f"{c}/ref.dqn_w", qn_w.grad); f.add(f"{c}/ref.dkn_w", kn_w.grad)
    for name, t in p.items():
        f.add(f"{c}/ref.d{name}", t.grad)


def case_lmhead(f, tag, seed, V, d, ids, targets, eps, dscale):
    gen = torch.Generator().manual_seed(seed)
    c = f"lmhead.{tag}"
    W = rnd(gen, V, d)
    ln_w = (1.0 + 0.1 * torch.randn(d, generator=gen)).requires_grad_(True)
    h = rmsnorm_ref(F.embedding(torch.tensor(ids, dtype=torch.long), W), ln_w, eps)
    z = F.linear(h, W)
    loss = F.cross_entropy(z, torch.tensor(targets, dtype=torch.long), ignore_index=-1)
    (dscale * loss).backward()
    f.add(f"{c}/dims", [V, d, len(ids)]); f.add(f"{c}/eps", [eps]); f.add(f"{c}/dscale", [dscale])
    f.add(f"{c}/W", W); f.add(f"{c}/ln_w", ln_w); f.add(f"{c}/ids", ids); f.add(f"{c}/targets", targets)
    f.add(f"{c}/ref.logits", z); f.add(f"{c}/ref.loss", [loss.item()])
    f.add(f"{c}/ref.dW", W.grad); f.add(f"{c}/ref.dln_w", ln_w.grad)


def build_cases():
    f = RefFile()
    case_rmsnorm(f, "odd", 1, 5, 7, 1e-6)
    case_rmsnorm(f, "qknorm_head", 2, 3 * 4, 16, 1e-6)        # rows = T*H, n = head_dim
    case_rmsnorm(f, "hidden", 3, 4, 96, 1e-5)
    case_rmsnorm(f, "large", 4, 3, 33, 1e-6, scale=100.0)
    case_rope(f, "packed", 10, [0, 1, 2, 3, 4] * 2, 3, 8, 16, 10000.0)   # B=2 sequences restart at 0
    case_rope(f, "scattered", 11, [7, 0, 31, 12, 3, 3, 20], 2, 6, 32, 1e6)
    case_attn(f, "gqa", 20, 2, 5, 4, 2, 8)                    # H=4, Hkv=2, B=2
    case_attn(f, "mha_odd", 21, 1, 7, 3, 3, 5)
    case_attn(f, "mqa", 22, 2, 4, 4, 1, 16)
    case_attn(f, "wide", 23, 1, 9, 2, 1, 80, scale=0.5)       # head_dim > 64
    case_attn(f, "blocks", 25, 2, 150, 4, 2, 16, scale=0.7)   # S > 2 x 64: causal query/key blocks, a short last one
    case_attn(f, "sharp", 24, 2, 6, 2, 2, 4, scale=3.0)       # peaked softmax
    case_swiglu(f, "odd", 30, 37, 1.0)
    case_swiglu(f, "wide", 31, 1001, 6.0)
    case_embed(f, "repeat", 40, 11, 6, [3, 0, 3, 10, 5, 3, 0, 7, 10])
    case_ce(f, "ignore", 50, 6, 13, [4, -1, 0, 12, 7, -1], 0.5)
    case_ce(f, "wide_shift", 51, 3, 1000, [999, 0, 517], 1.0, scale=10.0, offset=50.0)
    case_linear(f, "strided_bias", 60, 5, 7, 3, 10, 4, 6, True)
    case_linear(f, "plain", 61, 4, 16, 9, 16, 9, 9, False)
    case_linear(f, "strided_nobias", 62, 3, 5, 11, 8, 13, 12, False)
    case_block(f, "qknorm_gqa", 70, 2, 4, 16, 4, 2, 8, 1e-6, 10000.0)
    case_lmhead(f, "tied", 80, 17, 8, [1, 5, 5, 16, 0, 9], [5, 16, -1, 0, 9, 2], 1e-5, 0.25)
    return f


# ----------------------------------------------------------------------------- driver
def run_tool(tool, path):
    r = subprocess.run([tool, path], capture_output=True, text=True, timeout=RUN_TIMEOUT)
    errs = {}
    for line in r.stdout.splitlines():
        parts = line.split()
        if len(parts) == 4 and parts[0] == "ERR":
            errs[parts[1]] = (float(parts[2]), float(parts[3]))
    return r, errs


def no_crash(r):
    return r.returncode >= 0 and not any(m in r.stderr for m in CRASH_MARKERS)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--moec", help="moec binary (unused; ctest passes it to every Python test)")
    ap.add_argument("--build-dir", required=True)
    args = ap.parse_args()
    tool = os.path.join(os.path.abspath(args.build_dir), "tool_grad_ops")
    if not os.path.exists(tool):
        print(f"FAIL tool missing: {tool} (build the tool_grad_ops target)")
        print("0 passed, 1 failed")
        return 1
    out_dir = os.path.join(os.path.abspath(args.build_dir), "grad_ops")
    os.makedirs(out_dir, exist_ok=True)

    torch.set_num_threads(1)
    f = build_cases()
    path = os.path.join(out_dir, "ref.bin")
    with open(path, "wb") as fh:
        fh.write(f.to_bytes())

    # 1. every reference tensor within TOL
    r, errs = run_tool(tool, path)
    check(r.returncode == 0 and no_crash(r), "tool runs", f"rc={r.returncode} {r.stderr.strip()[-400:]}")
    worst = {}
    for ref in f.refs():
        key = ref.replace("/ref.", "/")
        if key not in errs:
            check(False, key, "not reported by the tool")
            continue
        rel, mx = errs[key]
        check(rel <= TOL, key, f"rel_err={rel:.3e} (max|ref|={mx:.3g}, tol {TOL:g})")
        op = key.split(".")[0]
        worst[op] = max(worst.get(op, 0.0), rel)
    check(len(errs) == len(f.refs()), "tool reports exactly the reference tensors",
          f"{len(errs)} reported, {len(f.refs())} expected")
    print("worst relative error per op: " + ", ".join(f"{k} {v:.2e}" for k, v in worst.items()))

    # 2. negative control: a perturbed reference must be caught
    victim = "attn.gqa/ref.dk"
    a = dict(f.arrays)[victim].copy()
    a.flat[7] += 1e-3 * np.abs(a).max()
    bad = os.path.join(out_dir, "perturbed.bin")
    with open(bad, "wb") as fh:
        fh.write(f.to_bytes(override={victim: a}))
    r2, errs2 = run_tool(tool, bad)
    rel = errs2.get("attn.gqa/dk", (0.0, 0.0))[0]
    check(r2.returncode == 0 and rel > TOL, "negative control: perturbed attn.gqa/dk is caught",
          f"rel_err={rel:.3e} > tol {TOL:g}")

    # 3. malformed files are refused cleanly
    good = f.to_bytes()
    for label, blob in (("bad magic", b"NOTGRAD!" + good[8:]),
                        ("bad version", good[:8] + struct.pack("<I", 99) + good[12:]),
                        ("truncated", good[: len(good) // 2]),
                        ("empty", b"")):
        p = os.path.join(out_dir, "malformed.bin")
        with open(p, "wb") as fh:
            fh.write(blob)
        r3, _ = run_tool(tool, p)
        check(r3.returncode == 2 and no_crash(r3), f"malformed file refused: {label}",
              f"rc={r3.returncode} {r3.stderr.strip()[-200:]}")

    print(f"{passed} passed, {failed} failed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
