#!/usr/bin/env python3
"""py_test_data.py - `moec data` end to end, read back with an independent Python reader.

Builds a small multi-domain corpus with scripts/build_corpus.py --small --no-install (if the
Debian text packages are not installed, or give fewer than 4 domains, it generates its own
multilingual multi-domain text instead), trains a byte-level BPE tokenizer (vocab 500) with
Hugging Face `tokenizers`, runs `moec data`, parses every shard by the layout in
docs/formats.md (not with moec's reader), and requires:
  (a) every document's ids equal HF's encoding of that document plus the end-of-text id, each
      split's documents are the corpus documents in corpus order, their union is the corpus,
      and every document keeps its domain (the file name);
  (b) the split is stratified per domain by the documented formula and deterministic: the same
      seed gives byte-identical files, another seed another split; shard boundaries
      (--shard-tokens) and thread counts change nothing but the sharding;
  (c) the documented document-separator rules (CRLF, a final separator without newline, a
      0x1E inside a line, whitespace-only documents, a file without separators, two files of
      one domain);
  (d) failures exit 1 (2 for usage) with one stderr line: empty corpus, missing tokenizer,
      missing or unreadable input, invalid UTF-8, a tokenizer without an end-of-text token,
      a directory holding another dataset (refused unless --force), a non-empty directory,
      and `moec data --check` on a corrupted or truncated shard or with another tokenizer
      ("made with another tokenizer").
Artifacts go under <build-dir>/data_test/. Prints `N passed, M failed` last and exits non-zero
on any failure.

Run: python tests/py_test_data.py --moec build/moec --build-dir build
"""
import argparse
import glob
import json
import os
import random
import shutil
import struct
import subprocess
import sys

from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
SANITIZER_MARKERS = ("AddressSanitizer", "LeakSanitizer", "UndefinedBehaviorSanitizer", "runtime error:",
                     "Segmentation", "core dumped", "Aborted", "assertion failed")
EOT = "<|endoftext|>"


# ----------------------------------------------------------------------------- the format
def split_documents(data):
    """The documented rule: a line that is exactly 0x1E followed by \\n, \\r\\n or the end of the
    file separates documents; documents of only whitespace are dropped."""
    docs, doc, line = [], 0, 0
    n = len(data)
    while line < n:
        nl = data.find(b"\n", line)
        end = nl + 1 if nl >= 0 else n
        ln = data[line:end]
        if ln in (b"\x1e", b"\x1e\n", b"\x1e\r\n"):
            docs.append(data[doc:line])
            doc = end
        line = end
    docs.append(data[doc:n])
    return [d for d in docs if d.strip(b" \t\r\n\f\v")]


def read_shard(path):
    """Parses one shard by docs/formats.md; raises ValueError on any inconsistency."""
    with open(path, "rb") as f:
        b = f.read()
    if len(b) < 64 or b[:8] != b"MOECTOK\0":
        raise ValueError("bad magic")
    version, hb, vocab, dt, n_tok, n_docs, n_dom, fp, eot, split, index, res = struct.unpack_from(
        "<IIIIQIIQIIII", b, 8)
    if version != 1 or res != 0 or dt not in (2, 4):
        raise ValueError("bad version/reserved/dtype")
    tables = 64 + 64 * n_dom + 24 * n_docs
    if hb != (tables + 63) // 64 * 64 or len(b) != hb + n_tok * dt or any(b[tables:hb]):
        raise ValueError("bad sizes")
    names = []
    for d in range(n_dom):
        e = b[64 + 64 * d:128 + 64 * d]
        names.append(e.split(b"\0", 1)[0].decode())
    fmt = "<%d%s" % (n_tok, "H" if dt == 2 else "I")
    toks = list(struct.unpack_from(fmt, b, hb))
    docs, off = [], 0
    for i in range(n_docs):
        o, n, dom, pad = struct.unpack_from("<QQII", b, 64 + 64 * n_dom + 24 * i)
        if o != off or n < 1 or o + n > n_tok or dom >= n_dom or pad or toks[o + n - 1] != eot:
            raise ValueError("bad document %d" % i)
        docs.append((dom, toks[o:o + n]))
        off += n
    if off != n_tok or any(t >= vocab for t in toks):
        raise ValueError("bad coverage or ids")
    return dict(vocab=vocab, dtype=dt, fingerprint=fp, eot=eot, split=split, index=index, names=names,
                docs=docs, n_tokens=n_tok)


def fnv1a64(data):
    h = 0xcbf29ce484222325
    for c in data:
        h = ((h ^ c) * 0x100000001b3) & 0xFFFFFFFFFFFFFFFF
    return h


def read_dataset(d):
    with open(os.path.join(d, "meta.json")) as f:
        meta = json.load(f)
    out = {"meta": meta}
    for split in ("train", "val"):
        docs = []
        for i, s in enumerate(meta[split]["shards"]):
            sh = read_shard(os.path.join(d, s["file"]))
            if sh["split"] != (split == "val") or sh["index"] != i:
                raise ValueError("shard %s: split/index" % s["file"])
            if sh["n_tokens"] != s["n_tokens"] or len(sh["docs"]) != s["n_docs"]:
                raise ValueError("shard %s: counts differ from meta.json" % s["file"])
            if sh["names"] != [x["name"] for x in meta["domains"]]:
                raise ValueError("shard %s: domain table" % s["file"])
            docs += sh["docs"]
            out["vocab"], out["eot"], out["fingerprint"] = sh["vocab"], sh["eot"], sh["fingerprint"]
        out[split] = docs
    return out


# ----------------------------------------------------------------------------- harness
class Checker:
    def __init__(self):
        self.passed, self.failed = 0, []

    def check(self, ok, what):
        if ok:
            self.passed += 1
        else:
            self.failed.append(what)
            print("FAIL: " + what, flush=True)
        return ok


def run(cmd, timeout=300):
    r = subprocess.run(cmd, capture_output=True, timeout=timeout)
    return r.returncode, r.stdout.decode("utf-8", "replace"), r.stderr.decode("utf-8", "replace")


def clean_exit(c, rc, err, want_rc, words, what):
    lines = [ln for ln in err.split("\n") if ln.strip()]
    ok = (rc == want_rc and len(lines) == 1 and lines[0].startswith("moec")
          and not any(m in err for m in SANITIZER_MARKERS)
          and all(w.lower() in err.lower() for w in words))
    c.check(ok, "%s: want exit %d with one line naming %s; got %d: %r" % (what, want_rc, words, rc, err[-600:]))


# ----------------------------------------------------------------------------- corpus
SYNTH = {
    "verses": ("And it came to pass that the {0} went unto the {1}, and the {1} said unto the {0}, "
               "Behold, {2} is {3}.", ["shepherd", "king", "servant", "prophet", "people", "city", "land"]),
    "fortunes-de": ("Wer {0} sagt, muss auch {1} sagen; der {2} ist {3} und die Straße ist lang.",
                    ["Äpfel", "Birnen", "Hund", "Katze", "Größe", "Übermut", "schön"]),
    "fortunes-ru": ("Не {0} {1}, а то {2} будет {3}. Съешь же ещё этих мягких булок.",
                    ["говори", "гоп", "медведь", "зима", "пока", "ёж", "лиса"]),
    "fortunes-es": ("El que {0} a buen {1}, buena {2} le {3}. ¿Mañana? ¡Sí, señor!",
                    ["árbol", "arrima", "sombra", "cobija", "niño", "canción", "año"]),
    "code": ("static inline int {0}_{1}(const struct {2} *p) {{ return p->{3} + 1; }}\n#define {0}_MAX 64",
             ["moec", "data", "shard", "reader", "count", "value", "size"]),
}


def synth_corpus(d, rng):
    os.makedirs(d, exist_ok=True)
    files = []
    for name, (fmt, words) in SYNTH.items():
        docs = []
        for i in range(rng.randint(25, 40)):
            lines = [fmt.format(*(rng.choice(words) for _ in range(4))) for _ in range(rng.randint(1, 6))]
            docs.append("\n".join(lines) + "\n")
        docs.append(docs[0])  # a duplicate document, as fortune files have
        p = os.path.join(d, name + ".txt")
        with open(p, "wb") as f:
            f.write("".join(x + "\x1e\n" for x in docs).encode())
        files.append(p)
    return files


def get_corpus(c, args, work):
    out = os.path.join(work, "corpus")
    shutil.rmtree(out, ignore_errors=True)
    r = subprocess.run(["/usr/bin/python3", os.path.join(ROOT, "scripts", "build_corpus.py"), "--small",
                        "--no-install", "--skip-missing", "-o", out], capture_output=True, text=True, timeout=600)
    files = sorted(glob.glob(os.path.join(out, "*.txt")))
    if r.returncode == 0 and len(files) >= 4 and not args.synthetic:
        total = sum(os.path.getsize(f) for f in files)
        c.check(total < 1_000_000, "--small corpus is %d bytes, want < 1 MB" % total)
        c.check(all(b"\x1e\n" in open(f, "rb").read() for f in files), "corpus files use the 0x1E separator")
        print("corpus: scripts/build_corpus.py --small: %d domains, %d bytes" % (len(files), total))
        return files
    print("corpus: generated text (%s)" % ("--synthetic" if args.synthetic else
          "scripts/build_corpus.py gave %d domains: the Debian text packages are missing" % len(files)))
    return synth_corpus(os.path.join(work, "synth"), random.Random(5))


def train_tokenizer(files, path, vocab=500, eot=True):
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tr = trainers.BpeTrainer(vocab_size=vocab, special_tokens=[EOT] if eot else [], show_progress=False,
                             initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train(files, tr)
    tok.save(path)
    return tok


# ----------------------------------------------------------------------------- checks
def expected_docs(files, tok, eot):
    """(domain, ids) per document, in corpus order, and the domain names in first-seen order."""
    names, docs = [], []
    for f in files:
        stem = os.path.basename(f)
        stem = stem[:stem.rfind(".")] if stem.rfind(".") > 0 else stem
        if stem not in names:
            names.append(stem)
        with open(f, "rb") as fh:
            texts = [t.decode("utf-8") for t in split_documents(fh.read())]
        for e in tok.encode_batch(texts, add_special_tokens=False):
            docs.append((names.index(stem), list(e.ids) + [eot]))
    return names, docs


def is_subsequence(part, whole):
    it = iter(whole)
    return all(any(x == y for y in it) for x in part)


def n_val_expected(n, frac):
    if n < 2 or frac <= 0:
        return 0
    import math
    return max(1, min(n - 1, int(math.floor(n * frac + 0.5))))


def check_dataset(c, ds_dir, files, tok, tok_path, frac, label):
    try:
        ds = read_dataset(ds_dir)
    except (ValueError, OSError, KeyError, struct.error) as e:
        c.check(False, "%s: the Python reader rejects the output: %s" % (label, e))
        return None
    eot = tok.token_to_id(EOT)
    c.check(ds["eot"] == eot and ds["meta"]["tokenizer"]["eot_id"] == eot, "%s: end-of-text id" % label)
    c.check(ds["vocab"] == tok.get_vocab_size(), "%s: vocab %d vs %d" % (label, ds["vocab"], tok.get_vocab_size()))
    with open(tok_path, "rb") as fh:
        fp = fnv1a64(fh.read())
    c.check(ds["fingerprint"] == fp and ds["meta"]["tokenizer"]["fingerprint"] == "fnv1a64:%016x" % fp,
            "%s: tokenizer fingerprint" % label)
    names, want = expected_docs(files, tok, eot)
    c.check([d["name"] for d in ds["meta"]["domains"]] == names, "%s: domain names %s vs %s"
            % (label, [d["name"] for d in ds["meta"]["domains"]], names))
    train = [(d, t) for d, t in ds["train"]]
    val = [(d, t) for d, t in ds["val"]]
    key = lambda x: (x[0], tuple(x[1]))  # noqa: E731
    c.check(sorted(map(key, train + val)) == sorted(map(key, want)),
            "%s: the documents (ids + domain) differ from HF tokenizers' encoding of the corpus" % label)
    c.check(is_subsequence(list(map(key, train)), list(map(key, want))) and
            is_subsequence(list(map(key, val)), list(map(key, want))),
            "%s: a split's documents are not in corpus order" % label)
    for di, name in enumerate(names):
        n = sum(1 for d, _ in want if d == di)
        nv = sum(1 for d, _ in val if d == di)
        c.check(nv == n_val_expected(n, frac), "%s: domain %s: %d val of %d documents, want %d"
                % (label, name, nv, n, n_val_expected(n, frac)))
        m = ds["meta"]["domains"][di]
        c.check(m["val_docs"] == nv and m["train_docs"] == n - nv and
                m["train_tokens"] == sum(len(t) for d, t in train if d == di),
                "%s: meta.json counts of %s" % (label, name))
    return ds


def files_of(d):
    return {f: open(os.path.join(d, f), "rb").read() for f in sorted(os.listdir(d))}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--moec", required=True)
    ap.add_argument("--build-dir", required=True)
    ap.add_argument("--synthetic", action="store_true", help="use generated text even if the packages exist")
    a = ap.parse_args()
    moec = os.path.abspath(a.moec)
    work = os.path.abspath(os.path.join(a.build_dir, "data_test"))
    shutil.rmtree(work, ignore_errors=True)
    os.makedirs(work)
    c = Checker()

    # (a) + (b): the corpus, tokenized, read back
    files = get_corpus(c, a, work)
    tpath = os.path.join(work, "tok.json")
    tok = train_tokenizer(files, tpath)
    d1, d2, d3, d4 = (os.path.join(work, x) for x in ("d1", "d2", "d3", "d4"))
    rc, out, err = run([moec, "data", "-t", tpath, "-o", d1, "--seed", "3", "--val-fraction", "0.1"] + files)
    c.check(rc == 0, "moec data failed: %s" % err[-800:])
    if rc == 0:
        print(out.strip())
        check_dataset(c, d1, files, tok, tpath, 0.1, "seed 3")
    rc, _, err = run([moec, "data", "-t", tpath, "-o", d2, "--seed", "3", "--val-fraction", "0.1",
                      "--threads", "1"] + files)
    c.check(rc == 0 and files_of(d1) == files_of(d2), "same seed, 1 vs all threads: files differ (%s)" % err[-300:])
    rc, _, err = run([moec, "data", "-t", tpath, "-o", d3, "--seed", "4", "--val-fraction", "0.1"] + files)
    c.check(rc == 0, "seed 4: %s" % err[-300:])
    if rc == 0:
        ds3 = check_dataset(c, d3, files, tok, tpath, 0.1, "seed 4")
        ds1 = read_dataset(d1)
        c.check(ds3 is not None and ds3["val"] != ds1["val"], "another seed gave the same val split")
    n_train = json.load(open(os.path.join(d1, "meta.json")))["train"]["n_tokens"] if os.path.isdir(d1) else 6000
    shard_tokens = max(100, n_train // 6)
    rc, _, err = run([moec, "data", "-t", tpath, "-o", d4, "--seed", "3", "--val-fraction", "0.1",
                      "--shard-tokens", str(shard_tokens)] + files)
    c.check(rc == 0, "--shard-tokens: %s" % err[-300:])
    if rc == 0:
        ds4 = check_dataset(c, d4, files, tok, tpath, 0.1, "small shards")
        ds1 = read_dataset(d1)
        c.check(len(ds4["meta"]["train"]["shards"]) > 3, "--shard-tokens %d made %d train shards"
                % (shard_tokens, len(ds4["meta"]["train"]["shards"])))
        c.check(ds4["train"] == ds1["train"] and ds4["val"] == ds1["val"], "sharding changed the documents")
        rc, out, err = run([moec, "data", "--check", d4, "-t", tpath])
        c.check(rc == 0 and "ok" in out, "--check on a sharded dataset: %s" % err[-300:])

    # rerunning: the same dataset is fine, another is refused unless --force
    rc, _, err = run([moec, "data", "-t", tpath, "-o", d1, "--seed", "3", "--val-fraction", "0.1"] + files)
    c.check(rc == 0, "rewriting the same dataset was refused: %s" % err[-300:])
    before = files_of(d1)
    rc, _, err = run([moec, "data", "-t", tpath, "-o", d1, "--seed", "9", "--val-fraction", "0.1"] + files)
    clean_exit(c, rc, err, 1, ["different dataset", "--force"], "another dataset into d1")
    c.check(files_of(d1) == before, "a refused run changed the directory")
    rc, _, err = run([moec, "data", "-t", tpath, "-o", d1, "--seed", "9", "--val-fraction", "0.1", "--force"] + files)
    c.check(rc == 0 and json.load(open(os.path.join(d1, "meta.json")))["seed"] == 9 and
            sorted(os.listdir(d1)) == ["meta.json", "train-00000.bin", "val-00000.bin"],
            "--force did not replace the dataset: %s" % err[-300:])

    # (c) separator rules
    e = os.path.join(work, "edge")
    os.makedirs(os.path.join(e, "x"), exist_ok=True)
    os.makedirs(os.path.join(e, "y"), exist_ok=True)
    edge = {
        os.path.join(e, "crlf.txt"): b"first doc\r\nline two\r\n\x1e\r\nsecond\r\n\x1e\r\n\x1e\n  \n\t\n\x1e\nthird \x1e inside\n\x1e",
        os.path.join(e, "noseps.md"): "Ein Dokument ohne Trenner.\nЗдравствуй, мир.\n\n\nEnde".encode(),
        os.path.join(e, "x", "shared.txt"): b"shared one\n\x1e\nshared two\n",
        os.path.join(e, "y", "shared.txt"): b"\x1e\nshared three\n\x1e\n",
        os.path.join(e, "lead.txt"): b"\x1e\x1e\nnot a separator line\n\x1e \nnor this\n",
    }
    for p, data in edge.items():
        with open(p, "wb") as f:
            f.write(data)
    efiles = list(edge)
    want_counts = {"crlf": 3, "noseps": 1, "shared": 3, "lead": 1}
    rc, out, err = run([moec, "data", "-t", tpath, "-o", os.path.join(e, "ds"), "--val-fraction", "0"] + efiles)
    c.check(rc == 0, "edge corpus: %s" % err[-300:])
    if rc == 0:
        ds = check_dataset(c, os.path.join(e, "ds"), efiles, tok, tpath, 0.0, "edge")
        if ds:
            names = [d["name"] for d in ds["meta"]["domains"]]
            got = {n: sum(1 for d, _ in ds["train"] if d == i) for i, n in enumerate(names)}
            c.check(got == want_counts and not ds["val"], "edge documents per domain %s, want %s" % (got, want_counts))

    # (d) failures
    empty = os.path.join(work, "empty.txt")
    with open(empty, "wb") as f:
        f.write(b" \n\x1e\n\t\n")
    rc, _, err = run([moec, "data", "-t", tpath, "-o", os.path.join(work, "e1"), empty])
    clean_exit(c, rc, err, 1, ["empty corpus"], "empty corpus")
    c.check(not os.path.exists(os.path.join(work, "e1")), "an empty corpus created the output directory")
    rc, _, err = run([moec, "data", "-t", os.path.join(work, "nope.json"), "-o", os.path.join(work, "e2")] + files)
    clean_exit(c, rc, err, 1, ["nope.json"], "missing tokenizer")
    rc, _, err = run([moec, "data", "-t", tpath, "-o", os.path.join(work, "e3"), files[0],
                      os.path.join(work, "missing.txt")])
    clean_exit(c, rc, err, 1, ["missing.txt"], "missing input file")
    rc, _, err = run([moec, "data", "-t", tpath, "-o", os.path.join(work, "e3"), work])
    clean_exit(c, rc, err, 1, ["not a regular file"], "a directory as input")
    bad = os.path.join(work, "latin1.txt")
    with open(bad, "wb") as f:
        f.write("ok\n\x1e\nStra\xdfe\n".encode("latin-1"))
    rc, _, err = run([moec, "data", "-t", tpath, "-o", os.path.join(work, "e4"), bad])
    clean_exit(c, rc, err, 1, ["latin1.txt", "utf-8"], "invalid UTF-8")
    noeot = os.path.join(work, "noeot.json")
    train_tokenizer(files, noeot, vocab=400, eot=False)
    rc, _, err = run([moec, "data", "-t", noeot, "-o", os.path.join(work, "e5")] + files)
    clean_exit(c, rc, err, 1, ["end-of-text", "--eot"], "tokenizer without end-of-text")
    rc, _, err = run([moec, "data", "-t", noeot, "-o", os.path.join(work, "e5"), "--eot", "<|nothing|>"] + files)
    clean_exit(c, rc, err, 1, ["--eot"], "--eot of a token the tokenizer lacks")
    nonempty = os.path.join(work, "nonempty")
    os.makedirs(nonempty)
    with open(os.path.join(nonempty, "keep.txt"), "w") as f:
        f.write("x")
    rc, _, err = run([moec, "data", "-t", tpath, "-o", nonempty] + files)
    clean_exit(c, rc, err, 1, ["not empty", "--force"], "non-empty directory")
    for args, what in ((["data"], "no arguments"), (["data", "-t", tpath, "-o", d1], "no files"),
                       (["data", "-t", tpath, "-o", d1, "--val-fraction", "0.9"] + files, "val fraction 0.9"),
                       (["data", "-t", tpath, "-o", d1, "--seed", "-1"] + files, "negative seed"),
                       (["data", "-t", tpath, "-o", d1, "--bogus"] + files, "unknown flag"),
                       (["data", "--check", d1, "-o", d2], "--check with -o")):
        rc, _, err = run([moec] + args)
        clean_exit(c, rc, err, 2, [], what)

    # --check: another tokenizer, corrupted and truncated shards
    other = os.path.join(work, "other.json")
    with open(tpath) as f:
        j = json.load(f)
    with open(other, "w") as f:
        json.dump(j, f, indent=1)  # the same vocabulary, other bytes: another fingerprint
    rc, out, err = run([moec, "data", "--check", d2, "-t", tpath])
    c.check(rc == 0 and "ok" in out, "--check on good data: %s" % err[-300:])
    rc, _, err = run([moec, "data", "--check", d2, "-t", other])
    clean_exit(c, rc, err, 1, ["another tokenizer"], "--check with another tokenizer")
    shard = os.path.join(d2, "train-00000.bin")
    good = open(shard, "rb").read()
    for what, data, word in (("flipped token bit", good[:-3] + bytes([good[-3] ^ 1]) + good[-2:], "corrupt"),
                             ("truncated shard", good[:len(good) // 2], "truncated"),
                             ("bad magic", b"X" + good[1:], "magic"),
                             ("empty shard file", b"", "truncated")):
        with open(shard, "wb") as f:
            f.write(data)
        rc, _, err = run([moec, "data", "--check", d2])
        clean_exit(c, rc, err, 1, [word], "--check: " + what)
    with open(shard, "wb") as f:
        f.write(good)
    os.remove(os.path.join(d2, "meta.json"))
    rc, _, err = run([moec, "data", "--check", d2])
    clean_exit(c, rc, err, 1, ["meta.json"], "--check without meta.json")

    print("%d passed, %d failed" % (c.passed, len(c.failed)))
    return 1 if c.failed else 0


if __name__ == "__main__":
    sys.exit(main())
