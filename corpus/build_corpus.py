#!/usr/bin/python3
"""Builds data/corpus/ from Debian packages already unpacked with `dpkg -x` (see build_corpus.sh).

Input:  --extract DIR   one subdirectory per package, named after the package (DIR/<package>/usr/...)
        --lock FILE     corpus/packages.lock (package, version, sha256 of the .deb)
        --debs DIR      the cached .deb files (their sha256 is recomputed for the manifest)
Output: --out DIR       train/<source>.txt, adapt/<source>.txt,
                        heldout/{books,code,proofs}/<name>.txt, documents.tsv, MANIFEST.json

train/ is what the tokenizer and the base model learn from; adapt/ is text that only SharedLLM
stages train on (Coq proofs and Django code, which the base never saw); heldout/ is never trained on.

Every step is deterministic: files are visited in sorted order, selections are by size or by hash,
nothing records a time or an absolute path. See docs/design/data.md for the rules.
"""

import argparse
import gzip
import hashlib
import html
import html.parser
import json
import os
import re
import subprocess
import sys
import unicodedata

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import rdata  # noqa: E402

DOC_SEPARATOR = "\x1e\n"  # a line holding only ASCII RS (0x1E) ends every training document
MIN_DOC_BYTES = 1024
HELDOUT_CODE_FILES = 30
HELDOUT_PROOF_MIN_BYTES = 64 * 1024
GCIDE_DOC_BYTES = 64 * 1024

# Long stdlib files that are data tables rather than code: not used as held-out code documents
# (they stay in training like any other file).
NOT_CODE = {"pydoc_data/topics.py", "html/entities.py"}

KJV_BOOKS = [
    "Genesis", "Exodus", "Leviticus", "Numbers", "Deuteronomy", "Joshua", "Judges", "Ruth",
    "1 Samuel", "2 Samuel", "1 Kings", "2 Kings", "1 Chronicles", "2 Chronicles", "Ezra",
    "Nehemiah", "Esther", "Job", "Psalms", "Proverbs", "Ecclesiastes", "Song of Solomon", "Isaiah",
    "Jeremiah", "Lamentations", "Ezekiel", "Daniel", "Hosea", "Joel", "Amos", "Obadiah", "Jonah",
    "Micah", "Nahum", "Habakkuk", "Zephaniah", "Haggai", "Zechariah", "Malachi", "Matthew", "Mark",
    "Luke", "John", "Acts", "Romans", "1 Corinthians", "2 Corinthians", "Galatians", "Ephesians",
    "Philippians", "Colossians", "1 Thessalonians", "2 Thessalonians", "1 Timothy", "2 Timothy",
    "Titus", "Philemon", "Hebrews", "James", "1 Peter", "2 Peter", "1 John", "2 John", "3 John",
    "Jude", "Revelation",
]

AUSTEN = {  # janeaustenr object -> (file name, title)
    "sensesensibility": ("austen-sense-and-sensibility", "Sense and Sensibility"),
    "prideprejudice": ("austen-pride-and-prejudice", "Pride and Prejudice"),
    "mansfieldpark": ("austen-mansfield-park", "Mansfield Park"),
    "emma": ("austen-emma", "Emma"),
    "northangerabbey": ("austen-northanger-abbey", "Northanger Abbey"),
    "persuasion": ("austen-persuasion", "Persuasion"),
}

GENERATED_MARKER = re.compile(
    r"(?i)(code generated .* do not edit|do not edit|auto-?generated|automatically generated)")


def log(msg):
    print("[build_corpus] " + msg, flush=True)


# ----------------------------------------------------------------------------------------------
# Cleaning


_CONTROL = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f\ufeff\ufffe\uffff]")
_TRAILING_WS = re.compile(r"[ \t]+$", re.M)
_MANY_BLANKS = re.compile(r"\n{4,}")


def decode(raw):
    """UTF-8, or Windows-1252/Latin-1 for the few legacy files that are not valid UTF-8."""
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        try:
            return raw.decode("cp1252")
        except UnicodeDecodeError:
            return raw.decode("latin-1")


def clean(text):
    """NFC; CR/CRLF -> LF; control characters except \\n and \\t removed (and U+FEFF); trailing
    spaces/tabs of each line removed; more than two consecutive blank lines collapsed to two;
    leading blank lines removed; exactly one final newline. '' for an empty result."""
    text = text.replace("\r\n", "\n").replace("\r", "\n")
    text = unicodedata.normalize("NFC", text)
    text = _CONTROL.sub("", text)
    text = _TRAILING_WS.sub("", text)
    text = _MANY_BLANKS.sub("\n\n\n", text)
    text = text.lstrip("\n").rstrip("\n")
    return text + "\n" if text else ""


def sha256_bytes(b):
    return hashlib.sha256(b).hexdigest()


def sha256_file(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


# ----------------------------------------------------------------------------------------------
# HTML -> text (PostgreSQL manual)


class HtmlToText(html.parser.HTMLParser):
    """Text of an HTML page: navigation, scripts and styles dropped; block elements start new
    lines (headings and paragraphs a blank line); <pre> content verbatim; elsewhere whitespace runs
    collapse to one space; list items start with "* ", table cells are separated by " | "."""

    BLOCK = {"p", "div", "h1", "h2", "h3", "h4", "h5", "h6", "li", "tr", "dt", "dd", "table",
             "blockquote", "ul", "ol", "dl", "pre", "title", "caption", "figure"}
    PARAGRAPH = {"p", "pre", "h1", "h2", "h3", "h4", "h5", "h6", "table", "dl", "ul", "ol",
                 "blockquote"}
    SKIP = {"script", "style", "head"}
    SKIP_CLASSES = {"navheader", "navfooter"}
    VOID = {"br", "img", "meta", "link", "input", "hr", "col", "area", "base", "wbr"}

    def __init__(self):
        super().__init__(convert_charrefs=True)
        self.out = []
        self.stack = []  # (tag, skipping) of open elements
        self.skip_depth = 0  # >0 inside an element whose content is dropped
        self.pre = 0
        self.line_start = True

    def _trailing_newlines(self):
        n = 0
        for chunk in reversed(self.out):
            stripped = chunk.rstrip("\n")
            n += len(chunk) - len(stripped)
            if stripped:
                return n
        return n if self.out else 2

    def _newline(self, n):
        """Ends the current line so that at least n-1 blank lines follow the last text."""
        if self.skip_depth or (self.out and self.out[-1] in ("* ", "| ")):
            return  # nothing yet after a bullet: keep its content on the bullet's line
        missing = n - self._trailing_newlines()
        if missing > 0:
            self.out.append("\n" * missing)
        self.line_start = True

    def _emit(self, s, marker=False):
        if self.skip_depth or not s:
            return
        self.out.append(s)
        self.line_start = marker or s.endswith("\n")

    def handle_starttag(self, tag, attrs):
        if tag in self.VOID:
            if tag in ("br", "hr"):
                self._newline(1 if tag == "br" else 2)
            return
        classes = set((dict(attrs).get("class") or "").split())
        skipping = tag in self.SKIP or bool(classes & self.SKIP_CLASSES)
        self.stack.append((tag, skipping))
        if tag in self.BLOCK:
            self._newline(2 if tag in self.PARAGRAPH else 1)
        if skipping:
            self.skip_depth += 1
        if tag == "pre":
            self.pre += 1
        if tag == "li":
            self._emit("* ", marker=True)
        elif tag in ("td", "th"):
            self._emit("| " if self.line_start else " | ", marker=True)

    def handle_startendtag(self, tag, attrs):
        self.handle_starttag(tag, attrs)
        if tag not in self.VOID:
            self.handle_endtag(tag)

    def handle_endtag(self, tag):
        # Close up to the matching open tag (real-world HTML is not always well nested).
        for i in range(len(self.stack) - 1, -1, -1):
            if self.stack[i][0] == tag:
                for t, skipping in self.stack[i:]:
                    if skipping:
                        self.skip_depth -= 1
                    if t == "pre":
                        self.pre -= 1
                del self.stack[i:]
                break
        if tag in self.BLOCK:
            self._newline(2 if tag in self.PARAGRAPH else 1)

    def handle_data(self, data):
        if self.pre:
            self._emit(data)
            return
        data = re.sub(r"\s+", " ", data)
        if self.line_start:
            data = data.lstrip(" ")
        self._emit(data)

    def text(self):
        s = "".join(self.out)
        s = re.sub(r"[ \t]+\n", "\n", s)
        return re.sub(r"\n{3,}", "\n\n", s)


def html_to_text(raw):
    p = HtmlToText()
    p.feed(decode(raw))
    p.close()
    return p.text()


# ----------------------------------------------------------------------------------------------
# Sources. Each yields (document id, text) in sorted order; the id is a path relative to the
# package root (or a name for synthesized documents).


def walk(root, suffixes):
    """Relative paths of the regular files (not symlinks) under `root` ending with one of
    `suffixes`, sorted."""
    out = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames.sort()
        for f in filenames:
            path = os.path.join(dirpath, f)
            if f.endswith(suffixes) and not os.path.islink(path) and os.path.isfile(path):
                out.append(os.path.relpath(path, root))
    return sorted(out)


def read(path):
    with open(path, "rb") as f:
        raw = f.read()
    if path.endswith(".gz"):
        raw = gzip.decompress(raw)
    return raw


def looks_generated(text):
    head = "\n".join(text.split("\n", 8)[:8])
    return bool(GENERATED_MARKER.search(head))


class Sources:
    def __init__(self, extract):
        self.x = extract

    def pkg(self, name, *rel):
        return os.path.join(self.x, name, *rel)

    # -- training text --

    def gcide(self):
        base = self.pkg("dict-gcide", "usr/share/dictd")
        with open(os.path.join(base, "gcide.dict.dz"), "rb") as f:
            data = gzip.decompress(f.read())  # dictzip is gzip-compatible
        b64 = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
        value = {c: i for i, c in enumerate(b64)}

        def num(s):
            n = 0
            for c in s:
                n = n * 64 + value[c]
            return n

        spans, headers = set(), []
        with open(os.path.join(base, "gcide.index"), encoding="utf-8") as f:
            for line in f:
                word, off, length = line.rstrip("\n").split("\t")
                span = (num(off), num(length))
                if word.startswith("00-"):
                    headers.append(span)
                else:
                    spans.add(span)
        # dictd's "00-..." header entries (database name, URL, conversion info) are not text.
        spans = {s for s in spans
                 if not any(h[0] <= s[0] < h[0] + h[1] for h in headers)}
        # Entries in file order, grouped into documents of about GCIDE_DOC_BYTES.
        entries = []
        for off, length in sorted(spans):
            entries.append(decode(data[off:off + length]).strip("\n"))
        doc, size, k = [], 0, 0
        for e in entries:
            # The first "entry" holds the license banner of each letter file; it is kept (it is
            # English text) but the dictd headers above are skipped.
            doc.append(e)
            size += len(e)
            if size >= GCIDE_DOC_BYTES:
                yield "gcide-%04d" % k, "\n\n".join(doc)
                doc, size, k = [], 0, k + 1
        if doc:
            yield "gcide-%04d" % k, "\n\n".join(doc)

    def linux_doc(self):
        root = self.pkg("linux-doc-6.1", "usr/share/doc/linux-doc-6.1/Documentation")
        for rel in walk(root, (".rst.gz", ".txt.gz", ".rst", ".txt")):
            yield "Documentation/" + rel, decode(read(os.path.join(root, rel)))

    def python_doc(self):
        root = self.pkg("python3.11-doc", "usr/share/doc/python3.11/html/_sources")
        if os.path.isdir(root):
            for rel in walk(root, (".rst.txt", ".txt")):
                yield rel, decode(read(os.path.join(root, rel)))
            return
        root = self.pkg("python3.11-doc", "usr/share/doc/python3.11/html")
        for rel in walk(root, (".html",)):
            yield rel, html_to_text(read(os.path.join(root, rel)))

    def postgresql_doc(self):
        root = self.pkg("postgresql-doc-15", "usr/share/doc/postgresql-doc-15/html")
        for rel in walk(root, (".html",)):
            yield rel, html_to_text(read(os.path.join(root, rel)))

    def perl_doc(self):
        root = self.pkg("perl-doc", "usr")
        for rel in walk(root, (".pod", ".pod.gz")):
            yield rel, decode(read(os.path.join(root, rel)))

    def jargon(self):
        path = self.pkg("jargon-text", "usr/share/doc/jargon-text/jargon.txt.gz")
        yield "jargon.txt", decode(read(path))

    def python_stdlib_files(self):
        root = self.pkg("libpython3.11-stdlib", "usr/lib/python3.11")
        return root, walk(root, (".py",))

    def python_stdlib(self, heldout):
        root, files = self.python_stdlib_files()
        for rel in files:
            if rel not in heldout:
                yield rel, decode(read(os.path.join(root, rel)))

    def sympy(self):
        root = self.pkg("python3-sympy", "usr/lib/python3/dist-packages")
        for rel in walk(os.path.join(root, "sympy"), (".py",)):
            if rel.startswith("integrals/rubi/"):
                continue  # machine-generated rule tables and tests (removed from SymPy 1.12)
            text = decode(read(os.path.join(root, "sympy", rel)))
            if not looks_generated(text):
                yield "sympy/" + rel, text

    def go_stdlib(self):
        root = self.pkg("golang-1.19-src", "usr/share/go-1.19/src")
        for rel in walk(root, (".go",)):
            if "/testdata/" in "/" + rel:
                continue
            text = decode(read(os.path.join(root, rel)))
            if not looks_generated(text):
                yield rel, text

    # -- adaptation text (SharedLLM stages only) --

    def coq_stdlib(self):
        """The Coq standard library's theories (.v sources): proofs, a genre the training text
        hardly has, from another prover than the held-out HOL Light."""
        root = self.pkg("libcoq-stdlib", "usr/lib/ocaml/coq")
        for rel in walk(root, (".v",)):
            yield rel, decode(read(os.path.join(root, rel)))

    def django(self):
        """Django's Python sources: code of the held-out genre (Python) that the tokenizer and the
        base model never saw, so a stage that trains the cross-attention on it learns to read
        unseen code rather than to correct a base that has memorised its training code."""
        root = self.pkg("python3-django", "usr/lib/python3/dist-packages")
        for rel in walk(os.path.join(root, "django"), (".py",)):
            text = decode(read(os.path.join(root, "django", rel)))
            if not looks_generated(text):
                yield "django/" + rel, text

    # -- held-out --

    def heldout_code_choice(self):
        """The HELDOUT_CODE_FILES longest stdlib .py files (by cleaned size; data tables and
        generated files excluded), as relative paths."""
        root, files = self.python_stdlib_files()
        sized = []
        for rel in files:
            if rel in NOT_CODE or rel.startswith("_sysconfigdata"):
                continue
            text = clean(decode(read(os.path.join(root, rel))))
            if looks_generated(text):
                continue
            sized.append((-len(text.encode("utf-8")), rel))
        return sorted(rel for _, rel in sorted(sized)[:HELDOUT_CODE_FILES])

    def heldout_code(self, chosen):
        root, _ = self.python_stdlib_files()
        for rel in chosen:
            name = "python-" + rel[:-3].replace("/", "__")
            yield name, rel, decode(read(os.path.join(root, rel)))

    def heldout_proofs(self):
        root = self.pkg("hol-light", "usr/share/hol-light")
        for rel in walk(root, (".ml",)):
            path = os.path.join(root, rel)
            if os.path.getsize(path) >= HELDOUT_PROOF_MIN_BYTES:
                name = "hol-" + rel[:-3].replace("/", "__")
                yield name, rel, decode(read(path))

    def heldout_books(self):
        base = self.pkg("r-cran-janeaustenr", "usr/lib/R/site-library/janeaustenr/data")
        rdx = os.path.join(base, "Rdata.rdx")
        if os.path.exists(rdx):
            objects = rdata.read_lazyload_db(rdx)
        else:  # an unpacked source package ships data/*.rda instead
            objects = {}
            for f in sorted(os.listdir(base)):
                if f.endswith((".rda", ".RData")):
                    objects.update(rdata.read_rdata(os.path.join(base, f)))
        vectors = rdata.character_vectors(objects)
        for key, (name, _title) in sorted(AUSTEN.items(), key=lambda kv: kv[1][0]):
            if key not in vectors:
                raise SystemExit("janeaustenr: no character vector %r (found %s)"
                                 % (key, sorted(vectors)))
            yield name, "janeaustenr:" + key, "\n".join(vectors[key])
        for name, source, text in self.kjv_books():
            yield name, source, text

    def kjv_books(self):
        binary = self.pkg("bible-kjv", "usr/bin/bible")
        datadir = self.pkg("bible-kjv-text", "usr/lib")
        proc = subprocess.run(
            [binary, "-f", "-p", datadir, "gen1:1-rev22:21"],
            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
            env={"PATH": "/usr/bin:/bin", "LC_ALL": "C", "COLUMNS": "80"})
        if proc.returncode != 0:
            raise SystemExit("bible-kjv: %s failed: %s" % (binary, proc.stderr.decode()))
        verse = re.compile(r"^([1-3]?[A-Za-z]+)(\d+):(\d+) (.*)$")
        books = []  # (abbreviation, [(chapter, verse, text)])
        for line in proc.stdout.decode("ascii").split("\n"):
            if not line:
                continue
            m = verse.match(line)
            if not m:
                raise SystemExit("bible-kjv: unexpected line %r" % line)
            abbr, ch, vs, text = m.group(1), int(m.group(2)), int(m.group(3)), m.group(4)
            if not books or books[-1][0] != abbr:
                books.append((abbr, []))
            books[-1][1].append((ch, vs, text))
        if len(books) != len(KJV_BOOKS):
            raise SystemExit("bible-kjv: expected 66 books, got %d" % len(books))
        verses = sum(len(v) for _, v in books)
        if verses != 31102:
            raise SystemExit("bible-kjv: expected 31102 verses, got %d" % verses)
        for i, ((abbr, vs), title) in enumerate(zip(books, KJV_BOOKS)):
            lines = [title, ""]
            prev = None
            for ch, v, text in vs:
                if prev is not None and ch != prev:
                    lines.append("")
                prev = ch
                lines.append("%d:%d %s" % (ch, v, text))
            slug = re.sub(r"[^a-z0-9]+", "-", title.lower()).strip("-")
            yield "kjv-%02d-%s" % (i + 1, slug), "bible-kjv:" + abbr, "\n".join(lines)


# (source name, package, generator method) in output order.
TRAIN_SOURCES = [
    ("gcide", "dict-gcide", "gcide"),
    ("linux-doc", "linux-doc-6.1", "linux_doc"),
    ("python-doc", "python3.11-doc", "python_doc"),
    ("postgresql-doc", "postgresql-doc-15", "postgresql_doc"),
    ("perl-doc", "perl-doc", "perl_doc"),
    ("jargon", "jargon-text", "jargon"),
    ("python-stdlib", "libpython3.11-stdlib", "python_stdlib"),
    ("sympy", "python3-sympy", "sympy"),
    ("go-stdlib", "golang-1.19-src", "go_stdlib"),
]

# (source, package, Sources method) of adapt/: text that only SharedLLM stages train on.
ADAPT_SOURCES = [
    ("coq-stdlib", "libcoq-stdlib", "coq_stdlib"),
    ("django", "python3-django", "django"),
]


def read_lock(path):
    pkgs = []
    with open(path) as f:
        for line in f:
            line = line.split("#", 1)[0].strip()
            if line:
                name, version, sha = line.split()
                pkgs.append({"name": name, "version": version, "sha256": sha})
    return pkgs


def deb_filename(name, version, debs_dir):
    # apt-get download names files <name>_<version with ':' as %3a>_<arch>.deb
    prefix = "%s_%s_" % (name, version.replace(":", "%3a"))
    matches = sorted(f for f in os.listdir(debs_dir) if f.startswith(prefix) and f.endswith(".deb"))
    if len(matches) != 1:
        raise SystemExit("no unique .deb for %s=%s in %s: %s" % (name, version, debs_dir, matches))
    return matches[0]


def write(path, data):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    tmp = path + ".tmp"
    with open(tmp, "wb") as f:
        f.write(data)
    os.replace(tmp, path)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--extract", required=True)
    ap.add_argument("--lock", required=True)
    ap.add_argument("--debs", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--max-source-mb", type=float, default=32.0,
                    help="cap on the cleaned training bytes of each source (MiB); 0 = no cap")
    args = ap.parse_args()
    cap = int(args.max_source_mb * 1024 * 1024) if args.max_source_mb > 0 else None

    src = Sources(args.extract)
    seen = {}  # sha256 of cleaned text -> "split/source/id" that kept it
    doc_rows = []  # (split, source, id, bytes, sha256)
    stats = {}

    def accept(split, source, doc_id, text):
        """Cleans; returns the cleaned text, or None when too small or a duplicate."""
        st = stats.setdefault(source, {"split": split, "candidates": 0, "documents": 0,
                                       "bytes": 0, "dropped_small": 0, "dropped_duplicate": 0,
                                       "dropped_cap": 0, "dropped_cap_bytes": 0})
        st["candidates"] += 1
        text = clean(text)
        data = text.encode("utf-8")
        if len(data) < MIN_DOC_BYTES:
            st["dropped_small"] += 1
            return None
        h = sha256_bytes(data)
        if h in seen:
            st["dropped_duplicate"] += 1
            return None
        seen[h] = "%s/%s/%s" % (split, source, doc_id)
        return text

    files = {}  # output path relative to out -> bytes

    # Held-out first, so that a training file identical to a held-out one is dropped from training.
    log("held-out books: Jane Austen (janeaustenr) and the King James Bible (bible-kjv)")
    for name, origin, text in src.heldout_books():
        t = accept("heldout", "books", origin, text)
        if t is not None:
            files["heldout/books/%s.txt" % name] = t.encode("utf-8")
            doc_rows.append(("heldout", "books", name, origin))
    log("held-out code: the %d longest Python stdlib files" % HELDOUT_CODE_FILES)
    chosen = src.heldout_code_choice()
    for name, origin, text in src.heldout_code(chosen):
        t = accept("heldout", "code", origin, text)
        if t is not None:
            files["heldout/code/%s.txt" % name] = t.encode("utf-8")
            doc_rows.append(("heldout", "code", name, "libpython3.11-stdlib:" + origin))
    log("held-out proofs: HOL Light .ml files >= %d bytes" % HELDOUT_PROOF_MIN_BYTES)
    for name, origin, text in src.heldout_proofs():
        t = accept("heldout", "proofs", origin, text)
        if t is not None:
            files["heldout/proofs/%s.txt" % name] = t.encode("utf-8")
            doc_rows.append(("heldout", "proofs", name, "hol-light:" + origin))

    heldout_code = set(chosen)
    # Training text, then adaptation text (uncapped), so that train/ is what it was without it.
    splits = (("train", TRAIN_SOURCES, cap), ("adapt", ADAPT_SOURCES, None))
    for split, sources, split_cap in splits:
        for source, package, method in sources:
            log("%s %-15s from %s" % (split, source, package))
            gen = getattr(src, method)
            docs = []
            for doc_id, text in (gen(heldout_code) if method == "python_stdlib" else gen()):
                t = accept(split, source, doc_id, text)
                if t is not None:
                    docs.append((doc_id, t.encode("utf-8")))
            st = stats[source]
            if split_cap is not None and sum(len(d) for _, d in docs) > split_cap:
                # Keep a deterministic pseudo-random subset: documents ordered by the hash of
                # their id.
                order = sorted(docs, key=lambda d: sha256_bytes(d[0].encode("utf-8")))
                kept, total = set(), 0
                for doc_id, data in order:
                    if total + len(data) > split_cap:
                        st["dropped_cap"] += 1
                        st["dropped_cap_bytes"] += len(data)
                        continue
                    kept.add(doc_id)
                    total += len(data)
                docs = [d for d in docs if d[0] in kept]
            out = bytearray()
            for doc_id, data in docs:
                out += data
                out += DOC_SEPARATOR.encode("ascii")
                doc_rows.append((split, source, doc_id, package + ":" + doc_id))
            files["%s/%s.txt" % (split, source)] = bytes(out)
            log("  %d documents, %.1f MiB (%d small, %d duplicate, %d over the cap)"
                % (len(docs), len(out) / 2**20, st["dropped_small"], st["dropped_duplicate"],
                   st["dropped_cap"]))

    # Per-source document and byte counts of what was written.
    for split, source, name, _ in doc_rows:
        stats[source]["documents"] += 1
    for path, data in files.items():
        parts = path.split("/")
        source = parts[1] if parts[0] == "heldout" else parts[1][:-4]
        stats[source]["bytes"] += len(data)

    # documents.tsv: every document, where it came from.
    rows = ["split\tsource\tdocument\torigin"]
    rows += ["\t".join(r) for r in sorted(doc_rows)]
    files["documents.tsv"] = ("\n".join(rows) + "\n").encode("utf-8")

    # Write everything, removing stale outputs of earlier runs.
    wanted = set(files)
    for dirpath, _, filenames in os.walk(args.out):
        for f in filenames:
            rel = os.path.relpath(os.path.join(dirpath, f), args.out)
            if rel not in wanted and rel != "MANIFEST.json":
                os.remove(os.path.join(dirpath, f))
    for rel in sorted(files):
        write(os.path.join(args.out, rel), files[rel])

    packages = []
    for p in read_lock(args.lock):
        deb = deb_filename(p["name"], p["version"], args.debs)
        path = os.path.join(args.debs, deb)
        sha = sha256_file(path)
        if sha != p["sha256"]:
            raise SystemExit("%s: sha256 %s does not match the lock (%s)" % (deb, sha, p["sha256"]))
        packages.append({"name": p["name"], "version": p["version"], "deb": deb,
                         "bytes": os.path.getsize(path), "sha256": sha})

    manifest = {
        "format": "sharedllm-corpus-1",
        "document_separator": "a line holding only U+001E (RS) ends every document of train/*.txt",
        "cleaning": {"unicode": "NFC", "unicode_version": unicodedata.unidata_version,
                     "min_document_bytes": MIN_DOC_BYTES, "max_blank_lines": 2,
                     "max_source_bytes": cap, "dedup": "sha256 of cleaned text, held-out first"},
        "packages": packages,
        "sources": {k: stats[k] for k in sorted(stats)},
        "totals": {
            "train_bytes": sum(len(v) for k, v in files.items() if k.startswith("train/")),
            "heldout_bytes": sum(len(v) for k, v in files.items() if k.startswith("heldout/")),
            "train_documents": sum(1 for r in doc_rows if r[0] == "train"),
            "heldout_documents": sum(1 for r in doc_rows if r[0] == "heldout"),
            "adapt_bytes": sum(len(v) for k, v in files.items() if k.startswith("adapt/")),
            "adapt_documents": sum(1 for r in doc_rows if r[0] == "adapt"),
        },
        "files": [{"path": k, "bytes": len(files[k]), "sha256": sha256_bytes(files[k])}
                  for k in sorted(files)],
    }
    write(os.path.join(args.out, "MANIFEST.json"),
          (json.dumps(manifest, indent=1, sort_keys=True, ensure_ascii=False) + "\n").encode())
    log("train: %.1f MiB in %d documents; held-out: %.1f MiB in %d documents"
        % (manifest["totals"]["train_bytes"] / 2**20, manifest["totals"]["train_documents"],
           manifest["totals"]["heldout_bytes"] / 2**20, manifest["totals"]["heldout_documents"]))


if __name__ == "__main__":
    main()
