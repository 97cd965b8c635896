"""A small reader for R's serialization format, enough to pull character vectors out of R data.

No R is needed. Handles:
  * .rds files (serialize() output) and .rda/.RData files (save() output: "RDX2\n"/"RDX3\n" then
    a serialized pairlist of name -> value), gzip-, bzip2- or xz-compressed or plain;
  * lazy-load databases (`<pkg>/data/Rdata.rdx` + `Rdata.rdb`), which is how installed packages
    such as r-cran-janeaustenr store their data sets: the .rdx is a compressed .rds holding
    list(variables = list(name = c(offset, length)), references, compressed), and each record in
    the .rdb is a 4-byte big-endian uncompressed length, then zlib data (compressed = TRUE / 1), or a
    type byte ('2' bzip2, 'Z' xz, '0' none) and the data (compressed = 2 / 3).

Only the XDR ("X\\n") binary format is read, version 2 or 3 (ASCII and native-binary formats are
rejected). Values come back as Python objects: character vectors as lists of str (None for NA),
logical/integer/double vectors as lists, generic vectors as RList (a list with .attributes),
pairlists as RPairList, symbols as RSymbol. Closures, environments and byte code are read
structurally (so a file that contains them still parses) but are not interpreted.

Format reference: R's src/main/serialize.c (ReadItem/InItem) and R Internals, "Serialization
Formats".
"""

import bz2
import gzip
import io
import lzma
import struct
import zlib

# SEXP types (Rinternals.h) and serialization pseudo-types (serialize.c).
NILSXP, SYMSXP, LISTSXP, CLOSXP, ENVSXP, PROMSXP, LANGSXP = 0, 1, 2, 3, 4, 5, 6
SPECIALSXP, BUILTINSXP, CHARSXP, LGLSXP, INTSXP, REALSXP, CPLXSXP = 7, 8, 9, 10, 13, 14, 15
STRSXP, DOTSXP, VECSXP, EXPRSXP, BCODESXP, EXTPTRSXP, WEAKREFSXP = 16, 17, 19, 20, 21, 22, 23
RAWSXP, S4SXP = 24, 25
REFSXP, NILVALUE_SXP, GLOBALENV_SXP, UNBOUNDVALUE_SXP, MISSINGARG_SXP = 255, 254, 253, 252, 251
BASENAMESPACE_SXP, NAMESPACESXP, PACKAGESXP, PERSISTSXP = 250, 249, 248, 247
CLASSREFSXP, GENERICREFSXP, BCREPDEF, EMPTYENV_SXP, BASEENV_SXP = 246, 245, 244, 242, 241
ATTRLANGSXP, ATTRLISTSXP, ALTREP_SXP = 240, 239, 238
BCREPREF = 243

NA_INTEGER = -(2 ** 31)
UTF8_MASK, LATIN1_MASK, BYTES_MASK, ASCII_MASK = 1 << 3, 1 << 2, 1 << 1, 1 << 6


class RError(Exception):
    pass


class RSymbol(str):
    """An R symbol (name)."""


class RList(list):
    """A generic vector (VECSXP/EXPRSXP) or atomic vector with attributes."""

    def __init__(self, items=(), attributes=None):
        super().__init__(items)
        self.attributes = attributes or {}


class RPairList(list):
    """A pairlist as a list of (tag or None, value)."""

    def __init__(self, items=(), attributes=None):
        super().__init__(items)
        self.attributes = attributes or {}


class ROpaque:
    """Something read only structurally (closure, environment, byte code, ...)."""

    def __init__(self, kind):
        self.kind = kind

    def __repr__(self):
        return "ROpaque(%s)" % self.kind


def decompress(data):
    """Undoes gzip/bzip2/xz compression by magic number; returns `data` unchanged otherwise."""
    if data[:2] == b"\x1f\x8b":
        return gzip.decompress(data)
    if data[:3] == b"BZh":
        return bz2.decompress(data)
    if data[:6] == b"\xfd7zXZ\x00":
        return lzma.decompress(data)
    return data


class _Reader:
    def __init__(self, data, name):
        self.buf = io.BytesIO(data)
        self.name = name
        self.refs = []

    def fail(self, why):
        raise RError("%s: %s (at byte %d)" % (self.name, why, self.buf.tell()))

    def bytes(self, n):
        b = self.buf.read(n)
        if len(b) != n:
            self.fail("truncated")
        return b

    def int(self):
        return struct.unpack(">i", self.bytes(4))[0]

    def length(self):
        n = self.int()
        if n == -1:
            hi, lo = self.int(), self.int()
            n = (hi << 32) + lo
        elif n < 0:
            self.fail("negative length %d" % n)
        return n

    def header(self):
        fmt = self.bytes(2)
        if fmt != b"X\n":
            self.fail("only the XDR binary serialization format is supported (got %r)" % fmt)
        version = self.int()
        self.int()  # writer's R version
        self.int()  # minimal reader version
        if version == 3:
            self.bytes(self.int())  # native encoding name
        elif version != 2:
            self.fail("unsupported serialization version %d" % version)

    def charsxp(self, levels):
        n = self.int()
        if n == -1:
            return None
        raw = self.bytes(n)
        if levels & LATIN1_MASK:
            return raw.decode("latin-1")
        if levels & BYTES_MASK:
            return raw.decode("utf-8", errors="surrogateescape")
        return raw.decode("utf-8", errors="replace")

    def attributes(self, has_attr):
        if not has_attr:
            return {}
        attrs = self.item()
        if not isinstance(attrs, RPairList):
            return {}
        return {str(tag): value for tag, value in attrs}

    def item(self):
        flags = self.int()
        kind = flags & 0xFF
        levels = flags >> 12
        has_attr = bool(flags & (1 << 9))
        has_tag = bool(flags & (1 << 10))

        if kind == NILVALUE_SXP:
            return None
        if kind in (EMPTYENV_SXP, BASEENV_SXP, GLOBALENV_SXP, UNBOUNDVALUE_SXP, MISSINGARG_SXP,
                    BASENAMESPACE_SXP):
            return ROpaque("special%d" % kind)
        if kind == REFSXP:
            index = flags >> 8
            if index == 0:
                index = self.int()
            if not 1 <= index <= len(self.refs):
                self.fail("bad reference index %d" % index)
            return self.refs[index - 1]
        if kind == PERSISTSXP:
            names = self.stringvec()
            obj = ROpaque("persist:%s" % names)
            self.refs.append(obj)
            return obj
        if kind == SYMSXP:
            sym = RSymbol(self.item() or "")
            self.refs.append(sym)
            return sym
        if kind in (PACKAGESXP, NAMESPACESXP):
            obj = ROpaque("namespace:%s" % self.stringvec())
            self.refs.append(obj)
            return obj
        if kind == ENVSXP:
            obj = ROpaque("environment")
            self.refs.append(obj)
            self.int()  # locked
            self.item()  # enclos
            self.item()  # frame
            self.item()  # hashtab
            self.item()  # attributes
            return obj
        if kind in (LISTSXP, LANGSXP, CLOSXP, PROMSXP, DOTSXP, ATTRLANGSXP, ATTRLISTSXP):
            # A pairlist is read iteratively along its CDR to avoid deep recursion.
            out = RPairList()
            first = True
            while True:
                attrs = self.attributes(has_attr)
                tag = self.item() if has_tag else None
                car = self.item()
                if first:
                    out.attributes = attrs
                    first = False
                out.append((tag, car))
                flags = self.int()
                kind2 = flags & 0xFF
                if kind2 not in (LISTSXP, LANGSXP, ATTRLANGSXP, ATTRLISTSXP, DOTSXP):
                    # Not a continuation of the list: push the flags back and read it as an item.
                    self.buf.seek(-4, io.SEEK_CUR)
                    tail = self.item()
                    if tail is not None:
                        out.append((None, tail))
                    break
                has_attr = bool(flags & (1 << 9))
                has_tag = bool(flags & (1 << 10))
            if kind in (CLOSXP, PROMSXP):
                return ROpaque("closure" if kind == CLOSXP else "promise")
            return out
        if kind in (SPECIALSXP, BUILTINSXP):
            return ROpaque("builtin:" + self.bytes(self.int()).decode("latin-1"))
        if kind == CHARSXP:
            return self.charsxp(levels)
        if kind == ALTREP_SXP:
            info = self.item()
            state = self.item()
            attrs = self.item()
            value = self.altrep(info, state)
            if isinstance(attrs, RPairList) and isinstance(value, list):
                value = RList(value, {str(t): v for t, v in attrs})
            return value
        if kind == EXTPTRSXP:
            obj = ROpaque("externalptr")
            self.refs.append(obj)
            self.item()
            self.item()
            self.attributes(has_attr)
            return obj
        if kind == WEAKREFSXP:
            obj = ROpaque("weakref")
            self.refs.append(obj)
            self.attributes(has_attr)
            return obj
        if kind == S4SXP:
            return RList([], self.attributes(has_attr))
        if kind == BCODESXP:
            self.bytecode()
            self.attributes(has_attr)
            return ROpaque("bytecode")

        # Vectors.
        if kind in (LGLSXP, INTSXP):
            n = self.length()
            values = list(struct.unpack(">%di" % n, self.bytes(4 * n)))
            values = [None if v == NA_INTEGER else v for v in values]
            if kind == LGLSXP:
                values = [None if v is None else bool(v) for v in values]
        elif kind == REALSXP:
            n = self.length()
            values = list(struct.unpack(">%dd" % n, self.bytes(8 * n)))
        elif kind == CPLXSXP:
            n = self.length()
            parts = struct.unpack(">%dd" % (2 * n), self.bytes(16 * n))
            values = [complex(parts[2 * i], parts[2 * i + 1]) for i in range(n)]
        elif kind == STRSXP:
            n = self.length()
            values = [self.item() for _ in range(n)]
        elif kind in (VECSXP, EXPRSXP):
            n = self.length()
            values = [self.item() for _ in range(n)]
        elif kind == RAWSXP:
            values = self.bytes(self.length())
        else:
            self.fail("unsupported SEXP type %d" % kind)
        attrs = self.attributes(has_attr)
        if kind == RAWSXP:
            return values
        return RList(values, attrs)

    def stringvec(self):
        if self.int() != 0:
            self.fail("bad string vector in persistent name")
        return [self.item() for _ in range(self.int())]

    def altrep(self, info, state):
        cls = str(info[0][1]) if isinstance(info, RPairList) and info else ""
        if cls in ("compact_intseq", "compact_realseq"):
            n, start, step = state[0], state[1], state[2]
            seq = [start + i * step for i in range(int(n))]
            return [int(v) for v in seq] if cls == "compact_intseq" else seq
        if cls.startswith("wrap_"):
            return state[0][1] if isinstance(state, RPairList) else state[0]
        if cls == "deferred_string":
            # state is a pairlist whose CAR is the original (numeric) vector.
            arg = state[0][1] if isinstance(state, RPairList) else state
            return [None if v is None else _r_number_to_string(v) for v in arg]
        self.fail("unsupported ALTREP class %r" % cls)

    def bytecode(self):
        reps = self.int()
        reps_table = [None] * reps
        self._bc(reps_table)

    def _bc(self, reps):
        self.item()  # code (an integer vector)
        n = self.int()
        for _ in range(n):
            t = self.int()
            if t == BCODESXP:
                self._bc(reps)
            elif t in (LANGSXP, LISTSXP, BCREPDEF, BCREPREF, ATTRLANGSXP, ATTRLISTSXP):
                self._bclang(t, reps)
            else:
                self.item()

    def _bclang(self, t, reps):
        if t == BCREPREF:
            self.int()
            return
        if t in (BCREPDEF, LANGSXP, LISTSXP, ATTRLANGSXP, ATTRLISTSXP):
            if t == BCREPDEF:
                self.int()  # position
                t = self.int()
            if t in (ATTRLANGSXP, ATTRLISTSXP):
                self.item()
            self.item()  # tag
            self._bclang(self.int(), reps)  # car
            self._bclang(self.int(), reps)  # cdr
            return
        self.item()  # any other constant: a full item follows its type word


def _r_number_to_string(v):
    if isinstance(v, float) and v.is_integer():
        return str(int(v))
    return repr(v)


def unserialize(data, name="<data>"):
    """Parses serialize() output (already decompressed)."""
    r = _Reader(data, name)
    r.header()
    return r.item()


def read_rds(path):
    with open(path, "rb") as f:
        return unserialize(decompress(f.read()), path)


def read_rdata(path):
    """Objects of a save() file (.rda/.RData) as {name: value}."""
    with open(path, "rb") as f:
        data = decompress(f.read())
    if data[:5] not in (b"RDX2\n", b"RDX3\n"):
        raise RError("%s: not an R data file (magic %r)" % (path, data[:5]))
    obj = unserialize(data[5:], path)
    return {str(tag): value for tag, value in obj}


def read_lazyload_db(rdx_path):
    """Objects of a lazy-load database (`X.rdx` + `X.rdb`) as {name: value}."""
    index = read_rds(rdx_path)
    if not isinstance(index, RList) or "names" not in index.attributes:
        raise RError("%s: not a lazy-load index" % rdx_path)
    fields = dict(zip(index.attributes["names"], index))
    variables = fields.get("variables")
    compressed = fields.get("compressed")
    compressed = compressed[0] if isinstance(compressed, list) and compressed else True
    rdb_path = rdx_path[:-4] + ".rdb"
    with open(rdb_path, "rb") as f:
        rdb = f.read()
    out = {}
    for name, (offset, length) in zip(variables.attributes["names"], variables):
        offset, length = int(offset), int(length)
        record = rdb[offset:offset + length]
        if len(record) != length:
            raise RError("%s: record %s out of range" % (rdb_path, name))
        size = struct.unpack(">I", record[:4])[0]
        if compressed is True or compressed == 1:
            payload = zlib.decompress(record[4:])
        else:
            kind, body = record[4:5], record[5:]
            codecs = {b"0": lambda b: b, b"1": zlib.decompress, b"2": bz2.decompress,
                      b"Z": lzma.decompress}
            if kind not in codecs:
                raise RError("%s: record %s has unknown compression %r" % (rdb_path, name, kind))
            payload = codecs[kind](body)
        if len(payload) != size:
            raise RError("%s: record %s decompressed to %d bytes, expected %d"
                         % (rdb_path, name, len(payload), size))
        out[name] = unserialize(payload, "%s[%s]" % (rdb_path, name))
    return out


def character_vectors(objects):
    """{name: list of str} for every object that is a character vector (NA -> "")."""
    out = {}
    for name, value in objects.items():
        if isinstance(value, list) and value and all(v is None or isinstance(v, str)
                                                     for v in value):
            out[name] = ["" if v is None else v for v in value]
    return out


if __name__ == "__main__":
    import sys
    for path in sys.argv[1:]:
        if path.endswith(".rdx"):
            objs = read_lazyload_db(path)
        elif path.endswith(".rds"):
            objs = {"value": read_rds(path)}
        else:
            objs = read_rdata(path)
        for name, value in sorted(objs.items()):
            n = len(value) if isinstance(value, list) else "-"
            print("%s\t%s\t%s" % (name, type(value).__name__, n))
