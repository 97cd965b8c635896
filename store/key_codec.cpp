#include "store/key_codec.h"

#include <utility>

#include "absl/strings/escaping.h"
#include "absl/strings/str_cat.h"

namespace sharedllm::treestore {

absl::Status ValidateId(absl::string_view what, const std::string& id) {
  if (id.empty()) return absl::InvalidArgumentError(absl::StrCat(what, " id is empty"));
  if (id.size() > kMaxIdBytes) {
    return absl::InvalidArgumentError(
        absl::StrCat(what, " id has ", id.size(), " bytes; the limit is ", kMaxIdBytes));
  }
  return absl::OkStatus();
}

KeyBuilder& KeyBuilder::Str(absl::string_view s) {
  // Ids are validated to <= kMaxIdBytes before they reach a key, so the length fits a u16.
  U16(static_cast<uint16_t>(s.size()));
  key_.append(s.data(), s.size());
  return *this;
}

KeyBuilder& KeyBuilder::U32(uint32_t v) {
  for (int shift = 24; shift >= 0; shift -= 8) key_.push_back(static_cast<char>(v >> shift));
  return *this;
}

KeyBuilder& KeyBuilder::U16(uint16_t v) {
  key_.push_back(static_cast<char>(v >> 8));
  key_.push_back(static_cast<char>(v));
  return *this;
}

absl::string_view KeyReader::Str() {
  const size_t n = U16();
  if (!ok_ || rest_.size() < n) {
    ok_ = false;
    return {};
  }
  absl::string_view s = rest_.substr(0, n);
  rest_.remove_prefix(n);
  return s;
}

uint32_t KeyReader::U32() {
  if (!ok_ || rest_.size() < 4) {
    ok_ = false;
    return 0;
  }
  uint32_t v = 0;
  for (int i = 0; i < 4; ++i) v = (v << 8) | static_cast<uint8_t>(rest_[i]);
  rest_.remove_prefix(4);
  return v;
}

uint16_t KeyReader::U16() {
  if (!ok_ || rest_.size() < 2) {
    ok_ = false;
    return 0;
  }
  const uint16_t v =
      static_cast<uint16_t>(static_cast<uint8_t>(rest_[0]) << 8 | static_cast<uint8_t>(rest_[1]));
  rest_.remove_prefix(2);
  return v;
}

std::string TenantPrefix(absl::string_view tenant) { return KeyBuilder().Str(tenant).Build(); }

std::string DocumentKey(absl::string_view tenant, absl::string_view document) {
  return KeyBuilder().Str(tenant).Str(document).Build();
}

std::string JobKey(absl::string_view tenant, absl::string_view job) {
  return KeyBuilder().Str(tenant).Str(job).Build();
}

std::string ChunkKey(absl::string_view tenant, absl::string_view document, uint32_t chunk) {
  return KeyBuilder().Str(tenant).Str(document).U32(chunk).Build();
}

std::string NodeKey(absl::string_view tenant, absl::string_view document, uint32_t chunk,
                    uint16_t node) {
  return KeyBuilder().Str(tenant).Str(document).U32(chunk).U16(node).Build();
}

std::string LayerKey(absl::string_view tenant, absl::string_view document, uint32_t chunk,
                     uint16_t node, uint16_t layer) {
  return KeyBuilder().Str(tenant).Str(document).U32(chunk).U16(node).U16(layer).Build();
}

absl::StatusOr<uint16_t> FlatNodeIndex(int64_t level, int64_t index) {
  if (level < 1 || level > kMaxLevel) {
    return absl::InvalidArgumentError(
        absl::StrCat("node level ", level, " is outside 1..", kMaxLevel));
  }
  if (index < 0 || index >= (int64_t{1} << level)) {
    return absl::InvalidArgumentError(absl::StrCat("node index ", index, " is outside 0..",
                                                   (int64_t{1} << level) - 1, " at level ", level));
  }
  return static_cast<uint16_t>((int64_t{1} << level) - 2 + index);
}

void LevelAndIndex(uint16_t flat, int64_t* level, int64_t* index) {
  // Level l holds flat indices [2^l - 2, 2^(l+1) - 2).
  int64_t l = 1;
  while ((int64_t{1} << (l + 1)) - 2 <= flat) ++l;
  *level = l;
  *index = flat - ((int64_t{1} << l) - 2);
}

std::string PrefixSuccessor(absl::string_view prefix) {
  std::string s(prefix);
  while (!s.empty()) {
    auto& last = reinterpret_cast<unsigned char&>(s.back());
    if (last != 0xff) {
      ++last;
      return s;
    }
    s.pop_back();
  }
  return s;
}

std::string TermPrefix(absl::string_view tenant, absl::string_view term) {
  return KeyBuilder().Str(tenant).Str(term).Build();
}

std::string TermPrefix(absl::string_view tenant, absl::string_view term, absl::string_view collection) {
  return KeyBuilder().Str(tenant).Str(term).Str(collection).Build();
}

std::string TermDocumentPrefix(absl::string_view tenant, absl::string_view term,
                               absl::string_view collection, absl::string_view document) {
  return KeyBuilder().Str(tenant).Str(term).Str(collection).Str(document).Build();
}

std::string PostingKey(absl::string_view tenant, absl::string_view term, absl::string_view collection,
                       absl::string_view document, uint32_t chunk) {
  return KeyBuilder().Str(tenant).Str(term).Str(collection).Str(document).U32(chunk).Build();
}

std::string DescribeKey(absl::string_view column_family, absl::string_view key) {
  std::string out = absl::StrCat(column_family, " key");
  KeyReader r(key);
  if (column_family == "postings") {
    const absl::string_view tenant = r.Str();
    const absl::string_view term = r.Str();
    const absl::string_view collection = r.Str();
    const absl::string_view document = r.Str();
    if (r.ok()) {
      absl::StrAppend(&out, " tenant \"", absl::CHexEscape(tenant), "\" term \"",
                      absl::CHexEscape(term), "\" collection \"", absl::CHexEscape(collection),
                      "\" document \"", absl::CHexEscape(document), "\"");
      if (r.remaining() >= 4) absl::StrAppend(&out, " chunk ", r.U32());
    }
    absl::StrAppend(&out, " [0x", absl::BytesToHexString(key), "]");
    return out;
  }
  const absl::string_view tenant = r.Str();
  const absl::string_view second = r.Str();
  if (r.ok()) {
    const bool job = column_family == "jobs";
    absl::StrAppend(&out, " tenant \"", absl::CHexEscape(tenant), "\" ", job ? "job" : "document",
                    " \"", absl::CHexEscape(second), "\"");
    if (r.remaining() >= 4) absl::StrAppend(&out, " chunk ", r.U32());
    if (r.remaining() >= 2) {
      const uint16_t node = r.U16();
      int64_t level = 0, index = 0;
      LevelAndIndex(node, &level, &index);
      absl::StrAppend(&out, " node ", node, " (level ", level, ", index ", index, ")");
    }
    if (r.remaining() >= 2) absl::StrAppend(&out, " layer ", r.U16());
    if (r.remaining() > 0) absl::StrAppend(&out, " +", r.remaining(), " bytes");
  }
  absl::StrAppend(&out, " [0x", absl::BytesToHexString(key), "]");
  return out;
}

std::string EncodePageToken(absl::string_view last_document_id) {
  return absl::BytesToHexString(last_document_id);
}

absl::StatusOr<std::string> DecodePageToken(const std::string& token) {
  bool ok = token.size() % 2 == 0 && token.size() <= 2 * kMaxIdBytes;
  for (char c : token) {
    ok = ok && ((c >= '0' && c <= '9') || (c >= 'a' && c <= 'f') || (c >= 'A' && c <= 'F'));
  }
  if (!ok) return absl::InvalidArgumentError("malformed page token");
  return absl::HexStringToBytes(token);
}

}  // namespace sharedllm::treestore
