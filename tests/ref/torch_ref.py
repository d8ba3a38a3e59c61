#!/usr/bin/env python3
"""torch_ref.py - independent PyTorch reference forward for moec's model types.

Written from the Hugging Face modeling files (transformers 4.51: modeling_mixtral.py,
modeling_qwen2_moe.py, modeling_qwen3_moe.py, modeling_olmoe.py), as plain torch code
with no dependency on transformers. It loads a checkpoint directory (config.json plus
model.safetensors or shards listed in model.safetensors.index.json), upcasts every weight
to float32 and computes in float32, batch size 1, positions 0..T-1, no KV cache.

    from torch_ref import reference_logits
    logits = reference_logits("ckpt_dir", [1, 2, 3])   # np.ndarray [T, V] float32

CLI:
    torch_ref.py -m DIR --ids 1,2,3 [-o out.npy] [--stats] [--ablate NAME ...]

`reference_forward` also returns routing statistics (experts used per layer, the smallest
router-logit gap between the k-th and (k+1)-th expert, which says how close a token was
to a different routing decision), and takes `ablate`, a set of feature names to switch
off, used by the self-checks to prove each architecture feature changes the logits.
"""

import argparse
import json
import math
import os
import sys

import numpy as np
import torch
import torch.nn.functional as F
from safetensors.torch import load_file

ABLATIONS = ("shared_expert", "qk_norm", "qkv_bias", "norm_topk", "clip_qkv", "rope", "causal",
             "gqa")


# ----------------------------------------------------------------------------- loading
def load_config(ckpt_dir):
    with open(os.path.join(ckpt_dir, "config.json")) as f:
        return json.load(f)


def load_weights(ckpt_dir):
    """All tensors of the checkpoint as float32 torch tensors, by HF name."""
    index = os.path.join(ckpt_dir, "model.safetensors.index.json")
    if os.path.exists(index):
        with open(index) as f:
            weight_map = json.load(f)["weight_map"]
        files = sorted(set(weight_map.values()))
    else:
        weight_map = None
        files = ["model.safetensors"]
    weights = {}
    for fn in files:
        part = load_file(os.path.join(ckpt_dir, fn))
        for k, v in part.items():
            if k in weights:
                raise ValueError(f"tensor {k} appears in more than one shard")
            if weight_map is not None and weight_map.get(k) != fn:
                raise ValueError(f"tensor {k} found in {fn} but index maps it to {weight_map.get(k)}")
            weights[k] = v.to(torch.float32)
    if weight_map is not None and set(weight_map) != set(weights):
        raise ValueError("index weight_map and shard contents differ")
    return weights


class Weights:
    """Dict wrapper that records which tensors were used (to detect unused/missing ones)."""

    def __init__(self, d):
        self.d = d
        self.used = set()

    def __call__(self, name):
        if name not in self.d:
            raise KeyError(f"missing tensor {name}")
        self.used.add(name)
        return self.d[name]

    def get(self, name):
        if name in self.d:
            self.used.add(name)
            return self.d[name]
        return None

    def unused(self):
        return sorted(set(self.d) - self.used)


# ----------------------------------------------------------------------------- blocks
def rms_norm(x, w, eps):
    # HF *RMSNorm: x * rsqrt(mean(x^2) + eps) * w, over the last dim, in float32
    var = x.pow(2).mean(-1, keepdim=True)
    return w * (x * torch.rsqrt(var + eps))


# Mixed precision as `moec train --matmul bf16` does it (nn/linear.h): every linear layer's
# products take bf16-rounded operands (x and W forward; dy with W, and dy with x, backward) and
# sum in fp32, and so do attention's Q Kᵀ and P V (forward and backward, matmul_attn); routers
# (router_logits, which uses linear32) and MoE++'s constant-expert gates stay fp32, and so do
# the softmax and its backward.
BF16_LINEAR = False


def _bf16(t):
    return t.to(torch.bfloat16).to(torch.float32)


class _Bf16Linear(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, w):
        ctx.save_for_backward(x, w)
        return _bf16(x) @ _bf16(w).t()

    @staticmethod
    def backward(ctx, dy):
        x, w = ctx.saved_tensors
        r = _bf16(dy)
        return r @ _bf16(w), r.t() @ _bf16(x)


class _Bf16Matmul(torch.autograd.Function):
    @staticmethod
    def forward(ctx, a, b):
        ctx.save_for_backward(a, b)
        return _bf16(a) @ _bf16(b)

    @staticmethod
    def backward(ctx, dy):
        a, b = ctx.saved_tensors
        r = _bf16(dy)
        return r @ _bf16(b).transpose(-1, -2), _bf16(a).transpose(-1, -2) @ r


def matmul_attn(a, b):
    return _Bf16Matmul.apply(a, b) if BF16_LINEAR else a @ b


def linear32(x, w, b=None):
    y = x @ w.t()
    if b is not None:
        y = y + b
    return y


def linear(x, w, b=None):
    if not BF16_LINEAR:
        return linear32(x, w, b)
    y = _Bf16Linear.apply(x, w)
    if b is not None:
        y = y + b
    return y


def rope_cos_sin(head_dim, theta, T):
    # HF _compute_default_rope_parameters + *RotaryEmbedding.forward (float32)
    inv_freq = 1.0 / (theta ** (torch.arange(0, head_dim, 2, dtype=torch.int64).float() / head_dim))
    pos = torch.arange(T, dtype=torch.float32)
    freqs = torch.outer(pos, inv_freq)           # [T, hd/2]
    emb = torch.cat((freqs, freqs), dim=-1)      # [T, hd]
    return emb.cos(), emb.sin()


def rotate_half(x):
    x1 = x[..., : x.shape[-1] // 2]
    x2 = x[..., x.shape[-1] // 2:]
    return torch.cat((-x2, x1), dim=-1)


def apply_rope(x, cos, sin):
    # x: [heads, T, hd]; cos/sin: [T, hd]
    return x * cos + rotate_half(x) * sin


def swiglu_mlp(x, w_gate, w_up, w_down):
    return linear(F.silu(linear(x, w_gate)) * linear(x, w_up), w_down)


class Reference:
    def __init__(self, cfg, weights, ablate=()):
        self.cfg = cfg
        self.W = Weights(weights)
        self.arch = cfg["model_type"]
        if self.arch not in ("mixtral", "qwen2_moe", "qwen3_moe", "olmoe"):
            raise ValueError(f"unsupported model_type {self.arch}")
        for a in ablate:
            if a not in ABLATIONS:
                raise ValueError(f"unknown ablation {a}")
        self.ablate = set(ablate)
        self.H = cfg["hidden_size"]
        self.nh = cfg["num_attention_heads"]
        self.nkv = cfg.get("num_key_value_heads") or self.nh
        if self.arch in ("mixtral", "qwen3_moe"):
            # getattr(config, "head_dim", hidden_size // num_attention_heads)
            self.hd = cfg.get("head_dim") or self.H // self.nh
        else:
            # qwen2_moe / olmoe: head_dim = hidden_size // num_heads (HF enforces hd*nh == H)
            self.hd = self.H // self.nh
            if self.hd * self.nh != self.H:
                raise ValueError("hidden_size must be divisible by num_heads")
        self.eps = cfg["rms_norm_eps"]
        self.theta = cfg.get("rope_theta", 10000.0)
        if cfg.get("rope_scaling") is not None:
            raise ValueError("rope_scaling is not supported by the reference")
        self.L = cfg["num_hidden_layers"]
        if self.arch == "mixtral":
            self.E = cfg["num_local_experts"]
        else:
            self.E = cfg["num_experts"]
        self.topk = cfg["num_experts_per_tok"]
        if self.arch == "mixtral":
            self.norm_topk = True          # Mixtral always renormalises the top-k weights
        else:
            self.norm_topk = bool(cfg.get("norm_topk_prob", False))
        if "norm_topk" in self.ablate:
            self.norm_topk = not self.norm_topk
        # expert kinds and depth routers (MOE_SPECS 7, 9; docs/routers.md): the router's width is the
        # FFN experts followed by constant, copy and null (zero) experts, in this order
        self.n_const = cfg.get("moec_constant_experts", 0)
        self.n_copy = cfg.get("moec_copy_experts", 0)
        self.n_null = cfg.get("moec_null_experts", 0)
        # ReXMoE (MOE_SPECS 26): layer i routes over the experts of layers g*r .. g*r + r - 1, g = i // r,
        # in that order (the weights are shared: each is stored once, under its own layer)
        self.rex = cfg.get("moec_rex_reuse_frequency", 1)
        self.Epool = self.E * self.rex
        self.Er = self.Epool + self.n_const + self.n_copy + self.n_null
        self.null_renorm = cfg.get("moec_null_renorm", True)
        self.gate_residual = cfg.get("moec_gate_residual", False)
        self.rnn_dim = cfg.get("moec_router_rnn_dim", 0)
        self.carry = None    # the previous MoE layer's post-residual logits (MoE++) or GRU state (RMoE)
        # Chain-of-Experts (MOE_SPECS 10): C iterations of the MoE block per layer, experts shared,
        # a router per iteration ("gate.weight", then "gate.iterations.<t>.weight")
        self.coe = cfg.get("moec_coe_iterations", 0)
        self.coe_inner = cfg.get("moec_coe_inner_residual", True)
        self.coe_outer = cfg.get("moec_coe_outer_residual", False)
        self.coe_shared_gate = cfg.get("moec_coe_shared_gate", False)
        self.stats = None

    def is_sparse(self, i):
        if self.arch in ("qwen2_moe", "qwen3_moe"):
            return (i not in (self.cfg.get("mlp_only_layers") or [])) and self.E > 0 and \
                (i + 1) % self.cfg.get("decoder_sparse_step", 1) == 0
        return True

    # -- attention (HF *Attention.forward with eager attention, batch 1, no cache)
    def attention(self, i, x, cos, sin):
        W, p = self.W, f"model.layers.{i}.self_attn."
        T = x.shape[0]
        bias = lambda n: W.get(p + n + ".bias")  # noqa: E731
        qb, kb, vb = bias("q_proj"), bias("k_proj"), bias("v_proj")
        if "qkv_bias" in self.ablate:
            qb = kb = vb = None
        q = linear(x, W(p + "q_proj.weight"), qb)       # [T, nh*hd]
        k = linear(x, W(p + "k_proj.weight"), kb)       # [T, nkv*hd]
        v = linear(x, W(p + "v_proj.weight"), vb)
        if self.arch == "olmoe":
            # OLMoE: RMSNorm over the whole projection (weights [nh*hd] / [nkv*hd]) first,
            # then clip_qkv clamps q, k and v, then the reshape into heads.
            if "qk_norm" not in self.ablate:
                q = rms_norm(q, W(p + "q_norm.weight"), self.eps)
                k = rms_norm(k, W(p + "k_norm.weight"), self.eps)
            else:
                W(p + "q_norm.weight"), W(p + "k_norm.weight")
            clip = self.cfg.get("clip_qkv")
            if clip is not None and "clip_qkv" not in self.ablate:
                q = q.clamp(-clip, clip)
                k = k.clamp(-clip, clip)
                v = v.clamp(-clip, clip)
        q = q.view(T, self.nh, self.hd).transpose(0, 1)     # [nh, T, hd]
        k = k.view(T, self.nkv, self.hd).transpose(0, 1)    # [nkv, T, hd]
        v = v.view(T, self.nkv, self.hd).transpose(0, 1)
        if self.arch == "qwen3_moe":
            # Qwen3-MoE: per-head RMSNorm over head_dim (weights [hd]) before RoPE
            if "qk_norm" not in self.ablate:
                q = rms_norm(q, W(p + "q_norm.weight"), self.eps)
                k = rms_norm(k, W(p + "k_norm.weight"), self.eps)
            else:
                W(p + "q_norm.weight"), W(p + "k_norm.weight")
        if "rope" not in self.ablate:
            q = apply_rope(q, cos, sin)
            k = apply_rope(k, cos, sin)
        # GQA: query head h uses kv head h // (nh // nkv)  (HF repeat_kv)
        n_rep = self.nh // self.nkv
        if "gqa" in self.ablate:   # wrong mapping on purpose: h % nkv
            k = k.repeat(n_rep, 1, 1)
            v = v.repeat(n_rep, 1, 1)
        else:
            k = k.repeat_interleave(n_rep, dim=0)
            v = v.repeat_interleave(n_rep, dim=0)
        scores = matmul_attn(q, k.transpose(1, 2)) / math.sqrt(self.hd)    # [nh, T, T]
        if "causal" not in self.ablate:
            mask = torch.triu(torch.ones(T, T, dtype=torch.bool), diagonal=1)
            scores = scores.masked_fill(mask, float("-inf"))
        probs = torch.softmax(scores, dim=-1)
        out = matmul_attn(probs, v)                              # [nh, T, hd]
        out = out.transpose(0, 1).reshape(T, self.nh * self.hd)
        return linear(out, W(p + "o_proj.weight"), W.get(p + "o_proj.bias"))

    # -- sparse MoE block (HF *SparseMoeBlock.forward: loop over experts + index_add_)
    def route(self, z, bias):
        """Token-choice routing as MOE_SPECS.md sections 1-4 define it (written from the spec and
        the HF / DeepSeek modeling code, not from moec): returns weights [T, k], experts [T, k]."""
        cfg = self.cfg
        sigmoid = cfg.get("scoring_func", "softmax") == "sigmoid"
        s = torch.sigmoid(z) if sigmoid else torch.softmax(z, dim=-1)        # scores
        v = s if bias is None else s + bias                                  # selection values
        method = cfg.get("topk_method", "greedy")
        n_group, topk_group = cfg.get("n_group", 1) or 1, cfg.get("topk_group", 1) or 1
        if method in ("group_limited_greedy", "noaux_tc") and n_group > 1:
            T, E = v.shape
            g = v.view(T, n_group, E // n_group)
            rule = cfg.get("moec_group_score", "top2_sum" if method == "noaux_tc" else "max")
            gs = g.topk(2, dim=-1).values.sum(-1) if rule == "top2_sum" else g.max(-1).values
            keep = torch.zeros_like(gs).scatter_(1, gs.topk(topk_group, dim=-1).indices, 1.0)
            v = v.masked_fill(keep.repeat_interleave(E // n_group, dim=1) == 0, float("-inf"))
        selected = torch.topk(v, self.topk, dim=-1).indices
        if cfg.get("moec_topk_softmax", False):                   # softmax over the picks' logits
            w = torch.softmax(torch.gather(z, 1, selected), dim=-1)
        else:
            w = torch.gather(s, 1, selected)                      # weights from the scores, never the bias
            if self.norm_topk:
                w = w / (w.sum(dim=-1, keepdim=True) + (1e-20 if sigmoid else 0.0))
        return w * cfg.get("routed_scaling_factor", 1.0), selected

    # -- issue 10's routers as SERVED (decoding), written from MOE_SPECS.md sections 6, 8, 11, 12,
    # 13 and docs/routers.md, not from moec's C. Returns weights [T, n], experts [T, n]; a weight
    # of 0 marks a padding slot (top-p's unselected experts).
    def route_served(self, z):
        cfg = self.cfg
        name = cfg["moec_router"]
        scale = cfg.get("routed_scaling_factor", 1.0)
        E = z.shape[1]
        p = torch.softmax(z, dim=-1)
        if name == "expert_choice":        # not causal: decoding is token-choice top-k, raw scores
            if cfg.get("moec_decode_router") != "topk":
                raise ValueError("an expert-choice checkpoint without moec_decode_router cannot decode")
            w, sel = torch.topk(p, self.topk, dim=-1)
            return w * scale, sel
        if name == "topp":                 # fewest experts whose mass exceeds p (strict >), raw weights
            ps, idx = torch.sort(p, dim=-1, descending=True, stable=True)
            c = torch.cumsum(ps, dim=-1)
            thr = torch.argmax((c > cfg.get("moec_top_p", 0.4)).to(torch.int64), dim=-1)  # first crossing
            keep = torch.arange(E)[None, :] <= thr[:, None]
            keep &= torch.arange(E)[None, :] < self.topk                   # the cap k
            return ps * keep * scale, idx
        if name == "moge":                 # top-(k/G) inside each of G contiguous groups
            G = cfg["n_group"]
            n, kg = E // G, self.topk // G
            v, i = p.view(-1, G, n).topk(kg, dim=-1)
            sel = (i + (torch.arange(G) * n)[None, :, None]).reshape(z.shape[0], -1)
            return v.reshape(z.shape[0], -1) * scale, sel
        if name == "hash":                 # H[id] = mix64(mix64(seed) ^ id) mod E, weight 1
            M = (1 << 64) - 1

            def mix(x):
                x ^= x >> 30
                x = (x * 0xbf58476d1ce4e5b9) & M
                x ^= x >> 27
                x = (x * 0x94d049bb133111eb) & M
                return x ^ (x >> 31)

            if cfg.get("moec_hash_table") == "balanced":   # the stored table (built from training counts)
                sel = self.W("model.hash_table")[self.ids].long()[:, None]
                return torch.ones(sel.shape), sel
            seed = mix(cfg.get("moec_hash_seed", 0))
            sel = torch.tensor([[mix(seed ^ int(t)) % E] for t in self.ids], dtype=torch.long)
            return torch.ones(sel.shape), sel
        if name == "thor":                 # serving draws experts at random: the caller fixes them
            e = self.thor_experts[self.cur_layer]                 # [layer] → expert for every token
            return torch.ones(z.shape[0], 1), torch.full((z.shape[0], 1), e, dtype=torch.long)
        if name == "evomoe":               # serving: top-k of softmax, raw weights (top1gating)
            w, sel = torch.topk(p, self.topk, dim=-1)
            return w * scale, sel
        raise ValueError(f"reference has no router {name}")

    def router_logits(self, p, x, it=0):
        """Router logits [T, Er] with the layer-to-layer carry (MOE_SPECS 7 addendum, 9)."""
        W = self.W
        if it > 0 and not self.coe_shared_gate:   # Chain-of-Experts iteration it's own router
            return linear32(x, W(p + f"gate.iterations.{it}.weight"))
        if self.rnn_dim:     # RMoE: logits = W2 GRU(W1 x, h_prev), one GRU cell for all layers, h_0 = 0
            xp = linear32(x, W(p + "gate.proj.weight"))
            h = self.carry if self.carry is not None else torch.zeros(x.shape[0], self.rnn_dim)
            h = torch.gru_cell(xp, h, W("model.router_rnn.weight_ih"), W("model.router_rnn.weight_hh"),
                               W("model.router_rnn.bias_ih"), W("model.router_rnn.bias_hh"))
            self.carry = h
            return linear32(h, W(p + "gate.weight"))
        z = linear32(x, W(p + "gate.weight"))
        if self.gate_residual:   # MoE++: logits_l = W_r x + W_g logits_(l-1) (post-residual), none at the first
            if self.carry is not None:
                z = z + linear32(self.carry, W(p + "gate_map.weight"))
            self.carry = z
        return z

    def moe(self, i, x, it=0):
        W = self.W
        T = x.shape[0]
        if self.arch == "mixtral":
            p = f"model.layers.{i}.block_sparse_moe."
            names = ("w1", "w3", "w2")        # gate, up, down
        else:
            p = f"model.layers.{i}.mlp."
            names = ("gate_proj", "up_proj", "down_proj")
        router_logits = self.router_logits(p, x, it)               # [T, Er]
        bias = W(p + "gate.e_score_correction_bias") if self.cfg.get("topk_method") == "noaux_tc" else None
        self.cur_layer = i
        if self.cfg.get("moec_router", "topk") != "topk":            # issue 10's routers (below)
            routing_w, selected = self.route_served(router_logits)
        else:
            routing_w, selected = self.route(router_logits, bias)
        if self.cfg.get("moec_router_scale"):   # MoGE (Pangu): w = w * router_scale[e], [1, Er] in the checkpoint
            routing_w = routing_w * W(p + "router_scale").reshape(-1)[selected]
        if self.n_null and self.null_renorm:
            # AdaMoE / MoE++ default gating: null picks weigh 0, the others are renormalised among
            # themselves (x routed_scaling); only null picks: weight 0, output 0
            true = selected < self.Er - self.n_null
            wt = routing_w * true
            tot = wt.sum(-1, keepdim=True)
            safe = torch.where(tot > 0, tot, torch.ones_like(tot))
            routing_w = torch.where(tot > 0, wt / safe, torch.zeros_like(wt)) * self.cfg.get("routed_scaling_factor", 1.0)
        out = torch.zeros_like(x)
        expert_mask = F.one_hot(selected, num_classes=self.Er).permute(2, 1, 0)   # [Er, k, T]
        for e in range(self.Er):
            idx, top_x = torch.where(expert_mask[e])
            if e < self.Epool:
                owner = p.replace(f"layers.{i}.", f"layers.{i // self.rex * self.rex + e // self.E}.")
                gname, uname, dname = (owner + f"experts.{e % self.E}.{n}.weight" for n in names)
                wg, wu, wd = W(gname), W(uname), W(dname)
            elif e < self.Epool + self.n_const:    # MoE++ constant: a1 x + a2 v, [a1, a2] = softmax(W_c x)
                j = e - self.Epool
                wc, v = W(p + f"constant_experts.{j}.weight"), W(p + f"constant_experts.{j}.v")
            if top_x.numel() == 0 or e >= self.Er - self.n_null:   # null experts: output 0, not computed
                continue
            xe = x[top_x]
            if e < self.Epool:
                y = swiglu_mlp(xe, wg, wu, wd)
            elif e < self.Epool + self.n_const:
                a = torch.softmax(linear32(xe, wc), dim=-1)   # a gate: fp32 like the routers
                y = a[:, :1] * xe + a[:, 1:] * v
            else:                              # MoE++ copy: x
                y = xe
            out.index_add_(0, top_x, y * routing_w[top_x, idx, None])
        if self.arch == "qwen2_moe":
            s = p + "shared_expert."
            shared = swiglu_mlp(x, W(s + "gate_proj.weight"), W(s + "up_proj.weight"),
                                W(s + "down_proj.weight"))
            if self.cfg.get("moec_shared_expert_gate", True):
                gate = torch.sigmoid(linear(x, W(p + "shared_expert_gate.weight")))   # [T, 1]
            else:                                        # DeepSeekMoE: shared output added unweighted
                gate = torch.ones(T, 1)
            if "shared_expert" not in self.ablate:
                out = out + gate * shared
        # statistics: usage and closeness to another routing decision
        srt = torch.sort(router_logits, dim=-1, descending=True).values
        gap = (srt[:, self.topk - 1] - srt[:, self.topk]) if self.topk < self.Er else torch.full((T,), float("inf"))
        st = self.stats
        st["tokens_per_expert"].append(torch.bincount(selected.flatten(), minlength=self.Er).tolist())
        st["min_router_gap"] = min(st["min_router_gap"], float(gap.min()))
        st["moe_layers"].append(i)
        st.setdefault("router_logits", []).append(router_logits)   # for the training losses
        return out

    def dense_mlp(self, i, x):
        W, p = self.W, f"model.layers.{i}.mlp."
        return swiglu_mlp(x, W(p + "gate_proj.weight"), W(p + "up_proj.weight"), W(p + "down_proj.weight"))

    @torch.no_grad()
    def forward(self, ids):
        W = self.W
        ids = torch.as_tensor(list(ids), dtype=torch.long)
        V = W.d["model.embed_tokens.weight"].shape[0]
        if ids.numel() == 0 or int(ids.min()) < 0 or int(ids.max()) >= V:
            raise ValueError(f"token ids must be in [0, {V})")
        T = ids.numel()
        self.ids = ids                                            # hash routing reads the token ids
        self.carry = None
        self.stats = {"tokens_per_expert": [], "min_router_gap": float("inf"), "moe_layers": []}
        h = W("model.embed_tokens.weight")[ids]                   # [T, H]
        cos, sin = rope_cos_sin(self.hd, self.theta, T)
        for i in range(self.L):
            p = f"model.layers.{i}."
            r = h
            x = rms_norm(h, W(p + "input_layernorm.weight"), self.eps)
            h = r + self.attention(i, x, cos, sin)
            r = h
            x = rms_norm(h, W(p + "post_attention_layernorm.weight"), self.eps)
            if self.is_sparse(i) and self.coe:
                for it in range(self.coe):     # x_{t+1} = [x_t +] MoE_t(x_t), from the normalised input
                    x = (x if self.coe_inner else 0) + self.moe(i, x, it)
                h = x + (r if self.coe_outer else 0)
            elif self.is_sparse(i):
                h = r + self.moe(i, x)
            else:
                h = r + self.dense_mlp(i, x)
        h = rms_norm(h, W("model.norm.weight"), self.eps)
        if self.cfg.get("tie_word_embeddings", False):
            lm = W("model.embed_tokens.weight")
            if "lm_head.weight" in W.d:
                raise ValueError("tie_word_embeddings=true but checkpoint has lm_head.weight")
        else:
            lm = W("lm_head.weight")
        logits = linear(h, lm)                                     # [T, V]
        return logits


def reference_forward(ckpt_dir, ids, ablate=(), strict=True):
    """Returns (logits np.float32 [T, V], stats dict)."""
    cfg = load_config(ckpt_dir)
    ref = Reference(cfg, load_weights(ckpt_dir), ablate=ablate)
    logits = ref.forward(ids)
    if strict and ref.W.unused():
        raise ValueError(f"checkpoint has tensors the model does not use: {ref.W.unused()[:5]}")
    return logits.numpy().astype(np.float32), ref.stats


def reference_logits(ckpt_dir, ids):
    """Logits [T, V] (float32 numpy) for token ids at positions 0..T-1."""
    return reference_forward(ckpt_dir, ids)[0]


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("-m", "--model", required=True, help="checkpoint directory")
    ap.add_argument("--ids", required=True, help="comma-separated token ids")
    ap.add_argument("-o", "--out", help="write logits [T, V] float32 to this .npy")
    ap.add_argument("--stats", action="store_true", help="print routing statistics")
    ap.add_argument("--ablate", nargs="*", default=[], choices=ABLATIONS)
    args = ap.parse_args(argv)
    ids = [int(t) for t in args.ids.split(",") if t.strip()]
    torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))
    logits, stats = reference_forward(args.model, ids, ablate=args.ablate, strict=not args.ablate)
    if args.out:
        np.save(args.out, logits)
    print(f"logits shape {list(logits.shape)}  max|logit| {np.abs(logits).max():.6g}  "
          f"argmax[-1] {int(logits[-1].argmax())}")
    if args.stats:
        print(f"moe layers {stats['moe_layers']}  min router gap {stats['min_router_gap']:.3g}")
        for li, c in zip(stats["moe_layers"], stats["tokens_per_expert"]):
            print(f"  layer {li}: tokens per expert {c}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
