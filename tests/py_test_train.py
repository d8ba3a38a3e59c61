#!/usr/bin/env python3
"""py_test_train.py - the trainer end to end, against independent references.

 1. One optimizer step: from the same checkpoint and batch, moec (tests/tool_train_step.c: the
    trainer's forward, backward, clipping and AdamW) and PyTorch (autograd through
    tests/ref/torch_ref.py, torch.nn.utils.clip_grad_norm_, torch.optim.AdamW with weight decay
    on matrices only, betas (0.9, 0.95), eps 1e-8) give the same weights: per element
    |w_moec - w_torch| <= 1e-6 + 1e-5 |w| + lr eps delta / (|g| + eps)^2, delta = 1e-5 max|g|
    (rounding, plus the gradient's fp32 error where Adam's first step amplifies it, |g| ~ eps).
 2. A short run on a small fixed multi-domain corpus (moec tokenizer train -> moec data ->
    moec train, configs in this file) reaches val loss <= VAL_LOSS_TARGET (stated below; the
    untrained model is at ln(V) = 6.24), `moec eval` reports every domain, and the checkpoint
    loads in the PyTorch reference with the same logits as `moec logits` (1e-3 * max|logit|).
 3. Resume: N steps straight, or N/2 + stop + --resume N/2, give bit-identical weights and
    optimizer state.
 4. Kill during checkpoint writes (SIGKILL at several moments while saving every step): the
    checkpoint directory always loads, and --resume finishes the run.
 5. Bad input: each with one stderr line and a non-zero exit.
Ends with `N passed, M failed`; exits 1 on any failure."""
import argparse
import glob
import json
import os
import shutil
import signal
import subprocess
import sys
import time

import numpy as np
import torch
from safetensors.numpy import load_file

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "ref"))
import make_tiny  # noqa: E402
import torch_ref  # noqa: E402

VAL_LOSS_TARGET = 5.0   # nats/token after TRAIN_STEPS on the corpus below (ln 512 = 6.24 at start)
TRAIN_STEPS = 150
passed = failed = 0


def check(ok, label, detail=""):
    global passed, failed
    passed += bool(ok)
    failed += not ok
    print(f"{'PASS' if ok else 'FAIL'} {label} {detail}", flush=True)


def run(cmd, timeout=600, **kw):
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, **kw)


# ----------------------------------------------------------------------------- 1. one step
def torch_step(d, tokens, B, S, aux_c, z_c, lr, wd, clip):
    cfg = torch_ref.load_config(d)
    weights = {k: v.clone().requires_grad_(True) for k, v in torch_ref.load_weights(d).items()}
    ref = torch_ref.Reference(cfg, weights)
    fwd = torch_ref.Reference.forward.__wrapped__
    ce_sum, router = 0.0, None
    with torch.enable_grad():
        for b in range(B):
            logits = fwd(ref, tokens[b][:S])
            ce_sum = ce_sum + torch.nn.functional.cross_entropy(logits, torch.tensor(tokens[b][1:]), reduction="sum")
            rl = ref.stats.get("router_logits", [])
            router = list(rl) if router is None else [torch.cat([a, x]) for a, x in zip(router, rl)]
        loss = ce_sum / (B * S)
        for z in router:
            p = torch.softmax(z, -1)
            sel = torch.topk(p, ref.topk, -1).indices
            f = torch.bincount(sel.flatten(), minlength=ref.E).float() / (z.shape[0] * ref.topk)
            loss = loss + aux_c * ref.E * (f * p.mean(0)).sum() + z_c * (torch.logsumexp(z, -1) ** 2).mean()
        loss.backward()
    # an expert that got no token has no .grad in this loop-over-experts reference; moec keeps
    # dense gradient buffers (zeros), so AdamW still decays it: give torch the same zeros
    for v in weights.values():
        if v.grad is None:
            v.grad = torch.zeros_like(v)
    gnorm = float(torch.nn.utils.clip_grad_norm_(list(weights.values()), clip))
    decay = [v for v in weights.values() if v.dim() == 2]
    no_decay = [v for v in weights.values() if v.dim() != 2]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": wd}, {"params": no_decay, "weight_decay": 0.0}],
                            lr=lr, betas=(0.9, 0.95), eps=1e-8)
    grads = {k: v.grad.detach().numpy().copy() if v.grad is not None else np.zeros(v.shape, np.float32)
             for k, v in weights.items()}   # clipped
    opt.step()
    return gnorm, {k: v.detach().numpy() for k, v in weights.items()}, grads


def test_one_step(args, root):
    tool = os.path.join(args.build_dir, "tool_train_step")
    for name in ("mixtral", "qwen2_moe", "qwen3_moe", "olmoe"):
        make_tiny.write_model(name, root)
        d = os.path.join(root, name)
        V = torch_ref.load_config(d)["vocab_size"]
        B, S, lr, wd, clip = 2, 10, 3e-3, 0.1, 0.5
        tokens = np.random.default_rng(3).integers(0, V, size=(B, S + 1)).tolist()
        out = os.path.join(root, f"{name}.step.safetensors")
        r = run([tool, d, str(B), str(S), "0.01", "0.001", str(lr), str(wd), str(clip),
                 ",".join(str(t) for row in tokens for t in row), out])
        if r.returncode:
            check(False, f"one step {name}", r.stderr.strip())
            continue
        gn_c = float(r.stdout)
        gn_t, wt, gt = torch_step(d, tokens, B, S, 0.01, 0.001, lr, wd, clip)
        wc = load_file(out)
        worst = 0.0
        bad = []
        for k, w in wt.items():
            # Adam's first update is lr * g / (|g| + eps): for |g| near eps it amplifies the
            # gradient's own fp32 error (<= DELTA * max|g|, see py_test_train_grad.py) by
            # lr * eps / (|g| + eps)^2; elsewhere only rounding remains.
            g = np.abs(gt[k]).astype(np.float64)
            delta = 1e-5 * float(g.max())
            tol = 1e-6 + 1e-5 * np.abs(w) + lr * 1e-8 * delta / (g + 1e-8) ** 2
            ratio = float((np.abs(wc[k].astype(np.float64) - w) / tol).max())
            worst = max(worst, ratio)
            if ratio > 1:
                bad.append(k)
        check(abs(gn_c - gn_t) <= 1e-4 * gn_t and gn_t > clip, f"one step {name}: grad norm (clipped)",
              f"moec {gn_c:.6g} torch {gn_t:.6g}")
        check(not bad, f"one step {name}: AdamW weights vs torch.optim.AdamW ({len(wt)} tensors)",
              f"worst err/tol {worst:.3f}" + (f" bad {bad[:3]}" if bad else ""))


# ----------------------------------------------------------------------------- 2.-5. the CLI
TEST_CONFIG = {
    "architectures": ["Qwen2MoeForCausalLM"], "model_type": "qwen2_moe", "vocab_size": 512,
    "hidden_size": 96, "intermediate_size": 192, "moe_intermediate_size": 64,
    "shared_expert_intermediate_size": 64, "num_hidden_layers": 2, "num_attention_heads": 4,
    "num_key_value_heads": 2, "num_experts": 8, "num_experts_per_tok": 2, "norm_topk_prob": False,
    "decoder_sparse_step": 1, "mlp_only_layers": [], "max_position_embeddings": 256,
    "rope_theta": 10000.0, "rms_norm_eps": 1e-6, "hidden_act": "silu", "initializer_range": 0.02,
    "tie_word_embeddings": False, "use_sliding_window": False, "sliding_window": None,
    "eos_token_id": 0, "torch_dtype": "float32",
}


def make_corpus(dst):
    """Three domains with many documents each, from text every Debian system has."""
    os.makedirs(dst, exist_ok=True)
    lic = []
    for f in sorted(glob.glob("/usr/share/common-licenses/*")):
        if os.path.isfile(f):
            text = open(f, encoding="utf-8", errors="replace").read()
            lic += [p.strip() for p in text.split("\n\n") if len(p.strip()) > 200]
    code = []
    for f in sorted(glob.glob("/usr/include/*.h"))[:120]:
        code.append(open(f, encoding="utf-8", errors="replace").read()[:6000])
    nums = [" ".join(f"{i * j % 97}" for j in range(1, 40)) for i in range(1, 150)]
    for name, docs in (("licenses", lic[:400]), ("headers", code), ("numbers", nums)):
        with open(os.path.join(dst, name + ".txt"), "w") as f:
            f.write("\n\x1e\n".join(docs))
    return [os.path.join(dst, n + ".txt") for n in ("licenses", "headers", "numbers")]


def tok2_path(root, args, files):
    """A second, different tokenizer (smaller vocabulary) trained on the same files."""
    p = os.path.join(root, "tok2.json")
    if not os.path.exists(p):
        run([args.moec, "tokenizer", "train", "--vocab", "300", "-o", p, *files])
    return p


def train_cmd(args, cfg, data, out, *extra, batch="8"):
    return [args.moec, "train", "--config", cfg, "--data", data, "--out", out, "--batch", batch, "--seq", "64",
            "--lr", "3e-3", "--warmup", "10", "--no-progress", "-t", "2", *extra]


def test_cli(args, root):
    moec = args.moec
    files = make_corpus(os.path.join(root, "corpus"))
    tok = os.path.join(root, "tokenizer.json")
    r = run([moec, "tokenizer", "train", "--vocab", "512", "-o", tok, *files])
    check(r.returncode == 0, "tokenizer train", r.stderr.strip()[-200:])
    data = os.path.join(root, "data")
    r = run([moec, "data", "--tokenizer", tok, "-o", data, "--force", "--val-fraction", "0.1", *files])
    check(r.returncode == 0, "data", r.stderr.strip()[-200:])
    cfg = os.path.join(root, "config.json")
    json.dump(TEST_CONFIG, open(cfg, "w"), indent=2)

    # 2. a short run reaches the stated validation loss
    out = os.path.join(root, "run")
    t0 = time.time()
    r = run(train_cmd(args, cfg, data, out, "--steps", str(TRAIN_STEPS), "--eval-every", "50", "--overwrite"))
    val = [json.loads(l)["val_loss"] for l in open(os.path.join(out, "train_log.jsonl")) if "val_loss" in l] \
        if r.returncode == 0 else [float("nan")]
    check(r.returncode == 0 and val[-1] <= VAL_LOSS_TARGET, "short run reaches the target val loss",
          f"val losses {['%.3f' % v for v in val]} target <= {VAL_LOSS_TARGET} ({time.time() - t0:.0f} s) "
          + r.stderr.strip()[-300:])
    check("expert load" in r.stdout and "max/mean" in r.stdout, "run prints the expert load table")
    steps = [json.loads(l) for l in open(os.path.join(out, "train_log.jsonl")) if '"grad_norm"' in l] \
        if r.returncode == 0 else []
    check(len(steps) == TRAIN_STEPS and all(k in steps[-1] for k in ("loss", "lr", "grad_norm", "aux", "imbalance",
                                                                     "tokens_per_s")),
          "JSONL log has one line per step with loss, lr, grad norm, aux, imbalance, tokens/s")
    r = run([moec, "eval", "-m", out, "--data", data, "--seq", "64"])
    check(r.returncode == 0 and all(d in r.stdout for d in ("licenses", "headers", "numbers", "all")),
          "moec eval per domain", r.stdout.strip().replace("\n", " | ")[:300] + r.stderr.strip())
    ids = list(range(1, 33))
    lo = os.path.join(root, "l.npy")
    r = run([moec, "logits", "-m", out, "--ids", ",".join(map(str, ids)), "-o", lo])
    if r.returncode == 0:
        ref = torch_ref.reference_logits(out, ids)
        got = np.load(lo)
        rel = float(np.abs(got - ref).max() / np.abs(ref).max())
        check(rel <= 1e-3, "trained checkpoint: moec logits == PyTorch reference", f"rel {rel:.2e}")
    else:
        check(False, "trained checkpoint loads in moec logits", r.stderr.strip())
    r = run([moec, "generate", "-m", out, "-p", "Copyright", "-n", "16", "--temp", "0"])
    check(r.returncode == 0 and len(r.stdout) > len("Copyright"), "generate from the trained checkpoint",
          repr(r.stdout[:80]))

    # gradient accumulation: batch 8 = 2 x batch 4 (same windows; aux/z off since they are per
    # micro-batch): same first-step loss and gradient norm up to fp32 summation order (1e-5)
    g1, g2 = os.path.join(root, "acc1"), os.path.join(root, "acc2")
    base = ["--steps", "2", "--save-every", "0", "--eval-every", "0", "--overwrite", "--aux-coef", "0", "--z-coef", "0"]
    ra = run(train_cmd(args, cfg, data, g1, *base))
    rb = run(train_cmd(args, cfg, data, g2, *base, "--accum", "2", batch="4"))
    if ra.returncode == 0 and rb.returncode == 0:
        la = json.loads(open(os.path.join(g1, "train_log.jsonl")).readline())
        lb = json.loads(open(os.path.join(g2, "train_log.jsonl")).readline())
        ok = abs(la["loss"] - lb["loss"]) <= 1e-5 * la["loss"] and \
            abs(la["grad_norm"] - lb["grad_norm"]) <= 1e-5 * la["grad_norm"]
        check(ok, "gradient accumulation: --batch 8 == --batch 4 --accum 2 (first step loss, grad norm)",
              f"loss {la['loss']} vs {lb['loss']}, gnorm {la['grad_norm']} vs {lb['grad_norm']}")
    else:
        check(False, "gradient accumulation runs", (ra.stderr + rb.stderr).strip()[-300:])

    # --init: continue from the trained checkpoint (its tokenizer is the data's); a checkpoint
    # whose tokenizer differs from the data's is refused
    fi = os.path.join(root, "finetune")
    r = run([args.moec, "train", "--init", out, "--data", data, "--out", fi, "--steps", "1", "--batch", "8", "--seq",
             "64", "--no-progress", "--overwrite", "--eval-every", "0"])
    first = json.loads(open(os.path.join(fi, "train_log.jsonl")).readline())["ce"] if r.returncode == 0 else 99
    check(r.returncode == 0 and first < val[-1] + 0.5, "--init starts from the trained weights",
          f"first-step loss {first:.3f} (trained val {val[-1]:.3f}) " + r.stderr.strip()[-200:])

    # non-finite loss: a NaN in one weight makes every step non-finite; each is skipped and
    # logged, and after 10 in a row the run stops with a clear message
    nan_dir = os.path.join(root, "nan_init")
    shutil.copytree(out, nan_dir)
    from safetensors.numpy import save_file
    w = load_file(os.path.join(nan_dir, "model.safetensors"))
    w["model.norm.weight"][0] = np.nan
    save_file(w, os.path.join(nan_dir, "model.safetensors"), metadata={"format": "pt"})
    nan_out = os.path.join(root, "nan_run")
    r = run([args.moec, "train", "--init", nan_dir, "--data", data, "--out", nan_out, "--steps", "30", "--batch", "2",
             "--seq", "32", "--no-progress", "--overwrite", "--eval-every", "0", "--save-every", "0"])
    skipped = [json.loads(l)["skipped"] for l in open(os.path.join(nan_out, "train_log.jsonl")) if '"skipped"' in l]
    check(r.returncode == 1 and "non-finite" in r.stderr and skipped == [True] * 10,
          "non-finite steps are skipped and logged; 10 in a row stop the run",
          f"rc={r.returncode} skipped={len(skipped)} {r.stderr.strip()[-160:]!r}")
    # --init from a checkpoint whose tokenizer is not the data's
    bad_tok_dir = os.path.join(root, "bad_tok_init")
    shutil.copytree(out, bad_tok_dir)
    shutil.copy(tok2_path(root, args, files), os.path.join(bad_tok_dir, "tokenizer.json"))
    r = run([args.moec, "train", "--init", bad_tok_dir, "--data", data, "--out", os.path.join(root, "bt"), "--steps",
             "1", "--no-progress"])
    check(r.returncode == 1 and "another tokenizer" in r.stderr and len(r.stderr.strip().splitlines()) == 1,
          "error: --init checkpoint's tokenizer differs from the data's", r.stderr.strip()[:200])

    # 3. resume is bit-identical, with fp32 and with bf16 products (AMX tiles sum in a fixed
    # order too); the bf16 run is another trajectory
    finals = {}
    for mm in ("fp32", "bf16"):
        a, b = os.path.join(root, "runA-" + mm), os.path.join(root, "runB-" + mm)
        common = ["--steps", "10", "--save-every", "0", "--eval-every", "0", "--matmul", mm]
        r1 = run(train_cmd(args, cfg, data, a, *common, "--overwrite"))
        r2 = run(train_cmd(args, cfg, data, b, *common, "--overwrite", "--stop-after", "5"))
        r3 = run(train_cmd(args, cfg, data, b, *common, "--resume"))
        same = all(r.returncode == 0 for r in (r1, r2, r3)) and all(
            open(os.path.join(a, f), "rb").read() == open(os.path.join(b, f), "rb").read()
            for f in ("model.safetensors", "optimizer.safetensors"))
        check(same, f"resume, --matmul {mm}: 10 steps == 5 + stop + resume 5 (bit-identical weights and moments)",
              (r1.stderr + r2.stderr + r3.stderr).strip()[-300:])
        finals[mm] = open(os.path.join(a, "model.safetensors"), "rb").read() if r1.returncode == 0 else b""
        if mm == "bf16":
            r = run(train_cmd(args, cfg, data, b, "--steps", "10", "--save-every", "0", "--eval-every", "0",
                              "--matmul", "fp32", "--resume"))
            check(r.returncode == 1 and "--matmul" in r.stderr, "error: resume with another --matmul",
                  r.stderr.strip()[-200:])
    check(finals["fp32"] and finals["bf16"] and finals["fp32"] != finals["bf16"],
          "--matmul bf16 trains other weights than fp32 (the products really are bf16)")
    r = run(train_cmd(args, cfg, data, os.path.join(root, "e-mm"), "--steps", "1", "--matmul", "fp16"))
    check(r.returncode == 2 and "--matmul must be fp32 or bf16" in r.stderr, "error: --matmul fp16",
          r.stderr.strip()[-200:])

    # 4. kill during checkpoint writes
    k = os.path.join(root, "runK")
    shutil.rmtree(k, ignore_errors=True)
    ok_all = True
    state = os.path.join(k, "train_state.json")
    for i, delay in enumerate((0.3, 0.7, 1.1)):
        extra = ["--steps", "40", "--save-every", "1", "--eval-every", "0"] + \
            (["--resume"] if os.path.exists(state) else ["--overwrite"])
        p = subprocess.Popen(train_cmd(args, cfg, data, k, *extra), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        # kill while it is checkpointing every step: after its first checkpoint (however slow
        # a loaded machine makes the start-up), plus a delay that varies the moment
        t_end = time.time() + 120
        while p.poll() is None and time.time() < t_end and not os.path.exists(state):
            time.sleep(0.02)
        time.sleep(delay)
        p.send_signal(signal.SIGKILL)
        p.wait()
        if not os.path.exists(state):
            ok_all = False
            continue
        r = run([moec, "logits", "-m", k, "--ids", "1,2,3", "-o", lo])
        st = json.load(open(state))
        ok_all &= r.returncode == 0 and st["step"] >= 1
    r = run(train_cmd(args, cfg, data, k, "--steps", "40", "--save-every", "1", "--eval-every", "0", "--resume"))
    check(ok_all and r.returncode == 0, "SIGKILL during checkpoint writes: checkpoint always loads, resume finishes",
          r.stderr.strip()[-300:])

    # 5. bad input
    bad_cfg = os.path.join(root, "bad.json")
    open(bad_cfg, "w").write("{ not json")
    empty = os.path.join(root, "empty.txt")
    open(empty, "w").write("")
    tok2 = tok2_path(root, args, files)
    cases = [
        ("missing config", train_cmd(args, os.path.join(root, "nope.json"), data, os.path.join(root, "e1"),
                                     "--steps", "1"), 1, "nope.json"),
        ("malformed config", train_cmd(args, bad_cfg, data, os.path.join(root, "e2"), "--steps", "1"), 1, "config"),
        ("out dir holds another run", train_cmd(args, cfg, data, out, "--steps", "1"), 1, "--resume"),
        ("resume with other settings", train_cmd(args, cfg, data, out, "--steps", "7", "--resume"), 1, "--steps"),
    ] + [
        # each setting that changes the trajectory, changed alone on --resume, is refused by its flag
        (f"resume with another {what}", train_cmd(args, cfg, data, out, "--steps", str(TRAIN_STEPS), flag, value,
                                                  "--resume"), 1, flag)
        for what, flag, value in (("label smoothing", "--label-smoothing", "0.1"),
                                  ("final learning rate", "--lr-min", "0.00001"),
                                  ("weight decay", "--weight-decay", "0.05"), ("clip", "--clip", "0.5"),
                                  ("balancing coefficient", "--aux-coef", "0.05"),
                                  ("z-loss coefficient", "--z-coef", "0.05"))
    ] + [
        ("empty corpus", [moec, "data", "--tokenizer", tok, "-o", os.path.join(root, "e3"), empty], 1, "empty"),
        ("vocab larger than the data supports", [moec, "tokenizer", "train", "--vocab", "100000", "-o",
                                                  os.path.join(root, "e4.json"), files[2]], 1, "larger than the data"),
        ("data made with another tokenizer", [moec, "data", "--check", data, "-t", tok2], 1, "another tokenizer"),
        ("missing data dir", train_cmd(args, cfg, os.path.join(root, "nodata"), os.path.join(root, "e5"),
                                       "--steps", "1"), 1, "nodata"),
    ]
    for label, cmd, code, needle in cases:
        r = run(cmd)
        lines = [l for l in r.stderr.strip().splitlines() if l.strip()]
        ok = r.returncode == code and len(lines) == 1 and needle in r.stderr and "Sanitizer" not in r.stderr
        check(ok, f"error: {label}", f"rc={r.returncode} {r.stderr.strip()[:200]!r}")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--moec", required=True)
    ap.add_argument("--build-dir", required=True)
    args = ap.parse_args()
    args.build_dir = os.path.abspath(args.build_dir)
    args.moec = os.path.abspath(args.moec)
    torch.set_num_threads(1)
    root = os.path.join(args.build_dir, "train_test")
    shutil.rmtree(root, ignore_errors=True)
    os.makedirs(root)
    test_one_step(args, root)
    test_cli(args, root)
    print(f"{passed} passed, {failed} failed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
