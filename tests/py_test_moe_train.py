#!/usr/bin/env python3
"""py_test_moe_train.py - the training MoE layer (src/moe/moe_train.*) against PyTorch autograd.

Run by ctest from the repo root:
    <python> tests/py_test_moe_train.py --moec <moec binary> --build-dir <build dir>

For each case, PyTorch (float32, autograd) computes the MoE block exactly as Hugging Face's
Mixtral / Qwen2-MoE / OLMoE blocks do (router linear, softmax in float32 over all experts,
torch.topk, optional renormalisation, a loop over experts with index_add_, the Qwen2-MoE
shared expert with its sigmoid gate), plus
    L_aux = aux_coef * E * sum_i f_i P_i,  f_i = count_i / (T k) (Megatron normalisation),
                                           P_i = mean_t softmax(z)_t,i
    L_z   = z_coef * mean_t logsumexp(z_t)^2,
and the gradients of total = sum(y * G) + L_aux + L_z for a random G. It writes inputs,
outputs and every gradient to a versioned binary file (format in tests/tool_moe_train.c), and
<build-dir>/tool_moe_train recomputes and compares: per tensor
    max|moec - torch| <= 1e-4 * max|torch|
(an all-zero torch tensor, e.g. the gradients of an expert with no token, must be exactly zero).

Cases: Mixtral-like (E=8, k=2, renorm), Qwen2-MoE-like (E=8, k=4, no renorm, shared expert),
OLMoE-like (E=16, k=4, no renorm), a forced case where expert 0 gets every token and expert 7
none, and a perfectly balanced case (cyclically shifted logits: every expert gets T*k/E tokens
and every mean probability is 1/E) where L_aux must equal aux_coef. Separately, all-zero
router logits must give L_aux = aux_coef and L_z = z_coef * (ln E)^2 (MOE_SPECS §1 test), in
torch and in moec (1e-6 relative).

Each reference is sanity-checked first, so a C implementation missing a feature cannot pass:
no near-tie in any top-k decision (gap >= 1e-4 between the k-th and (k+1)-th logit), and the
aux loss, the z-loss, the renormalisation and the shared
expert each move the gradients (or outputs) by more than 100x the tolerance.
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
import torch.nn.functional as F

REL_TOL = 1e-4          # per tensor, enforced by tool_moe_train (REL_TOL there)
CLOSED_FORM_TOL = 1e-6  # relative, L_aux = aux_coef and L_z = z_coef (ln E)^2 at zero logits
BALANCED_TOL = 1e-5     # relative, L_aux = aux_coef at perfect balance (softmax sums round)
MIN_GAP = 1e-4          # min k-th minus (k+1)-th logit over tokens: ~100x the fp32 logit error
                        # (|z| <~ 10, d <= 64), so torch and moec select the same experts
ABLATION_FACTOR = 100   # a removed feature must move some tensor by > this * REL_TOL
RUN_TIMEOUT = 60


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


# ----------------------------------------------------------------------------- reference
def hf_moe(x, P, cfg, renorm=None, aux_on=True, z_on=True, shared_on=True):
    """Hugging Face MoE block (Mixtral/Qwen2-MoE/OLMoE style) plus the two router losses.
    Returns y, aux, z, counts. The keyword switches exist only for the ablation checks."""
    T, d = x.shape
    E, k = cfg["E"], cfg["k"]
    renorm = cfg["renorm"] if renorm is None else renorm
    router_logits = F.linear(x, P["router"])
    routing_weights = F.softmax(router_logits, dim=1, dtype=torch.float)
    routing_weights, selected = torch.topk(routing_weights, k, dim=-1)
    if renorm:
        routing_weights = routing_weights / routing_weights.sum(dim=-1, keepdim=True)
    y = torch.zeros_like(x)
    expert_mask = F.one_hot(selected, num_classes=E).permute(2, 1, 0)
    for e in range(E):
        idx, top_x = torch.where(expert_mask[e])
        cur = x[top_x]
        h = F.silu(F.linear(cur, P[f"gate.{e}"])) * F.linear(cur, P[f"up.{e}"])
        out = F.linear(h, P[f"down.{e}"]) * routing_weights[top_x, idx, None]
        y = y.index_add(0, top_x, out)
    if cfg["ffs"] and shared_on:
        sh = F.linear(F.silu(F.linear(x, P["sh_gate"])) * F.linear(x, P["sh_up"]), P["sh_down"])
        y = y + torch.sigmoid(F.linear(x, P["sh_gate_w"])) * sh
    counts = torch.bincount(selected.reshape(-1), minlength=E)
    # Megatron normalisation: f_i = count_i / (T k), no gradient through f
    f = counts.to(torch.float32) / (T * k)
    Pm = F.softmax(router_logits, dim=1, dtype=torch.float).mean(dim=0)
    aux = cfg["aux"] * E * torch.sum(f * Pm) if aux_on else torch.zeros(())
    z = cfg["zc"] * torch.mean(torch.logsumexp(router_logits, dim=-1) ** 2) if z_on else torch.zeros(())
    return y, aux, z, counts


def make_params(cfg, gen):
    E, d, ff, ffs = cfg["E"], cfg["d"], cfg["ff"], cfg["ffs"]
    r = lambda *s: torch.randn(*s, generator=gen, dtype=torch.float32)  # noqa: E731
    P = {"router": r(E, d) * (2.0 / math.sqrt(d))}
    for e in range(E):
        P[f"gate.{e}"] = r(ff, d) / math.sqrt(d)
        P[f"up.{e}"] = r(ff, d) / math.sqrt(d)
        P[f"down.{e}"] = r(d, ff) / math.sqrt(ff)
    if ffs:
        P["sh_gate"] = r(ffs, d) / math.sqrt(d)
        P["sh_up"] = r(ffs, d) / math.sqrt(d)
        P["sh_down"] = r(d, ffs) / math.sqrt(ffs)
        P["sh_gate_w"] = r(1, d) / math.sqrt(d)
    return P


def run_ref(x, P, G, cfg, **kw):
    """Forward + backward of total = sum(y*G) + aux + z; returns outputs and gradients."""
    xs = x.clone().requires_grad_(True)
    Ps = {n: t.clone().requires_grad_(True) for n, t in P.items()}
    y, aux, z, counts = hf_moe(xs, Ps, cfg, **kw)
    total = torch.sum(y * G) + aux + z
    total.backward()
    grads = {"x": xs.grad.clone()}
    for n, t in Ps.items():
        grads[n] = t.grad.clone() if t.grad is not None else torch.zeros_like(t)
    return y.detach(), aux.detach(), z.detach(), counts, grads


def topk_gap(x, P, k):
    """min over tokens of the gap between the k-th and (k+1)-th router logit (= log-prob gap)"""
    z = F.linear(x.double(), P["router"].double())
    s = torch.sort(z, dim=-1, descending=True).values
    if k >= s.shape[1]:
        return float("inf")
    return float(torch.min(s[:, k - 1] - s[:, k]))


def rel_change(a, b):
    """max over tensors of max|a - b| / max|a|"""
    worst = 0.0
    for n in a:
        m = float(a[n].abs().max())
        if m > 0:
            worst = max(worst, float((a[n] - b[n]).abs().max()) / m)
    return worst


# ----------------------------------------------------------------------------- file
def write_case(path, cfg, T, x, G, P, ref=None):
    """ref: (y, aux, z, counts, grads) or None (inputs only: the C side still reports losses)."""
    tensors = [("in.x", x), ("in.dy", G)]
    tensors += [("in." + n, t) for n, t in P.items()]
    full = 0
    if ref is not None:
        y, aux, z, counts, grads = ref
        full = 1
        tensors += [("ref.y", y), ("ref.aux", aux.reshape(1)), ("ref.z", z.reshape(1)),
                    ("ref.counts", counts.to(torch.float32)), ("ref.d_x", grads["x"])]
        tensors += [("ref.d_" + n, grads[n]) for n in P]
    with open(path, "wb") as f:
        f.write(b"MOETRN\0\0")
        f.write(struct.pack("<I", 1))
        f.write(struct.pack("<7i", T, cfg["d"], cfg["E"], cfg["k"], cfg["ff"], cfg["ffs"], cfg["renorm"]))
        f.write(struct.pack("<2f", cfg["aux"], cfg["zc"]))
        f.write(struct.pack("<II", full, len(tensors)))
        for name, t in tensors:
            t = t.detach().to(torch.float32).contiguous()
            nb = name.encode()
            f.write(struct.pack("<I", len(nb)) + nb)
            f.write(struct.pack("<I", t.dim()))
            for s in t.shape:
                f.write(struct.pack("<q", s))
            f.write(t.numpy().astype("<f4").tobytes())


def run_tool(tool, path):
    p = subprocess.run([tool, path], capture_output=True, text=True, timeout=RUN_TIMEOUT)
    losses = None
    for line in p.stdout.splitlines():
        if line.startswith("losses:"):
            w = line.split()
            losses = (float(w[2]), float(w[4]))
    return p.returncode, p.stdout + p.stderr, losses


# ----------------------------------------------------------------------------- cases
CASES = [
    # name, cfg, T, seed
    ("mixtral", dict(d=32, E=8, k=2, ff=48, ffs=0, renorm=1, aux=2.0, zc=0.1), 32, 1),
    ("qwen2_moe", dict(d=48, E=8, k=4, ff=64, ffs=80, renorm=0, aux=2.0, zc=0.1), 40, 2),
    ("olmoe", dict(d=64, E=16, k=4, ff=96, ffs=0, renorm=0, aux=2.0, zc=0.1), 24, 3),
    ("all_and_none", dict(d=32, E=8, k=2, ff=48, ffs=0, renorm=1, aux=2.0, zc=0.1), 32, 4),
    ("balanced", dict(d=32, E=8, k=2, ff=48, ffs=0, renorm=0, aux=2.0, zc=0.1), 32, 5),
]


def build_inputs(name, cfg, T, seed):
    gen = torch.Generator().manual_seed(seed)
    P = make_params(cfg, gen)
    x = torch.randn(T, cfg["d"], generator=gen, dtype=torch.float32)
    # G scaled down so that the aux and z terms weigh visibly in the router gradient
    G = 0.25 * torch.randn(T, cfg["d"], generator=gen, dtype=torch.float32)
    if name == "all_and_none":
        # a bias direction: x[:, 0] = 1 for every token; router row 0 strongly likes it (expert 0
        # wins every token), row 7 strongly dislikes it (expert 7 never gets a token)
        x[:, 0] = 1.0
        P["router"][:, 0] = 0.0
        P["router"][0, 0] = 8.0
        P["router"][7, 0] = -8.0
    if name == "balanced":
        # logits of token t = the fixed vector v shifted cyclically by t: every expert is
        # selected by T*k/E tokens, and each expert's mean probability is exactly 1/E
        E, d = cfg["E"], cfg["d"]
        v = torch.tensor([2.0, 1.0, 0.25, -0.5, 0.75, -1.0, 0.5, -0.25])[:E]
        P["router"].zero_()
        P["router"][:, :E] = torch.eye(E)
        for t in range(T):
            x[t, :E] = torch.roll(v, t)
    return x, G, P


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--moec", help="moec binary (unused; ctest passes it)")
    ap.add_argument("--build-dir", required=True)
    args = ap.parse_args()
    tool = os.path.join(args.build_dir, "tool_moe_train")
    R = Results()
    if not R.check(os.path.exists(tool), "tool_moe_train built", tool):
        print(f"{R.passed} passed, {R.failed} failed")
        return 1
    torch.set_num_threads(1)
    tmp = tempfile.mkdtemp(prefix="moe_train_")

    for name, cfg, T, seed in CASES:
        x, G, P = build_inputs(name, cfg, T, seed)
        ref = run_ref(x, P, G, cfg)
        y, aux, z, counts, grads = ref
        # --- the reference is a useful test
        R.check(topk_gap(x, P, cfg["k"]) >= MIN_GAP, f"{name}: no near-tie in top-k",
                f"min logit gap {topk_gap(x, P, cfg['k']):.3g}")
        R.check(int((counts > 0).sum()) >= min(cfg["E"], 3), f"{name}: routing spreads over experts",
                f"counts {counts.tolist()}")
        ablations = {"z-loss": dict(z_on=False), "renorm": dict(renorm=1 - cfg["renorm"])}
        if name != "balanced":  # at perfect balance dL_aux/dp is the same for every expert and
            ablations["aux loss"] = dict(aux_on=False)  # the softmax backward maps it to zero
        if cfg["ffs"]:
            ablations["shared expert"] = dict(shared_on=False)
        for what, kw in ablations.items():
            ya, _, _, _, ga = run_ref(x, P, G, cfg, **kw)
            moved = max(rel_change(grads, ga), rel_change({"y": y}, {"y": ya}))
            R.check(moved > ABLATION_FACTOR * REL_TOL,
                    f"{name}: removing {what} moves the reference", f"by {moved:.3g}")
        if name == "all_and_none":
            R.check(int(counts[0]) == T and int(counts[7]) == 0, f"{name}: expert 0 has every token, 7 none",
                    f"counts {counts.tolist()}")
            R.check(all(float(grads[f"{m}.7"].abs().max()) == 0 for m in ("gate", "up", "down")),
                    f"{name}: torch gives expert 7 zero gradients")
        if name == "balanced":
            bal = T * cfg["k"] // cfg["E"]
            R.check(all(int(c) == bal for c in counts), f"{name}: every expert gets {bal} tokens",
                    f"counts {counts.tolist()}")
            R.check(abs(float(aux) - cfg["aux"]) <= BALANCED_TOL * cfg["aux"],
                    f"{name}: torch L_aux = aux_coef at perfect balance", f"{float(aux):.9g}")
        # --- moec against it
        path = os.path.join(tmp, f"{name}.bin")
        write_case(path, cfg, T, x, G, P, ref)
        rc, out, losses = run_tool(tool, path)
        print("\n".join("    " + line for line in out.strip().splitlines()))
        R.check(rc == 0, f"{name}: moec matches torch (rel <= {REL_TOL:g} per tensor)", f"tool exit {rc}")
        if name == "balanced" and losses:
            R.check(abs(losses[0] - cfg["aux"]) <= BALANCED_TOL * cfg["aux"],
                    f"{name}: moec L_aux = aux_coef at perfect balance", f"{losses[0]:.9g}")

    # --- zero router logits: L_aux = aux_coef, L_z = z_coef (ln E)^2, whatever the tie-breaking
    for E, k in ((8, 2), (16, 4)):
        cfg = dict(d=32, E=E, k=k, ff=48, ffs=0, renorm=1, aux=0.01, zc=0.001)
        T = 32
        gen = torch.Generator().manual_seed(100 + E)
        P = make_params(cfg, gen)
        P["router"].zero_()
        x = torch.randn(T, cfg["d"], generator=gen)
        G = torch.randn(T, cfg["d"], generator=gen)
        y, aux, z, counts = hf_moe(x, P, cfg)
        want_aux, want_z = cfg["aux"], cfg["zc"] * math.log(E) ** 2
        R.check(abs(float(aux) - want_aux) <= CLOSED_FORM_TOL * want_aux,
                f"zero logits E={E}: torch L_aux = aux_coef", f"{float(aux):.9g}")
        R.check(abs(float(z) - want_z) <= CLOSED_FORM_TOL * want_z,
                f"zero logits E={E}: torch L_z = z_coef (ln E)^2", f"{float(z):.9g} vs {want_z:.9g}")
        # HF normalisation is k times larger: sanity of the documented relation
        hf = E * torch.sum(counts.float() / T * F.softmax(F.linear(x, P["router"]), 1).mean(0)) * cfg["aux"]
        R.check(abs(float(hf) - k * want_aux) <= CLOSED_FORM_TOL * k * want_aux,
                f"zero logits E={E}: HF-normalised value = k * aux_coef", f"{float(hf):.9g}")
        # inputs only: torch.topk's tie order is unspecified, so y is not compared here
        path = os.path.join(tmp, f"zero_{E}.bin")
        write_case(path, cfg, T, x, G, P, None)
        rc, out, losses = run_tool(tool, path)
        R.check(rc == 0 and losses is not None, f"zero logits E={E}: tool ran",
                f"exit {rc}" + ("" if rc == 0 else ": " + out.strip()[-300:]))
        if losses:
            R.check(abs(losses[0] - want_aux) <= CLOSED_FORM_TOL * want_aux,
                    f"zero logits E={E}: moec L_aux = aux_coef", f"{losses[0]:.9g}")
            R.check(abs(losses[1] - want_z) <= CLOSED_FORM_TOL * want_z,
                    f"zero logits E={E}: moec L_z = z_coef (ln E)^2", f"{losses[1]:.9g} vs {want_z:.9g}")

    # --- the comparison can fail: a corrupted reference gradient must be rejected
    name, cfg, T, seed = CASES[0]
    x, G, P = build_inputs(name, cfg, T, seed)
    y, aux, z, counts, grads = run_ref(x, P, G, cfg)
    grads["router"] = grads["router"].clone()
    grads["router"][3, 5] += 10 * REL_TOL * float(grads["router"].abs().max())
    path = os.path.join(tmp, "corrupt.bin")
    write_case(path, cfg, T, x, G, P, (y, aux, z, counts, grads))
    rc, out, _ = run_tool(tool, path)
    R.check(rc != 0 and "FAIL ref.d_router" in out, "a corrupted reference gradient is rejected")

    for f in os.listdir(tmp):
        os.remove(os.path.join(tmp, f))
    os.rmdir(tmp)
    print(f"{R.passed} passed, {R.failed} failed")
    return 1 if R.failed else 0


if __name__ == "__main__":
    sys.exit(main())
