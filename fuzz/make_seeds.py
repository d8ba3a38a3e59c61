#!/usr/bin/env python3
"""make_seeds.py - seed corpora for the fuzz harnesses, and the regression inputs in tests/fuzz/.

    python3 fuzz/make_seeds.py --moec build/moec --out build-fuzz/corpus        # seed corpora
    python3 fuzz/make_seeds.py --moec build/moec --regressions tests/fuzz       # regression inputs

Everything is generated here (no binary blob without its generator): safetensors files are
written byte by byte from the format (8-byte little-endian header length, JSON header, data);
configs come from configs/*.json and crafted variants; tokenizers and token shards are made by
the moec binary itself (`moec tokenizer train`, `moec data`) on a fixed text, so they are real
and deterministic. Multi-file inputs join their files with fuzz_util.h's FZ_SEP line.

The regression set holds the inputs of the bugs issue #9 found (each named after it): the
config whose parameter count wrapped size_t, qwen3_moe with head_dim 0, an index with an empty
weight_map, a Fuse -> Strip decoder, train_state.json numbers out of range, a meta.json whose
n_docs cannot fit its shard; plus one good input per harness (hf_files: the expert-kind presets). Crashes a campaign finds are
added beside them by fuzz/run.sh (crash-<sha1>) and kept forever.
"""
import argparse
import glob
import json
import os
import shutil
import struct
import subprocess
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
SEP = b"\n#MOEC-FUZZ-FILE#\n"
TEXT = ("The quick brown fox jumps over the lazy dog. 0123456789\n"
        "Der schnelle braune Fuchs springt \u00fcber den faulen Hund.\n"
        "\u0411\u044b\u0441\u0442\u0440\u0430\u044f \u043b\u0438\u0441\u0430. \u4f60\u597d\u4e16\u754c \U0001f600\n"
        "\x1e\nA second document, in its own domain file.\n") * 40


def st_bytes(tensors, metadata=None, pad=True):
    """safetensors bytes: tensors = [(name, dtype, shape, data bytes)]."""
    header, off, blob = {}, 0, b""
    if metadata is not None:
        header["__metadata__"] = metadata
    for name, dt, shape, data in tensors:
        header[name] = {"dtype": dt, "shape": shape, "data_offsets": [off, off + len(data)]}
        off += len(data)
        blob += data
    h = json.dumps(header, separators=(",", ":")).encode()
    if pad:
        h += b" " * (-len(h) % 8)
    return struct.pack("<Q", len(h)) + h + blob


def f32(*v):
    return struct.pack(f"<{len(v)}f", *v)


def safetensors_seeds():
    return {
        "f32_bf16_f16": st_bytes([("a", "F32", [2, 2], f32(1, 2, 3, 4)), ("b", "BF16", [3], b"\x80\x3f" * 3),
                                  ("c", "F16", [1, 2], b"\x00\x3c" * 2)], {"format": "pt"}),
        "scalar_and_empty": st_bytes([("s", "F32", [], f32(7)), ("e", "F32", [0, 4], b"")]),
        "four_dims": st_bytes([("x", "F32", [1, 1, 2, 1], f32(1, 2))]),
        "no_tensors": st_bytes([], {"k": "v"}),
        "unpadded": st_bytes([("a", "F16", [1], b"\x00\x3c")], pad=False),
        "unsupported_dtype": st_bytes([("i", "I64", [1], b"\x00" * 8)]),
        # the quantized-weight convention (docs/formats.md): U8 blocks + __metadata__ moec.quant.<name>
        "q8_0_q4_0": st_bytes([("n", "F32", [2], f32(1, 2)),
                               ("q", "U8", [2, 34], (b"\x00\x3c" + bytes(range(32))) * 2),
                               ("r", "U8", [1, 36], (b"\x00\x38" + bytes(range(16))) * 2)],
                              {"format": "pt", "moec.quant.q": "Q8_0", "moec.quant.r": "Q4_0"}),
        "quant_unknown_format": st_bytes([("q", "U8", [1, 34], b"\x00\x3c" + bytes(32))], {"moec.quant.q": "Q9_9"}),
        "quant_no_key": st_bytes([("q", "U8", [1, 34], b"\x00\x3c" + bytes(32))]),
        "quant_stray_key": st_bytes([("a", "F32", [1], f32(1))], {"moec.quant.zz": "Q8_0"}),
    }


def gguf_bytes(kvs, tensors, alignment=32):
    """GGUF v3 bytes. kvs = [(key, type, value)] with type in u32/i32/f32/bool/str/arr_str/arr_i32;
    tensors = [(name, dims (fastest first), ggml type, data bytes)]."""
    def s(x):
        b = x.encode()
        return struct.pack("<Q", len(b)) + b
    enc = {"u32": (4, lambda v: struct.pack("<I", v)), "i32": (5, lambda v: struct.pack("<i", v)),
           "f32": (6, lambda v: struct.pack("<f", v)), "bool": (7, lambda v: struct.pack("<?", v)),
           "str": (8, s),
           "arr_str": (9, lambda v: struct.pack("<IQ", 8, len(v)) + b"".join(s(x) for x in v)),
           "arr_i32": (9, lambda v: struct.pack("<IQ", 5, len(v)) + b"".join(struct.pack("<i", x) for x in v))}
    out = b"GGUF" + struct.pack("<IQQ", 3, len(tensors), len(kvs))
    for key, typ, val in kvs:
        code, f = enc[typ]
        out += s(key) + struct.pack("<I", code) + f(val)
    offs, off = [], 0
    for name, dims, gtype, data in tensors:
        offs.append(off)
        out += s(name) + struct.pack("<I", len(dims)) + b"".join(struct.pack("<Q", d) for d in dims)
        out += struct.pack("<IQ", gtype, off)
        off += (len(data) + alignment - 1) // alignment * alignment
    out += b"\0" * (-len(out) % alignment)
    for (name, dims, gtype, data), o in zip(tensors, offs):
        out += data + b"\0" * (-len(data) % alignment)
    return out


def gguf_seeds():
    q8 = struct.pack("<e", 0.5) + bytes(range(32))  # one Q8_0 block: f16 scale + 32 int8
    kvs = [("general.architecture", "str", "llama"), ("general.alignment", "u32", 32),
           ("llama.block_count", "u32", 1), ("llama.rope.freq_base", "f32", 10000.0),
           ("tokenizer.ggml.add_bos_token", "bool", True), ("tokenizer.ggml.tokens", "arr_str", ["a", "b", "<s>"]),
           ("tokenizer.ggml.token_type", "arr_i32", [1, 1, 3])]
    tensors = [("token_embd.weight", [4, 2], 0, f32(*range(8))),  # F32 [2, 4]
               ("output_norm.weight", [8], 1, struct.pack("<8e", *[1.0] * 8)),  # F16
               ("blk.0.ffn_down_exps.weight", [32, 1, 1], 8, q8)]  # Q8_0, 3-D
    return {"three_types": gguf_bytes(kvs, tensors), "empty": gguf_bytes([], []),
            "metadata_only": gguf_bytes(kvs, [])}


def index_input(weight_map, shards):
    parts = [json.dumps({"metadata": {"total_size": 0}, "weight_map": weight_map}).encode()] + shards
    return SEP.join(parts)


def st_index_seeds():
    s1 = st_bytes([("a", "F32", [2], f32(1, 2))])
    s2 = st_bytes([("b", "BF16", [2], b"\x80\x3f" * 2), ("c", "F32", [1], f32(3))])
    return {
        "two_shards": index_input({"a": "model-00001-of-00003.safetensors", "b": "model-00002-of-00003.safetensors",
                                   "c": "model-00002-of-00003.safetensors"}, [s1, s2]),
        "three_shards": index_input({"a": "model-00001-of-00003.safetensors", "b": "model-00002-of-00003.safetensors",
                                     "c": "model-00002-of-00003.safetensors", "d": "model-00003-of-00003.safetensors"},
                                    [s1, s2, st_bytes([("d", "F16", [1], b"\x00\x3c")])]),
    }


def config_seeds():
    seeds = {}
    for p in sorted(glob.glob(os.path.join(ROOT, "configs", "*.json"))):
        seeds["preset_" + os.path.basename(p)[:-5]] = open(p, "rb").read()
    small = {"model_type": "qwen2_moe", "vocab_size": 64, "hidden_size": 16, "intermediate_size": 32,
             "moe_intermediate_size": 8, "shared_expert_intermediate_size": 16, "num_hidden_layers": 2,
             "num_attention_heads": 2, "num_key_value_heads": 1, "num_experts": 4, "num_experts_per_tok": 2,
             "decoder_sparse_step": 1, "mlp_only_layers": [1], "bos_token_id": 1, "eos_token_id": [2, 3],
             "rope_scaling": None, "sliding_window": 64, "use_sliding_window": False}
    seeds["qwen2_moe_small"] = json.dumps(small).encode()
    seeds["olmoe_small"] = json.dumps(dict(small, model_type="olmoe", clip_qkv=8.0, num_experts=4)).encode()
    return seeds


def config_regressions():
    wrap = dict(json.load(open(os.path.join(ROOT, "configs", "qwen3-tiny.json"))), vocab_size=2047,
                hidden_size=1 << 20, num_hidden_layers=1024, num_attention_heads=48767, num_key_value_heads=48767,
                head_dim=86, num_experts=1364, moe_intermediate_size=1 << 22, mlp_only_layers=[],
                num_experts_per_tok=1)
    hd0 = dict(json.load(open(os.path.join(ROOT, "configs", "qwen3-tiny.json"))), hidden_size=4,
               num_attention_heads=8, num_key_value_heads=8)
    del hd0["head_dim"]
    many = {"model_type": "mixtral", "vocab_size": 8, "hidden_size": 4, "num_hidden_layers": 1024,
            "num_attention_heads": 2, "num_local_experts": 65536, "num_experts_per_tok": 2, "intermediate_size": 4}
    return {"bug_param_count_wraps_size_t": json.dumps(wrap).encode(),
            "bug_qwen3_head_dim_zero": json.dumps(hd0).encode(),
            "bug_1024_layers_65536_experts": json.dumps(many).encode()}


def moec_tokenizer_and_data(moec, tmp):
    txt = os.path.join(tmp, "a.txt")
    txt2 = os.path.join(tmp, "b.txt")
    open(txt, "w").write(TEXT)
    open(txt2, "w").write(TEXT.upper())
    tok = os.path.join(tmp, "tokenizer.json")
    subprocess.run([moec, "tokenizer", "train", "--vocab", "320", "-o", tok, txt, txt2], check=True,
                   capture_output=True)
    data = os.path.join(tmp, "data")
    subprocess.run([moec, "data", "-t", tok, "-o", data, "--force", "--val-fraction", "0.3", txt, txt2], check=True,
                   capture_output=True)
    return tok, data


FUSE_STRIP = {"model": {"type": "BPE", "vocab": {"a": 0, "b": 1, "ab": 2}, "merges": ["a b"]},
              "decoder": {"type": "Sequence", "decoders": [{"type": "Fuse"},
                                                            {"type": "Strip", "content": " ", "start": 1, "stop": 0}]}}


def tokenizer_seeds(tok):
    j = json.load(open(tok))
    seeds = {"moec_trained": open(tok, "rb").read(), "fuse_strip": json.dumps(FUSE_STRIP).encode()}
    meta = json.loads(json.dumps(j))
    meta["pre_tokenizer"] = {"type": "Metaspace", "replacement": "\u2581", "prepend_scheme": "always"}
    meta["decoder"] = {"type": "Sequence", "decoders": [{"type": "Replace", "pattern": {"String": "\u2581"},
                                                         "content": " "}, {"type": "ByteFallback"},
                                                        {"type": "Fuse"}, {"type": "Strip", "content": " ",
                                                                           "start": 1, "stop": 0}]}
    meta["normalizer"] = {"type": "Sequence", "normalizers": [{"type": "NFC"}, {"type": "Lowercase"}]}
    seeds["metaspace_chain"] = json.dumps(meta).encode()
    return seeds


def export_vocab_seeds(tok):
    """tokenizer.json inputs for the exporter's reader: moec's own (byte-level GPT-2 pre-tokenizer),
    the Qwen2 split + ByteLevel sequence it names, added tokens, "a b" merges, padded ids."""
    j = json.load(open(tok))
    qwen = json.loads(json.dumps(j))
    qwen["pre_tokenizer"] = {"type": "Sequence", "pretokenizers": [
        {"type": "Split", "pattern": {"Regex": "(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|"
                                               "\\p{N}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+"},
         "behavior": "Isolated", "invert": False},
        {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": False, "use_regex": False}]}
    pairs = json.loads(json.dumps(j))
    # moec writes merges as [a, b] pairs; the older "a b" strings too
    pairs["model"]["merges"] = [" ".join(m) if isinstance(m, list) else m for m in j["model"]["merges"]]
    pairs["added_tokens"] = [{"id": 400, "content": "<|im_start|>", "special": True},
                             {"id": 401, "content": "tool", "special": False}]
    return {"moec_trained": open(tok, "rb").read(), "qwen2_pre": json.dumps(qwen).encode(),
            "merge_strings_added": json.dumps(pairs).encode()}


def export_vocab_regressions():
    """ids that are no integer below the vocabulary: cast to int64 before the range check they were
    undefined behaviour (1e300) or silently truncated (2.5)."""
    base = {"model": {"type": "BPE", "vocab": {"a": 0, "b": 1}, "merges": ["a b"]},
            "pre_tokenizer": {"type": "ByteLevel", "add_prefix_space": False, "use_regex": True}}
    out = {}
    for name, v in (("bug_vocab_id_huge", 1e300), ("bug_vocab_id_fraction", 2.5), ("vocab_id_negative", -1)):
        b = json.loads(json.dumps(base))
        b["model"]["vocab"]["c"] = v
        out[name] = json.dumps(b).encode()
    b = json.loads(json.dumps(base))
    b["added_tokens"] = [{"id": -1e300, "content": "x"}]
    out["bug_added_id_huge"] = json.dumps(b).encode()
    return out


def tokenizer_text_seeds():
    ids = struct.pack("<6i", 0, 1, 2, 100, 255, 300)
    return {"encode_text": b"\x00" + TEXT[:400].encode(), "encode_special": b"\x00a<|endoftext|>b",
            "encode_invalid_utf8": b"\x00ok \xff\xfe bad", "encode_empty": b"\x00",
            "decode_ids": b"\x01" + ids, "decode_skip_special": b"\x03" + ids, "decode_zero_ids": b"\x01",
            "decode_out_of_range": b"\x01" + struct.pack("<2i", -1, 1 << 30)}


def bpe_train_seeds():
    """Byte 0: vocabulary size over the initial one (low 6 bits), 0x40 = declare a special token."""
    return {"text_10_merges": b"\x0a" + TEXT[:600].encode(), "text_63_merges_special": b"\x7f" + TEXT.encode(),
            "repeated_pair": b"\x20" + b"ab" * 500, "empty": b"\x05", "crlf_tabs": b"\x10a\r\nb\tc  d\n\n",
            "combining": b"\x08e\xcc\x81e\xcc\x8fA\xcc\x8a\n", "invalid_utf8": b"\x08ok \xff\xfe"}


def data_input(d, meta_override=None):
    meta = json.load(open(os.path.join(d, "meta.json")))
    if meta_override:
        meta_override(meta)
    parts = [json.dumps(meta).encode()]
    for name in ("train-00000.bin", "val-00000.bin"):
        parts.append(open(os.path.join(d, name), "rb").read())
    return SEP.join(parts)


def data_seeds(d):
    return {"moec_data": data_input(d)}


def data_regressions(d):
    def huge_docs(m):
        m["train"]["shards"][0]["n_docs"] = 4000000000

    return {"good_moec_data": data_input(d), "bug_meta_n_docs_beyond_shard": data_input(d, huge_docs)}


STATE = {"format": "moec-train-state", "version": 1, "step": 5, "adam_step": 5, "data_cursor": "40",
         "data_id": "000000001234abcd", "seed": "1", "steps": 100, "batch": 8, "seq": 64, "accum": 1, "lr": 1e-3,
         "lr_min": 1e-4, "warmup": 10, "aux_coef": 0.01, "z_coef": 0.001, "weight_decay": 0.1, "clip": 1.0,
         "n_bad": 0}


def state_seeds():
    return {"good": json.dumps(STATE).encode(), "other_run": json.dumps(dict(STATE, seq=128)).encode()}


def state_regressions():
    out = {"good_state": json.dumps(STATE).encode()}
    for k, v in (("n_bad", 1e300), ("n_bad", -1), ("step", 1e300), ("step", -1), ("adam_step", 9e18),
                 ("data_cursor", "-5"), ("data_cursor", "99999999999999999999999")):
        out[f"bug_out_of_range_{k}_{str(v).replace('-', 'neg')}"] = json.dumps(dict(STATE, **{k: v})).encode()
    return out


def cli_seeds():
    return {"int": b"\x0042", "int_neg": b"\x00-3", "int_huge": b"\x0099999999999999999999", "float": b"\x010.8",
            "float_nan": b"\x01nan", "float_exp": b"\x011e308", "ids": b"\x021,2,3", "ids_bad": b"\x021,,2",
            "ids_neg": b"\x02-1", "ids_json": b"\x02[1, 2, 3]", "ids_huge": b"\x02" + b"4294967296",
            "ids_many": b"\x02" + b",".join([b"7"] * 5000),
            # --decode-jsonl and --jsonl lines (tokenize)
            "line_ids": b"\x03[1, 2, 3]\n", "line_ids_empty": b"\x03[]", "line_ids_open": b"\x03[4, 5",
            "line_str": b'\x04"hello \\u00e9 \\ud83d\\ude00 \\n"\n', "line_str_nul": b'\x04  "\\u0000x"  \r\n',
            "line_str_bad": b'\x04"lone \\ud800"', "line_str_ctrl": b'\x04"tab\there"'}


TEMPLATE_SOURCE = {"chat_template": "{% for m in messages %}<|{{ m['role'] }}|>{{ m['content'] }}\n{% endfor %}",
                   "eos_token": "<|endoftext|>"}


def hf_files_input(config, tok=None, template=None, eot=0):
    """Byte 0: the data's end-of-text id + 1 (0: none); then config.json [, tokenizer.json
    [, tokenizer_config.json]] joined by SEP."""
    parts = [config] + ([tok] if tok is not None else []) + ([template] if template is not None else [])
    return bytes([eot + 1]) + SEP.join(parts)


def hf_files_seeds(tok):
    """Every preset config (configs/ and configs/routers/: each router and expert kind) alone, with
    moec's tokenizer, and with a template source; a config without eos (the end-of-text id fills it)."""
    t = open(tok, "rb").read()
    tc = json.dumps(TEMPLATE_SOURCE).encode()
    seeds = {}
    for p in sorted(glob.glob(os.path.join(ROOT, "configs", "*.json")) +
                    glob.glob(os.path.join(ROOT, "configs", "routers", "*.json"))):
        name = os.path.relpath(p, os.path.join(ROOT, "configs"))[:-5].replace("/", "_")
        c = open(p, "rb").read()
        seeds[name] = hf_files_input(c, eot=-1)
        seeds[name + "_tok"] = hf_files_input(c, t, eot=0)
    tiny = json.load(open(os.path.join(ROOT, "configs", "tiny.json")))
    del tiny["eos_token_id"]
    seeds["tiny_no_eos_tok_template"] = hf_files_input(json.dumps(tiny).encode(), t, tc, eot=0)
    seeds["tiny_template_not_json"] = hf_files_input(json.dumps(tiny).encode(), t, b"{", eot=5)
    return seeds


def hf_files_regressions(tok):
    """A good input with every file, the expert-kind presets (hf_files.c once compared neither
    their null/constant/copy experts nor chain-of-experts or ReXMoE fields on the way back), and
    special-token ids too big for int32."""
    s = hf_files_seeds(tok)
    out = {"good_tiny_tok_template": s["tiny_no_eos_tok_template"]}
    # special ids no int32 holds: first_id cast them (undefined behaviour, UBSan)
    huge = dict(json.load(open(os.path.join(ROOT, "configs", "tiny.json"))), eos_token_id=1e300, pad_token_id=[3e10])
    out["bug_special_id_huge"] = hf_files_input(json.dumps(huge).encode(), open(tok, "rb").read())
    for n in ("routers_adamoe-null", "routers_moepp", "routers_chain-of-experts", "routers_rexmoe", "routers_rmoe"):
        out["good_" + n.replace("-", "_")] = s[n]
    return out


def write_set(root, harness, seeds):
    d = os.path.join(root, harness)
    os.makedirs(d, exist_ok=True)
    for name, data in seeds.items():
        with open(os.path.join(d, name), "wb") as f:
            f.write(data)
    return len(seeds)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--moec", required=True, help="a built moec binary (makes the tokenizer and token shards)")
    ap.add_argument("--out", help="write seed corpora to OUT/<harness>/")
    ap.add_argument("--regressions", help="write the regression inputs to DIR/<harness>/ (tests/fuzz)")
    args = ap.parse_args()
    tmp = tempfile.mkdtemp(prefix="moec-seeds-")
    try:
        tok, data = moec_tokenizer_and_data(os.path.abspath(args.moec), tmp)
        if args.out:
            sets = {"safetensors": safetensors_seeds(), "st_index": st_index_seeds(), "gguf": gguf_seeds(),
                    "config": dict(config_seeds(), **config_regressions()), "tokenizer_load": tokenizer_seeds(tok),
                    "tokenizer_text": tokenizer_text_seeds(), "bpe_train": bpe_train_seeds(), "data": data_seeds(data),
                    "train_state": dict(state_seeds(), **state_regressions()), "cli_args": cli_seeds(),
                    "export_vocab": export_vocab_seeds(tok), "hf_files": hf_files_seeds(tok)}
            for h, s in sets.items():
                print(f"{h}: {write_set(args.out, h, s)} seeds")
        if args.regressions:
            index_empty = index_input({}, [])
            sts = safetensors_seeds()
            sets = {"safetensors": {"good_three_dtypes": sts["f32_bf16_f16"], "good_q8_0_q4_0": sts["q8_0_q4_0"],
                                    "quant_unknown_format": sts["quant_unknown_format"]},
                    "gguf": {"good_three_types": gguf_seeds()["three_types"]},
                    "st_index": {"good_two_shards": st_index_seeds()["two_shards"],
                                 "bug_empty_weight_map": index_empty},
                    "config": dict(config_regressions(), good_qwen3_tiny=config_seeds()["preset_qwen3-tiny"]),
                    "tokenizer_load": {"bug_fuse_strip_decoder": json.dumps(FUSE_STRIP).encode()},
                    "tokenizer_text": {"bug_decode_zero_ids": b"\x01", "good_encode": b"\x00hello world"},
                    "bpe_train": {"good_text": bpe_train_seeds()["text_10_merges"],
                                  "good_invalid_utf8": bpe_train_seeds()["invalid_utf8"]},
                    "data": data_regressions(data), "train_state": state_regressions(),
                    "cli_args": {"good_ids": b"\x021,2,3", "int_huge": b"\x0099999999999999999999"},
                    "export_vocab": dict(export_vocab_regressions(), good_moec_trained=export_vocab_seeds(tok)["moec_trained"]),
                    "hf_files": hf_files_regressions(tok)}
            for h, s in sets.items():
                print(f"{h}: {write_set(args.regressions, h, s)} regression inputs")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
