#!/usr/bin/env python3
"""check_reference.py --moec BIN MODEL_DIR... - prints how closely moec's logits agree with the
independent PyTorch reference (tests/ref/torch_ref.py) on a 32-token sequence, for one prefill
and for token-by-token decoding through the KV cache. Exits 1 if any exceeds the test
tolerance max|moec - ref| <= 1e-3 * max|ref|."""
import argparse
import os
import subprocess
import sys
import tempfile

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests", "ref"))
import torch_ref  # noqa: E402


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--moec", required=True)
    ap.add_argument("models", nargs="+")
    args = ap.parse_args()
    bad = 0
    for d in args.models:
        import json
        vocab = json.load(open(os.path.join(d, "config.json")))["vocab_size"]
        ids = [(i * 7919 + 13) % vocab for i in range(32)]
        ref = torch_ref.reference_logits(d, ids)
        scale = float(np.abs(ref).max())
        line = f"  {os.path.basename(os.path.normpath(d)):<20}"
        for mode in ("prefill", "step"):
            with tempfile.TemporaryDirectory() as tmp:
                out = os.path.join(tmp, "l.npy")
                cmd = [args.moec, "logits", "-m", d, "--ids", ",".join(map(str, ids)), "-o", out]
                if mode == "step":
                    cmd.append("--step")
                subprocess.run(cmd, check=True)
                got = np.load(out)
            rel = float(np.abs(got - ref).max()) / scale
            bad += rel > 1e-3
            line += f"  {mode}: max|Δ|/max|logit| = {rel:.1e}"
        print(line + ("  OK" if bad == 0 else "  MISMATCH"))
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
