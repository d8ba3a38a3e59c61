#!/usr/bin/env python3
"""py_test_router_presets.py - every routing preset in configs/routers/ end to end.

For each preset: `moec train` 30 steps on a small multi-domain corpus (loss falls: the mean
cross-entropy of the last 5 steps is at least 0.5 nats below that of the first 5), the JSONL
log carries the per-layer routing metrics, the checkpoint serves `moec generate` and
`moec logits`, and those logits match the independent PyTorch reference (tests/ref/torch_ref.py,
which implements every token-choice variant from MOE_SPECS.md) within 1e-4 * max|logit|.
Scheme-specific checks: capacity presets drop slots (drop_rate > 0), the aux-loss-free preset
moves its selection bias (saved as e_score_correction_bias), every preset (the jittered and the
RMoE GRU router ones included) resumes mid-run bit-identically, and global-batch LBL gives the same loss and gradient
norm for batch 8 x accum 1 and batch 4 x accum 2 (while micro-batch LBL does not).
Ends with `N passed, M failed`; exits 1 on any failure."""
import argparse
import glob
import json
import os
import shutil
import sys
import tempfile

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, os.path.join(HERE, "ref"))
import torch_ref  # noqa: E402
from checks import check, run, summary  # noqa: E402

STEPS = 30
# inference-relevant routing keys, ablated together (training-only keys — LBL scope and
# coefficients, capacity, jitter, bias rate — do not change a checkpoint's logits; moec_topk_softmax
# is mathematically identical to renormalised softmax-all and is checked in test_routers.c)
ABLATE = (("scoring_func",), ("routed_scaling_factor",), ("topk_method", "n_group", "topk_group"),
)
def make_corpus(dst):
    os.makedirs(dst, exist_ok=True)
    lic = []
    for f in sorted(glob.glob("/usr/share/common-licenses/*"))[:12]:
        if os.path.isfile(f):
            lic += [p for p in open(f, encoding="utf-8", errors="replace").read().split("\n\n") if p.strip()]
    code = []
    for f in sorted(glob.glob("/usr/include/*.h"))[:40]:
        code.append(open(f, encoding="utf-8", errors="replace").read()[:4000])
    nums = [" ".join(f"{i * j % 97}" for j in range(1, 40)) for i in range(1, 150)]
    for name, docs in (("licenses", lic[:300]), ("headers", code), ("numbers", nums)):
        with open(os.path.join(dst, name + ".txt"), "w") as f:
            f.write("\n\x1e\n".join(docs))
    return [os.path.join(dst, n + ".txt") for n in ("licenses", "headers", "numbers")]


def train(moec, cfg, data, out, *extra, batch="4", steps=STEPS):
    return run([moec, "train", "--config", cfg, "--data", data, "--out", out, "--batch", batch, "--seq", "64",
                "--steps", str(steps), "--lr", "3e-3", "--warmup", "5", "--eval-every", "0", "--no-progress",
                "-t", "2", "--overwrite", *extra])


def log_steps(out):
    return [json.loads(l) for l in open(os.path.join(out, "train_log.jsonl")) if '"grad_norm"' in l]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--moec", required=True)
    ap.add_argument("--build-dir", default=None)
    args = ap.parse_args()
    moec = args.moec
    root = tempfile.mkdtemp(prefix="moec_presets_")
    try:
        files = make_corpus(os.path.join(root, "corpus"))
        tok = os.path.join(root, "tokenizer.json")
        r = run([moec, "tokenizer", "train", "--vocab", "1024", "-o", tok, *files])
        check(r.returncode == 0, "tokenizer train", r.stderr.strip()[-200:])
        data = os.path.join(root, "data")
        r = run([moec, "data", "-t", tok, "-o", data, "--force", "--val-fraction", "0.1", *files])
        check(r.returncode == 0, "data", r.stderr.strip()[-200:])
        # the token-choice family (router topk); the other routers' presets have their own tests
        # (py_test_router_ext.py for expert_choice, topp, moge, hash, evomoe)
        presets = sorted(p for p in glob.glob(os.path.join(ROOT, "configs", "routers", "*.json"))
                         if json.load(open(p)).get("moec_router", "topk") == "topk")
        check(len(presets) >= 10, "configs/routers/ holds the presets", f"{len(presets)} found")
        ids = list(range(5, 45))
        for cfg in presets:
            name = os.path.basename(cfg)[:-5]
            out = os.path.join(root, name)
            r = train(moec, cfg, data, out)
            if r.returncode != 0:
                check(False, f"{name}: trains {STEPS} steps", r.stderr.strip()[-300:])
                continue
            steps = log_steps(out)
            ce = [s["ce"] for s in steps]
            first, last = np.mean(ce[:5]), np.mean(ce[-5:])
            check(len(steps) == STEPS and last < first - 0.5, f"{name}: loss falls over {STEPS} steps",
                  f"first5 {first:.3f} last5 {last:.3f}")
            keys = ("load_max_mean", "load_cv", "max_vio", "drop_rate", "gate_entropy", "unused_experts")
            layers = steps[-1].get("layers", [])
            check(len(layers) >= 1 and all(all(k in l for k in keys) for l in layers),
                  f"{name}: per-layer routing metrics in the JSONL log", json.dumps(layers[:1]))
            conf = json.load(open(cfg))
            if conf.get("moec_capacity_factor", 0) > 0:
                drops = max(l["drop_rate"] for s in steps for l in s["layers"])
                check(drops > 0, f"{name}: capacity drops slots", f"max drop_rate {drops:.4f}")
            else:
                drops = max(l["drop_rate"] for s in steps for l in s["layers"])
                check(drops == 0, f"{name}: dropless", f"max drop_rate {drops}")
            # serve it
            lo = os.path.join(root, name + ".npy")
            r = run([moec, "logits", "-m", out, "--ids", ",".join(map(str, ids)), "-o", lo])
            if r.returncode != 0:
                check(False, f"{name}: moec logits", r.stderr.strip()[-300:])
            else:
                got = np.load(lo)
                ref = torch_ref.reference_logits(out, ids)
                rel = float(np.abs(got - ref).max() / np.abs(ref).max())
                check(rel <= 1e-4, f"{name}: logits == PyTorch reference", f"rel {rel:.2e}")
                # each inference-relevant routing key of the preset matters (so the match above
                # could fail): the reference without it differs by more than 20x the tolerance
                for keys in ABLATE:
                    if not any(k in conf for k in keys):
                        continue
                    alt = {k: v for k, v in conf.items() if k not in keys}
                    ref2 = torch_ref.Reference(alt, torch_ref.load_weights(out)).forward(ids).numpy()
                    d = float(np.abs(ref2 - ref).max() / np.abs(ref).max())
                    check(d > 2e-3, f"{name}: without {'/'.join(keys)} the reference differs", f"rel {d:.2e}")
            r = run([moec, "generate", "-m", out, "-p", "The", "-n", "8", "--temp", "0"])
            check(r.returncode == 0 and len(r.stdout) > 3, f"{name}: moec generate", repr(r.stdout[:60]))
            if conf.get("topk_method") == "noaux_tc":
                from safetensors.numpy import load_file
                w = load_file(os.path.join(out, "model.safetensors"))
                b = [v for k, v in w.items() if k.endswith("gate.e_score_correction_bias")]
                moved = len(b) > 0 and all(np.abs(x).max() > 0 for x in b)
                check(moved, f"{name}: the selection bias is saved and has moved",
                      f"{len(b)} tensors, max|b| {max(np.abs(x).max() for x in b) if b else 0:.4f}")
            # exact resume, every preset: stateful or stochastic routing (the bias, jitter), RMoE's GRU
            # router (its cell's weights and AdamW moments; the GRU state runs over depth inside one
            # forward), and the stateless ones (nothing of the routing may be lost or re-drawn)
            half = os.path.join(root, name + "-half")
            r1 = train(moec, cfg, data, half, "--stop-after", str(STEPS // 2))
            r2 = run([moec, "train", "--config", cfg, "--data", data, "--out", half, "--batch", "4", "--seq",
                      "64", "--steps", str(STEPS), "--lr", "3e-3", "--warmup", "5", "--eval-every", "0",
                      "--no-progress", "-t", "2", "--resume"])
            same = r1.returncode == 0 and r2.returncode == 0 and \
                open(os.path.join(out, "model.safetensors"), "rb").read() == \
                open(os.path.join(half, "model.safetensors"), "rb").read()
            check(same, f"{name}: {STEPS // 2} steps + --resume == {STEPS} steps, bit for bit",
                  (r1.stderr + r2.stderr).strip()[-300:])

        # global-batch LBL does not depend on the micro-batch split; micro-batch LBL does
        for scope, want_same in (("global_batch", True), ("micro_batch", False)):
            conf = json.load(open(os.path.join(ROOT, "configs", "routers", "topk-lbl.json")))
            conf["moec_aux_loss_scope"] = scope
            conf["router_aux_loss_coef"] = 0.05
            cfg = os.path.join(root, f"lbl-{scope}.json")
            json.dump(conf, open(cfg, "w"))
            a = os.path.join(root, f"{scope}-8x1")
            b = os.path.join(root, f"{scope}-4x2")
            ra = train(moec, cfg, data, a, batch="8", steps=1)
            rb = train(moec, cfg, data, b, "--accum", "2", batch="4", steps=1)
            if ra.returncode or rb.returncode:
                check(False, f"{scope} LBL: batch 8 x 1 and 4 x 2 run", (ra.stderr + rb.stderr).strip()[-300:])
                continue
            sa, sb = log_steps(a)[0], log_steps(b)[0]
            d_aux = abs(sa["aux"] - sb["aux"]) / abs(sa["aux"])
            d_g = abs(sa["grad_norm"] - sb["grad_norm"]) / sa["grad_norm"]
            d_ce = abs(sa["ce"] - sb["ce"]) / sa["ce"]
            if want_same:
                check(d_aux <= 1e-5 and d_g <= 1e-4 and d_ce <= 1e-5,
                      "global-batch LBL: batch 8 x accum 1 == batch 4 x accum 2 (loss, aux, grad norm)",
                      f"aux {sa['aux']:.7g} vs {sb['aux']:.7g}, gnorm {sa['grad_norm']:.7g} vs {sb['grad_norm']:.7g}")
            else:
                check(d_aux > 1e-4, "micro-batch LBL differs between the two splits (the check above can fail)",
                      f"aux {sa['aux']:.7g} vs {sb['aux']:.7g}")
    finally:
        shutil.rmtree(root, ignore_errors=True)
    return summary()


if __name__ == "__main__":
    sys.exit(main())
