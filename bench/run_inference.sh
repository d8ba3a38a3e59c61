#!/usr/bin/env bash
# Inference benchmark: moec against llama.cpp, side by side in one run, same weights, 2 threads.
#
#   bench/run_inference.sh [M|F|all]          (default all: every checkpoint that is built)
#
# For each checkpoint bench-X (see bench/README.md; built by bench/build_llamacpp.sh) and each
# format F of FORMATS (default "BF16 Q8_0 Q4_0"):
#   llama-bench -m bench/work/gguf/bench-X-F.gguf -p 128 -n 32 -t 2 [--repack 0 for Q8_0/Q4_0]
#   build/moec bench -m DIR -p 128 -n 32 -t 2 -r 3
# with DIR the checkpoint (BF16) or its `moec quantize --type q8|q4` copy, made on first use in
# bench/work/models/bench-X-q8 / -q4.
# then prints a markdown table and writes it to bench/work/results-<date>.md (raw outputs in
# bench/work/raw-<date>/).
#
# Environment: THREADS (2), FORMATS, MOEC (build/moec), MOEC_ARGS (extra args for moec bench),
#   MOEC_TIMEOUT (s, 900), LLAMA_BENCH_ARGS (extra args for llama-bench, e.g. "-r 10"),
#   IDLE_WAIT (s, 180), RETRIES (2), OTHERS_MAX (%, 10): see "Other jobs" below.
set -uo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
WORK="$ROOT/bench/work"
THREADS="${THREADS:-2}"
FORMATS="${FORMATS:-BF16 Q8_0 Q4_0}"
MOEC="${MOEC:-$ROOT/build/moec}"
MOEC_TIMEOUT="${MOEC_TIMEOUT:-900}"
LLAMA_BENCH="$WORK/llama.cpp/build/bin/llama-bench"
STAMP="$(date +%Y%m%d-%H%M%S)"
RAW="$WORK/raw-$STAMP"
OUTMD="$WORK/results-$STAMP.md"
mkdir -p "$RAW"

case "${1:-all}" in
    all) MODELS="M F" ;;
    M|F) MODELS="$1" ;;
    *) echo "usage: $0 [M|F|all]" >&2; exit 2 ;;
esac

# This VM's kernel pages out file cache that no process maps once it has been cold for about a
# minute (a DAMON "pageout" scheme), so a checkpoint not read for a while is partly back on
# disk, and the first repetitions of either engine would measure disk reads (seen: decode at
# 4 tok/s, then 26).  Each engine's files are read once right before its run; while the engine
# maps them they are not paged out.
warm() { cat "$@" > /dev/null; }

# Other jobs on this 2-core machine skew everything.  Before each measured command: wait (up to
# IDLE_WAIT s) until the CPUs are at most 15% busy over 2 s.  During it: account the CPU time
# of everything else (all CPU time minus the command's own) as a share of all cores; if others
# took more than OTHERS_MAX %, wait for quiet and measure again (up to RETRIES more times),
# keeping the least disturbed try.  The table's note gives that share.
busy_pct() {
    local a b
    a=($(head -1 /proc/stat)); sleep 2; b=($(head -1 /proc/stat))
    local idle=$(( (b[4] + b[5]) - (a[4] + a[5]) )) total=0 i
    for i in 1 2 3 4 5 6 7 8; do total=$(( total + b[i] - a[i] )); done
    echo $(( total > 0 ? 100 * (total - idle) / total : 0 ))
}
wait_idle() {
    local deadline=$(( SECONDS + ${IDLE_WAIT:-180} )) b
    while :; do
        b="$(busy_pct)"
        (( b <= 15 || SECONDS >= deadline )) && return 0
        echo "  (CPUs ${b}% busy with other work: $(ps -eo pcpu=,comm= --sort=-pcpu | head -2 \
            | awk '{printf "%s %s%%, ", $2, $1}')waiting)" >&2
        sleep 5
    done
}

# timed OUT ERR CMD...: runs CMD with OPENBLAS_CORETYPE / OPENBLAS_L2_SIZE unset (this
# machine's environment sets them; they are dropped for the measured commands only), stdout to
# OUT, stderr to ERR; prints the share (%) of all CPU time that other processes used meanwhile;
# returns CMD's exit status.
TIMED_PY='
import os, resource, subprocess, sys
def cpu():
    v = [int(x) for x in open("/proc/stat").readline().split()[1:9]]
    return sum(v) - v[3] - v[4], sum(v)
env = {k: v for k, v in os.environ.items() if k not in ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE")}
hz = os.sysconf("SC_CLK_TCK")
b0, t0 = cpu(); r0 = resource.getrusage(resource.RUSAGE_CHILDREN)
with open(sys.argv[1], "w") as o, open(sys.argv[2], "w") as e:
    rc = subprocess.call(sys.argv[3:], stdout=o, stderr=e, env=env)
b1, t1 = cpu(); r1 = resource.getrusage(resource.RUSAGE_CHILDREN)
mine = (r1.ru_utime + r1.ru_stime - r0.ru_utime - r0.ru_stime) * hz
print(round(max(0.0, (b1 - b0) - mine) / max(1, t1 - t0) * 100))
sys.exit(rc)
'
timed() { python3 -c "$TIMED_PY" "$@"; }

# measure TAG CMD...: timed, with retries; leaves $RAW/TAG.out and $RAW/TAG.err of the kept
# try, sets $others (share of other processes, %) and $ok (1 if CMD succeeded).
measure() {
    local tag="$1"; shift
    local try best=999 o rc
    ok=0
    for (( try = 0; try <= ${RETRIES:-2}; try++ )); do
        wait_idle
        echo "+ $*" | sed "s|$ROOT/||g" >&2
        o="$(timed "$RAW/$tag.try.out" "$RAW/$tag.try.err" "$@")"; rc=$?
        if (( rc != 0 )); then
            echo "  failed (exit $rc): $(tail -3 "$RAW/$tag.try.err")" >&2
            if (( ! ok )); then mv "$RAW/$tag.try.out" "$RAW/$tag.out"; mv "$RAW/$tag.try.err" "$RAW/$tag.err"; fi
            break
        fi
        if (( o < best )); then
            best=$o; ok=1
            mv "$RAW/$tag.try.out" "$RAW/$tag.out"; mv "$RAW/$tag.try.err" "$RAW/$tag.err"
        fi
        (( o <= ${OTHERS_MAX:-10} )) && break
        echo "  other processes took ${o}% of the CPUs during the run" >&2
    done
    rm -f "$RAW/$tag.try.out" "$RAW/$tag.try.err"
    others=$best
}

# results.tsv: model engine format pp_ts pp_sd tg_ts tg_sd note
RES="$RAW/results.tsv"
: > "$RES"

have_llama=1
[[ -x "$LLAMA_BENCH" ]] || { echo "llama-bench missing: run bench/build_llamacpp.sh" >&2; have_llama=0; }

LLAMA_TSV_PY='
import json, sys
rows = json.load(open(sys.argv[1]))
pp = next(r for r in rows if r["n_prompt"] > 0 and r["n_gen"] == 0)
tg = next(r for r in rows if r["n_gen"] > 0 and r["n_prompt"] == 0)
cols = [sys.argv[2], "llama.cpp", sys.argv[3]]
cols += ["%.2f" % x for x in (pp["avg_ts"], pp["stddev_ts"], tg["avg_ts"], tg["stddev_ts"])]
cols.append("build %s, %.2f GiB; others %s%% CPU" % (pp["build_commit"], pp["model_size"] / 2**30, sys.argv[4]))
print("\t".join(cols))
'

ran_any=0
for m in $MODELS; do
    hf="$WORK/models/bench-$m"
    if [[ ! -f "$hf/config.json" ]]; then
        echo "bench-$m: no checkpoint at ${hf#$ROOT/} (bench/build_llamacpp.sh all $m); skipped" >&2
        continue
    fi
    ran_any=1
    for fmt in $FORMATS; do
        gguf="$WORK/gguf/bench-$m-$fmt.gguf"
        if [[ $have_llama == 0 || ! -f "$gguf" ]]; then
            printf 'bench-%s\tllama.cpp\t%s\t\t\t\t\tunavailable (no %s)\n' "$m" "$fmt" "${gguf#$ROOT/}" >> "$RES"
            continue
        fi
        # --repack 0 for the block formats: llama.cpp's repacked AMX path (CPUs with AMX, e.g.
        # Sapphire Rapids) segfaults in ggml_backend_amx_mul_mat on these checkpoints
        repack=""
        [[ $fmt != BF16 ]] && repack="--repack 0"
        warm "$gguf"
        measure "llama-$m-$fmt" "$LLAMA_BENCH" -m "$gguf" -p 128 -n 32 -t "$THREADS" $repack ${LLAMA_BENCH_ARGS:-} -o json
        if (( ok )) && python3 -c "$LLAMA_TSV_PY" "$RAW/llama-$m-$fmt.out" "bench-$m" "$fmt" "$others" >> "$RES"; then
            :
        else
            printf 'bench-%s\tllama.cpp\t%s\t\t\t\t\tfailed (see %s)\n' "$m" "$fmt" "${RAW#$ROOT/}/llama-$m-$fmt.err" >> "$RES"
        fi
    done

    # moec: BF16 from the checkpoint itself, Q8_0 / Q4_0 from `moec quantize` of it (made once,
    # next to it: bench/work/models/bench-X-q8, -q4)
    for fmt in $FORMATS; do
        case $fmt in
        BF16) dir="$hf" ;;
        Q8_0) dir="$hf-q8" ;;
        Q4_0) dir="$hf-q4" ;;
        *) continue ;;
        esac
        if [[ ! -x "$MOEC" ]]; then
            printf 'bench-%s\tmoec\t%s\t\t\t\t\tunavailable (no %s)\n' "$m" "$fmt" "${MOEC#$ROOT/}" >> "$RES"
            continue
        fi
        if [[ ! -f "$dir/config.json" ]]; then
            echo "bench-$m: moec quantize to ${dir#$ROOT/}" >&2
            "$MOEC" quantize -m "$hf" -o "$dir" --type "$( [[ $fmt == Q8_0 ]] && echo q8 || echo q4 )" >&2 ||
                { printf 'bench-%s\tmoec\t%s\t\t\t\t\tmoec quantize failed\n' "$m" "$fmt" >> "$RES"; continue; }
        fi
        warm "$dir"/*.safetensors
        measure "moec-$m-$fmt" timeout "$MOEC_TIMEOUT" "$MOEC" bench -m "$dir" -p 128 -n 32 -t "$THREADS" -r 3 ${MOEC_ARGS:-}
        if (( ok )) && grep -q '^pp' "$RAW/moec-$m-$fmt.out"; then
            awk -F'\t' -v m="bench-$m" -v o="$others" -v f="$fmt" '
                $1 ~ /^pp/ { pp = $3; pps = $4 }
                $1 ~ /^tg/ { tg = $3; tgs = $4 }
                $1 == "active_bytes_per_token" { ab = $2 }
                $1 == "read_bw_gb_per_s" { bw = $2 }
                $1 == "rss_over_budget" { rss = $2 }
                END { printf "%s\tmoec\t%s\t%s\t%s\t%s\t%s\tothers %s%% CPU\t%s\t%s\t%s\n", m, f, pp, pps, tg, tgs, o, ab, bw, rss }
            ' "$RAW/moec-$m-$fmt.out" >> "$RES"
        else
            printf 'bench-%s\tmoec\t%s\t\t\t\t\tfailed (see %s)\n' "$m" "$fmt" "${RAW#$ROOT/}/moec-$m-$fmt.err" >> "$RES"
        fi
    done
done

if [[ $ran_any == 0 ]]; then
    echo "no checkpoint built: run bench/build_llamacpp.sh all M (and F)" >&2
    exit 1
fi

cpu_model="$(lscpu | sed -n 's/^Model name: *//p' | head -1)"
cpu_flags="$(grep -m1 '^flags' /proc/cpuinfo | tr ' ' '\n' \
    | grep -E '^(avx|avx2|fma|f16c|avx_vnni|avx512[a-z_0-9]*|amx[a-z_0-9]*)$' | sort | tr '\n' ' ')"
src_info="$(tr '\n' ' ' < "$WORK/llama.cpp/SOURCE_INFO" 2>/dev/null || echo unknown)"

TABLE_PY='
import sys
rows = [l.rstrip("\n").split("\t") for l in open(sys.argv[1]) if l.strip()]
def f(x, s):
    return f"{float(x):.1f} ± {float(s):.1f}" if x else "—"
print("| model | engine | format | prefill tok/s | decode tok/s | moec/llama.cpp ratio | note |")
print("|---|---|---|---:|---:|---:|---|")
for r in rows:
    r = (r + [""] * 8)[:8]
    model, eng, fmt, pp, pps, tg, tgs, note = r
    ratio = "—"
    if eng == "llama.cpp":
        mo = next((x for x in rows if x[0] == model and x[1] == "moec" and x[2] == fmt), None)
        parts = []
        for i, name in ((3, "pp"), (5, "tg")):
            if mo and len(mo) > i and mo[i] and r[i]:
                parts.append(f"{name} {float(mo[i]) / float(r[i]):.2f}x")
        ratio = ", ".join(parts) if parts else "—"
    print(f"| {model} | {eng} | {fmt} | {f(pp, pps)} | {f(tg, tgs)} | {ratio} | {note} |")
# decode against the memory limit: both engines read the same active weights per token; the read
# bandwidth is the one moec bench measured over the same pages right before and after its timed runs
lim = [r for r in rows if len(r) >= 11 and r[1] == "moec" and r[8] and r[9]]
if lim:
    print()
    print("| model | format | active GB/token | read GB/s (median) | moec decode / limit | llama.cpp decode / limit | moec peak RSS vs weights + session |")
    print("|---|---|---:|---:|---:|---:|---:|")
    for r in lim:
        ab, bw = float(r[8]) / 1e9, float(r[9])
        lc = next((x for x in rows if x[0] == r[0] and x[1] == "llama.cpp" and x[2] == r[2] and len(x) > 5 and x[5]), None)
        mf = f"{float(r[5]) * ab / bw:.2f}" if r[5] else "—"
        lf = f"{float(lc[5]) * ab / bw:.2f}" if lc else "—"
        rss = f"{float(r[10]) * 100:+.1f} %" if len(r) > 10 and r[10] else "—"
        print(f"| {r[0]} | {r[2]} | {ab:.3f} | {bw:.1f} | {mf} | {lf} | {rss} |")
'

{
    echo "# moec vs llama.cpp inference, $(date '+%Y-%m-%d %H:%M')"
    echo
    echo "- host: $(nproc) cores, $(free -g | awk '/^Mem:/{print $2}') GiB RAM"
    echo "- CPU: $cpu_model; SIMD flags: ${cpu_flags:-none}"
    echo "- llama.cpp: $src_info; CPU backend, GGML_NATIVE, Release"
    echo "- moec: $(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo '?')$( [[ -n "$(git -C "$ROOT" status --porcelain 2>/dev/null)" ]] && echo ' (dirty tree)')"
    echo "- threads $THREADS; prefill = pp128 (one batch of 128 tokens), decode = tg32 (32 single-token"
    echo "  steps from an empty context); tokens/s, mean ± stddev (llama-bench: 5 repetitions, moec: -r 3)"
    echo "- ratio = moec / llama.cpp row (same checkpoint, same run): prefill, decode"
    echo "- others = share of all CPU time used by other processes during that measurement"
    echo
    python3 -c "$TABLE_PY" "$RES"
} > "$OUTMD"

cat "$OUTMD"
echo
echo "written: ${OUTMD#$ROOT/} (raw outputs in ${RAW#$ROOT/}/)"
