#!/usr/bin/env python3
"""demo_tokenizer.py MODEL_DIR... - give each tiny checkpoint a tokenizer.json of its own vocab
size: a byte-level BPE trained with Hugging Face `tokenizers` on text every Debian machine has
(/usr/share/common-licenses). Qwen models get the Qwen2 pre-tokenizer (regex Split + ByteLevel,
NFC), the others the GPT-2 ByteLevel one. The checkpoints have random weights, so the point is
the plumbing (tokenize -> generate -> detokenize), not the text."""
import glob
import json
import os
import sys

from tokenizers import Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, trainers

QWEN_SPLIT = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*"
              r"|\s*[\r\n]+|\s+(?!\S)|\s+")


def corpus():
    for path in sorted(glob.glob("/usr/share/common-licenses/*")):
        if os.path.isfile(path):
            with open(path, encoding="utf-8", errors="replace") as f:
                yield f.read()


def build(model_dir):
    cfg = json.load(open(os.path.join(model_dir, "config.json")))
    vocab = cfg["vocab_size"]
    tok = Tokenizer(models.BPE())
    if cfg["model_type"].startswith("qwen"):
        tok.normalizer = normalizers.NFC()
        tok.pre_tokenizer = pre_tokenizers.Sequence([
            pre_tokenizers.Split(Regex(QWEN_SPLIT), behavior="isolated", invert=False),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)])
    else:
        tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab, special_tokens=["<|endoftext|>"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tok.train_from_iterator(corpus(), trainer)
    path = os.path.join(model_dir, "tokenizer.json")
    tok.save(path)
    return path, tok.get_vocab_size()


if __name__ == "__main__":
    for d in sys.argv[1:]:
        path, n = build(d)
        print(f"{path}: {n} tokens")
