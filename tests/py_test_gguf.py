#!/usr/bin/env python3
"""py_test_gguf.py - moec's GGUF export and import, checked with the PyPI `gguf` package.

Run by ctest from the repo root:
    <python> tests/py_test_gguf.py --moec <moec binary> --build-dir <build dir>

For every tiny checkpoint of tests/ref/gguf_tiny.py (mixtral, mixtral f16, qwen2_moe with a
shared expert, qwen3_moe with QK-norm, olmoe; each with a byte-level BPE tokenizer.json) and every
export type (f32, f16, bf16, q8_0, q4_0):
  1. `moec export gguf` writes the file; gguf-py's GGUFReader parses it; the metadata equals the
     config (architecture, lengths, heads, experts, rope base, eps, ...); the tensor names are
     exactly what gguf-py's own TensorNameMap gives for the HF names (experts stacked, tied
     output added where llama.cpp needs it) and all belong to the architecture's MODEL_TENSORS;
     norms, biases and routers are F32; every tensor's values equal the HF weights (stacked,
     llama q/k rows permuted as convert_hf_to_gguf does) exactly for f32/bf16, within f16
     rounding for f16, and for q8_0 / q4_0 the blocks equal gguf-py's own quantizer's output
     (scales bit-exact; at most 0.1 % of the quants differ by 1, from rounding ties);
     the vocabulary, token types and merges equal tokenizer.json's.
  2. `moec logits` on the GGUF vs on the HF checkpoint: max|diff| <= 1e-4 * max|ref| for the
     lossless exports (only the kernel path differs); for the lossy ones (q8_0, q4_0, and an F16
     checkpoint written as bf16), against an F32 HF checkpoint made in Python from the GGUF's
     dequantized tensors (gguf-py dequantize, un-permuted): <= 1e-4 for bf16; for q8_0 / q4_0
     <= QUANT_REL = 0.35, because moec's quantized kernels (like llama.cpp's) also quantize the
     activations to 8-bit blocks (relative error ~1/254 per block); the Q8_0/Q4_0 tensors are used
     in place (no dequantization at load). The error against the original is printed.
  3. `moec generate --temp 0` text and `moec tokenize` ids are identical for the GGUF (its own
     vocabulary) and the HF checkpoint.
  4. A GGUF written independently with gguf-py's GGUFWriter from the HF weights (the way
     convert_hf_to_gguf lays it out; F32, Q8_0 and Q4_0) gives the same logits in moec as the
     moec-written file of that type (the same quantizer: <= 1e-4 when the blocks are identical).
  5. GGUFs beyond llama.cpp (qwen2/3-MoE dense layers, OLMoE GQA; written with gguf-py) load
     in moec with the HF checkpoint's logits; exporting such models is refused with one line
     naming the reason.
Ends with `N passed, M failed`; exits 1 on any failure.
"""

import argparse
import json
import os
import shutil
import re
import subprocess
import sys

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, os.path.join(HERE, "ref"))

import gguf  # noqa: E402
import torch  # noqa: E402
from safetensors.torch import load_file, save_file  # noqa: E402

import gguf_tiny  # noqa: E402
import make_tiny  # noqa: E402

IDS = [5, 17, 99, 3, 250, 42, 7, 130, 64, 1, 200, 33, 90, 11, 277, 8]
LOGIT_REL = 1e-4
QUANT_REL = 0.35
TYPES = ["f32", "f16", "bf16", "q8_0", "q4_0"]
GT = gguf.GGMLQuantizationType
WANT_TYPE = {"f32": GT.F32, "f16": GT.F16, "bf16": GT.BF16, "q8_0": GT.Q8_0, "q4_0": GT.Q4_0}
QBYTES = {GT.Q8_0: 34, GT.Q4_0: 18}
ARCH_ENUM = {"llama": gguf.MODEL_ARCH.LLAMA, "qwen2moe": gguf.MODEL_ARCH.QWEN2MOE,
             "qwen3moe": gguf.MODEL_ARCH.QWEN3MOE, "olmoe": gguf.MODEL_ARCH.OLMOE}

passed = failed = 0


def check(ok, what):
    global passed, failed
    if ok:
        passed += 1
    else:
        failed += 1
        print("FAIL:", what)
    return ok


def run(cmd, text=True):
    return subprocess.run(cmd, capture_output=True, text=text, timeout=300)


def moec_logits(moec, model, out):
    r = run([moec, "logits", "-m", model, "--ids", ",".join(map(str, IDS)), "-o", out, "-t", "2"])
    if r.returncode:
        raise RuntimeError(f"moec logits {model}: {r.stderr.strip()}")
    return np.load(out)


def rel_err(a, ref):
    return float(np.abs(a - ref).max() / np.abs(ref).max())


def field(r, key):
    f = r.fields.get(key)
    return None if f is None else f.contents()


def hf_weights(d):
    files = [f for f in os.listdir(d) if f.endswith(".safetensors")]
    w = {}
    for f in files:
        w.update({k: v.float().numpy() for k, v in load_file(os.path.join(d, f)).items()})
    return w


def expected_gguf(cfg, w):
    """GGUF name -> float32 array in GGUF row-major order (ne reversed), from the HF weights,
    using gguf-py's TensorNameMap: the independent statement of llama.cpp's naming."""
    arch = gguf_tiny.GGUF_ARCH[cfg["model_type"]]
    L = cfg["num_hidden_layers"]
    tmap = gguf.get_tensor_name_map(ARCH_ENUM[arch], L)
    nh, nkv = cfg["num_attention_heads"], cfg["num_key_value_heads"]
    out, experts = {}, {}
    for name, t in w.items():
        base, suffix = name.rsplit(".", 1)
        parts = base.split(".")
        if "experts" in parts and parts[parts.index("experts") + 1].isdigit():  # stack per layer/proj
            i = parts.index("experts")
            e = int(parts[i + 1])
            merged = ".".join(parts[:i + 1] + parts[i + 2:])
            experts.setdefault(merged, {})[e] = t
            continue
        g = tmap.get_name(base)
        if g is None and parts[-2] == "mlp" and parts[-1] in ("gate_proj", "up_proj", "down_proj"):
            g = f"blk.{parts[2]}.ffn_{parts[-1][:-5]}"  # a dense layer, beyond what the arch lists
        assert g is not None, f"gguf-py maps no name for {base}"
        if arch == "llama" and base.endswith("q_proj"):
            t = gguf_tiny.permute_qk(t, nh)
        if arch == "llama" and base.endswith("k_proj"):
            t = gguf_tiny.permute_qk(t, nkv)
        if base.endswith("shared_expert_gate"):
            t = t.reshape(-1)
        out[g + "." + suffix] = t
    for merged, es in experts.items():
        g = tmap.get_name(merged)
        assert g is not None, f"gguf-py maps no name for {merged}"
        out[g + ".weight"] = np.stack([es[e] for e in range(len(es))])
    if cfg.get("tie_word_embeddings") and arch in ("qwen2moe", "olmoe"):
        out["output.weight"] = out["token_embd.weight"]
    return arch, out


def tensor_f32(t):
    a = gguf.quants.dequantize(t.data, t.tensor_type)
    return np.asarray(a, dtype=np.float32).reshape([int(x) for x in reversed(t.shape)])


def check_file(path, d, cfg, typ, tok):
    src_f16 = cfg["torch_dtype"] == "float16"
    r = gguf.GGUFReader(path)
    w = hf_weights(d)
    arch, want = expected_gguf(cfg, w)
    tag = f"{os.path.basename(d)} {typ}"
    A = arch
    head_dim = make_tiny.head_dim_of(cfg)
    n_exp = cfg.get("num_local_experts", cfg.get("num_experts"))
    meta = {
        "general.architecture": arch,
        f"{A}.embedding_length": cfg["hidden_size"],
        f"{A}.block_count": cfg["num_hidden_layers"],
        f"{A}.context_length": cfg["max_position_embeddings"],
        f"{A}.attention.head_count": cfg["num_attention_heads"],
        f"{A}.attention.head_count_kv": cfg["num_key_value_heads"],
        f"{A}.attention.key_length": head_dim,
        f"{A}.rope.dimension_count": head_dim,
        f"{A}.expert_count": n_exp,
        f"{A}.expert_used_count": cfg["num_experts_per_tok"],
        "tokenizer.ggml.model": "gpt2",
        "tokenizer.ggml.pre": "qwen2",
    }
    if arch in ("qwen2moe", "qwen3moe"):
        meta[f"{A}.expert_feed_forward_length"] = cfg["moe_intermediate_size"]
    if arch == "qwen2moe":
        meta[f"{A}.expert_shared_feed_forward_length"] = cfg["shared_expert_intermediate_size"]
    for k, v in meta.items():
        check(field(r, k) == v, f"{tag}: {k} = {field(r, k)!r}, want {v!r}")
    for k, v in ((f"{A}.rope.freq_base", cfg["rope_theta"]), (f"{A}.attention.layer_norm_rms_epsilon", cfg["rms_norm_eps"])):
        check(field(r, k) is not None and abs(field(r, k) - v) <= 1e-6 * v, f"{tag}: {k} = {field(r, k)}, want {v}")
    names = {t.name for t in r.tensors}
    check(names == set(want), f"{tag}: tensor names differ: extra {sorted(names - set(want))[:4]} missing {sorted(set(want) - names)[:4]}")
    allowed = {gguf.TENSOR_NAMES[t] for t in gguf.MODEL_TENSORS[ARCH_ENUM[arch]]}
    for n in names:
        generic = n.split(".")
        stem = "blk.{bid}." + generic[2] if generic[0] == "blk" else generic[0]
        check(stem in allowed, f"{tag}: {n} is not a tensor of gguf-py's {arch}")
    for t in r.tensors:
        if t.name not in want:
            continue
        ref = want[t.name].astype(np.float32)
        vec = ref.ndim == 1 or "ffn_gate_inp" in t.name
        wt = GT.F32 if vec else WANT_TYPE[typ]
        if wt in QBYTES and ref.shape[-1] % 32:
            wt = GT.F16
        if not check(t.tensor_type == wt, f"{tag}: {t.name} is {t.tensor_type.name}, want {wt.name}"):
            continue
        got = tensor_f32(t)
        if not check(got.shape == ref.shape, f"{tag}: {t.name} shape {got.shape} != {ref.shape}"):
            continue
        if wt == GT.F32 or (wt == GT.BF16 and not src_f16):
            check(np.array_equal(got, ref), f"{tag}: {t.name} values differ (max {np.abs(got - ref).max()})")
        elif wt == GT.BF16:  # an F16 checkpoint written as BF16: within bf16 rounding
            check(np.all(np.abs(got - ref) <= 1e-30 + 2.0 ** -8 * np.abs(ref)), f"{tag}: {t.name} beyond bf16 rounding")
        elif wt == GT.F16:
            check(np.all(np.abs(got - ref) <= 6e-8 + 1e-3 * np.abs(ref)), f"{tag}: {t.name} beyond f16 rounding")
        else:
            nb = QBYTES[wt]
            mine = np.asarray(t.data).view(np.uint8).reshape(-1, nb)
            theirs = np.asarray(gguf.quants.quantize(ref.reshape(-1, ref.shape[-1]), wt)).view(np.uint8).reshape(-1, nb)
            check(np.array_equal(mine[:, :2], theirs[:, :2]), f"{tag}: {t.name} {wt.name} scales differ from gguf-py's")
            if wt == GT.Q8_0:
                qm, qt = mine[:, 2:].view(np.int8).astype(int), theirs[:, 2:].view(np.int8).astype(int)
            else:  # nibbles: low = element j, high = element j + 16
                qm = np.concatenate([mine[:, 2:] & 15, mine[:, 2:] >> 4], 1).astype(int)
                qt = np.concatenate([theirs[:, 2:] & 15, theirs[:, 2:] >> 4], 1).astype(int)
            dq = np.abs(qm - qt)
            check(dq.max() <= 1 and (dq > 0).mean() <= 1e-3, f"{tag}: {t.name} {wt.name} values differ from gguf-py's ({(dq > 0).mean():.2e})")
    # vocabulary
    vocab = tok["model"]["vocab"]
    id2 = {i: s for s, i in vocab.items()}
    for a in tok.get("added_tokens", []):
        id2[a["id"]] = a["content"]
    V = cfg["vocab_size"]
    want_tokens = [id2.get(i, f"[PAD{i}]") for i in range(V)]
    check(field(r, "tokenizer.ggml.tokens") == want_tokens, f"{tag}: tokens differ from tokenizer.json")
    specials = {a["id"] for a in tok.get("added_tokens", []) if a.get("special")}
    want_types = [3 if i in specials else (1 if i in id2 else 5) for i in range(V)]
    check(field(r, "tokenizer.ggml.token_type") == want_types, f"{tag}: token types differ")
    merges = [m if isinstance(m, str) else " ".join(m) for m in tok["model"]["merges"]]
    check(field(r, "tokenizer.ggml.merges") == merges, f"{tag}: merges differ")
    return r


def dequantized_checkpoint(r, cfg, out_dir):
    """The GGUF's tensors, dequantized by gguf-py and mapped back to HF names (F32): what the
    GGUF means, computed without moec."""
    arch = gguf_tiny.GGUF_ARCH[cfg["model_type"]]
    w = {}
    dummy = make_tiny.make_tensors(cfg["_name"])[1]  # the HF names
    inv = {}
    tmap = gguf.get_tensor_name_map(ARCH_ENUM[arch], cfg["num_hidden_layers"])
    for hf in dummy:
        base, suffix = hf.rsplit(".", 1)
        parts = base.split(".")
        if "experts" in parts and parts[parts.index("experts") + 1].isdigit():
            i = parts.index("experts")
            g = tmap.get_name(".".join(parts[:i + 1] + parts[i + 2:]))
            inv[hf] = (g + "." + suffix, int(parts[i + 1]))
        else:
            inv[hf] = (tmap.get_name(base) + "." + suffix, None)
    tensors = {t.name: tensor_f32(t) for t in r.tensors}
    nh, nkv = cfg["num_attention_heads"], cfg["num_key_value_heads"]
    for hf, (g, e) in inv.items():
        a = tensors[g] if e is None else tensors[g][e]
        if arch == "llama" and hf.endswith("q_proj.weight"):
            a = unpermute(a, nh)
        if arch == "llama" and hf.endswith("k_proj.weight"):
            a = unpermute(a, nkv)
        if hf.endswith("shared_expert_gate.weight"):
            a = a.reshape(1, -1)
        w[hf] = torch.from_numpy(np.array(a, dtype=np.float32))
    os.makedirs(out_dir, exist_ok=True)
    c = {k: v for k, v in cfg.items() if k != "_name"}
    c["torch_dtype"] = "float32"
    with open(os.path.join(out_dir, "config.json"), "w") as f:
        json.dump(c, f)
    save_file(w, os.path.join(out_dir, "model.safetensors"), metadata={"format": "pt"})
    return out_dir


def unpermute(w, n_head):
    return w.reshape(n_head, w.shape[0] // n_head // 2, 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def write_with_gguf_py(d, cfg, tok, path, qtype):
    """An independent GGUF writer: gguf-py's GGUFWriter, laid out as convert_hf_to_gguf does."""
    arch, want = expected_gguf(cfg, hf_weights(d))
    wr = gguf.GGUFWriter(path, arch)
    head_dim = make_tiny.head_dim_of(cfg)
    wr.add_context_length(cfg["max_position_embeddings"])
    wr.add_embedding_length(cfg["hidden_size"])
    wr.add_block_count(cfg["num_hidden_layers"])
    wr.add_head_count(cfg["num_attention_heads"])
    wr.add_head_count_kv(cfg["num_key_value_heads"])
    wr.add_key_length(head_dim)
    wr.add_value_length(head_dim)
    wr.add_rope_freq_base(cfg["rope_theta"])
    wr.add_layer_norm_rms_eps(cfg["rms_norm_eps"])
    wr.add_expert_count(cfg.get("num_local_experts", cfg.get("num_experts")))
    wr.add_expert_used_count(cfg["num_experts_per_tok"])
    if "moe_intermediate_size" in cfg:
        wr.add_expert_feed_forward_length(cfg["moe_intermediate_size"])
    wr.add_feed_forward_length(cfg["intermediate_size"])
    wr.add_tokenizer_model("gpt2")
    wr.add_tokenizer_pre("qwen2")
    vocab = tok["model"]["vocab"]
    id2 = {i: s for s, i in vocab.items()}
    wr.add_token_list([id2.get(i, f"[PAD{i}]") for i in range(cfg["vocab_size"])])
    wr.add_token_types([1 if i in id2 else 5 for i in range(cfg["vocab_size"])])
    wr.add_token_merges([m if isinstance(m, str) else " ".join(m) for m in tok["model"]["merges"]])
    for name, a in want.items():
        a = a.astype(np.float32)
        if qtype in QBYTES and a.ndim > 1 and "ffn_gate_inp" not in name and a.shape[-1] % 32 == 0:
            wr.add_tensor(name, gguf.quants.quantize(a, qtype), raw_dtype=qtype)
        else:
            wr.add_tensor(name, a)
    wr.write_header_to_file()
    wr.write_kv_data_to_file()
    wr.write_tensors_to_file()
    wr.close()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--moec", required=True)
    ap.add_argument("--build-dir", required=True)
    args = ap.parse_args()
    moec = os.path.abspath(args.moec)
    work = os.path.join(os.path.abspath(args.build_dir), "gguf_test")
    dirs = gguf_tiny.write_all(moec, os.path.join(work, "models"), ROOT)
    for name, d in dirs.items():
        cfg = make_tiny.full_config(name)
        cfg["_name"] = name
        with open(os.path.join(d, "tokenizer.json")) as f:
            tok = json.load(f)
        ref = moec_logits(moec, d, os.path.join(work, f"{name}.ref.npy"))
        for typ in TYPES:
            path = os.path.join(work, f"{name}.{typ}.gguf")
            r = run([moec, "export", "gguf", "-m", d, "-o", path, "--type", typ])
            if not check(r.returncode == 0, f"{name} {typ}: export failed: {r.stderr.strip()}"):
                continue
            rd = check_file(path, d, cfg, typ, tok)
            got = moec_logits(moec, path, os.path.join(work, f"{name}.{typ}.npy"))
            quant = typ in ("q8_0", "q4_0")
            lossy = quant or (typ == "bf16" and cfg["torch_dtype"] == "float16")
            if not lossy:
                e = rel_err(got, ref)
                print(f"{name} {typ}: logits vs HF checkpoint rel {e:.2e}")
                check(e <= LOGIT_REL, f"{name} {typ}: logits rel {e:.2e} > {LOGIT_REL}")
            else:
                dq = dequantized_checkpoint(rd, cfg, os.path.join(work, f"{name}.{typ}.dequant"))
                ref_q = moec_logits(moec, dq, os.path.join(work, f"{name}.{typ}.dq.npy"))
                e = rel_err(got, ref_q)
                print(f"{name} {typ}: logits vs gguf-py-dequantized checkpoint rel {e:.2e} "
                      f"(vs the original: {rel_err(got, ref):.2e})")
                tol = QUANT_REL if quant else LOGIT_REL
                check(e <= tol, f"{name} {typ}: logits rel {e:.2e} > {tol}")
            info = run([moec, "info", "-m", path])
            fmts = info.stdout.split("formats:")[1].split("\n")[0] if "formats:" in info.stdout else ""
            check(info.returncode == 0 and f"{typ.upper()} " in fmts, f"{name} {typ}: moec info: {info.stdout[:300]} {info.stderr}")
        # greedy text and tokenizer from the GGUF's own vocabulary
        g32 = os.path.join(work, f"{name}.f32.gguf")
        prompt = "The model reads a GGUF file, and 42 tokens later"
        outs = [run([moec, "generate", "-m", m, "-p", prompt, "-n", "24", "--temp", "0", "--ignore-eos", "-t", "2"], text=False)
                for m in (d, g32)]
        check(outs[0].returncode == 0 and outs[0].stdout == outs[1].stdout,
              f"{name}: greedy text differs: {outs[0].stdout!r} vs {outs[1].stdout!r} {outs[1].stderr}")
        # tokenizer.ggml.add_bos_token = true: generate starts with BOS, as with --bos on the checkpoint
        pb = os.path.join(work, f"{name}.f32.bos.gguf")
        def add_bos(kvs):
            kvs["tokenizer.ggml.add_bos_token"] = (gguf.GGUFValueType.BOOL, True, None)
        gguf_tiny.rewrite(g32, pb, edit_kv=add_bos)
        ob = [run([moec, "generate", "-m", m, "-p", prompt, "-n", "8", "--temp", "0", "--ignore-eos", "-t", "2"] + extra,
                  text=False) for m, extra in ((d, ["--bos"]), (pb, []), (d, []))]
        n_tok = [re.search(rb"prompt (\d+) tokens", o.stderr) for o in ob]
        n_tok = [int(x.group(1)) if x else -1 for x in n_tok]
        check(cfg.get("bos_token_id") is None or (ob[0].stdout == ob[1].stdout and n_tok[0] == n_tok[1] == n_tok[2] + 1),
              f"{name}: add_bos_token: prompt tokens {n_tok} (want --bos = add_bos = plain + 1)")
        for line in (prompt, "Ünïcode — and\ttabs\n  spaces", "x = f(y) + 12345;"):
            ta = run([moec, "tokenize", "-t", os.path.join(d, "tokenizer.json"), "--text", line])
            tb = run([moec, "tokenize", "-t", g32, "--text", line])
            check(ta.returncode == 0 and ta.stdout == tb.stdout, f"{name}: tokenize differs on {line!r}: {ta.stdout} vs {tb.stdout} {tb.stderr}")
        # an independently written GGUF
        for qt in (GT.F32, GT.Q8_0, GT.Q4_0):
            p = os.path.join(work, f"{name}.gguf-py.{qt.name}.gguf")
            write_with_gguf_py(d, cfg, tok, p, qt)
            got = moec_logits(moec, p, os.path.join(work, f"{name}.gp.npy"))
            own = moec_logits(moec, os.path.join(work, f"{name}.{qt.name.lower()}.gguf"), os.path.join(work, f"{name}.own.npy"))
            e = rel_err(got, own)
            print(f"{name}: gguf-py-written {qt.name} vs moec-written: logits rel {e:.2e}")
            check(e <= LOGIT_REL, f"{name}: gguf-py-written {qt.name} GGUF logits rel {e:.2e}")

    # GGUFs that llama.cpp's architectures cannot express but moec reads: dense layers in
    # qwen2moe / qwen3moe, GQA in olmoe (written with gguf-py, the layout extended the obvious way)
    with open(os.path.join(dirs["g_mixtral"], "tokenizer.json")) as f:
        tok = json.load(f)
    for model in ("qwen2_moe", "qwen3_moe", "olmoe"):
        d = make_tiny.write_model(model, os.path.join(work, "beyond"))
        cfg = make_tiny.full_config(model)
        p = os.path.join(work, f"beyond_{model}.gguf")
        write_with_gguf_py(d, cfg, tok, p, GT.F32)
        e = rel_err(moec_logits(moec, p, os.path.join(work, "b1.npy")), moec_logits(moec, d, os.path.join(work, "b2.npy")))
        print(f"{model} (dense layers / GQA) written by gguf-py: logits vs HF checkpoint rel {e:.2e}")
        check(e <= LOGIT_REL, f"{model}: gguf-py-written GGUF with dense layers / GQA: logits rel {e:.2e}")

    # refusals: what llama.cpp's architectures cannot express
    base = os.path.join(work, "refuse")
    for model, word in (("qwen2_moe", "dense"), ("olmoe", "num_key_value_heads"), ("olmoe_f32", "clip_qkv"),
                        ("qwen3_moe_sharded", "dense")):
        d = make_tiny.write_model(model, base)
        r = run([moec, "export", "gguf", "-m", d, "-o", os.path.join(base, model + ".gguf"), "--no-tokenizer"])
        lines = r.stderr.strip().splitlines()
        check(r.returncode == 1 and len(lines) == 2 and word in lines[-1] and not os.path.exists(os.path.join(base, model + ".gguf")),
              f"refuse {model}: rc {r.returncode}, stderr {r.stderr!r}")
    # the exporter's tokenizer.json reader: an id that is no integer below the vocabulary is refused
    # (it was cast to int64 first: 2.5 became 2, 1e300 undefined behaviour; fuzz/fuzz_export_vocab.c)
    for bad in (2.5, 1e300):
        d = os.path.join(work, "badvocab")
        shutil.rmtree(d, ignore_errors=True)
        shutil.copytree(dirs["g_mixtral"], d)
        t = json.load(open(os.path.join(d, "tokenizer.json")))
        t["model"]["vocab"]["zz-bad-id"] = bad
        json.dump(t, open(os.path.join(d, "tokenizer.json"), "w"))
        out = os.path.join(work, "badvocab.gguf")
        r = run([moec, "export", "gguf", "-m", d, "-o", out])
        check(r.returncode == 1 and "not an integer below" in r.stderr and not os.path.exists(out),
              f"export refuses vocab id {bad}: rc {r.returncode}, stderr {r.stderr.strip()[-200:]!r}")
    print(f"{passed} passed, {failed} failed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
