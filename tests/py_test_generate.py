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
