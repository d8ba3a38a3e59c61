#!/usr/bin/env python3
"""py_test_router_grad.py - the routers (src/moe/routers/) and the balancing losses
(src/moe/balance.c) against PyTorch autograd.

Run by ctest from the repo root:
    <python> tests/py_test_router_grad.py --moec <moec binary> --build-dir <build dir>

For each router configuration, PyTorch (float64, autograd) computes the routing from the
formulas of MOE_SPECS §1-§5 as written in docs/routers.md, independently of the C code:
    s = softmax(z) | sigmoid(z);  P = s | s / sum_j s_j
    v = s (+ b);  masked experts -inf;  group-limited: keep the topk_group best groups by
        max v | sum of the top-2 v, others -inf;  picks = top-k_eff of v (a pick at -inf = no expert)
    a = s[picks] | softmax(z[picks]) (topk_softmax);  norm: a / (sum a + 1e-20);  w = a * scaling
    LBL = aux_coef * E * sum_i f_i P_i   (f_i = count_i / (N k), counts from the choice;
          micro-batch, per sequence then mean, or global counts and tokens)
    L_z = z_coef * mean_t logsumexp(z_t)^2
and the gradient of
    total = sum_s g_s w_s (slots with an expert) + sum G * P + LBL + L_z
for random g, G. One token's slots are all set to "no expert" (a token with zero experts) and
one slot is dropped (expert -1, choice kept: it still counts, its weight gets no gradient).
tests/tool_router runs the C forward and backward on the same inputs (format in that file).

Compared per tensor: experts and choices exactly; weights, P, dLBL/dP and dL/dz with
    max|C - torch| <= 1e-5 * max|torch|
(C is fp32, torch float64); the two losses to 1e-5 relative. Each reference is sanity-checked
first so that the comparison can fail: no near-tie (gap >= 1e-3) in any selection decision
(expert ranks and group ranks), and every case's distinguishing feature (renorm, scaling,
topk_softmax, groups, bias, the losses) moves some compared tensor by > 100x the tolerance.
Ends with `N passed, M failed`; exits 1 on any failure.
"""

import argparse
import math
import os
import struct
import subprocess
import sys
import tempfile

import torch

REL_TOL = 1e-5     # C fp32 vs torch float64, relative to the tensor's max |torch|
MIN_GAP = 1e-3     # min gap in selection values at every decision (fp32 error is ~1e-7)
ABLATION = 100     # a feature must move some tensor by > ABLATION * REL_TOL (relative)
RUN_TIMEOUT = 60
NEG_INF = float("-inf")

SOFTMAX, SIGMOID = 0, 1
G_MAX, G_TOP2 = 0, 1
MICRO, SEQUENCE, GLOBAL = 0, 1, 2


class Results:
    def __init__(self):
        self.passed = 0
        self.failed = 0

    def check(self, ok, label, detail=""):
        if ok:
            self.passed += 1
        else:
            self.failed += 1
        print(f"{'PASS' if ok else 'FAIL'} {label}{': ' + detail if detail else ''}", flush=True)
        return ok


def base_cfg(**kw):
    c = dict(T=16, E=8, k=2, k_eff=0, score=SOFTMAX, topk_softmax=0, norm=0, n_group=1, topk_group=1,
             group_score=G_MAX, use_bias=0, mask=None, kill_token=3, drop_slot=5, scope=MICRO, seq_len=0,
             scaling=1.0, aux_coef=0.1, z_coef=0.01, extra_global=0)
    c.update(kw)
    if not c["k_eff"]:
        c["k_eff"] = c["k"]
    return c


# ----------------------------------------------------------------------------- reference
def selection(z, s, cfg, bias):
    """Selection values v [T, E] (no gradient), the picks [T, k_eff], their validity, and the
    smallest decision gap (for the near-tie sanity check)."""
    T, E = z.shape
    v = s.detach().clone()
    if cfg["use_bias"]:
        v = v + bias
    if cfg["mask"] is not None:
        m = torch.tensor(cfg["mask"], dtype=torch.bool)
        v[:, ~m] = NEG_INF
    gap = math.inf
    G = cfg["n_group"]
    if G > 1:
        vg = v.view(T, G, E // G)
        top2 = vg.topk(2, dim=-1).values
        if cfg["group_score"] == G_MAX:
            gs = top2[..., 0]
        else:  # sum of the two largest finite values (one if only one is finite)
            gs = torch.where(torch.isinf(top2[..., 1]), top2[..., 0], top2.sum(-1))
        srt = gs.sort(dim=-1, descending=True).values
        tg = cfg["topk_group"]
        if tg < G:
            d = srt[:, tg - 1] - srt[:, tg]
            d = d[torch.isfinite(d)]
            if d.numel():
                gap = min(gap, d.min().item())
        keep = gs.topk(tg, dim=-1).indices
        gm = torch.zeros(T, G, dtype=torch.bool)
        gm.scatter_(1, keep, True)
        v = v.masked_fill(~gm.repeat_interleave(E // G, dim=1), NEG_INF)
    k = cfg["k_eff"]
    srt = v.sort(dim=-1, descending=True).values
    fin = torch.isfinite(srt)
    for j in range(min(k, E - 1) + 1):
        if j + 1 < E:
            ok = fin[:, j] & fin[:, j + 1]
            d = (srt[:, j] - srt[:, j + 1])[ok]
            if d.numel():
                gap = min(gap, d.min().item())
    picks = v.topk(k, dim=-1).indices
    valid = torch.isfinite(torch.gather(v, 1, picks))
    return picks, valid, gap


def reference(cfg, z_in, bias, g, G, gcounts_extra):
    """float64 autograd reference: outputs and gradients as the tool writes them"""
    T, E, k, ke = cfg["T"], cfg["E"], cfg["k"], cfg["k_eff"]
    z = z_in.clone().double().requires_grad_(True)
    if cfg["score"] == SOFTMAX:
        s = torch.softmax(z, dim=-1)
        P = s
    else:
        s = torch.sigmoid(z)
        P = s / s.sum(-1, keepdim=True)
    picks, valid, gap = selection(z, s, cfg, bias.double())
    if cfg["topk_softmax"]:
        zp = torch.gather(z, 1, picks).masked_fill(~valid, NEG_INF)
        a = torch.softmax(zp, dim=-1)
        a = torch.where(valid, a, torch.zeros_like(a))
    else:
        a = torch.gather(s, 1, picks) * valid
    if cfg["norm"]:
        a = a / (a.sum(-1, keepdim=True) + 1e-20)
    w = a * cfg["scaling"]
    expert = torch.where(valid, picks, torch.full_like(picks, -1))
    chosen = expert.clone()
    weight0 = w.detach().clone()  # what the forward writes, before the edits
    if cfg["kill_token"] >= 0:
        chosen[cfg["kill_token"]] = -1
        expert[cfg["kill_token"]] = -1
    expert_after = expert.clone().view(-1)
    if cfg["drop_slot"] >= 0:
        expert_after[cfg["drop_slot"]] = -1
    live = (expert_after >= 0).view(T, ke).double()

    # balancing losses; P as a leaf too, for dLBL/dP
    Pl = P.detach().clone().requires_grad_(True)

    def lbl_of(Pt):
        ch = chosen.view(-1)
        tok = torch.arange(T).repeat_interleave(ke)
        def counts(t0, t1):
            c = torch.zeros(E, dtype=torch.float64)
            sel = (ch >= 0) & (tok >= t0) & (tok < t1)
            c.index_add_(0, ch[sel], torch.ones(int(sel.sum()), dtype=torch.float64))
            return c
        if cfg["scope"] == MICRO:
            f = counts(0, T) / (T * k)
            return cfg["aux_coef"] * E * (f * Pt.mean(0)).sum()
        if cfg["scope"] == SEQUENCE:
            L, n = cfg["seq_len"], T // cfg["seq_len"]
            tot = 0
            for q in range(n):
                f = counts(q * L, (q + 1) * L) / (L * k)
                tot = tot + cfg["aux_coef"] * E * (f * Pt[q * L:(q + 1) * L].mean(0)).sum()
            return tot / n
        gc = counts(0, T) + gcounts_extra.double()
        gt = T + cfg["extra_global"]
        f = gc / (gt * k)
        return cfg["aux_coef"] * E * (f * Pt.mean(0)).sum()

    lbl_leaf = lbl_of(Pl)
    lbl_leaf.backward()
    dprobs_lbl = Pl.grad.clone()
    lbl = lbl_of(P)
    zl = cfg["z_coef"] * (torch.logsumexp(z, dim=-1) ** 2).mean()
    total = (g.double() * live * w).sum() + (G.double() * P).sum() + lbl + zl
    total.backward()
    return dict(expert=expert.view(-1), chosen=chosen.view(-1), weight=weight0.view(-1), probs=P.detach(),
                lbl=lbl.item(), zl=zl.item(), dprobs_lbl=dprobs_lbl, dlogits=z.grad.detach(), gap=gap)


# ----------------------------------------------------------------------------- I/O
def write_case(path, cfg, z, bias, g, G, gcounts):
    T, E, k, ke = cfg["T"], cfg["E"], cfg["k"], cfg["k_eff"]
    mask = cfg["mask"]
    hdr = [T, E, k, ke, cfg["score"], cfg["topk_softmax"], cfg["norm"], cfg["n_group"], cfg["topk_group"],
           cfg["group_score"], cfg["use_bias"], 1 if mask is not None else 0, cfg["kill_token"], cfg["drop_slot"],
           cfg["scope"], cfg["seq_len"]]
    with open(path, "wb") as f:
        f.write(b"MOERTR\0\0" + struct.pack("<I", 1))
        f.write(struct.pack("<16i", *hdr))
        f.write(struct.pack("<3f", cfg["scaling"], cfg["aux_coef"], cfg["z_coef"]))
        f.write(struct.pack("<q", T + cfg["extra_global"]))
        f.write(z.float().contiguous().numpy().tobytes())
        f.write(bias.float().contiguous().numpy().tobytes())
        if mask is not None:
            f.write(bytes(mask))
        f.write(struct.pack(f"<{E}q", *gcounts))
        f.write(g.float().contiguous().numpy().tobytes())
        f.write(G.float().contiguous().numpy().tobytes())


def read_out(path, T, E):
    import numpy as np
    with open(path, "rb") as f:
        b = f.read()
    assert b[:8] == b"MOERTO\0\0" and struct.unpack_from("<I", b, 8)[0] == 1, "bad output header"
    n = struct.unpack_from("<i", b, 12)[0]
    o = 16
    def take(dtype, count):
        nonlocal o
        a = np.frombuffer(b, dtype=dtype, count=count, offset=o).copy()
        o += a.nbytes
        return torch.from_numpy(a)
    out = {}
    out["token"] = take("<i4", n)
    out["expert"] = take("<i4", n)
    out["chosen"] = take("<i4", n)
    out["weight"] = take("<f4", n)
    out["probs"] = take("<f4", T * E).view(T, E)
    out["lbl"] = take("<f8", 1).item()
    out["zl"] = take("<f8", 1).item()
    out["dprobs_lbl"] = take("<f4", T * E).view(T, E)
    out["dlogits"] = take("<f4", T * E).view(T, E)
    return out


def rel_err(c, ref):
    c, ref = c.double(), ref.double()
    m = ref.abs().max().item()
    d = (c - ref).abs().max().item()
    return d / m if m > 0 else d


def spaced_logits(gen, T, E, spread):
    z = torch.empty(T, E, dtype=torch.float64)
    for t in range(T):
        base = spread * (torch.arange(E, dtype=torch.float64) / E - 0.5)
        z[t] = base[torch.randperm(E, generator=gen)] + 0.01 * torch.rand(E, generator=gen, dtype=torch.float64)
    return z.float()


# ----------------------------------------------------------------------------- cases
CASES = [
    ("mixtral (topk_softmax)", base_cfg(E=8, k=2, topk_softmax=1), [dict(topk_softmax=0)]),
    ("qwen3 (softmax, renorm)", base_cfg(E=16, k=4, norm=1), [dict(norm=0)]),
    ("deepseekmoe (no renorm, seq aux)", base_cfg(E=16, k=4, scope=SEQUENCE, seq_len=4), [dict(scope=MICRO)]),
    ("deepseek-v2 (groups max, scale 16)", base_cfg(E=16, k=3, n_group=4, topk_group=2, scaling=16.0,
                                                    scope=SEQUENCE, seq_len=8, z_coef=0.1), [dict(n_group=1, topk_group=1),
                                                                                 dict(scaling=1.0)]),
    ("deepseek-v3 (sigmoid, bias, top2 groups, global LBL)",
     base_cfg(E=32, k=4, score=SIGMOID, norm=1, n_group=8, topk_group=3, group_score=G_TOP2, use_bias=1,
              scaling=2.5, scope=GLOBAL, extra_global=48),
     [dict(use_bias=0), dict(group_score=G_MAX), dict(n_group=1, topk_group=1), dict(scope=MICRO)]),
    ("sigmoid renorm, k override 2 of 4, mask", base_cfg(E=16, k=4, k_eff=2, score=SIGMOID, norm=1, scaling=1.5,
                                                         mask=[1, 1, 0, 1, 1, 1, 1, 0, 1, 1, 1, 1, 0, 1, 1, 1]),
     [dict(mask=None), dict(k_eff=4)]),
    ("sigmoid no renorm", base_cfg(E=8, k=3, score=SIGMOID), [dict(norm=1)]),
    ("topk_softmax + groups + bias", base_cfg(E=16, k=4, topk_softmax=1, norm=1, n_group=4, topk_group=2,
                                              group_score=G_TOP2, use_bias=1, scaling=1.25),
     [dict(topk_softmax=0, norm=0), dict(use_bias=0)]),
    ("mask leaves one expert (empty slots)", base_cfg(E=8, k=2, norm=1, mask=[0, 0, 0, 0, 0, 1, 0, 0]),
     [dict(mask=None)]),
    ("v3 groups with a mask", base_cfg(E=16, k=4, score=SIGMOID, norm=1, n_group=4, topk_group=2,
                                        group_score=G_TOP2, use_bias=1, scaling=2.5,
                                        mask=[1, 1, 1, 1, 0, 0, 0, 1, 1, 1, 1, 1, 1, 1, 1, 1]),
     [dict(mask=None)]),
]


def run_case(res, tool, tmp, idx, name, cfg, ablations):
    T, E, ke = cfg["T"], cfg["E"], cfg["k_eff"]
    gen = torch.Generator().manual_seed(1000 + idx)
    # find inputs with no near-tie in any decision
    for attempt in range(50):
        z = spaced_logits(gen, T, E, 8.0)
        bias = 0.3 * (torch.rand(E, generator=gen) - 0.5) if cfg["use_bias"] else torch.zeros(E)
        g = torch.randn(T, ke, generator=gen)
        G = torch.randn(T, E, generator=gen)
        gextra = torch.randint(0, 3 * T, (E,), generator=gen) if cfg["scope"] == GLOBAL else torch.zeros(E, dtype=torch.long)
        ref = reference(cfg, z, bias, g, G, gextra)
        if ref["gap"] >= MIN_GAP:
            break
    else:
        res.check(False, f"{name}: inputs", "no tie-free inputs found")
        return
    res.check(True, f"{name}: inputs", f"min decision gap {ref['gap']:.2e} after {attempt + 1} draws")

    path_in = os.path.join(tmp, f"case{idx}.bin")
    path_out = os.path.join(tmp, f"out{idx}.bin")
    write_case(path_in, cfg, z, bias, g.view(-1), G, gextra.tolist())
    p = subprocess.run([tool, path_in, path_out], capture_output=True, text=True, timeout=RUN_TIMEOUT)
    if not res.check(p.returncode == 0, f"{name}: tool ran", p.stderr.strip()):
        return
    out = read_out(path_out, T, E)

    tok_ok = torch.equal(out["token"].long(), torch.arange(T).repeat_interleave(ke))
    res.check(tok_ok, f"{name}: slot tokens")
    # the tool reports expert/chosen after the edits (kill, drop)
    exp_ref = ref["expert"].clone()
    if cfg["drop_slot"] >= 0:
        exp_ref[cfg["drop_slot"]] = -1
    res.check(torch.equal(out["expert"].long(), exp_ref.long()), f"{name}: experts",
              f"C {out['expert'][:8].tolist()} torch {exp_ref[:8].tolist()}")
    res.check(torch.equal(out["chosen"].long(), ref["chosen"].long()), f"{name}: choices")
    n_empty = int((ref["chosen"] < 0).sum())
    for key in ("weight", "probs", "dprobs_lbl", "dlogits"):
        e = rel_err(out[key], ref[key])
        res.check(e <= REL_TOL, f"{name}: {key}", f"max rel err {e:.2e} (tol {REL_TOL:g})")
    for key in ("lbl", "zl"):
        e = abs(out[key] - ref[key]) / max(abs(ref[key]), 1e-30)
        res.check(e <= REL_TOL, f"{name}: {key}", f"C {out[key]:.9g} torch {ref[key]:.9g} rel {e:.1e}")
    res.check(n_empty >= ke, f"{name}: has a zero-expert token", f"{n_empty} empty choices")

    # ablations: removing the case's feature (or the losses) must move a compared tensor
    abl = list(ablations) + [dict(aux_coef=0.0), dict(z_coef=0.0)]
    for a in abl:
        c2 = dict(cfg)
        c2.update(a)
        c2["k_eff"] = min(c2["k_eff"], c2["k"])
        g2 = g if c2["k_eff"] == ke else torch.randn(T, c2["k_eff"], generator=gen)
        r2 = reference(c2, z, bias, g2, G, gextra)
        moved = 0.0
        for key in ("weight", "probs", "dlogits"):
            if r2[key].shape == ref[key].shape:
                moved = max(moved, rel_err(r2[key], ref[key]))
            else:
                moved = math.inf
        moved = max(moved, abs(r2["lbl"] - ref["lbl"]) / max(abs(ref["lbl"]), 1e-30))
        res.check(moved > ABLATION * REL_TOL, f"{name}: ablation {a} is visible", f"moves by {moved:.2e}")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--moec", required=False)
    ap.add_argument("--build-dir", required=True)
    args = ap.parse_args()
    tool = os.path.join(args.build_dir, "tool_router")
    res = Results()
    if not res.check(os.access(tool, os.X_OK), "tool_router built", tool):
        sys.exit(1)
    torch.manual_seed(0)
    with tempfile.TemporaryDirectory() as tmp:
        for i, (name, cfg, abl) in enumerate(CASES):
            run_case(res, tool, tmp, i, name, cfg, abl)
    print(f"{res.passed} passed, {res.failed} failed")
    sys.exit(1 if res.failed else 0)


if __name__ == "__main__":
    main()
