#!/usr/bin/env python3
"""hf_test_transformers.py - Hugging Face transformers itself as the oracle (transformers 5,
PyPI torch; run from .venv-hf, which scripts/install-deps.sh makes).

 1. transformers -> moec: for every supported architecture, tiny random checkpoints built by
    transformers' own config and model classes and written by save_pretrained (f32, bf16,
    sharded via max_shard_size; shared expert, dense layers via mlp_only_layers /
    decoder_sparse_step, QK-norm, clip_qkv, tied embeddings, GQA, explicit head_dim,
    qkv_bias false; every RoPE scaling type moec implements; sliding windows shorter than the
    sequence). `moec logits` (prefill) and `moec logits --step` (KV-cache decode) must match
    the transformers forward in fp32 (bf16 weights upcast, eager attention) within
    REL_TOL = 1e-4 of max|logit|, and `moec generate --temp 0` must print the text of
    transformers' greedy generate(), for N_NEW tokens, with an argmax margin >= MIN_MARGIN so
    ties cannot decide it.
 2. moec -> transformers: `moec train` a few steps on a tiny config of every architecture, then
    AutoConfig / AutoModelForCausalLM / AutoTokenizer load the checkpoint with no warning and
    no missing or unexpected weight, the tokenizer is a PreTrainedTokenizerFast (transformers 5:
    TokenizersBackend) with moec's vocabulary (no added tokens), eos/pad set, and ids equal to
    `moec tokenize` on 20 lines, the chat template beside the data's tokenizer carried over; logits equal `moec logits` within REL_TOL; generation config
    carries eos; re-saved by transformers' save_pretrained, moec loads it to the same logits.
    `--out` with missing parents is created.
 3. `moec train` refuses a sliding-window config with one stderr line.
Ends with `N passed, M failed`; exits 1 on any failure (also when transformers is missing)."""
import argparse
import glob
import json
import logging
import os
import shutil
import subprocess
import sys
import warnings

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "scripts"))

try:
    import numpy as np
    import torch
    import transformers
    from transformers import (AutoConfig, AutoModelForCausalLM, AutoTokenizer, MixtralConfig, OlmoeConfig,
                              Qwen2MoeConfig, Qwen3MoeConfig)
except ImportError as e:  # a missing oracle is a failure, never a skip
    print(f"FAIL import: {e}: run scripts/install-deps.sh (it makes .venv-hf with transformers 5)")
    print("0 passed, 1 failed")
    sys.exit(1)

import demo_tokenizer  # noqa: E402

REL_TOL = 1e-4    # max|moec - transformers| / max|transformers| over all logits
MIN_MARGIN = 1e-3  # greedy argmax margin (top1 - top2) below which a tie could decide the text
N_NEW = 16
PROMPT = "The quick brown fox"
passed = failed = 0


def check(ok, label, detail=""):
    global passed, failed
    passed += bool(ok)
    failed += not ok
    print(f"{'PASS' if ok else 'FAIL'} {label} {detail}", flush=True)


def run(cmd, timeout=600):
    return subprocess.run(cmd, capture_output=True, timeout=timeout)


def rel_err(a, b):
    return float(np.abs(a - b).max() / max(np.abs(b).max(), 1e-30))


# ----------------------------------------------------------------------------- 1. transformers -> moec
V = 384  # vocabulary of every case (demo_tokenizer trains a tokenizer of this size)
BASE = dict(vocab_size=V, hidden_size=64, num_attention_heads=4, num_key_value_heads=2, initializer_range=0.2,
            max_position_embeddings=128, attn_implementation="eager")

# name: (config class, config kwargs, save dtype, max_shard_size or None, use incremental HF reference)
CASES = {
    "mixtral_bf16_gqa": (MixtralConfig, dict(intermediate_size=96, num_hidden_layers=2, num_local_experts=8,
                                             num_experts_per_tok=2), torch.bfloat16, None),
    "mixtral_f32_tied_headdim_swa": (MixtralConfig, dict(intermediate_size=80, num_hidden_layers=2,
                                                         num_local_experts=6, num_experts_per_tok=2, head_dim=24,
                                                         tie_word_embeddings=True, sliding_window=7),
                                     torch.float32, None),
    "mixtral_bf16_linear_rope": (MixtralConfig, dict(intermediate_size=64, num_hidden_layers=2, num_local_experts=4,
                                                     num_experts_per_tok=2,
                                                     rope_parameters={"rope_type": "linear", "factor": 4.0,
                                                                      "rope_theta": 10000.0}),
                                 torch.bfloat16, None),
    "qwen2_moe_bf16_sharded_shared_dense": (Qwen2MoeConfig, dict(
        hidden_size=96, num_attention_heads=6, intermediate_size=128, num_hidden_layers=3, num_experts=8,
        num_experts_per_tok=4, moe_intermediate_size=48, shared_expert_intermediate_size=80, mlp_only_layers=[1],
        norm_topk_prob=False), torch.bfloat16, "60KB"),
    "qwen2_moe_f32_nobias_headdim_swa_yarn": (Qwen2MoeConfig, dict(
        hidden_size=96, num_attention_heads=6, intermediate_size=64, num_hidden_layers=3, num_experts=6,
        num_experts_per_tok=2, moe_intermediate_size=32, shared_expert_intermediate_size=48, decoder_sparse_step=2,
        norm_topk_prob=True, qkv_bias=False, head_dim=32, use_sliding_window=True, sliding_window=6,
        max_window_layers=2, rope_parameters={"rope_type": "yarn", "factor": 4.0, "rope_theta": 10000.0,
                                              "original_max_position_embeddings": 32}),
        torch.float32, None),
    "qwen3_moe_bf16_qknorm_sparse_step": (Qwen3MoeConfig, dict(
        intermediate_size=112, num_hidden_layers=4, num_experts=12, num_experts_per_tok=3, moe_intermediate_size=40,
        decoder_sparse_step=2, head_dim=32, norm_topk_prob=True), torch.bfloat16, None),
    "qwen3_moe_f32_bias_swa_llama3_sharded": (Qwen3MoeConfig, dict(
        intermediate_size=96, num_hidden_layers=3, num_experts=8, num_experts_per_tok=2, moe_intermediate_size=32,
        mlp_only_layers=[0], attention_bias=True, use_sliding_window=True, sliding_window=9, tie_word_embeddings=True,
        rope_parameters={"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
                         "rope_theta": 500000.0, "original_max_position_embeddings": 16}),
        torch.float32, "100KB"),
    "olmoe_bf16_qknorm": (OlmoeConfig, dict(intermediate_size=32, num_hidden_layers=2, num_experts=16,
                                            num_experts_per_tok=4), torch.bfloat16, None),
    "olmoe_f32_clip_tied_dynamic": (OlmoeConfig, dict(
        intermediate_size=48, num_hidden_layers=2, num_experts=8, num_experts_per_tok=2, clip_qkv=0.3,
        tie_word_embeddings=True, max_position_embeddings=16,
        rope_parameters={"rope_type": "dynamic", "factor": 3.0, "rope_theta": 10000.0}), torch.float32, None),
}
SEQ = 40  # prefill length: longer than every sliding window and than the dynamic case's max_position_embeddings


def make_hf_checkpoint(root, name):
    cls, kw, dtype, shard = CASES[name]
    cfg_kw = dict(BASE)
    cfg_kw.update(kw)
    torch.manual_seed(sum(map(ord, name)))
    model = AutoModelForCausalLM.from_config(cls(**cfg_kw)).eval()
    d = os.path.join(root, name)
    model.to(dtype).save_pretrained(d, **({"max_shard_size": shard} if shard else {}))
    demo_tokenizer.build(d)
    return d


def hf_logits(model, ids, incremental):
    """fp32 logits [T, V]: one forward over all positions, or token by token through the cache."""
    with torch.no_grad():
        if not incremental:
            return model(torch.tensor([ids])).logits[0].float().numpy()
        out, past = [], None
        for i, t in enumerate(ids):
            r = model(torch.tensor([[t]]), past_key_values=past, use_cache=True,
                      position_ids=torch.tensor([[i]]))
            past = r.past_key_values
            out.append(r.logits[0, -1].float().numpy())
        return np.stack(out)


def moec_logits(args, d, ids, step):
    out = os.path.join(d, "moec_step.npy" if step else "moec.npy")
    r = run([args.moec, "logits", "-m", d, "--ids", ",".join(map(str, ids)), "-o", out, "-t", "2"]
            + (["--step"] if step else []))
    if r.returncode != 0:
        return None, r.stderr.decode(errors="replace").strip()
    return np.load(out), ""


def test_hf_to_moec(args, root):
    from tokenizers import Tokenizer
    shards_seen = 0
    for name in CASES:
        d = make_hf_checkpoint(root, name)
        cfg = json.load(open(os.path.join(d, "config.json")))
        shards_seen += len(glob.glob(os.path.join(d, "model-*-of-*.safetensors"))) > 1
        model = AutoModelForCausalLM.from_pretrained(d, dtype=torch.float32, attn_implementation="eager").eval()
        rope = (cfg.get("rope_parameters") or {}).get("rope_type", "default")
        # transformers' dynamic NTK recomputes the frequencies for a whole forward from its
        # longest position; moec's table gives position p the value for length p + 1, which is
        # transformers' token-by-token decoding: compare against that
        incremental = rope == "dynamic"
        rng = np.random.default_rng(len(name))
        ids = [int(x) for x in rng.integers(0, V, SEQ)]
        want = hf_logits(model, ids, incremental)
        for step in (False, True):
            got, msg = moec_logits(args, d, ids, step)
            e = rel_err(got, want) if got is not None and got.shape == want.shape else float("inf")
            check(e <= REL_TOL, f"{name} logits {'--step (KV cache)' if step else 'prefill'}",
                  f"rel err {e:.2e} (tol {REL_TOL:g}) {msg}")
        if cfg.get("use_sliding_window") and "layer_types" in cfg and cfg["model_type"] == "qwen2_moe":
            # an older config without layer_types: moec derives them from max_window_layers as
            # transformers 5 does
            d2 = d + "-no-layer-types"
            shutil.copytree(d, d2)
            c2 = dict(cfg)
            del c2["layer_types"]
            json.dump(c2, open(os.path.join(d2, "config.json"), "w"))
            got, msg = moec_logits(args, d2, ids, False)
            e = rel_err(got, want) if got is not None and got.shape == want.shape else float("inf")
            check(e <= REL_TOL and "sliding_attention" in cfg["layer_types"],
                  f"{name} without layer_types (from max_window_layers)", f"rel err {e:.2e} {msg}")
        # greedy text: transformers generate() vs moec generate --temp 0
        tok = Tokenizer.from_file(os.path.join(d, "tokenizer.json"))
        p_ids = tok.encode(PROMPT, add_special_tokens=False).ids
        with torch.no_grad():
            g = model.generate(torch.tensor([p_ids]), attention_mask=torch.ones(1, len(p_ids), dtype=torch.long),
                               do_sample=False, max_new_tokens=N_NEW, min_new_tokens=0, eos_token_id=None,
                               pad_token_id=0, output_scores=True, return_dict_in_generate=True)
        new = g.sequences[0, len(p_ids):].tolist()
        margin = min(float(np.diff(np.sort(s[0].float().numpy())[-2:])[0]) for s in g.scores)
        want_text = tok.decode(new, skip_special_tokens=False)
        r = run([args.moec, "generate", "-m", d, "-p", PROMPT, "-n", str(N_NEW), "--temp", "0", "--ignore-eos",
                 "-t", "2"])
        out = r.stdout.decode("utf-8", errors="replace")
        got_text = out[len(PROMPT):].rstrip("\n") if out.startswith(PROMPT) else None
        check(r.returncode == 0 and got_text == want_text and len(new) == N_NEW and margin >= MIN_MARGIN,
              f"{name} greedy text = transformers generate()",
              f"margin {margin:.2e} moec={got_text!r} hf={want_text!r} {r.stderr.decode(errors='replace')[-200:]!r}"
              if got_text != want_text or margin < MIN_MARGIN else f"margin {margin:.2e}")
    check(shards_seen >= 2, "sharded cases really wrote several shards", f"{shards_seen}")
    # the case: transformers 5 writes qwen3_moe's expert count as num_local_experts
    qcfg = json.load(open(os.path.join(root, "qwen3_moe_bf16_qknorm_sparse_step", "config.json")))
    check("num_local_experts" in qcfg, "transformers wrote qwen3_moe num_local_experts (and moec loaded it above)",
          str(sorted(k for k in qcfg if "expert" in k)))


# ----------------------------------------------------------------------------- 2. moec -> transformers
TRAIN_CONFIGS = {
    "mixtral": dict(architectures=["MixtralForCausalLM"], model_type="mixtral", intermediate_size=64,
                    num_local_experts=4, num_experts_per_tok=2, head_dim=16, rms_norm_eps=1e-5),
    "qwen2_moe": dict(architectures=["Qwen2MoeForCausalLM"], model_type="qwen2_moe", intermediate_size=96,
                      num_experts=4, num_experts_per_tok=2, moe_intermediate_size=32,
                      shared_expert_intermediate_size=48, mlp_only_layers=[0], rope_theta=10000.0),
    "qwen3_moe": dict(architectures=["Qwen3MoeForCausalLM"], model_type="qwen3_moe", intermediate_size=96,
                      num_experts=4, num_experts_per_tok=2, moe_intermediate_size=32, head_dim=16,
                      norm_topk_prob=True, rope_scaling={"type": "linear", "factor": 2.0}),
    "olmoe": dict(architectures=["OlmoeForCausalLM"], model_type="olmoe", intermediate_size=32, num_experts=8,
                  num_experts_per_tok=2, tie_word_embeddings=True),
}


class Catch(logging.Handler):
    def __init__(self):
        super().__init__(logging.WARNING)
        self.records = []

    def emit(self, record):
        self.records.append(record.getMessage())


def corpus_files(dst):
    os.makedirs(dst, exist_ok=True)
    out = []
    for f in ("GPL-3", "Apache-2.0", "Artistic"):
        src = os.path.join("/usr/share/common-licenses", f)
        if os.path.isfile(src):
            text = open(src, encoding="utf-8", errors="replace").read()
            p = os.path.join(dst, f.lower() + ".txt")
            with open(p, "w") as fh:
                fh.write("\n\x1e\n".join(x for x in text.split("\n\n") if x.strip()))
            out.append(p)
    return out


def test_moec_to_hf(args, root):
    files = corpus_files(os.path.join(root, "corpus"))
    tok = os.path.join(root, "tokenizer.json")
    r = run([args.moec, "tokenizer", "train", "--vocab", "400", "-o", tok, *files])
    check(r.returncode == 0, "tokenizer train", r.stderr.decode(errors="replace")[-200:])
    # a chat template next to the data's tokenizer.json travels into every checkpoint
    chat = "{% for m in messages %}<|endoftext|>{{ m['role'] }}: {{ m['content'] }}\n{% endfor %}"
    json.dump({"chat_template": chat}, open(os.path.join(root, "tokenizer_config.json"), "w"))
    data = os.path.join(root, "data")
    r = run([args.moec, "data", "-t", tok, "-o", data, "--force", *files])
    check(r.returncode == 0, "data", r.stderr.decode(errors="replace")[-200:])
    lines = [l for l in open(files[0], encoding="utf-8").read().splitlines() if l.strip() and l != "\x1e"][:20]
    lines[-1] = "Unicode too: naïve café — 東京 <|endoftext|> end"
    jl = os.path.join(root, "lines.jsonl")
    with open(jl, "w") as fh:
        fh.writelines(json.dumps(l) + "\n" for l in lines)
    r = run([args.moec, "tokenize", "-t", tok, "--jsonl", jl])
    moec_ids = [[int(x) for x in l.split(",")] if l else [] for l in r.stdout.decode().splitlines()]
    check(r.returncode == 0 and len(moec_ids) == len(lines), "moec tokenize --jsonl")
    for arch, extra in TRAIN_CONFIGS.items():
        cfg = dict(vocab_size=400, hidden_size=64, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                   max_position_embeddings=256, eos_token_id=0, torch_dtype="float32", initializer_range=0.1)
        cfg.update(extra)
        cp = os.path.join(root, f"{arch}.json")
        json.dump(cfg, open(cp, "w"))
        out = os.path.join(root, "runs", arch, "nested", "ckpt")  # parents do not exist yet
        r = run([args.moec, "train", "--config", cp, "--data", data, "--out", out, "--steps", "3", "--batch", "2",
                 "--seq", "32", "--warmup", "1", "--no-progress", "-t", "2"])
        check(r.returncode == 0, f"{arch} moec train --out with missing parents",
              r.stderr.decode(errors="replace")[-300:])
        if r.returncode != 0:
            continue
        have = sorted(os.listdir(out))
        need = ["config.json", "generation_config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json"]
        check(all(n in have for n in need), f"{arch} checkpoint files", str(have))
        # load with transformers: no warning of any kind, no missing / unexpected weights
        catch = Catch()
        tlog = logging.getLogger("transformers")
        tlog.addHandler(catch)
        transformers.logging.set_verbosity_warning()
        with warnings.catch_warnings(record=True) as w:
            warnings.simplefilter("always")
            conf = AutoConfig.from_pretrained(out)
            model, info = AutoModelForCausalLM.from_pretrained(out, output_loading_info=True,
                                                               attn_implementation="eager")
            htok = AutoTokenizer.from_pretrained(out)
        tlog.removeHandler(catch)
        msgs = [str(x.message) for x in w] + catch.records
        bad_info = {k: v for k, v in info.items() if v}
        check(not msgs and not bad_info, f"{arch} AutoModelForCausalLM + AutoTokenizer load without warnings",
              f"{msgs[:3]} {bad_info}")
        check(type(model).__name__ == cfg["architectures"][0] and conf.model_type == arch,
              f"{arch} class {type(model).__name__}")
        check(type(htok).__name__ in ("PreTrainedTokenizerFast", "TokenizersBackend") and len(htok) == 400
              and htok.eos_token == "<|endoftext|>" and htok.pad_token == "<|endoftext|>",
              f"{arch} tokenizer {type(htok).__name__}", f"len {len(htok)} eos {htok.eos_token!r} pad {htok.pad_token!r}")
        msgs = [{"role": "user", "content": "hi"}]
        check(htok.chat_template == chat and htok.apply_chat_template(msgs, tokenize=False) == "<|endoftext|>user: hi\n",
              f"{arch} chat template carried over", repr(htok.chat_template)[:80])
        hf_ids = [htok.encode(l, add_special_tokens=True) for l in lines]
        n_diff = sum(a != b for a, b in zip(hf_ids, moec_ids))
        check(n_diff == 0 and len(hf_ids) == len(moec_ids), f"{arch} AutoTokenizer ids = moec tokenize",
              f"{n_diff} of {len(lines)} lines differ")
        gc = json.load(open(os.path.join(out, "generation_config.json")))
        check(gc.get("eos_token_id") == 0 and model.generation_config.eos_token_id == 0,
              f"{arch} generation_config eos", str(gc))
        ids = [int(x) for x in np.random.default_rng(7).integers(0, 400, 48)]
        with torch.no_grad():
            want = model.eval()(torch.tensor([ids])).logits[0].float().numpy()
        got, msg = moec_logits(args, out, ids, False)
        e = rel_err(got, want) if got is not None and got.shape == want.shape else float("inf")
        check(e <= REL_TOL, f"{arch} transformers logits = moec logits (moec-trained)", f"rel err {e:.2e} {msg}")
        # re-saved by transformers (the qwen3_moe case: it writes num_local_experts), moec loads it again
        resaved = out + "-resaved"
        model.save_pretrained(resaved)
        got, msg = moec_logits(args, resaved, ids, False)
        e = rel_err(got, want) if got is not None and got.shape == want.shape else float("inf")
        check(e <= REL_TOL, f"{arch} re-saved by transformers: moec logits", f"rel err {e:.2e} {msg}")

    # 3. sliding-window training is refused, not ignored
    cfg = dict(TRAIN_CONFIGS["mixtral"], vocab_size=400, hidden_size=64, num_hidden_layers=2, num_attention_heads=4,
               num_key_value_heads=2, sliding_window=16)
    cp = os.path.join(root, "swa.json")
    json.dump(cfg, open(cp, "w"))
    r = run([args.moec, "train", "--config", cp, "--data", data, "--out", os.path.join(root, "swa"), "--steps", "1",
             "--no-progress"])
    err = r.stderr.decode(errors="replace").strip().splitlines()
    check(r.returncode == 1 and len(err) == 1 and "sliding_window" in err[0], "train refuses sliding_window",
          repr(err[:2]))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--moec", required=True)
    ap.add_argument("--build-dir", required=True)
    ap.add_argument("--only", choices=["hf2moec", "moec2hf"])
    args = ap.parse_args()
    args.moec = os.path.abspath(args.moec)
    torch.set_num_threads(2)
    print(f"transformers {transformers.__version__}, torch {torch.__version__}")
    root = os.path.join(os.path.abspath(args.build_dir), "hf_models")
    if os.path.exists(root):
        shutil.rmtree(root)
    os.makedirs(root)
    if args.only != "moec2hf":
        test_hf_to_moec(args, os.path.join(root, "from_hf"))
    if args.only != "hf2moec":
        test_moec_to_hf(args, os.path.join(root, "from_moec"))
    print(f"{passed} passed, {failed} failed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
