#!/usr/bin/env python3
"""py_test_reliability.py - regression tests, at the CLI, for what issue #9's hostile inputs
found (the library-level ones are in test_reliability.c; fault campaigns in py_test_faults.py).

Each case runs moec on a crafted input and requires a clean refusal: the stated exit code,
one stderr line that names the problem, no sanitizer or crash output, no signal. Cases:
  - a qwen3_moe config.json whose parameter count wraps size_t (it segfaulted in
    moec_tparams_init), via train --config;
  - a checkpoint whose config says 1024 layers x 65536 experts: eval -m, train --init and
    info -m name the first tensor that differs (they said "out of memory"), and with 1024
    layers the first missing one;
  - --out as a symlink to a run directory: checkpoints go into the directory, the link and the
    user's notes survive (the swap deleted the whole run directory); a symlink loop as --out;
  - -o through a symlink replaces the target and keeps the link; -o into a FIFO writes into it;
    -o onto a null device (root only: mknod) leaves it a device;
  - tokenize --jsonl with a line too long for memory (ulimit -v) is an error naming the line
    (it was treated as end of file: exit 0, no output);
  - train_state.json with out-of-range numbers (n_bad 1e300, step -1) is refused on --resume;
  - meta.json whose n_docs cannot fit in the shard is refused before allocating;
  - tokenize -t /dev/zero and --file /dev/zero are refused at once (it read 2 GiB first);
  - qwen3_moe without head_dim and hidden < heads; an index with an empty weight_map;
  - a 1 MB prompt (beyond Linux's 128 KiB argv limit) through generate --prompt-file, from a
    file and from standard input: one line saying it exceeds the context, within bounded
    memory (peak RSS measured) and time; a prompt that fits generates what -p generates;
    files over the 16 MiB limit, /dev/zero, a directory are refused at once; ten million ids
    through logits --ids-file are refused naming the context before [n, V] logits are made.
Ends with `N passed, M failed`; exits 1 on any failure.
"""
import argparse
import json
import os
import resource
import shutil
import stat
import subprocess
import sys
import threading
import time

CRASH = ("AddressSanitizer", "LeakSanitizer", "runtime error", "Segmentation", "core dumped", "Assertion",
         "Aborted")
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "ref"))
import checks  # noqa: E402
from checks import check, summary  # noqa: E402


def run(cmd, timeout=120, **kw):
    return checks.run(cmd, timeout=timeout, **kw)


def refused(label, r, needles, code=1, max_s=None, t=None):
    """One clean error line with every needle (case-insensitive), exit `code`."""
    lines = [l for l in (r.stderr or "").splitlines() if l.strip()]
    crash = [m for m in CRASH if m in (r.stderr or "") + (r.stdout or "")]
    low = (r.stderr or "").lower()
    missing = [n for n in needles if n.lower() not in low]
    ok = r.returncode == code and len(lines) == 1 and lines[0].startswith("moec ") and not crash and not missing
    if max_s is not None and t is not None and t > max_s:
        ok = False
    extra = f" ({t:.2f} s, limit {max_s} s)" if t is not None and max_s is not None else ""
    check(ok, label, f"rc={r.returncode} lacks={missing} crash={crash}{extra} | {(r.stderr or '').strip()[:300]!r}")


def timed(cmd, **kw):
    t0 = time.time()
    r = run(cmd, **kw)
    return r, time.time() - t0


# ----------------------------------------------------------------------------- fixtures
SMALL = {"model_type": "mixtral", "vocab_size": 300, "hidden_size": 32, "intermediate_size": 64,
         "num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 2, "num_local_experts": 4,
         "num_experts_per_tok": 2, "max_position_embeddings": 64, "rms_norm_eps": 1e-5,
         "tie_word_embeddings": False}


def make_fixtures(moec, root):
    corpus = os.path.join(root, "corpus.txt")
    with open(corpus, "w") as f:
        for name in ("GPL-3", "Apache-2.0", "LGPL-2.1"):
            p = os.path.join("/usr/share/common-licenses", name)
            if os.path.exists(p):
                f.write(open(p, errors="replace").read())
        f.write("the quick brown fox jumps over the lazy dog\n" * 200)
    tok = os.path.join(root, "tok.json")
    r = run([moec, "tokenizer", "train", "--vocab", "300", "-o", tok, corpus])
    assert r.returncode == 0, r.stderr
    data = os.path.join(root, "data")
    r = run([moec, "data", "-t", tok, "-o", data, "--force", "--val-fraction", "0.1", corpus])
    assert r.returncode == 0, r.stderr
    cfg = os.path.join(root, "small.json")
    json.dump(SMALL, open(cfg, "w"))
    return tok, data, cfg


def train(moec, cfg, data, out, *extra):
    return run([moec, "train", "--config", cfg, "--data", data, "--out", out, "--batch", "2", "--seq", "16",
                "--no-progress", "--eval-every", "0", "-t", "1", *extra])


# ----------------------------------------------------------------------------- cases
def test_configs(moec, root, tok, data, cfg):
    # the wrapping config: 2^64 + 176128 parameters with every field in range
    wrap = dict(json.load(open("configs/qwen3-tiny.json")), vocab_size=2047, hidden_size=1 << 20,
                num_hidden_layers=1024, num_attention_heads=48767, num_key_value_heads=48767, head_dim=86,
                num_experts=1364, moe_intermediate_size=1 << 22, mlp_only_layers=[], num_experts_per_tok=1)
    p = os.path.join(root, "wrap.json")
    json.dump(wrap, open(p, "w"))
    r = train(moec, p, data, os.path.join(root, "wrap_run"), "--steps", "1")
    refused("config.json whose parameter count wraps size_t: train --config", r, ["config.json", "64-bit"])

    hd0 = dict(json.load(open("configs/qwen3-tiny.json")), hidden_size=4, num_attention_heads=8,
               num_key_value_heads=8)
    del hd0["head_dim"]
    p = os.path.join(root, "hd0.json")
    json.dump(hd0, open(p, "w"))
    r = train(moec, p, data, os.path.join(root, "hd0_run"), "--steps", "1")
    refused("qwen3_moe without head_dim, hidden < heads", r, ["head_dim"])

    # a checkpoint dir whose config says 1024 layers x 65536 experts, holding a small model
    good = os.path.join(root, "good")
    r = train(moec, cfg, data, good, "--steps", "2")
    check(r.returncode == 0, "train a small checkpoint", r.stderr.strip()[-200:])
    big = os.path.join(root, "bigexp")
    shutil.copytree(good, big)
    c = dict(SMALL, num_hidden_layers=1024, num_local_experts=65536)
    json.dump(c, open(os.path.join(big, "config.json"), "w"))
    want = ["model.layers.0.block_sparse_moe.gate.weight", "shape"]  # the first tensor that differs
    for label, cmd in (("eval -m", [moec, "eval", "-m", big, "--data", data, "--seq", "16"]),
                       ("train --init", [moec, "train", "--init", big, "--data", data, "--out",
                                         os.path.join(root, "init_big"), "--steps", "1", "--no-progress"]),
                       ("info -m", [moec, "info", "-m", big])):
        r, t = timed(cmd)
        refused(f"{label} on a 1024-layer x 65536-expert config names the first wrong tensor", r, want,
                max_s=10, t=t)
    json.dump(dict(SMALL, num_hidden_layers=1024), open(os.path.join(big, "config.json"), "w"))
    for label, cmd in (("eval -m", [moec, "eval", "-m", big, "--data", data, "--seq", "16"]),
                       ("logits -m", [moec, "logits", "-m", big, "--ids", "1", "-o", os.path.join(root, "x.npy")])):
        r, t = timed(cmd)
        refused(f"{label} on a 1024-layer config names the first missing tensor", r,
                ["missing tensor", "model.layers.2.input_layernorm.weight"], max_s=10, t=t)

    # index with an empty weight_map
    em = os.path.join(root, "emptymap")
    shutil.copytree(good, em)
    os.remove(os.path.join(em, "model.safetensors"))
    json.dump({"metadata": {}, "weight_map": {}}, open(os.path.join(em, "model.safetensors.index.json"), "w"))
    refused("index with an empty weight_map: info", run([moec, "info", "-m", em]), ["weight_map", "empty"])
    return good


def test_symlinked_out(moec, root, data, cfg):
    runs = os.path.join(root, "runs")
    real = os.path.join(runs, "r1")
    os.makedirs(real)
    latest = os.path.join(root, "latest")
    os.symlink(real, latest)
    r = train(moec, cfg, data, latest, "--steps", "4", "--save-every", "1", "--stop-after", "2")
    check(r.returncode == 0, "train into a symlinked --out", r.stderr.strip()[-200:])
    notes = os.path.join(real, "notes.txt")
    open(notes, "w").write("my notes\n")
    os.makedirs(os.path.join(real, "plots"))
    open(os.path.join(real, "plots", "p.txt"), "w").write("plot\n")
    r = train(moec, cfg, data, latest, "--steps", "4", "--save-every", "1", "--resume")
    st = json.load(open(os.path.join(real, "train_state.json"))) if os.path.exists(
        os.path.join(real, "train_state.json")) else {}
    ok = (r.returncode == 0 and os.path.islink(latest) and os.path.isdir(real) and st.get("step") == 4
          and os.path.exists(notes) and open(notes).read() == "my notes\n"
          and os.path.exists(os.path.join(real, "plots", "p.txt"))
          and not os.path.exists(real + ".tmp") and not os.path.exists(latest + ".tmp"))
    check(ok, "symlinked --out: resume through the link, link kept, user's notes and folder kept",
          f"rc={r.returncode} step={st.get('step')} files={sorted(os.listdir(real)) if os.path.isdir(real) else None} "
          + r.stderr.strip()[-200:])
    a, b = os.path.join(root, "loop_a"), os.path.join(root, "loop_b")
    os.symlink(b, a)
    os.symlink(a, b)
    r, t = timed([moec, "train", "--config", cfg, "--data", data, "--out", a, "--steps", "1", "--no-progress"])
    refused("--out is a symlink loop", r, ["--out", "symbolic links"], max_s=5, t=t)


def test_output_paths(moec, root, good):
    target = os.path.join(root, "target.npy")
    link = os.path.join(root, "link.npy")
    open(target, "w").write("old")
    os.chmod(target, 0o600)
    os.symlink(target, link)
    r = run([moec, "logits", "-m", good, "--ids", "1,2", "-o", link])
    ok = (r.returncode == 0 and os.path.islink(link) and open(target, "rb").read(6) == b"\x93NUMPY"
          and stat.S_IMODE(os.stat(target).st_mode) == 0o600)
    check(ok, "-o through a symlink writes the target, keeps the link and the mode", r.stderr.strip()[-200:])

    fifo = os.path.join(root, "fifo")
    os.mkfifo(fifo)
    got = []
    th = threading.Thread(target=lambda: got.append(open(fifo, "rb").read()))
    th.start()
    r = run([moec, "logits", "-m", good, "--ids", "1,2", "-o", fifo], timeout=60)
    if r.returncode != 0:  # unblock the reader
        with open(fifo, "wb"):
            pass
    th.join(30)
    ok = r.returncode == 0 and stat.S_ISFIFO(os.lstat(fifo).st_mode) and got and got[0][:6] == b"\x93NUMPY"
    check(ok, "-o into a FIFO writes into it; it stays a FIFO", r.stderr.strip()[-200:])

    null = os.path.join(root, "null")
    try:
        os.mknod(null, stat.S_IFCHR | 0o666, os.makedev(1, 3))
    except (PermissionError, OSError) as e:
        print(f"SKIP -o onto a null device: mknod not permitted ({e})")
        return
    r = run([moec, "logits", "-m", good, "--ids", "1,2", "-o", null])
    check(r.returncode == 0 and stat.S_ISCHR(os.lstat(null).st_mode), "-o onto a null device leaves it a device",
          r.stderr.strip()[-200:])


def test_tokenize(moec, root, tok, asan):
    # a line too long to allocate under ulimit -v, then a normal line
    p = os.path.join(root, "long.jsonl")
    with open(p, "w") as f:
        f.write(json.dumps("a" * (300 << 20)) + "\n" + json.dumps("hello") + "\n")
    if asan:
        print("SKIP --jsonl line too long for memory: ulimit -v does not mix with ASan's shadow memory")
    else:
        lim = 250 << 20

        def limit():
            resource.setrlimit(resource.RLIMIT_AS, (lim, lim))

        r = run([moec, "tokenize", "-t", tok, "--jsonl", p], preexec_fn=limit)
        refused("tokenize --jsonl: a line too long for memory is an error naming the line", r,
                ["line 1", "memory"])
    os.remove(p)
    r, t = timed([moec, "tokenize", "-t", "/dev/zero", "--text", "hi"])
    refused("tokenize -t /dev/zero is refused at once", r, ["/dev/zero", "regular file"], max_s=5, t=t)
    r, t = timed([moec, "tokenize", "-t", tok, "--file", "/dev/zero"])
    refused("tokenize --file /dev/zero is refused at once", r, ["/dev/zero"], max_s=5, t=t)


# Runs argv[2:], writes its peak RSS (KB) to argv[1], exits with its status. A separate small
# process: a child's ru_maxrss starts from the RSS of the process it was forked from, and this
# test's own Python holds hundreds of MB after the --jsonl case.
RSS_HELPER = ("import os, subprocess, sys\n"
              "p = subprocess.Popen(sys.argv[2:])\n"
              "_, st, ru = os.wait4(p.pid, 0)\n"
              "open(sys.argv[1], 'w').write(str(ru.ru_maxrss))\n"
              "c = os.waitstatus_to_exitcode(st)\n"
              "sys.exit(c if c >= 0 else 128 - c)\n")


def run_rss(cmd, stdin=None, timeout=120):
    """Runs cmd; returns (CompletedProcess, seconds, peak RSS in MB of that one process)."""
    f = os.path.join(os.path.dirname(os.path.abspath(cmd[0])), ".rss")
    t0 = time.time()
    r = run([sys.executable, "-c", RSS_HELPER, f] + cmd, timeout=timeout,
            stdin=stdin if stdin is not None else subprocess.DEVNULL)
    t = time.time() - t0
    rss = int(open(f).read()) / 1024 if os.path.exists(f) else float("inf")
    if os.path.exists(f):
        os.remove(f)
    return r, t, rss


def test_prompt_file(moec, root, tok, good, asan):
    gen = [moec, "generate", "-m", good, "--tokenizer", tok, "--temp", "0", "-n", "4"]
    big = os.path.join(root, "prompt_1mb.txt")
    with open(big, "w") as f:
        f.write("the quick brown fox jumps over the lazy dog. " * ((1 << 20) // 45 + 1))
    assert os.path.getsize(big) >= 1 << 20
    rss_cap = 1024 if asan else 128
    r, t, rss = run_rss(gen + ["--prompt-file", big])
    refused(f"generate --prompt-file with a 1 MB prompt: exceeds the context (peak RSS {rss:.0f} MB)", r,
            ["exceeds", "context"], max_s=60, t=t)
    check(rss < rss_cap, f"1 MB prompt from a file: peak RSS {rss:.0f} MB < {rss_cap} MB")
    with open(big, "rb") as f:
        r, t, rss = run_rss(gen + ["--prompt-file", "-"], stdin=f)
    refused(f"generate --prompt-file - with a 1 MB prompt on stdin: exceeds the context (peak RSS {rss:.0f} MB)",
            r, ["exceeds", "context"], max_s=60, t=t)
    check(rss < rss_cap, f"1 MB prompt from stdin: peak RSS {rss:.0f} MB < {rss_cap} MB")

    small = os.path.join(root, "prompt_small.txt")
    open(small, "w").write("the quick brown fox")
    a = run(gen + ["-p", "the quick brown fox"])
    b = run(gen + ["--prompt-file", small])
    with open(small) as f:
        c = run(gen + ["--prompt-file", "-"], stdin=f)
    check(a.returncode == 0 and a.stdout and a.stdout == b.stdout == c.stdout,
          "a prompt that fits: --prompt-file FILE and - generate exactly what -p generates",
          f"{a.returncode}/{b.returncode}/{c.returncode} {a.stdout!r} {b.stdout!r} {c.stdout!r} {b.stderr[-200:]!r}")

    huge = os.path.join(root, "prompt_17mb.txt")
    with open(huge, "wb") as f:
        f.truncate(17 << 20)
    r, t = timed(gen + ["--prompt-file", huge])
    refused("generate --prompt-file over 16 MiB is refused before reading", r, ["16 MiB", "prompt_17mb"], max_s=5,
            t=t)
    with open("/dev/zero", "rb") as f:
        r, t, rss = run_rss(gen + ["--prompt-file", "-"], stdin=f)
    refused(f"generate --prompt-file - with /dev/zero on stdin stops at the limit (peak RSS {rss:.0f} MB)", r,
            ["16 MiB", "standard input"], max_s=10, t=t)
    r, t = timed(gen + ["--prompt-file", "/dev/zero"])
    refused("generate --prompt-file /dev/zero is refused at once", r, ["/dev/zero", "regular file"], max_s=5, t=t)
    r, t = timed(gen + ["--prompt-file", root])
    refused("generate --prompt-file DIR is refused", r, ["directory"], max_s=5, t=t)
    r = run(gen + ["-p", "hi", "--prompt-file", small])
    refused("generate -p with --prompt-file is a usage error", r, ["--prompt-file"], code=2)

    ids = os.path.join(root, "ten_million_ids.txt")
    with open(ids, "w") as f:
        f.write("5," * 9999999 + "7\n")
    npy = os.path.join(root, "ids.npy")
    r, t, rss = run_rss([moec, "logits", "-m", good, "--ids-file", ids, "-o", npy])
    refused(f"logits --ids-file with ten million ids: exceeds the context, before allocating logits "
            f"(peak RSS {rss:.0f} MB)", r, ["10000000", "context"], max_s=30, t=t)
    open(small, "w").write("1,2,3\n")
    a = run([moec, "logits", "-m", good, "--ids", "1,2,3", "-o", npy])
    ref = open(npy, "rb").read() if a.returncode == 0 else None
    with open(small) as f:
        b = run([moec, "logits", "-m", good, "--ids-file", "-", "-o", npy], stdin=f)
    check(a.returncode == 0 and b.returncode == 0 and open(npy, "rb").read() == ref,
          "logits --ids-file - gives the same logits as --ids", b.stderr[-200:])
    for p in (big, huge, ids, small, npy):
        os.remove(p)

    # a context the machine cannot hold: refused with its size before the KV cache is allocated
    # (the cache is never touched up front, so it used to be "allocated" and fill up later)
    long_ctx = os.path.join(root, "long_ctx")
    shutil.copytree(good, long_ctx)
    cfg = json.load(open(os.path.join(long_ctx, "config.json")))
    cfg["max_position_embeddings"] = 1 << 22
    json.dump(cfg, open(os.path.join(long_ctx, "config.json"), "w"))
    r, t = timed([moec, "generate", "-m", long_ctx, "--tokenizer", tok, "-p", "hi", "-n", str(1 << 20)],
                 env=dict(os.environ, MOEC_MEM_LIMIT=str(100 << 20)))
    refused("generate with a context the machine cannot hold is refused before allocating", r,
            ["KV cache", "MB needed", "refused before allocating"], max_s=5, t=t)
    shutil.rmtree(long_ctx)


def test_train_state(moec, root, data, cfg):
    base = os.path.join(root, "state_base")
    r = train(moec, cfg, data, base, "--steps", "4", "--save-every", "1", "--stop-after", "2")
    check(r.returncode == 0, "train 2 of 4 steps", r.stderr.strip()[-200:])
    for key, val in (("n_bad", 1e300), ("n_bad", -1), ("step", -1), ("step", 1e300), ("adam_step", 1e19),
                     ("data_cursor", "-5"), ("data_cursor", "99999999999999999999999")):
        d = os.path.join(root, f"state_{key}_{val}")
        shutil.copytree(base, d)
        sp = os.path.join(d, "train_state.json")
        s = json.load(open(sp))
        s[key] = val
        json.dump(s, open(sp, "w"))
        r = train(moec, cfg, data, d, "--steps", "4", "--save-every", "1", "--resume")
        refused(f"train_state.json {key} = {val!r} is refused on --resume", r, [key, "train_state.json"])


def test_meta(moec, root, data, cfg):
    d = os.path.join(root, "data_bigdocs")
    shutil.copytree(data, d)
    mp = os.path.join(d, "meta.json")
    m = json.load(open(mp))
    m["train"]["shards"][0]["n_docs"] = 4000000000
    json.dump(m, open(mp, "w"))
    r, t = timed(train(moec, cfg, d, os.path.join(root, "bigdocs_run"), "--steps", "1").args)
    refused("meta.json n_docs larger than the shard can hold", r, ["documents", "bytes"],
            max_s=5, t=t)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--moec", required=True)
    ap.add_argument("--build-dir", required=True)
    args = ap.parse_args()
    moec = os.path.abspath(args.moec)
    root = os.path.join(os.path.abspath(args.build_dir), "reliability_test")
    shutil.rmtree(root, ignore_errors=True)
    os.makedirs(root)
    asan = "asan" in os.path.basename(os.path.abspath(args.build_dir))
    tok, data, cfg = make_fixtures(moec, root)
    good = test_configs(moec, root, tok, data, cfg)
    test_symlinked_out(moec, root, data, cfg)
    test_output_paths(moec, root, good)
    test_tokenize(moec, root, tok, asan)
    test_prompt_file(moec, root, tok, good, asan)
    test_train_state(moec, root, data, cfg)
    test_meta(moec, root, data, cfg)
    shutil.rmtree(root, ignore_errors=True)
    return summary()


if __name__ == "__main__":
    sys.exit(main())
