// Authentication and transport security of the service (docs/user/security.md): API keys that
// map to tenants, TLS / mTLS server credentials, id validation and absl <-> gRPC status mapping.
// The tenant always comes from the credentials, never from a request field.
#pragma once

#include <grpcpp/grpcpp.h>

#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"

namespace sharedllm::service {

class ApiKeys {
 public:
  static constexpr size_t kMinKeyLength = 16;
  static constexpr size_t kMaxKeyLength = 512;
  // The tenant of every caller when keys are disabled.
  static constexpr const char* kDefaultTenant = "default";

  // Reads a keys file: one "KEY TENANT" per line (separated by spaces or tabs), '#' starts a
  // comment line, blank lines are skipped. A key is 16-512 printable ASCII characters without
  // spaces; a tenant follows ValidId(). Several keys may map to one tenant (key rotation).
  // NOT_FOUND / PERMISSION_DENIED when the file cannot be read; INVALID_ARGUMENT naming the file
  // and line for a malformed line, a short key, a bad tenant, a duplicate key, or no keys at all.
  // Error messages never contain a key.
  static absl::StatusOr<ApiKeys> LoadFile(const std::string& path);
  // Parses the content of a keys file; `source` names it in error messages.
  static absl::StatusOr<ApiKeys> Parse(std::string_view content, const std::string& source);
  // Authentication off: every caller is tenant "default".
  static ApiKeys Disabled();

  bool enabled() const { return enabled_; }
  size_t size() const { return entries_.size(); }

  // The caller's tenant, from its metadata "authorization: Bearer KEY". UNAUTHENTICATED when the
  // metadata is missing, repeated, malformed or names an unknown key.
  absl::StatusOr<std::string> Authenticate(const grpc::ServerContext& context) const;
  // The same check on the value of the authorization header alone ("Bearer KEY"; the scheme is
  // case-insensitive). With keys disabled every value, even an empty one, gives "default".
  // The key is compared with every known key in constant time (over SHA-256 digests, so neither
  // the position of a mismatch nor the key's length leaks through timing).
  absl::StatusOr<std::string> TenantForAuthorization(std::string_view header_value) const;

 private:
  struct Entry {
    std::string digest;  // SHA-256 of the key, 32 bytes
    std::string tenant;
  };
  ApiKeys() = default;
  bool enabled_ = false;
  std::vector<Entry> entries_;
};

// Equality of two byte strings whose running time depends only on their lengths, never on where
// they differ (CRYPTO_memcmp).
bool ConstantTimeEquals(std::string_view a, std::string_view b);

// Server credentials from PEM files:
// - cert empty: insecure (plaintext); key and client_ca must then be empty too.
// - cert + key: TLS. The certificate and private key are parsed and checked to match.
// - cert + key + client_ca: mutual TLS; clients must present a certificate signed by client_ca.
// Errors name the file: NOT_FOUND / PERMISSION_DENIED when it cannot be opened, INVALID_ARGUMENT
// when it holds no (parsable, unencrypted) PEM data, when key and certificate do not match, or when
// the combination of arguments is inconsistent.
absl::StatusOr<std::shared_ptr<grpc::ServerCredentials>> MakeServerCredentials(
    const std::string& cert, const std::string& key, const std::string& client_ca);

// Status mapping; the codes are numerically the same in absl and gRPC, so it is 1:1.
// The canonical name of a gRPC status code ("OK", ..., "UNAUTHENTICATED"); "UNKNOWN" when out of
// range. Codes are 0..kNumStatusCodes-1.
inline constexpr int kNumStatusCodes = 17;
const char* StatusCodeName(grpc::StatusCode code);

grpc::Status ToGrpcStatus(const absl::Status& status);
absl::Status FromGrpcStatus(const grpc::Status& status);

// Document, collection and tenant ids: 1-128 characters of [A-Za-z0-9._-], not starting with '.'.
inline constexpr size_t kMaxIdLength = 128;
bool ValidId(std::string_view id);

}  // namespace sharedllm::service
