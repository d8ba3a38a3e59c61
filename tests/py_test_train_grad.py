#!/usr/bin/env python3
"""py_test_train_grad.py - whole-model gradients of moec's trainer against PyTorch autograd.

For the tiny checkpoints of every architecture (tests/ref/make_tiny.py, olmoe_f32 with clip_qkv
active among them), a micro-batch of B=2 sequences of S=12 tokens is run
through moec's training forward + backward (tests/tool_train_grad.c) and through the
independent PyTorch reference (tests/ref/torch_ref.py, fp32 weights with requires_grad) with
    loss = mean CE over the B*S next-token targets
         + sum over MoE layers of  aux_coef * E * sum_i f_i P_i     (f_i = count_i / (T k), no grad)
                                 + z_coef * mean_t logsumexp(z_t)^2
where T = B*S tokens of the micro-batch; then, for the first LS_MODELS models, the same step
with label smoothing eps = LS (moec_tmodel_set_label_smoothing) against
torch.nn.functional.cross_entropy(label_smoothing=LS), whose CE term and gradients must match too
(and the gradients differ from the unsmoothed ones by > 100x REL, so the check can fail). Requirements (fp32 throughout):
  |loss terms moec - torch| <= 1e-5 relative;
  per tensor, max|g_moec - g_torch| <= 1e-4 * max|g_torch| (+1e-9 for tensors whose gradient is 0).
Then every model again with bf16 products (MOEC_TEST_MATMUL=bf16: moec train --matmul bf16)
against the reference doing the same (torch_ref.BF16_LINEAR: operands of every linear layer
but the routers, and of attention's Q Kᵀ and P V, rounded to bf16, forward and backward, sums
in fp32; against the fp32 reference a routing decision or a clip_qkv clamp that flips moves one
expert's gradient wholesale, and without the attention rounding 6 of the 7 models fail): loss
terms within LOSS_BF16 relative, each tensor within REL_BF16 of max|g_torch|, all gradients as
one vector within GLOBAL_BF16 (measured: <= 0.84e-2 per tensor but qwen3_moe_sharded's 1.5e-2,
whose loss moves by 1.4e-4 (a discrete flip); mixtral_f16 3e-6; <= 0.5e-2 as one vector), and
more than 10 REL from fp32's gradients (so the bf16 path really ran; measured 0.5-4e-2); and the
bf16 step gives the same bits at 1 and 3 threads.
Ends with `N passed, M failed`; exits 1 on any failure."""
import argparse
import os
import subprocess
import sys

import numpy as np
import torch
from safetensors.numpy import load_file

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "ref"))
import make_tiny  # noqa: E402
import torch_ref  # noqa: E402

B, S = 2, 12
AUX, ZC = 0.01, 0.001
REL = 1e-4
LOSS_BF16, REL_BF16, GLOBAL_BF16 = 1e-3, 2e-2, 1e-2
LS, LS_MODELS = 0.1, 3
passed = failed = 0


def check(ok, label, detail=""):
    global passed, failed
    passed += bool(ok)
    failed += not ok
    print(f"{'PASS' if ok else 'FAIL'} {label} {detail}")


def torch_grads(d, tokens, eps=0.0, bf16=False):
    torch_ref.BF16_LINEAR = bf16
    cfg = torch_ref.load_config(d)
    weights = {k: v.clone().requires_grad_(True) for k, v in torch_ref.load_weights(d).items()}
    ref = torch_ref.Reference(cfg, weights)
    fwd = torch_ref.Reference.forward.__wrapped__   # the undecorated forward (it is @no_grad)
    ce_sum, router = 0.0, None
    with torch.enable_grad():
        for b in range(B):
            seq = tokens[b]
            logits = fwd(ref, seq[:S])
            ce_sum = ce_sum + torch.nn.functional.cross_entropy(logits, torch.tensor(seq[1:]), reduction="sum",
                                                                label_smoothing=eps)
            rl = ref.stats.get("router_logits", [])
            router = list(rl) if router is None else [torch.cat([a, x]) for a, x in zip(router, rl)]
        ce = ce_sum / (B * S)
        aux = torch.zeros(())
        zl = torch.zeros(())
        k = ref.topk
        for z in router:
            T = z.shape[0]
            p = torch.softmax(z, dim=-1)
            sel = torch.topk(p, k, dim=-1).indices
            f = torch.bincount(sel.flatten(), minlength=ref.E).float() / (T * k)
            aux = aux + AUX * ref.E * (f * p.mean(0)).sum()
            zl = zl + ZC * (torch.logsumexp(z, dim=-1) ** 2).mean()
        (ce + aux + zl).backward()
    return float(ce), float(aux), float(zl), {k: v.grad.numpy() if v.grad is not None else np.zeros(v.shape, np.float32)
                                              for k, v in weights.items()}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--moec", required=True)
    ap.add_argument("--build-dir", required=True)
    args = ap.parse_args()
    torch.manual_seed(0)
    torch.set_num_threads(1)
    root = os.path.join(os.path.abspath(args.build_dir), "train_grad_models")
    tool = os.path.join(os.path.abspath(args.build_dir), "tool_train_grad")
    os.makedirs(root, exist_ok=True)
    for idx, name in enumerate(make_tiny.MODELS):
        make_tiny.write_model(name, root)
        d = os.path.join(root, name)
        V = torch_ref.load_config(d)["vocab_size"]
        rng = np.random.default_rng(7)
        tokens = rng.integers(0, V, size=(B, S + 1)).tolist()
        out = os.path.join(root, f"{name}.grads.safetensors")
        for eps in (0.0, LS) if idx < LS_MODELS else (0.0,):
            compare(tool, d, name, tokens, out, eps)
        compare(tool, d, name, tokens, out, 0.0, bf16=True)
        same_bits_any_threads(tool, d, name, tokens, out)
    print(f"{passed} passed, {failed} failed")
    return 1 if failed else 0


def same_bits_any_threads(tool, d, name, tokens, out):
    """The bf16 step at 1 and 3 threads (MOEC_THREADS): the same losses and gradient bytes (the
    bf16 GEMM runs nested inside attention's per-head tasks too)."""
    res = []
    for nt in (1, 3):
        env = dict(os.environ, MOEC_TEST_MATMUL="bf16", MOEC_THREADS=str(nt))
        path = f"{out}.t{nt}"
        r = subprocess.run([tool, d, str(B), str(S), str(AUX), str(ZC), ",".join(str(t) for row in tokens for t in row),
                            path], capture_output=True, text=True, timeout=300, env=env)
        if r.returncode != 0:
            check(False, f"{name} bf16 step at {nt} threads", r.stderr.strip())
            return
        with open(path, "rb") as f:
            res.append((r.stdout, f.read()))
    check(res[0] == res[1], f"{name} bf16: 1 and 3 threads give the same bits",
          "losses " + ("equal" if res[0][0] == res[1][0] else f"{res[0][0].split()} vs {res[1][0].split()}"))


def global_rel(got, want):
    """||got - want|| / ||want|| over all tensors as one vector."""
    num = sum(float(((got[k].astype(np.float64) - g) ** 2).sum()) for k, g in want.items() if k in got)
    den = sum(float((g.astype(np.float64) ** 2).sum()) for g in want.values())
    return float(np.sqrt(num / den))


def compare(tool, d, name, tokens, out, eps, bf16=False):
    if eps:
        name = f"{name} label smoothing {eps}"
    if bf16:
        name = f"{name} bf16 matmul"
    rel_tol, loss_tol = (REL_BF16, LOSS_BF16) if bf16 else (REL, 1e-5)
    env = dict(os.environ, MOEC_TEST_MATMUL="bf16" if bf16 else "fp32")
    if True:
        r = subprocess.run([tool, d, str(B), str(S), str(AUX), str(ZC), ",".join(str(t) for row in tokens for t in row),
                            out] + ([str(eps)] if eps else []), capture_output=True, text=True, timeout=300, env=env)
        if r.returncode != 0:
            check(False, f"{name} moec step", r.stderr.strip())
            return
        ce_c, aux_c, z_c = (float(x) for x in r.stdout.split())
        ce_t, aux_t, z_t, gt = torch_grads(d, tokens, eps, bf16)
        for label, a, b in (("ce", ce_c, ce_t), ("aux", aux_c, aux_t), ("z", z_c, z_t)):
            check(abs(a - b) <= loss_tol * max(abs(b), 1e-6), f"{name} loss {label}", f"moec {a:.7g} torch {b:.7g}")
        if eps:   # smoothing is visible: the plain CE's gradients are far from the smoothed ones
            g0 = torch_grads(d, tokens)[3]
            moved = max(float(np.abs(g0[k] - gt[k]).max() / max(np.abs(gt[k]).max(), 1e-30)) for k in gt)
            check(moved > 100 * REL, f"{name}: the gradients differ from the plain CE's", f"by {moved:.2e} rel")
        gc = load_file(out)
        worst, worst_name = 0.0, ""
        bad = []
        for k, g in gt.items():
            c = gc.get(k)
            if c is None or c.shape != g.shape:
                bad.append(f"{k}: missing or wrong shape")
                continue
            scale = float(np.abs(g).max())
            err = float(np.abs(c.astype(np.float64) - g).max())
            rel = err / scale if scale > 0 else err / 1e-9
            if rel > worst:
                worst, worst_name = rel, k
            if rel > rel_tol:
                bad.append(f"{k}: rel {rel:.2e}")
        check(not bad and len(gc) == len(gt), f"{name} gradients ({len(gt)} tensors)",
              f"worst rel {worst:.2e} ({worst_name})" + (f"; {bad[:4]}" if bad else ""))
        if bf16:
            g32 = torch_grads(d, tokens, eps)[3]
            to_ref, to_fp32 = global_rel(gc, gt), global_rel(gc, g32)
            check(to_ref <= GLOBAL_BF16, f"{name}: all gradients as one vector",
                  f"rel {to_ref:.2e} to the bf16 reference (<= {GLOBAL_BF16:g})")
            check(to_fp32 > 10 * REL, f"{name}: the bf16 products really ran",
                  f"(rel {to_fp32:.2e} to fp32's gradients > {10 * REL:g})")


if __name__ == "__main__":
    sys.exit(main())
