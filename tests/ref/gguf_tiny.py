"""gguf_tiny.py - tiny checkpoints that llama.cpp's architectures can express, for the GGUF tests
(tests/py_test_gguf.py) and the llama.cpp comparison (bench/gguf_vs_llamacpp.sh).

make_tiny.py's models exercise moec features llama.cpp lacks (dense layers in qwen2/3-MoE, GQA
and clip_qkv in OLMoE); the variants here drop exactly those, keeping everything else. Every
model gets a byte-level BPE tokenizer.json trained by `moec tokenizer train` on this repo's docs
(Qwen2 split regex, so tokenizer.ggml.pre = qwen2).
"""

import os
import shutil
import subprocess

import numpy as np

import make_tiny

# name -> (base model in make_tiny.MODELS, config overrides)
VARIANTS = {
    "g_mixtral": ("mixtral", {}),
    "g_mixtral_f16": ("mixtral_f16", {}),
    "g_qwen2_moe": ("qwen2_moe", {"mlp_only_layers": []}),
    "g_qwen3_moe": ("qwen3_moe", {"decoder_sparse_step": 1}),
    "g_olmoe": ("olmoe", {"num_key_value_heads": 4}),
}
TOKENIZER_VOCAB = 280  # below every variant's vocab_size (the rest are padding rows)
GGUF_ARCH = {"mixtral": "llama", "qwen2_moe": "qwen2moe", "qwen3_moe": "qwen3moe", "olmoe": "olmoe"}


def register():
    for name, (base, over) in VARIANTS.items():
        if name in make_tiny.MODELS:
            continue
        spec = dict(make_tiny.MODELS[base])
        cfg = dict(spec["config"])
        cfg.update(over)
        spec["config"] = cfg
        make_tiny.MODELS[name] = spec


WORDS = ("the model reads a file and writes tokens experts route each token to the top two of eight "
         "layers norm attention heads key value cache logits greedy text GGUF llama moec 42 1234 x=f(y)+1; "
         "Über Straße naïve café — tabs\tand  spaces\n").split(" ")


def train_tokenizer(moec, out_json, root):
    """Trains on a fixed pseudo-random corpus (not the repo's docs, so the test models do not
    change when the docs do)."""
    import random
    rnd = random.Random(7)
    corpus = os.path.join(os.path.dirname(out_json), "corpus.txt")
    with open(corpus, "w") as f:
        for _ in range(3000):
            f.write(" ".join(rnd.choice(WORDS) for _ in range(12)) + "\n")
    subprocess.run([moec, "tokenizer", "train", "--vocab", str(TOKENIZER_VOCAB), "-o", out_json, corpus],
                   check=True, capture_output=True)


def write_all(moec, out_root, root, names=None):
    """Writes the variants (with tokenizer.json) under out_root; returns {name: dir}."""
    register()
    os.makedirs(out_root, exist_ok=True)
    tok = os.path.join(out_root, "tokenizer.json")
    if not os.path.exists(tok):
        train_tokenizer(moec, tok, root)
    dirs = {}
    for name in names or VARIANTS:
        d = make_tiny.write_model(name, out_root)
        shutil.copy(tok, os.path.join(d, "tokenizer.json"))
        dirs[name] = d
    return dirs


def permute_qk(w, n_head):
    """llama.cpp's convert_hf_to_gguf permutation of q/k rows (HF rotate-half → adjacent pairs)."""
    return w.reshape(n_head, 2, w.shape[0] // n_head // 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def rewrite(src, dst, edit_kv=None, edit_tensors=None):
    """Copies a GGUF with gguf-py, after edit_kv(dict key -> (type, value, sub_type)) (which may
    return a new architecture name) and edit_tensors(list of (name, array, type))."""
    import gguf
    r = gguf.GGUFReader(src)
    arch = r.fields["general.architecture"].contents()
    kvs = {}
    for k, f in r.fields.items():
        if k.startswith("GGUF.") or k == "general.architecture":
            continue
        t = f.types[0]
        kvs[k] = (t, f.contents(), f.types[1] if t == gguf.GGUFValueType.ARRAY else None)
    tensors = [(t.name, np.array(t.data), t.tensor_type) for t in r.tensors]
    if edit_kv:
        arch = edit_kv(kvs) or arch
    if edit_tensors:
        tensors = edit_tensors(tensors)
    w = gguf.GGUFWriter(dst, arch)
    for k, (t, v, sub) in kvs.items():
        w.add_key_value(k, v, t, sub_type=sub)
    for name, a, tt in tensors:
        if tt in (gguf.GGMLQuantizationType.F32, gguf.GGMLQuantizationType.F16):
            w.add_tensor(name, a)
        else:
            w.add_tensor(name, a, raw_dtype=tt)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
