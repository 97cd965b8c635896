// Byte encodings shared by the service: lowercase hex and SHA-256 (OpenSSL).
#pragma once

#include <string>
#include <string_view>

namespace sharedllm::service {

// "ab\x01" -> "616201".
std::string HexEncode(std::string_view bytes);
// Inverse of HexEncode; stops at the first pair that is not hex.
std::string HexDecode(std::string_view hex);
// Lowercase hex SHA-256 of `data`.
std::string Sha256Hex(std::string_view data);

}  // namespace sharedllm::service
