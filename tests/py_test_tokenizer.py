#!/usr/bin/env python3
"""py_test_tokenizer.py — moec's tokenizer.json encoder/decoder against Hugging Face `tokenizers`.

Trains small BPE tokenizers locally (no network) in the styles real MoE checkpoints use —
GPT-2/OLMoE byte-level, Qwen2/3 (Split + ByteLevel, NFC, special tokens), Llama-3 (ignore_merges),
Mixtral/Llama-2 SentencePiece BPE (byte_fallback, Prepend/Replace normalizers), a Metaspace one
and a "misc" one (NFKD/StripAccents/Lowercase, Whitespace/Punctuation/Digits, subword prefix and
word suffix) plus variants derived by editing their JSON — then encodes ~3200 varied lines
with both and requires identical ids for every line, identical decodes (with and without special
tokens, and of random id lists that cut UTF-8 sequences), matching n_vocab / token bytes /
token ids, and one-line failures with exit code 1 (runtime) or 2 (usage). Artifacts go under
<build-dir>/tokenizer_test/. Exits non-zero on any mismatch.

Run: python tests/py_test_tokenizer.py --moec build/moec --build-dir build
"""
import argparse
import glob
import json
import os
import random
import subprocess
import sys
import time
import unicodedata

from tokenizers import AddedToken, Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, trainers

QWEN_PATTERN = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*"
                r"|\s*[\r\n]+|\s+(?!\S)|\s+")
LLAMA3_PATTERN = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*"
                  r"|\s*[\r\n]+|\s+(?!\S)|\s+")
SANITIZER_MARKERS = ("AddressSanitizer", "LeakSanitizer", "UndefinedBehaviorSanitizer", "runtime error:")

# ---------------------------------------------------------------- text

PHRASES = [
    "The quick brown fox jumps over the lazy dog.", "I'm sure it's what we'd've done; they'll see.",
    "DON'T SHOUT, IT'S RUDE. We'RE fine, you'VE seen.", "Hello, world! How are you doing today?",
    "机器学习是人工智能的一个分支。", "混合专家模型在推理时只激活一部分参数。", "今天天气很好，我们去公园散步吧！",
    "日本語のテキストも正しく処理できますか？", "カタカナとひらがなと漢字が混ざっています。",
    "東京は日本の首都です。", "한국어 문장도 테스트합니다.", "안녕하세요, 만나서 반갑습니다!",
    "مرحبا بالعالم، كيف حالك اليوم؟", "اللغة العربية تكتب من اليمين إلى اليسار.",
    "שלום עולם, מה שלומך?", "Привет, мир! Как дела?", "Съешь же ещё этих мягких французских булок.",
    "Γειά σου Κόσμε! Η γρήγορη καφέ αλεπού.", "ΣΊΣΥΦΟΣ και οδυσσέας", "नमस्ते दुनिया, आप कैसे हैं?",
    "สวัสดีชาวโลก ภาษาไทยไม่มีช่องว่าง", "Xin chào thế giới, tiếng Việt có dấu.",
    "İstanbul'da ılık bir gün; IĞDIR ŞİŞLİ.", "Straße, Fußgänger, Maß und Größe.",
    "Ærøskøbing, Ørsted, Ålborg.", "naïve café résumé façade coöperate", "Ǆemal ǅemal ǆemal",
    "👍🏽 great job 🎉🎉", "family: 👨‍👩‍👧‍👦 and 👩🏾‍💻 coder", "flags 🇯🇵🇫🇷🇺🇸 and keycaps 1️⃣2️⃣#️⃣",
    "🏳️‍🌈 rainbow ❤️‍🔥 heart", "Z̴̛͓a̷͉l̶g̸o̵ ̷t̶e̶x̵t̶", "e\u0301 vs \u00e9, a\u030a vs \u00e5",
    "ﬁnance ﬂow Ａｂｃ １２３ ² ③ ㎏ ℌ", "½ ¼ ¾ ⅞ Ⅻ ⅷ", "tab\tseparated\tvalues\t\t",
    "windows\r\nline\r\nendings\r\n", "many\n\n\nnewlines\n\n", "  leading and trailing spaces   ",
    "non\u00a0breaking\u00a0space", "ideographic\u3000space", "line\u2028separator\u2029para",
    "zero\u200bwidth\u200cjoiner\u200d", "\ufeffbyte order mark", "mongolian\u180evowel",
    "nel\u0085char", "control \x1b[31mred\x1b[0m", "bell\x07 and del\x7f", "nul\x00inside",
    "3.14159265358979323846", "1234567890123456789012345678901234567890", "+1 (555) 010-9999",
    "٣٤٥ ۱۲۳ ०१२ ๑๒๓", "1,000,000.00 and 1e-10", "x = y ** 2 + 3 * z - 4 / w",
    "def f(x):\n    return x + 1\n", "for (int i = 0; i < n; i++) { a[i] += b[i]; }",
    "#include <stdio.h>\nint main(void) { return 0; }", "SELECT * FROM t WHERE id = 42;",
    "https://example.com/path?query=1&x=y#frag", "user@example.org", "C:\\Users\\name\\file.txt",
    "ſ 'ſ 'ſt K Å", "''' \"\"\" `backticks` ~~~", "...!!!???---___***", "a'b'c 's'S 'LL 'Ll",
]

SPECIAL_SNIPPETS = [
    "<|endoftext|>", "<|im_start|>user\nHi there<|im_end|>\n<|im_start|>assistant\n",
    "abc<|endoftext|>def", "<|endoftext|><|endoftext|>", "<|im_start", "<|im_end|", "<|endoftext",
    "<think>\nreasoning\n</think>\n\nanswer", " <mask> ", "x<mask>y", "  <mask>  z", "[NEWTOK] a[NEWTOK]b [NEWTOK]",
    "<s> hello </s>", "<unk>", "cafe\u0301 café CAFÉ", "<s><s></s>", "<|fim_prefix|>code<|fim_suffix|>",
]

CHAR_POOL = ("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789"
             " \t\n\r.,;:!?'\"-_()[]{}<>|/\\@#$%^&*+=~`"
             "éèêëàâäôöûüçñßøåæœ" "ΑΒΓΔαβγδσςΣ" "АБВГДабвгдёЁ" "中文字符测试人工智能" "日本語かなカナ"
             "한국어" "عربي" "עברית" "हिन्दी" "ไทย" "٣٤٥" "①②½²" "👍🎉❤️\u200d🔥🇯🇵"
             "\u0301\u0308\u00a0\u3000\u2028\u200b\ufeff\u180e\u0085\x00\x1b")


def local_text_files():
    pats = ["/usr/share/common-licenses/*", "/usr/include/*.h", "/usr/share/doc/*/copyright",
            "/usr/lib/python3*/*.py"]
    files = []
    for p in pats:
        files.extend(sorted(f for f in glob.glob(p) if os.path.isfile(f)))
    return files


def read_lines(files, max_bytes):
    lines, total = [], 0
    for f in files:
        try:
            with open(f, encoding="utf-8") as fh:
                data = fh.read(200_000)
        except (UnicodeDecodeError, OSError):
            continue
        for ln in data.splitlines():
            lines.append(ln)
            total += len(ln)
        if total > max_bytes:
            break
    return lines


def training_corpus(rng, local_lines):
    out = list(local_lines)
    for _ in range(4000):
        k = rng.randint(1, 4)
        s = " ".join(rng.choice(PHRASES) for _ in range(k))
        if rng.random() < 0.3:
            s = unicodedata.normalize(rng.choice(["NFC", "NFD", "NFKC"]), s)
        out.append(s)
    return out


def test_lines(rng, local_lines):
    lines = ["", " ", "  ", "\n", "\t", "\r\n", "a", "'", "'s"]
    lines += PHRASES + SPECIAL_SNIPPETS
    lines += [unicodedata.normalize(f, p) for p in PHRASES for f in ("NFD", "NFKD")]
    # local file lines (code, licenses), sometimes joined with their neighbours
    pick = rng.sample(local_lines, min(1400, len(local_lines)))
    for i, ln in enumerate(pick):
        lines.append(ln if i % 4 else "\n".join(pick[i:i + 3]))
    # mixtures of phrases, specials and whitespace
    seps = [" ", "  ", "\n", "\n\n", "\t", "\r\n", " \n ", "", "\u3000"]
    for _ in range(900):
        parts = [rng.choice(PHRASES + SPECIAL_SNIPPETS) for _ in range(rng.randint(1, 5))]
        s = parts[0]
        for p in parts[1:]:
            s += rng.choice(seps) + p
        if rng.random() < 0.2:
            s = unicodedata.normalize("NFD", s)
        lines.append(s)
    # random characters
    for _ in range(700):
        lines.append("".join(rng.choice(CHAR_POOL) for _ in range(rng.randint(1, 80))))
    # long words and runs
    lines += ["a" * 5000, "ab" * 3000, "".join(rng.choice("abcdefghij") for _ in range(3000)),
              "中" * 2000, "人工智能" * 400, "9" * 3000, "1234567890" * 200, " " * 1000, "\n" * 500,
              "\t \n" * 300, "!" * 2000, "👍" * 500, "e\u0301" * 800, "<|endoftext|>" * 200,
              "x" * 70000, " ".join(["supercalifragilisticexpialidocious"] * 300)]
    return lines


# ---------------------------------------------------------------- tokenizers


def finish(tok, path):
    tok.save(path)
    return Tokenizer.from_file(path)


def train(tok, trainer, corpus):
    tok.train_from_iterator(corpus, trainer=trainer)
    return tok


def build_gpt2(corpus, path):
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    tok.decoder = decoders.ByteLevel()
    tr = trainers.BpeTrainer(vocab_size=3000, special_tokens=["<|endoftext|>"], show_progress=False,
                             initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    train(tok, tr, corpus)
    tok.add_special_tokens([AddedToken("<mask>", lstrip=True, special=True, normalized=False)])
    tok.add_tokens([AddedToken("[NEWTOK]", single_word=True, normalized=False),
                    AddedToken(" hello world", normalized=False)])
    return finish(tok, path)


def build_qwen(corpus, path):
    tok = Tokenizer(models.BPE())
    tok.normalizer = normalizers.NFC()
    tok.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(QWEN_PATTERN), behavior="isolated", invert=False),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)])
    tok.decoder = decoders.ByteLevel()
    tr = trainers.BpeTrainer(vocab_size=4000, special_tokens=["<|endoftext|>", "<|im_start|>", "<|im_end|>"],
                             show_progress=False, initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    train(tok, tr, corpus)
    tok.add_special_tokens(["<|fim_prefix|>", "<|fim_suffix|>"])
    tok.add_tokens([AddedToken("<think>", normalized=False, special=False),
                    AddedToken("</think>", normalized=False, special=False),
                    AddedToken("café", normalized=True, special=False),
                    AddedToken("日本語", normalized=True, rstrip=True, special=False)])
    return finish(tok, path)


def build_llama3(corpus, path):
    tok = Tokenizer(models.BPE(ignore_merges=True))
    tok.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(LLAMA3_PATTERN), behavior="isolated", invert=False),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)])
    tok.decoder = decoders.ByteLevel()
    tr = trainers.BpeTrainer(vocab_size=3000, special_tokens=["<|begin_of_text|>", "<|end_of_text|>"],
                             show_progress=False, initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    train(tok, tr, corpus)
    return finish(tok, path)


BYTE_TOKENS = [f"<0x{i:02X}>" for i in range(256)]


def build_sp(corpus, path, metaspace):
    """SentencePiece-converted BPE: <unk> <s> </s>, then 256 byte tokens, then merges."""
    tok = Tokenizer(models.BPE(unk_token="<unk>", fuse_unk=not metaspace, byte_fallback=not metaspace))
    tok.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="first", split=True)
    tr = trainers.BpeTrainer(vocab_size=3000, special_tokens=["<unk>", "<s>", "</s>"] + BYTE_TOKENS,
                             limit_alphabet=150, show_progress=False)
    train(tok, tr, corpus)
    d = json.loads(tok.to_str())
    d["added_tokens"] = [t for t in d["added_tokens"] if t["content"] not in BYTE_TOKENS]
    for t in d["added_tokens"]:
        t["normalized"] = False
    if metaspace:
        d["pre_tokenizer"] = {"type": "Sequence", "pretokenizers": [
            {"type": "Metaspace", "replacement": "▁", "prepend_scheme": "first", "split": True},
            {"type": "Digits", "individual_digits": True}]}
        d["decoder"] = {"type": "Sequence", "decoders": [
            {"type": "ByteFallback"}, {"type": "Metaspace", "replacement": "▁", "prepend_scheme": "first",
                                       "split": True}]}
        d["added_tokens"].append({"id": len(d["model"]["vocab"]), "content": "<mask>", "single_word": False,
                                  "lstrip": True, "rstrip": True, "normalized": False, "special": True})
    else:  # Mixtral / Llama-2 as converted by transformers
        d["normalizer"] = {"type": "Sequence", "normalizers": [
            {"type": "Prepend", "prepend": "▁"}, {"type": "Replace", "pattern": {"String": " "}, "content": "▁"}]}
        d["pre_tokenizer"] = None
        d["decoder"] = {"type": "Sequence", "decoders": [
            {"type": "Replace", "pattern": {"String": "▁"}, "content": " "}, {"type": "ByteFallback"},
            {"type": "Fuse"}, {"type": "Strip", "content": " ", "start": 1, "stop": 0}]}
        # legacy "a b" merge strings, as older tokenizer.json files store them
        d["model"]["merges"] = [" ".join(m) if isinstance(m, list) else m for m in d["model"]["merges"]]
    with open(path, "w", encoding="utf-8") as f:
        json.dump(d, f, ensure_ascii=False)
    return Tokenizer.from_file(path)


def build_misc(corpus, path):
    tok = Tokenizer(models.BPE(unk_token="[UNK]", continuing_subword_prefix="##", end_of_word_suffix="</w>"))
    tok.normalizer = normalizers.Sequence([normalizers.NFKD(), normalizers.StripAccents(), normalizers.Lowercase(),
                                           normalizers.Replace(Regex(r"\d{4,}"), "<num>"), normalizers.Strip()])
    tok.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Whitespace(), pre_tokenizers.Punctuation(behavior="contiguous"),
        pre_tokenizers.Digits(individual_digits=False),
        pre_tokenizers.Split(Regex(r"[aeiou]"), behavior="merged_with_next", invert=False),
        pre_tokenizers.Split("-", behavior="merged_with_previous", invert=False)])
    tr = trainers.BpeTrainer(vocab_size=2500, special_tokens=["[UNK]", "[SEP]"], limit_alphabet=120,
                             continuing_subword_prefix="##", end_of_word_suffix="</w>", show_progress=False)
    train(tok, tr, corpus)
    tok.add_tokens([AddedToken("hello", normalized=True), AddedToken("[SEP]", special=True, normalized=False)])
    return finish(tok, path)


def variant_of(base_path, path, mutate):
    """A tokenizer.json derived from a trained one by editing components (no retraining)."""
    with open(base_path, encoding="utf-8") as f:
        d = json.load(f)
    mutate(d)
    with open(path, "w", encoding="utf-8") as f:
        json.dump(d, f, ensure_ascii=False)
    return Tokenizer.from_file(path)


def mut_prefix_space(d):  # RoBERTa-style ByteLevel(add_prefix_space=True)
    d["pre_tokenizer"]["add_prefix_space"] = True


def mut_misc(d):  # the remaining split behaviors and pre-tokenizers, and more normalizers
    d["normalizer"] = {"type": "Sequence", "normalizers": [
        {"type": "NFKC"}, {"type": "Lowercase"}, {"type": "Prepend", "prepend": "_"},
        {"type": "Replace", "pattern": {"String": "  "}, "content": " "}, {"type": "NFD"}, {"type": "NFC"}]}
    d["pre_tokenizer"] = {"type": "Sequence", "pretokenizers": [
        {"type": "WhitespaceSplit"},
        {"type": "Split", "pattern": {"Regex": "\\d"}, "behavior": "Contiguous", "invert": True},
        {"type": "Split", "pattern": {"Regex": "[^\\w\\s]"}, "behavior": "Removed", "invert": False},
        {"type": "CharDelimiterSplit", "delimiter": "e"},
        {"type": "Punctuation", "behavior": "Removed"}, {"type": "BertPreTokenizer"},
        {"type": "Digits", "individual_digits": True}]}


def mut_bytelevel_normalizer(d):  # byte-level mapping done by the normalizer, regex split after it
    d["normalizer"] = {"type": "ByteLevel"}
    d["pre_tokenizer"] = {"type": "Split", "pattern": {"Regex": QWEN_PATTERN}, "behavior": "Isolated", "invert": False}


def mut_metaspace_legacy(d):  # files written before prepend_scheme existed
    d["pre_tokenizer"]["pretokenizers"][0] = {"type": "Metaspace", "replacement": "▁", "add_prefix_space": True}
    d["decoder"]["decoders"][1] = {"type": "Metaspace", "replacement": "▁", "add_prefix_space": True}


def mut_nested(d):  # Sequences inside Sequences
    n, dec = d["normalizer"]["normalizers"], d["decoder"]["decoders"]
    d["normalizer"] = {"type": "Sequence", "normalizers": [{"type": "Sequence", "normalizers": n[:1]}, n[1]]}
    d["decoder"] = {"type": "Sequence", "decoders": [{"type": "Sequence", "decoders": dec[:2]},
                                                     {"type": "Sequence", "decoders": dec[2:]}]}
    d["pre_tokenizer"] = {"type": "Sequence", "pretokenizers": [
        {"type": "Sequence", "pretokenizers": [{"type": "Split", "pattern": {"String": "▁▁"}, "behavior": "MergedWithNext",
                                                "invert": False}]}]}


VARIANTS = [("mixtral-nested-variant", "mixtral-style", mut_nested),
            ("gpt2-prefix-variant", "gpt2-style", mut_prefix_space),
            ("misc-variant", "misc-style", mut_misc),
            ("bytelevel-normalizer-variant", "qwen2-style", mut_bytelevel_normalizer),
            ("metaspace-legacy-variant", "metaspace-style", mut_metaspace_legacy)]


# ---------------------------------------------------------------- running moec


def run_moec(moec, args, timeout=120):
    p = subprocess.run([moec, "tokenize"] + args, capture_output=True, timeout=timeout)
    return p.returncode, p.stdout.decode("utf-8", errors="replace"), p.stderr.decode("utf-8", errors="replace")


def check_clean_stderr(name, err, failures):
    if any(m in err for m in SANITIZER_MARKERS) or err.strip():
        failures.append(f"{name}: unexpected stderr: {err.strip()[:500]}")


def show(s, n=120):
    r = repr(s)
    return r if len(r) <= n else r[:n] + "..."


def compare_tokenizer(name, moec, hf, path, lines, workdir, rng, failures, summary):
    jl = os.path.join(workdir, f"{name}.lines.jsonl")
    with open(jl, "w", encoding="utf-8") as f:
        for ln in lines:
            f.write(json.dumps(ln) + "\n")
    t0 = time.time()
    rc, out, err = run_moec(moec, ["-t", path, "--jsonl", jl])
    t_moec = time.time() - t0
    if rc != 0:
        failures.append(f"{name}: moec --jsonl exited {rc}: {err.strip()[:300]}")
        return
    check_clean_stderr(f"{name} --jsonl", err, failures)
    got = out.split("\n")
    if got and got[-1] == "":
        got.pop()
    t0 = time.time()
    want = [hf.encode(ln, add_special_tokens=False).ids for ln in lines]
    t_hf = time.time() - t0
    same, shown = 0, 0
    for i, ln in enumerate(lines):
        g = [int(x) for x in got[i].split(",")] if i < len(got) and got[i] else []
        if g == want[i]:
            same += 1
        elif shown < 5:
            shown += 1
            k = next((j for j in range(min(len(g), len(want[i]))) if g[j] != want[i][j]), min(len(g), len(want[i])))
            failures.append(f"{name}: line {i} {show(ln)}: first difference at id #{k}: "
                            f"moec {g[max(0, k - 2):k + 4]} vs hf {want[i][max(0, k - 2):k + 4]} "
                            f"(lengths {len(g)} vs {len(want[i])}); hf tokens {hf.encode(ln, add_special_tokens=False).tokens[max(0, k - 2):k + 4]}")
    if len(got) != len(lines):
        failures.append(f"{name}: moec printed {len(got)} lines for {len(lines)} inputs")
    summary.append(f"{same}/{len(lines)} lines identical ({name}; moec {t_moec:.2f}s, hf {t_hf:.2f}s)")
    if same != len(lines):
        failures.append(f"{name}: {len(lines) - same} of {len(lines)} lines differ")

    # decodes: the encodings themselves (keep and skip special tokens), plus random id lists that
    # cut multi-byte characters and byte-fallback sequences apart
    vocab_n = hf.get_vocab_size(with_added_tokens=True)
    id_lists = list(want)
    for _ in range(600):
        id_lists.append([rng.randrange(vocab_n) for _ in range(rng.randint(1, 24))])
    id_lists = [ids for ids in id_lists if all(hf.id_to_token(i) is not None for i in ids)]
    dl = os.path.join(workdir, f"{name}.ids.jsonl")
    with open(dl, "w") as f:
        for ids in id_lists:
            f.write(json.dumps(ids) + "\n")
    for skip in (False, True):
        rc, out, err = run_moec(moec, ["-t", path, "--decode-jsonl", dl] + (["--skip-special"] if skip else []))
        if rc != 0:
            failures.append(f"{name}: moec --decode-jsonl exited {rc}: {err.strip()[:300]}")
            continue
        check_clean_stderr(f"{name} --decode-jsonl", err, failures)
        got_txt = [json.loads(x) for x in out.split("\n") if x != ""]
        ok, shown = 0, 0
        for i, ids in enumerate(id_lists):
            w = hf.decode(ids, skip_special_tokens=skip)
            g = got_txt[i] if i < len(got_txt) else None
            if g == w:
                ok += 1
            elif shown < 3:
                shown += 1
                failures.append(f"{name}: decode(skip_special={skip}) of {ids[:12]}: moec {show(g)} vs hf {show(w)}")
        summary.append(f"{ok}/{len(id_lists)} decodes identical ({name}, skip_special={skip})")
        if ok != len(id_lists):
            failures.append(f"{name}: {len(id_lists) - ok} decodes differ (skip_special={skip})")


def bytes_to_unicode():
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    cs, n = bs[:], 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return {chr(c): b for b, c in zip(bs, cs)}


def expected_token_bytes(tok_str, decoder):
    """What moec_tokenizer_token_bytes should return for one token (see decoder.h)."""
    kinds = []

    def walk(d):
        if d:
            kinds.append(d["type"])
            for k in d.get("decoders", []):
                walk(k)
    walk(decoder)
    if "ByteLevel" in kinds:
        table = bytes_to_unicode()
        if all(c in table for c in tok_str):
            return bytes(table[c] for c in tok_str)
        return tok_str.encode()
    s = tok_str
    for k in kinds:
        if k == "ByteFallback" and len(s) == 6 and s.startswith("<0x") and s.endswith(">"):
            try:
                return bytes([int(s[3:5], 16)])
            except ValueError:
                pass
        if k in ("Replace", "Metaspace"):
            s = s.replace("▁", " ")
    return s.encode()


def check_vocab(name, moec, hf, path, rng, failures, summary):
    """moec_tokenizer_n_vocab, _token_bytes and _token_id against the tokenizer's own vocabulary."""
    with open(path, encoding="utf-8") as f:
        decoder = json.load(f).get("decoder")
    rc, out, err = run_moec(moec, ["-t", path, "--vocab"])
    if rc != 0:
        failures.append(f"{name}: --vocab exited {rc}: {err.strip()[:200]}")
        return
    check_clean_stderr(f"{name} --vocab", err, failures)
    rows = out.rstrip("\n").split("\n")
    vocab = hf.get_vocab(with_added_tokens=True)
    want_n = max(vocab.values()) + 1
    if rows[0] != f"n_vocab {want_n}":
        failures.append(f"{name}: --vocab says {rows[0]!r}, want n_vocab {want_n}")
    bad = 0
    for row in rows[1:]:
        i, hexs = row.split("\t")
        tok_str = hf.id_to_token(int(i))
        want = "-" if tok_str is None else expected_token_bytes(tok_str, decoder).hex()
        if hexs != want:
            bad += 1
            if bad <= 3:
                failures.append(f"{name}: token_bytes({i}) = {hexs}, want {want} ({tok_str!r})")
    if len(rows) - 1 != want_n:
        failures.append(f"{name}: --vocab printed {len(rows) - 1} ids, want {want_n}")
    specials = [t.content for t in hf.get_added_tokens_decoder().values()]
    probes = specials[:6] + rng.sample(sorted(vocab), 10) + ["no-such-token-xyz"]
    for t in probes:
        rc, out, err = run_moec(moec, ["-t", path, "--token-id", t])
        want = hf.token_to_id(t)
        if rc != 0 or out.strip() != str(-1 if want is None else want):
            bad += 1
            failures.append(f"{name}: --token-id {t!r} gave {out.strip()!r} (rc {rc}), want {want}")
    summary.append(f"{want_n - bad}/{want_n} token bytes/ids ({name})")


def check_single_modes(moec, hf, path, workdir, failures):
    text = "Hello <|endoftext|> 世界 👍🏽\n  x"
    want = hf.encode(text, add_special_tokens=False).ids
    rc, out, err = run_moec(moec, ["-t", path, "--text", text])
    if rc != 0 or out.strip() != ",".join(map(str, want)):
        failures.append(f"--text: rc {rc}, got {out.strip()[:200]!r}, want {want} ({err.strip()[:200]})")
    fp = os.path.join(workdir, "text.txt")
    with open(fp, "w", encoding="utf-8", newline="") as f:
        f.write(text + "\r\n")
    want = hf.encode(text + "\r\n", add_special_tokens=False).ids
    rc, out, err = run_moec(moec, ["-t", path, "--file", fp])
    if rc != 0 or out.strip() != ",".join(map(str, want)):
        failures.append(f"--file: rc {rc}, got {out.strip()[:200]!r}, want {want}")
    rc, out, err = run_moec(moec, ["-t", path, "--decode", ",".join(map(str, want))])
    if rc != 0 or out != hf.decode(want, skip_special_tokens=False) + "\n":
        failures.append(f"--decode: rc {rc}, got {out!r}")


def expect_failure(moec, label, args, want_rc, needles, failures):
    rc, out, err = run_moec(moec, args)
    lines = [x for x in err.split("\n") if x.strip()]
    problems = []
    if rc != want_rc:
        problems.append(f"exit code {rc}, want {want_rc}")
    if len(lines) != 1:
        problems.append(f"{len(lines)} stderr lines, want 1")
    if any(m in err for m in SANITIZER_MARKERS):
        problems.append("sanitizer output")
    low = err.lower()
    for n in needles:
        if n.lower() not in low:
            problems.append(f"stderr lacks {n!r}")
    if problems:
        failures.append(f"error path '{label}': {'; '.join(problems)}: {err.strip()[:300]!r}")
    return not problems


def error_paths(moec, good_path, workdir, failures):
    with open(good_path, encoding="utf-8") as f:
        good = f.read()
    d = json.loads(good)
    n_ok, n = 0, 0

    def write(name, content):
        p = os.path.join(workdir, name)
        with open(p, "w", encoding="utf-8") as f:
            f.write(content if isinstance(content, str) else json.dumps(content))
        return p

    def variant(**changes):
        v = json.loads(good)
        for k, val in changes.items():
            if "." in k:
                a, b = k.split(".")
                v[a][b] = val
            else:
                v[k] = val
        return v

    wp = Tokenizer(models.WordPiece({"[UNK]": 0, "a": 1, "##b": 2}, unk_token="[UNK]"))
    ug = Tokenizer(models.Unigram([("<unk>", 0.0), ("a", -1.0), ("b", -2.0)], 0))
    cases = [
        ("truncated file", write("cut.json", good[: len(good) // 2]), 1, ["format error", "truncated file"]),
        ("malformed json", write("malformed.json", '{"model": {"type": "BPE",]}'), 1, ["format error", "line 1"]),
        ("not an object", write("array.json", "[1, 2, 3]"), 1, ["format error"]),
        ("empty file", write("empty.json", ""), 1, ["format error", "empty file"]),
        ("missing model", write("nomodel.json", {k: v for k, v in d.items() if k != "model"}), 1, ["format error", "model"]),
        ("WordPiece model", write("wordpiece.json", wp.to_str()), 1, ["unsupported", "WordPiece"]),
        ("Unigram model", write("unigram.json", ug.to_str()), 1, ["unsupported", "Unigram"]),
        ("BertNormalizer", write("bertnorm.json", variant(normalizer={"type": "BertNormalizer", "clean_text": True,
                                                                       "handle_chinese_chars": True, "strip_accents": None,
                                                                       "lowercase": True})), 1, ["unsupported", "BertNormalizer"]),
        ("Precompiled normalizer", write("precompiled.json", variant(normalizer={"type": "Precompiled", "precompiled_charsmap": ""})),
         1, ["unsupported", "Precompiled"]),
        ("UnicodeScripts pre_tokenizer", write("scripts.json", variant(pre_tokenizer={"type": "UnicodeScripts"})), 1,
         ["unsupported", "UnicodeScripts"]),
        ("WordPiece decoder", write("wpdec.json", variant(decoder={"type": "WordPiece", "prefix": "##", "cleanup": True})), 1,
         ["unsupported", "WordPiece"]),
        ("dropout", write("dropout.json", variant(**{"model.dropout": 0.1})), 1, ["unsupported", "dropout"]),
        ("merge out of vocabulary", write("badmerge.json", variant(**{"model.merges": [["zzzq", "qzzz"]]})), 1,
         ["format error", "merges[0]"]),
        ("bad merge string", write("badmerge2.json", variant(**{"model.merges": ["a b c"]})), 1, ["format error", "merges[0]"]),
        ("vocab id not integer", write("badvocab.json", variant(**{"model.vocab": {"a": "x"}})), 1, ["format error", "vocab"]),
        ("bad split regex", write("badregex.json", variant(pre_tokenizer={"type": "Split", "pattern": {"Regex": "(unclosed"},
                                                                           "behavior": "Isolated", "invert": False})), 1,
         ["unsupported", "regex"]),
        ("missing file", os.path.join(workdir, "does-not-exist.json"), 1, ["i/o error", "does-not-exist.json"]),
    ]
    for label, p, rc, needles in cases:
        n += 1
        n_ok += expect_failure(moec, label, ["-t", p, "--text", "hello"], rc, needles, failures)
    invalid = os.path.join(workdir, "invalid-utf8.txt")
    with open(invalid, "wb") as f:
        f.write(b"abc \xff\xfe def")
    bad_jsonl = write("bad.jsonl", '"ok"\nnot json\n')
    usage = [
        ("invalid UTF-8 input", ["-t", good_path, "--file", invalid], 1, ["utf-8"]),
        ("bad jsonl line", ["-t", good_path, "--jsonl", bad_jsonl], 1, ["line 2"]),
        ("id out of range", ["-t", good_path, "--decode", "99999999"], 1, ["out of range"]),
        ("no tokenizer", ["--text", "x"], 2, ["-t"]),
        ("two modes", ["-t", good_path, "--text", "x", "--decode", "1"], 2, ["exactly one"]),
        ("bad ids", ["-t", good_path, "--decode", "1,x"], 2, ["--decode"]),
        ("unknown flag", ["-t", good_path, "--bogus"], 2, ["--bogus"]),
    ]
    for label, args, rc, needles in usage:
        n += 1
        n_ok += expect_failure(moec, label, args, rc, needles, failures)
    return n_ok, n


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--moec", required=True)
    ap.add_argument("--build-dir", required=True)
    a = ap.parse_args()
    t_start = time.time()
    workdir = os.path.join(a.build_dir, "tokenizer_test")
    os.makedirs(workdir, exist_ok=True)
    rng = random.Random(1234)
    local = read_lines(local_text_files(), 1_500_000)
    local = [ln for ln in local if ln.strip()]
    corpus = training_corpus(rng, local)
    lines = test_lines(rng, local)

    builders = [
        ("gpt2-style", build_gpt2), ("qwen2-style", build_qwen), ("llama3-style", build_llama3),
        ("mixtral-style", lambda c, p: build_sp(c, p, metaspace=False)),
        ("metaspace-style", lambda c, p: build_sp(c, p, metaspace=True)),
        ("misc-style", build_misc),
    ]
    failures, summary = [], []
    paths = {}
    for name, build in builders:
        path = os.path.join(workdir, f"{name}.json")
        hf = build(corpus, path)
        paths[name] = path
        compare_tokenizer(name, a.moec, hf, path, lines, workdir, rng, failures, summary)
        check_vocab(name, a.moec, hf, path, rng, failures, summary)
        if name == "qwen2-style":
            check_single_modes(a.moec, hf, path, workdir, failures)
    for name, base, mutate in VARIANTS:
        path = os.path.join(workdir, f"{name}.json")
        try:
            hf = variant_of(paths[base], path, mutate)
        except Exception as e:  # this tokenizers version may not read an old-style field
            summary.append(f"{name} skipped (tokenizers cannot load it: {str(e)[:80]})")
            continue
        compare_tokenizer(name, a.moec, hf, path, lines, workdir, rng, failures, summary)

    n_ok, n_err = error_paths(a.moec, paths["qwen2-style"], workdir, failures)
    summary.append(f"{n_ok}/{n_err} error paths as expected")

    for kind in ("lines identical", "decodes identical", "token bytes", ""):
        group = [x for x in summary if kind in x] if kind else \
            [x for x in summary if not any(k in x for k in ("lines identical", "decodes identical", "token bytes"))]
        if group:
            print("tokenizer: " + ", ".join(group))
    print(f"tokenizer: {len(lines)} test lines, {time.time() - t_start:.1f}s total")
    if failures:
        print(f"tokenizer: FAILED ({len(failures)} problems); first ones:")
        for f in failures[:25]:
            print("  " + f)
        print(f"{len(summary)} passed, {len(failures)} failed")
        return 1
    print("tokenizer: OK")
    print(f"{len(summary)} passed, 0 failed")  # one per (tokenizer, check) group above
    return 0


if __name__ == "__main__":
    sys.exit(main())
