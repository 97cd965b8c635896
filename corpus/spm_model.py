"""A pure-Python reader and BPE encoder for sentencepiece .model files.

Used to check the token shards: it encodes a whole document as ONE string (newlines included),
the way the project's in-process tokenizer (llm/sentencepiece_tokenizer.cpp) does, while the
shards are produced line by line with spm_encode. Same algorithm as sentencepiece's bpe_model.cc:
split into characters, repeatedly merge the adjacent pair whose concatenation is the
best-scoring piece (leftmost on ties), then map pieces to ids with byte fallback.
"""

import heapq
import struct

NORMAL, UNKNOWN, CONTROL, USER_DEFINED, UNUSED, BYTE = 1, 2, 3, 4, 5, 6


def _varint(buf, i):
    v, shift = 0, 0
    while True:
        c = buf[i]
        i += 1
        v |= (c & 0x7F) << shift
        if c < 0x80:
            return v, i
        shift += 7


def _fields(buf):
    i = 0
    while i < len(buf):
        key, i = _varint(buf, i)
        field, wire = key >> 3, key & 7
        if wire == 0:
            v, i = _varint(buf, i)
        elif wire == 1:
            v, i = buf[i:i + 8], i + 8
        elif wire == 2:
            n, i = _varint(buf, i)
            v, i = buf[i:i + n], i + n
        elif wire == 5:
            v, i = buf[i:i + 4], i + 4
        else:
            raise ValueError("unsupported wire type %d" % wire)
        yield field, wire, v


class SpmModel:
    def __init__(self, path):
        with open(path, "rb") as f:
            data = f.read()
        self.pieces = []  # (text, score, type)
        self.add_dummy_prefix = True
        self.remove_extra_whitespaces = True
        self.escape_whitespaces = True
        self.byte_fallback = False
        self.model_type = 1
        for field, wire, v in _fields(data):
            if field == 1 and wire == 2:
                text, score, typ = "", 0.0, NORMAL
                for f, w, x in _fields(v):
                    if f == 1:
                        text = x.decode("utf-8")
                    elif f == 2:
                        score = struct.unpack("<f", x)[0]
                    elif f == 3:
                        typ = x
                self.pieces.append((text, score, typ))
            elif field == 2 and wire == 2:
                for f, w, x in _fields(v):
                    if f == 3 and w == 0:
                        self.model_type = x
                    elif f == 35 and w == 0:
                        self.byte_fallback = bool(x)
            elif field == 3 and wire == 2:
                for f, w, x in _fields(v):
                    if f == 3 and w == 0:
                        self.add_dummy_prefix = bool(x)
                    elif f == 4 and w == 0:
                        self.remove_extra_whitespaces = bool(x)
                    elif f == 5 and w == 0:
                        self.escape_whitespaces = bool(x)
        if self.model_type != 2:
            raise ValueError("%s: not a BPE model" % path)
        self.lookup = {t: i for i, (t, _, _) in enumerate(self.pieces)}
        self.mergeable = {t: s for t, s, ty in self.pieces if ty in (NORMAL, USER_DEFINED)}
        self.byte_ids = {}
        for i, (t, _, ty) in enumerate(self.pieces):
            if ty == BYTE:
                self.byte_ids[int(t[3:5], 16)] = i
            if ty == UNKNOWN:
                self.unk_id = i

    def vocab_size(self):
        return len(self.pieces)

    def piece_id(self, text):
        return self.lookup.get(text)

    def normalize(self, text):
        if self.remove_extra_whitespaces:
            raise NotImplementedError("models trained with remove_extra_whitespaces")
        if not text:
            return text
        if self.add_dummy_prefix:
            text = " " + text
        if self.escape_whitespaces:
            text = text.replace(" ", "\u2581")
        return text

    def encode(self, text):
        s = self.normalize(text)
        if not s:
            return []
        sym = list(s)  # code points; a piece is a run of them
        n = len(sym)
        prev = list(range(-1, n - 1))
        nxt = list(range(1, n + 1))
        nxt[-1] = -1
        alive = [True] * n
        heap = []

        def consider(a, b):
            if a < 0 or b < 0:
                return
            merged = sym[a] + sym[b]
            score = self.mergeable.get(merged)
            if score is not None:
                heapq.heappush(heap, (-score, a, b, merged))

        for i in range(n - 1):
            consider(i, i + 1)
        while heap:
            _, a, b, merged = heapq.heappop(heap)
            if not alive[a] or not alive[b] or nxt[a] != b or sym[a] + sym[b] != merged:
                continue
            sym[a] = merged
            alive[b] = False
            nxt[a] = nxt[b]
            if nxt[b] >= 0:
                prev[nxt[b]] = a
            consider(prev[a], a)
            consider(a, nxt[a])
        ids = []
        i = 0
        while i >= 0:
            piece = sym[i]
            pid = self.lookup.get(piece)
            if pid is not None and self.pieces[pid][2] != UNUSED:
                ids.append(pid)
            elif self.byte_fallback:
                ids.extend(self.byte_ids[b] for b in piece.encode("utf-8"))
            else:
                ids.append(self.unk_id)
            i = nxt[i]
        return ids
