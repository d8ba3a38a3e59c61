#!/usr/bin/env python3
"""py_test_gguf_errors.py - moec must reject broken GGUF files cleanly.

Run by ctest from the repo root:
    <python> tests/py_test_gguf_errors.py --moec <moec binary> --build-dir <build dir>

Three groups:
  1. Byte-level defects, each in a file built by this script's own minimal GGUF encoder (so any
     field can be forged): bad magic, unsupported / big-endian version, truncated header,
     absurd tensor and key counts, unknown value and array element types, nested arrays, strings
     past the end, over-long keys, NUL in a key, a bool that is 2, duplicate keys and tensors,
     alignment not a power of two or not uint32, offsets not multiples of the alignment, unknown
     ggml type, too many dimensions, an empty or overflowing dimension, a Q8_0 or Q4_0 row that is not
     whole blocks, tensor data past the end (truncated data) and overlapping tensors.
  2. Model-level defects, written with gguf-py's GGUFWriter from a good moec export: another
     architecture, a Q4_K tensor, a missing / unexpected / mis-shaped tensor, scaled RoPE,
     sliding window, a missing or mistyped key, expert_used_count > expert_count, an unknown
     pre-tokenizer.
  Each runs `moec info -m FILE` (the tokenizer case `moec generate`) and requires exit code 1,
  exactly one stderr line starting with "moec ", a keyword naming the problem, and no
  sanitizer / crash output. Control cases check that the good files are accepted.
  3. Fuzz: tests/tool_gguf_fuzz (built with the tests) on two exported files (F32 with the
     vocabulary, Q8_0, Q4_0): every truncation rejected, random bit flips through the parser, the
     model loader, a forward pass and the tokenizer without a crash (CI runs it under ASan+UBSan).
Ends with `N passed, M failed`; exits 1 on any failure.
"""

import argparse
import os
import struct
import subprocess
import sys

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, os.path.join(HERE, "ref"))

import gguf  # noqa: E402

import gguf_tiny  # noqa: E402

CRASH = ("AddressSanitizer", "LeakSanitizer", "runtime error", "Segmentation", "core dumped", "Assertion",
         "Aborted", "internal error")
passed = failed = 0


def check(ok, what):
    global passed, failed
    if ok:
        passed += 1
    else:
        failed += 1
        print("FAIL:", what)
    return ok


# ----------------------------------------------------------------------------- a minimal encoder
U8, I8, U16, I16, U32, I32, F32, BOOL, STR, ARR, U64, I64, F64 = range(13)


def s(b):
    b = b.encode() if isinstance(b, str) else b
    return struct.pack("<Q", len(b)) + b


def val(t, v):
    fmt = {U8: "<B", I8: "<b", U16: "<H", I16: "<h", U32: "<I", I32: "<i", F32: "<f", BOOL: "<B", U64: "<Q",
           I64: "<q", F64: "<d"}
    if t == STR:
        return s(v)
    if t == ARR:
        et, items = v
        return struct.pack("<IQ", et, len(items)) + b"".join(val(et, x) for x in items)
    return struct.pack(fmt[t], v)


def kv(key, t, v, raw_type=None):
    return s(key) + struct.pack("<I", t if raw_type is None else raw_type) + val(t, v)


def tinfo(name, dims, ggml_type, offset, n_dims=None):
    return (s(name) + struct.pack("<I", len(dims) if n_dims is None else n_dims) +
            b"".join(struct.pack("<Q", d) for d in dims) + struct.pack("<IQ", ggml_type, offset))


def build(kvs=None, tensors=None, data=None, version=3, n_t=None, n_kv=None, magic=b"GGUF", align=32):
    kvs = [kv("general.architecture", STR, "llama"), kv("general.alignment", U32, 32)] if kvs is None else kvs
    tensors = [tinfo("a", [32, 2], 0, 0), tinfo("b", [32], 0, 256)] if tensors is None else tensors
    body = magic + struct.pack("<IQQ", version, len(tensors) if n_t is None else n_t, len(kvs) if n_kv is None else n_kv)
    body += b"".join(kvs) + b"".join(tensors)
    body += b"\0" * ((-len(body)) % align)
    return body + (bytes(384) if data is None else data)


BYTE_CASES = {
    "magic": (build(magic=b"GGUG"), "magic"),
    "version1": (build(version=1), "version 1"),
    "big_endian": (build(version=0x03000000), "big-endian"),
    "trunc_header": (build()[:14], "truncated"),
    "empty": (b"", "magic"),
    "tensor_count": (build(n_t=1 << 40), "tensor count"),
    "kv_count": (build(n_kv=1 << 50), "metadata count"),
    "value_type": (build(kvs=[kv("general.architecture", STR, "llama", raw_type=99)]), "unknown gguf value type"),
    "array_type": (build(kvs=[s("x") + struct.pack("<IIQ", ARR, 77, 1) + b"\0" * 8]), "array element type"),
    "nested_array": (build(kvs=[s("x") + struct.pack("<IIQ", ARR, ARR, 1) + struct.pack("<IQ", U8, 0)]), "array of arrays"),
    "array_huge": (build(kvs=[s("x") + struct.pack("<IIQ", ARR, U32, 1 << 61)]), "does not fit"),
    "string_past_end": (build(kvs=[s("x") + struct.pack("<IQ", STR, 1 << 40)]), "truncated"),
    "key_too_long": (build(kvs=[struct.pack("<Q", 70000) + b"k" * 70000 + struct.pack("<I", U8) + b"\0"]), "limit"),
    "key_nul": (build(kvs=[kv("a\0b", U8, 1)]), "nul"),
    "bool_two": (build(kvs=[kv("x", BOOL, 2)]), "bool"),
    "dup_key": (build(kvs=[kv("x", U8, 1), kv("x", U8, 2)]), "twice"),
    "align_pow2": (build(kvs=[kv("general.alignment", U32, 24)], align=24), "power of two"),
    "align_type": (build(kvs=[kv("general.alignment", F32, 32.0)]), "must be uint32"),
    "offset_align": (build(tensors=[tinfo("a", [32, 2], 0, 0), tinfo("b", [32], 0, 260)]), "multiple of the alignment"),
    "ggml_type": (build(tensors=[tinfo("a", [32, 2], 99, 0)]), "unknown ggml type"),
    "n_dims": (build(tensors=[tinfo("a", [1, 1, 1, 1, 1], 0, 0)]), "dimensions"),
    "dim_zero": (build(tensors=[tinfo("a", [32, 0], 0, 0)]), "empty"),
    "dim_overflow": (build(tensors=[tinfo("a", [1 << 40, 1 << 40], 0, 0)]), "overflow"),
    "q8_blocks": (build(tensors=[tinfo("a", [33, 2], 8, 0)]), "blocks"),
    "q4_blocks": (build(tensors=[tinfo("a", [48, 2], 2, 0)]), "blocks"),
    "data_past_end": (build(data=bytes(200)), "past the end"),
    "overlap": (build(tensors=[tinfo("a", [32, 2], 0, 0), tinfo("b", [32], 0, 128)]), "overlap"),
    "dup_tensor": (build(tensors=[tinfo("a", [32], 0, 0), tinfo("a", [32], 0, 128)]), "twice"),
    "tensor_too_big": (build(tensors=[tinfo("a", [1 << 30, 1 << 20], 0, 0)]), "more bytes"),
}


def run_case(moec, path, word, cmd="info"):
    args = [moec, "info", "-m", path] if cmd == "info" else [moec, "generate", "-m", path, "-p", "hi", "-n", "2"]
    r = subprocess.run(args, capture_output=True, text=True, errors="replace", timeout=60)
    lines = [ln for ln in r.stderr.splitlines() if ln.strip()]
    msg = lines[0].replace(path, "FILE") if lines else ""  # the keyword must not come from the file name
    ok = (r.returncode == 1 and len(lines) == 1 and msg.startswith("moec ") and word.lower() in msg.lower()
          and not any(c in r.stderr for c in CRASH))
    check(ok, f"{os.path.basename(path)}: rc {r.returncode}, stderr {r.stderr.strip()[:300]!r} (want '{word}')")


# ----------------------------------------------------------------------------- model-level cases
rewrite = gguf_tiny.rewrite


def set_kv(key, t, v):
    def f(kvs):
        kvs[key] = (t, v, None)
    return f


def drop_kv(key):
    def f(kvs):
        del kvs[key]
    return f


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--moec", required=True)
    ap.add_argument("--build-dir", required=True)
    args = ap.parse_args()
    moec = os.path.abspath(args.moec)
    bdir = os.path.abspath(args.build_dir)
    work = os.path.join(bdir, "gguf_err")
    os.makedirs(work, exist_ok=True)

    for name, (data, word) in BYTE_CASES.items():
        p = os.path.join(work, f"byte_{name}.gguf")
        with open(p, "wb") as f:
            f.write(data)
        run_case(moec, p, word)
    # control: the minimal encoder's good file parses (it fails later, at the model level)
    p = os.path.join(work, "byte_good.gguf")
    with open(p, "wb") as f:
        f.write(build())
    run_case(moec, p, "missing metadata key")

    dirs = gguf_tiny.write_all(moec, os.path.join(work, "models"), ROOT, names=["g_mixtral", "g_qwen2_moe"])
    good = os.path.join(work, "good.gguf")
    goodq = os.path.join(work, "good_q8.gguf")
    goodq4 = os.path.join(work, "good_q4.gguf")
    for d, p, t in ((dirs["g_mixtral"], good, "f32"), (dirs["g_qwen2_moe"], goodq, "q8_0"), (dirs["g_mixtral"], goodq4, "q4_0")):
        r = subprocess.run([moec, "export", "gguf", "-m", d, "-o", p, "--type", t], capture_output=True, text=True)
        if not check(r.returncode == 0, f"export {d}: {r.stderr}"):
            return 1
    r = subprocess.run([moec, "info", "-m", good], capture_output=True, text=True)
    check(r.returncode == 0 and "architecture:   mixtral" in r.stdout, f"control: good.gguf: {r.stderr}")
    same = os.path.join(work, "rewritten_same.gguf")
    rewrite(good, same)
    r = subprocess.run([moec, "info", "-m", same], capture_output=True, text=True)
    check(r.returncode == 0, f"control: an unmodified gguf-py rewrite must load: {r.stderr}")

    GT = gguf.GGMLQuantizationType
    VT = gguf.GGUFValueType

    model_cases = [
        ("arch", dict(edit_kv=lambda kvs: "gpt2"), "architecture 'gpt2'"),
        ("missing", dict(edit_tensors=lambda ts: [t for t in ts if t[0] != "blk.1.ffn_down_exps.weight"]), "missing tensor"),
        ("extra", dict(edit_tensors=lambda ts: ts + [("blk.0.bogus.weight", np.zeros(64, np.float32), GT.F32)]), "unexpected tensor"),
        ("shape", dict(edit_tensors=lambda ts: [(n, a[:16] if n == "blk.0.attn_k.weight" else a, t) for n, a, t in ts]), "shape"),
        ("rope_yarn", dict(edit_kv=set_kv("llama.rope.scaling.type", VT.STRING, "yarn")), "scaled rope"),
        ("sliding", dict(edit_kv=set_kv("llama.attention.sliding_window", VT.UINT32, 64)), "sliding"),
        ("no_blocks", dict(edit_kv=drop_kv("llama.block_count")), "missing metadata key 'llama.block_count'"),
        ("blocks_str", dict(edit_kv=set_kv("llama.block_count", VT.STRING, "two")), "expected an integer"),
        ("used_gt", dict(edit_kv=set_kv("llama.expert_used_count", VT.UINT32, 99)), "outside"),
        ("no_experts", dict(edit_kv=drop_kv("llama.expert_count")), "no experts"),
        ("partial_rope", dict(edit_kv=set_kv("llama.rope.dimension_count", VT.UINT32, 8)), "partial rotary"),
    ]
    for name, kw, word in model_cases:
        p = os.path.join(work, f"model_{name}.gguf")
        rewrite(good, p, **kw)
        run_case(moec, p, word)
    # a Q4_K token_embd (Q4_K rows are 256-element blocks; moec checks the shape before the type, so
    # the whole model is declared 256 wide: token_embd is the first tensor bound and fails on its type)
    p = os.path.join(work, "model_q4k.gguf")

    def to_q4k(ts):
        out = []
        for n, a, t in ts:
            if n == "token_embd.weight":
                a, t = np.zeros((a.shape[0], 144 * 256 // 256), np.uint8), GT.Q4_K  # [V, 256] elements
            out.append((n, a, t))
        return out

    def wide(kvs):
        kvs["llama.embedding_length"] = (VT.UINT32, 256, None)
    rewrite(good, p, edit_kv=wide, edit_tensors=to_q4k)
    run_case(moec, p, "Q4_K")
    p = os.path.join(work, "tok_pre.gguf")
    rewrite(good, p, edit_kv=set_kv("tokenizer.ggml.pre", VT.STRING, "weird-pre"))
    run_case(moec, p, "tokenizer.ggml.pre", cmd="generate")

    # fuzz
    tool = os.path.join(bdir, "tool_gguf_fuzz")
    for seed_file, seed in ((good, 1), (goodq, 2), (goodq4, 3)):
        r = subprocess.run([tool, seed_file, work, "1500", str(seed)], capture_output=True, text=True, errors="replace",
                           timeout=1500)
        print(r.stdout.strip())
        check(r.returncode == 0 and not any(c in r.stderr for c in CRASH) and "0 failures" in r.stdout,
              f"fuzz {os.path.basename(seed_file)}: rc {r.returncode} {r.stderr[-2000:]}")
    print(f"{passed} passed, {failed} failed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
