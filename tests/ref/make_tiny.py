#!/usr/bin/env python3
"""make_tiny.py - write tiny random MoE checkpoints in exact Hugging Face layout.

Each model is a directory with
  config.json            the fields HF's config class writes for that model_type
                         (what `save_pretrained` writes with transformers 4.51)
  model.safetensors      written with the `safetensors` package, HF tensor names
or, for the sharded variant,
  model-0000K-of-0000N.safetensors + model.safetensors.index.json
                         ({"metadata": {"total_size": bytes}, "weight_map": {...}})

Models (see MODELS below for the exact numbers):
  mixtral            bf16, GQA, 8 experts top-2, block_sparse_moe.{gate,experts.j.w1/w2/w3}
  qwen2_moe          bf16, GQA, qkv bias, 8 experts top-4 + shared expert with sigmoid gate,
                     one dense MLP layer via mlp_only_layers, norm_topk_prob=false,
                     tie_word_embeddings=true (no lm_head.weight tensor)
  qwen3_moe          bf16, GQA, head_dim (32) != hidden/heads (16), per-head q_norm/k_norm,
                     12 experts top-3, norm_topk_prob=true, dense layers via decoder_sparse_step=2
  olmoe              bf16, GQA, q_norm/k_norm over the full projections, 16 experts top-4,
                     norm_topk_prob=false
  mixtral_f16        float16 variant of mixtral (other seed, 3 layers, top-2 of 10 experts)
  olmoe_f32          float32 variant of olmoe with clip_qkv set so that clipping is active
  qwen3_moe_sharded  qwen3_moe variant with attention_bias=true, split into 3 shards

Everything is deterministic (torch.Generator seeded per model).

CLI: make_tiny.py --out DIR [--arch NAME ...] [--list]
NAME is a model name above or an architecture (model_type), which selects all of its models.
"""

import argparse
import json
import math
import os
import sys

import torch
from safetensors.torch import save_file

GENERATOR_VERSION = 1  # bump when the generated weights or configs change

_DTYPES = {"bfloat16": torch.bfloat16, "float16": torch.float16, "float32": torch.float32}

# --------------------------------------------------------------------------------------
# Model table. "config" holds only the numbers we choose; full_config() fills in every
# other field the HF config class would save, with HF's defaults.
# --------------------------------------------------------------------------------------
MODELS = {
    "mixtral": dict(
        arch="mixtral", dtype="bfloat16", seed=1001, shards=1,
        config=dict(
            vocab_size=320, hidden_size=64, intermediate_size=96, num_hidden_layers=2,
            num_attention_heads=4, num_key_value_heads=2, head_dim=16,
            num_local_experts=8, num_experts_per_tok=2,
            max_position_embeddings=128, rope_theta=1000000.0, rms_norm_eps=1e-05,
            tie_word_embeddings=False, sliding_window=None,
        ),
    ),
    "qwen2_moe": dict(
        arch="qwen2_moe", dtype="bfloat16", seed=2002, shards=1,
        config=dict(
            vocab_size=384, hidden_size=96, intermediate_size=128, num_hidden_layers=3,
            num_attention_heads=6, num_key_value_heads=2,
            num_experts=8, num_experts_per_tok=4, moe_intermediate_size=48,
            shared_expert_intermediate_size=80, decoder_sparse_step=1, mlp_only_layers=[1],
            norm_topk_prob=False, qkv_bias=True,
            max_position_embeddings=256, rope_theta=10000.0, rms_norm_eps=1e-06,
            tie_word_embeddings=True, bos_token_id=380, eos_token_id=381,
        ),
    ),
    "qwen3_moe": dict(
        arch="qwen3_moe", dtype="bfloat16", seed=3003, shards=1,
        config=dict(
            vocab_size=448, hidden_size=64, intermediate_size=112, num_hidden_layers=4,
            num_attention_heads=4, num_key_value_heads=2, head_dim=32,
            num_experts=12, num_experts_per_tok=3, moe_intermediate_size=40,
            decoder_sparse_step=2, mlp_only_layers=[], norm_topk_prob=True, attention_bias=False,
            max_position_embeddings=128, rope_theta=1000000.0, rms_norm_eps=1e-06,
            tie_word_embeddings=False, bos_token_id=440, eos_token_id=441,
        ),
    ),
    "olmoe": dict(
        arch="olmoe", dtype="bfloat16", seed=4004, shards=1,
        config=dict(
            vocab_size=352, hidden_size=64, intermediate_size=32, num_hidden_layers=2,
            num_attention_heads=4, num_key_value_heads=2,
            num_experts=16, num_experts_per_tok=4, norm_topk_prob=False, clip_qkv=None,
            attention_bias=False,
            max_position_embeddings=128, rope_theta=10000.0, rms_norm_eps=1e-05,
            tie_word_embeddings=False, pad_token_id=1, eos_token_id=350,
        ),
    ),
    "mixtral_f16": dict(
        arch="mixtral", dtype="float16", seed=5005, shards=1,
        config=dict(
            vocab_size=288, hidden_size=64, intermediate_size=80, num_hidden_layers=3,
            num_attention_heads=8, num_key_value_heads=2, head_dim=8,
            num_local_experts=10, num_experts_per_tok=2,
            max_position_embeddings=64, rope_theta=10000.0, rms_norm_eps=1e-05,
            tie_word_embeddings=False, sliding_window=None,
        ),
    ),
    "olmoe_f32": dict(
        arch="olmoe", dtype="float32", seed=6006, shards=1,
        config=dict(
            vocab_size=272, hidden_size=64, intermediate_size=48, num_hidden_layers=3,
            num_attention_heads=4, num_key_value_heads=4,
            num_experts=8, num_experts_per_tok=2, norm_topk_prob=False, clip_qkv=1.5,
            attention_bias=False,
            max_position_embeddings=96, rope_theta=10000.0, rms_norm_eps=1e-05,
            tie_word_embeddings=False, pad_token_id=1, eos_token_id=270,
        ),
    ),
    "qwen3_moe_sharded": dict(
        arch="qwen3_moe", dtype="bfloat16", seed=7007, shards=3,
        config=dict(
            vocab_size=512, hidden_size=128, intermediate_size=160, num_hidden_layers=3,
            num_attention_heads=8, num_key_value_heads=4, head_dim=24,
            num_experts=8, num_experts_per_tok=2, moe_intermediate_size=48,
            decoder_sparse_step=1, mlp_only_layers=[0], norm_topk_prob=True, attention_bias=True,
            max_position_embeddings=128, rope_theta=10000.0, rms_norm_eps=1e-06,
            tie_word_embeddings=False, bos_token_id=500, eos_token_id=501,
        ),
    ),
}

ARCHITECTURES = {
    "mixtral": "MixtralForCausalLM",
    "qwen2_moe": "Qwen2MoeForCausalLM",
    "qwen3_moe": "Qwen3MoeForCausalLM",
    "olmoe": "OlmoeForCausalLM",
}

# Defaults of each HF config class, i.e. every field `save_pretrained` writes for it
# (transformers 4.51: MixtralConfig, Qwen2MoeConfig, Qwen3MoeConfig, OlmoeConfig).
HF_DEFAULTS = {
    "mixtral": dict(
        attention_dropout=0.0, bos_token_id=1, eos_token_id=2, head_dim=None, hidden_act="silu",
        hidden_size=4096, initializer_range=0.02, intermediate_size=14336,
        max_position_embeddings=131072, num_attention_heads=32, num_experts_per_tok=2,
        num_hidden_layers=32, num_key_value_heads=8, num_local_experts=8,
        output_router_logits=False, rms_norm_eps=1e-05, rope_theta=1000000.0,
        router_aux_loss_coef=0.001, router_jitter_noise=0.0, sliding_window=None,
        tie_word_embeddings=False, use_cache=True, vocab_size=32000,
    ),
    "qwen2_moe": dict(
        attention_dropout=0.0, decoder_sparse_step=1, hidden_act="silu", hidden_size=2048,
        initializer_range=0.02, intermediate_size=5632, max_position_embeddings=32768,
        max_window_layers=28, mlp_only_layers=[], moe_intermediate_size=1408,
        norm_topk_prob=False, num_attention_heads=16, num_experts=60, num_experts_per_tok=4,
        num_hidden_layers=24, num_key_value_heads=16, output_router_logits=False,
        qkv_bias=True, rms_norm_eps=1e-06, rope_scaling=None, rope_theta=10000.0,
        router_aux_loss_coef=0.001, shared_expert_intermediate_size=5632,
        sliding_window=None, tie_word_embeddings=False, use_cache=True,
        use_sliding_window=False, vocab_size=151936,
    ),
    "qwen3_moe": dict(
        attention_bias=False, attention_dropout=0.0, decoder_sparse_step=1, hidden_act="silu",
        hidden_size=2048, initializer_range=0.02, intermediate_size=6144,
        max_position_embeddings=32768, max_window_layers=28, mlp_only_layers=[],
        moe_intermediate_size=768, norm_topk_prob=False, num_attention_heads=32,
        num_experts=128, num_experts_per_tok=8, num_hidden_layers=24, num_key_value_heads=4,
        output_router_logits=False, rms_norm_eps=1e-06, rope_scaling=None,
        rope_theta=10000.0, router_aux_loss_coef=0.001, sliding_window=None,
        tie_word_embeddings=False, use_cache=True, use_sliding_window=False,
        vocab_size=151936,
    ),
    "olmoe": dict(
        attention_bias=False, attention_dropout=0.0, clip_qkv=None, eos_token_id=50279,
        hidden_act="silu", hidden_size=2048, initializer_range=0.02, intermediate_size=2048,
        max_position_embeddings=4096, norm_topk_prob=False, num_attention_heads=16,
        num_experts=64, num_experts_per_tok=8, num_hidden_layers=16, num_key_value_heads=16,
        output_router_logits=False, pad_token_id=1, rms_norm_eps=1e-05, rope_scaling=None,
        rope_theta=10000.0, router_aux_loss_coef=0.01, tie_word_embeddings=False,
        use_cache=True, vocab_size=50304,
    ),
}


def full_config(name):
    spec = MODELS[name]
    arch = spec["arch"]
    cfg = dict(HF_DEFAULTS[arch])
    cfg.update(spec["config"])
    if arch == "mixtral" and cfg.get("head_dim") is None:
        cfg["head_dim"] = cfg["hidden_size"] // cfg["num_attention_heads"]
    cfg["architectures"] = [ARCHITECTURES[arch]]
    cfg["model_type"] = arch
    cfg["torch_dtype"] = spec["dtype"]
    cfg["transformers_version"] = "4.51.3"
    return {k: cfg[k] for k in sorted(cfg)}  # HF writes keys sorted


def head_dim_of(cfg):
    hd = cfg.get("head_dim")
    return hd if hd else cfg["hidden_size"] // cfg["num_attention_heads"]


def is_sparse_layer(cfg, i):
    """Which layers use the MoE block (HF's rule; mixtral and olmoe: every layer)."""
    if cfg["model_type"] in ("qwen2_moe", "qwen3_moe"):
        return (i not in cfg.get("mlp_only_layers", [])) and cfg["num_experts"] > 0 and \
            (i + 1) % cfg.get("decoder_sparse_step", 1) == 0
    return True


def tensor_shapes(cfg):
    """Ordered list of (hf_name, shape, kind) for a config; kind selects the init."""
    arch = cfg["model_type"]
    H, V, L = cfg["hidden_size"], cfg["vocab_size"], cfg["num_hidden_layers"]
    nh, nkv, hd = cfg["num_attention_heads"], cfg["num_key_value_heads"], head_dim_of(cfg)
    out = [("model.embed_tokens.weight", (V, H), "embed")]
    for i in range(L):
        p = f"model.layers.{i}."
        out.append((p + "input_layernorm.weight", (H,), "norm"))
        a = p + "self_attn."
        out.append((a + "q_proj.weight", (nh * hd, H), "linear"))
        out.append((a + "k_proj.weight", (nkv * hd, H), "linear"))
        out.append((a + "v_proj.weight", (nkv * hd, H), "linear"))
        out.append((a + "o_proj.weight", (H, nh * hd), "linear"))
        qkv_bias = cfg.get("qkv_bias", False) if arch == "qwen2_moe" else cfg.get("attention_bias", False)
        if qkv_bias:
            out.append((a + "q_proj.bias", (nh * hd,), "bias"))
            out.append((a + "k_proj.bias", (nkv * hd,), "bias"))
            out.append((a + "v_proj.bias", (nkv * hd,), "bias"))
        if arch in ("qwen3_moe", "olmoe") and cfg.get("attention_bias", False):
            out.append((a + "o_proj.bias", (H,), "bias"))
        if arch == "qwen3_moe":
            out.append((a + "q_norm.weight", (hd,), "norm"))
            out.append((a + "k_norm.weight", (hd,), "norm"))
        if arch == "olmoe":
            out.append((a + "q_norm.weight", (nh * hd,), "norm"))
            out.append((a + "k_norm.weight", (nkv * hd,), "norm"))
        out.append((p + "post_attention_layernorm.weight", (H,), "norm"))
        if arch == "mixtral":
            m = p + "block_sparse_moe."
            E, F = cfg["num_local_experts"], cfg["intermediate_size"]
            out.append((m + "gate.weight", (E, H), "router"))
            for e in range(E):
                out.append((m + f"experts.{e}.w1.weight", (F, H), "linear"))
                out.append((m + f"experts.{e}.w2.weight", (H, F), "linear"))
                out.append((m + f"experts.{e}.w3.weight", (F, H), "linear"))
        elif arch == "olmoe":
            m = p + "mlp."
            E, F = cfg["num_experts"], cfg["intermediate_size"]
            out.append((m + "gate.weight", (E, H), "router"))
            for e in range(E):
                for nm, shp in (("gate_proj", (F, H)), ("up_proj", (F, H)), ("down_proj", (H, F))):
                    out.append((m + f"experts.{e}.{nm}.weight", shp, "linear"))
        else:  # qwen2_moe / qwen3_moe
            m = p + "mlp."
            if is_sparse_layer(cfg, i):
                E, F = cfg["num_experts"], cfg["moe_intermediate_size"]
                out.append((m + "gate.weight", (E, H), "router"))
                for e in range(E):
                    for nm, shp in (("gate_proj", (F, H)), ("up_proj", (F, H)), ("down_proj", (H, F))):
                        out.append((m + f"experts.{e}.{nm}.weight", shp, "linear"))
                if arch == "qwen2_moe":
                    S = cfg["shared_expert_intermediate_size"]
                    for nm, shp in (("gate_proj", (S, H)), ("up_proj", (S, H)), ("down_proj", (H, S))):
                        out.append((m + f"shared_expert.{nm}.weight", shp, "linear"))
                    out.append((m + "shared_expert_gate.weight", (1, H), "shared_gate"))
            else:
                F = cfg["intermediate_size"]
                for nm, shp in (("gate_proj", (F, H)), ("up_proj", (F, H)), ("down_proj", (H, F))):
                    out.append((m + nm + ".weight", shp, "linear"))
    out.append(("model.norm.weight", (H,), "norm"))
    if not cfg.get("tie_word_embeddings", False):
        out.append(("lm_head.weight", (V, H), "lm_head"))
    return out


def _init(gen, shape, kind):
    if kind == "norm":  # around 1 +- noise
        return 1.0 + 0.1 * torch.randn(shape, generator=gen)
    if kind == "bias":
        return 0.1 * torch.randn(shape, generator=gen)
    if kind == "embed":
        return 0.1 * torch.randn(shape, generator=gen)
    if kind == "router":  # router logits with std ~0.8-1: clearly separated top-k
        return 0.1 * torch.randn(shape, generator=gen)
    if kind == "shared_gate":
        return 0.1 * torch.randn(shape, generator=gen)
    fan_in = shape[-1]
    std = min(0.1, max(0.02, 0.8 / math.sqrt(fan_in)))
    if kind == "lm_head":
        std = 0.1
    return std * torch.randn(shape, generator=gen)


def make_tensors(name):
    spec = MODELS[name]
    cfg = full_config(name)
    gen = torch.Generator().manual_seed(spec["seed"])
    dt = _DTYPES[spec["dtype"]]
    tensors = {}
    for tname, shape, kind in tensor_shapes(cfg):
        tensors[tname] = _init(gen, shape, kind).to(dt).contiguous()
    return cfg, tensors


def _split(names, n):
    """Split an ordered list of names into n contiguous, non-empty groups of similar size."""
    k = len(names)
    bounds = [round(i * k / n) for i in range(n + 1)]
    return [names[bounds[i]:bounds[i + 1]] for i in range(n)]


def write_model(name, out_root):
    """Write one model under out_root/name; returns the directory."""
    spec = MODELS[name]
    cfg, tensors = make_tensors(name)
    d = os.path.join(out_root, name)
    os.makedirs(d, exist_ok=True)
    for f in os.listdir(d):  # start clean
        p = os.path.join(d, f)
        if os.path.isfile(p):
            os.remove(p)
    with open(os.path.join(d, "config.json"), "w") as f:
        json.dump(cfg, f, indent=2, sort_keys=True)
        f.write("\n")
    meta = {"format": "pt"}
    n = spec["shards"]
    if n == 1:
        save_file(tensors, os.path.join(d, "model.safetensors"), metadata=meta)
    else:
        names = list(tensors)
        weight_map = {}
        total = 0
        for k, group in enumerate(_split(names, n)):
            fname = f"model-{k + 1:05d}-of-{n:05d}.safetensors"
            part = {t: tensors[t] for t in group}
            save_file(part, os.path.join(d, fname), metadata=meta)
            for t in group:
                weight_map[t] = fname
                total += tensors[t].numel() * tensors[t].element_size()
        index = {"metadata": {"total_size": total},
                 "weight_map": {k: weight_map[k] for k in sorted(weight_map)}}
        with open(os.path.join(d, "model.safetensors.index.json"), "w") as f:
            json.dump(index, f, indent=2)
            f.write("\n")
    with open(os.path.join(d, "generation_config.json"), "w") as f:
        gc = {"_from_model_config": True, "transformers_version": "4.51.3"}
        for k in ("bos_token_id", "eos_token_id", "pad_token_id"):
            if cfg.get(k) is not None:
                gc[k] = cfg[k]
        json.dump(gc, f, indent=2, sort_keys=True)
        f.write("\n")
    return d


def select(names_or_archs):
    if not names_or_archs:
        return list(MODELS)
    out = []
    for n in names_or_archs:
        if n in MODELS:
            hits = [n]
        else:
            hits = [m for m, s in MODELS.items() if s["arch"] == n]
        if not hits:
            raise SystemExit(f"make_tiny.py: unknown model or arch '{n}' (known: {', '.join(MODELS)})")
        out += [h for h in hits if h not in out]
    return out


def describe(name):
    cfg = full_config(name)
    spec = MODELS[name]
    layers = ["moe" if is_sparse_layer(cfg, i) else "dense" for i in range(cfg["num_hidden_layers"])]
    E = cfg.get("num_local_experts", cfg.get("num_experts"))
    return (f"{name}: {cfg['model_type']} {spec['dtype']} shards={spec['shards']} V={cfg['vocab_size']} "
            f"H={cfg['hidden_size']} L={cfg['num_hidden_layers']} heads={cfg['num_attention_heads']}/"
            f"{cfg['num_key_value_heads']} head_dim={head_dim_of(cfg)} experts={E} "
            f"top_k={cfg['num_experts_per_tok']} layers=[{','.join(layers)}] "
            f"tie={cfg['tie_word_embeddings']}")


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", help="output directory (one subdirectory per model)")
    ap.add_argument("--arch", nargs="+", default=[], help="model names or model_types to write (default: all)")
    ap.add_argument("--list", action="store_true", help="list the models and exit")
    args = ap.parse_args(argv)
    names = select(args.arch)
    if args.list:
        for n in names:
            print(describe(n))
        return 0
    if not args.out:
        ap.error("--out is required")
    os.makedirs(args.out, exist_ok=True)
    for n in names:
        d = write_model(n, args.out)
        print(f"wrote {d}  ({describe(n)})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
