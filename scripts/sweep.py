#!/usr/bin/python3
"""sweep.py - the router comparison: train every scheme of scripts/sweep_schemes.txt at equal
training tokens (and checked equal active parameters) on the main job's multi-domain corpus,
evaluate each run per domain with `moec eval --json`, and write the table, the SVG plots and the
claim-by-claim verdicts into docs/router_comparison.md.

    /usr/bin/python3 scripts/sweep.py [--size full|preview|ci] [--schemes FILE] [--only A,B]
                                      [--out DIR] [--doc FILE] [--report-only]

Resumable: a run whose result.json matches its configuration is skipped; an interrupted run
continues from its last checkpoint with `moec train --resume`; a finished training whose eval
was interrupted is only evaluated. Kill it at any moment and start it again with the same
command. Runs itself at nice 10 (children inherit). Standard library only; see
docs/router_comparison.md for the sizes, the metrics and the specialization score.
"""
import argparse
import concurrent.futures
import hashlib
import json
import math
import os
import resource
import shlex
import shutil
import signal
import statistics
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# Equal training tokens for every scheme: steps x batch x accum x seq. Micro-batches of 2 sequences
# with 4 accumulated per step, so micro-batch and global-batch LBL differ (with one micro-batch per
# step they are the same loss). Sizing arithmetic in docs/router_comparison.md.
SIZES = {
    "full":    dict(steps=300, batch=2, accum=4, seq=128, lr=2e-3, warmup=30, save_every=50, eval_windows=40),
    "preview": dict(steps=60, batch=2, accum=4, seq=128, lr=2e-3, warmup=10, save_every=20, eval_windows=24),
    "ci":      dict(steps=4, batch=2, accum=2, seq=32, lr=3e-3, warmup=1, save_every=2, eval_windows=2),
}

# Claims of the papers (issue 10), checked in direction. Each compares scheme a with scheme b on a
# metric; "lower"/"higher" = the claimed direction of a relative to b; "no_worse" = a is not worse
# than b beyond noise. A claim whose schemes have no results is listed as awaiting them.
CLAIMS = [
    dict(id="auxfree", text="Aux-loss-free balancing lowers MaxVio at no loss cost (Wang et al. 2024; DeepSeek-V3)",
         tests=[("aux-free-flat", "sigmoid", "max_vio", "lower"), ("aux-free-flat", "sigmoid", "loss", "no_worse"),
                ("aux-free-fast", "sigmoid", "max_vio", "lower"), ("aux-free-fast", "sigmoid", "loss", "no_worse"),
                ("aux-free", "sigmoid", "max_vio", "lower"), ("aux-free", "sigmoid", "loss", "no_worse"),
                ("aux-free", "topk-lbl", "max_vio", "lower"), ("aux-free", "topk-lbl", "loss", "no_worse")]),
    dict(id="global", text="Global-batch LBL gives more domain specialization than micro-batch LBL (Qiu et al. 2025, "
                           "\"Demons in the Detail\")",
         tests=[("global-lbl", "topk-lbl", "specialization", "higher"), ("global-lbl", "topk-lbl", "loss", "no_worse")]),
    dict(id="null", text="AdaMoE null experts and MoE++ zero-computation experts reduce FLOPs at equal or better loss",
         tests=[("adamoe-null", "topk-lbl", "flops_saved_frac", "higher"), ("adamoe-null", "topk-lbl", "loss", "no_worse"),
                ("moepp", "topk-lbl", "flops_saved_frac", "higher"), ("moepp", "topk-lbl", "loss", "no_worse")]),
    dict(id="topp", text="Top-p routing activates fewer experts on easy tokens (Huang et al. 2024): across domains, "
                         "experts per token rises with the domain's loss",
         tests=[("top-p", None, "ept_loss_corr", "higher")]),
    dict(id="depth", text="RMoE and Chain-of-Experts lower loss at equal compute",
         tests=[("rmoe", "topk-lbl", "loss", "lower"), ("chain-of-experts", "topk-lbl", "loss", "lower")]),
]

METRICS = [  # key, header, format, lower is better (for the table's reading only)
    ("loss", "val loss", "{:.4f}"), ("train_val_loss", "trainer val", "{:.4f}"),
    ("max_vio", "MaxVio (global)", "{:.3f}"), ("batch_max_vio", "MaxVio (batch)", "{:.3f}"),
    ("drop_rate", "drop", "{:.4f}"), ("experts_per_token", "experts/token", "{:.3f}"),
    ("flops_saved_frac", "FLOPs saved", "{:.3f}"), ("specialization", "specialization", "{:.4f}"),
    ("tokens_per_s", "tokens/s", "{:.0f}"),
]


_children, _stopped = [], 0  # the moec processes running now: a terminated sweep takes them down too


def run_child(cmd, out):
    child = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT)
    _children.append(child)
    if _stopped:  # the signal came while this one started
        child.terminate()
    rc = child.wait()
    _children.remove(child)
    if _stopped:
        raise SystemExit(128 + _stopped)
    return rc


def on_signal(sig, _frame):
    # only signal here: the main thread may be waiting on a lock that a handler must not take
    global _stopped
    _stopped = sig
    running = list(_children)
    if not running:
        print(f"sweep: stopped by signal {sig}; the same command continues", file=sys.stderr, flush=True)
        sys.exit(128 + sig)
    for c in running:
        os.kill(c.pid, signal.SIGTERM)  # the checkpoints on disk stay valid: --resume continues


def die(msg):
    print(f"sweep: {msg}", file=sys.stderr, flush=True)
    raise SystemExit(1)  # from a worker thread too: the main thread re-raises it


def write_atomic(path, text):
    tmp = f"{path}.tmp{os.getpid()}"
    with open(tmp, "w") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


# ------------------------------------------------------------------------------ schemes

def parse_schemes(path, routers_dir):
    schemes = []
    for n, line in enumerate(open(path), 1):
        line = line.split("#", 1)[0].strip()
        if not line:
            continue
        parts = line.split()
        preset, seeds, over, name = parts[0], 1, {}, parts[0]
        for p in parts[1:]:
            if p.isdigit():
                seeds = int(p)
            elif p.startswith("as="):
                name = p[3:]
            elif "=" in p:
                k, v = p.split("=", 1)
                try:
                    over[k] = json.loads(v)
                except ValueError:
                    over[k] = v
            else:
                die(f"{path}:{n}: '{p}' is neither SEEDS, KEY=VALUE nor as=NAME")
        cfg = os.path.join(routers_dir, preset + ".json")
        if not os.path.isfile(cfg):
            die(f"{path}:{n}: no preset {cfg}")
        if seeds < 1:
            die(f"{path}:{n}: SEEDS must be at least 1")
        if any(s["name"] == name for s in schemes):
            die(f"{path}:{n}: scheme '{name}' twice (use as=NAME)")
        schemes.append(dict(name=name, preset=preset, seeds=seeds, overrides=over, preset_path=cfg))
    if not schemes:
        die(f"{path}: no schemes")
    return schemes


def scheme_config(s):
    cfg = json.load(open(s["preset_path"]))
    cfg.update(s["overrides"])
    return cfg


# ------------------------------------------------------------------------------ data

def ensure_data(args):
    """The main job's corpus, tokenizer and shards (scripts/main_job.sh steps 1-3), built once."""
    if os.path.isfile(os.path.join(args.data, "meta.json")):
        return
    if args.data != DEFAULTS["data"]:
        die(f"{args.data} holds no token shards (meta.json); make them with `moec data`")
    print("sweep: building the main job's corpus, tokenizer and shards (once)", flush=True)
    tok = os.path.join(ROOT, "demo", "tokenizer.json")
    corpus = os.path.join(ROOT, "data", "corpus")
    subprocess.run(["/usr/bin/python3", os.path.join(ROOT, "scripts", "build_corpus.py"), "-o", corpus], check=True)
    files = sorted(os.path.join(corpus, f) for f in os.listdir(corpus) if f.endswith(".txt"))
    if not os.path.isfile(tok):
        os.makedirs(os.path.dirname(tok), exist_ok=True)  # a fresh checkout has no demo/ yet
        subprocess.run([args.moec, "tokenizer", "train", "--vocab", "4096", "-o", tok, *files], check=True)
    subprocess.run([args.moec, "data", "--tokenizer", tok, "-o", args.data, "--force", *files], check=True)


def data_id(data):
    meta = json.load(open(os.path.join(data, "meta.json")))
    return hashlib.sha256(json.dumps([meta["tokenizer"].get("fingerprint"), meta["train"], meta["val"]],
                                     sort_keys=True).encode()).hexdigest()[:16]


# ------------------------------------------------------------------------------ one run

def read_log(path):
    """Step lines (the last of each step: a resumed run re-logs the steps after its checkpoint)
    and the last trainer validation loss."""
    steps, val = {}, None
    if not os.path.isfile(path):
        return [], None
    for line in open(path):
        try:
            j = json.loads(line)
        except ValueError:
            continue  # a line cut by a kill
        if "val_loss" in j:
            val = j["val_loss"]
        elif "grad_norm" in j:
            steps[j["step"]] = j
    return [steps[k] for k in sorted(steps)], val


def layer_mean(step, key):
    v = [l[key] for l in step.get("layers", []) if l.get(key) is not None]
    return sum(v) / len(v) if v else None


def tail_mean(steps, key, frac=0.1):
    tail = steps[-max(1, int(len(steps) * frac)):]
    v = [x for x in (layer_mean(s, key) for s in tail) if x is not None]
    return sum(v) / len(v) if v else None


def specialization(ev):
    """Normalised mutual information between domain (uniform prior) and routed expert, mean over
    MoE layers: I(D;E) / min(ln D, ln E_r). With a uniform domain prior I(D;E) equals the mean
    Kullback-Leibler divergence of each domain's load p(e|d) from the mean load (the generalised
    Jensen-Shannon divergence of the domains' loads). Also returns p(e|d) averaged over layers."""
    doms = [d for d in ev["domains"] if d["routed_tokens"] > 0]
    L, E = ev["n_layer"], ev["n_route_expert"]
    D = len(doms)
    if D < 2 or E < 2:
        return None, None
    scores, share = [], [[0.0] * E for _ in doms]
    n_moe = 0
    for il in range(L):
        rows = [d["expert_load"][il] for d in doms]
        if not all(sum(r) > 0 for r in rows):
            continue  # dense layer
        n_moe += 1
        p = [[c / sum(r) for c in r] for r in rows]
        pbar = [sum(p[d][e] for d in range(D)) / D for e in range(E)]
        mi = sum(p[d][e] * math.log(p[d][e] / pbar[e]) for d in range(D) for e in range(E) if p[d][e] > 0) / D
        scores.append(mi / min(math.log(D), math.log(E)))
        for d in range(D):
            for e in range(E):
                share[d][e] += p[d][e]
    if not n_moe:
        return None, None
    return sum(scores) / len(scores), [[x / n_moe for x in r] for r in share]


def spearman(x, y):
    def ranks(v):
        o = sorted(range(len(v)), key=lambda i: v[i])
        r = [0.0] * len(v)
        for pos, i in enumerate(o):
            r[i] = pos
        return r
    if len(x) < 3:
        return None
    rx, ry = ranks(x), ranks(y)
    mx, my = sum(rx) / len(rx), sum(ry) / len(ry)
    num = sum((a - mx) * (b - my) for a, b in zip(rx, ry))
    den = math.sqrt(sum((a - mx) ** 2 for a in rx) * sum((b - my) ** 2 for b in ry))
    return num / den if den else None


def summarise(run_dir, ev, steps, train_val, cfg, s, seed, key, wall, cpu, load):
    spec, share = specialization(ev)
    doms = ev["domains"]
    # route's/xkind's trainer metrics when the log has them, else eval's (dropless, whole split)
    ept = tail_mean(steps, "experts_per_token")
    tept = tail_mean(steps, "true_experts_per_token")
    fsf = tail_mean(steps, "flops_saved_frac")
    tps = [st["tokens_per_s"] for st in steps[1:] if st.get("tokens_per_s")]
    drops = [x for x in (layer_mean(st, "drop_rate") for st in steps) if x is not None]
    return dict(
        format="moec-sweep-result", version=1, scheme=s["name"], preset=s["preset"], overrides=s["overrides"],
        seed=seed, key=key, config=cfg, n_params_active=ev["n_params_active"], n_params_total=ev["n_params_total"],
        routing=ev.get("routing"), loss=ev["all"]["loss"], train_val_loss=train_val,
        domain_loss={d["name"]: d["loss"] for d in doms},
        domain_experts_per_token={d["name"]: d["experts_per_token"] for d in doms},
        max_vio=ev["max_vio"], batch_max_vio=tail_mean(steps, "max_vio"),
        drop_rate=sum(drops) / len(drops) if drops else None,
        experts_per_token=ept if ept is not None else ev["experts_per_token"],
        true_experts_per_token=tept if tept is not None else ev["true_experts_per_token"],
        flops_saved_frac=fsf if fsf is not None else ev["flops_saved_frac"],
        specialization=spec, domain_share=share, domain_names=[d["name"] for d in doms],
        ept_loss_corr=spearman([d["loss"] for d in doms], [d["experts_per_token"] for d in doms]),
        tokens_per_s=statistics.median(tps) if tps else None, train_wall_s=wall, train_cpu_s=cpu, loadavg=load,
        ce_curve=[[st["step"], st["ce"]] for st in steps], finished=time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime()))


def run_one(args, size, s, seed, did):
    d = os.path.join(args.out, s["name"], f"seed{seed}")
    ckpt, res_path = os.path.join(d, "ckpt"), os.path.join(d, "result.json")
    cfg = scheme_config(s)
    train_args = ["--steps", str(size["steps"]), "--batch", str(size["batch"]), "--accum", str(size["accum"]),
                  "--seq", str(size["seq"]), "--lr", str(size["lr"]), "--warmup", str(size["warmup"]),
                  "--seed", str(seed), "--eval-every", "0", "--eval-batches", "8",
                  "--save-every", str(size["save_every"]), "--no-progress", "-t", str(args.threads)]
    stop = ["--stop-after", str(args.stop_after)] if args.stop_after else []
    # what the result depends on (not the thread count: moec's runs are bit-identical across threads)
    key = hashlib.sha256(json.dumps([cfg, train_args[:-2], did, size["eval_windows"]], sort_keys=True).encode()).hexdigest()[:16]
    if os.path.isfile(res_path):
        try:
            if json.load(open(res_path)).get("key") == key:
                return "skip"
        except ValueError:
            pass
        print(f"sweep: {s['name']} seed {seed}: its result is from another configuration: training it again", flush=True)
        shutil.rmtree(d)
    os.makedirs(d, exist_ok=True)
    cfg_path = os.path.join(d, "config.json")
    if os.path.isfile(cfg_path) and json.load(open(cfg_path)) != cfg:
        shutil.rmtree(ckpt, ignore_errors=True)  # the preset changed under an interrupted run
    write_atomic(cfg_path, json.dumps(cfg, indent=2) + "\n")
    state = os.path.join(ckpt, "train_state.json")
    done_steps = json.load(open(state))["step"] if os.path.isfile(state) else 0
    t0, load0 = time.time(), os.getloadavg()[0]
    wall_path = os.path.join(d, "train_time_s")
    # wall and CPU seconds of the training, summed over invocations (a resumed run adds up)
    wall, cpu = map(float, open(wall_path).read().split()) if os.path.isfile(wall_path) and done_steps else (0.0, 0.0)
    if done_steps < size["steps"]:
        mode = ["--resume"] if done_steps else ["--overwrite"]
        cmd = [args.moec, "train", "--config", cfg_path, "--data", args.data, "--out", ckpt, *mode, *train_args, *stop]
        if done_steps:
            cmd = [args.moec, "train", "--data", args.data, "--out", ckpt, *mode, *train_args, *stop]
        print(f"sweep: {s['name']} seed {seed}: train{' (resuming at step %d)' % done_steps if done_steps else ''}",
              flush=True)
        with open(os.path.join(d, "train.out"), "a") as f:
            f.write("$ " + shlex.join(cmd) + "\n")
            f.flush()
            c0 = resource.getrusage(resource.RUSAGE_CHILDREN)
            rc = run_child(cmd, f)
            c1 = resource.getrusage(resource.RUSAGE_CHILDREN)
        cpu += (c1.ru_utime + c1.ru_stime) - (c0.ru_utime + c0.ru_stime)
        if rc:
            die(f"{s['name']} seed {seed}: moec train failed (exit {rc}); see {d}/train.out")
        wall += time.time() - t0
        write_atomic(wall_path, f"{wall:.1f} {cpu:.1f}\n")
        if json.load(open(state))["step"] < size["steps"]:
            return "stopped"  # --stop-after: the next invocation resumes it
    ev_path = os.path.join(d, "eval.json")
    cmd = [args.moec, "eval", "-m", ckpt, "--data", args.data, "--seq", str(size["seq"]),
           "--max-windows", str(size["eval_windows"]), "-t", str(args.threads), "--json", ev_path]
    with open(os.path.join(d, "eval.out"), "w") as f:
        rc = run_child(cmd, f)
    if rc:
        die(f"{s['name']} seed {seed}: moec eval failed (exit {rc}); see {d}/eval.out")
    steps, train_val = read_log(os.path.join(ckpt, "train_log.jsonl"))
    if len(steps) != size["steps"]:
        die(f"{s['name']} seed {seed}: the log has {len(steps)} of {size['steps']} steps")
    res = summarise(d, json.load(open(ev_path)), steps, train_val, cfg, s, seed, key, wall, cpu,
                    [round(load0, 2), round(os.getloadavg()[0], 2)])
    res["moec_version"] = args.moec_version
    write_atomic(res_path, json.dumps(res, indent=1) + "\n")
    if not args.keep_optimizer:  # 2/3 of a checkpoint; the model stays for re-evaluation
        try:
            os.remove(os.path.join(ckpt, "optimizer.safetensors"))
        except FileNotFoundError:
            pass
    return "done"


# ------------------------------------------------------------------------------ aggregation

def mean_sd(v):
    v = [x for x in v if x is not None and not (isinstance(x, float) and math.isnan(x))]
    if not v:
        return None, None, 0
    return sum(v) / len(v), (statistics.stdev(v) if len(v) > 1 else None), len(v)


def aggregate(schemes, out):
    agg = []
    for s in schemes:
        runs = []
        for seed in range(1, s["seeds"] + 1):
            p = os.path.join(out, s["name"], f"seed{seed}", "result.json")
            if os.path.isfile(p):
                runs.append(json.load(open(p)))
        if not runs:
            continue
        a = dict(name=s["name"], preset=s["preset"], overrides=s["overrides"], seeds=s["seeds"], runs=runs,
                 n=len(runs), n_params_active=runs[0]["n_params_active"], routing=runs[0].get("routing"))
        for k, *_ in METRICS + [("ept_loss_corr",), ("true_experts_per_token",)]:
            a[k] = mean_sd([r.get(k) for r in runs])
        names = runs[0]["domain_names"]
        a["domain_names"] = names
        a["domain_loss"] = {n: mean_sd([r["domain_loss"].get(n) for r in runs]) for n in names}
        a["domain_share"] = runs[0]["domain_share"]  # seed 1's (experts are not aligned across seeds)
        curves = [r["ce_curve"] for r in runs]
        a["ce_curve"] = [[c[0], sum(cc[i][1] for cc in curves) / len(curves)] for i, c in enumerate(curves[0])]
        agg.append(a)
    return agg


def compare(agg, a, b, metric, direction):
    """One claim test: Δ = a − b with its standard error (Welch), and the verdict."""
    A = next((x for x in agg if x["name"] == a), None)
    B = next((x for x in agg if x["name"] == b), None) if b else None
    missing = [n for n, x in ((a, A), (b, B)) if n and x is None]
    if missing:
        return dict(missing=missing)
    ma, sa, na = A[metric]
    if b is None:  # a per-scheme statistic with a sign (correlation)
        if ma is None:
            return dict(missing=[a])
        ok = ma > 0 if direction == "higher" else ma < 0
        return dict(delta=ma, se=(sa / math.sqrt(na)) if sa else None, n=(na, 0),
                    verdict=("same direction" if ok else "opposite direction"))
    mb, sb, nb = B[metric]
    if ma is None or mb is None:
        return dict(missing=[n for n, m in ((a, ma), (b, mb)) if m is None])
    delta = ma - mb
    se = math.sqrt((sa or 0) ** 2 / na + (sb or 0) ** 2 / nb) if na > 1 and nb > 1 else None
    resolved = se is not None and abs(delta) > 2 * se
    if direction == "no_worse":  # loss: a must not be worse (higher) than b beyond noise
        if se is None:
            v = "no worse (1 seed, noise unknown)" if delta <= 0 else "worse (1 seed, noise unknown)"
        elif delta <= 0 or not resolved:
            v = "reproduced: no loss cost" + ("" if delta <= 0 else " (worse by less than 2 SE)")
        else:
            v = "not reproduced: worse by more than 2 SE"
    else:
        ok = delta < 0 if direction == "lower" else delta > 0
        if se is None:
            v = ("same" if ok else "opposite") + " direction (1 seed, noise unknown)"
        elif ok:
            v = "reproduced" if resolved else "same direction, within noise (|Δ| < 2 SE)"
        else:
            v = "opposite direction" + ("" if resolved else ", within noise (|Δ| < 2 SE)")
    return dict(delta=delta, se=se, n=(na, nb), verdict=v)


# ------------------------------------------------------------------------------ SVG

COLORS = ["#4e79a7", "#f28e2b", "#e15759", "#76b7b2", "#59a14f", "#edc948", "#b07aa1", "#ff9da7", "#9c755f",
          "#bab0ac", "#1f77b4", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#17becf"]


def esc(t):
    return str(t).replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def nice_range(lo, hi):
    if hi <= lo:
        hi = lo + (abs(lo) * 0.1 or 1.0)
    pad = (hi - lo) * 0.08
    return lo - pad, hi + pad


def ticks(lo, hi, n=5):
    step = (hi - lo) / n
    mag = 10 ** math.floor(math.log10(step))
    step = min((m * mag for m in (1, 2, 2.5, 5, 10) if m * mag >= step), default=10 * mag)
    t = math.ceil(lo / step) * step
    out = []
    while t <= hi + 1e-12:
        out.append(round(t, 10))
        t += step
    return out


def svg_bars(title, ylabel, items, path):
    """items: (label, mean, sd|None, n). Bars with ±sd whiskers and each bar's n."""
    W, H, ml, mr, mt, mb = 760, 360, 70, 20, 40, 110
    vals = [m for _, m, _, _ in items if m is not None]
    his = [m + (s or 0) for _, m, s, _ in items if m is not None]
    los = [m - (s or 0) for _, m, s, _ in items if m is not None]
    if not vals:
        return
    zero_base = min(vals) >= 0 and min(vals) < 0.5 * max(vals)  # else (losses ~ 6) zoom on the differences
    lo, hi = nice_range(0.0 if zero_base else min(los), max(his))
    if zero_base:
        lo = 0.0
    y = lambda v: mt + (H - mt - mb) * (1 - (v - lo) / (hi - lo))
    bw = (W - ml - mr) / max(1, len(items))
    o = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{H}" font-family="sans-serif" font-size="12">',
         f'<rect width="{W}" height="{H}" fill="white"/>',
         f'<text x="{W / 2}" y="20" text-anchor="middle" font-size="14">{esc(title)}</text>',
         f'<text x="14" y="{(mt + H - mb) / 2}" transform="rotate(-90 14 {(mt + H - mb) / 2})" text-anchor="middle">{esc(ylabel)}</text>']
    for t in ticks(lo, hi):
        o.append(f'<line x1="{ml}" x2="{W - mr}" y1="{y(t):.1f}" y2="{y(t):.1f}" stroke="#ddd"/>'
                 f'<text x="{ml - 6}" y="{y(t) + 4:.1f}" text-anchor="end">{t:g}</text>')
    base = y(max(lo, min(0.0, hi))) if lo <= 0 <= hi else y(lo)
    for i, (lab, m, sd, n) in enumerate(items):
        x0 = ml + i * bw + bw * 0.15
        if m is not None:
            top = y(m)
            o.append(f'<rect x="{x0:.1f}" y="{min(top, base):.1f}" width="{bw * 0.7:.1f}" height="{abs(base - top):.1f}" '
                     f'fill="{COLORS[i % len(COLORS)]}"><title>{esc(lab)}: {m:.4g}</title></rect>')
            if sd:
                xc = x0 + bw * 0.35
                o.append(f'<line x1="{xc:.1f}" x2="{xc:.1f}" y1="{y(m - sd):.1f}" y2="{y(m + sd):.1f}" stroke="black"/>'
                         f'<line x1="{xc - 5:.1f}" x2="{xc + 5:.1f}" y1="{y(m + sd):.1f}" y2="{y(m + sd):.1f}" stroke="black"/>'
                         f'<line x1="{xc - 5:.1f}" x2="{xc + 5:.1f}" y1="{y(m - sd):.1f}" y2="{y(m - sd):.1f}" stroke="black"/>')
        xl = ml + i * bw + bw / 2
        o.append(f'<text x="{xl:.1f}" y="{H - mb + 14}" text-anchor="end" transform="rotate(-40 {xl:.1f} {H - mb + 14})">'
                 f'{esc(lab)} (n={n})</text>')
    o.append(f'<line x1="{ml}" x2="{ml}" y1="{mt}" y2="{H - mb}" stroke="black"/></svg>')
    write_atomic(path, "\n".join(o) + "\n")


def svg_scatter(title, xlabel, ylabel, pts, path):
    """pts: (label, x, xsd, y, ysd). Points with ±sd crosses and labels."""
    W, H, ml, mr, mt, mb = 760, 420, 80, 160, 40, 50
    pts = [p for p in pts if p[1] is not None and p[3] is not None]
    if not pts:
        return
    xlo, xhi = nice_range(min(p[1] - (p[2] or 0) for p in pts), max(p[1] + (p[2] or 0) for p in pts))
    ylo, yhi = nice_range(min(p[3] - (p[4] or 0) for p in pts), max(p[3] + (p[4] or 0) for p in pts))
    X = lambda v: ml + (W - ml - mr) * (v - xlo) / (xhi - xlo)
    Y = lambda v: mt + (H - mt - mb) * (1 - (v - ylo) / (yhi - ylo))
    o = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{H}" font-family="sans-serif" font-size="12">',
         f'<rect width="{W}" height="{H}" fill="white"/>',
         f'<text x="{(ml + W - mr) / 2}" y="20" text-anchor="middle" font-size="14">{esc(title)}</text>',
         f'<text x="{(ml + W - mr) / 2}" y="{H - 10}" text-anchor="middle">{esc(xlabel)}</text>',
         f'<text x="16" y="{(mt + H - mb) / 2}" transform="rotate(-90 16 {(mt + H - mb) / 2})" text-anchor="middle">{esc(ylabel)}</text>']
    for t in ticks(xlo, xhi):
        o.append(f'<line x1="{X(t):.1f}" x2="{X(t):.1f}" y1="{mt}" y2="{H - mb}" stroke="#eee"/>'
                 f'<text x="{X(t):.1f}" y="{H - mb + 15}" text-anchor="middle">{t:g}</text>')
    for t in ticks(ylo, yhi):
        o.append(f'<line x1="{ml}" x2="{W - mr}" y1="{Y(t):.1f}" y2="{Y(t):.1f}" stroke="#eee"/>'
                 f'<text x="{ml - 6}" y="{Y(t) + 4:.1f}" text-anchor="end">{t:g}</text>')
    for i, (lab, x, xs, yv, ys) in enumerate(pts):
        c = COLORS[i % len(COLORS)]
        if xs:
            o.append(f'<line x1="{X(x - xs):.1f}" x2="{X(x + xs):.1f}" y1="{Y(yv):.1f}" y2="{Y(yv):.1f}" stroke="{c}"/>')
        if ys:
            o.append(f'<line x1="{X(x):.1f}" x2="{X(x):.1f}" y1="{Y(yv - ys):.1f}" y2="{Y(yv + ys):.1f}" stroke="{c}"/>')
        o.append(f'<circle cx="{X(x):.1f}" cy="{Y(yv):.1f}" r="5" fill="{c}"><title>{esc(lab)}</title></circle>')
        o.append(f'<rect x="{W - mr + 12}" y="{mt + i * 18 - 9}" width="10" height="10" fill="{c}"/>'
                 f'<text x="{W - mr + 27}" y="{mt + i * 18}">{esc(lab)}</text>')
    o.append(f'<rect x="{ml}" y="{mt}" width="{W - ml - mr}" height="{H - mt - mb}" fill="none" stroke="black"/></svg>')
    write_atomic(path, "\n".join(o) + "\n")


def svg_lines(title, xlabel, ylabel, series, path):
    """series: (label, [[x, y], ...]), each smoothed by a 10-step moving average."""
    W, H, ml, mr, mt, mb = 760, 380, 70, 160, 40, 45
    sm = []
    for lab, pts in series:
        ys = [p[1] for p in pts]
        sm.append((lab, [(pts[i][0], sum(ys[max(0, i - 9):i + 1]) / len(ys[max(0, i - 9):i + 1])) for i in range(len(pts))]))
    allx = [x for _, p in sm for x, _ in p]
    ally = [y for _, p in sm for _, y in p[len(p) // 10:]]  # skip the first steps' high loss for the y range
    if not allx or not ally:
        return
    xlo, xhi = min(allx), max(allx) if max(allx) > min(allx) else min(allx) + 1
    ylo, yhi = nice_range(min(ally), max(ally))
    X = lambda v: ml + (W - ml - mr) * (v - xlo) / (xhi - xlo)
    Y = lambda v: mt + (H - mt - mb) * (1 - (min(max(v, ylo), yhi) - ylo) / (yhi - ylo))
    o = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{H}" font-family="sans-serif" font-size="12">',
         f'<rect width="{W}" height="{H}" fill="white"/>',
         f'<text x="{(ml + W - mr) / 2}" y="20" text-anchor="middle" font-size="14">{esc(title)}</text>',
         f'<text x="{(ml + W - mr) / 2}" y="{H - 8}" text-anchor="middle">{esc(xlabel)}</text>',
         f'<text x="16" y="{(mt + H - mb) / 2}" transform="rotate(-90 16 {(mt + H - mb) / 2})" text-anchor="middle">{esc(ylabel)}</text>']
    for t in ticks(ylo, yhi):
        o.append(f'<line x1="{ml}" x2="{W - mr}" y1="{Y(t):.1f}" y2="{Y(t):.1f}" stroke="#eee"/>'
                 f'<text x="{ml - 6}" y="{Y(t) + 4:.1f}" text-anchor="end">{t:g}</text>')
    for t in ticks(xlo, xhi):
        o.append(f'<text x="{X(t):.1f}" y="{H - mb + 15}" text-anchor="middle">{t:g}</text>')
    for i, (lab, p) in enumerate(sm):
        c = COLORS[i % len(COLORS)]
        d = " ".join(f"{X(x):.1f},{Y(y):.1f}" for x, y in p)
        o.append(f'<polyline points="{d}" fill="none" stroke="{c}" stroke-width="1.5"/>')
        o.append(f'<rect x="{W - mr + 12}" y="{mt + i * 18 - 9}" width="10" height="10" fill="{c}"/>'
                 f'<text x="{W - mr + 27}" y="{mt + i * 18}">{esc(lab)}</text>')
    o.append(f'<rect x="{ml}" y="{mt}" width="{W - ml - mr}" height="{H - mt - mb}" fill="none" stroke="black"/></svg>')
    write_atomic(path, "\n".join(o) + "\n")


def svg_heatmaps(agg, path):
    """p(expert | domain), mean over MoE layers, seed 1 of each scheme: one small heatmap each."""
    items = [a for a in agg if a["domain_share"]]
    if not items:
        return
    D = len(items[0]["domain_names"])
    cell, lab_w, cols = 16, 90, 3
    Emax = max(len(a["domain_share"][0]) for a in items)
    pw, ph = lab_w + Emax * cell + 20, 30 + D * cell + 20
    rows = (len(items) + cols - 1) // cols
    W, H = cols * pw, rows * ph + 40
    o = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{H}" font-family="sans-serif" font-size="10">',
         f'<rect width="{W}" height="{H}" fill="white"/>',
         f'<text x="{W / 2}" y="16" text-anchor="middle" font-size="13">share of each domain\'s routed tokens per '
         f'expert (columns), mean over MoE layers, seed 1; darker = larger</text>']
    for i, a in enumerate(items):
        ox, oy = (i % cols) * pw, 30 + (i // cols) * ph
        sh = a["domain_share"]
        E = len(sh[0])
        mx = max(max(r) for r in sh) or 1
        spec = a["specialization"][0]
        o.append(f'<text x="{ox + lab_w}" y="{oy + 12}" font-size="11">{esc(a["name"])}'
                 f'{"" if spec is None else f" (S = {spec:.3f}, mean over seeds)"}</text>')
        for d, name in enumerate(a["domain_names"]):
            y0 = oy + 18 + d * cell
            o.append(f'<text x="{ox + lab_w - 4}" y="{y0 + 12}" text-anchor="end">{esc(name)}</text>')
            for e in range(E):
                v = sh[d][e] / mx
                g = int(255 - 225 * v)
                o.append(f'<rect x="{ox + lab_w + e * cell}" y="{y0}" width="{cell - 1}" height="{cell - 1}" '
                         f'fill="rgb({g},{g},255)"><title>{esc(name)} → expert {e}: {100 * sh[d][e]:.1f}%</title></rect>')
    o.append("</svg>")
    write_atomic(path, "\n".join(o) + "\n")


# ------------------------------------------------------------------------------ report

def fmt(ms, f):
    m, sd, n = ms
    if m is None:
        return "—"
    return f.format(m) + ("" if sd is None else " ± " + f.format(sd))


def same_active(n, ref):
    return abs(n - ref) <= 1e-3 * ref


def claim_notes(cid, agg, size):
    """Facts of this sweep that bear on reading a claim (computed, never hand-written)."""
    out = []
    if cid == "auxfree":
        for a in agg:
            cfg = a["runs"][0]["config"]
            if cfg.get("topk_method") == "noaux_tc":
                u = cfg.get("moec_bias_update_rate", 1e-3)
                out.append(f"`{a['name']}`: the selection bias moves by u = {u:g} per step, so after {size['steps']} steps "
                           f"no expert's bias exceeds u·steps = {u * size['steps']:.3g} (sigmoid scores lie in (0, 1)); "
                           f"the papers' runs take orders of magnitude more steps.")
    return out


def report(args, size_name, size, schemes, agg, did, all_names=()):
    doc_dir = os.path.dirname(os.path.abspath(args.doc))
    fig_dir = os.path.join(doc_dir, os.path.splitext(os.path.basename(args.doc))[0])
    os.makedirs(fig_dir, exist_ok=True)
    rel = os.path.relpath(fig_dir, doc_dir)
    figs = []
    if agg:
        bar = lambda k: [(a["name"], *a[k]) for a in agg]
        svg_bars("validation loss (all domains, moec eval), mean ± sd over seeds", "loss (nats/token)", bar("loss"),
                 os.path.join(fig_dir, "loss.svg"))
        svg_bars("global MaxVio over the validation split, mean over MoE layers", "MaxVio", bar("max_vio"),
                 os.path.join(fig_dir, "maxvio.svg"))
        svg_bars("domain specialization S (normalised I(domain; expert))", "S", bar("specialization"),
                 os.path.join(fig_dir, "specialization.svg"))
        svg_scatter("balance vs loss", "global MaxVio (mean ± sd over seeds)", "validation loss",
                    [(a["name"], a["max_vio"][0], a["max_vio"][1], a["loss"][0], a["loss"][1]) for a in agg],
                    os.path.join(fig_dir, "maxvio_vs_loss.svg"))
        svg_lines("training cross-entropy (10-step moving average, mean over seeds)", "step", "cross-entropy",
                  [(a["name"], a["ce_curve"]) for a in agg], os.path.join(fig_dir, "train_ce.svg"))
        svg_heatmaps(agg, os.path.join(fig_dir, "domain_expert_share.svg"))
        figs = ["loss", "maxvio", "specialization", "maxvio_vs_loss", "train_ce", "domain_expert_share"]
    ref_active = agg[0]["n_params_active"] if agg else None
    cmd = "/usr/bin/python3 scripts/sweep.py" + ("" if args.size == "full" else f" --size {args.size}")
    for flag, val, default in (("--steps", args.steps, None), ("--only", args.only, None),
                               ("--schemes", args.schemes, DEFAULTS["schemes"]), ("--data", args.data, DEFAULTS["data"]),
                               ("--out", args.out, os.path.join(ROOT, "demo", "sweep", size_name)),
                               ("--doc", args.doc, DEFAULTS["doc"])):
        if val and val != default:
            cmd += f" {flag} {shlex.quote(os.path.relpath(val, ROOT) if isinstance(val, str) and os.path.isabs(val) else str(val))}"
    L = []
    L.append("<!-- generated by scripts/sweep.py: do not edit by hand; regenerate with the command below -->")
    L.append("# Router comparison: results\n")
    L.append(f"Regenerate (resumes, trains only what is missing, then rewrites this file and its figures): "
             f"`nice -n 10 {cmd}`; from the results alone: `{cmd} --report-only`. "
             f"Method, metrics and the specialization score: [routers.md, \"The comparison\"](routers.md#the-comparison).\n")
    tok = size["steps"] * size["batch"] * size["accum"] * size["seq"]
    L.append(f"Size `{size_name}`: {size['steps']} steps × {size['batch']} sequences × {size['accum']} micro-batches × "
             f"{size['seq']} tokens = **{tok:,} training tokens per run** for every scheme (lr {size['lr']:g}, warmup "
             f"{size['warmup']}, cosine to lr/10, AdamW defaults), evaluated on {size['eval_windows']} validation windows of "
             f"{size['seq']} tokens per domain. Data `{os.path.relpath(args.data, ROOT)}` (id {did}).\n")
    if size_name != "full":
        L.append(f"**Scale caveat.** This is the `{size_name}` size, not the comparison's `full` size: {tok:,} tokens "
                 "per run is early training, so the directions below are a first look, not the comparison; "
                 "`full` (the default) is what the claims are meant to be read at.\n")
    loads = [x for a in agg for r in a["runs"] for x in (r.get("loadavg") or [])]
    if loads:
        L.append(f"tokens/s were measured on a shared 2-core machine (1-minute load average {min(loads):.1f}–"
                 f"{max(loads):.1f} at the runs' starts and ends): compare them between schemes of one sweep only, "
                 "and read them as relative costs.\n")
    versions = sorted({r.get("moec_version") or "unrecorded" for a in agg for r in a["runs"]})
    if versions:
        L.append(f"Trained and evaluated with moec {', '.join(f'`{v}`' for v in versions)} (`moec --version`)"
                 + (": more than one build, so runs of different schemes may differ in rounding, not in method.\n"
                    if len(versions) > 1 else ".\n"))
    done = sum(a["n"] for a in agg)
    want = sum(s["seeds"] for s in schemes)
    L.append(f"Runs with results: {done} of {want} listed in `{os.path.relpath(args.schemes, ROOT)}`"
             + ("" if done == want else " (the rest had not finished when this was generated)") + ".\n")
    if agg:
        L.append("## Table (mean ± sd over seeds; n = seeds with results)\n")
        L.append("| scheme | n | active params | " + " | ".join(h for _, h, _ in METRICS) + " |")
        L.append("|---|---|---|" + "---|" * len(METRICS))
        for a in agg:
            act = f"{a['n_params_active'] / 1e6:.3f} M" + ("" if same_active(a["n_params_active"], ref_active) else " ≠")
            L.append(f"| `{a['name']}` | {a['n']} | {act} | " + " | ".join(fmt(a[k], f) for k, _, f in METRICS) + " |")
        L.append("")
        if any(not same_active(a["n_params_active"], ref_active) for a in agg):
            L.append(f"≠: active parameters differ from the first scheme's ({ref_active:,}) by more than 0.1%.\n")
        small = [f"`{a['name']}` {a['n_params_active'] - ref_active:+,}" for a in agg
                 if a["n_params_active"] != ref_active and same_active(a["n_params_active"], ref_active)]
        if small:
            L.append(f"Within 0.1% of the first scheme's {ref_active:,} active parameters: {', '.join(small)} "
                     "(router-sized tensors such as the aux-free bias, which moec counts with the parameters).\n")
        names = agg[0]["domain_names"]
        L.append("### Validation loss per domain (mean ± sd over seeds)\n")
        L.append("| scheme | " + " | ".join(names) + " |")
        L.append("|---|" + "---|" * len(names))
        for a in agg:
            L.append(f"| `{a['name']}` | " + " | ".join(fmt(a["domain_loss"].get(n, (None, None, 0)), "{:.3f}")
                                                      for n in names) + " |")
        L.append("")
        L.append("## Figures\n")
        for f in figs:
            L.append(f"![{f}]({rel}/{f}.svg)\n")
    L.append("## The papers' claims at this scale\n")
    L.append("Verdicts are computed by the script from the table (Δ = first − second scheme, SE = Welch standard "
             "error over seeds; \"reproduced\" needs the claimed sign with |Δ| > 2 SE, \"no loss cost\" needs the "
             "first scheme's loss not above the second's by more than 2 SE).\n")
    awaiting = []
    for c in CLAIMS:
        rows = []
        for a, b, metric, direction in c["tests"]:
            r = compare(agg, a, b, metric, direction)
            if "missing" in r:
                rows.append((a, b, metric, None, r["missing"]))
                continue
            se = "" if r["se"] is None else f" ± {r['se']:.4f}"
            vs = f"`{a}` vs `{b}`" if b else f"`{a}`"
            rows.append((a, b, metric, f"| {vs} | {metric} ({direction.replace('_', ' ')}) | {r['delta']:+.4f}{se} | "
                                       f"{r['n'][0]}{'/' + str(r['n'][1]) if b else ''} | {r['verdict']} |", None))
        tested = [x for x in rows if x[3]]
        L.append(f"### {c['text']}\n")
        if tested:
            L.append("| comparison | metric (claimed direction) | Δ ± SE | seeds | verdict |")
            L.append("|---|---|---|---|---|")
            L.extend(x[3] for x in tested)
            L.append("")
        for note in claim_notes(c["id"], agg, size):
            L.append(note + "\n")
        miss = sorted({m for x in rows if x[4] for m in x[4]})
        listed = [m for m in miss if m in all_names]
        absent = [m for m in miss if m not in all_names]
        sf = os.path.relpath(args.schemes, ROOT)
        if listed:
            L.append(("Not tested here: " if not tested else "Also not tested: ") +
                     f"{', '.join(f'`{m}`' for m in listed)} {'is' if len(listed) == 1 else 'are'} listed in `{sf}` "
                     f"but {'has' if len(listed) == 1 else 'have'} no results in this sweep "
                     f"({'left out by --only' if args.only else 'not finished yet'}).\n")
        if absent:
            L.append(("Not tested here: " if not (tested or listed) else "Also not tested: ") +
                     f"{', '.join(f'`{m}`' for m in absent)}: no such scheme in `{sf}` — each is one line `NAME 3` there "
                     f"for a preset `configs/routers/NAME.json` (the routers and expert kinds of issue 10 that are not "
                     f"on this branch); the rerun then trains only the runs it lacks.\n")
        if miss:
            awaiting.append((c["id"], miss))
    L.append(f"Generated {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())} from "
             f"`{os.path.relpath(args.out, ROOT)}/*/seed*/result.json`.")
    write_atomic(args.doc, "\n".join(L) + "\n")
    summary = dict(format="moec-sweep-summary", version=1, size=size_name, sizing=size, data_id=did,
                   schemes=[{k: v for k, v in a.items() if k not in ("runs", "ce_curve")} for a in agg],
                   awaiting=awaiting)
    write_atomic(os.path.join(fig_dir, "summary.json"), json.dumps(summary, indent=1) + "\n")
    return awaiting


# ------------------------------------------------------------------------------ main

DEFAULTS = dict(schemes=os.path.join(ROOT, "scripts", "sweep_schemes.txt"), data=os.path.join(ROOT, "demo", "data"),
                doc=os.path.join(ROOT, "docs", "router_comparison.md"))


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--size", default="full", choices=sorted(SIZES), help="training tokens per run (default full)")
    ap.add_argument("--steps", type=int, help="override the size's steps (then the results go to their own directory)")
    ap.add_argument("--schemes", default=DEFAULTS["schemes"])
    ap.add_argument("--routers", default=os.path.join(ROOT, "configs", "routers"), help="preset directory")
    ap.add_argument("--only", help="comma-separated scheme names: train and report these only")
    ap.add_argument("--data", default=DEFAULTS["data"], help="token shards (default: the main job's)")
    ap.add_argument("--out", help="results directory (default demo/sweep/SIZE)")
    ap.add_argument("--doc", default=DEFAULTS["doc"])
    ap.add_argument("--moec", default=os.path.join(ROOT, "build", "moec"))
    # these tiny models train fastest on one thread each (measured: two -t 1 runs side by side finish in the time
    # of one -t 2 run's 2/3), so the default is one run per core
    ap.add_argument("--jobs", type=int, default=os.cpu_count() or 1, help="runs trained at once (default: cores)")
    ap.add_argument("--threads", type=int, default=1, help="threads per run (default 1)")
    ap.add_argument("--report-only", action="store_true", help="write the doc from the results; train nothing")
    ap.add_argument("--keep-optimizer", action="store_true", help="keep optimizer.safetensors of finished runs")
    ap.add_argument("--no-nice", action="store_true")
    ap.add_argument("--stop-after", type=int, default=0,
                    help="time-boxing: the next unfinished run trains at most N steps, checkpoints, and the sweep "
                         "stops; the same command continues it")
    args = ap.parse_args()
    size = dict(SIZES[args.size])
    size_name = args.size
    if args.steps:
        size["steps"], size_name = args.steps, f"{args.size}-{args.steps}steps"
        size["save_every"] = max(1, min(size["save_every"], args.steps // 2))
    args.out = os.path.abspath(args.out or os.path.join(ROOT, "demo", "sweep", size_name))
    args.data, args.schemes, args.doc = map(os.path.abspath, (args.data, args.schemes, args.doc))
    if not args.no_nice:
        os.nice(10)
    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    schemes = parse_schemes(args.schemes, args.routers)
    all_names = {s["name"] for s in schemes}
    if args.only:
        want = args.only.split(",")
        unknown = [w for w in want if w not in {s["name"] for s in schemes}]
        if unknown:
            die(f"--only: no scheme {', '.join(unknown)} in {args.schemes}")
        schemes = [s for s in schemes if s["name"] in want]
    if not args.report_only:
        if not os.access(args.moec, os.X_OK):
            die(f"{args.moec} is missing: build moec first (make build)")
        v = subprocess.run([args.moec, "--version"], capture_output=True, text=True)
        args.moec_version = v.stdout.split()[-1] if v.returncode == 0 and v.stdout.split() else "unknown"
        ensure_data(args)
    did = data_id(args.data) if os.path.isfile(os.path.join(args.data, "meta.json")) else "?"
    os.makedirs(args.out, exist_ok=True)
    manifest = os.path.join(args.out, "sweep.json")
    if os.path.isfile(manifest) and json.load(open(manifest)).get("sizing") != size:
        die(f"{args.out} holds results of another size ({manifest}); use another --out")
    write_atomic(manifest, json.dumps(dict(size=size_name, sizing=size, data=args.data), indent=1) + "\n")
    if not args.report_only:
        t0 = time.time()
        order = [(s, rnd) for rnd in range(1, max(s["seeds"] for s in schemes) + 1)  # seed 1 of every scheme first
                 for s in schemes if rnd <= s["seeds"]]
        jobs = 1 if args.stop_after else max(1, args.jobs)  # --stop-after stops at the first stopped run

        def one(s, rnd):
            t = time.time()
            r = run_one(args, size, s, rnd, did)
            if r == "done":
                print(f"sweep: {s['name']} seed {rnd}: done in {time.time() - t:.0f} s "
                      f"(load {os.getloadavg()[0]:.1f})", flush=True)
            return r

        with concurrent.futures.ThreadPoolExecutor(jobs) as pool:
            pending, stopped = [], None
            for s, rnd in order:
                pending.append((s, rnd, pool.submit(one, s, rnd)))
                if jobs == 1:  # in order, and --stop-after ends the sweep at once
                    if pending[-1][2].result() == "stopped":
                        stopped = pending[-1]
                        break
            done, _ = concurrent.futures.wait([f for _, _, f in pending], return_when=concurrent.futures.FIRST_EXCEPTION)
            for _, _, f in pending:
                if f.done() and f.exception():
                    for c in list(_children):
                        c.terminate()
                    pool.shutdown(wait=True, cancel_futures=True)
                    if _stopped:
                        print(f"sweep: stopped by signal {_stopped}; the same command continues", file=sys.stderr,
                              flush=True)
                    raise f.exception()
            if stopped:
                print(f"sweep: {stopped[0]['name']} seed {stopped[1]}: stopped after --stop-after {args.stop_after} "
                      f"steps; the same command continues it", flush=True)
                return
        print(f"sweep: all runs done ({time.time() - t0:.0f} s)", flush=True)
    agg = aggregate(schemes, args.out)
    awaiting = report(args, size_name, size, schemes, agg, did, all_names)
    print(f"sweep: wrote {args.doc} ({len(agg)} schemes"
          + (f"; claims awaiting {sorted({m for _, ms in awaiting for m in ms})}" if awaiting else "") + ")")


if __name__ == "__main__":
    main()
