#include "service/auth.h"

#include <openssl/crypto.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/sha.h>
#include <openssl/x509.h>

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <iterator>
#include <memory>
#include <unordered_set>

#include "absl/strings/str_cat.h"

namespace sharedllm::service {
namespace {

constexpr size_t kMaxFileBytes = 16 << 20;

// Whole file; NOT_FOUND / PERMISSION_DENIED / INVALID_ARGUMENT with the path and the OS reason.
absl::StatusOr<std::string> ReadFile(const std::string& path, const std::string& what) {
  if (path.empty()) return absl::InvalidArgumentError(absl::StrCat(what, ": no file given"));
  errno = 0;
  std::unique_ptr<FILE, int (*)(FILE*)> f(std::fopen(path.c_str(), "rb"), &std::fclose);
  if (!f) {
    const int err = errno;
    const std::string msg =
        absl::StrCat("cannot read ", what, " '", path, "': ", std::strerror(err));
    if (err == ENOENT) return absl::NotFoundError(msg);
    if (err == EACCES || err == EPERM) return absl::PermissionDeniedError(msg);
    return absl::InvalidArgumentError(msg);
  }
  std::string content;
  char buf[65536];
  size_t n;
  while ((n = std::fread(buf, 1, sizeof buf, f.get())) > 0) {
    content.append(buf, n);
    if (content.size() > kMaxFileBytes) {
      return absl::InvalidArgumentError(
          absl::StrCat(what, " '", path, "' is larger than ", kMaxFileBytes, " bytes"));
    }
  }
  if (std::ferror(f.get())) {
    const int err = errno;
    return absl::InvalidArgumentError(
        absl::StrCat("cannot read ", what, " '", path, "': ", std::strerror(err ? err : EIO)));
  }
  return content;
}

std::string Sha256(std::string_view data) {
  unsigned char digest[SHA256_DIGEST_LENGTH];
  SHA256(reinterpret_cast<const unsigned char*>(data.data()), data.size(), digest);
  return std::string(reinterpret_cast<const char*>(digest), sizeof digest);
}

bool IsKeyChar(char c) { return c > ' ' && c < 0x7f; }  // printable ASCII, no space

// (Debian's abseil has its own absl::string_view, distinct from std::string_view, so these small
// helpers are written here rather than taken from absl/strings.)
bool IsSpace(char c) { return c == ' ' || c == '\t' || c == '\r' || c == '\n' || c == '\f' || c == '\v'; }

std::string_view StripLeading(std::string_view s) {
  while (!s.empty() && IsSpace(s.front())) s.remove_prefix(1);
  return s;
}

std::string_view Strip(std::string_view s) {
  s = StripLeading(s);
  while (!s.empty() && IsSpace(s.back())) s.remove_suffix(1);
  return s;
}

bool EqualsIgnoreCase(std::string_view a, std::string_view b) {
  if (a.size() != b.size()) return false;
  for (size_t i = 0; i < a.size(); ++i) {
    char x = a[i], y = b[i];
    if (x >= 'A' && x <= 'Z') x = static_cast<char>(x - 'A' + 'a');
    if (y >= 'A' && y <= 'Z') y = static_cast<char>(y - 'A' + 'a');
    if (x != y) return false;
  }
  return true;
}

// For error messages: printable ASCII as is, everything else as \xNN.
std::string Printable(std::string_view s) {
  std::string out;
  for (unsigned char c : s) {
    if (c >= 0x20 && c < 0x7f) {
      out += static_cast<char>(c);
    } else {
      static const char kHex[] = "0123456789abcdef";
      out += "\\x";
      out += kHex[c >> 4];
      out += kHex[c & 15];
    }
  }
  return out;
}

std::string OpenSslError() {
  const unsigned long e = ERR_get_error();
  ERR_clear_error();
  if (e == 0) return "no PEM data found";
  char buf[256];
  ERR_error_string_n(e, buf, sizeof buf);
  return buf;
}

using BioPtr = std::unique_ptr<BIO, decltype(&BIO_free)>;
using X509Ptr = std::unique_ptr<X509, decltype(&X509_free)>;
using PkeyPtr = std::unique_ptr<EVP_PKEY, decltype(&EVP_PKEY_free)>;

BioPtr MemBio(const std::string& pem) {
  return BioPtr(BIO_new_mem_buf(pem.data(), static_cast<int>(pem.size())), &BIO_free);
}

// Never prompts for a pass phrase: encrypted keys fail to load.
int NoPassword(char*, int, int, void*) { return -1; }

// Number of PEM certificates in `pem`; the first one in *first when first != nullptr.
absl::StatusOr<int> ParseCertificates(const std::string& pem, const std::string& what,
                                      const std::string& path, X509Ptr* first) {
  ERR_clear_error();
  BioPtr bio = MemBio(pem);
  int count = 0;
  while (true) {
    X509* cert = PEM_read_bio_X509(bio.get(), nullptr, &NoPassword, nullptr);
    if (!cert) break;
    if (count == 0 && first) first->reset(cert);
    else X509_free(cert);
    ++count;
  }
  ERR_clear_error();  // the end of the data shows up as an error
  if (count == 0) {
    return absl::InvalidArgumentError(
        absl::StrCat(what, " '", path, "' holds no PEM certificate"));
  }
  return count;
}

}  // namespace

bool ConstantTimeEquals(std::string_view a, std::string_view b) {
  if (a.size() != b.size()) return false;
  if (a.empty()) return true;
  return CRYPTO_memcmp(a.data(), b.data(), a.size()) == 0;
}

bool ValidId(std::string_view id) {
  if (id.empty() || id.size() > kMaxIdLength || id[0] == '.') return false;
  for (char c : id) {
    const bool ok = (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') ||
                    c == '.' || c == '_' || c == '-';
    if (!ok) return false;
  }
  return true;
}

// ---------------------------------------------------------------------------------------------

ApiKeys ApiKeys::Disabled() { return ApiKeys(); }

absl::StatusOr<ApiKeys> ApiKeys::LoadFile(const std::string& path) {
  absl::StatusOr<std::string> content = ReadFile(path, "API keys file");
  if (!content.ok()) return content.status();
  return Parse(*content, path);
}

absl::StatusOr<ApiKeys> ApiKeys::Parse(std::string_view content, const std::string& source) {
  ApiKeys keys;
  keys.enabled_ = true;
  std::unordered_set<std::string> seen;  // digests
  size_t line_no = 0;
  size_t pos = 0;
  while (pos < content.size()) {
    size_t end = content.find('\n', pos);
    if (end == std::string_view::npos) end = content.size();
    std::string_view line = content.substr(pos, end - pos);
    pos = end + 1;
    ++line_no;
    const auto bad = [&](const std::string& why) {
      return absl::InvalidArgumentError(
          absl::StrCat("API keys file ", source, " line ", line_no, ": ", why));
    };
    if (!line.empty() && line.back() == '\r') line.remove_suffix(1);
    line = Strip(line);
    if (line.empty() || line[0] == '#') continue;

    // Split into whitespace-separated fields.
    std::vector<std::string_view> fields;
    size_t i = 0;
    while (i < line.size()) {
      while (i < line.size() && (line[i] == ' ' || line[i] == '\t')) ++i;
      size_t j = i;
      while (j < line.size() && line[j] != ' ' && line[j] != '\t') ++j;
      if (j > i) fields.push_back(line.substr(i, j - i));
      i = j;
    }
    if (fields.size() != 2) {
      return bad(absl::StrCat("expected 'KEY TENANT', found ", fields.size(), " field",
                              fields.size() == 1 ? "" : "s"));
    }
    const std::string_view key = fields[0], tenant = fields[1];
    for (char c : key) {
      if (!IsKeyChar(c)) return bad("the key has a character that is not printable ASCII");
    }
    if (key.size() < kMinKeyLength) {
      return bad(absl::StrCat("the key is shorter than ", kMinKeyLength, " characters"));
    }
    if (key.size() > kMaxKeyLength) {
      return bad(absl::StrCat("the key is longer than ", kMaxKeyLength, " characters"));
    }
    if (!ValidId(tenant)) {
      return bad(absl::StrCat("bad tenant '", Printable(tenant),
                              "' (1-128 characters of [A-Za-z0-9._-], not starting with '.')"));
    }
    std::string digest = Sha256(key);
    if (!seen.insert(digest).second) return bad("duplicate key");
    keys.entries_.push_back({std::move(digest), std::string(tenant)});
  }
  if (keys.entries_.empty()) {
    return absl::InvalidArgumentError(
        absl::StrCat("API keys file ", source, " has no keys (authentication would reject every "
                     "caller; run without a keys file to disable it)"));
  }
  return keys;
}

absl::StatusOr<std::string> ApiKeys::TenantForAuthorization(std::string_view header_value) const {
  if (!enabled_) return std::string(kDefaultTenant);
  std::string_view v = Strip(header_value);
  if (v.empty()) return absl::UnauthenticatedError("missing API key (authorization: Bearer KEY)");
  constexpr std::string_view kScheme = "bearer";
  if (v.size() <= kScheme.size() || !EqualsIgnoreCase(v.substr(0, kScheme.size()), kScheme) ||
      (v[kScheme.size()] != ' ' && v[kScheme.size()] != '\t')) {
    return absl::UnauthenticatedError(
        "malformed authorization metadata: expected 'Bearer KEY'");
  }
  std::string_view key = StripLeading(v.substr(kScheme.size()));
  bool well_formed = !key.empty() && key.size() <= kMaxKeyLength;
  for (char c : key) well_formed = well_formed && IsKeyChar(c);
  if (!well_formed) {
    return absl::UnauthenticatedError(
        "malformed authorization metadata: expected 'Bearer KEY'");
  }
  // Compare the digest with every entry, without stopping at a match.
  const std::string digest = Sha256(key);
  size_t match = entries_.size();
  for (size_t i = 0; i < entries_.size(); ++i) {
    const bool eq = ConstantTimeEquals(digest, entries_[i].digest);
    match = eq ? i : match;
  }
  if (match == entries_.size()) return absl::UnauthenticatedError("unknown API key");
  return entries_[match].tenant;
}

absl::StatusOr<std::string> ApiKeys::Authenticate(const grpc::ServerContext& context) const {
  if (!enabled_) return std::string(kDefaultTenant);
  const auto& md = context.client_metadata();
  const auto range = md.equal_range("authorization");
  if (range.first == range.second) {
    return absl::UnauthenticatedError("missing API key (authorization: Bearer KEY)");
  }
  if (std::next(range.first) != range.second) {
    return absl::UnauthenticatedError("more than one authorization metadata entry");
  }
  const grpc::string_ref value = range.first->second;
  return TenantForAuthorization(std::string_view(value.data(), value.size()));
}

// ---------------------------------------------------------------------------------------------

absl::StatusOr<std::shared_ptr<grpc::ServerCredentials>> MakeServerCredentials(
    const std::string& cert, const std::string& key, const std::string& client_ca) {
  if (cert.empty()) {
    if (!key.empty()) {
      return absl::InvalidArgumentError("a TLS private key was given without a certificate");
    }
    if (!client_ca.empty()) {
      return absl::InvalidArgumentError(
          "a client CA (mTLS) was given without a server certificate and key");
    }
    return grpc::InsecureServerCredentials();
  }
  if (key.empty()) {
    return absl::InvalidArgumentError(
        absl::StrCat("TLS certificate '", cert, "' was given without its private key"));
  }
  absl::StatusOr<std::string> cert_pem = ReadFile(cert, "TLS certificate");
  if (!cert_pem.ok()) return cert_pem.status();
  absl::StatusOr<std::string> key_pem = ReadFile(key, "TLS private key");
  if (!key_pem.ok()) return key_pem.status();

  X509Ptr leaf(nullptr, &X509_free);
  if (auto n = ParseCertificates(*cert_pem, "TLS certificate", cert, &leaf); !n.ok()) {
    return n.status();
  }
  ERR_clear_error();
  BioPtr key_bio = MemBio(*key_pem);
  PkeyPtr pkey(PEM_read_bio_PrivateKey(key_bio.get(), nullptr, &NoPassword, nullptr),
               &EVP_PKEY_free);
  if (!pkey) {
    return absl::InvalidArgumentError(
        absl::StrCat("TLS private key '", key, "' cannot be parsed (PEM, unencrypted): ",
                     OpenSslError()));
  }
  if (X509_check_private_key(leaf.get(), pkey.get()) != 1) {
    ERR_clear_error();
    return absl::InvalidArgumentError(absl::StrCat("TLS private key '", key,
                                                   "' does not match certificate '", cert, "'"));
  }

  grpc::SslServerCredentialsOptions options(GRPC_SSL_DONT_REQUEST_CLIENT_CERTIFICATE);
  if (!client_ca.empty()) {
    absl::StatusOr<std::string> ca_pem = ReadFile(client_ca, "client CA");
    if (!ca_pem.ok()) return ca_pem.status();
    if (auto n = ParseCertificates(*ca_pem, "client CA", client_ca, nullptr); !n.ok()) {
      return n.status();
    }
    options.client_certificate_request = GRPC_SSL_REQUEST_AND_REQUIRE_CLIENT_CERTIFICATE_AND_VERIFY;
    options.pem_root_certs = *ca_pem;
  }
  grpc::SslServerCredentialsOptions::PemKeyCertPair pair;
  pair.private_key = *key_pem;
  pair.cert_chain = *cert_pem;
  options.pem_key_cert_pairs.push_back(std::move(pair));
  std::shared_ptr<grpc::ServerCredentials> creds = grpc::SslServerCredentials(options);
  if (!creds) return absl::InternalError("gRPC could not create TLS server credentials");
  return creds;
}

const char* StatusCodeName(grpc::StatusCode code) {
  static constexpr const char* kNames[kNumStatusCodes] = {
      "OK",           "CANCELLED",          "UNKNOWN",             "INVALID_ARGUMENT",
      "DEADLINE_EXCEEDED", "NOT_FOUND",     "ALREADY_EXISTS",      "PERMISSION_DENIED",
      "RESOURCE_EXHAUSTED", "FAILED_PRECONDITION", "ABORTED",      "OUT_OF_RANGE",
      "UNIMPLEMENTED", "INTERNAL",          "UNAVAILABLE",         "DATA_LOSS",
      "UNAUTHENTICATED"};
  const int c = static_cast<int>(code);
  return c >= 0 && c < kNumStatusCodes ? kNames[c] : "UNKNOWN";
}

grpc::Status ToGrpcStatus(const absl::Status& status) {
  if (status.ok()) return grpc::Status::OK;
  const int code = static_cast<int>(status.code());
  const grpc::StatusCode grpc_code =
      (code >= 1 && code <= 16) ? static_cast<grpc::StatusCode>(code) : grpc::StatusCode::UNKNOWN;
  return grpc::Status(grpc_code, std::string(status.message()));
}

absl::Status FromGrpcStatus(const grpc::Status& status) {
  if (status.ok()) return absl::OkStatus();
  const int code = static_cast<int>(status.error_code());
  const absl::StatusCode absl_code =
      (code >= 1 && code <= 16) ? static_cast<absl::StatusCode>(code) : absl::StatusCode::kUnknown;
  return absl::Status(absl_code, status.error_message());
}


}  // namespace sharedllm::service
