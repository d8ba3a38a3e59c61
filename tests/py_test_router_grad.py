#!/usr/bin/env python3
"""py_test_router_grad.py - every router of the registry (src/moe/routers/) and the balancing
losses (src/moe/balance.c) against PyTorch autograd.

Run by ctest from the repo root:
    <python> tests/py_test_router_grad.py --moec <moec binary> --build-dir <build dir>

For each case, PyTorch (float64, autograd) computes the routing from the formulas of MOE_SPECS
(§1-§6, §8, §11-§13) as written in docs/routers.md, independently of the C code. P = softmax(z)
for every router but topk's sigmoid scoring and the gateless ones (hash, THOR: P = the one-hot of
the assignment). Slots in the order docs/routers.md gives for each router.
  topk (§1-§5):  s = softmax(z) | sigmoid(z);  P = s | s / sum_j s_j
      v = s (+ b);  masked experts -inf;  group-limited: keep the topk_group best groups by
          max v | sum of the top-2 v, others -inf;  picks = top-k_eff of v (a pick at -inf = no expert)
      a = s[picks] | softmax(z[picks]) (topk_softmax);  norm: a / (sum a + 1e-20);  w = a * scaling
      slot t*k_eff + j
  expert_choice (§6): C = min(T, max(1, ceil(T c / E))); expert e takes the stable top-C tokens of
      the column P[:, e], weight scaling * P[t, e]; slot e*C + j; a masked expert takes nothing
  topp (§8): per token the selectable experts by P descending, cumulative sum c_j; keep positions
      0..min{j : c_j > p} (all if none), at most k_eff; raw weights scaling * P; compact token-ordered
      slots; own loss L_d = beta * mean_t H(P_t)
  moge (§11): n_group contiguous groups; per group the stable top-(k_eff/G, at least 1) of P inside
      it; weight scaling * P; slot t*k' + g*(k'/G) + j
  evomoe (§13): training (a random stream): tau_t = max(tau_max exp(ln(tau_min/tau_max) t/D), tau_min)
      | max(tau_max - t (tau_max - tau_min)/D, tau_min); g = softmax((z + G)/tau); soft phase
      (t < hard_after): the selectable experts with g > 0.001 in expert order, else the selectable
      argmax of g; serving (no stream): top-k_eff of P; weight scaling * P
      The Gumbel noise G is seed-reproducible on both sides: the C stream (core/rng.h: xoshiro256**
      seeded by splitmix64) re-implemented here, U = (24-bit uniform + 1/2) / 2^24 (what
      routers/evomoe.c draws, T*E draws in token-major order), G = -ln(-ln U) rounded to fp32.
  hash (§12): expert = mix64(mix64(seed) ^ id) mod E, weight 1, no gradient
  thor (§12): training: one expert rng_below(E) from the stream for the whole call, weight 1
Shared by all:
    router_scale (moec_router_scale, MoGE's learnable scale, MOE_SPECS §11 step 4): w = w * s[expert]
          right after the router, s a leaf (its gradient dL/ds is compared too)
    LBL = aux_coef * E * sum_i f_i P_i   (f_i = count_i / (N k), counts from the choice;
          micro-batch, per sequence then mean, or global counts and tokens); k = the call's slots
          per token: k_eff, for moge max(1, k_eff // G) * G (src/moe/router.c moec_router_call_k)
    L_z = z_coef * mean_t logsumexp(z_t)^2
and the gradient of
    total = sum_s g_s w_s (slots with an expert) + sum G * P + LBL + L_z + L_router
for random g, G. One token's slots are all set to "no expert" (a token with zero experts) and
one slot is dropped (expert -1, choice kept: it still counts, its weight gets no gradient).
tests/tool_router runs the C forward and backward on the same inputs (format in that file); the
router's own keys reach it as config.json keys through the real key reader.

Compared per tensor: slot count, experts, choices and slot tokens exactly; weights, P, dLBL/dP
and dL/dz with
    max|C - torch| <= 1e-5 * max|torch|
and the router's own dL/dP (top-p's entropy) the same way
(C is fp32, torch float64); the losses (LBL, z, the router's own) and EvoMoE's tau to 1e-5
relative. Each reference is sanity-checked first so that the comparison can fail: no near-tie
(gap >= 1e-3) in any selection decision (expert ranks, group ranks, expert choice's token ranks,
top-p's cumulative mass against p, the Gumbel argmax; the soft gate's threshold 0.001 relatively:
|ln(g / 0.001)| >= 1e-3), and every case's distinguishing feature (renorm, scaling, topk_softmax,
groups, bias, capacity, p, the temperature schedule, the noise, the seeds, the losses) moves some
compared tensor by > 100x the tolerance.
Ends with `N passed, M failed`; exits 1 on any failure.
"""

import argparse
import json
import math
import os
import struct
import subprocess
import sys
import tempfile

import numpy as np
import torch

REL_TOL = 1e-5     # C fp32 vs torch float64, relative to the tensor's max |torch|
MIN_GAP = 1e-3     # min gap in selection values at every decision (fp32 error is ~1e-7)
ABLATION = 100     # a feature must move some tensor by > ABLATION * REL_TOL (relative)
RUN_TIMEOUT = 60
NEG_INF = float("-inf")
EVO_THRESHOLD = 1e-3  # EvoMoE's soft gate: experts with g > 0.001 pass (MOE_SPECS §13)

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
    c = dict(router="topk", T=16, E=8, k=2, k_eff=0, score=SOFTMAX, topk_softmax=0, norm=0, n_group=1,
             topk_group=1, group_score=G_MAX, use_bias=0, mask=None, kill_token=3, drop_slot=5, scope=MICRO,
             seq_len=0, scaling=1.0, aux_coef=0.1, z_coef=0.01, extra_global=0, logits="spaced",
             # the other routers' keys (docs/routers.md) and the call context
             ec_capacity=2.0, top_p=0.4, entropy_coef=0.0, tau_max=1.0, tau_min=0.5, tau_steps=1, tau_linear=0,
             hard_after=-1, hash_seed=0, step=0, rng_seed=-1, router_scale=0)
    c.update(kw)
    if not c["k_eff"]:
        c["k_eff"] = c["k"]
    return c


def f32(x):
    """a config value as the C side holds it (fp32 fields)"""
    return float(np.float32(x))


def router_keys(cfg):
    """the config.json keys of the case's router (what tool_router hands to moec_router_cfg_parse)"""
    r = cfg["router"]
    keys = {"moec_router": r}
    if cfg["router_scale"]:
        keys["moec_router_scale"] = True
    if r == "expert_choice":
        keys["moec_ec_capacity"] = cfg["ec_capacity"]
    elif r == "topp":
        keys.update(moec_top_p=cfg["top_p"], moec_entropy_loss_coef=cfg["entropy_coef"])
    elif r == "moge":
        keys["n_group"] = cfg["n_group"]
    elif r == "evomoe":
        keys.update(moec_tau_max=cfg["tau_max"], moec_tau_min=cfg["tau_min"], moec_tau_steps=cfg["tau_steps"],
                    moec_tau_schedule="linear" if cfg["tau_linear"] else "exp", moec_hard_gumbel_after=cfg["hard_after"])
    elif r == "hash":
        keys["moec_hash_seed"] = cfg["hash_seed"]
    elif r == "thor":  # the shared default LBL coefficient is refused: a THOR config sets it to 0
        keys["router_aux_loss_coef"] = 0.0
    return keys


# ----------------------------------------------------------------------------- the C random stream
M64 = (1 << 64) - 1


def mix64(x):
    """splitmix64's finaliser (core/rng.h moec_mix64)"""
    x ^= x >> 30
    x = (x * 0xBF58476D1CE4E5B9) & M64
    x ^= x >> 27
    x = (x * 0x94D049BB133111EB) & M64
    return x ^ (x >> 31)


class Xoshiro256ss:
    """xoshiro256** (Blackman & Vigna), seeded by four splitmix64 outputs: the stream of core/rng.h"""

    def __init__(self, seed):
        x, self.s = seed & M64, []
        for _ in range(4):
            x = (x + 0x9E3779B97F4A7C15) & M64
            self.s.append(mix64(x))

    @staticmethod
    def _rotl(x, k):
        return ((x << k) | (x >> (64 - k))) & M64

    def u64(self):
        s = self.s
        out = (self._rotl((s[1] * 5) & M64, 7) * 9) & M64
        t = (s[1] << 17) & M64
        s[2] ^= s[0]
        s[3] ^= s[1]
        s[1] ^= s[2]
        s[0] ^= s[3]
        s[2] ^= t
        s[3] = self._rotl(s[3], 45)
        return out

    def below(self, n):
        lim = M64 - M64 % n
        while True:
            x = self.u64()
            if x < lim:
                return x % n

    def gumbel(self):
        u = ((self.u64() >> 40) + 0.5) / 16777216.0
        return f32(-math.log(-math.log(u)))


# ----------------------------------------------------------------------------- references
def stable_desc(v):
    """indices of v sorted descending, ties to the lower index"""
    return torch.sort(v, descending=True, stable=True).indices


def adjacent_gap(srt, upto):
    """smallest difference between consecutive finite sorted values at positions 0..upto"""
    gap = math.inf
    for j in range(min(upto, srt.numel() - 1)):
        a, b = srt[j].item(), srt[j + 1].item()
        if math.isfinite(a) and math.isfinite(b):
            gap = min(gap, a - b)
    return gap


def selection(s, cfg, bias):
    """topk: selection values v [T, E] (no gradient), the picks [T, k_eff], their validity, and the
    smallest decision gap (for the near-tie sanity check)."""
    T, E = s.shape
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
    for t in range(T):
        gap = min(gap, adjacent_gap(srt[t], k))
    picks = v.topk(k, dim=-1).indices
    valid = torch.isfinite(torch.gather(v, 1, picks))
    return picks, valid, gap


def route_topk(z, cfg, bias):
    T, ke = cfg["T"], cfg["k_eff"]
    if cfg["score"] == SOFTMAX:
        s = torch.softmax(z, dim=-1)
        P = s
    else:
        s = torch.sigmoid(z)
        P = s / s.sum(-1, keepdim=True)
    picks, valid, gap = selection(s, cfg, bias)
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
    return dict(token=torch.arange(T).repeat_interleave(ke), expert=expert.reshape(-1), weight=w.reshape(-1), probs=P,
                gap=gap)


def selectable(cfg, e):
    return cfg["mask"] is None or bool(cfg["mask"][e])


class Slots:
    """a routing built slot by slot: token, expert (-1 = none), weight (a torch scalar or 0)"""

    def __init__(self):
        self.tok, self.exp, self.w = [], [], []

    def add(self, t, e, w):
        self.tok.append(t)
        self.exp.append(e)
        self.w.append(w if e >= 0 else torch.zeros((), dtype=torch.float64))

    def result(self, P, gap, **extra):
        w = torch.stack([x if torch.is_tensor(x) else torch.tensor(float(x), dtype=torch.float64) for x in self.w])
        return dict(token=torch.tensor(self.tok), expert=torch.tensor(self.exp), weight=w, probs=P, gap=gap, **extra)


def route_expert_choice(z, cfg, bias):
    T, E = cfg["T"], cfg["E"]
    P = torch.softmax(z, dim=-1)
    C = min(T, max(1, math.ceil(T * f32(cfg["ec_capacity"]) / E)))
    out, gap = Slots(), math.inf
    for e in range(E):
        col = P[:, e].detach()
        order = stable_desc(col)
        on = selectable(cfg, e)
        if on:  # the top-C set and its order are decisions
            gap = min(gap, adjacent_gap(col[order], C))
        for j in range(C):
            t = order[j].item()
            out.add(t, e if on else -1, P[t, e] * cfg["scaling"])
    return out.result(P, gap, capacity=C)


def route_topp(z, cfg, bias):
    T, ke, p = cfg["T"], cfg["k_eff"], f32(cfg["top_p"])
    P = torch.softmax(z, dim=-1)
    out, gap = Slots(), math.inf
    for t in range(T):
        row = P[t].detach()
        cand = [e for e in stable_desc(row).tolist() if selectable(cfg, e)]
        keep, cum = [], 0.0
        for e in cand[:ke]:
            keep.append(e)
            cum += row[e].item()
            gap = min(gap, abs(cum - p))
            if cum > p:
                break
        gap = min(gap, adjacent_gap(row[cand], len(keep)) if cand else math.inf)
        for e in keep:
            out.add(t, e, P[t, e] * cfg["scaling"])
        if not keep:
            out.add(t, -1, 0)
    beta = f32(cfg["entropy_coef"])
    return out.result(P, gap, rloss_of=lambda Pt: beta * -(Pt * torch.log(Pt)).sum(-1).mean())


def route_moge(z, cfg, bias):
    T, E, G = cfg["T"], cfg["E"], cfg["n_group"]
    n, kg = E // G, max(1, cfg["k_eff"] // G)
    P = torch.softmax(z, dim=-1)
    out, gap = Slots(), math.inf
    for t in range(T):
        for g in range(G):
            v = P[t, g * n:(g + 1) * n].detach().clone()
            for j in range(n):
                if not selectable(cfg, g * n + j):
                    v[j] = NEG_INF
            order = stable_desc(v)
            gap = min(gap, adjacent_gap(v[order], kg))
            for j in range(kg):
                e = g * n + order[j].item()
                out.add(t, e if math.isfinite(v[order[j]].item()) else -1, P[t, e] * cfg["scaling"])
    return out.result(P, gap)


def evomoe_tau(cfg, step):
    tmax, tmin, x = f32(cfg["tau_max"]), f32(cfg["tau_min"]), step / cfg["tau_steps"]
    tau = tmax - x * (tmax - tmin) if cfg["tau_linear"] else tmax * math.exp(math.log(tmin / tmax) * x)
    return max(tau, tmin)


def route_evomoe(z, cfg, bias):
    T, E, ke = cfg["T"], cfg["E"], cfg["k_eff"]
    P = torch.softmax(z, dim=-1)
    out, gap = Slots(), math.inf
    train = cfg["rng_seed"] >= 0
    tau = evomoe_tau(cfg, cfg["step"])  # the schedule at the call's step (used only with a stream)
    soft = train and cfg["hard_after"] >= 0 and cfg["step"] < cfg["hard_after"]
    if train:
        rng = Xoshiro256ss(cfg["rng_seed"])
        noise = torch.tensor([[rng.gumbel() for _ in range(E)] for _ in range(T)], dtype=torch.float64)
        y = (z.detach() + noise) / f32(tau)
    for t in range(T):
        if not train:  # serving: top-k_eff of P
            row = P[t].detach()
            keep = [e for e in stable_desc(row).tolist() if selectable(cfg, e)][:ke]
            gap = min(gap, adjacent_gap(row[stable_desc(row)], ke))
        elif soft:
            g = torch.softmax(y[t], dim=-1)
            keep = [e for e in range(E) if g[e].item() > EVO_THRESHOLD and selectable(cfg, e)]
            gap = min(gap, min(abs(math.log(g[e].item() / EVO_THRESHOLD)) for e in range(E)))
        else:
            cand = [e for e in range(E) if selectable(cfg, e)]
            vals = y[t, cand]
            srt = vals.sort(descending=True).values
            keep = [cand[stable_desc(vals)[0].item()]] if cand else []
            gap = min(gap, adjacent_gap(srt, 1))
        for e in keep:
            out.add(t, e, P[t, e] * cfg["scaling"])
        if not keep:
            out.add(t, -1, 0)
    return out.result(P, gap, tau=tau)


def one_hot_probs(T, E, token, expert):
    P = torch.zeros(T, E, dtype=torch.float64)
    for t, e in zip(token.tolist(), expert.tolist()):
        if e >= 0:
            P[t, e] = 1.0
    return P


def route_hash(z, cfg, bias):
    T, E = cfg["T"], cfg["E"]
    out = Slots()
    pe = []
    for t in range(T):
        e = mix64(mix64(cfg["hash_seed"]) ^ cfg["ids"][t]) % E
        pe.append(e)
        out.add(t, e if selectable(cfg, e) else -1, 1.0)
    # P is the one-hot of the table's expert (docs/routers.md: the mask does not change P)
    return out.result(one_hot_probs(T, E, torch.arange(T), torch.tensor(pe)), math.inf)


def route_thor(z, cfg, bias):
    T, E = cfg["T"], cfg["E"]
    e = Xoshiro256ss(cfg["rng_seed"]).below(E)  # one expert for the whole call (training)
    out = Slots()
    for t in range(T):
        out.add(t, e if selectable(cfg, e) else -1, 1.0)
    r = out.result(None, math.inf)
    r["probs"] = one_hot_probs(T, E, r["token"], r["expert"])
    return r


ROUTERS = dict(topk=route_topk, expert_choice=route_expert_choice, topp=route_topp, moge=route_moge,
               evomoe=route_evomoe, hash=route_hash, thor=route_thor)


def call_k(cfg):
    """the LBL's k: the slots per token the router routes the call with"""
    if cfg["router"] == "moge":
        return max(1, cfg["k_eff"] // cfg["n_group"]) * cfg["n_group"]
    return cfg["k_eff"]


def reference(cfg, z_in, bias, g, G, gcounts_extra):
    """float64 autograd reference: outputs and gradients as the tool writes them"""
    T, E, k = cfg["T"], cfg["E"], call_k(cfg)
    z = z_in.clone().double().requires_grad_(True)
    rt = ROUTERS[cfg["router"]](z, cfg, bias.double())
    tok, expert, w, P = rt["token"], rt["expert"].clone(), rt["weight"], rt["probs"]
    scale = None
    if cfg["router_scale"]:  # w * s[expert] on the slots with an expert
        scale = torch.tensor(cfg["scale"], dtype=torch.float64, requires_grad=True)
        w = w * torch.where(expert >= 0, scale[expert.clamp(min=0)], torch.ones_like(w))
    n = tok.numel()
    chosen = expert.clone()
    weight0 = w.detach().clone()  # what the forward writes, before the edits
    routed = expert.clone()       # before the edits
    killed = tok == cfg["kill_token"]
    chosen[killed] = -1
    expert[killed] = -1
    expert_after = expert.clone()
    if 0 <= cfg["drop_slot"] < n:
        expert_after[cfg["drop_slot"]] = -1
    live = (expert_after >= 0).double()

    # balancing losses; P as a leaf too, for dLBL/dP and the router's own dL/dP
    Pl = P.detach().clone().requires_grad_(True)
    Pr = P.detach().clone().requires_grad_(True)
    rl_leaf = rt["rloss_of"](Pr) if "rloss_of" in rt else None
    if rl_leaf is not None:
        rl_leaf.backward()
    dprobs_rl = Pr.grad.clone() if Pr.grad is not None else torch.zeros(T, E, dtype=torch.float64)

    def lbl_of(Pt):
        def counts(t0, t1):
            c = torch.zeros(E, dtype=torch.float64)
            sel = (chosen >= 0) & (tok >= t0) & (tok < t1)
            c.index_add_(0, chosen[sel], torch.ones(int(sel.sum()), dtype=torch.float64))
            return c
        if cfg["scope"] == MICRO:
            f = counts(0, T) / (T * k)
            return cfg["aux_coef"] * E * (f * Pt.mean(0)).sum()
        if cfg["scope"] == SEQUENCE:
            L, nseq = cfg["seq_len"], T // cfg["seq_len"]
            tot = 0
            for q in range(nseq):
                f = counts(q * L, (q + 1) * L) / (L * k)
                tot = tot + cfg["aux_coef"] * E * (f * Pt[q * L:(q + 1) * L].mean(0)).sum()
            return tot / nseq
        gc = counts(0, T) + gcounts_extra.double()
        gt = T + cfg["extra_global"]
        f = gc / (gt * k)
        return cfg["aux_coef"] * E * (f * Pt.mean(0)).sum()

    lbl_leaf = lbl_of(Pl)
    if lbl_leaf.requires_grad:
        lbl_leaf.backward()
    dprobs_lbl = Pl.grad.clone() if Pl.grad is not None else torch.zeros(T, E, dtype=torch.float64)
    lbl = lbl_of(P)
    zl = cfg["z_coef"] * (torch.logsumexp(z, dim=-1) ** 2).mean()
    rl = rt["rloss_of"](P) if "rloss_of" in rt else torch.zeros((), dtype=torch.float64)
    total = (g.double()[:n] * live * w).sum() + (G.double() * P).sum() + lbl + zl + rl
    if total.requires_grad:
        total.backward()
    dlogits = z.grad.detach() if z.grad is not None else torch.zeros(T, E, dtype=torch.float64)
    dscale = scale.grad.detach() if scale is not None and scale.grad is not None else torch.zeros(E, dtype=torch.float64)
    return dict(dscale=dscale, token=tok, routed=routed, expert=expert_after, chosen=chosen, weight=weight0, probs=P.detach(),
                lbl=float(lbl), zl=zl.item(), rl=float(rl), tau=rt.get("tau", 0.0), dprobs_lbl=dprobs_lbl,
                dprobs_rl=dprobs_rl, dlogits=dlogits, gap=rt["gap"], n_killed=int(killed.sum()), capacity=rt.get("capacity"))


# ----------------------------------------------------------------------------- I/O
def write_case(path, cfg, z, bias, g, G, gcounts):
    T, E, k, ke = cfg["T"], cfg["E"], cfg["k"], cfg["k_eff"]
    mask = cfg["mask"]
    hdr = [T, E, k, ke, cfg["score"], cfg["topk_softmax"], cfg["norm"], cfg["n_group"], cfg["topk_group"],
           cfg["group_score"], cfg["use_bias"], 1 if mask is not None else 0, cfg["kill_token"], cfg["drop_slot"],
           cfg["scope"], cfg["seq_len"]]
    keys = json.dumps(router_keys(cfg)).encode()
    with open(path, "wb") as f:
        f.write(b"MOERTR\0\0" + struct.pack("<I", 3))
        f.write(struct.pack("<16i", *hdr))
        f.write(struct.pack("<3f", cfg["scaling"], cfg["aux_coef"], cfg["z_coef"]))
        f.write(struct.pack("<qqqI", T + cfg["extra_global"], cfg["step"], cfg["rng_seed"], len(keys)))
        f.write(keys)
        f.write(z.float().contiguous().numpy().tobytes())
        f.write(bias.float().contiguous().numpy().tobytes())
        if mask is not None:
            f.write(bytes(mask))
        if cfg["router_scale"]:
            f.write(struct.pack(f"<{E}f", *cfg["scale"]))
        f.write(struct.pack(f"<{E}q", *gcounts))
        f.write(struct.pack(f"<{T}i", *cfg["ids"]))
        f.write(struct.pack("<I", g.numel()))
        f.write(g.float().contiguous().numpy().tobytes())
        f.write(G.float().contiguous().numpy().tobytes())


def read_out(path, T, E):
    with open(path, "rb") as f:
        b = f.read()
    assert b[:8] == b"MOERTO\0\0" and struct.unpack_from("<I", b, 8)[0] == 3, "bad output header"
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
    for key in ("lbl", "zl", "rl", "tau"):
        out[key] = take("<f8", 1).item()
    out["dprobs_lbl"] = take("<f4", T * E).view(T, E)
    out["dprobs_rl"] = take("<f4", T * E).view(T, E)
    out["dlogits"] = take("<f4", T * E).view(T, E)
    out["dscale"] = take("<f4", E)
    return out


def rel_err(c, ref):
    c, ref = c.double(), ref.double()
    m = ref.abs().max().item() if ref.numel() else 0.0
    d = (c - ref).abs().max().item() if ref.numel() else 0.0
    return d / m if m > 0 else d


def spaced_logits(gen, T, E, spread):
    z = torch.empty(T, E, dtype=torch.float64)
    for t in range(T):
        base = spread * (torch.arange(E, dtype=torch.float64) / E - 0.5)
        z[t] = base[torch.randperm(E, generator=gen)] + 0.01 * torch.rand(E, generator=gen, dtype=torch.float64)
    return z.float()


def draw_logits(gen, cfg):
    """spaced: every token a permutation of E evenly spaced levels (clear per-token ranks, for the
    token-choice routers); normal: N(0, scale^2) (varied masses and columns: expert choice ranks
    tokens, top-p's counts and EvoMoE's soft gate need them)"""
    T, E = cfg["T"], cfg["E"]
    if cfg["logits"] == "spaced":
        return spaced_logits(gen, T, E, 8.0)
    scale = float(cfg["logits"].split(":")[1])
    return (scale * torch.randn(T, E, generator=gen, dtype=torch.float64)).float()


# ----------------------------------------------------------------------------- cases
MASK8 = [1, 1, 0, 1, 1, 0, 1, 1]
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
    # expert choice (§6): no LBL by default, the z-loss; then with a mask and the shared LBL on its counts
    ("expert choice c=2 (z-loss only, scale 1.5)",
     base_cfg(router="expert_choice", E=8, k=2, ec_capacity=2.0, aux_coef=0.0, z_coef=0.05, scaling=1.5,
              logits="normal:2"),
     [dict(ec_capacity=1.0), dict(scaling=1.0)]),
    ("expert choice c=1.3 (C = ceil 2.6), mask, LBL, seq scope",
     base_cfg(router="expert_choice", E=8, k=2, ec_capacity=1.3, mask=MASK8, scope=SEQUENCE, seq_len=8,
              logits="normal:2"),
     [dict(mask=None), dict(ec_capacity=2.5), dict(scope=MICRO)]),
    # dynamic top-p (§8): uncapped (k = E) and capped with a mask; entropy loss, LBL on dynamic counts
    ("top-p 0.5 uncapped, entropy, LBL", base_cfg(router="topp", E=8, k=8, top_p=0.5, entropy_coef=0.05,
                                                  logits="normal:1.25"),
     [dict(top_p=0.3), dict(top_p=0.7)]),
    ("top-p 0.7 capped at 3 of 4, mask, scale 2", base_cfg(router="topp", E=8, k=4, k_eff=3, top_p=0.7,
                                                           entropy_coef=0.02, mask=MASK8, scaling=2.0,
                                                           logits="normal:1"),
     [dict(k_eff=4), dict(mask=None), dict(scaling=1.0)]),
    ("top-p 0.9, mask leaves 3 experts (mass below p: all kept)",
     base_cfg(router="topp", E=8, k=8, top_p=0.9, entropy_coef=0.01, mask=[0, 1, 0, 0, 1, 0, 1, 0], logits="normal:1"),
     [dict(mask=None)]),
    # MoGE (§11): top-(k/G) inside every group
    ("moge 4 groups of 4, one each", base_cfg(router="moge", E=16, k=4, n_group=4), [dict(n_group=1),
                                                                                    dict(n_group=2)]),
    ("moge 2 groups, k override 1 (one per group), mask, scale 2",
     base_cfg(router="moge", E=8, k=4, k_eff=1, n_group=2, mask=[1, 0, 1, 0, 0, 0, 0, 1], scaling=2.0),
     [dict(k_eff=4), dict(mask=None)]),
    ("moge router_scale, 4 groups of 4 (Pangu: w = P * router_scale[e])",
     base_cfg(router="moge", E=16, k=4, n_group=4, router_scale=1), [dict(router_scale=0)]),
    ("moge router_scale, k override 1 below 2 groups (LBL k = 2 slots), seq LBL",
     base_cfg(router="moge", E=8, k=4, k_eff=1, n_group=2, router_scale=1, scope=SEQUENCE, seq_len=4),
     [dict(router_scale=0), dict(k_eff=4)]),
    ("topk renorm + router_scale, k override 2 of 3", base_cfg(E=8, k=3, k_eff=2, norm=1, router_scale=1),
     [dict(router_scale=0), dict(k_eff=3)]),
    ("moge 2 groups, two each, scale 1.25, global LBL",
     base_cfg(router="moge", E=16, k=4, n_group=2, scaling=1.25, scope=GLOBAL, extra_global=48),
     [dict(n_group=4), dict(scaling=1.0), dict(scope=MICRO)]),
    # EvoMoE (§13): Gumbel noise from the seed-reproducible stream; tau schedules; serving rule
    ("evomoe hard Gumbel top-1", base_cfg(router="evomoe", E=8, k=1, rng_seed=12345, step=5, logits="normal:1"),
     [dict(rng_seed=54321), dict(rng_seed=-1)]),
    ("evomoe hard Gumbel top-1, mask", base_cfg(router="evomoe", E=8, k=1, rng_seed=31337, step=3, mask=MASK8,
                                                 logits="normal:1"),
     [dict(mask=None)]),
    ("evomoe soft phase, exp schedule", base_cfg(router="evomoe", E=8, k=1, rng_seed=777, tau_max=2.0, tau_min=0.3,
                                                 tau_steps=200, step=50, hard_after=300, logits="normal:4"),
     [dict(step=150), dict(tau_linear=1), dict(hard_after=-1), dict(rng_seed=778)]),
    ("evomoe soft phase, linear schedule at tau_min, mask",
     base_cfg(router="evomoe", E=8, k=1, rng_seed=4242, tau_max=2.0, tau_min=0.5, tau_steps=100, tau_linear=1,
              step=150, hard_after=300, mask=MASK8, scaling=1.5, logits="normal:1"),
     [dict(tau_min=1.5), dict(mask=None)]),
    ("evomoe serving (no stream): top-2 of P", base_cfg(router="evomoe", E=8, k=2), [dict(rng_seed=99)]),
    # no router gradient: the table / the draw, weight 1, one-hot P, zero dL/dz
    ("hash seed 7", base_cfg(router="hash", E=8, k=1, aux_coef=0.0, z_coef=0.0, hash_seed=7),
     [dict(hash_seed=8)]),
    ("thor training draw", base_cfg(router="thor", E=8, k=1, aux_coef=0.0, z_coef=0.0, rng_seed=99),
     [dict(rng_seed=101)]),
]


def run_case(res, tool, tmp, idx, name, cfg, ablations):
    T, E = cfg["T"], cfg["E"]
    gen = torch.Generator().manual_seed(1000 + idx)
    cfg = dict(cfg, ids=torch.randint(0, 50000, (T,), generator=gen).tolist())
    # router_scale values away from 1 (a learned scale), exactly representable in fp32
    cfg["scale"] = [f32(0.5 + x) for x in torch.rand(E, generator=gen, dtype=torch.float64).tolist()]
    # find inputs with no near-tie in any decision
    for attempt in range(50):
        z = draw_logits(gen, cfg)
        bias = 0.3 * (torch.rand(E, generator=gen) - 0.5) if cfg["use_bias"] else torch.zeros(E)
        g = torch.randn(T * E, generator=gen)  # >= any router's slots; the first n_slots are used
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
    write_case(path_in, cfg, z, bias, g, G, gextra.tolist())
    p = subprocess.run([tool, path_in, path_out], capture_output=True, text=True, timeout=RUN_TIMEOUT)
    if not res.check(p.returncode == 0, f"{name}: tool ran", p.stderr.strip()):
        return
    out = read_out(path_out, T, E)

    n = ref["token"].numel()
    per_tok = torch.bincount(ref["token"][ref["routed"] >= 0], minlength=T)
    if res.check(out["token"].numel() == n, f"{name}: slot count",
                 f"C {out['token'].numel()} torch {n}; experts per token {per_tok.min().item()}..{per_tok.max().item()}"):
        routed = ref["routed"] >= 0  # a slot without an expert has no token to compare
        res.check(torch.equal(out["token"].long()[routed], ref["token"].long()[routed]), f"{name}: slot tokens")
        # the tool reports expert/chosen after the edits (kill, drop)
        res.check(torch.equal(out["expert"].long(), ref["expert"].long()), f"{name}: experts",
                  f"C {out['expert'][:8].tolist()} torch {ref['expert'][:8].tolist()}")
        res.check(torch.equal(out["chosen"].long(), ref["chosen"].long()), f"{name}: choices")
        e = rel_err(out["weight"], ref["weight"])
        res.check(e <= REL_TOL, f"{name}: weight", f"max rel err {e:.2e} (tol {REL_TOL:g})")
    for key in ("probs", "dprobs_lbl", "dprobs_rl", "dlogits", "dscale"):
        e = rel_err(out[key], ref[key])
        res.check(e <= REL_TOL, f"{name}: {key}", f"max rel err {e:.2e} (tol {REL_TOL:g})")
    for key in ("lbl", "zl", "rl", "tau"):
        e = abs(out[key] - ref[key]) / max(abs(ref[key]), 1e-30)
        res.check(e <= REL_TOL, f"{name}: {key}", f"C {out[key]:.9g} torch {ref[key]:.9g} rel {e:.1e}")
    res.check(ref["n_killed"] >= 1, f"{name}: has a zero-expert token", f"{ref['n_killed']} slots emptied")
    if ref["capacity"] is not None:  # expert choice: every expert's load is exactly C (§6's test)
        C = ref["capacity"]
        res.check(n == E * C, f"{name}: E*C slots", f"{n} slots, C = {C}")

    # ablations: removing the case's feature (or a loss) must move a compared tensor
    abl = list(ablations)
    for coef in ("aux_coef", "z_coef", "entropy_coef"):
        if cfg[coef] != 0:
            abl.append({coef: 0.0})
    for a in abl:
        c2 = dict(cfg)
        c2.update(a)
        c2["k_eff"] = min(c2["k_eff"], c2["k"])
        r2 = reference(c2, z, bias, g, G, gextra)
        if r2["routed"].shape != ref["routed"].shape or not torch.equal(r2["routed"], ref["routed"]):
            moved = math.inf  # a different selection: experts are compared exactly
        else:
            moved = 0.0
            for key in ("weight", "probs", "dlogits", "dscale"):
                moved = max(moved, rel_err(r2[key], ref[key]))
            for key in ("lbl", "rl"):
                moved = max(moved, abs(r2[key] - ref[key]) / max(abs(ref[key]), 1e-30))
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
    # every registry router has a reference and a case (a new router fails here until it has both)
    p = subprocess.run([tool, "--routers"], capture_output=True, text=True, timeout=RUN_TIMEOUT)
    registry = set(p.stdout.split()) if p.returncode == 0 else set()
    covered = {cfg["router"] for _, cfg, _ in CASES}
    res.check(bool(registry) and covered == set(ROUTERS) == registry, "every registry router has a case",
              f"registry {sorted(registry)}, references {sorted(ROUTERS)}, cases {sorted(covered)}")
    torch.manual_seed(0)
    with tempfile.TemporaryDirectory() as tmp:
        for i, (name, cfg, abl) in enumerate(CASES):
            run_case(res, tool, tmp, i, name, cfg, abl)
    print(f"{res.passed} passed, {res.failed} failed")
    sys.exit(1 if res.failed else 0)


if __name__ == "__main__":
    main()
