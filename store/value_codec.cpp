#include "store/value_codec.h"

#include <cstring>
#include <set>
#include <limits>
#include <utility>

#include <nlohmann/json.hpp>

#include "absl/strings/escaping.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "store/crc32c.h"
#include "store/key_codec.h"

// Integers are written with memcpy of the host representation: the format is little-endian.
static_assert(__BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__, "the value format assumes a LE host");

namespace sharedllm::treestore {
namespace {

template <typename T>
void AppendLE(std::string* out, T v) {
  char bytes[sizeof(T)];
  std::memcpy(bytes, &v, sizeof(T));
  out->append(bytes, sizeof(T));
}

// Reads a body front to back; a read past the end sets !ok().
class ByteReader {
 public:
  explicit ByteReader(absl::string_view bytes) : rest_(bytes) {}
  template <typename T>
  T Read() {
    T v{};
    if (!ok_ || rest_.size() < sizeof(T)) {
      ok_ = false;
      return v;
    }
    std::memcpy(&v, rest_.data(), sizeof(T));
    rest_.remove_prefix(sizeof(T));
    return v;
  }
  absl::string_view Bytes(uint64_t n) {
    if (!ok_ || rest_.size() < n) {
      ok_ = false;
      return {};
    }
    absl::string_view s = rest_.substr(0, n);
    rest_.remove_prefix(n);
    return s;
  }
  bool ok() const { return ok_; }
  bool done() const { return ok_ && rest_.empty(); }

 private:
  absl::string_view rest_;
  bool ok_ = true;
};

std::string NewPayload() { return std::string(1, static_cast<char>(kFormatVersion)); }

void AppendTensor(const TensorBlob& t, std::string* out) {
  out->push_back(static_cast<char>(t.dtype));
  out->push_back(static_cast<char>(t.shape.size()));
  for (int64_t d : t.shape) AppendLE<int64_t>(out, d);
  AppendLE<uint64_t>(out, t.data.size());
  out->append(t.data);
}

absl::Status ReadTensor(ByteReader* r, absl::string_view what, TensorBlob* t) {
  const auto dtype = static_cast<DType>(r->Read<uint8_t>());
  const uint8_t rank = r->Read<uint8_t>();
  if (!r->ok()) return absl::DataLossError(absl::StrCat(what, ": truncated tensor header"));
  if (ElementSize(dtype) == 0) {
    return absl::DataLossError(
        absl::StrCat(what, ": unknown dtype ", static_cast<int>(static_cast<uint8_t>(dtype))));
  }
  if (rank > kMaxRank) return absl::DataLossError(absl::StrCat(what, ": rank ", rank));
  t->dtype = dtype;
  t->shape.resize(rank);
  for (auto& d : t->shape) d = r->Read<int64_t>();
  const uint64_t nbytes = r->Read<uint64_t>();
  const absl::string_view data = r->Bytes(nbytes);
  if (!r->ok()) return absl::DataLossError(absl::StrCat(what, ": truncated tensor"));
  t->data.assign(data.data(), data.size());
  if (absl::Status s = ValidateTensor(what, *t); !s.ok()) return absl::DataLossError(s.message());
  return absl::OkStatus();
}

absl::Status Trailing(absl::string_view what) {
  return absl::DataLossError(absl::StrCat(what, ": unexpected bytes after the value"));
}

}  // namespace

absl::Status ValidateTensor(absl::string_view what, const TensorBlob& t) {
  if (ElementSize(t.dtype) == 0) {
    return absl::InvalidArgumentError(
        absl::StrCat(what, ": unknown dtype ", static_cast<int>(static_cast<uint8_t>(t.dtype))));
  }
  if (t.shape.size() > kMaxRank) {
    return absl::InvalidArgumentError(
        absl::StrCat(what, ": rank ", t.shape.size(), " exceeds ", kMaxRank));
  }
  // numel with overflow checks: a corrupt shape must not wrap around to a plausible size.
  uint64_t numel = 1;
  for (int64_t d : t.shape) {
    if (d < 0) return absl::InvalidArgumentError(absl::StrCat(what, ": negative dim ", d));
    if (d != 0 && numel > std::numeric_limits<uint64_t>::max() / 16 / static_cast<uint64_t>(d)) {
      return absl::InvalidArgumentError(absl::StrCat(what, ": shape overflows"));
    }
    numel *= static_cast<uint64_t>(d);
  }
  const uint64_t expected = numel * ElementSize(t.dtype);
  if (t.data.size() != expected) {
    return absl::InvalidArgumentError(absl::StrCat(what, ": ", DTypeName(t.dtype), " [",
                                                   absl::StrJoin(t.shape, ","), "] needs ",
                                                   expected, " bytes, has ", t.data.size()));
  }
  return absl::OkStatus();
}

absl::Status ValidateLayerKv(absl::string_view what, const TensorBlob& k, const TensorBlob& v,
                             const TensorBlob& k_scale, const TensorBlob& v_scale) {
  if (k.dtype != v.dtype) {
    return absl::InvalidArgumentError(
        absl::StrCat(what, ": K is ", DTypeName(k.dtype), " but V is ", DTypeName(v.dtype)));
  }
  if (k.dtype == DType::kI64) {
    return absl::InvalidArgumentError(absl::StrCat(what, ": K and V cannot be i64"));
  }
  const bool scaled = k.dtype == DType::kI8;
  auto check = [&](const char* name, const TensorBlob& t, const TensorBlob& scale) -> absl::Status {
    const bool has_scale = !scale.shape.empty() || !scale.data.empty();
    if (!scaled) {
      if (!has_scale) return absl::OkStatus();
      return absl::InvalidArgumentError(
          absl::StrCat(what, ": ", name, " is ", DTypeName(t.dtype), " and has a scale"));
    }
    if (t.shape.size() != 3) {
      return absl::InvalidArgumentError(absl::StrCat(what, ": int8 ", name, " of rank ", t.shape.size(),
                                                     "; [heads, kept, head_dim] expected"));
    }
    const std::vector<int64_t> want = {t.shape[0], 1, t.shape[2]};
    // A floating-point scale, or a power of two held as its exponent (i8).
    const bool known = scale.dtype == DType::kF32 || scale.dtype == DType::kBF16 ||
                       scale.dtype == DType::kF16 || scale.dtype == DType::kI8;
    if (scale.shape != want || !known) {
      return absl::InvalidArgumentError(absl::StrCat(
          what, ": int8 ", name, " needs a scale (floating point or i8 exponent) [", absl::StrJoin(want, ","),
          "], has ", DTypeName(scale.dtype), " [", absl::StrJoin(scale.shape, ","), "]"));
    }
    return absl::OkStatus();
  };
  if (absl::Status s = check("K", k, k_scale); !s.ok()) return s;
  return check("V", v, v_scale);
}

absl::StatusOr<uint16_t> ValidateNodeRecord(const NodeRecord& node, int64_t chunk_index,
                                            size_t num_tokens) {
  const std::string what =
      absl::StrCat("node (chunk ", node.chunk, ", level ", node.level, ", index ", node.index, ")");
  if (node.chunk != chunk_index) {
    return absl::InvalidArgumentError(absl::StrCat(what, " is passed with chunk ", chunk_index));
  }
  absl::StatusOr<uint16_t> flat = FlatNodeIndex(node.level, node.index);
  if (!flat.ok()) {
    return absl::InvalidArgumentError(absl::StrCat(what, ": ", flat.status().message()));
  }
  if (node.begin < 0 || node.begin > node.end || node.end > static_cast<int64_t>(num_tokens)) {
    return absl::InvalidArgumentError(absl::StrCat(what, ": span [", node.begin, ", ", node.end,
                                                   ") is not within the chunk's ", num_tokens,
                                                   " tokens"));
  }
  if (node.k.size() != node.v.size()) {
    return absl::InvalidArgumentError(
        absl::StrCat(what, ": ", node.k.size(), " K layers but ", node.v.size(), " V layers"));
  }
  if (static_cast<int64_t>(node.k.size()) >= kMaxLayers) {
    return absl::InvalidArgumentError(absl::StrCat(what, ": too many layers"));
  }
  if (absl::Status s = ValidateTensor(absl::StrCat(what, " search vector"), node.search); !s.ok()) {
    return s;
  }
  for (size_t l = 0; l < node.k.size(); ++l) {
    if (absl::Status s = ValidateTensor(absl::StrCat(what, " K layer ", l), node.k[l]); !s.ok()) {
      return s;
    }
    if (absl::Status s = ValidateTensor(absl::StrCat(what, " V layer ", l), node.v[l]); !s.ok()) {
      return s;
    }
    const TensorBlob none;
    const TensorBlob& ks = l < node.k_scale.size() ? node.k_scale[l] : none;
    const TensorBlob& vs = l < node.v_scale.size() ? node.v_scale[l] : none;
    for (const TensorBlob* scale : {&ks, &vs}) {
      if (scale == &none) continue;
      if (absl::Status s = ValidateTensor(absl::StrCat(what, " scale of layer ", l), *scale); !s.ok()) {
        return s;
      }
    }
    if (absl::Status s = ValidateLayerKv(absl::StrCat(what, " layer ", l), node.k[l], node.v[l], ks, vs);
        !s.ok()) {
      return s;
    }
  }
  if (node.k_scale.size() > node.k.size() || node.v_scale.size() > node.v.size()) {
    return absl::InvalidArgumentError(absl::StrCat(what, ": more scales than layers"));
  }
  return *flat;
}

std::string Seal(std::string payload) {
  AppendLE<uint32_t>(&payload, Crc32c(payload));
  return payload;
}

absl::StatusOr<absl::string_view> Unseal(absl::string_view value) {
  if (value.size() < 1 + sizeof(uint32_t)) {
    return absl::DataLossError(absl::StrCat("value of ", value.size(), " bytes is too short"));
  }
  const absl::string_view payload = value.substr(0, value.size() - sizeof(uint32_t));
  uint32_t stored;
  std::memcpy(&stored, value.data() + payload.size(), sizeof(stored));
  const uint32_t computed = Crc32c(payload);
  if (stored != computed) {
    return absl::DataLossError(
        absl::StrFormat("checksum mismatch (stored crc32c %08x, computed %08x over %d bytes)",
                        stored, computed, payload.size()));
  }
  if (static_cast<uint8_t>(payload[0]) != kFormatVersion) {
    return absl::DataLossError(absl::StrCat("unknown value format version ",
                                            static_cast<int>(static_cast<uint8_t>(payload[0]))));
  }
  return payload.substr(1);
}

std::string EncodeTokens(const std::vector<int64_t>& tokens) {
  TensorBlob t{DType::kI64, {static_cast<int64_t>(tokens.size())}, {}};
  t.data.assign(reinterpret_cast<const char*>(tokens.data()), tokens.size() * sizeof(int64_t));
  std::string payload = NewPayload();
  AppendTensor(t, &payload);
  return Seal(std::move(payload));
}

absl::StatusOr<std::vector<int64_t>> DecodeTokens(absl::string_view value) {
  absl::StatusOr<absl::string_view> body = Unseal(value);
  if (!body.ok()) return body.status();
  ByteReader r(*body);
  TensorBlob t;
  if (absl::Status s = ReadTensor(&r, "tokens", &t); !s.ok()) return s;
  if (!r.done()) return Trailing("tokens");
  if (t.dtype != DType::kI64 || t.shape.size() != 1) {
    return absl::DataLossError(absl::StrCat("tokens: expected i64 [n], found ", DTypeName(t.dtype),
                                            " of rank ", t.shape.size()));
  }
  std::vector<int64_t> tokens(t.shape[0]);
  std::memcpy(tokens.data(), t.data.data(), t.data.size());
  return tokens;
}

std::string EncodeNodeVector(const NodeVectorValue& node) {
  std::string payload = NewPayload();
  AppendLE<int64_t>(&payload, node.begin);
  AppendLE<int64_t>(&payload, node.end);
  AppendLE<uint16_t>(&payload, node.num_layers);
  AppendTensor(node.search, &payload);
  return Seal(std::move(payload));
}

absl::StatusOr<NodeVectorValue> DecodeNodeVector(absl::string_view value) {
  absl::StatusOr<absl::string_view> body = Unseal(value);
  if (!body.ok()) return body.status();
  ByteReader r(*body);
  NodeVectorValue node;
  node.begin = r.Read<int64_t>();
  node.end = r.Read<int64_t>();
  node.num_layers = r.Read<uint16_t>();
  if (!r.ok()) return absl::DataLossError("node: truncated header");
  if (absl::Status s = ReadTensor(&r, "search vector", &node.search); !s.ok()) return s;
  if (!r.done()) return Trailing("node");
  return node;
}

std::string EncodeLayerKv(const TensorBlob& k, const TensorBlob& v, const TensorBlob* k_scale,
                          const TensorBlob* v_scale) {
  std::string payload = NewPayload();
  payload.reserve(payload.size() + k.data.size() + v.data.size() + 128);
  AppendTensor(k, &payload);
  AppendTensor(v, &payload);
  if (k_scale != nullptr) AppendTensor(*k_scale, &payload);
  if (v_scale != nullptr) AppendTensor(*v_scale, &payload);
  return Seal(std::move(payload));
}

absl::Status DecodeLayerKv(absl::string_view value, TensorBlob* k, TensorBlob* v, TensorBlob* k_scale,
                           TensorBlob* v_scale) {
  absl::StatusOr<absl::string_view> body = Unseal(value);
  if (!body.ok()) return body.status();
  ByteReader r(*body);
  if (absl::Status s = ReadTensor(&r, "K", k); !s.ok()) return s;
  if (absl::Status s = ReadTensor(&r, "V", v); !s.ok()) return s;
  *k_scale = TensorBlob();
  *v_scale = TensorBlob();
  if (k->dtype == DType::kI8) {
    if (absl::Status s = ReadTensor(&r, "K scale", k_scale); !s.ok()) return s;
    if (absl::Status s = ReadTensor(&r, "V scale", v_scale); !s.ok()) return s;
  }
  if (!r.done()) return Trailing("K/V");
  if (absl::Status s = ValidateLayerKv("K/V", *k, *v, *k_scale, *v_scale); !s.ok()) {
    return absl::DataLossError(s.message());
  }
  return absl::OkStatus();
}

absl::Status ValidateChunkTerms(const ChunkTerms& terms) {
  std::set<absl::string_view> seen;
  for (const auto& [term, count] : terms) {
    if (term.empty() || term.size() > 255) {
      return absl::InvalidArgumentError(absl::StrCat("a term of ", term.size(), " bytes (1..255)"));
    }
    if (count < 1 || count > 65535) {
      return absl::InvalidArgumentError(absl::StrCat("term count ", count, " (1..65535)"));
    }
    if (!seen.insert(term).second) {
      return absl::InvalidArgumentError(absl::StrCat("term \"", absl::CHexEscape(term),
                                                     "\" is given twice"));
    }
  }
  return absl::OkStatus();
}

std::string EncodeChunkTerms(const ChunkTerms& terms) {
  std::string payload = NewPayload();
  AppendLE<uint32_t>(&payload, static_cast<uint32_t>(terms.size()));
  for (const auto& [term, count] : terms) {
    AppendLE<uint16_t>(&payload, static_cast<uint16_t>(term.size()));
    payload += term;
    AppendLE<uint16_t>(&payload, static_cast<uint16_t>(count));
  }
  return Seal(std::move(payload));
}

absl::StatusOr<ChunkTerms> DecodeChunkTerms(absl::string_view value) {
  absl::StatusOr<absl::string_view> body = Unseal(value);
  if (!body.ok()) return body.status();
  ByteReader r(*body);
  const uint32_t n = r.Read<uint32_t>();
  // Each term takes at least 5 bytes: a count beyond that is a damaged header, not an allocation.
  if (!r.ok() || n > body->size() / 5) return absl::DataLossError("terms: bad count");
  ChunkTerms terms;
  terms.reserve(n);
  for (uint32_t i = 0; i < n; ++i) {
    const uint16_t length = r.Read<uint16_t>();
    const absl::string_view term = r.Bytes(length);
    const uint16_t count = r.Read<uint16_t>();
    if (!r.ok()) return absl::DataLossError("terms: truncated");
    terms.emplace_back(std::string(term), count);
  }
  if (!r.done()) return Trailing("terms");
  // Only what PutChunk could have written: a term of 1-255 bytes, once, counted at least once.
  if (absl::Status s = ValidateChunkTerms(terms); !s.ok()) {
    return absl::DataLossError(absl::StrCat("terms: ", s.message()));
  }
  return terms;
}

std::string EncodePosting(const PostingValue& posting) {
  std::string payload = NewPayload();
  AppendLE<uint16_t>(&payload, posting.count);
  AppendLE<uint32_t>(&payload, posting.length);
  return Seal(std::move(payload));
}

absl::StatusOr<PostingValue> DecodePosting(absl::string_view value) {
  absl::StatusOr<absl::string_view> body = Unseal(value);
  if (!body.ok()) return body.status();
  ByteReader r(*body);
  PostingValue p;
  p.count = r.Read<uint16_t>();
  p.length = r.Read<uint32_t>();
  if (!r.done()) return absl::DataLossError("posting: expected 6 bytes");
  return p;
}

std::string EncodeDocumentMeta(const DocumentMeta& m) {
  const nlohmann::json j = {
      {"tenant", m.tenant},
      {"document_id", m.document_id},
      {"collection_id", m.collection_id},
      {"name", m.name},
      {"sha256", m.sha256},
      {"size_bytes", m.size_bytes},
      {"num_tokens", m.num_tokens},
      {"num_chunks", m.num_chunks},
      {"state", m.state},
      {"model_fingerprint", m.model_fingerprint},
      {"created_unix_ms", m.created_unix_ms},
      {"updated_unix_ms", m.updated_unix_ms},
      {"chunks_done", m.chunks_done},
      {"error", m.error},
  };
  std::string payload = NewPayload();
  payload += j.dump();
  return Seal(std::move(payload));
}

absl::StatusOr<DocumentMeta> DecodeDocumentMeta(absl::string_view value) {
  absl::StatusOr<absl::string_view> body = Unseal(value);
  if (!body.ok()) return body.status();
  // nlohmann throws on malformed input and on type mismatches; both mean a bad record here.
  try {
    const nlohmann::json j = nlohmann::json::parse(body->begin(), body->end());
    DocumentMeta m;
    // Fields absent from an older record keep their defaults.
    m.tenant = j.value("tenant", m.tenant);
    m.document_id = j.value("document_id", m.document_id);
    m.collection_id = j.value("collection_id", m.collection_id);
    m.name = j.value("name", m.name);
    m.sha256 = j.value("sha256", m.sha256);
    // An integer field must hold an integer: nlohmann would convert 5e30 to int64 (undefined
    // behaviour, found by fuzz/value_codec_fuzz) and 2.5 by truncation.
    const auto integer = [&](const char* key, int64_t fallback) -> int64_t {
      const auto it = j.find(key);
      if (it == j.end()) return fallback;
      if (!it->is_number_integer()) {
        throw nlohmann::json::type_error::create(302, std::string(key) + " is not an integer", &j);
      }
      return it->get<int64_t>();
    };
    m.size_bytes = integer("size_bytes", m.size_bytes);
    m.num_tokens = integer("num_tokens", m.num_tokens);
    m.num_chunks = integer("num_chunks", m.num_chunks);
    m.state = j.value("state", m.state);
    m.model_fingerprint = j.value("model_fingerprint", m.model_fingerprint);
    m.created_unix_ms = integer("created_unix_ms", m.created_unix_ms);
    m.updated_unix_ms = integer("updated_unix_ms", m.updated_unix_ms);
    m.chunks_done = integer("chunks_done", m.chunks_done);
    m.error = j.value("error", m.error);
    return m;
  } catch (const nlohmann::json::exception& e) {
    return absl::DataLossError(absl::StrCat("document metadata: ", e.what()));
  }
}

std::string EncodeJob(const std::string& json) {
  std::string payload = NewPayload();
  payload += json;
  return Seal(std::move(payload));
}

absl::StatusOr<std::string> DecodeJob(absl::string_view value) {
  absl::StatusOr<absl::string_view> body = Unseal(value);
  if (!body.ok()) return body.status();
  return std::string(*body);
}

}  // namespace sharedllm::treestore
