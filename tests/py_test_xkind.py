#!/usr/bin/env python3
"""py_test_xkind.py - expert kinds (AdaMoE null, MoE++ zero/copy/constant experts) and the
layer-to-layer routing carry (MoE++ gating residual, RMoE GRU router over depth) against the
independent PyTorch reference (tests/ref/torch_ref.py, written from MOE_SPECS 7, 9 and the
addendum for 7; torch.gru_cell is PyTorch's own GRU).

For each case a tiny checkpoint with random fp32 weights is written (tests/ref/make_tiny.py's
tensor list plus this case's tensors), then
  1. `moec logits` (the inference path) == the PyTorch forward, max|d| <= 1e-4 * max|logit|;
  2. one training step of moec's trainer (tests/tool_train_grad.c) == PyTorch autograd of
        loss = mean CE + sum over MoE layers of aux_coef * Er * sum_i f_i P_i + z_coef * mean_t lse(z_t)^2
     (Er = the router width, f_i = count_i / (T k) without gradient, P = softmax(z)): the three loss
     terms to 1e-5 relative, every gradient tensor to max|d| <= 1e-4 * max|g_torch|, and every
     tensor this case adds (gate_map, constant experts, GRU, W1) has a non-zero gradient;
  3. the case's mechanism matters: the reference with it switched off (gate_map zeroed, GRU
     state not carried, null renormalisation off, ...) differs by > 20x the tolerance, so 1. and 2.
     could fail.
Also MOE_SPECS §10's check on moec alone: Chain-of-Experts with C = 1, the outer residual and no
inner one gives exactly the plain MoE block's logits; with the inner residual (from the normalised
input) it does not.
Routing decisions are kept away from ties: the smallest gap between the k-th and (k+1)-th logit
of any token in any layer must be >= 1e-3 (else the weights' seed is advanced).
Ends with `N passed, M failed`; exits 1 on any failure."""
import argparse
import copy
import os
import shutil
import subprocess
import sys
import tempfile

import numpy as np
import torch
from safetensors.numpy import load_file
from safetensors.torch import save_file

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "ref"))
import make_tiny  # noqa: E402
import torch_ref  # noqa: E402
from checks import check, summary  # noqa: E402

B, S = 2, 12
AUX, ZC = 0.01, 0.001
REL = 1e-4
MIN_GAP = 1e-3

BASE = {
    "mixtral": dict(vocab_size=64, hidden_size=32, intermediate_size=24, num_hidden_layers=3,
                    num_attention_heads=4, num_key_value_heads=2, head_dim=8, num_local_experts=4,
                    num_experts_per_tok=2, max_position_embeddings=64, rope_theta=10000.0, rms_norm_eps=1e-5,
                    tie_word_embeddings=False, sliding_window=None),
    "qwen2_moe": dict(vocab_size=64, hidden_size=32, intermediate_size=40, num_hidden_layers=3,
                      num_attention_heads=4, num_key_value_heads=2, num_experts=4, num_experts_per_tok=2,
                      moe_intermediate_size=16, shared_expert_intermediate_size=24, decoder_sparse_step=1,
                      mlp_only_layers=[1], norm_topk_prob=True, max_position_embeddings=64, rope_theta=10000.0,
                      rms_norm_eps=1e-6, tie_word_embeddings=False, use_sliding_window=False),
}

# name, arch, extra config, ablation (config changes or "zero:<substring>" for weights), new-tensor markers
CASES = [
    ("adamoe", "mixtral", {"num_experts_per_tok": 3, "moec_null_experts": 4},
     {"moec_null_renorm": False}, []),
    ("moepp", "mixtral", {"moec_constant_experts": 2, "moec_copy_experts": 1, "moec_null_experts": 1,
                          "moec_gate_residual": True},
     "zero:gate_map", ["gate_map", "constant_experts"]),
    ("moepp-mixtral-gating", "mixtral", {"moec_constant_experts": 2, "moec_copy_experts": 1, "moec_null_experts": 1,
                                         "moec_gate_residual": True, "moec_null_renorm": False,
                                         "moec_topk_softmax": True},
     "zero:gate_map", ["gate_map", "constant_experts"]),
    ("rmoe", "mixtral", {"moec_router_rnn_dim": 8}, "no_carry", ["router_rnn", "gate.proj"]),
    ("rmoe-qwen2-dense-null", "qwen2_moe", {"moec_router_rnn_dim": 8, "moec_null_experts": 2},
     "no_carry", ["router_rnn", "gate.proj"]),
    ("coe", "mixtral", {"moec_coe_iterations": 2}, "zero:gate.iterations", ["gate.iterations"]),
    ("coe-outer-noinner-qwen2", "qwen2_moe", {"moec_coe_iterations": 3, "moec_coe_inner_residual": False,
                                             "moec_coe_outer_residual": True},
     {"moec_coe_outer_residual": False}, ["gate.iterations"]),
    ("coe-shared-gate-null", "mixtral", {"moec_coe_iterations": 2, "moec_coe_shared_gate": True,
                                         "moec_null_experts": 2},
     {"moec_coe_iterations": 1}, []),
    # ReXMoE: 4 layers in 2 groups of 2, each layer's router over 8 shared experts, DeepSeek-style
    # top-k without renormalisation (the paper's gating); the ablation routes each layer over its own
    # experts only (r = 1 on the same expert weights, the layer's own router rows)
    ("rexmoe", "qwen2_moe", {"num_hidden_layers": 4, "mlp_only_layers": [], "norm_topk_prob": False,
                             "moec_rex_reuse_frequency": 2},
     "rex_local", []),
    ("moepp-qwen2-dense", "qwen2_moe", {"moec_copy_experts": 1, "moec_null_experts": 1, "moec_constant_experts": 1,
                                        "moec_gate_residual": True},
     "zero:gate_map", ["gate_map", "constant_experts"]),
]


def make_config(arch, extra):
    cfg = dict(make_tiny.HF_DEFAULTS[arch])
    cfg.update(BASE[arch])
    cfg.update(extra)
    cfg["architectures"] = [make_tiny.ARCHITECTURES[arch]]
    cfg["model_type"] = arch
    cfg["torch_dtype"] = "float32"
    cfg["bos_token_id"] = None
    cfg["eos_token_id"] = 0
    return cfg


def make_weights(cfg, seed):
    """make_tiny's tensors with this case's router width and tensors (names as src/model/tensors.c)."""
    gen = torch.Generator().manual_seed(seed)
    E = cfg.get("num_local_experts", cfg.get("num_experts")) * cfg.get("moec_rex_reuse_frequency", 1)
    Er = E + cfg.get("moec_constant_experts", 0) + cfg.get("moec_copy_experts", 0) + cfg.get("moec_null_experts", 0)
    r, H = cfg.get("moec_router_rnn_dim", 0), cfg["hidden_size"]
    out, first_moe = {}, True
    rnd = lambda shape, std: std * torch.randn(shape, generator=gen)  # noqa: E731
    if r:
        out["model.router_rnn.weight_ih"] = rnd((3 * r, r), 0.5)
        out["model.router_rnn.weight_hh"] = rnd((3 * r, r), 0.5)
        out["model.router_rnn.bias_ih"] = rnd((3 * r,), 0.3)
        out["model.router_rnn.bias_hh"] = rnd((3 * r,), 0.3)
    for name, shape, kind in make_tiny.tensor_shapes(cfg):
        if name.endswith(".gate.weight") and kind == "router":
            p = name[: -len("gate.weight")]
            if r:
                out[p + "gate.proj.weight"] = rnd((r, H), 0.4)
                out[name] = rnd((Er, r), 1.0)
            else:
                # without CoE's inner residual an iteration's input is an MoE output, far smaller than
                # a normalised x: a larger router keeps its routing clear of ties
                out[name] = rnd((Er, H), 0.4 if cfg.get("moec_coe_inner_residual", True) else 4.0)
            if cfg.get("moec_gate_residual") and not first_moe:
                out[p + "gate_map.weight"] = rnd((Er, Er), 0.3)
            first_moe = False
            if not cfg.get("moec_coe_shared_gate"):
                for t in range(1, cfg.get("moec_coe_iterations", 0)):
                    out[p + f"gate.iterations.{t}.weight"] = rnd((Er, H), 0.4 if cfg.get("moec_coe_inner_residual", True) else 40.0)
            for j in range(cfg.get("moec_constant_experts", 0)):
                out[p + f"constant_experts.{j}.weight"] = rnd((2, H), 0.5)
                out[p + f"constant_experts.{j}.v"] = rnd((H,), 1.0)
            continue
        out[name] = make_tiny._init(gen, shape, kind).float()
    return {k: v.contiguous() for k, v in out.items()}


def write_ckpt(d, cfg, weights):
    os.makedirs(d, exist_ok=True)
    import json
    with open(os.path.join(d, "config.json"), "w") as f:
        json.dump(cfg, f, indent=1, sort_keys=True)
    save_file(weights, os.path.join(d, "model.safetensors"))


def ref_forward(cfg, weights, ids, no_carry=False):
    ref = torch_ref.Reference(cfg, {k: v.clone() for k, v in weights.items()})
    if no_carry:  # RMoE ablation: every layer starts from h = 0 (no state over depth)
        orig = ref.router_logits

        def fresh(p, x, it=0):
            ref.carry = None
            return orig(p, x, it)
        ref.router_logits = fresh
    logits = ref.forward(ids)
    return logits.numpy(), ref


def torch_grads(cfg, weights, tokens):
    w = {k: v.clone().requires_grad_(True) for k, v in weights.items()}
    ref = torch_ref.Reference(cfg, w)
    fwd = torch_ref.Reference.forward.__wrapped__   # the undecorated forward (it is @no_grad)
    ce_sum, router = 0.0, None
    with torch.enable_grad():
        for b in range(B):
            seq = tokens[b]
            logits = fwd(ref, seq[:S])
            ce_sum = ce_sum + torch.nn.functional.cross_entropy(logits, torch.tensor(seq[1:]), reduction="sum")
            rl = ref.stats.get("router_logits", [])
            router = list(rl) if router is None else [torch.cat([a, x]) for a, x in zip(router, rl)]
        ce = ce_sum / (B * S)
        aux, zl, k, Er = torch.zeros(()), torch.zeros(()), ref.topk, ref.Er
        for z in router:
            T = z.shape[0]
            p = torch.softmax(z, dim=-1)
            sel = torch.topk(z, k, dim=-1).indices
            f = torch.bincount(sel.flatten(), minlength=Er).float() / (T * k)
            aux = aux + AUX * Er * (f * p.mean(0)).sum()
            zl = zl + ZC * (torch.logsumexp(z, dim=-1) ** 2).mean()
        (ce + aux + zl).backward()
    grads = {k: v.grad.numpy() if v.grad is not None else np.zeros(v.shape, np.float32) for k, v in w.items()}
    return float(ce), float(aux), float(zl), grads


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--moec", required=True)
    ap.add_argument("--build-dir", required=True)
    args = ap.parse_args()
    torch.set_num_threads(1)
    tool = os.path.join(os.path.abspath(args.build_dir), "tool_train_grad")
    root = tempfile.mkdtemp(prefix="moec_xkind_")
    try:
        for name, arch, extra, ablation, markers in CASES:
            cfg = make_config(arch, extra)
            rng = np.random.default_rng(11)
            tokens = rng.integers(1, cfg["vocab_size"], size=(B, S + 1)).tolist()
            ids = tokens[0][:S]
            # weights whose routing is clear of ties on every sequence used here, and where every
            # constant and copy expert of every MoE layer is picked by some token (so each gets a gradient)
            for seed in range(100, 400):
                weights = make_weights(cfg, seed)
                gaps, used = [], None
                for row in tokens:
                    _, ref = ref_forward(cfg, weights, row[:S])
                    gaps.append(ref.stats["min_router_gap"])
                    c = np.array(ref.stats["tokens_per_expert"])
                    used = c if used is None else used + c
                kinds = used[:, ref.Epool:ref.Er - ref.n_null]
                if min(gaps) >= MIN_GAP and (kinds.size == 0 or kinds.min() > 0):
                    break
            check(min(gaps) >= MIN_GAP, f"{name}: routing clear of ties", f"min gap {min(gaps):.2e} (seed {seed})")
            check(kinds.size == 0 or kinds.min() > 0, f"{name}: every constant/copy expert is picked in every layer",
                  f"fewest picks {kinds.min() if kinds.size else '-'}")
            d = os.path.join(root, name)
            write_ckpt(d, cfg, weights)
            # 1. inference
            ref_logits, ref = ref_forward(cfg, weights, ids)
            lo = os.path.join(root, name + ".npy")
            r = subprocess.run([args.moec, "logits", "-m", d, "--ids", ",".join(map(str, ids)), "-o", lo],
                               capture_output=True, text=True, timeout=120)
            if r.returncode != 0:
                check(False, f"{name}: moec logits", r.stderr.strip()[-300:])
                continue
            scale = float(np.abs(ref_logits).max())
            rel = float(np.abs(np.load(lo) - ref_logits).max()) / scale
            check(rel <= REL, f"{name}: moec logits == PyTorch reference", f"rel {rel:.2e}")
            # the kinds are used: some token of some layer picks a zero-computation expert
            E = ref.Epool
            zc = sum(sum(c[E:]) for c in ref.stats["tokens_per_expert"])
            if ref.Er > E:
                check(zc > 0, f"{name}: zero-computation experts are picked", f"{zc} picks")
            if ref.rex > 1:   # every layer routes tokens to experts stored in another layer of its group
                cross = [sum(c) - sum(c[(i % ref.rex) * ref.E:(i % ref.rex + 1) * ref.E])
                         for i, c in zip(ref.stats["moe_layers"], ref.stats["tokens_per_expert"])]
                check(min(cross) > 0, f"{name}: every layer picks experts stored in the other layers of its group",
                      f"cross-layer picks per layer {cross}")
            # 3. the mechanism matters
            if isinstance(ablation, dict):
                alt_cfg, alt_w, nc = dict(cfg, **ablation), weights, False
            elif ablation == "no_carry":
                alt_cfg, alt_w, nc = cfg, weights, True
            elif ablation == "rex_local":   # each layer over its own N experts: its block of router rows
                rr, N = cfg["moec_rex_reuse_frequency"], ref.E
                alt_cfg, nc = dict(cfg, moec_rex_reuse_frequency=1), False
                alt_w = dict(weights)
                for k, v in weights.items():
                    if k.endswith(".gate.weight"):
                        i = int(k.split(".")[2])
                        alt_w[k] = v[(i % rr) * N:(i % rr + 1) * N].clone()
            else:
                sub = ablation.split(":", 1)[1]
                alt_cfg, nc = cfg, False
                alt_w = {k: (torch.zeros_like(v) if sub in k else v) for k, v in weights.items()}
            alt, _ = ref_forward(alt_cfg, alt_w, ids, no_carry=nc)
            moved = float(np.abs(alt - ref_logits).max()) / scale
            check(moved > 20 * REL, f"{name}: ablation {ablation} changes the logits", f"by {moved:.2e} (x max|logit|)")
            # 2. training gradients
            out = os.path.join(root, name + ".grads.safetensors")
            r = subprocess.run([tool, d, str(B), str(S), str(AUX), str(ZC),
                                ",".join(str(t) for row in tokens for t in row), out],
                               capture_output=True, text=True, timeout=120)
            if r.returncode != 0:
                check(False, f"{name}: moec training step", r.stderr.strip()[-300:])
                continue
            ce_c, aux_c, z_c = (float(x) for x in r.stdout.split())
            ce_t, aux_t, z_t, gt = torch_grads(cfg, weights, tokens)
            for label, a, b in (("ce", ce_c, ce_t), ("aux", aux_c, aux_t), ("z", z_c, z_t)):
                check(abs(a - b) <= 1e-5 * max(abs(b), 1e-6), f"{name}: loss {label}", f"moec {a:.7g} torch {b:.7g}")
            gc = load_file(out)
            worst, worst_name, bad = 0.0, "", []
            for k, g in gt.items():
                c = gc.get(k)
                if c is None or c.shape != g.shape:
                    bad.append(f"{k}: missing or wrong shape")
                    continue
                sc = float(np.abs(g).max())
                err = float(np.abs(c.astype(np.float64) - g).max())
                rel = err / sc if sc > 0 else err / 1e-9
                if rel > worst:
                    worst, worst_name = rel, k
                if rel > REL:
                    bad.append(f"{k}: rel {rel:.2e}")
            check(not bad and len(gc) == len(gt), f"{name}: gradients == PyTorch autograd ({len(gt)} tensors)",
                  f"worst rel {worst:.2e} ({worst_name})" + (f"; {bad[:4]}" if bad else ""))
            for m in markers:
                ks = [k for k in gt if m in k]
                live = [k for k in ks if float(np.abs(gt[k]).max()) > 0]
                check(ks and len(live) == len(ks), f"{name}: every '{m}' tensor gets a gradient",
                      f"{len(live)} of {len(ks)}")
        coe_one_checks(args.moec, root)
        bad_config_checks(args.moec, root)
        resume_checks(args.moec, root)
    finally:
        shutil.rmtree(root, ignore_errors=True)
    return summary()


def coe_one_checks(moec, root):
    """MOE_SPECS §10's check, on moec's own logits: one CoE iteration is one MoE pass. With the outer
    residual and no inner one, x_1 = MoE(x_0) and the block output x_1 + h is exactly the plain MoE block
    h + MoE(rmsnorm(h)) (same weights); with the inner residual and no outer one (CoE's default) the
    output is x_0 + MoE(x_0): the residual comes from the normalised input, not h, so it differs."""
    cfg0 = make_config("mixtral", {})
    weights = make_weights(cfg0, 101)
    ids = list(range(3, 3 + S))

    def logits(name, extra):
        d = os.path.join(root, name)
        write_ckpt(d, make_config("mixtral", extra), weights)
        lo = os.path.join(root, name + ".npy")
        r = subprocess.run([moec, "logits", "-m", d, "--ids", ",".join(map(str, ids)), "-o", lo],
                           capture_output=True, text=True, timeout=120)
        return np.load(lo) if r.returncode == 0 else None
    plain = logits("coe0-plain", {})
    one = logits("coe1-outer", {"moec_coe_iterations": 1, "moec_coe_inner_residual": False,
                                "moec_coe_outer_residual": True})
    inner = logits("coe1-inner", {"moec_coe_iterations": 1})
    if not check(plain is not None and one is not None and inner is not None, "CoE C = 1 checkpoints serve"):
        return
    sc = float(np.abs(plain).max())
    rel1, rel2 = float(np.abs(one - plain).max()) / sc, float(np.abs(inner - plain).max()) / sc
    check(rel1 <= 1e-6, "CoE C = 1, outer residual only == the plain MoE block (§10)", f"rel {rel1:.2e}")
    check(rel2 > 20 * REL, "CoE C = 1 with the inner residual: residual from the normalised input, not h",
          f"rel {rel2:.2e} from the plain block")


def bad_config_checks(moec, root):
    """Bad keys of this section: one line on stderr naming the key, exit 1, for `moec info`."""
    import json
    base = os.path.join(os.path.dirname(HERE), "configs", "routers")
    cases = [
        ("moepp.json", {"moec_router_rnn_dim": 8}, "moec_router_rnn_dim"),
        ("moepp.json", {"moec_null_experts": -1}, "moec_null_experts"),
        ("moepp.json", {"moec_constant_experts": 9}, "moec_constant_experts"),
        ("moepp.json", {"moec_gate_residual": 1}, "moec_gate_residual"),
        ("adamoe-null.json", {"num_experts_per_tok": 9}, "num_experts_per_tok"),  # k <= the FFN experts, null or not
        ("chain-of-experts.json", {"moec_gate_residual": True}, "moec_coe_iterations"),
        ("chain-of-experts.json", {"moec_coe_iterations": 9}, "moec_coe_iterations"),
        ("rexmoe.json", {"num_hidden_layers": 3}, "moec_rex_reuse_frequency"),
        ("rexmoe.json", {"moec_rex_reuse_frequency": 1}, "moec_rex_psr_end"),
        ("rexmoe.json", {"moec_rex_psr_start": 30}, "moec_rex_psr_end"),
        ("rexmoe.json", {"moec_rex_reuse_frequency": 17}, "moec_rex_reuse_frequency"),
    ]
    for i, (preset, change, key) in enumerate(cases):
        d = os.path.join(root, f"bad{i}")
        os.makedirs(d, exist_ok=True)
        conf = json.load(open(os.path.join(base, preset)))
        conf.update(change)
        json.dump(conf, open(os.path.join(d, "config.json"), "w"))
        r = subprocess.run([moec, "info", "-m", d], capture_output=True, text=True, timeout=60)
        lines = r.stderr.strip().splitlines()
        check(r.returncode == 1 and len(lines) == 1 and key in lines[0], f"bad config {preset} {change}: one line naming {key}",
              f"rc {r.returncode}: {r.stderr.strip()[:200]}")


def resume_checks(moec, root):
    """ReXMoE PSR draws its masks from (seed, step, layer): a run stopped mid-schedule and resumed
    equals the uninterrupted one bit for bit, and PSR does change the run (masks are applied).
    The AdaMoE, MoE++ and Chain-of-Experts presets resume bit for bit as well."""
    import json
    import py_test_router_presets as presets
    files = presets.make_corpus(os.path.join(root, "corpus"))
    tok = os.path.join(root, "tokenizer.json")
    data = os.path.join(root, "data")
    r1 = subprocess.run([moec, "tokenizer", "train", "--vocab", "512", "-o", tok, *files], capture_output=True, text=True)
    r2 = subprocess.run([moec, "data", "-t", tok, "-o", data, "--force", "--val-fraction", "0.1", *files],
                        capture_output=True, text=True)
    if not check(r1.returncode == 0 and r2.returncode == 0, "corpus for the resume checks", (r1.stderr + r2.stderr)[-200:]):
        return
    conf = json.load(open(os.path.join(os.path.dirname(HERE), "configs", "routers", "rexmoe.json")))
    conf.update({"vocab_size": 512, "hidden_size": 64, "intermediate_size": 64, "moec_rex_psr_start": 2,
                 "moec_rex_psr_end": 6})
    cfgs = {}
    for name, c in (("psr", conf), ("nopsr", dict(conf, moec_rex_psr_start=0, moec_rex_psr_end=0))):
        cfgs[name] = os.path.join(root, name + ".json")
        json.dump(c, open(cfgs[name], "w"))

    def train(cfg, out, *extra):
        return subprocess.run([moec, "train", "--config", cfg, "--data", data, "--out", out, "--batch", "2", "--seq", "32",
                               "--steps", "8", "--lr", "3e-3", "--warmup", "2", "--eval-every", "0", "--no-progress",
                               "-t", "2", *extra], capture_output=True, text=True, timeout=300)
    full, half, off = (os.path.join(root, n) for n in ("rex-full", "rex-half", "rex-off"))
    a = train(cfgs["psr"], full, "--overwrite")
    b = train(cfgs["psr"], half, "--overwrite", "--stop-after", "4")
    c = train(cfgs["psr"], half, "--resume")
    d = train(cfgs["nopsr"], off, "--overwrite")
    ok = all(x.returncode == 0 for x in (a, b, c, d))
    if not check(ok, "ReXMoE PSR runs train", "".join(x.stderr for x in (a, b, c, d))[-300:]):
        return
    rd = lambda p: open(os.path.join(p, "model.safetensors"), "rb").read()  # noqa: E731
    check(rd(full) == rd(half), "ReXMoE PSR: 4 steps + --resume == 8 steps, bit for bit (mid-schedule)")
    check(rd(full) != rd(off), "ReXMoE PSR: the masks change the run (PSR off trains other weights)")
    # the other expert kinds' presets resume bit-identically too (null-expert bias and metrics,
    # MoE++'s constant vectors and gating residual, CoE's per-iteration routers)
    for preset in ("adamoe-null", "moepp", "chain-of-experts"):
        c = json.load(open(os.path.join(os.path.dirname(HERE), "configs", "routers", preset + ".json")))
        c.update({"vocab_size": 512, "hidden_size": 64})
        if "intermediate_size" in c:
            c["intermediate_size"] = 64
        cfg = os.path.join(root, preset + ".json")
        json.dump(c, open(cfg, "w"))
        pf, ph = os.path.join(root, preset + "-full"), os.path.join(root, preset + "-half")
        runs = (train(cfg, pf, "--overwrite"), train(cfg, ph, "--overwrite", "--stop-after", "4"), train(cfg, ph, "--resume"))
        ok = all(x.returncode == 0 for x in runs)
        check(ok and rd(pf) == rd(ph), f"{preset}: 4 steps + --resume == 8 steps, bit for bit",
              "".join(x.stderr for x in runs)[-300:])
    g = os.path.join(root, "rex.gguf")
    r = subprocess.run([moec, "export", "gguf", "-m", full, "-o", g], capture_output=True, text=True, timeout=60)
    check(r.returncode == 1 and "llama.cpp" in r.stderr and not os.path.exists(g),
          "GGUF export refuses ReXMoE (llama.cpp has none of these) with a clear error", r.stderr.strip()[-200:])


if __name__ == "__main__":
    sys.exit(main())
