#!/usr/bin/env python3
"""py_test_data_split.py - every domain gets validation tokens, and evaluation without any says so.

 1. `moec data` on text files without document separators (one document each) cuts each into
    about 1/val_fraction pieces at line ends: every domain then has validation documents and
    tokens, and `moec train` reports a
    finite validation loss and `moec eval` a row per domain.
 2. With --val-fraction 0 (no validation split), `moec eval` exits non-zero with one clear line,
    and `moec train` says that there is no validation loss instead of printing nan.
Ends with `N passed, M failed`; exits 1 on any failure."""
import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
passed = failed = 0


def check(ok, label, detail=""):
    global passed, failed
    passed += bool(ok)
    failed += not ok
    print(f"{'PASS' if ok else 'FAIL'} {label} {detail}", flush=True)


def run(cmd, timeout=600):
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)


def table(stdout):
    """domain -> (train_docs, train_tokens, val_docs, val_tokens) from moec data's summary."""
    rows = {}
    for line in stdout.splitlines():
        f = line.split()
        if len(f) == 5 and all(x.isdigit() for x in f[1:]):
            rows[f[0]] = tuple(int(x) for x in f[1:])
    return rows


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--moec", required=True)
    ap.add_argument("--build-dir", default=None)
    moec = ap.parse_args().moec
    root = tempfile.mkdtemp(prefix="moec_split_")
    try:
        files = []
        for name, text in (("prose", open("/usr/share/common-licenses/GPL-3").read()),
                           ("digits", "\n".join(" ".join(str(i * j % 89) for j in range(30)) for i in range(400)))):
            p = os.path.join(root, name + ".txt")
            open(p, "w").write(text)
            files.append(p)
        tok = os.path.join(root, "tok.json")
        r = run([moec, "tokenizer", "train", "--vocab", "400", "-o", tok, *files])
        check(r.returncode == 0, "tokenizer train", r.stderr.strip()[-200:])
        data = os.path.join(root, "data")
        r = run([moec, "data", "-t", tok, "-o", data, "--val-fraction", "0.1", *files])
        rows = table(r.stdout)
        ok = r.returncode == 0 and all(rows.get(d, (0, 0, 0, 0))[2] >= 1 and rows[d][3] > 0 for d in ("prose", "digits"))
        check(ok, "one-document files: every domain gets validation documents and tokens", json.dumps(rows))
        check(all(rows.get(d, (0,))[0] >= 5 for d in ("prose", "digits")), "the documents were cut into pieces",
              json.dumps(rows))
        cfg = json.load(open(os.path.join(ROOT, "configs", "routers", "topk-lbl.json")))
        cfg["vocab_size"] = 400
        cfg_p = os.path.join(root, "cfg.json")
        json.dump(cfg, open(cfg_p, "w"))
        out = os.path.join(root, "run")
        r = run([moec, "train", "--config", cfg_p, "--data", data, "--out", out, "--steps", "4", "--batch", "2",
                 "--seq", "32", "--no-progress", "-t", "2"])
        check(r.returncode == 0 and "val loss" in r.stdout and "nan" not in r.stdout,
              "train reports a finite validation loss", r.stdout.strip().splitlines()[-6:] if r.stdout else r.stderr)
        r = run([moec, "eval", "-m", out, "--data", data, "--seq", "32"])
        check(r.returncode == 0 and all(d in r.stdout for d in ("prose", "digits", "all")) and " - " not in
              r.stdout.split("expert load")[0], "eval reports every domain", r.stdout[:400] + r.stderr)
        # no validation split at all
        data0 = os.path.join(root, "data0")
        r = run([moec, "data", "-t", tok, "-o", data0, "--val-fraction", "0", *files])
        check(r.returncode == 0, "data with --val-fraction 0", r.stderr.strip()[-200:])
        r = run([moec, "eval", "-m", out, "--data", data0, "--seq", "32"])
        lines = [l for l in r.stderr.splitlines() if l.strip()]
        check(r.returncode != 0 and len(lines) == 1 and "no validation tokens" in lines[0],
              "eval without validation tokens: one clear line, non-zero exit", repr(r.stderr.strip()))
        out0 = os.path.join(root, "run0")
        r = run([moec, "train", "--config", cfg_p, "--data", data0, "--out", out0, "--steps", "2", "--batch", "2",
                 "--seq", "32", "--no-progress", "-t", "2"])
        check(r.returncode == 0 and "no validation loss" in r.stdout and "nan" not in r.stdout,
              "train without validation tokens says so (no nan)", r.stdout.strip()[-300:] + r.stderr.strip())
    finally:
        shutil.rmtree(root, ignore_errors=True)
    print(f"{passed} passed, {failed} failed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
