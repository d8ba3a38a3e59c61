#!/usr/bin/env python3
"""py_test_generate.py - end-to-end `moec generate`: tokenizer + prefill + KV-cache decode +
greedy sampling + streaming detokenization, against an independent pipeline made of Hugging
Face `tokenizers` (encode/decode) and the PyTorch reference (tests/ref/torch_ref.py, full
recomputation each step, argmax).

For each architecture's tiny checkpoint (with a tokenizer trained by scripts/demo_tokenizer.py):
  - greedy (--temp 0) output text must equal the reference's, byte for byte, for 12 tokens;
    the reference's argmax margins are checked to be >= 1e-3 so ties cannot decide it;
  - sampling with the same seed twice gives the same text;
  - bad inputs exit with the documented code and one stderr line.
Run by ctest: <python> tests/py_test_generate.py --moec BIN --build-dir DIR. Ends with
`N passed, M failed`; exits 1 on any failure."""
import argparse
import os
import shutil
import subprocess
import sys

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "ref"))
sys.path.insert(0, os.path.join(HERE, "..", "scripts"))

import demo_tokenizer  # noqa: E402
import make_tiny  # noqa: E402
import torch_ref  # noqa: E402
from tokenizers import Tokenizer  # noqa: E402

MODELS = ["mixtral", "qwen2_moe", "qwen3_moe", "olmoe"]
PROMPT = "The quick brown fox"
N_NEW = 12
MIN_MARGIN = 1e-3

passed = failed = 0


def check(ok, label, detail=""):
    global passed, failed
    if ok:
        passed += 1
        print(f"PASS {label} {detail}")
    else:
        failed += 1
        print(f"FAIL {label} {detail}")


def reference_greedy(d, tok):
    ids = tok.encode(PROMPT, add_special_tokens=False).ids
    new, margin = [], float("inf")
    for _ in range(N_NEW):
        last = torch_ref.reference_logits(d, ids + new)[-1]
        top2 = np.sort(last)[-2:]
        margin = min(margin, float(top2[1] - top2[0]))
        new.append(int(np.argmax(last)))
    return tok.decode(new, skip_special_tokens=False), margin


def run(args, *extra):
    return subprocess.run([args.moec, *extra], capture_output=True, timeout=300)


def active_bytes(d):
    """Weight bytes one decode step reads, from the safetensors headers alone: every tensor, less
    all embedding rows but one and the experts a token does not use (HF Mixtral names)."""
    import json as _json
    import struct
    cfg = _json.load(open(os.path.join(d, "config.json")))
    E, k, V = cfg["num_local_experts"], cfg["num_experts_per_tok"], cfg["vocab_size"]
    total = embed = experts = 0
    for f in sorted(os.listdir(d)):
        if not f.endswith(".safetensors"):
            continue
        with open(os.path.join(d, f), "rb") as fh:
            n = struct.unpack("<Q", fh.read(8))[0]
            hdr = _json.loads(fh.read(n))
        for name, t in hdr.items():
            if name == "__metadata__":
                continue
            b = t["data_offsets"][1] - t["data_offsets"][0]
            total += b
            embed += b if name == "model.embed_tokens.weight" else 0
            experts += b if ".experts." in name else 0
    return total - embed // V * (V - 1) - experts // E * (E - k)


def check_bench(args, d):
    r = run(args, "bench", "-m", d, "-p", "8", "-n", "4", "-r", "2", "-t", "2", "--bw-passes", "2")
    rows = [ln.split("\t") for ln in r.stdout.decode().splitlines() if ln]
    table = {row[0]: row[1:] for row in rows}
    check(r.returncode == 0 and {"pp8", "tg4"} <= set(table), "bench: pp8 and tg4 rows", r.stderr.decode()[-300:])
    want = active_bytes(d)
    got = int(table.get("active_bytes_per_token", ["-1"])[0])
    check(got == want, "bench: active bytes per token = the safetensors headers' count", f"moec {got}, python {want}")
    for key in ("decode_gb_per_s", "read_bw_gb_per_s", "bw_limit_fraction", "peak_rss_bytes", "rss_budget_bytes"):
        v = float(table.get(key, ["nan"])[0])
        check(v > 0 and np.isfinite(v), f"bench: {key} is a positive number", str(table.get(key)))
    if "decode_gb_per_s" in table and "tg4" in table:
        gbs = want * float(table["tg4"][1]) / 1e9
        check(abs(float(table["decode_gb_per_s"][0]) - gbs) <= 0.01 + 1e-3 * gbs, "bench: decode GB/s = active x tok/s")
    check("kernels:" in table.get("system", [""])[0], "bench: names the CPU features and kernels")
    c = run(args, "bench", "decode", "-m", d, "-p", "0", "-n", "2", "-r", "1", "--csv")
    lines = c.stdout.decode().splitlines()
    check(c.returncode == 0 and lines[0] == "test,threads,tokens_per_s,stddev" and lines[1].startswith("tg2,"),
          "bench decode --csv", c.stdout.decode()[:200])
    # moec bench train: the PyTorch baseline's tiny preset, 2 timed steps, in a temporary directory it removes
    import tempfile
    tmp = tempfile.mkdtemp()
    t = subprocess.run([args.moec, "bench", "train", "--preset", "tiny", "--steps", "2", "-t", "2"], capture_output=True,
                       timeout=300, env={**os.environ, "TMPDIR": tmp})
    last = t.stdout.decode().strip().splitlines()[-1:] or [""]
    ok = t.returncode == 0 and last[0].startswith("tokens_per_s ") and float(last[0].split()[1]) > 0
    check(ok, "bench train --preset tiny prints tokens_per_s last", t.stdout.decode()[-300:] + t.stderr.decode()[-300:])
    check("d 128, layers 4, heads 4/4, experts 8 top-2, expert ff 256" in t.stdout.decode(),
          "bench train: the baseline's tiny model")
    check(os.listdir(tmp) == [], "bench train leaves no temporary directory", str(os.listdir(tmp)))
    shutil.rmtree(tmp)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--moec", required=True)
    ap.add_argument("--build-dir", required=True)
    args = ap.parse_args()
    root = os.path.join(args.build_dir, "gen_models")
    if os.path.exists(root):
        shutil.rmtree(root)
    os.makedirs(root)
    for name in MODELS:
        make_tiny.write_model(name, root)
        d = os.path.join(root, name)
        demo_tokenizer.build(d)
        tok = Tokenizer.from_file(os.path.join(d, "tokenizer.json"))
        want, margin = reference_greedy(d, tok)
        check(margin >= MIN_MARGIN, f"{name} reference argmax margin", f"{margin:.2e}")
        r = run(args, "generate", "-m", d, "-p", PROMPT, "-n", str(N_NEW), "--temp", "0", "--ignore-eos", "-t", "2")
        out = r.stdout.decode("utf-8", errors="replace")
        got = out[len(PROMPT):].rstrip("\n") if out.startswith(PROMPT) else None
        check(r.returncode == 0 and got == want, f"{name} greedy text", f"moec={got!r} ref={want!r}")
        check(b"decode:" in r.stderr and b"tokens/s" in r.stderr, f"{name} reports tokens/s")
        a = run(args, "generate", "-m", d, "-p", PROMPT, "-n", "16", "--temp", "0.9", "--seed", "5")
        b = run(args, "generate", "-m", d, "-p", PROMPT, "-n", "16", "--temp", "0.9", "--seed", "5", "-t", "1")
        check(a.returncode == 0 and a.stdout == b.stdout, f"{name} seeded sampling reproducible (2 vs 1 threads)")

    d = os.path.join(root, "mixtral")
    check_bench(args, d)
    notok = os.path.join(root, "no_tokenizer")
    shutil.copytree(d, notok)
    os.remove(os.path.join(notok, "tokenizer.json"))
    cases = [
        ("missing tokenizer.json", ["generate", "-m", notok, "-p", "hi"], 1, b"tokenizer.json"),
        ("bad --temp", ["generate", "-m", d, "-p", "hi", "--temp", "abc"], 2, b"--temp"),
        ("bad --top-p", ["generate", "-m", d, "-p", "hi", "--top-p", "0"], 2, b"--top-p"),
        ("no prompt", ["generate", "-m", d], 2, b"-p"),
        ("too long", ["generate", "-m", d, "-p", "hi", "-n", "100000"], 1, b"context"),
        ("unknown flag", ["generate", "-m", d, "-p", "hi", "--bogus"], 2, b"--bogus"),
        ("unknown command", ["frobnicate"], 2, b"frobnicate"),
        ("empty --ids", ["logits", "-m", d, "--ids", "", "-o", os.path.join(root, "x.npy")], 2, b"--ids"),
        ("bad --ids", ["logits", "-m", d, "--ids", "1,x", "-o", os.path.join(root, "x.npy")], 2, b"--ids"),
        ("bad -t", ["bench", "-m", d, "-t", "0"], 2, b"-t expects"),
        ("bench train unknown preset", ["bench", "train", "--preset", "huge"], 2, b"--preset"),
        ("bench train bad --steps", ["bench", "train", "--preset", "tiny", "--steps", "0"], 2, b"--steps"),
        ("unwritable -o", ["logits", "-m", d, "--ids", "1", "-o", "/nonexistent/dir/x.npy"], 1, b"/nonexistent"),
    ]
    for label, argv, code, needle in cases:
        r = run(args, *argv)
        lines = r.stderr.decode(errors="replace").strip().splitlines()
        ok = (r.returncode == code and len(lines) == 1 and needle in r.stderr
              and b"Sanitizer" not in r.stderr and b"runtime error" not in r.stderr)
        check(ok, f"error: {label}", f"rc={r.returncode} stderr={r.stderr.decode(errors='replace').strip()!r}")
    print(f"{passed} passed, {failed} failed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
