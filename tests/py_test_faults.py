#!/usr/bin/env python3
"""py_test_faults.py - fault campaigns with a pass/fail result (issue #9).

 1. kill -9 campaign: a training run that checkpoints every step is SIGKILLed at KILLS random
    moments (uniform over the uninterrupted run's duration, so most land inside checkpoint
    writes, which dominate its time; at least one must be seen to land inside one: "<out>.tmp"
    exists after the kill), restarted with --resume each time (or afresh, with --overwrite, if
    no checkpoint exists yet). After every kill the checkpoint must load (moec logits) and its
    train_state.json parse; at the end the final weights and AdamW moments must equal an
    uninterrupted run's bit for bit.
 2. ENOSPC during a checkpoint (a small tmpfs; skipped with a message where mount is not
    permitted): the first checkpoint fits, a later one does not: exit 1, one line naming the
    path and "No space left on device", the previous checkpoint intact and loadable, no
    staging directory or temp file left; after space is freed, --resume finishes the run. A
    first checkpoint that does not fit: --resume and a fresh start say there is nothing to
    resume and to use --overwrite.
 3. A model file truncated while `moec generate` has it mapped: exit 1 with one line naming the
    file, not a SIGBUS death.
 4. Memory: a config that fits 64-bit sizes but not the machine, and one that does not fit
    under `ulimit -v`, are refused before allocating, naming the size.
Seeded (--seed) so a failure can be replayed. Ends with `N passed, M failed`; exits 1 on any
failure.
"""
import argparse
import json
import os
import random
import resource
import shutil
import signal
import subprocess
import sys
import time

CRASH = ("AddressSanitizer", "LeakSanitizer", "runtime error", "Segmentation", "core dumped", "Assertion")
SMALL = {"model_type": "mixtral", "vocab_size": 300, "hidden_size": 32, "intermediate_size": 64,
         "num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 2, "num_local_experts": 4,
         "num_experts_per_tok": 2, "max_position_embeddings": 8192, "rms_norm_eps": 1e-5,
         "tie_word_embeddings": False}
KILLS = 24
STEPS = 40
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "ref"))
import checks  # noqa: E402
from checks import check, summary  # noqa: E402


def run(cmd, timeout=300, **kw):
    return checks.run(cmd, timeout=timeout, **kw)


def one_line(r):
    lines = [l for l in (r.stderr or "").splitlines() if l.strip()]
    return len(lines) == 1 and lines[0].startswith("moec ") and not any(m in r.stderr for m in CRASH)


def fixtures(moec, root):
    corpus = os.path.join(root, "corpus.txt")
    with open(corpus, "w") as f:
        for name in ("GPL-3", "Apache-2.0"):
            p = os.path.join("/usr/share/common-licenses", name)
            if os.path.exists(p):
                f.write(open(p, errors="replace").read())
        f.write("the quick brown fox jumps over the lazy dog\n" * 300)
    tok = os.path.join(root, "tok.json")
    assert run([moec, "tokenizer", "train", "--vocab", "300", "-o", tok, corpus]).returncode == 0
    data = os.path.join(root, "data")
    r = run([moec, "data", "-t", tok, "-o", data, "--force", "--val-fraction", "0.1", corpus])
    assert r.returncode == 0, r.stderr
    cfg = os.path.join(root, "small.json")
    json.dump(SMALL, open(cfg, "w"))
    return data, cfg


def train_cmd(moec, cfg, data, out, *extra):
    return [moec, "train", "--config", cfg, "--data", data, "--out", out, "--batch", "2", "--seq", "16",
            "--no-progress", "--eval-every", "0", "-t", "1", *extra]


def same_files(a, b, names):
    return all(open(os.path.join(a, n), "rb").read() == open(os.path.join(b, n), "rb").read() for n in names)


# ----------------------------------------------------------------------------- 1. kill -9
def test_kill(moec, root, data, cfg, rng):
    ref = os.path.join(root, "ref")
    t0 = time.time()
    r = run(train_cmd(moec, cfg, data, ref, "--steps", str(STEPS), "--save-every", "1"))
    dur = time.time() - t0
    check(r.returncode == 0, f"uninterrupted reference run ({dur:.1f} s)", r.stderr.strip()[-200:])
    k = os.path.join(root, "killed")
    state = os.path.join(k, "train_state.json")
    lo = os.path.join(root, "k.npy")
    kills = inside = 0
    problems = []
    finished = False
    while kills < KILLS or (inside == 0 and kills < 3 * KILLS):
        resume = os.path.exists(state)
        p = subprocess.Popen(train_cmd(moec, cfg, data, k, "--steps", str(STEPS), "--save-every", "1",
                                       "--resume" if resume else "--overwrite"),
                             stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        time.sleep(rng.uniform(0.02, max(0.05, dur)))
        if p.poll() is not None:  # it finished before the kill: the campaign restarts it afresh
            err = p.stderr.read()
            if p.returncode != 0:
                problems.append(f"run exited {p.returncode}: {err.strip()[-200:]}")
                break
            shutil.rmtree(k)
            continue
        p.send_signal(signal.SIGKILL)
        p.wait()
        p.stderr.close()
        kills += 1
        inside += os.path.exists(k + ".tmp")
        if os.path.exists(state):
            try:
                json.load(open(state))
            except ValueError as e:
                problems.append(f"kill {kills}: train_state.json does not parse: {e}")
            r = run([moec, "logits", "-m", k, "--ids", "1,2,3", "-o", lo])
            if r.returncode != 0:
                problems.append(f"kill {kills}: checkpoint does not load: {r.stderr.strip()[-200:]}")
    if not problems:
        r = run(train_cmd(moec, cfg, data, k, "--steps", str(STEPS), "--save-every", "1",
                          "--resume" if os.path.exists(state) else "--overwrite"))
        finished = r.returncode == 0
        if not finished:
            problems.append(f"final resume failed: {r.stderr.strip()[-300:]}")
    same = finished and same_files(ref, k, ("model.safetensors", "optimizer.safetensors"))
    check(not problems and kills >= KILLS and inside >= 1, f"kill -9 x{kills}: every checkpoint loads, --resume "
          f"continues ({inside} kills inside a checkpoint write)", "; ".join(problems)[:600])
    check(same, "kill -9 campaign: final weights and moments equal the uninterrupted run bit for bit")
    return ref


# ----------------------------------------------------------------------------- 2. ENOSPC
def mount_tmpfs(path, size):
    os.makedirs(path, exist_ok=True)
    r = run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", path])
    return r.returncode == 0, r.stderr.strip()


def test_enospc(moec, root, data, cfg, ref):
    mnt = os.path.join(root, "mnt")
    ok, why = mount_tmpfs(mnt, "1300k")  # one checkpoint (~0.95 MB) fits, a second beside it does not
    if not ok:
        print(f"SKIP ENOSPC campaign: cannot mount a tmpfs here ({why})")
        return
    try:
        out = os.path.join(mnt, "run")
        r = run(train_cmd(moec, cfg, data, out, "--steps", "4", "--save-every", "1"))
        st = json.load(open(os.path.join(out, "train_state.json"))) if os.path.exists(
            os.path.join(out, "train_state.json")) else {}
        left = [n for n in os.listdir(mnt) if n != "run"] + [n for n in (os.listdir(out) if os.path.isdir(out)
                                                                         else []) if ".tmp." in n]
        msg = r.stderr.strip()
        check(r.returncode == 1 and one_line(r) and "No space left on device" in msg and mnt in msg
              and "previous checkpoint is intact" in msg, "ENOSPC during a checkpoint: one line naming path and cause",
              repr(msg[:300]))
        lo = os.path.join(root, "e.npy")
        r2 = run([moec, "logits", "-m", out, "--ids", "1,2,3", "-o", lo])
        check(st.get("step") == 1 and r2.returncode == 0 and not left,
              "ENOSPC: the previous checkpoint is intact and loads; no partial files left",
              f"step={st.get('step')} left={left} {r2.stderr.strip()[-200:]}")
        run(["mount", "-o", "remount,size=8m", mnt])
        r = run(train_cmd(moec, cfg, data, out, "--steps", "4", "--save-every", "1", "--resume"))
        st = json.load(open(os.path.join(out, "train_state.json")))
        check(r.returncode == 0 and st.get("step") == 4, "ENOSPC: after space is freed, --resume finishes",
              r.stderr.strip()[-200:])
        shutil.rmtree(out)
        run(["mount", "-o", "remount,size=400k", mnt])  # not even the first checkpoint fits
        r = run(train_cmd(moec, cfg, data, out, "--steps", "4", "--save-every", "1"))
        check(r.returncode == 1 and one_line(r) and "No space left on device" in r.stderr
              and "no earlier checkpoint" in r.stderr, "ENOSPC on the first checkpoint: clear error",
              repr(r.stderr.strip()[:300]))
        r = run(train_cmd(moec, cfg, data, out, "--steps", "4", "--resume"))
        check(r.returncode == 1 and one_line(r) and "nothing to resume" in r.stderr and "--overwrite" in r.stderr,
              "after it, --resume says there is nothing to resume", repr(r.stderr.strip()[:300]))
        r = run(train_cmd(moec, cfg, data, out, "--steps", "4"))
        check(r.returncode == 1 and one_line(r) and "never completed a checkpoint" in r.stderr,
              "after it, a fresh start says the dir holds only a log", repr(r.stderr.strip()[:300]))
    finally:
        run(["umount", mnt])


# ----------------------------------------------------------------------------- 3. truncated mmap
def test_truncate(moec, root, ref):
    d = os.path.join(root, "trunc")
    shutil.copytree(ref, d)
    f = os.path.join(d, "model.safetensors")
    p = subprocess.Popen([moec, "generate", "-m", d, "-p", "the", "-n", "7000", "--ignore-eos", "-t", "1"],
                         stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    time.sleep(0.3)
    alive = p.poll() is None
    os.truncate(f, os.path.getsize(f) // 2)
    try:
        err = p.communicate(timeout=120)[1]
    except subprocess.TimeoutExpired:
        p.kill()
        err = p.communicate()[1]
    last = [l for l in err.splitlines() if l.strip()][-1:] or [""]
    check(alive and p.returncode == 1 and f in last[0] and "shrank" in last[0],
          "a model file truncated under moec generate: exit 1 naming the file, not SIGBUS",
          f"alive={alive} rc={p.returncode} {last[0][:200]!r}")


# ----------------------------------------------------------------------------- 4. memory
def test_memory(moec, root, data, asan):
    huge = dict(SMALL, vocab_size=16777216, hidden_size=1 << 20, head_dim=64)  # head_dim: hidden/heads is out of range
    p = os.path.join(root, "huge.json")
    json.dump(huge, open(p, "w"))
    t0 = time.time()
    r = run(train_cmd(moec, p, data, os.path.join(root, "huge_run"), "--steps", "1"))
    check(r.returncode == 1 and one_line(r) and "MB needed" in r.stderr and time.time() - t0 < 10,
          "a config larger than the machine is refused before allocating", repr(r.stderr.strip()[:300]))
    if asan:
        print("SKIP ulimit -v case: ASan reserves terabytes of address space")
        return
    mid = dict(SMALL, vocab_size=300, hidden_size=4096, intermediate_size=4096, num_attention_heads=32,
               num_key_value_heads=32)  # ~0.4 G parameters: 6.4 GB for weights, grads and moments
    p = os.path.join(root, "mid.json")
    json.dump(mid, open(p, "w"))
    lim = 2 << 30

    def limit():
        resource.setrlimit(resource.RLIMIT_AS, (lim, lim))

    r = run(train_cmd(moec, p, data, os.path.join(root, "mid_run"), "--steps", "1"), preexec_fn=limit)
    check(r.returncode == 1 and one_line(r) and "MB needed" in r.stderr and "ulimit" in r.stderr,
          "under ulimit -v 2 GB, a 6 GB request is refused before allocating", repr(r.stderr.strip()[:300]))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--moec", required=True)
    ap.add_argument("--build-dir", required=True)
    ap.add_argument("--seed", type=int, default=int(os.environ.get("MOEC_FAULT_SEED", "9")))
    args = ap.parse_args()
    moec = os.path.abspath(args.moec)
    root = os.path.join(os.path.abspath(args.build_dir), "fault_test")
    shutil.rmtree(root, ignore_errors=True)
    os.makedirs(root)
    asan = "asan" in os.path.basename(os.path.abspath(args.build_dir))
    print(f"seed {args.seed}")
    data, cfg = fixtures(moec, root)
    ref = test_kill(moec, root, data, cfg, random.Random(args.seed))
    test_enospc(moec, root, data, cfg, ref)
    test_truncate(moec, root, ref)
    test_memory(moec, root, data, asan)
    shutil.rmtree(root, ignore_errors=True)
    return summary()


if __name__ == "__main__":
    sys.exit(main())
