#!/usr/bin/env bash
# moec vs llama.cpp on GGUF files, both directions (issue 7, part 4). Not a CI test: it needs
# llama.cpp built from source (bench/build_llamacpp.sh, ~11 min on 2 cores).
#
#   bench/gguf_vs_llamacpp.sh            (after: bench/build_llamacpp.sh build; make)
#
# 1. moec → llama.cpp: every tiny checkpoint of tests/ref/gguf_tiny.py (mixtral, mixtral f16,
#    qwen2_moe, qwen3_moe, olmoe) exported by `moec export gguf` in f32, f16, bf16 and q8_0 is
#    loaded by llama.cpp (bench/llama_ref.c against libllama): logits of one 24-token prefill
#    compared with `moec logits` on the same file (max |diff| / max |logit|, argmax agreement),
#    the prompt's token ids (llama.cpp's tokenizer on the GGUF vocabulary vs moec's tokenizer
#    on the same GGUF), and 24 greedy tokens (llama.cpp vs `moec generate --temp 0`).
# 2. llama.cpp → moec: the same checkpoints converted by llama.cpp's own convert_hf_to_gguf.py
#    (via build_llamacpp.sh's wrapper and venv; bf16 and, quantized by llama-quantize when
#    present, q8_0): moec logits on that file vs llama.cpp on it, and vs moec on the HF
#    checkpoint.
# "rel" = max |llama.cpp - moec| / max |logit| over all positions. llama.cpp rounds the
# activations to the weights' type before each matmul (F16, BF16, Q8_0 dot products); moec
# converts the weights and multiplies in F32. So for every non-F32 file the weights are also
# dequantized to an F32 GGUF by gguf-py and run in llama.cpp: that comparison isolates what the
# file means. Pass: rel <= 1e-4 on F32 weights (the file itself for f32, the dequantized copy
# otherwise) with the argmax equal at every position, identical prompt ids, and identical
# greedy text except for q8_0 (reported; activation quantization can flip near-ties). Prints a
# table, writes it to bench/work/gguf-vs-llamacpp-<date>.md, exits 1 if anything fails.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
WORK="$ROOT/bench/work"
LCPP="$WORK/llama.cpp"
B="$LCPP/build"
MOEC="${MOEC:-$ROOT/build/moec}"
PY="${PY:-$ROOT/.venv/bin/python}"
OUT="$WORK/gguf_cmp"
mkdir -p "$OUT"

[[ -x "$MOEC" ]] || { echo "gguf_vs_llamacpp: $MOEC missing: run make" >&2; exit 2; }
[[ -f "$B/CMakeCache.txt" ]] || { echo "gguf_vs_llamacpp: llama.cpp not built: bench/build_llamacpp.sh build" >&2; exit 2; }
if [[ ! -f "$B/src/libllama.a" ]]; then
    cmake --build "$B" -j"${JOBS:-2}" --target llama >&2
fi
REF="$WORK/llama_ref"
if [[ ! -x "$REF" || "$ROOT/bench/llama_ref.c" -nt "$REF" ]]; then
    gcc -O2 -std=c11 -Wall -I"$LCPP/include" -I"$LCPP/ggml/include" "$ROOT/bench/llama_ref.c" -o "$REF" \
        "$B/src/libllama.a" "$B/ggml/src/libggml.a" "$B/ggml/src/libggml-cpu.a" "$B/ggml/src/libggml-base.a" \
        -lstdc++ -lm -lpthread -fopenmp
fi
echo "llama.cpp: $(tr '\n' ' ' < "$LCPP/SOURCE_INFO")" >&2

"$PY" - "$MOEC" "$REF" "$OUT" "$ROOT" "$WORK" <<'PYEOF'
import datetime, os, subprocess, sys
import numpy as np
moec, ref, out, root, work = sys.argv[1:6]
sys.path.insert(0, os.path.join(root, "tests", "ref"))
import gguf_tiny, make_tiny

IDS = [5, 17, 99, 3, 250, 42, 7, 130, 64, 1, 200, 33, 90, 11, 277, 8, 150, 60, 21, 222, 14, 101, 77, 240]
PROMPT = "The model reads a GGUF file, and then"
N_GEN = 24
rows, fails = [], 0

def sh(cmd, text=True):
    r = subprocess.run(cmd, capture_output=True, text=text, timeout=900)
    if r.returncode:
        raise RuntimeError(f"{' '.join(cmd[:3])}...: {r.stderr if text else r.stderr.decode(errors='replace')}")
    return r.stdout

def logits_pair(gguf_path, tag):
    a, b = os.path.join(out, tag + ".llama.npy"), os.path.join(out, tag + ".moec.npy")
    sh([ref, gguf_path, "logits", ",".join(map(str, IDS)), a])
    sh([moec, "logits", "-m", gguf_path, "--ids", ",".join(map(str, IDS)), "-o", b, "-t", "2"])
    la, lb = np.load(a), np.load(b)
    return la, lb, float(np.abs(la - lb).max() / np.abs(lb).max()), int((la.argmax(1) == lb.argmax(1)).sum())

def as_f32(path):
    """The same GGUF with every tensor dequantized to F32 by gguf-py (metadata unchanged)."""
    import gguf
    dst = path[:-5] + ".asf32.gguf"
    r = gguf.GGUFReader(path)
    w = gguf.GGUFWriter(dst, r.fields["general.architecture"].contents())
    for k, f in r.fields.items():
        if k.startswith("GGUF.") or k in ("general.architecture", "general.file_type"):
            continue
        t = f.types[0]
        w.add_key_value(k, f.contents(), t, sub_type=f.types[1] if t == gguf.GGUFValueType.ARRAY else None)
    w.add_file_type(0)
    for t in r.tensors:
        a = np.asarray(gguf.quants.dequantize(t.data, t.tensor_type), dtype=np.float32)
        w.add_tensor(t.name, a.reshape([int(x) for x in reversed(t.shape)]))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return dst

def spm_variant(src, dst):
    """src with its vocabulary replaced by a SentencePiece-style one (tokenizer.ggml.model
    "llama": <unk> <s> </s>, 256 byte tokens, ▁-pieces with descending scores), via gguf-py."""
    import gguf
    r = gguf.GGUFReader(src)
    V = len(r.fields["tokenizer.ggml.tokens"].contents())
    toks = ["<unk>", "<s>", "</s>"] + [f"<0x{i:02X}>" for i in range(256)]
    types = [2, 3, 3] + [6] * 256
    normal = ["▁", "e", "t", "a", "o", "i", "n", "s", "r", "h", "l", "d", "m", "c", "u", "f", "g", "y", "p", "w",
              "▁t", "he", "▁the", "in", "▁a", "er", "on", "▁m", "od", "el", "odel", "▁model", "re", "ad", "▁re", "▁read",
              "s▁", "an", "▁an", "▁and", "it", "▁it", "▁i", "▁in", "en", "th", "▁th", "is", "▁is", "at", "▁at", "or",
              "▁o", "▁of", "ing", "▁s", "▁f"]
    normal = [t for t in normal][: V - len(toks)]
    toks += normal
    types += [1] * len(normal)
    while len(toks) < V:
        toks.append(f"[PAD{len(toks)}]"); types.append(5)
    scores = [0.0] * 259 + [-float(i) for i in range(len(toks) - 259)]
    w = gguf.GGUFWriter(dst, r.fields["general.architecture"].contents())
    for k, f in r.fields.items():
        if k.startswith("GGUF.") or k == "general.architecture" or k.startswith("tokenizer."):
            continue
        t = f.types[0]
        w.add_key_value(k, f.contents(), t, sub_type=f.types[1] if t == gguf.GGUFValueType.ARRAY else None)
    w.add_tokenizer_model("llama"); w.add_tokenizer_pre("default")
    w.add_token_list(toks); w.add_token_types(types); w.add_token_scores(scores)
    w.add_bos_token_id(1); w.add_eos_token_id(2); w.add_unk_token_id(0)
    w.add_add_bos_token(False); w.add_add_space_prefix(True)
    for t in r.tensors:
        w.add_tensor(t.name, np.array(t.data), raw_dtype=t.tensor_type)
    w.write_header_to_file(); w.write_kv_data_to_file(); w.write_tensors_to_file(); w.close()
    return dst

dirs = gguf_tiny.write_all(moec, os.path.join(out, "models"), root)
for name, d in dirs.items():
    for typ in ("f32", "f16", "bf16", "q8_0"):
        g = os.path.join(out, f"{name}.{typ}.gguf")
        sh([moec, "export", "gguf", "-m", d, "-o", g, "--type", typ])
        la, lb, rel, am = logits_pair(g, f"{name}.{typ}")
        rel32, am32 = rel, am
        if typ != "f32":  # llama.cpp on the same weights as F32 (dequantized by gguf-py): isolates the file
            g32 = as_f32(g)
            la32 = os.path.join(out, f"{name}.{typ}.asf32.llama.npy")
            sh([ref, g32, "logits", ",".join(map(str, IDS)), la32])
            la32 = np.load(la32)
            rel32 = float(np.abs(la32 - lb).max() / np.abs(lb).max())
            am32 = int((la32.argmax(1) == lb.argmax(1)).sum())
        raw = sh([ref, g, "generate", PROMPT, str(N_GEN)], text=False)
        l_ids = raw.split(b"\n", 1)[0].decode().split(": ", 1)[1].replace(" ", "")
        l_text = raw.split(b"\ntext: ", 1)[1][:-1]
        if typ != "f32":  # greedy text of llama.cpp on the same weights in F32
            raw32 = sh([ref, g32, "generate", PROMPT, str(N_GEN)], text=False)
            l_text32 = raw32.split(b"\ntext: ", 1)[1][:-1]
        else:
            l_text32 = l_text
        m_ids = sh([moec, "tokenize", "-t", g, "--text", PROMPT]).strip()
        m_text = sh([moec, "generate", "-m", g, "-p", PROMPT, "-n", str(N_GEN), "--temp", "0", "--ignore-eos", "-t", "2"],
                    text=False)[:-1]
        same_text = l_text32 == m_text
        ok = rel32 <= 1e-4 and am32 == len(IDS) and l_ids == m_ids and same_text
        fails += not ok
        text_note = ("same" if same_text else "DIFF") + ("" if typ == "f32" else
                                                          f" (llama.cpp on the {typ} file itself: {'same' if l_text == m_text else 'differs'})")
        rows.append(f"| moec export → llama.cpp | {name} | {typ} | {rel32:.1e} | {rel:.1e} | {am32}/{len(IDS)} | "
                    f"{'same' if l_ids == m_ids else 'DIFF'} | {text_note} | {'ok' if ok else 'FAIL'} |")
        print(rows[-1], flush=True)
        if not same_text:
            print("   llama.cpp:", repr(l_text32), "\n   moec:     ", repr(m_text), flush=True)

# llama.cpp's own converter
venv_py = os.path.join(work, "venv", "bin", "python")
quant = os.path.join(work, "llama.cpp", "build", "bin", "llama-quantize")
if os.path.exists(os.path.join(work, "venv", ".ok")):
    wrapper = subprocess.run(["bash", "-c", f"sed -n \"/^CONVERT_WRAPPER='/,/^'$/p\" {root}/bench/build_llamacpp.sh"],
                             capture_output=True, text=True).stdout.split("'", 1)[1].rsplit("'", 1)[0]
    for name, d in dirs.items():
        g = os.path.join(out, f"{name}.convert-bf16.gguf")
        r = subprocess.run([venv_py, "-c", wrapper, os.path.join(work, "llama.cpp"), d, "--outtype", "bf16", "--outfile", g],
                           capture_output=True, text=True, timeout=900)
        if r.returncode:
            fails += 1
            rows.append(f"| convert_hf_to_gguf → moec | {name} | bf16 | converter failed | | | | FAIL |")
            print(rows[-1], r.stderr[-1500:], flush=True)
            continue
        files = [("bf16", g)]
        if os.path.exists(quant):
            q = os.path.join(out, f"{name}.convert-q8_0.gguf")
            subprocess.run([quant, g, q, "Q8_0", "2"], capture_output=True, check=True)
            files.append(("q8_0", q))
        hf = os.path.join(out, f"{name}.hf.npy")
        sh([moec, "logits", "-m", d, "--ids", ",".join(map(str, IDS)), "-o", hf, "-t", "2"])
        src_bf16 = make_tiny.MODELS[name]["dtype"] == "bfloat16"
        for typ, f in files:
            mo = os.path.join(out, f"{name}.convert.{typ}.moec.npy")
            sh([moec, "logits", "-m", f, "--ids", ",".join(map(str, IDS)), "-o", mo, "-t", "2"])
            lb = np.load(mo)
            rel_hf = float(np.abs(lb - np.load(hf)).max() / np.abs(lb).max())
            try:
                la, _, rel, am = logits_pair(f, f"{name}.convert.{typ}")
                la32 = os.path.join(out, f"{name}.convert.{typ}.asf32.llama.npy")
                sh([ref, as_f32(f), "logits", ",".join(map(str, IDS)), la32])
                la32 = np.load(la32)
                rel32 = float(np.abs(la32 - lb).max() / np.abs(lb).max())
                am32 = int((la32.argmax(1) == lb.argmax(1)).sum())
                l_cell = f"{rel32:.1e} | {rel:.1e} | {am32}/{len(IDS)}"
                ok = rel32 <= 1e-4 and am32 == len(IDS)
            except RuntimeError as e:  # llama.cpp cannot load its own converter's file
                why = str(e).split("error loading model: ")[-1].splitlines()[0]
                l_cell = f"llama.cpp cannot load it: {why} | | "
                ok = True
            # moec on the converter's file means the HF weights: exact when the conversion is lossless
            lossless = typ == "bf16" and src_bf16
            ok = ok and (rel_hf <= 1e-4 if lossless else True)
            fails += not ok
            rows.append(f"| convert_hf_to_gguf → moec | {name} | {typ} | {l_cell} | "
                        f"moec on it vs moec on the HF checkpoint: {rel_hf:.1e}{'' if lossless else ' (lossy conversion)'} | | {'ok' if ok else 'FAIL'} |")
            print(rows[-1], flush=True)
else:
    print("llama.cpp's converter venv is missing (bench/build_llamacpp.sh pyenv): part 2 skipped", flush=True)
    fails += 1

# 3. a SentencePiece-style ("llama") vocabulary: llama.cpp's and moec's tokenizers on the same file
spm = spm_variant(os.path.join(out, "g_mixtral.f32.gguf"), os.path.join(out, "g_mixtral.spm.gguf"))
n_same = 0
prompts = ["the model reads it", PROMPT, "  in  the   sea, of 42 things", "Ünïcode café", "isn't that odd?",
           "tabs\tand\nnewlines", "ing ing the"]
for p in prompts:
    raw = sh([ref, spm, "generate", p, "1"], text=False)
    l_ids = raw.split(b"\n", 1)[0].decode().split(": ", 1)[1].replace(" ", "")
    m_ids = sh([moec, "tokenize", "-t", spm, "--text", p]).strip()
    n_same += l_ids == m_ids
    if l_ids != m_ids:
        print("   SPM ids differ on", repr(p), l_ids, m_ids, flush=True)
raw = sh([ref, spm, "generate", PROMPT, str(N_GEN)], text=False)
l_text = raw.split(b"\ntext: ", 1)[1][:-1]
m_text = sh([moec, "generate", "-m", spm, "-p", PROMPT, "-n", str(N_GEN), "--temp", "0", "--ignore-eos", "-t", "2"], text=False)[:-1]
ok = n_same == len(prompts) and l_text == m_text
fails += not ok
rows.append(f"| SentencePiece vocabulary (\"llama\"), gguf-py-written | g_mixtral | f32 | | | | {n_same}/{len(prompts)} prompts same | "
            f"{'same' if l_text == m_text else 'DIFF'} | {'ok' if ok else 'FAIL'} |")
print(rows[-1], flush=True)
if l_text != m_text:
    print("   llama.cpp:", repr(l_text), "\n   moec:     ", repr(m_text), flush=True)

head = ("| direction | model | type | rel diff, llama.cpp on the weights as F32 | rel diff, llama.cpp on the file | argmax equal | prompt ids | greedy text (24 tokens) | |\n"
        "|---|---|---|---|---|---|---|---|---|")
table = head + "\n" + "\n".join(rows)
info = open(os.path.join(work, "llama.cpp", "SOURCE_INFO")).read().replace("\n", ", ")
path = os.path.join(work, f"gguf-vs-llamacpp-{datetime.date.today()}.md")
with open(path, "w") as f:
    f.write(f"llama.cpp: {info}\n\n{table}\n")
print("\n" + table + f"\n\nwritten to {path}; {fails} failed")
sys.exit(1 if fails else 0)
PYEOF
