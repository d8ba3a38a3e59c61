#!/usr/bin/env bash
# Accuracy per weight format: the perplexity change that quantization costs a trained moec
# checkpoint, in moec (`moec quantize --type q8|q4`) and in llama.cpp (llama-quantize Q8_0/Q4_0
# of the model exported by `moec export gguf --type f32`), on the same validation data.
#
#   bench/quant_accuracy.sh [CKPT [DATA]]
#
#   CKPT     trained HF-layout checkpoint with tokenizer.json
#            (default: demo/sweep/full/global-lbl/seed1/ckpt, the router sweep's Mixtral-style
#            global-batch-LBL model)
#   DATA     its token shards from `moec data` (default: demo/data)
#   env THREADS (default 1), SEQ (default 128: the training length; moec eval's window and
#       llama-perplexity's n_ctx), MAX_WINDOWS (moec eval windows per domain, default 64),
#       TEXT_TOKENS (val tokens per domain in the llama.cpp text, default 8192), NAME (output
#       folder name, default derived from CKPT), MOEC (default build/moec), LLAMA_BIN (default
#       bench/work/llama.cpp/build/bin, made by bench/build_llamacpp.sh build)
#
# Needs python3 with numpy (.venv's if present).  Outputs under bench/work/accuracy/NAME/
# (git-ignored); idempotent: every step whose output exists is skipped, the table is always
# reprinted (and written to table.md).
#
# What is measured:
#  1. moec: quantize to q8/q4, `moec eval` of F32/q8/q4 on DATA's val split (all domains, SEQ-token
#     windows, every target of a window scored; 'all' row).
#  2. llama.cpp: the validation text is the first TEXT_TOKENS-or-so tokens of each domain's val
#     documents, decoded by `moec tokenize --decode-jsonl --skip-special` and joined with nothing
#     in between (the end-of-text ids are dropped: llama-perplexity does not parse special tokens).
#     llama-tokenize's ids of that text are compared with `moec tokenize --file`'s; then
#     llama-perplexity -c SEQ -b SEQ --no-escape on F32/Q8_0/Q4_0 GGUFs (n_ctx chunks, the second
#     half of each chunk scored).
#  3. moec again with llama-perplexity's windowing: `moec logits` of each SEQ-token chunk of
#     llama-tokenize's ids, scored like llama-perplexity (targets SEQ/2+1 .. SEQ-1 of each chunk),
#     for the F32/q8/q4 checkpoints: the same tokens and windows as llama.cpp, so the F32 figure
#     must agree with llama.cpp's F32 to float rounding.  Also moec on llama.cpp's three GGUFs
#     (moec loads GGUF), which must agree with llama-perplexity format by format.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
CKPT="$(realpath -m "${1:-$ROOT/demo/sweep/full/global-lbl/seed1/ckpt}")"
DATA="$(realpath -m "${2:-$ROOT/demo/data}")"
THREADS="${THREADS:-1}"
SEQ="${SEQ:-128}"
MAX_WINDOWS="${MAX_WINDOWS:-64}"
TEXT_TOKENS="${TEXT_TOKENS:-8192}"
MOEC="${MOEC:-$ROOT/build/moec}"
LLAMA_BIN="${LLAMA_BIN:-$ROOT/bench/work/llama.cpp/build/bin}"
PY="${PY:-$ROOT/.venv/bin/python}"
[[ -x "$PY" ]] || PY=python3
NAME="${NAME:-$(basename "$(dirname "$(dirname "$CKPT")")")-$(basename "$(dirname "$CKPT")")}"
OUT="$ROOT/bench/work/accuracy/$NAME"

die() { echo "quant_accuracy: $*" >&2; exit 1; }
log() { printf '\n=== %s\n' "$*" >&2; }

[[ -f "$CKPT/config.json" && -f "$CKPT/tokenizer.json" ]] || die "$CKPT: not a checkpoint with tokenizer.json"
[[ -f "$DATA/meta.json" ]] || die "$DATA: no meta.json (make it with moec data)"
[[ -x "$MOEC" ]] || die "$MOEC missing (cmake --build build)"
for t in llama-quantize llama-perplexity llama-tokenize; do
    [[ -x "$LLAMA_BIN/$t" ]] || die "$LLAMA_BIN/$t missing (bench/build_llamacpp.sh build)"
done
(( SEQ >= 4 && SEQ % 2 == 0 )) || die "SEQ must be even and >= 4"
"$PY" -c 'import numpy' 2>/dev/null || die "$PY has no numpy"
mkdir -p "$OUT"
# Steps are skipped when their output exists, so a folder must hold one setting's outputs only.
settings="$(printf 'checkpoint %s\ndata %s\nseq %s max_windows %s text_tokens %s' \
    "$CKPT" "$DATA" "$SEQ" "$MAX_WINDOWS" "$TEXT_TOKENS")"
if [[ -f "$OUT/SETTINGS" ]]; then
    [[ "$(cat "$OUT/SETTINGS")" == "$settings" ]] ||
        die "$OUT holds outputs of other settings ($OUT/SETTINGS): remove it or set NAME"
else
    printf '%s\n' "$settings" > "$OUT/SETTINGS"
fi

# run_once OUTPUT CMD...: runs CMD (which writes OUTPUT.tmp) unless OUTPUT exists.
run_once() {
    local out="$1"; shift
    if [[ -e "$out" ]]; then log "present: $out"; return; fi
    log "$*"
    rm -rf "$out.tmp"
    "$@"
    mv "$out.tmp" "$out"
}

# ---------------------------------------------------------------- 1. moec
for q in q8 q4; do
    run_once "$OUT/moec-$q" "$MOEC" quantize -m "$CKPT" -o "$OUT/moec-$q.tmp" --type "$q"
done
declare -A MODEL=([F32]="$CKPT" [q8]="$OUT/moec-q8" [q4]="$OUT/moec-q4")
for f in F32 q8 q4; do
    run_once "$OUT/eval-$f.json" "$MOEC" eval -m "${MODEL[$f]}" --data "$DATA" --seq "$SEQ" \
        --max-windows "$MAX_WINDOWS" -t "$THREADS" --json "$OUT/eval-$f.json.tmp"
done

# ---------------------------------------------------------------- 2. llama.cpp
run_once "$OUT/F32.gguf" "$MOEC" export gguf -m "$CKPT" -o "$OUT/F32.gguf.tmp" --type f32
for q in Q8_0 Q4_0; do
    run_once "$OUT/$q.gguf" "$LLAMA_BIN/llama-quantize" "$OUT/F32.gguf" "$OUT/$q.gguf.tmp" "$q" "$THREADS"
done

# The validation text: per domain, the val documents in shard order until TEXT_TOKENS tokens.
make_text() {
    "$PY" - "$DATA" "$TEXT_TOKENS" > "$OUT/val-docs.jsonl.tmp" <<'EOF'
import json, struct, sys
data, want = sys.argv[1], int(sys.argv[2])
meta = json.load(open(data + "/meta.json"))
taken = {}
for sh in meta["val"]["shards"]:
    b = open(data + "/" + sh["file"], "rb").read()
    if b[:8] != b"MOECTOK\0":
        sys.exit("quant_accuracy: %s: not a moec token shard" % sh["file"])
    _, hb, _, dt, n_tok, n_docs, n_dom, _, eot, _, _, _ = struct.unpack_from("<IIIIQIIQIIII", b, 8)
    toks = struct.unpack_from("<%d%s" % (n_tok, "H" if dt == 2 else "I"), b, hb)
    for i in range(n_docs):
        o, n, dom, _ = struct.unpack_from("<QQII", b, 64 + 64 * n_dom + 24 * i)
        if taken.get(dom, 0) >= want:
            continue
        ids = [t for t in toks[o:o + n] if t != eot]
        taken[dom] = taken.get(dom, 0) + len(ids)
        print(json.dumps(ids))
EOF
    mv "$OUT/val-docs.jsonl.tmp" "$OUT/val-docs.jsonl"
    "$MOEC" tokenize -t "$CKPT/tokenizer.json" --decode-jsonl "$OUT/val-docs.jsonl" --skip-special \
        | "$PY" -c '
import json, sys
text = "".join(json.loads(l) for l in sys.stdin)
# llama.cpp drops one trailing newline of a -f file: end the text without one
sys.stdout.write(text.rstrip("\n"))' > "$OUT/val.txt.tmp"
}
run_once "$OUT/val.txt" make_text

# Token ids of the text by both tokenizers (llama.cpp's from the GGUF's vocabulary).
llama_ids() {
    "$LLAMA_BIN/llama-tokenize" -m "$OUT/F32.gguf" -f "$OUT/val.txt" --ids --no-escape --log-disable \
        | tr -d '[] ' | tr ',' '\n' | grep . > "$OUT/val.llama-ids.tmp"
}
moec_ids() {
    "$MOEC" tokenize -t "$CKPT/tokenizer.json" --file "$OUT/val.txt" | tr ',' '\n' | grep . > "$OUT/val.moec-ids.tmp"
}
run_once "$OUT/val.llama-ids" llama_ids
run_once "$OUT/val.moec-ids" moec_ids

# -nr (no repacking): the repacked AMX path dies with SIGILL in tinygemm_kernel_amx on this CPU
# (cpuinfo lists amx_int8/amx_tile) for Q8_0/Q4_0, as bench/run_inference.sh notes for llama-bench.
for q in F32 Q8_0 Q4_0; do
    run_once "$OUT/ppl-$q.log" sh -c "'$LLAMA_BIN/llama-perplexity' -m '$OUT/$q.gguf' -f '$OUT/val.txt' --no-escape \
        -c $SEQ -b $SEQ -ub $SEQ -nr -t $THREADS > '$OUT/ppl-$q.log.tmp' 2>&1"
done

# ---------------------------------------------------------------- 3. moec, llama-perplexity's windows
moec_llama_windows() {
    local model="$1" out="$2" tmp
    tmp="$(mktemp -d)"
    "$PY" - "$MOEC" "$model" "$OUT/val.llama-ids" "$SEQ" "$THREADS" "$tmp" > "$out" <<'EOF'
import subprocess, sys
import numpy as np
moec, model, ids_path, n_ctx, threads, tmp = sys.argv[1:]
n_ctx = int(n_ctx)
ids = [int(x) for x in open(ids_path).read().split()]
first, nll, count = n_ctx // 2, 0.0, 0
for c in range(len(ids) // n_ctx):
    chunk = ids[c * n_ctx:(c + 1) * n_ctx]
    subprocess.run([moec, "logits", "-m", model, "--ids", ",".join(map(str, chunk)), "-o", tmp + "/l.npy",
                    "-t", threads], check=True)
    x = np.load(tmp + "/l.npy").astype(np.float64)[first:n_ctx - 1]
    m = x.max(axis=1)
    lse = m + np.log(np.exp(x - m[:, None]).sum(axis=1))
    nll += float((lse - x[np.arange(len(x)), chunk[first + 1:n_ctx]]).sum())
    count += n_ctx - 1 - first
print("chunks %d targets %d nll %.10f ppl %.6f" % (len(ids) // n_ctx, count, nll, np.exp(nll / count)))
EOF
    rm -rf "$tmp"
}
for f in F32 q8 q4; do
    run_once "$OUT/moec-llamawin-$f.txt" moec_llama_windows "${MODEL[$f]}" "$OUT/moec-llamawin-$f.txt.tmp"
done
# moec on llama.cpp's own GGUFs: the same quantized bytes in both engines, so a difference from
# llama-perplexity is the engines' arithmetic, not the formats' tensor mix.
for q in F32 Q8_0 Q4_0; do
    run_once "$OUT/moec-llamawin-gguf-$q.txt" moec_llama_windows "$OUT/$q.gguf" "$OUT/moec-llamawin-gguf-$q.txt.tmp"
done

# ---------------------------------------------------------------- table
"$PY" - "$OUT" "$CKPT" <<'EOF' | tee "$OUT/table.md"
import json, math, os, re, sys
out, ckpt = sys.argv[1:]
def st_bytes(d):  # the weights' files (a training checkpoint also holds optimizer.safetensors)
    return sum(os.path.getsize(os.path.join(d, f)) for f in os.listdir(d)
               if f.endswith(".safetensors") and f.startswith("model"))
def llama_ppl(q):
    m = re.search(r"Final estimate: PPL = ([0-9.]+) \+/- ([0-9.]+)", open("%s/ppl-%s.log" % (out, q)).read())
    if not m:
        sys.exit("quant_accuracy: no 'Final estimate' in %s/ppl-%s.log" % (out, q))
    return float(m.group(1)), float(m.group(2))
def llamawin(f):
    return float(open("%s/moec-llamawin-%s.txt" % (out, f)).read().split()[-1])
def llamawin_gguf(q):
    return llamawin("gguf-" + q)
rows = [("F32", ckpt, "F32"), ("q8", out + "/moec-q8", "Q8_0"), ("q4", out + "/moec-q4", "Q4_0")]
ev = {f: json.load(open("%s/eval-%s.json" % (out, f)))["all"] for f, _, _ in rows}
lw = {f: llamawin(f) for f, _, _ in rows}
lp = {q: llama_ppl(q) for _, _, q in rows}
lg = {q: llamawin_gguf(q) for _, _, q in rows}
lid = open(out + "/val.llama-ids").read().split()
mid = open(out + "/val.moec-ids").read().split()
same = lid == mid
diff = next((i for i, (a, b) in enumerate(zip(lid, mid)) if a != b), min(len(lid), len(mid)))
pct = lambda a, b: "%+.3f %%" % (100.0 * (a / b - 1.0))
print("validation text: %d tokens (llama-tokenize) vs %d (moec tokenize): %s"
      % (len(lid), len(mid), "identical ids" if same else "ids differ from index %d" % diff))
print("moec eval: %d targets; llama-perplexity windows: %s" % (ev["F32"]["targets"],
      open(out + "/moec-llamawin-F32.txt").read().split(" nll")[0]))
print()
print("| format (moec / llama.cpp) | moec bytes | moec eval ppl | change | moec ppl, llama windows | change "
      "| GGUF bytes | llama.cpp ppl | change | moec on that GGUF, llama windows | change |")
print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
for f, d, q in rows:
    print("| %s / %s | %s | %.3f | %s | %.3f | %s | %s | %.3f ± %.3f | %s | %.3f | %s |" % (
        f, q, format(st_bytes(d), ","), ev[f]["perplexity"], pct(ev[f]["perplexity"], ev["F32"]["perplexity"]),
        lw[f], pct(lw[f], lw["F32"]), format(os.path.getsize("%s/%s.gguf" % (out, q)), ","),
        lp[q][0], lp[q][1], pct(lp[q][0], lp["F32"][0]), lg[q], pct(lg[q], lg["F32"])))
EOF
