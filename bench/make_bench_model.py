#!/usr/bin/env python3
"""Writes a bench checkpoint (random weights) in exact Hugging Face layout.

    make_bench_model.py --arch mixtral --out DIR    # bench-M
    make_bench_model.py --arch olmoe   --out DIR    # bench-F

bench-M (MixtralForCausalLM): d 1024, 16 layers, 16 heads, 4 KV heads, 8 experts top-2,
    expert ff 2816, vocab 32000, rope_theta 1e6                       (1.21B params)
bench-F (OlmoeForCausalLM):   d 1024, 16 layers, 16 heads (MHA), 64 experts top-8,
    expert ff 512, vocab 32000, rope_theta 1e4, q/k RMSNorm           (1.74B params)

Weights: N(0, 0.02) rounded to bf16 (torch's round-to-nearest-even), RMSNorm weights 1.0,
from a fixed seed (--seed), so the same command gives the same bytes.  Written one tensor at a
time straight into the safetensors shards (the format is an 8-byte header length, a JSON
header, then the raw data), so memory stays at about one tensor; every shard is then opened
with the `safetensors` package to check it.  Sharding and naming follow transformers'
save_pretrained: model-0000i-of-0000n.safetensors + model.safetensors.index.json, a new shard
started when the next tensor would push the current one past --max-shard-bytes (2 GB).

Tokenizer: a byte-level BPE (GPT-2 pre-tokenizer and byte alphabet) trained with the HF
`tokenizers` package on local text (by default the Python standard library's .py files under
/usr/lib/python3.11, sorted), exactly 32000 entries: 4 specials <unk> <s> </s> <pad>
(ids 0-3), the 256 byte symbols, and merges.  Not a good tokenizer; a valid one.

Needs: torch, numpy, safetensors, tokenizers.  Run with /work/main/.venv/bin/python or
bench/work/venv/bin/python.
"""
import argparse
import glob
import json
import os
import struct
import sys
import time

import numpy as np
import torch

VOCAB = 32000
SPECIALS = ["<unk>", "<s>", "</s>", "<pad>"]
UNK_ID, BOS_ID, EOS_ID, PAD_ID = 0, 1, 2, 3
TRANSFORMERS_VERSION = "4.57.6"  # the version whose config fields these mirror


def mixtral_config():
    d, L, H, KV, E, K, FF = 1024, 16, 16, 4, 8, 2, 2816
    return {
        "architectures": ["MixtralForCausalLM"],
        "attention_dropout": 0.0,
        "bos_token_id": BOS_ID,
        "eos_token_id": EOS_ID,
        "head_dim": d // H,
        "hidden_act": "silu",
        "hidden_size": d,
        "initializer_range": 0.02,
        "intermediate_size": FF,
        "max_position_embeddings": 4096,
        "model_type": "mixtral",
        "num_attention_heads": H,
        "num_experts_per_tok": K,
        "num_hidden_layers": L,
        "num_key_value_heads": KV,
        "num_local_experts": E,
        "output_router_logits": False,
        "rms_norm_eps": 1e-05,
        "rope_theta": 1000000.0,
        "router_aux_loss_coef": 0.02,
        "router_jitter_noise": 0.0,
        "sliding_window": None,
        "tie_word_embeddings": False,
        "torch_dtype": "bfloat16",
        "transformers_version": TRANSFORMERS_VERSION,
        "use_cache": True,
        "vocab_size": VOCAB,
    }


def olmoe_config():
    d, L, H, E, K, FF = 1024, 16, 16, 64, 8, 512
    return {
        "architectures": ["OlmoeForCausalLM"],
        "attention_bias": False,
        "attention_dropout": 0.0,
        "bos_token_id": None,
        "clip_qkv": None,
        "eos_token_id": EOS_ID,
        "hidden_act": "silu",
        "hidden_size": d,
        "initializer_range": 0.02,
        "intermediate_size": FF,
        "max_position_embeddings": 4096,
        "model_type": "olmoe",
        "norm_topk_prob": False,
        "num_attention_heads": H,
        "num_experts": E,
        "num_experts_per_tok": K,
        "num_hidden_layers": L,
        "num_key_value_heads": H,
        "output_router_logits": False,
        "pad_token_id": PAD_ID,
        "rms_norm_eps": 1e-05,
        "rope_scaling": None,
        "rope_theta": 10000.0,
        "router_aux_loss_coef": 0.01,
        "tie_word_embeddings": False,
        "torch_dtype": "bfloat16",
        "transformers_version": TRANSFORMERS_VERSION,
        "use_cache": True,
        "vocab_size": VOCAB,
    }


def tensor_list(arch, cfg):
    """(name, shape, kind) in the order of the model's state_dict; kind 'norm' -> ones."""
    d = cfg["hidden_size"]
    H = cfg["num_attention_heads"]
    KV = cfg["num_key_value_heads"]
    hd = d // H
    ff = cfg["intermediate_size"]
    V = cfg["vocab_size"]
    out = [("model.embed_tokens.weight", (V, d), "rand")]
    for i in range(cfg["num_hidden_layers"]):
        p = f"model.layers.{i}."
        out += [
            (p + "self_attn.q_proj.weight", (H * hd, d), "rand"),
            (p + "self_attn.k_proj.weight", (KV * hd, d), "rand"),
            (p + "self_attn.v_proj.weight", (KV * hd, d), "rand"),
            (p + "self_attn.o_proj.weight", (d, H * hd), "rand"),
        ]
        if arch == "mixtral":
            out.append((p + "block_sparse_moe.gate.weight", (cfg["num_local_experts"], d), "rand"))
            for e in range(cfg["num_local_experts"]):
                q = f"{p}block_sparse_moe.experts.{e}."
                out += [
                    (q + "w1.weight", (ff, d), "rand"),
                    (q + "w2.weight", (d, ff), "rand"),
                    (q + "w3.weight", (ff, d), "rand"),
                ]
        else:
            out += [
                (p + "self_attn.q_norm.weight", (H * hd,), "norm"),
                (p + "self_attn.k_norm.weight", (KV * hd,), "norm"),
                (p + "mlp.gate.weight", (cfg["num_experts"], d), "rand"),
            ]
            for e in range(cfg["num_experts"]):
                q = f"{p}mlp.experts.{e}."
                out += [
                    (q + "gate_proj.weight", (ff, d), "rand"),
                    (q + "up_proj.weight", (ff, d), "rand"),
                    (q + "down_proj.weight", (d, ff), "rand"),
                ]
        out += [
            (p + "input_layernorm.weight", (d,), "norm"),
            (p + "post_attention_layernorm.weight", (d,), "norm"),
        ]
    out += [("model.norm.weight", (d,), "norm"), ("lm_head.weight", (V, d), "rand")]
    return out


def nbytes(shape):
    n = 2  # bf16
    for s in shape:
        n *= s
    return n


def make_tensor(kind, shape, gen, std):
    if kind == "norm":
        t = torch.ones(shape, dtype=torch.bfloat16)
    else:
        t = (torch.randn(shape, generator=gen, dtype=torch.float32) * std).to(torch.bfloat16)
    # torch 1.13 cannot hand bf16 to numpy: reinterpret as int16 (same bytes, little-endian)
    return t.contiguous().view(torch.int16).numpy()


def write_shard(path, entries, gen, std):
    """entries: [(name, shape, kind)] in file order. Streams each tensor into the file."""
    header = {"__metadata__": {"format": "pt"}}
    off = 0
    for name, shape, _ in entries:
        n = nbytes(shape)
        header[name] = {"dtype": "BF16", "shape": list(shape), "data_offsets": [off, off + n]}
        off += n
    hjson = json.dumps(header, separators=(",", ":")).encode("utf-8")
    hjson += b" " * (-len(hjson) % 8)  # safetensors pads the header to 8 bytes with spaces
    tmp = path + ".tmp"
    with open(tmp, "wb") as f:
        f.write(struct.pack("<Q", len(hjson)))
        f.write(hjson)
        for name, shape, kind in entries:
            a = make_tensor(kind, shape, gen, std)
            assert a.nbytes == nbytes(shape), name
            f.write(a.tobytes())
    os.replace(tmp, path)
    return off


def check_shard(path, entries):
    from safetensors import safe_open

    with safe_open(path, framework="pt") as f:
        keys = set(f.keys())
        want = {n for n, _, _ in entries}
        if keys != want:
            raise SystemExit(f"{path}: tensor names differ from what was written")
        if f.metadata() != {"format": "pt"}:
            raise SystemExit(f"{path}: metadata {f.metadata()}")
        for name, shape, kind in entries:
            sl = f.get_slice(name)
            if tuple(sl.get_shape()) != tuple(shape) or sl.get_dtype() != "BF16":
                raise SystemExit(f"{path}: {name} has {sl.get_shape()} {sl.get_dtype()}")
        # spot-check values: a norm is all ones, a random matrix has std ~0.02
        for name, shape, kind in entries:
            if kind == "norm":
                t = f.get_tensor(name)
                assert t.dtype == torch.bfloat16 and bool((t == 1).all()), name
                break
        for name, shape, kind in entries:
            if kind == "rand":
                t = f.get_tensor(name).float()
                s = float(t.std())
                assert 0.018 < s < 0.022 and abs(float(t.mean())) < 1e-3, (name, s)
                break


def corpus_files(spec):
    if spec:
        files = []
        for pat in spec.split(","):
            files += glob.glob(pat, recursive=True)
    else:
        base = "/usr/lib/python3.11"
        files = [
            f
            for f in glob.glob(base + "/**/*.py", recursive=True)
            if "-packages/" not in f and "/test" not in f
        ]
    files = sorted(set(f for f in files if os.path.isfile(f)))
    if not files:
        raise SystemExit("no corpus files for the tokenizer (use --corpus GLOB[,GLOB])")
    return files


def write_tokenizer(out, corpus, max_len):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers

    files = corpus_files(corpus)
    size = sum(os.path.getsize(f) for f in files)
    print(f"tokenizer: training byte-level BPE on {len(files)} files ({size / 1e6:.1f} MB)", file=sys.stderr)
    tok = Tokenizer(models.BPE(dropout=None, unk_token=None, fuse_unk=False, byte_fallback=False))
    tok.normalizer = None
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, trim_offsets=True, use_regex=True)
    tok.post_processor = processors.ByteLevel(add_prefix_space=False, trim_offsets=False, use_regex=True)
    tok.decoder = decoders.ByteLevel(add_prefix_space=False, trim_offsets=True, use_regex=True)
    trainer = trainers.BpeTrainer(
        vocab_size=VOCAB,
        min_frequency=1,
        show_progress=False,
        special_tokens=SPECIALS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )

    def lines():
        for fn in files:
            with open(fn, "r", encoding="utf-8", errors="replace") as f:
                yield f.read()

    tok.train_from_iterator(lines(), trainer=trainer, length=len(files))
    n = tok.get_vocab_size(with_added_tokens=True)
    if n != VOCAB:
        raise SystemExit(f"tokenizer has {n} entries, not {VOCAB}: give more text with --corpus")
    for i, s in enumerate(SPECIALS):
        assert tok.token_to_id(s) == i, s
    tok.save(os.path.join(out, "tokenizer.json"))

    added = {
        str(i): {
            "content": s,
            "lstrip": False,
            "normalized": False,
            "rstrip": False,
            "single_word": False,
            "special": True,
        }
        for i, s in enumerate(SPECIALS)
    }
    tok_cfg = {
        "add_bos_token": False,
        "add_eos_token": False,
        "add_prefix_space": False,
        "added_tokens_decoder": added,
        "bos_token": "<s>",
        "clean_up_tokenization_spaces": False,
        "eos_token": "</s>",
        "extra_special_tokens": {},
        "model_max_length": max_len,
        "pad_token": "<pad>",
        "tokenizer_class": "PreTrainedTokenizerFast",
        "unk_token": "<unk>",
    }
    with open(os.path.join(out, "tokenizer_config.json"), "w") as f:
        json.dump(tok_cfg, f, indent=2)
        f.write("\n")
    with open(os.path.join(out, "special_tokens_map.json"), "w") as f:
        json.dump({"bos_token": "<s>", "eos_token": "</s>", "pad_token": "<pad>", "unk_token": "<unk>"}, f, indent=2)
        f.write("\n")


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--arch", choices=["mixtral", "olmoe"], required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--std", type=float, default=0.02)
    ap.add_argument("--max-shard-bytes", type=float, default=2e9)
    ap.add_argument("--corpus", default=None, help="comma-separated globs of text for the tokenizer")
    ap.add_argument("--no-tokenizer", action="store_true")
    args = ap.parse_args()

    torch.set_num_threads(1)
    os.makedirs(args.out, exist_ok=True)
    cfg = mixtral_config() if args.arch == "mixtral" else olmoe_config()
    tensors = tensor_list(args.arch, cfg)
    n_params = sum(nbytes(s) // 2 for _, s, _ in tensors)
    total = sum(nbytes(s) for _, s, _ in tensors)
    print(f"{args.arch}: {len(tensors)} tensors, {n_params / 1e9:.3f}B params, {total / 1e9:.2f} GB bf16", file=sys.stderr)

    # shards like save_pretrained: start a new one when the next tensor would overflow
    shards, cur, cur_size = [], [], 0
    for t in tensors:
        n = nbytes(t[1])
        if cur and cur_size + n > args.max_shard_bytes:
            shards.append(cur)
            cur, cur_size = [], 0
        cur.append(t)
        cur_size += n
    shards.append(cur)
    ns = len(shards)

    # remove stale shards of another layout
    for f in glob.glob(os.path.join(args.out, "model*.safetensors*")):
        os.remove(f)

    gen = torch.Generator().manual_seed(args.seed)
    weight_map = {}
    t0 = time.time()
    for i, entries in enumerate(shards):
        fname = "model.safetensors" if ns == 1 else f"model-{i + 1:05d}-of-{ns:05d}.safetensors"
        path = os.path.join(args.out, fname)
        sz = write_shard(path, entries, gen, args.std)
        check_shard(path, entries)
        print(f"  {fname}: {len(entries)} tensors, {sz / 1e9:.2f} GB ({time.time() - t0:.0f} s)", file=sys.stderr)
        for name, _, _ in entries:
            weight_map[name] = fname
    if ns > 1:
        with open(os.path.join(args.out, "model.safetensors.index.json"), "w") as f:
            json.dump({"metadata": {"total_size": total}, "weight_map": weight_map}, f, indent=2)
            f.write("\n")

    with open(os.path.join(args.out, "config.json"), "w") as f:
        json.dump(cfg, f, indent=2, sort_keys=True)
        f.write("\n")
    gen_cfg = {"_from_model_config": True, "eos_token_id": cfg["eos_token_id"], "transformers_version": TRANSFORMERS_VERSION}
    if cfg.get("bos_token_id") is not None:
        gen_cfg["bos_token_id"] = cfg["bos_token_id"]
    if cfg.get("pad_token_id") is not None:
        gen_cfg["pad_token_id"] = cfg["pad_token_id"]
    with open(os.path.join(args.out, "generation_config.json"), "w") as f:
        json.dump(gen_cfg, f, indent=2, sort_keys=True)
        f.write("\n")

    if not args.no_tokenizer:
        write_tokenizer(args.out, args.corpus, cfg["max_position_embeddings"])
    print(f"wrote {args.out}", file=sys.stderr)


if __name__ == "__main__":
    main()
