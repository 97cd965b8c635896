// A reader for sentencepiece `.model` files and their BPE encoder/decoder, written against the
// file format and sentencepiece's documented algorithm rather than linking libsentencepiece: that
// library carries its own protobuf-lite, and no load order of it and libprotobuf works in one
// process (first: a static-initialisation crash; second: its protobuf version check aborts when a
// model is loaded). Parity with spm_encode/spm_decode is tested (tests/llm/tokenizer_test.cpp).
//
// Supported: model_type BPE, normalizer "identity" (Llama-2, Mistral and this project's models),
// byte fallback, add_dummy_prefix, remove_extra_whitespaces, escape_whitespaces, user-defined
// symbols. Other normalizers need their precompiled character map and are rejected with a hint.
#include <array>
#include <cctype>
#include <cstring>
#include <queue>
#include <unordered_map>

#include "llm/errors.h"
#include "llm/file_util.h"
#include "llm/tokenizer.h"

namespace sharedllm {
namespace {

constexpr char kSpace[] = "\xE2\x96\x81";  // U+2581, sentencepiece's visible space

enum PieceType { kNormal = 1, kUnknown = 2, kControl = 3, kUserDefined = 4, kUnused = 5, kByte = 6 };

// Minimal protobuf wire-format reader (the model file is a serialized ModelProto).
class WireReader {
 public:
  WireReader(const char* p, size_t n, const std::string& path) : p_(p), end_(p + n), path_(path) {}
  bool done() const { return p_ >= end_; }
  // Next field: number and wire type.
  void Next(uint32_t* field, uint32_t* wire) {
    const uint64_t key = Varint();
    *field = static_cast<uint32_t>(key >> 3);
    *wire = static_cast<uint32_t>(key & 7);
  }
  uint64_t Varint() {
    uint64_t v = 0;
    for (int shift = 0; shift < 64; shift += 7) {
      Need(1);
      const unsigned char c = static_cast<unsigned char>(*p_++);
      v |= static_cast<uint64_t>(c & 0x7f) << shift;
      if (c < 0x80) return v;
    }
    Fail("varint too long");
    return 0;
  }
  float Fixed32Float() {
    Need(4);
    float f;
    std::memcpy(&f, p_, 4);
    p_ += 4;
    return f;
  }
  std::string Bytes() {
    const uint64_t n = Varint();
    Need(n);
    std::string s(p_, n);
    p_ += n;
    return s;
  }
  void Skip(uint32_t wire) {
    switch (wire) {
      case 0: Varint(); break;
      case 1: Need(8); p_ += 8; break;
      case 2: Bytes(); break;
      case 5: Need(4); p_ += 4; break;
      default: Fail("unsupported wire type " + std::to_string(wire));
    }
  }
  [[noreturn]] void Fail(const std::string& why) const {
    throw ModelError(path_ + ": not a sentencepiece model (" + why + ")");
  }

 private:
  void Need(uint64_t n) const {
    if (static_cast<uint64_t>(end_ - p_) < n) Fail("truncated");
  }
  const char* p_;
  const char* end_;
  const std::string& path_;
};

struct Piece {
  std::string text;
  float score = 0;
  int type = kNormal;
};

// Length in bytes of the UTF-8 character starting with `c` (1 for invalid lead bytes).
size_t Utf8Length(unsigned char c) {
  if (c < 0x80) return 1;
  if ((c & 0xE0) == 0xC0) return 2;
  if ((c & 0xF0) == 0xE0) return 3;
  if ((c & 0xF8) == 0xF0) return 4;
  return 1;
}

// True when s[i..i+len) is one well-formed UTF-8 character (RFC 3629: no overlong forms, no
// surrogates, nothing above U+10FFFF), the rules protobuf applies to string fields.
bool ValidUtf8At(const std::string& s, size_t i, size_t len) {
  if (i + len > s.size()) return false;
  const unsigned char c0 = static_cast<unsigned char>(s[i]);
  if (len == 1) return c0 < 0x80;
  for (size_t k = 1; k < len; ++k) {
    if ((static_cast<unsigned char>(s[i + k]) & 0xC0) != 0x80) return false;
  }
  const unsigned char c1 = static_cast<unsigned char>(s[i + 1]);
  switch (len) {
    case 2: return c0 >= 0xC2;
    case 3: return c0 == 0xE0 ? c1 >= 0xA0 : c0 == 0xED ? c1 <= 0x9F : true;
    case 4: return c0 == 0xF0 ? c1 >= 0x90 : c0 == 0xF4 ? c1 <= 0x8F : c0 < 0xF4;
  }
  return false;
}

class SentencePieceTokenizer : public Tokenizer {
 public:
  explicit SentencePieceTokenizer(const std::string& path) {
    Parse(ReadTextFile(path), path);
  }

  std::vector<int64_t> Encode(const std::string& text) const override {
    const std::string normalized = Normalize(text);
    std::vector<int64_t> ids;
    if (normalized.empty()) return ids;
    if (!split_at_spaces_) {
      EncodeNormalized(normalized, &ids);
      return ids;
    }
    // No piece holds a space after a character that is not one, so no merge crosses the start of
    // a word: BPE over each word alone (a run of spaces and what follows up to the next space)
    // gives exactly the ids of BPE over the whole text, in time and memory of the word, not of
    // the document. Words repeat, so each call remembers the ids of the words it has seen.
    std::unordered_map<std::string, std::vector<int64_t>> seen;
    std::string word;
    std::vector<int64_t> word_ids;
    const size_t space = std::strlen(kSpace);
    for (size_t begin = 0; begin < normalized.size();) {
      size_t after = begin;
      while (normalized.compare(after, space, kSpace) == 0) after += space;
      size_t end = after < normalized.size() ? normalized.find(kSpace, after + 1) : after;
      if (end == std::string::npos) end = normalized.size();
      word.assign(normalized, begin, end - begin);
      auto it = seen.find(word);
      if (it == seen.end()) {
        word_ids.clear();
        EncodeNormalized(word, &word_ids);
        if (seen.size() >= kMaxRememberedWords) seen.clear();
        it = seen.emplace(word, word_ids).first;
      }
      ids.insert(ids.end(), it->second.begin(), it->second.end());
      begin = end;
    }
    return ids;
  }

  // Greedy BPE over an already normalized text, appending its ids.
  void EncodeNormalized(const std::string& normalized, std::vector<int64_t>* out) const {
    std::vector<int64_t>& ids = *out;
    // Symbols: user-defined pieces matched greedily (longest first), else single characters.
    struct Symbol {
      size_t begin, len;
      int prev, next;
      bool frozen;
    };
    std::vector<Symbol> symbols;
    for (size_t i = 0; i < normalized.size();) {
      size_t len = 0;
      bool user = false;
      for (const auto& u : user_defined_) {
        if (u.size() > len && normalized.compare(i, u.size(), u) == 0) {
          len = u.size();
          user = true;
        }
      }
      if (!user) len = std::min(Utf8Length(static_cast<unsigned char>(normalized[i])),
                                normalized.size() - i);
      const int index = static_cast<int>(symbols.size());
      symbols.push_back({i, len, index - 1, index + 1, user});
      i += len;
    }
    symbols.back().next = -1;
    // Greedy BPE: repeatedly merge the adjacent pair whose union is the best-scoring piece
    // (leftmost on ties), as sentencepiece's bpe_model.cc does.
    struct Candidate {
      float score;
      int left, right;
      size_t len;  // byte length of the merged piece, to detect stale entries
      bool operator<(const Candidate& o) const {
        return score < o.score || (score == o.score && left > o.left);
      }
    };
    std::priority_queue<Candidate> agenda;
    std::string key;  // reused: a lookup allocates only for a piece longer than its capacity
    auto consider = [&](int left, int right) {
      if (left < 0 || right < 0 || symbols[left].frozen || symbols[right].frozen) return;
      const size_t len = symbols[left].len + symbols[right].len;
      key.assign(normalized, symbols[left].begin, len);
      auto it = mergeable_.find(key);
      if (it == mergeable_.end()) return;
      agenda.push({pieces_[it->second].score, left, right, len});
    };
    for (size_t i = 0; i + 1 < symbols.size(); ++i) consider(static_cast<int>(i), static_cast<int>(i + 1));
    while (!agenda.empty()) {
      const Candidate top = agenda.top();
      agenda.pop();
      Symbol& l = symbols[top.left];
      Symbol& r = symbols[top.right];
      if (l.len == 0 || r.len == 0 || l.next != top.right || l.len + r.len != top.len) continue;
      l.len += r.len;
      l.next = r.next;
      if (r.next >= 0) symbols[r.next].prev = top.left;
      r.len = 0;
      consider(l.prev, top.left);
      consider(top.left, l.next);
    }
    for (int i = 0; i >= 0; i = symbols[i].next) {
      const std::string piece = normalized.substr(symbols[i].begin, symbols[i].len);
      auto it = lookup_.find(piece);
      if (it != lookup_.end() && pieces_[it->second].type != kUnused) {
        ids.push_back(it->second);
      } else if (byte_fallback_) {
        for (unsigned char c : piece) ids.push_back(byte_ids_[c]);
      } else {
        ids.push_back(unk_id_);
      }
    }
  }

  std::string Decode(const std::vector<int64_t>& ids) const override {
    std::string out, bytes;
    // Byte pieces accumulate; a run is emitted as text once complete, invalid bytes as U+FFFD.
    // An incomplete character at the very end stays raw so streaming callers can wait for it.
    auto flush_bytes = [&](bool at_end) {
      for (size_t i = 0; i < bytes.size();) {
        const size_t len = Utf8Length(static_cast<unsigned char>(bytes[i]));
        if (ValidUtf8At(bytes, i, len)) {
          out.append(bytes, i, len);
          i += len;
        } else if (at_end && i + len > bytes.size()) {
          out.append(bytes, i, std::string::npos);
          break;
        } else {
          out += "\xEF\xBF\xBD";
          i += 1;
        }
      }
      bytes.clear();
    };
    bool first = true;
    for (int64_t id : ids) {
      Check(id >= 0 && id < vocab_size(), "tokenizer: id " + std::to_string(id) + " out of range");
      const Piece& p = pieces_[id];
      if (p.type == kByte) {
        bytes.push_back(static_cast<char>(std::stoi(p.text.substr(3, 2), nullptr, 16)));
        first = false;
        continue;
      }
      flush_bytes(false);
      if (p.type == kControl) continue;
      std::string text = p.type == kUnknown ? unk_surface_ : p.text;
      if (escape_whitespaces_) text = ReplaceAll(text, kSpace, " ");
      if (first && add_dummy_prefix_ && !text.empty() && text[0] == ' ') text.erase(0, 1);
      first = false;
      out += text;
    }
    flush_bytes(true);
    return out;
  }

  int64_t vocab_size() const override { return static_cast<int64_t>(pieces_.size()); }
  int64_t bos_id() const override { return bos_id_; }
  int64_t eos_id() const override { return eos_id_; }

 private:
  // One pass into a new string: replacing in place would shift the rest of the text at every
  // match (" " -> "\u2581" grows it), quadratic in the length of an upload.
  static std::string ReplaceAll(const std::string& s, const std::string& from, const std::string& to) {
    std::string out;
    out.reserve(s.size());
    size_t start = 0;
    for (size_t at = s.find(from); at != std::string::npos; at = s.find(from, start)) {
      out.append(s, start, at - start);
      out += to;
      start = at + from.size();
    }
    out.append(s, start, std::string::npos);
    return out;
  }

  // Identity normalisation plus sentencepiece's whitespace handling.
  std::string Normalize(const std::string& text) const {
    std::string s = text;
    if (remove_extra_whitespaces_) {
      std::string collapsed;
      for (char c : s) {
        if (c == ' ' && (collapsed.empty() || collapsed.back() == ' ')) continue;
        collapsed.push_back(c);
      }
      while (!collapsed.empty() && collapsed.back() == ' ') collapsed.pop_back();
      s = collapsed;
    }
    if (s.empty()) return s;
    if (add_dummy_prefix_) s = " " + s;
    if (escape_whitespaces_) s = ReplaceAll(s, " ", kSpace);
    return s;
  }

  void Parse(const std::string& data, const std::string& path) {
    WireReader top(data.data(), data.size(), path);
    int model_type = 1;  // UNIGRAM is the proto default
    std::string normalizer_name, charsmap;
    bool byte_fallback_flag = false;
    while (!top.done()) {
      uint32_t field, wire;
      top.Next(&field, &wire);
      if (field == 1 && wire == 2) {  // SentencePiece
        const std::string bytes = top.Bytes();
        WireReader r(bytes.data(), bytes.size(), path);
        Piece p;
        while (!r.done()) {
          uint32_t f, w;
          r.Next(&f, &w);
          if (f == 1 && w == 2) p.text = r.Bytes();
          else if (f == 2 && w == 5) p.score = r.Fixed32Float();
          else if (f == 3 && w == 0) p.type = static_cast<int>(r.Varint());
          else r.Skip(w);
        }
        pieces_.push_back(std::move(p));
      } else if (field == 2 && wire == 2) {  // TrainerSpec
        const std::string bytes = top.Bytes();
        WireReader r(bytes.data(), bytes.size(), path);
        while (!r.done()) {
          uint32_t f, w;
          r.Next(&f, &w);
          if (f == 3 && w == 0) model_type = static_cast<int>(r.Varint());
          else if (f == 35 && w == 0) byte_fallback_flag = r.Varint() != 0;
          else if (f == 44 && w == 2) unk_surface_ = r.Bytes();
          else r.Skip(w);
        }
      } else if (field == 3 && wire == 2) {  // NormalizerSpec
        const std::string bytes = top.Bytes();
        WireReader r(bytes.data(), bytes.size(), path);
        while (!r.done()) {
          uint32_t f, w;
          r.Next(&f, &w);
          if (f == 1 && w == 2) normalizer_name = r.Bytes();
          else if (f == 2 && w == 2) charsmap = r.Bytes();
          else if (f == 3 && w == 0) add_dummy_prefix_ = r.Varint() != 0;
          else if (f == 4 && w == 0) remove_extra_whitespaces_ = r.Varint() != 0;
          else if (f == 5 && w == 0) escape_whitespaces_ = r.Varint() != 0;
          else r.Skip(w);
        }
      } else {
        top.Skip(wire);
      }
    }
    if (pieces_.empty()) top.Fail("no pieces");
    if (model_type != 2) {
      throw ModelError(path + ": only BPE sentencepiece models are supported (model_type " +
                       std::to_string(model_type) + "); train with --model_type=bpe");
    }
    if (!charsmap.empty() && normalizer_name != "identity") {
      throw ModelError(path + ": normalizer '" + normalizer_name +
                       "' is not supported; train with --normalization_rule_name=identity "
                       "(as Llama-2's tokenizer is)");
    }
    byte_ids_.fill(-1);
    int byte_pieces = 0;
    for (size_t id = 0; id < pieces_.size(); ++id) {
      const Piece& p = pieces_[id];
      lookup_.emplace(p.text, static_cast<int64_t>(id));
      if (p.type == kNormal || p.type == kUserDefined) mergeable_.emplace(p.text, id);
      if (p.type == kUserDefined) user_defined_.push_back(p.text);
      if (p.type == kUnknown) unk_id_ = static_cast<int64_t>(id);
      if (p.type == kControl && p.text == "<s>") bos_id_ = static_cast<int64_t>(id);
      if (p.type == kControl && p.text == "</s>") eos_id_ = static_cast<int64_t>(id);
      if (p.type == kByte) {
        // Exactly "<0xHH>", two hex digits: std::stoi alone takes "<0x-1>" (a write before the
        // table) and throws a non-model error on "<0xZZ>".
        const auto hex = [](char c) { return std::isxdigit(static_cast<unsigned char>(c)) != 0; };
        if (p.text.size() != 6 || p.text.compare(0, 3, "<0x") != 0 || p.text[5] != '>' ||
            !hex(p.text[3]) || !hex(p.text[4])) {
          top.Fail("malformed byte piece '" + p.text.substr(0, 16) + "' (want <0xHH>)");
        }
        const int byte = std::stoi(p.text.substr(3, 2), nullptr, 16);
        if (byte_ids_[byte] >= 0) top.Fail("byte piece " + p.text + " appears twice");
        byte_ids_[byte] = static_cast<int64_t>(id);
        ++byte_pieces;
      }
    }
    split_at_spaces_ = user_defined_.empty() && escape_whitespaces_;
    const size_t space = std::strlen(kSpace);
    for (const auto& [text, id] : mergeable_) {
      size_t after = 0;  // past the leading spaces
      while (text.compare(after, space, kSpace) == 0) after += space;
      if (after < text.size() && text.find(kSpace, after) != std::string::npos) split_at_spaces_ = false;
    }
    byte_fallback_ = byte_fallback_flag && byte_pieces == 256;
    if (byte_fallback_flag && byte_pieces != 256) top.Fail("byte_fallback without 256 byte pieces");
    if (!byte_fallback_ && unk_id_ < 0) top.Fail("no <unk> piece");
  }

  std::vector<Piece> pieces_;
  std::unordered_map<std::string, int64_t> lookup_;    // every piece
  std::unordered_map<std::string, size_t> mergeable_;  // NORMAL and USER_DEFINED pieces
  std::vector<std::string> user_defined_;
  // True when no mergeable piece holds a space (kSpace) after a character that is not one (runs
  // of spaces are fine) and there are no user-defined pieces: then no merge crosses a word start
  // and Encode works word by word.
  bool split_at_spaces_ = false;
  static constexpr size_t kMaxRememberedWords = 1 << 16;
  std::array<int64_t, 256> byte_ids_{};
  bool byte_fallback_ = false;
  bool add_dummy_prefix_ = true;
  bool remove_extra_whitespaces_ = true;
  bool escape_whitespaces_ = true;
  std::string unk_surface_ = " \xE2\x81\x87 ";
  int64_t unk_id_ = -1, bos_id_ = -1, eos_id_ = -1;
};

}  // namespace

std::unique_ptr<Tokenizer> LoadSentencePieceTokenizer(const std::string& path) {
  return std::make_unique<SentencePieceTokenizer>(path);
}

std::unique_ptr<Tokenizer> LoadTokenizer(const std::string& dir) {
  const std::string path = JoinPath(dir, "tokenizer.model");
  if (!FileExists(path)) return nullptr;
  return LoadSentencePieceTokenizer(path);
}

}  // namespace sharedllm
