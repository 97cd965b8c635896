// Byte encodings shared by the service: lowercase hex, UTF-8 checks and SHA-256 (OpenSSL).
#pragma once

#include <memory>
#include <string>
#include <string_view>

namespace sharedllm::service {

// "ab\x01" -> "616201".
std::string HexEncode(std::string_view bytes);
// Inverse of HexEncode; stops at the first pair that is not hex.
std::string HexDecode(std::string_view hex);
// A client string as it may appear in an error or a log line: at most `max` bytes, every byte
// outside printable ASCII as '?', and when cut, "... (N bytes)" after it. Ids, digests and service
// names are ASCII; anything else is shown, not trusted.
std::string Clip(std::string_view s, size_t max = 64);
// Length of the well-formed UTF-8 character at s[i] (1-4), or 0 where none starts: strict, as
// protobuf checks `string` fields (no overlong forms, surrogates or code points above U+10FFFF).
size_t Utf8CharLength(std::string_view s, size_t i);
bool ValidUtf8(std::string_view s);
// `s` with every byte that starts no well-formed character replaced by U+FFFD.
std::string ToValidUtf8(std::string_view s);
// Lowercase hex SHA-256 of `data`.
std::string Sha256Hex(std::string_view data);

// Incremental SHA-256 (OpenSSL EVP): Update with the pieces in order, then HexDigest once.
class Sha256Hasher {
 public:
  Sha256Hasher();
  ~Sha256Hasher();
  Sha256Hasher(const Sha256Hasher&) = delete;
  Sha256Hasher& operator=(const Sha256Hasher&) = delete;
  void Update(const void* data, size_t size);
  // Lowercase hex of the digest; the hasher is spent afterwards.
  std::string HexDigest();

 private:
  struct Context;
  std::unique_ptr<Context> context_;
};

}  // namespace sharedllm::service
