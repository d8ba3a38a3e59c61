#!/usr/bin/env python3
"""py_test_reference.py - compare `moec logits` against the PyTorch reference.

Run by ctest from the repo root:
    <python> tests/py_test_reference.py --moec <moec binary> --build-dir <build dir>

For every tiny checkpoint of tests/ref/make_tiny.py (written under <build-dir>/ref_models/,
regenerated when missing or when make_tiny.py changed) it
  1. sanity-checks the reference itself: finite logits of a useful size, routing spread
     over several experts, no near-tie in any top-k decision, causal prefix consistency,
     and that switching off each architecture feature (shared expert, q/k norm, qkv bias,
     norm_topk_prob, clip_qkv, RoPE, causal mask, GQA mapping) moves the logits far more
     than the tolerance - so an implementation that misses one of them cannot pass;
  2. runs `moec logits` (prefill, --threads 1 and 2) and `moec logits --step` (decode
     through the KV cache) on a deterministic 32-token sequence, plus a prefill of its
     first token alone (T=1), and requires
     max|moec - ref| <= 1e-3 * max|ref|, and thread 1 vs thread 2 within 1e-5 * max|ref|;
  3. runs `moec info -m DIR` and checks that its `params total: N` equals the sum of the
     tensor element counts in the safetensors files.
Ends with `N passed, M failed`; exits 1 on any failure.
--ref-only does step 1 only (no moec binary needed).
"""

import argparse
import hashlib
import json
import os
import re
import struct
import subprocess
import sys
import tempfile
import time

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "ref"))

import torch  # noqa: E402
import make_tiny  # noqa: E402
import torch_ref  # noqa: E402

T = 32                 # tokens per test sequence
REL_TOL = 1e-3         # max|moec - ref| <= REL_TOL * max|ref|
THREAD_REL_TOL = 1e-5  # max|t1 - t2| <= THREAD_REL_TOL * max|ref|
MIN_ROUTER_GAP = 1e-3  # min (k-th - (k+1)-th) router logit over the sequence, all MoE layers
ABLATION_FACTOR = 20   # an ablated feature must move the logits by > this * tolerance
RUN_TIMEOUT = 120      # seconds per moec invocation

# Features whose removal must visibly change each model's logits.
ABLATIONS = {
    "mixtral": ["rope", "causal", "gqa", "norm_topk"],
    "qwen2_moe": ["shared_expert", "qkv_bias", "norm_topk", "gqa", "rope", "causal"],
    "qwen3_moe": ["qk_norm", "norm_topk", "gqa", "rope", "causal"],
    "olmoe": ["qk_norm", "norm_topk", "gqa", "rope", "causal"],
    "mixtral_f16": ["rope", "causal", "gqa", "norm_topk"],
    "olmoe_f32": ["qk_norm", "clip_qkv", "norm_topk", "rope", "causal"],
    "qwen3_moe_sharded": ["qk_norm", "qkv_bias", "norm_topk", "gqa", "rope", "causal"],
}


class Results:
    def __init__(self):
        self.passed = 0
        self.failed = 0
        self.failures = []

    def check(self, ok, label, detail=""):
        if ok:
            self.passed += 1
        else:
            self.failed += 1
            self.failures.append(label)
        print(f"{'PASS' if ok else 'FAIL'} {label}{': ' + detail if detail else ''}", flush=True)
        return ok


# ----------------------------------------------------------------------------- models
def generator_stamp():
    h = hashlib.sha256()
    with open(make_tiny.__file__, "rb") as f:
        h.update(f.read())
    h.update(str(make_tiny.GENERATOR_VERSION).encode())
    return h.hexdigest()


def ensure_models(root):
    """Write all tiny models under root unless an up-to-date set is already there."""
    stamp_path = os.path.join(root, ".stamp")
    want = generator_stamp()
    have = None
    if os.path.exists(stamp_path):
        with open(stamp_path) as f:
            have = f.read().strip()
    if have == want and all(os.path.exists(os.path.join(root, n, "config.json")) for n in make_tiny.MODELS):
        return False
    os.makedirs(root, exist_ok=True)
    for n in make_tiny.MODELS:
        make_tiny.write_model(n, root)
    with open(stamp_path, "w") as f:
        f.write(want + "\n")
    return True


def safetensors_files(d):
    idx = os.path.join(d, "model.safetensors.index.json")
    if os.path.exists(idx):
        with open(idx) as f:
            return sorted(set(json.load(f)["weight_map"].values()))
    return ["model.safetensors"]


def read_header(path):
    with open(path, "rb") as f:
        (n,) = struct.unpack("<Q", f.read(8))
        hdr = json.loads(f.read(n))
    hdr.pop("__metadata__", None)
    return hdr


def count_params(d):
    total = 0
    for fn in safetensors_files(d):
        for info in read_header(os.path.join(d, fn)).values():
            total += int(np.prod(info["shape"], dtype=np.int64))
    return total


def pick_ids(d, V):
    """Deterministic 32-token sequence: includes ids 0 and V-1; the first seed whose top-k
    routing has no near-tie (router logit gap >= MIN_ROUTER_GAP) is used."""
    best = None
    for s in range(20):
        rng = np.random.RandomState(12345 + s)
        ids = rng.randint(0, V, size=T)
        ids[5] = 0
        ids[17] = V - 1
        ids = [int(x) for x in ids]
        logits, st = torch_ref.reference_forward(d, ids)
        if best is None or st["min_router_gap"] > best[2]["min_router_gap"]:
            best = (ids, logits, st)
        if st["min_router_gap"] >= MIN_ROUTER_GAP:
            break
    return best


# ----------------------------------------------------------------------------- checks
def check_checkpoint_layout(res, name, d):
    """The generator wrote what it claims (config features, dtypes, shards, tying)."""
    spec = make_tiny.MODELS[name]
    with open(os.path.join(d, "config.json")) as f:
        cfg = json.load(f)
    arch = cfg["model_type"]
    nh, nkv = cfg["num_attention_heads"], cfg["num_key_value_heads"]
    E = cfg.get("num_local_experts", cfg.get("num_experts"))
    problems = []
    if arch != spec["arch"]:
        problems.append("model_type")
    if E < 8 or cfg["num_experts_per_tok"] < 2:
        problems.append("experts/top-k too small")
    if name != "olmoe_f32" and not nkv < nh:
        problems.append("no GQA")
    if arch == "qwen3_moe" and make_tiny.head_dim_of(cfg) * nh == cfg["hidden_size"]:
        problems.append("qwen3 head_dim == hidden/heads")
    if arch in ("qwen2_moe", "qwen3_moe") and all(
            make_tiny.is_sparse_layer(cfg, i) for i in range(cfg["num_hidden_layers"])):
        problems.append("no dense layer")
    dt = {"bfloat16": "BF16", "float16": "F16", "float32": "F32"}[spec["dtype"]]
    names = {}
    for fn in safetensors_files(d):
        for k, info in read_header(os.path.join(d, fn)).items():
            names[k] = info
            if info["dtype"] != dt:
                problems.append(f"{k} dtype {info['dtype']}")
                break
    expected = {n: list(s) for n, s, _ in make_tiny.tensor_shapes(cfg)}
    if {k: v["shape"] for k, v in names.items()} != expected:
        problems.append("tensor set/shapes differ from HF layout")
    if cfg.get("tie_word_embeddings") and "lm_head.weight" in names:
        problems.append("tied but lm_head.weight present")
    if spec["shards"] > 1 and len(safetensors_files(d)) != spec["shards"]:
        problems.append("shard count")
    res.check(not problems, f"{name} checkpoint layout", "; ".join(problems) or
              f"{arch} {spec['dtype']} {len(names)} tensors in {len(safetensors_files(d))} file(s)")


def check_reference(res, name, d, ids, ref, st):
    """Sanity of the reference on this model (independent of moec)."""
    with open(os.path.join(d, "config.json")) as f:
        cfg = json.load(f)
    V = cfg["vocab_size"]
    E = cfg.get("num_local_experts", cfg.get("num_experts"))
    mx = float(np.abs(ref).max())
    tol = REL_TOL * mx
    ok = ref.shape == (T, V) and np.isfinite(ref).all() and mx > 0.5 and float(ref.std(axis=1).min()) > 0.05
    res.check(ok, f"{name} reference sane",
              f"shape {list(ref.shape)} max|ref| {mx:.4g} min row std {float(ref.std(axis=1).min()):.3g}")
    used = [sum(1 for c in counts if c > 0) for counts in st["tokens_per_expert"]]
    need = min(E, max(3, E // 2))
    res.check(len(used) > 0 and min(used) >= need, f"{name} routing spread",
              f"experts used per MoE layer {used} of {E} (need >= {need}), moe layers {st['moe_layers']}")
    res.check(st["min_router_gap"] >= MIN_ROUTER_GAP, f"{name} no near-tie in top-k",
              f"min router logit gap {st['min_router_gap']:.3g} (need >= {MIN_ROUTER_GAP})")
    pre = torch_ref.reference_logits(d, ids[:T // 2])
    dp = float(np.abs(pre - ref[:T // 2]).max())
    res.check(dp <= THREAD_REL_TOL * mx, f"{name} reference causal prefix",
              f"max|ref(ids[:{T // 2}]) - ref[:{T // 2}]| {dp:.3g}")
    for a in ABLATIONS[name]:
        abl, _ = torch_ref.reference_forward(d, ids, ablate={a}, strict=False)
        da = float(np.abs(abl - ref).max())
        res.check(da > ABLATION_FACTOR * tol, f"{name} feature '{a}' matters",
                  f"max|ablated - ref| {da:.3g} (need > {ABLATION_FACTOR * tol:.3g})")


def run_moec(cmd):
    t0 = time.time()
    try:
        p = subprocess.run(cmd, capture_output=True, text=True, timeout=RUN_TIMEOUT)
    except subprocess.TimeoutExpired:
        return None, f"timed out after {RUN_TIMEOUT}s", "", time.time() - t0
    return p.returncode, p.stdout, p.stderr, time.time() - t0


def moec_logits(res, label, moec, d, ids, out, extra):
    cmd = [moec, "logits", "-m", d, "--ids", ",".join(map(str, ids)), "-o", out] + extra
    if os.path.exists(out):
        os.remove(out)
    rc, so, se, dt = run_moec(cmd)
    if rc != 0:
        msg = so if rc is None else f"exit {rc}: {se.strip()[-400:]}"
        res.check(False, label, f"{' '.join(cmd[1:2] + extra)} failed ({msg})")
        return None
    try:
        a = np.load(out)
    except Exception as e:  # noqa: BLE001
        res.check(False, label, f"cannot read {out}: {e}")
        return None
    return a, dt


def compare(res, label, got, ref, tol):
    if got.dtype != np.float32 or got.shape != ref.shape:
        return res.check(False, label, f"got dtype {got.dtype} shape {list(got.shape)}, want float32 {list(ref.shape)}")
    if not np.isfinite(got).all():
        return res.check(False, label, "non-finite values")
    diff = np.abs(got.astype(np.float64) - ref.astype(np.float64))
    md = float(diff.max())
    where = np.unravel_index(int(diff.argmax()), diff.shape)
    return res.check(md <= tol, label, f"max|diff| {md:.3g} tol {tol:.3g} (worst at pos {where[0]}, id {where[1]})")


def check_info(res, name, moec, d):
    want = count_params(d)
    rc, so, se, _ = run_moec([moec, "info", "-m", d])
    if rc != 0:
        return res.check(False, f"{name} info", f"exit {rc}: {(se or so).strip()[-300:]}")
    m = re.search(r"params total:\s*([0-9,]+)", so)
    if not m:
        return res.check(False, f"{name} info", "no 'params total: N' line in stdout")
    got = int(m.group(1).replace(",", ""))
    return res.check(got == want, f"{name} info params", f"params total {got}, tensors hold {want}")


def check_long_prompt(res, root, moec, tmpdir):
    """A 300-token prompt crosses moec's 256-token prefill chunk (MOEC_UBATCH): the second
    chunk attends to the first through the KV cache. Uses a copy of the qwen2_moe model (shared
    expert, dense layer) with max_position_embeddings raised to 512 (RoPE does not depend on it)."""
    import shutil
    src = os.path.join(root, "qwen2_moe")
    d = os.path.join(tmpdir, "qwen2_moe_long")
    shutil.copytree(src, d)
    cfg_path = os.path.join(d, "config.json")
    cfg = json.load(open(cfg_path))
    cfg["max_position_embeddings"] = 512
    json.dump(cfg, open(cfg_path, "w"), indent=2)
    V = cfg["vocab_size"]
    ids = [(i * 7919 + 17) % V for i in range(300)]
    ref = torch_ref.reference_logits(d, ids)
    tol = REL_TOL * float(np.abs(ref).max())
    r = moec_logits(res, "long prompt 300 tokens", moec, d, ids, os.path.join(tmpdir, "long.npy"), ["--threads", "2"])
    if r is not None:
        compare(res, "long prompt 300 tokens (2 prefill chunks)", r[0], ref, tol)
    shutil.rmtree(d)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--moec", help="path to the moec binary")
    ap.add_argument("--build-dir", required=True)
    ap.add_argument("--models", nargs="*", help="subset of models (default: all)")
    ap.add_argument("--ref-only", action="store_true", help="only check the generator and the reference")
    args = ap.parse_args(argv)
    if not args.ref_only and not args.moec:
        ap.error("--moec is required (or --ref-only)")
    torch.set_num_threads(1)
    root = os.path.join(os.path.abspath(args.build_dir), "ref_models")
    if ensure_models(root):
        print(f"wrote tiny checkpoints under {root}")
    names = args.models or list(make_tiny.MODELS)
    res = Results()
    tmpdir = tempfile.mkdtemp(prefix="moec_ref_", dir=os.path.abspath(args.build_dir))
    moec = os.path.abspath(args.moec) if args.moec else None
    for name in names:
        d = os.path.join(root, name)
        check_checkpoint_layout(res, name, d)
        V = json.load(open(os.path.join(d, "config.json")))["vocab_size"]
        ids, ref, st = pick_ids(d, V)
        check_reference(res, name, d, ids, ref, st)
        if args.ref_only:
            continue
        mx = float(np.abs(ref).max())
        tol = REL_TOL * mx
        outs = {}
        for mode, extra in (("prefill t1", ["--threads", "1"]), ("prefill t2", ["--threads", "2"]),
                            ("step t2", ["--step", "--threads", "2"])):
            label = f"{name} {mode}"
            r = moec_logits(res, label, moec, d, ids, os.path.join(tmpdir, f"{name}_{mode[:4]}_{mode[-2:]}.npy"),
                            extra)
            if r is None:
                continue
            outs[mode] = r[0]
            compare(res, label, r[0], ref, tol)
        # a single token (T=1 edge case: M=1 products, one-entry attention)
        r = moec_logits(res, f"{name} prefill T=1", moec, d, ids[:1], os.path.join(tmpdir, f"{name}_one.npy"),
                        ["--threads", "2"])
        if r is not None:
            compare(res, f"{name} prefill T=1", r[0], ref[:1], tol)
        if "prefill t1" in outs and "prefill t2" in outs and outs["prefill t1"].shape == outs["prefill t2"].shape:
            dt = float(np.abs(outs["prefill t1"] - outs["prefill t2"]).max())
            res.check(dt <= THREAD_REL_TOL * mx, f"{name} threads 1 vs 2",
                      f"max|diff| {dt:.3g} tol {THREAD_REL_TOL * mx:.3g}")
        else:
            res.check(False, f"{name} threads 1 vs 2", "missing prefill output")
        check_info(res, name, moec, d)
    if not args.ref_only and not args.models:
        check_long_prompt(res, root, moec, tmpdir)
    for f in os.listdir(tmpdir):
        os.remove(os.path.join(tmpdir, f))
    os.rmdir(tmpdir)
    if res.failures:
        print("failed: " + ", ".join(res.failures))
    print(f"{res.passed} passed, {res.failed} failed")
    return 1 if res.failed else 0


if __name__ == "__main__":
    sys.exit(main())
