#!/usr/bin/env python3
"""py_test_sweep.py - the router-comparison machinery (scripts/sweep.py, `moec eval --json`) on a
micro-sweep: two tiny schemes on a three-domain corpus, a few steps each (seconds).

Checks: the specialization score on hand-made loads (0 for identical domain loads, 1 for one
expert per domain, and an intermediate case against H(E) - H(E|D) computed independently); the
claim verdicts on made-up aggregates; `moec eval --json` against its own text table and its
internal sums (loads add up to k x routed tokens, the 'all' row pools the domains, MaxVio
recomputed from the counts); a sweep stopped after 2 steps (--stop-after) resumes with
`moec train --resume` and ends with exactly the result of an uninterrupted run; a finished sweep
trains nothing when run again (results skipped, files untouched); a run whose result.json is gone
is only re-evaluated; a result of another configuration is trained again; the table, the
claims and the SVG figures are written (well-formed XML) and --report-only rewrites them;
bad scheme files fail with one line. Ends with `N passed, M failed`; exits 1 on any failure."""
import argparse
import glob
import json
import math
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import xml.etree.ElementTree as ET

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, os.path.join(HERE, "ref"))
sys.path.insert(0, os.path.join(ROOT, "scripts"))
import sweep  # noqa: E402
from checks import check, run, summary  # noqa: E402

# a model small enough that a step takes milliseconds; the routing keys stay the presets'
TINY = ("hidden_size=32 intermediate_size=64 num_attention_heads=2 num_key_value_heads=1 head_dim=16 "
        "vocab_size=512")


def make_corpus(dst):
    os.makedirs(dst, exist_ok=True)
    lic = []
    for f in sorted(glob.glob("/usr/share/common-licenses/*"))[:12]:
        if os.path.isfile(f):
            lic += [p for p in open(f, encoding="utf-8", errors="replace").read().split("\n\n") if p.strip()]
    code = [open(f, encoding="utf-8", errors="replace").read()[:4000] for f in sorted(glob.glob("/usr/include/*.h"))[:40]]
    nums = [" ".join(f"{i * j % 97}" for j in range(1, 40)) for i in range(1, 150)]
    for name, docs in (("licenses", lic[:300]), ("headers", code), ("numbers", nums)):
        with open(os.path.join(dst, name + ".txt"), "w") as f:
            f.write("\n\x1e\n".join(docs))
    return [os.path.join(dst, n + ".txt") for n in ("licenses", "headers", "numbers")]


def fake_eval(loads):
    """An eval.json with one layer: loads[d] = expert counts of domain d."""
    return dict(n_layer=1, n_route_expert=len(loads[0]),
                domains=[dict(name=f"d{i}", routed_tokens=sum(r), expert_load=[r]) for i, r in enumerate(loads)])


def check_specialization():
    s, _ = sweep.specialization(fake_eval([[5, 5, 10], [10, 10, 20], [1, 1, 2]]))
    check(abs(s) < 1e-12, "specialization: identical domain loads give 0", f"{s}")
    s, share = sweep.specialization(fake_eval([[7, 0, 0], [0, 3, 0], [0, 0, 9]]))
    check(abs(s - 1) < 1e-12, "specialization: one expert per domain gives 1", f"{s}")
    check(share[1] == [0.0, 1.0, 0.0], "specialization: p(e|d) rows", f"{share}")
    loads = [[6, 2, 2, 0], [1, 7, 1, 1], [3, 3, 2, 2]]
    s, _ = sweep.specialization(fake_eval(loads))
    # independent: I(D;E) = H(E) - H(E|D) with p(d) uniform, over ln(min(D, E))
    p = [[c / sum(r) for c in r] for r in loads]
    pe = [sum(p[d][e] for d in range(3)) / 3 for e in range(4)]
    H = lambda v: -sum(x * math.log(x) for x in v if x > 0)
    ref = (H(pe) - sum(H(r) for r in p) / 3) / math.log(3)
    check(abs(s - ref) < 1e-12 and 0 < s < 1, "specialization: equals (H(E) - H(E|D)) / ln min(D, E)", f"{s} vs {ref}")


def check_verdicts():
    agg = [dict(name="a", loss=(5.0, 0.01, 3), max_vio=(0.2, 0.02, 3)),
           dict(name="b", loss=(5.01, 0.01, 3), max_vio=(0.9, 0.05, 3)),
           dict(name="c", loss=(5.2, 0.01, 3), max_vio=(0.85, 0.3, 3))]
    v = lambda *t: sweep.compare(agg, *t).get("verdict")
    check(v("a", "b", "max_vio", "lower") == "reproduced", "verdict: lower by more than 2 SE is reproduced")
    check(v("b", "a", "max_vio", "lower") == "opposite direction", "verdict: the other way is opposite")
    check(v("c", "b", "max_vio", "lower").startswith("same direction, within noise"), "verdict: within 2 SE")
    check(v("a", "b", "loss", "no_worse").startswith("reproduced"), "verdict: lower loss is no loss cost")
    check(v("c", "b", "loss", "no_worse").startswith("not reproduced"), "verdict: loss worse by > 2 SE")
    check(sweep.compare(agg, "a", "zz", "loss", "lower") == dict(missing=["zz"]), "verdict: a missing scheme")


def sweep_cmd(args, tmp, schemes, out, *extra):
    return [sys.executable, os.path.join(ROOT, "scripts", "sweep.py"), "--size", "ci", "--schemes", schemes,
            "--data", os.path.join(tmp, "data"), "--out", out, "--doc", os.path.join(tmp, "doc", "cmp.md"),
            "--moec", args.moec, "--threads", "2", "--no-nice", *extra]


def check_eval_json(moec, ckpt, data):
    r = run([moec, "eval", "-m", ckpt, "--data", data, "--seq", "32", "--max-windows", "3", "--json", "-"])
    if not check(r.returncode == 0, "eval --json -: exit 0", r.stderr[-300:] if r.returncode else ""):
        return
    j = json.loads(r.stdout)
    check(j["format"] == "moec-eval" and j["version"] == 1, "eval json: format moec-eval v1")
    table = {l.split()[0]: l.split() for l in r.stderr.splitlines() if len(l.split()) == 4}  # the table went to stderr
    check(all(abs(float(table[d["name"]][2]) - d["loss"]) < 6e-5 for d in j["domains"] + [j["all"]]),
          "eval json: losses equal the text table's")
    k, L, E = j["k"], j["n_layer"], j["n_route_expert"]
    ok = all(sum(d["expert_load"][il]) == k * d["routed_tokens"] for d in j["domains"] for il in range(L))
    check(ok, "eval json: every layer's loads sum to k x routed tokens (dropless top-k)")
    pooled = all(j["all"]["expert_load"][il][e] == sum(d["expert_load"][il][e] for d in j["domains"])
                 for il in range(L) for e in range(E))
    n_all = sum(d["targets"] for d in j["domains"])
    loss_all = sum(d["loss"] * d["targets"] for d in j["domains"]) / n_all
    check(pooled and j["all"]["targets"] == n_all and abs(j["all"]["loss"] - loss_all) < 1e-9,
          "eval json: 'all' pools the domains (loads, targets, token-weighted loss)")
    vio = [(max(c) - sum(c) / E) / (sum(c) / E) for c in j["all"]["expert_load"]]
    check(all(abs(l["max_vio"] - v) < 1e-12 for l, v in zip(j["layers"], vio)) and
          abs(j["max_vio"] - sum(vio) / L) < 1e-12, "eval json: MaxVio recomputed from the counts")
    check(j["experts_per_token"] == k and j["true_experts_per_token"] == k and j["flops_saved_frac"] == 0,
          "eval json: experts per token = k, nothing saved (top-k)")
    r = run([moec, "eval", "-m", ckpt, "--data", data, "--json", "/nonexistent-dir/x.json"])
    check(r.returncode == 1 and len(r.stderr.strip().splitlines()) >= 1 and "x.json" in r.stderr,
          "eval --json into a missing directory: exit 1 naming the file", r.stderr.strip()[-200:])


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--moec", required=True)
    ap.add_argument("--build-dir", default=None)
    args = ap.parse_args()
    check_specialization()
    check_verdicts()
    tmp = tempfile.mkdtemp(prefix="moec_sweep_")
    try:
        files = make_corpus(os.path.join(tmp, "corpus"))
        tok = os.path.join(tmp, "tokenizer.json")
        r = run([args.moec, "tokenizer", "train", "--vocab", "512", "-o", tok, *files])
        check(r.returncode == 0, "tokenizer train", r.stderr.strip()[-200:])
        r = run([args.moec, "data", "-t", tok, "-o", os.path.join(tmp, "data"), "--force", "--val-fraction", "0.1", *files])
        check(r.returncode == 0, "data", r.stderr.strip()[-200:])
        schemes = os.path.join(tmp, "schemes.txt")
        with open(schemes, "w") as f:
            f.write(f"# micro-sweep\ntopk-lbl 1 {TINY}\nglobal-lbl 1 {TINY}  # same model, LBL over the step\n")
        out = os.path.join(tmp, "out")
        res = lambda o, n: os.path.join(o, n, "seed1", "result.json")

        # 1. stopped after 2 of 4 steps, then continued by the same command
        r = run(sweep_cmd(args, tmp, schemes, out, "--stop-after", "2"))
        state = os.path.join(out, "topk-lbl", "seed1", "ckpt", "train_state.json")
        check(r.returncode == 0 and "stopped after --stop-after 2" in r.stdout and os.path.isfile(state)
              and json.load(open(state))["step"] == 2 and not os.path.exists(res(out, "topk-lbl")),
              "sweep --stop-after 2: checkpoint at step 2, no result yet", (r.stdout + r.stderr)[-300:])
        r = run(sweep_cmd(args, tmp, schemes, out))
        check(r.returncode == 0 and "topk-lbl seed 1: train (resuming at step 2)" in r.stdout
              and "global-lbl seed 1: train" in r.stdout, "sweep: the stopped run resumes, the other trains",
              "" if r.returncode == 0 else (r.stdout + r.stderr)[-400:])
        trained = os.path.join(out, "topk-lbl", "seed1", "train.out")
        check("--resume" in open(trained).read(), "sweep: the resumed invocation used moec train --resume")
        ok = all(os.path.isfile(res(out, n)) for n in ("topk-lbl", "global-lbl"))
        check(ok, "sweep: a result.json per run")
        if not ok:
            return
        a, g = json.load(open(res(out, "topk-lbl"))), json.load(open(res(out, "global-lbl")))
        check(a["format"] == "moec-sweep-result" and len(a["ce_curve"]) == 4 and set(a["domain_loss"]) ==
              {"licenses", "headers", "numbers"} and a["experts_per_token"] == 2 and a["drop_rate"] == 0
              and a["specialization"] is not None and 0 <= a["specialization"] <= 1 and a["tokens_per_s"] > 0,
              "result.json: the run's metrics", json.dumps({k: a[k] for k in ("loss", "max_vio", "specialization")}))
        check(a["n_params_active"] == g["n_params_active"], "result.json: equal active parameters")
        check_eval_json(args.moec, os.path.join(out, "topk-lbl", "seed1", "ckpt"), os.path.join(tmp, "data"))

        # 2. the same run uninterrupted ends with exactly the same figures
        out2 = os.path.join(tmp, "out2")
        r = run(sweep_cmd(args, tmp, schemes, out2, "--only", "topk-lbl"))
        b = json.load(open(res(out2, "topk-lbl"))) if os.path.isfile(res(out2, "topk-lbl")) else {}
        same = all(a.get(k) == b.get(k) for k in ("loss", "domain_loss", "max_vio", "specialization", "domain_share"))
        check(r.returncode == 0 and same and a["ce_curve"] == b.get("ce_curve"),
              "sweep: stopped + resumed = uninterrupted (loss, loads, curve identical)", f"{a['loss']} vs {b.get('loss')}")

        # 3. a finished sweep trains nothing
        mt = {n: os.stat(res(out, n)).st_mtime_ns for n in ("topk-lbl", "global-lbl")}
        r = run(sweep_cmd(args, tmp, schemes, out))
        check(r.returncode == 0 and ": train" not in r.stdout and
              all(os.stat(res(out, n)).st_mtime_ns == mt[n] for n in mt), "sweep again: every run skipped",
              r.stdout[-300:])

        # 4. a lost result is re-evaluated, not retrained; another configuration is retrained
        os.remove(res(out, "global-lbl"))
        r = run(sweep_cmd(args, tmp, schemes, out))
        g2 = json.load(open(res(out, "global-lbl"))) if os.path.isfile(res(out, "global-lbl")) else {}
        check(r.returncode == 0 and ": train" not in r.stdout and g2.get("loss") == g["loss"],
              "sweep: a missing result.json is re-evaluated from the finished checkpoint", r.stdout[-300:])
        g2["key"] = "0" * 16
        with open(res(out, "global-lbl"), "w") as f:
            json.dump(g2, f)
        r = run(sweep_cmd(args, tmp, schemes, out))
        check(r.returncode == 0 and "global-lbl seed 1: its result is from another configuration" in r.stdout
              and "global-lbl seed 1: train" in r.stdout and json.load(open(res(out, "global-lbl")))["loss"] == g["loss"],
              "sweep: a result of another configuration is trained again (same figures)", r.stdout[-300:])

        # 5. the report: table rows, claims, figures
        doc = os.path.join(tmp, "doc", "cmp.md")
        text = open(doc).read() if os.path.isfile(doc) else ""
        check("| `topk-lbl` | 1 |" in text and "| `global-lbl` | 1 |" in text and "2 of 2" in text,
              "report: a table row per scheme")
        check("`global-lbl` vs `topk-lbl` | specialization (higher)" in text and
              "`aux-free`, `aux-free-fast`, `aux-free-flat`, `sigmoid`: no such scheme in" in text,
              "report: claims tested and awaiting")
        svgs = sorted(glob.glob(os.path.join(tmp, "doc", "cmp", "*.svg")))
        good = [p for p in svgs if ET.parse(p).getroot().tag.endswith("svg")]
        check(len(svgs) == 6 and len(good) == 6 and all(f"cmp/{os.path.basename(p)}" in text for p in svgs),
              "report: 6 well-formed SVG figures, each linked", f"{len(good)}/{len(svgs)}")
        os.remove(doc)
        r = run(sweep_cmd(args, tmp, schemes, out, "--report-only", "--moec", "/nonexistent"))
        check(r.returncode == 0 and os.path.isfile(doc) and "| `topk-lbl` | 1 |" in open(doc).read(),
              "report: --report-only rewrites it without moec", r.stderr[-200:])

        # 6. SIGTERM mid-run stops the sweep and its moec child; the next invocation resumes the run
        out4 = os.path.join(tmp, "out4")
        p = subprocess.Popen(sweep_cmd(args, tmp, schemes, out4, "--only", "topk-lbl", "--steps", "400"),
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        state = os.path.join(out4, "topk-lbl", "seed1", "ckpt", "train_state.json")
        t0 = time.time()
        while not os.path.isfile(state) and p.poll() is None and time.time() - t0 < 120:
            time.sleep(0.05)
        p.send_signal(signal.SIGTERM)
        try:
            _, err = p.communicate(timeout=60)
        except subprocess.TimeoutExpired:
            p.kill()
            _, err = p.communicate()
        alive = [l for l in subprocess.run(["ps", "-eo", "args"], capture_output=True, text=True).stdout.splitlines()
                 if out4 in l]
        check(p.returncode == 128 + signal.SIGTERM and "stopped by signal" in err and not alive,
              "sweep: SIGTERM stops it and its moec child", f"rc {p.returncode}, {len(alive)} left; {err.strip()[-200:]}")
        r = run(sweep_cmd(args, tmp, schemes, out4, "--only", "topk-lbl", "--steps", "400", "--stop-after", "1"))
        check(r.returncode == 0 and "train (resuming at step" in r.stdout, "sweep: ... and the same command resumes it",
              (r.stdout + r.stderr)[-200:])

        # 7. bad scheme files
        for body, what in (("no-such-preset 3\n", "no preset"), ("topk-lbl 3 oops\n", "neither SEEDS"),
                           ("topk-lbl 1\ntopk-lbl 2\n", "twice")):
            with open(schemes, "w") as f:
                f.write(body)
            r = run(sweep_cmd(args, tmp, schemes, os.path.join(tmp, "out3")))
            check(r.returncode == 1 and what in r.stderr and len(r.stderr.strip().splitlines()) == 1,
                  f"bad schemes file ({what}): exit 1, one line", r.stderr.strip()[-200:])
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
    sys.exit(summary())
