#!/usr/bin/env python3
"""py_test_tokenizer_train.py — `moec tokenizer train` against Hugging Face `tokenizers`.

Builds a local multi-domain corpus (license texts, C headers, generated multilingual text with
CJK, Cyrillic, Greek, Arabic, Hindi, Thai, emoji, NFD forms, CRLF and special-token strings),
trains with moec at vocab 1000 and 4000 (and an early-stopping configuration), and requires:
  (a) Hugging Face loads each output, encodes ~3000 varied lines to exactly the ids of
      `moec tokenize --jsonl`, and decoding gives back the (NFC-normalized) text exactly, in
      both HF and moec;
  (b) HF's BpeTrainer with the same settings on the same files learns the same vocabulary and
      merges (moec follows HF's tie-break, so identical, not just overlapping);
  (c) error cases exit 1 (runtime) or 2 (usage) with one stderr line: a vocabulary larger than
      the data supports, empty file, missing file, invalid UTF-8, --vocab below 256 + specials,
      and other flag mistakes; a failed run leaves an existing output file untouched.
Artifacts go under <build-dir>/tokenizer_train_test/. Prints `N passed, M failed` last and
exits non-zero on any failure.

Run: python tests/py_test_tokenizer_train.py --moec build/moec --build-dir build
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

from tokenizers import Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers

QWEN_PATTERN = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*"
                r"|\s*[\r\n]+|\s+(?!\S)|\s+")
SANITIZER_MARKERS = ("AddressSanitizer", "LeakSanitizer", "UndefinedBehaviorSanitizer", "runtime error:")

# ---------------------------------------------------------------- corpus

WORDS = {
    "en": "the of and to in is that it was for on are with as his they be at one have this from or had by "
          "word but what some we can out other were all there when up use your how said an each she which do "
          "their time if will way about many then them write would like so these her long make thing see him "
          "two has look more day could go come did number sound no most people my over know water than call "
          "first who may down side been now find expert mixture router token model training learning".split(),
    "de": "der die und in den von zu das mit sich des auf für ist im dem nicht ein eine als auch es an werden "
          "aus er hat dass sie nach wird bei einer um am sind noch wie einem über einen so zum war haben nur "
          "oder aber vor zur bis mehr durch man sein wurde sei Straße Größe Fußgänger Mädchen Brötchen".split(),
    "fr": "le de un être et à il avoir ne je son que se qui ce dans en du elle au pour pas que vous par sur "
          "faire plus dire me on mon lui nous comme mais pouvoir avec tout y aller voir en bien où sans tu ou "
          "leur homme si deux mari moi vouloir te femme venir quand grand celui si notre été très déjà".split(),
    "ru": "и в не на я быть он с что а по это она этот к но они мы как из у который то за свой что весь год "
          "от так о для ты же все тот мочь вы человек такой его сказать только или ещё бы себя один как уже "
          "до время если сам когда другой вот говорить наш мой знать стать при чтобы дело жизнь модель".split(),
    "el": "και το να η του ο με σε που τα για την από δεν θα είναι στο τον της μου ότι στην οι αλλά τι μας "
          "σου ένα τους πως στη μια όταν πολύ έχει ήταν αυτό σας εγώ κι μόνο γιατί".split(),
    "zh": "的 一 是 不 了 在 人 有 我 他 这 个 们 中 来 上 大 为 和 国 地 到 以 说 时 要 就 出 会 可 也 你 对 生 能 "
          "而 子 那 得 于 着 下 自 之 年 过 发 后 作 里 用 道 行 所 然 家 种 事 成 方 多 经 么 去 法 学 如 都 同 现 "
          "机器 学习 人工 智能 模型 专家 混合 推理 参数 训练 数据".split(),
    "ja": "の に は を た が で て と し れ さ ある いる も する から な こと として い や れる など なっ ない "
          "この ため その あっ よう また もの という あり まで られ なる へ か だ これ によって 日本 東京 言語 "
          "カタカナ ひらがな 漢字 テキスト".split(),
    "ko": "이 그 저 것 수 등 들 및 에서 으로 하는 있다 하다 되다 없다 보다 같다 한국어 문장 테스트 안녕하세요 "
          "만나서 반갑습니다 모델 학습".split(),
    "ar": "في من على إلى أن عن مع هذا التي الذي كان قد لا ما هو هي كل بين بعد عند حتى اللغة العربية مرحبا "
          "بالعالم كيف حالك".split(),
    "hi": "के है में की और से को एक यह पर भी नहीं कि था हैं तो हो ही गया कर नमस्ते दुनिया आप कैसे".split(),
    "th": "ที่ และ การ ใน มี ของ ได้ ให้ ว่า ไม่ เป็น จะ กับ ความ สวัสดี ชาวโลก ภาษาไทย".split(),
    "emoji": ["👍", "👍🏽", "🎉", "❤️", "🔥", "👨‍👩‍👧‍👦", "👩🏾‍💻", "🇯🇵", "🇫🇷", "🏳️‍🌈", "😀", "🚀", "✨", "🤖"],
}

PUNCT = [".", ",", "!", "?", ";", ":", "…", "。", "，", "！", "？", "、", "—", " -", "'s", "'ll", "'re"]

EXTRA_LINES = [
    "e\u0301 vs \u00e9, a\u030a vs \u00e5, cafe\u0301", "ﬁnance ﬂow Ａｂｃ １２３ ² ③", "½ ¼ ¾ ⅞ Ⅻ ⅷ",
    "tab\tseparated\tvalues\t\t", "windows\r\nline\r\nendings", "  leading and trailing spaces   ",
    "non\u00a0breaking\u00a0space", "ideographic\u3000space", "zero\u200bwidth\u200cjoiner\u200d",
    "control \x1b[31mred\x1b[0m", "bell\x07 and del\x7f", "3.14159265358979323846", "+1 (555) 010-9999",
    "٣٤٥ ۱۲۳ ०१२ ๑๒๓", "x = y ** 2 + 3 * z - 4 / w", "for (int i = 0; i < n; i++) { a[i] += b[i]; }",
    "https://example.com/path?query=1&x=y#frag", "DON'T SHOUT, IT'S RUDE. We'RE fine, you'VE seen.",
    "<|endoftext|>", "<|im_start|>user\nHi there<|im_end|>", "abc<|endoftext|>def",
]


def local_files():
    """License texts and C headers that are valid UTF-8 (about 1.3 MB together)."""
    files = sorted(f for f in glob.glob("/usr/share/common-licenses/*") if os.path.isfile(f))
    headers = sorted(f for f in glob.glob("/usr/include/*.h") if os.path.isfile(f))
    total, out = 0, []
    for f in files + headers:
        try:
            with open(f, "rb") as fh:
                data = fh.read()
            data.decode("utf-8")
        except (OSError, UnicodeDecodeError):
            continue
        if not data or total + len(data) > 1_300_000:
            continue
        out.append(f)
        total += len(data)
    return out


def sentence(rng):
    lang = rng.choice(list(WORDS))
    n = rng.randint(3, 14)
    sep = "" if lang in ("zh", "ja", "th") and rng.random() < 0.7 else " "
    ws = [rng.choice(WORDS[lang]) for _ in range(n)]
    if rng.random() < 0.3:
        ws.insert(rng.randint(0, len(ws)), rng.choice(WORDS["emoji"]))
    if rng.random() < 0.2:
        ws.insert(rng.randint(0, len(ws)), str(rng.randint(0, 10 ** rng.randint(1, 8))))
    s = sep.join(ws) + rng.choice(PUNCT)
    if lang in ("en", "de", "fr", "ru", "el") and rng.random() < 0.5:
        s = s[:1].upper() + s[1:]
    return s


def write_multilingual(path, rng, n_lines):
    with open(path, "w", encoding="utf-8", newline="") as f:
        for i in range(n_lines):
            s = " ".join(sentence(rng) for _ in range(rng.randint(1, 4)))
            r = rng.random()
            if r < 0.05:
                s = rng.choice(EXTRA_LINES)
            elif r < 0.10:
                s = unicodedata.normalize("NFD", s)
            elif r < 0.13:
                s += "<|endoftext|>"
            end = rng.choice(["\n"] * 8 + ["\r\n", "\n\n", "  \n", "\t\n"])
            f.write(s + end)


def test_lines(rng, files, multi_path):
    lines = ["", " ", "  ", "\n", "\t", "\r\n", "a", "'", "'s", "<|endoftext|>", "<|endoftext|><|endoftext|>"]
    lines += EXTRA_LINES
    pool = []
    for f in files + [multi_path]:
        with open(f, encoding="utf-8", newline="") as fh:
            pool.extend(x for x in fh.read().split("\n") if x.strip())
    for i, ln in enumerate(rng.sample(pool, min(1800, len(pool)))):
        lines.append(ln if i % 5 else ln + "\n" + rng.choice(pool))
    for _ in range(900):
        lines.append(" ".join(sentence(rng) for _ in range(rng.randint(1, 3))))
    chars = "".join(sorted(set("".join(w for ws in WORDS.values() for w in ws)))) + " \t\n.,'\"-()[]{}<>|\\@#$%^&*+=~`\u0301"
    for _ in range(300):
        lines.append("".join(rng.choice(chars) for _ in range(rng.randint(1, 60))))
    lines += ["a" * 3000, "中" * 500, "9" * 400, " " * 300, "\n" * 100, "👍" * 200, "e\u0301" * 100,
              "x" * 20000, " ".join(["supercalifragilisticexpialidocious"] * 50)]
    for f in ("NFD", "NFKC"):
        lines += [unicodedata.normalize(f, x) for x in EXTRA_LINES]
    return lines


# ---------------------------------------------------------------- helpers

def run(cmd, timeout=120):
    p = subprocess.run(cmd, capture_output=True, timeout=timeout)
    return p.returncode, p.stdout.decode("utf-8", "replace"), p.stderr.decode("utf-8", "replace")


def hf_train(files, vocab, specials, min_freq, path):
    tok = Tokenizer(models.BPE())
    tok.normalizer = normalizers.NFC()
    tok.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(QWEN_PATTERN), behavior="isolated", invert=False),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
    ])
    tok.post_processor = processors.ByteLevel(trim_offsets=False)
    tok.decoder = decoders.ByteLevel()
    tr = trainers.BpeTrainer(vocab_size=vocab, min_frequency=min_freq, special_tokens=specials,
                             show_progress=False, initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train(files, tr)
    tok.save(path)
    return json.load(open(path, encoding="utf-8"))


def merges_of(d):
    return [tuple(m) if isinstance(m, list) else tuple(m.split(" ", 1)) for m in d["model"]["merges"]]


class Checks:
    def __init__(self):
        self.passed, self.failed = 0, []

    def check(self, ok, what):
        if ok:
            self.passed += 1
        else:
            self.failed.append(what)
        return ok


# ---------------------------------------------------------------- (a) + (b)

def compare_with_hf(c, moec, workdir, files, lines, name, vocab, specials, min_freq, extra):
    out = os.path.join(workdir, f"{name}.json")
    args = [moec, "tokenizer", "train", "--vocab", str(vocab), "-o", out, "--min-frequency", str(min_freq)]
    for s in specials:
        args += ["--special", s]
    t0 = time.time()
    rc, so, se = run(args + extra + files)
    t_moec = time.time() - t0
    if not c.check(rc == 0 and not se.strip(), f"{name}: moec train rc {rc}: {se.strip()[:300]}"):
        return
    t0 = time.time()
    hd = hf_train(files, vocab, specials, min_freq, os.path.join(workdir, f"{name}.hf.json"))
    t_hf = time.time() - t0
    md = json.load(open(out, encoding="utf-8"))

    # (b) same vocabulary and merges as HF's BpeTrainer
    mv, hv = md["model"]["vocab"], hd["model"]["vocab"]
    same_ids = sum(1 for k, v in mv.items() if hv.get(k) == v)
    same_tokens = len(set(mv) & set(hv))
    mm, hm = merges_of(md), merges_of(hd)
    same_merges = sum(1 for a, b in zip(mm, hm) if a == b)
    print(f"tokenizer_train: {name}: vocab {len(mv)} (HF {len(hv)}), tokens in common {same_tokens}/{len(hv)} "
          f"({100.0 * same_tokens / max(1, len(hv)):.1f}%), same id {same_ids}, merges identical in order "
          f"{same_merges}/{len(hm)} ({100.0 * same_merges / max(1, len(hm)):.1f}%); train moec {t_moec:.2f}s, "
          f"HF {t_hf:.2f}s")
    c.check(mv == hv, f"{name}: vocabulary differs from HF ({same_ids}/{len(hv)} same ids)")
    first = next((i for i, (a, b) in enumerate(zip(mm, hm)) if a != b), None)
    c.check(mm == hm, f"{name}: merges differ from HF (moec {len(mm)}, HF {len(hm)}, first difference at "
                      f"{first}: {mm[first] if first is not None else None} vs {hm[first] if first is not None else None})")
    c.check(md["added_tokens"] == hd["added_tokens"], f"{name}: added_tokens differ: {md['added_tokens']} vs "
                                                      f"{hd['added_tokens']}")
    if "--allow-smaller" not in extra:
        c.check(len(mv) == vocab, f"{name}: vocab size {len(mv)}, asked {vocab}")

    # (a) HF loads the output and encodes exactly as moec's C tokenizer; decoding round-trips
    hf = Tokenizer.from_file(out)
    jl = os.path.join(workdir, f"{name}.lines.jsonl")
    with open(jl, "w", encoding="utf-8") as f:
        for ln in lines:
            f.write(json.dumps(ln) + "\n")
    rc, so, se = run([moec, "tokenize", "-t", out, "--jsonl", jl])
    if not c.check(rc == 0, f"{name}: moec tokenize rc {rc}: {se.strip()[:300]}"):
        return
    got = so.split("\n")[:-1]
    enc = hf.encode_batch(lines, add_special_tokens=False)
    c.check(len(got) == len(lines), f"{name}: moec printed {len(got)} id lines for {len(lines)} inputs")
    bad_ids = bad_dec = 0
    for i, (ln, e) in enumerate(zip(lines, enc)):
        want = ",".join(map(str, e.ids))
        if i < len(got) and got[i] != want:
            bad_ids += 1
            if bad_ids <= 3:
                c.failed.append(f"{name}: ids differ for {ln[:80]!r}: moec {got[i][:120]} HF {want[:120]}")
        dec = hf.decode(e.ids, skip_special_tokens=False)
        if dec != unicodedata.normalize("NFC", ln):
            bad_dec += 1
            if bad_dec <= 3:
                c.failed.append(f"{name}: HF decode does not round-trip {ln[:80]!r}: {dec[:80]!r}")
    c.check(bad_ids == 0, f"{name}: {bad_ids}/{len(lines)} lines with different ids")
    c.check(bad_dec == 0, f"{name}: {bad_dec}/{len(lines)} lines whose decode differs from the NFC text")
    # moec's decoder gives the same text back
    dl = os.path.join(workdir, f"{name}.ids.jsonl")
    with open(dl, "w", encoding="utf-8") as f:
        for e in enc:
            f.write(json.dumps(e.ids) + "\n")
    rc, so, se = run([moec, "tokenize", "-t", out, "--decode-jsonl", dl])
    if c.check(rc == 0, f"{name}: moec decode rc {rc}: {se.strip()[:300]}"):
        texts = [json.loads(x) for x in so.split("\n")[:-1]]
        bad = sum(1 for t, ln in zip(texts, lines) if t != unicodedata.normalize("NFC", ln))
        c.check(bad == 0 and len(texts) == len(lines), f"{name}: moec decode differs on {bad} lines")
    nfc_exact = sum(1 for ln in lines if unicodedata.normalize("NFC", ln) == ln)
    print(f"tokenizer_train: {name}: {len(lines) - bad_ids}/{len(lines)} lines identical ids (HF vs moec), "
          f"{len(lines) - bad_dec}/{len(lines)} decodes round-trip ({nfc_exact} of them byte-exact input, the rest "
          f"equal to their NFC form)")


# ---------------------------------------------------------------- (c)

def expect_failure(c, moec, label, args, want_rc, needles):
    rc, so, se = run([moec, "tokenizer"] + args)
    lines = [x for x in se.split("\n") if x.strip()]
    problems = []
    if rc != want_rc:
        problems.append(f"exit code {rc}, want {want_rc}")
    if len(lines) != 1:
        problems.append(f"{len(lines)} stderr lines, want 1")
    if any(m in se for m in SANITIZER_MARKERS):
        problems.append("sanitizer output")
    for n in needles:
        if n.lower() not in se.lower():
            problems.append(f"stderr lacks {n!r}")
    return c.check(not problems, f"error path '{label}': {'; '.join(problems)}: {se.strip()[:300]!r}")


def error_paths(c, moec, workdir, multi):
    def write(name, data):
        p = os.path.join(workdir, name)
        with open(p, "wb") as f:
            f.write(data)
        return p

    small = write("small.txt", b"hello world, hello there\nthe world says hello\n")
    empty = write("empty.txt", b"")
    invalid = write("invalid.txt", "line one\nzwei \u00fc\n".encode() + b"drei \xff\xfe vier\n")
    missing = os.path.join(workdir, "does-not-exist.txt")
    out = os.path.join(workdir, "err-out.json")
    keep = b'{"sentinel": "an earlier tokenizer.json"}\n'
    write("err-out.json", keep)
    n0 = c.passed + len(c.failed)
    cases = [
        ("vocab larger than the data supports", ["train", "--vocab", "5000", "-o", out, small], 1,
         ["a vocabulary larger than the data supports", "5000", "--allow-smaller"]),
        ("min-frequency too high for the data", ["train", "--vocab", "300", "--min-frequency", "1000", "-o", out,
                                                 small], 1, ["larger than the data supports", "min frequency"]),
        ("empty file", ["train", "--vocab", "300", "-o", out, small, empty], 1, ["empty", "empty.txt"]),
        ("missing file", ["train", "--vocab", "300", "-o", out, missing], 1, ["i/o error", "does-not-exist.txt"]),
        ("invalid UTF-8", ["train", "--vocab", "300", "-o", out, invalid], 1, ["utf-8", "invalid.txt", "line 3"]),
        ("vocab below 256 + specials", ["train", "--vocab", "256", "-o", out, small], 2, ["--vocab", "257"]),
        ("vocab below 256 + 3 specials", ["train", "--vocab", "258", "--special", "<a>", "--special", "<b>",
                                          "--special", "<c>", "-o", out, small], 2, ["--vocab", "259"]),
        ("vocab not a number", ["train", "--vocab", "lots", "-o", out, small], 2, ["--vocab"]),
        ("negative min-frequency", ["train", "--vocab", "300", "--min-frequency", "-1", "-o", out, small], 2,
         ["--min-frequency"]),
        ("missing --vocab", ["train", "-o", out, small], 2, ["--vocab"]),
        ("missing -o", ["train", "--vocab", "300", small], 2, ["-o"]),
        ("no input files", ["train", "--vocab", "300", "-o", out], 2, ["file"]),
        ("empty special", ["train", "--vocab", "300", "--special", "", "-o", out, small], 2, ["--special"]),
        ("unknown flag", ["train", "--vocab", "300", "--bogus", "-o", out, small], 2, ["--bogus"]),
        ("unknown subcommand", ["fit", "--vocab", "300"], 2, ["fit"]),
        ("no subcommand", [], 2, ["train"]),
        ("output directory missing", ["train", "--vocab", "300", "-o", os.path.join(workdir, "no-dir", "t.json"),
                                      small], 1, ["no-dir"]),
    ]
    for label, args, rc, needles in cases:
        expect_failure(c, moec, label, args, rc, needles)
    c.check(open(out, "rb").read() == keep, "a failed training run changed the existing output file")

    # --allow-smaller writes what the data supports, and it loads in HF and moec alike
    rc, so, se = run([moec, "tokenizer", "train", "--vocab", "5000", "--allow-smaller", "-o", out, small])
    if c.check(rc == 0 and not se.strip(), f"--allow-smaller: rc {rc}: {se.strip()[:200]}"):
        d = json.load(open(out, encoding="utf-8"))
        hf = Tokenizer.from_file(out)
        n = hf.get_vocab_size()
        c.check(257 < n < 5000 and len(d["model"]["vocab"]) == n, f"--allow-smaller: HF sees {n} tokens")
        c.check("fewer than asked" in so, f"--allow-smaller: stdout does not say it stopped early: {so!r}")
    # the smallest vocabulary: no merges at all
    rc, so, se = run([moec, "tokenizer", "train", "--vocab", "257", "-o", out, small])
    if c.check(rc == 0, f"--vocab 257: rc {rc}: {se.strip()[:200]}"):
        hf = Tokenizer.from_file(out)
        ids = hf.encode("hello <|endoftext|>", add_special_tokens=False).ids
        rc2, so2, _ = run([moec, "tokenize", "-t", out, "--text", "hello <|endoftext|>"])
        c.check(hf.get_vocab_size() == 257 and so2.strip() == ",".join(map(str, ids)) and ids[-1] == 0,
                f"--vocab 257: HF {hf.get_vocab_size()} tokens, ids {ids} vs moec {so2.strip()}")
    # same input, same bytes
    a, b = os.path.join(workdir, "det-a.json"), os.path.join(workdir, "det-b.json")
    run([moec, "tokenizer", "train", "--vocab", "800", "-o", a, multi])
    run([moec, "tokenizer", "train", "--vocab", "800", "-o", b, multi])
    c.check(os.path.exists(a) and open(a, "rb").read() == open(b, "rb").read(), "training is not deterministic")
    return c.passed + len(c.failed) - n0


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--moec", required=True)
    ap.add_argument("--build-dir", required=True)
    a = ap.parse_args()
    t_start = time.time()
    workdir = os.path.join(a.build_dir, "tokenizer_train_test")
    os.makedirs(workdir, exist_ok=True)
    rng = random.Random(20260)
    multi = os.path.join(workdir, "multilingual.txt")
    write_multilingual(multi, rng, 9000)
    files = local_files() + [multi]
    size = sum(os.path.getsize(f) for f in files)
    print(f"tokenizer_train: corpus {len(files)} files, {size / 1e6:.2f} MB")
    lines = test_lines(rng, files, multi)
    c = Checks()
    compare_with_hf(c, a.moec, workdir, files, lines, "v1000", 1000, ["<|endoftext|>"], 2, [])
    compare_with_hf(c, a.moec, workdir, files, lines, "v4000", 4000,
                    ["<|endoftext|>", "<|im_start|>", "<|im_end|>"], 2, [])
    # stops on min-frequency before the vocabulary is full, as HF does
    compare_with_hf(c, a.moec, workdir, [multi], lines[:600], "v20000-minfreq8", 20000, ["<|endoftext|>"], 8,
                    ["--allow-smaller"])
    n_err = error_paths(c, a.moec, workdir, multi)
    print(f"tokenizer_train: {n_err} error-path checks; {len(lines)} test lines; {time.time() - t_start:.1f}s total")
    for f in c.failed[:25]:
        print("  FAIL " + f)
    print(f"{c.passed} passed, {len(c.failed)} failed")
    return 1 if c.failed else 0


if __name__ == "__main__":
    sys.exit(main())
