#!/usr/bin/python3
"""build_corpus.py - a multi-domain, multilingual plain-text corpus from Debian packages.

    /usr/bin/python3 scripts/build_corpus.py [-o data/corpus] [--small] [--no-install]

Writes one UTF-8 text file per domain into the output directory (default data/corpus/):

    bible.txt        King James Bible (bible-kjv, bible-kjv-text), one chapter per document
    fortunes-en.txt  fortune cookies (fortunes, fortunes-min), one fortune per document
    fortunes-de.txt  German fortunes (fortunes-de)
    fortunes-es.txt  Spanish fortunes (fortunes-es; its "off" collection is left out)
    fortunes-it.txt  Italian fortunes (fortunes-it)
    fortunes-ru.txt  Russian fortunes (fortunes-ru)
    man.txt          manual pages of manpages + manpages-dev rendered to plain text with
                     `man -l -P cat`, a bounded evenly spaced selection, one page per document
    c-headers.txt    the C library headers (libc6-dev, under /usr/include), one file per document

plus manifest.json (package versions, documents and bytes per domain). The domain of a
document is its file's name. Documents are separated by a line holding only the ASCII record
separator (0x1E, written "\\x1e\\n"), which never occurs inside a document (control characters
other than tab and newline are removed); `moec data` splits files there. Each document ends
with one newline; trailing spaces are stripped from lines; overstrike (x\\bx) and ANSI escapes
are removed; text that is not UTF-8 is read as Latin-1.

Deterministic: sources are taken in sorted order; when a domain has more than its byte budget
(--max-domain-bytes, 5 MB; --small: 100 kB), documents are picked evenly spaced over the whole
source and then cut at the budget. Missing packages are installed with apt-get (through sudo
when not root) unless --no-install; a domain whose package cannot be had is an error unless
--skip-missing. Not a cleaner or deduplicator, and it downloads nothing but Debian packages.
Standard library only.
"""

import argparse
import concurrent.futures
import gzip
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile

RS = "\x1e"

DOMAINS = [
    # name, packages that must be installed, what the texts are
    ("bible", ["bible-kjv", "bible-kjv-text"], "King James Bible, one chapter per document"),
    ("fortunes-en", ["fortunes", "fortunes-min"], "English fortunes"),
    ("fortunes-de", ["fortunes-de"], "German fortunes"),
    ("fortunes-es", ["fortunes-es"], "Spanish fortunes"),
    ("fortunes-it", ["fortunes-it"], "Italian fortunes"),
    ("fortunes-ru", ["fortunes-ru"], "Russian fortunes"),
    ("man", ["manpages", "manpages-dev", "man-db", "groff-base"], "manual pages as plain text"),
    ("c-headers", ["libc6-dev"], "C library headers"),
]

FORTUNE_DIRS = {
    "fortunes-en": "/usr/share/games/fortunes",
    "fortunes-de": "/usr/share/games/fortunes/de",
    "fortunes-es": "/usr/share/games/fortunes/es",
    "fortunes-it": "/usr/share/games/fortunes/it",
    "fortunes-ru": "/usr/share/games/fortunes/ru",
}


class Missing(Exception):
    """A domain's source is not available."""


# ----------------------------------------------------------------------------- packages
def installed(pkg):
    if not shutil.which("dpkg-query"):  # not a Debian system: nothing counts as installed
        return False
    r = subprocess.run(["dpkg-query", "-W", "-f=${Status}", pkg], capture_output=True, text=True)
    return r.returncode == 0 and "install ok installed" in r.stdout


def version(pkg):
    if not shutil.which("dpkg-query"):
        return None
    r = subprocess.run(["dpkg-query", "-W", "-f=${Version}", pkg], capture_output=True, text=True)
    return r.stdout.strip() if r.returncode == 0 else None


def package_files(pkgs):
    out = []
    if not shutil.which("dpkg"):
        return out
    for p in pkgs:
        r = subprocess.run(["dpkg", "-L", p], capture_output=True, text=True)
        if r.returncode == 0:
            out += r.stdout.splitlines()
    return sorted(set(out))


def ensure_packages(pkgs, allow_install):
    """Installs what is missing; returns the packages still missing."""
    missing = [p for p in pkgs if not installed(p)]
    if not missing or not allow_install:
        return missing
    if not shutil.which("apt-get"):
        return missing
    sudo = [] if os.geteuid() == 0 else (["sudo"] if shutil.which("sudo") else None)
    if sudo is None:
        print("build_corpus: not root and no sudo: cannot install " + " ".join(missing), file=sys.stderr)
        return missing
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    print("build_corpus: installing " + " ".join(missing), file=sys.stderr)
    cmd = sudo + ["apt-get", "install", "-y", "-qq", "--no-install-recommends"] + missing
    if subprocess.run(cmd, env=env, stdout=subprocess.DEVNULL).returncode != 0:
        subprocess.run(sudo + ["apt-get", "update", "-qq"], env=env, stdout=subprocess.DEVNULL)
        subprocess.run(cmd, env=env, stdout=subprocess.DEVNULL)
    return [p for p in pkgs if not installed(p)]


# ----------------------------------------------------------------------------- text
ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")
OVERSTRIKE = re.compile(r".\x08")
CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f]")


def decode(raw):
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        return raw.decode("latin-1")


def clean(text):
    """One document: normalized newlines, no control characters, no trailing blanks, one final
    newline; '' when nothing but whitespace is left."""
    text = text.replace("\r\n", "\n").replace("\r", "\n")
    text = ANSI.sub("", text)
    while True:
        t = OVERSTRIKE.sub("", text)
        if t == text:
            break
        text = t
    text = CONTROL.sub("", text)
    lines = [ln.rstrip() for ln in text.split("\n")]
    while lines and not lines[0]:
        lines.pop(0)
    while lines and not lines[-1]:
        lines.pop()
    return "\n".join(lines) + "\n" if lines else ""


# ----------------------------------------------------------------------------- sources
def bible_docs():
    if not shutil.which("bible"):
        raise Missing("the 'bible' program (package bible-kjv) is not installed")
    r = subprocess.run(["bible", "-l10000", "Gen1:1-Rev22:21"], capture_output=True)
    if r.returncode != 0 or not r.stdout:
        raise Missing("bible -l10000 Gen1:1-Rev22:21 failed: " + decode(r.stderr).strip())
    docs, cur = [], []
    for line in decode(r.stdout).split("\n"):
        m = re.match(r"^\s+(\d+) (.*)$", line)
        if m and cur:
            cur.append(m.group(1) + " " + m.group(2))
        elif line.strip() and not line.startswith(" "):  # "Genesis 1": a new chapter
            if cur:
                docs.append(cur)
            cur = [line.strip(), ""]
    if cur:
        docs.append(cur)
    return [clean("\n".join(d)) for d in docs]


def fortune_files(domain, pkgs):
    base = FORTUNE_DIRS[domain]
    files = []
    for f in package_files(pkgs):
        if os.path.dirname(f) != base or os.path.islink(f) or not os.path.isfile(f):
            continue
        if f.endswith((".dat", ".u8", ".pre")) or f.endswith("-pre"):
            continue
        files.append(f)
    return sorted(files)


def fortune_docs(domain, pkgs):
    files = fortune_files(domain, pkgs)
    if not files:
        raise Missing("no fortune files in %s" % FORTUNE_DIRS[domain])
    docs = []
    for f in files:
        with open(f, "rb") as fh:
            text = decode(fh.read()).replace("\r\n", "\n")
        cur = []
        for line in text.split("\n"):
            if line.rstrip() == "%":
                docs.append(clean("\n".join(cur)))
                cur = []
            else:
                cur.append(line)
        docs.append(clean("\n".join(cur)))
    return [d for d in docs if d]


def is_so_stub(path):
    """A page that only includes another (`.so man3/x.3`): a duplicate, skipped."""
    try:
        with (gzip.open(path, "rb") if path.endswith(".gz") else open(path, "rb")) as fh:
            head = fh.read(4096)
    except OSError:
        return True
    lines = [ln for ln in head.decode("latin-1").split("\n") if ln.strip() and not ln.startswith(".\\\"")]
    return len(lines) <= 2 and any(ln.startswith(".so ") for ln in lines)


def render_man(path):
    env = dict(os.environ, LANG="C.UTF-8", LC_ALL="C.UTF-8", MANWIDTH="80")
    env.pop("MAN_KEEP_FORMATTING", None)
    try:
        r = subprocess.run(["man", "--nh", "--nj", "-l", "-P", "cat", path], capture_output=True, env=env,
                           timeout=60)
    except subprocess.TimeoutExpired:
        return ""
    return clean(decode(r.stdout)) if r.returncode == 0 else ""


def man_pages(pkgs):
    pages = [f for f in package_files(pkgs)
             if re.match(r"^/usr/share/man/man[0-9][^/]*/[^/]+$", f) and os.path.isfile(f) and not os.path.islink(f)]
    return sorted(p for p in pages if not is_so_stub(p))


def man_docs(pkgs, max_pages, budget):
    if not shutil.which("man"):
        raise Missing("the 'man' program (package man-db) is not installed")
    pages = man_pages([p for p in pkgs if p.startswith("manpages")])  # not man-db's or groff's own
    if not pages:
        raise Missing("no manual pages under /usr/share/man (a dpkg path-exclude rule, as in Docker images, "
                      "may drop them: see /etc/dpkg/dpkg.cfg.d/)")
    if len(pages) > max_pages:  # evenly spaced over all sections
        pages = [pages[i * len(pages) // max_pages] for i in range(max_pages)]
    docs, total = [], 0
    workers = max(1, min(4, os.cpu_count() or 1))
    with concurrent.futures.ThreadPoolExecutor(workers) as ex:
        for start in range(0, len(pages), 4 * workers):  # in batches, so the budget stops early
            for d in ex.map(render_man, pages[start:start + 4 * workers]):
                if d and total < budget:
                    docs.append(d)
                    total += len(d.encode())
            if total >= budget:
                break
    if not docs:
        raise Missing("man rendered no pages")
    return docs


def header_docs(pkgs):
    files = [f for f in package_files(pkgs)
             if f.startswith("/usr/include/") and f.endswith(".h") and os.path.isfile(f) and not os.path.islink(f)]
    if not files:
        raise Missing("no C headers from " + " ".join(pkgs))
    docs = []
    for f in sorted(files):
        with open(f, "rb") as fh:
            d = clean(decode(fh.read()))
        if d:
            docs.append(d)
    return docs


# ----------------------------------------------------------------------------- selection + output
def select(docs, budget):
    """At most `budget` bytes: documents evenly spaced over the source, in source order."""
    sizes = [len(d.encode()) for d in docs]
    total = sum(sizes)
    if total > budget:
        f = budget / total
        docs = [d for i, d in enumerate(docs) if int((i + 1) * f) > int(i * f)]
    out, n = [], 0
    for d in docs:
        b = len(d.encode())
        if out and n + b > budget:
            break
        out.append(d)
        n += b
    return out


def write_atomic(path, data):
    d = os.path.dirname(path) or "."
    fd, tmp = tempfile.mkstemp(prefix=".tmp.", dir=d)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp makes 0600; a corpus file is an ordinary file
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def main():
    ap = argparse.ArgumentParser(description="Build moec's multi-domain text corpus from Debian packages.")
    ap.add_argument("-o", "--out", default="data/corpus", help="output directory (default data/corpus)")
    ap.add_argument("--small", action="store_true",
                    help="a corpus under 1 MB for tests: 100 kB per domain, 12 man pages")
    ap.add_argument("--max-domain-bytes", type=int, default=None,
                    help="byte budget per domain (default 5000000; --small 100000)")
    ap.add_argument("--max-man-pages", type=int, default=None, help="man pages to render (default 400; --small 12)")
    ap.add_argument("--no-install", action="store_true", help="do not apt-get install missing packages")
    ap.add_argument("--skip-missing", action="store_true",
                    help="leave out a domain whose packages cannot be had instead of failing")
    ap.add_argument("--domains", default=None, help="comma-separated subset of: " +
                    ",".join(d[0] for d in DOMAINS))
    a = ap.parse_args()
    budget = a.max_domain_bytes or (100_000 if a.small else 5_000_000)
    max_pages = a.max_man_pages or (12 if a.small else 400)
    wanted = [d for d in DOMAINS if a.domains is None or d[0] in a.domains.split(",")]
    if a.domains and len(wanted) != len(a.domains.split(",")):
        ap.error("unknown domain in --domains (known: %s)" % ",".join(d[0] for d in DOMAINS))
    if budget < 1000 or max_pages < 1:
        ap.error("--max-domain-bytes must be >= 1000 and --max-man-pages >= 1")

    all_pkgs = sorted({p for d in wanted for p in d[1]})
    still_missing = set(ensure_packages(all_pkgs, not a.no_install))
    os.makedirs(a.out, exist_ok=True)

    rows, failed, manifest = [], [], {"format": "moec-corpus", "separator": "\\x1e line", "domains": []}
    for name, pkgs, what in wanted:
        try:
            miss = [p for p in pkgs if p in still_missing]
            if miss:
                raise Missing("package(s) not installed: " + " ".join(miss))
            if name == "bible":
                docs = bible_docs()
            elif name.startswith("fortunes-"):
                docs = fortune_docs(name, pkgs)
            elif name == "man":
                docs = man_docs(pkgs, max_pages, budget)
            else:
                docs = header_docs(pkgs)
            docs = select(docs, budget)
            if not docs:
                raise Missing("no text")
        except Missing as e:
            failed.append((name, str(e)))
            print("build_corpus: %s: %s" % (name, e), file=sys.stderr)
            continue
        data = "".join(d + RS + "\n" for d in docs).encode()
        write_atomic(os.path.join(a.out, name + ".txt"), data)
        rows.append((name, len(docs), len(data)))
        manifest["domains"].append({"name": name, "file": name + ".txt", "documents": len(docs), "bytes": len(data),
                                    "description": what,
                                    "packages": {p: version(p) for p in pkgs}})
    write_atomic(os.path.join(a.out, "manifest.json"), (json.dumps(manifest, indent=2) + "\n").encode())

    print("%-14s %10s %12s" % ("domain", "documents", "bytes"))
    for name, n, b in rows:
        print("%-14s %10d %12d" % (name, n, b))
    print("%-14s %10d %12d" % ("total", sum(r[1] for r in rows), sum(r[2] for r in rows)))
    print("corpus: %s (%d domains)" % (a.out, len(rows)))
    if failed and not a.skip_missing:
        print("build_corpus: %d domain(s) missing (%s); install the packages or pass --skip-missing"
              % (len(failed), ", ".join(f[0] for f in failed)), file=sys.stderr)
        return 1
    return 0 if rows else 1


if __name__ == "__main__":
    sys.exit(main())
