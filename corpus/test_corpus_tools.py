"""Unit tests of the corpus tools: the R reader, text cleaning, HTML to text, token shards.

Run: /usr/bin/python3 -m unittest discover -s corpus -p 'test_*.py'   (ctest: corpus_tools)
"""

import bz2
import gzip
import lzma
import os
import struct
import sys
import tempfile
import unittest
import zlib

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import build_corpus  # noqa: E402
import rdata  # noqa: E402
import select_sources  # noqa: E402
import shards  # noqa: E402


# A minimal R XDR serializer, written from R Internals ("Serialization Formats"), to produce
# inputs for the reader.
def _i(v):
    return struct.pack(">i", v)


def _flags(kind, has_attr=False, has_tag=False, levels=0):
    return _i(kind | (1 << 9 if has_attr else 0) | (1 << 10 if has_tag else 0) | (levels << 12))


def _charsxp(s):
    if s is None:
        return _flags(9) + _i(-1)
    b = s.encode("utf-8")
    return _flags(9, levels=1 << 3) + _i(len(b)) + b


def _strsxp(values, attrs=b""):
    return _flags(16, has_attr=bool(attrs)) + _i(len(values)) + b"".join(map(_charsxp, values)) \
        + attrs


def _sym(name):
    return _flags(1) + _charsxp(name)


def _pairlist(items):
    """items: [(tag, serialized value)]; tags are serialized as fresh symbols."""
    out = b""
    for tag, value in items:
        out += _flags(2, has_tag=True) + _sym(tag) + value
    return out + _i(254)  # NILVALUE_SXP


def _names_attr(names):
    return _pairlist([("names", _strsxp(names))])


def _serialize(body, version=2):
    head = b"X\n" + _i(version) + _i(0x040201) + _i(0x020300)
    if version == 3:
        head += _i(5) + b"UTF-8"
    return head + body


class RDataTest(unittest.TestCase):
    def setUp(self):
        self.tmp = tempfile.TemporaryDirectory()

    def tearDown(self):
        self.tmp.cleanup()

    def path(self, name):
        return os.path.join(self.tmp.name, name)

    def test_rda_every_compression_and_version(self):
        payload = _pairlist([
            ("emma", _strsxp(["EMMA", "", "By Jane Austen", None, "caf\u00e9"])),
            ("n", _flags(13) + _i(3) + _i(1) + _i(-2**31) + _i(7)),
            ("x", _flags(14) + _i(2) + struct.pack(">dd", 1.5, -2.0)),
        ])
        for version, magic in ((2, b"RDX2\n"), (3, b"RDX3\n")):
            raw = magic + _serialize(payload, version)
            for name, data in (("plain", raw), ("gz", gzip.compress(raw)),
                               ("bz2", bz2.compress(raw)), ("xz", lzma.compress(raw))):
                p = self.path("%s%d.rda" % (name, version))
                with open(p, "wb") as f:
                    f.write(data)
                objs = rdata.read_rdata(p)
                self.assertEqual(objs["emma"], ["EMMA", "", "By Jane Austen", None, "caf\u00e9"])
                self.assertEqual(objs["n"], [1, None, 7])
                self.assertEqual(objs["x"], [1.5, -2.0])
                self.assertEqual(rdata.character_vectors(objs),
                                 {"emma": ["EMMA", "", "By Jane Austen", "", "caf\u00e9"]})

    def test_lazyload_database(self):
        record_obj = _serialize(_strsxp(["line one", "line two"]))
        record = struct.pack(">I", len(record_obj)) + zlib.compress(record_obj)
        rdb = b"\0" * 7 + record
        variables = _flags(19, has_attr=True) + _i(1) \
            + _flags(14) + _i(2) + struct.pack(">dd", 7, len(record)) + _names_attr(["book"])
        index = _flags(19, has_attr=True) + _i(3) + variables + (_flags(19) + _i(0)) \
            + (_flags(10) + _i(1) + _i(1)) + _names_attr(["variables", "references", "compressed"])
        with open(self.path("Rdata.rdx"), "wb") as f:
            f.write(gzip.compress(_serialize(index)))
        with open(self.path("Rdata.rdb"), "wb") as f:
            f.write(rdb)
        objs = rdata.read_lazyload_db(self.path("Rdata.rdx"))
        self.assertEqual(objs, {"book": ["line one", "line two"]})

    def test_rejects_other_formats(self):
        p = self.path("ascii.rds")
        with open(p, "wb") as f:
            f.write(b"A\n2\n")
        with self.assertRaises(rdata.RError):
            rdata.read_rds(p)
        p = self.path("bad.rda")
        with open(p, "wb") as f:
            f.write(gzip.compress(b"NOTR\n"))
        with self.assertRaises(rdata.RError):
            rdata.read_rdata(p)


class CleanTest(unittest.TestCase):
    def test_rules(self):
        c = build_corpus.clean
        self.assertEqual(c("a\r\nb\rc"), "a\nb\nc\n")
        self.assertEqual(c("e\u0301"), "\u00e9\n")  # NFC
        self.assertEqual(c("a\x00b\x1ec\x7fd\x85e\ufefff\tg"), "abcdef\tg\n")
        self.assertEqual(c("x   \t\ny"), "x\ny\n")
        self.assertEqual(c("\n\n\na\n\n\n\n\n\nb\n\n\n"), "a\n\n\nb\n")
        self.assertEqual(c("a\n\n\nb"), "a\n\n\nb\n")  # two blank lines stay
        self.assertEqual(c("    indented code\n"), "    indented code\n")
        self.assertEqual(c("\n \n"), "")

    def test_generated_marker(self):
        self.assertTrue(build_corpus.looks_generated("// Code generated by x. DO NOT EDIT.\n"))
        self.assertFalse(build_corpus.looks_generated("package main\n" + "\n" * 10 +
                                                      "// generated later: do not edit\n"))


def write_tree(root, files):
    """Writes {relative path: text} under root, making the folders."""
    for rel, text in files.items():
        os.makedirs(os.path.dirname(os.path.join(root, rel)), exist_ok=True)
        with open(os.path.join(root, rel), "w") as f:
            f.write(text)


class AdaptSourcesTest(unittest.TestCase):
    def test_coq_stdlib_yields_every_v_source_in_path_order(self):
        with tempfile.TemporaryDirectory() as x:
            root = os.path.join(x, "libcoq-stdlib", "usr", "lib", "ocaml", "coq")
            files = {"theories/Lists/List.v": "Lemma app_nil : True.",
                     "theories/Init/Nat.v": "Definition two := 2.",
                     "user-contrib/Ltac2/Std.v": "Ltac2 x := ().",
                     "theories/Init/Nat.vo": "compiled", "theories/Init/Nat.glob": "globs"}
            write_tree(root, files)
            os.symlink(os.path.join(root, "theories/Init/Nat.v"),
                       os.path.join(root, "theories/Init/Link.v"))
            got = list(build_corpus.Sources(x).coq_stdlib())
            self.assertEqual([rel for rel, _ in got], ["theories/Init/Nat.v",
                                                       "theories/Lists/List.v",
                                                       "user-contrib/Ltac2/Std.v"])
            self.assertEqual(got[1][1], "Lemma app_nil : True.")
            self.assertEqual([s[0] for s in build_corpus.ADAPT_SOURCES],
                             ["coq-stdlib", "django"])

    def test_django_yields_its_python_sources_not_generated_ones(self):
        with tempfile.TemporaryDirectory() as x:
            root = os.path.join(x, "python3-django", "usr", "lib", "python3", "dist-packages")
            files = {"django/db/models/query.py": "class QuerySet:\n    pass\n",
                     "django/__init__.py": "VERSION = (3, 2)\n",
                     "django/contrib/admin/static/admin/js/core.js": "var x;",
                     "django/conf/locale/de/LC_MESSAGES/django.mo": "binary",
                     "django/gen.py": "# Code generated by a tool. DO NOT EDIT.\nX = 1\n",
                     "other/elsewhere.py": "y = 2\n"}
            write_tree(root, files)
            got = list(build_corpus.Sources(x).django())
            self.assertEqual([rel for rel, _ in got], ["django/__init__.py",
                                                       "django/db/models/query.py"])
            self.assertEqual(got[1][1], "class QuerySet:\n    pass\n")


class HtmlTest(unittest.TestCase):
    def test_text(self):
        html = (b"<html><head><title>T</title><style>x{}</style></head><body>"
                b"<div class='navheader'>Prev Next</div><h1>Title</h1><p>Some  <b>bold</b>\n"
                b"text &amp; more.</p><pre>  code\n    indented</pre><ul><li><p>one</p></li>"
                b"<li>two</li></ul><table><tr><td>a</td><td>b</td></tr></table>"
                b"<div class='navfooter'>footer</div></body></html>")
        text = build_corpus.clean(build_corpus.html_to_text(html))
        self.assertEqual(text, "Title\n\nSome bold text & more.\n\n  code\n    indented\n\n"
                               "* one\n\n* two\n\n| a | b\n")  # <p> in <li>: blank line


class ShardsTest(unittest.TestCase):
    def test_round_trip_and_crc(self):
        with tempfile.TemporaryDirectory() as d:
            p = os.path.join(d, "s.bin")
            docs = [[1, 5, 6], [1], [1, 8191]]
            self.assertEqual(shards.write_shard(p, 8192, docs), 6)
            with open(p, "rb") as f:
                data = f.read()
            self.assertEqual(data[:8], b"SLTOKv1\0")
            self.assertEqual(struct.unpack("<IIQQ", data[8:32]), (8192, 2, 6, 3))
            self.assertEqual(struct.unpack("<3Q", data[32:56]), (0, 3, 4))
            self.assertEqual(len(data), 32 + 24 + 12 + 4)
            self.assertEqual(struct.unpack("<I", data[-4:])[0], zlib.crc32(data[:-4]))
            vocab, toks, offs = shards.read_shard(p)
            self.assertEqual([list(x) for x in shards.documents_of(toks, offs)], docs)
            shards.write_shard(p, 70000, [[1, 69999]])
            self.assertEqual(list(shards.read_shard(p)[1]), [1, 69999])
            with self.assertRaises(ValueError):
                shards.write_shard(p, 100, [[1, 100]])

    def test_select_sources_keeps_those_documents_in_order(self):
        with tempfile.TemporaryDirectory() as d:
            shards.write_shard(os.path.join(d, "t.bin"), 100, [[1, 2], [1, 3, 3], [1, 4], [1, 5]])
            index = {"shards": [{"path": "t.bin",
                                 "document_names": ["go/0", "py/0", "doc/0", "py/1"]}]}
            out = os.path.join(d, "v.bin")
            self.assertEqual(select_sources.select(index, d, "t.bin", {"py"}, out), (2, 5))
            _, toks, offs = shards.read_shard(out)
            self.assertEqual([list(x) for x in shards.documents_of(toks, offs)], [[1, 3, 3], [1, 5]])
            with self.assertRaisesRegex(ValueError, "no source"):
                select_sources.select(index, d, "t.bin", {"rust"}, out)
            with self.assertRaisesRegex(ValueError, "not in the index"):
                select_sources.select(index, d, "u.bin", {"py"}, out)

    def test_select_sources_fraction_is_a_seeded_sample_in_order(self):
        with tempfile.TemporaryDirectory() as d:
            docs = [[1, i, i] for i in range(2, 42)]
            shards.write_shard(os.path.join(d, "t.bin"), 100, docs)
            index = {"shards": [{"path": "t.bin",
                                 "document_names": ["src%d/%d" % (i % 2, i) for i in range(40)]}]}
            out = os.path.join(d, "s.bin")

            def written(**kw):
                select_sources.select(index, d, "t.bin", None, out, **kw)
                _, toks, offs = shards.read_shard(out)
                return [list(x) for x in shards.documents_of(toks, offs)]

            self.assertEqual(written(), docs)
            half = written(fraction=0.5, seed=3)
            self.assertEqual(written(fraction=0.5, seed=3), half)
            self.assertNotEqual(written(fraction=0.5, seed=4), half)
            self.assertTrue(5 < len(half) < 35)
            self.assertEqual(half, [x for x in docs if x in half])  # order kept
            with self.assertRaisesRegex(ValueError, "fraction"):
                written(fraction=0)
            with self.assertRaisesRegex(ValueError, "no document"):
                select_sources.select(index, d, "t.bin", {"src1"}, out, fraction=1e-9)


if __name__ == "__main__":
    unittest.main()
