// service/auth.h: API key files, the authorization header, constant-time comparison, id
// validation, status mapping, and TLS / mTLS credentials exercised by real gRPC calls.
#include "service/address.h"
#include "service/auth.h"

#include <gtest/gtest.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>

#include <chrono>
#include <fstream>
#include <memory>
#include <string>

#include "sharedllm/v1/documents.grpc.pb.h"
#include "tests/test_util.h"

namespace sharedllm::service {
namespace {

using sharedllm::test::TempDir;

void WriteFile(const std::string& path, const std::string& content) {
  std::ofstream out(path, std::ios::binary);
  out << content;
  ASSERT_TRUE(out.good()) << path;
}

// ---------------------------------------------------------------------------------------------
// ValidId, ConstantTimeEquals

TEST(ValidIdTest, AcceptsTheAlphabet) {
  EXPECT_TRUE(ValidId("a"));
  EXPECT_TRUE(ValidId("doc-1_v2.txt"));
  EXPECT_TRUE(ValidId("ABC.xyz-09_"));
  EXPECT_TRUE(ValidId("-starts-with-dash"));
  EXPECT_TRUE(ValidId("_x"));
  EXPECT_TRUE(ValidId(std::string(128, 'x')));
}

TEST(ValidIdTest, RejectsEverythingElse) {
  EXPECT_FALSE(ValidId(""));
  EXPECT_FALSE(ValidId(std::string(129, 'x')));
  EXPECT_FALSE(ValidId(".hidden"));
  EXPECT_FALSE(ValidId("."));
  EXPECT_FALSE(ValidId(".."));
  EXPECT_FALSE(ValidId("a/b"));
  EXPECT_FALSE(ValidId("../etc"));
  EXPECT_FALSE(ValidId("a b"));
  EXPECT_FALSE(ValidId("a\tb"));
  EXPECT_FALSE(ValidId(std::string("a\0b", 3)));
  EXPECT_FALSE(ValidId("caf\xc3\xa9"));
  EXPECT_FALSE(ValidId("a:b"));
  EXPECT_FALSE(ValidId("a|b"));
}

TEST(ConstantTimeEqualsTest, ComparesBytes) {
  EXPECT_TRUE(ConstantTimeEquals("", ""));
  EXPECT_TRUE(ConstantTimeEquals("abcdef", "abcdef"));
  EXPECT_FALSE(ConstantTimeEquals("abcdef", "abcdeg"));
  EXPECT_FALSE(ConstantTimeEquals("abcdef", "bbcdef"));
  EXPECT_FALSE(ConstantTimeEquals("abc", "abcd"));
  EXPECT_FALSE(ConstantTimeEquals("", "a"));
  EXPECT_TRUE(ConstantTimeEquals(std::string("a\0b", 3), std::string("a\0b", 3)));
  EXPECT_FALSE(ConstantTimeEquals(std::string("a\0b", 3), std::string("a\0c", 3)));
}

// ---------------------------------------------------------------------------------------------
// Key files

constexpr const char* kKeyA = "alpha-key-0123456789";
constexpr const char* kKeyB = "bravo-key-0123456789";
constexpr const char* kKeyC = "charlie-key-01234567";

TEST(ApiKeysTest, ParsesKeysCommentsAndBlankLines) {
  const std::string content = std::string("# keys of the test deployment\n\n") + kKeyA +
                              " tenant-a\n"
                              "   \t\n"
                              "\t" + kKeyB + "\t\ttenant_b  \r\n"
                              "  # indented comment\n" +
                              kKeyC + " tenant-a";  // no final newline; two keys for tenant-a
  absl::StatusOr<ApiKeys> keys = ApiKeys::Parse(content, "keys.txt");
  ASSERT_TRUE(keys.ok()) << keys.status();
  EXPECT_TRUE(keys->enabled());
  EXPECT_EQ(keys->size(), 3u);
  EXPECT_EQ(keys->TenantForAuthorization(std::string("Bearer ") + kKeyA).value(), "tenant-a");
  EXPECT_EQ(keys->TenantForAuthorization(std::string("Bearer ") + kKeyB).value(), "tenant_b");
  EXPECT_EQ(keys->TenantForAuthorization(std::string("Bearer ") + kKeyC).value(), "tenant-a");
}

void ExpectParseError(const std::string& content, const std::string& fragment) {
  absl::StatusOr<ApiKeys> keys = ApiKeys::Parse(content, "keys.txt");
  ASSERT_FALSE(keys.ok()) << "accepted:\n" << content;
  EXPECT_EQ(keys.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(keys.status().message().find(fragment), std::string::npos)
      << "'" << keys.status().message() << "' lacks '" << fragment << "'";
  EXPECT_NE(keys.status().message().find("keys.txt"), std::string::npos) << keys.status();
}

TEST(ApiKeysTest, RejectsMalformedLinesNamingTheLine) {
  ExpectParseError(std::string("# c\n") + kKeyA + "\n", "line 2: expected 'KEY TENANT'");
  ExpectParseError(std::string(kKeyA) + " t extra\n", "line 1: expected 'KEY TENANT'");
  ExpectParseError("\n\nshortkey tenant\n", "line 3: the key is shorter than 16");
  ExpectParseError(std::string(kKeyA) + " .tenant\n", "line 1: bad tenant");
  ExpectParseError(std::string(kKeyA) + " ten/ant\n", "line 1: bad tenant");
  ExpectParseError(std::string(kKeyA) + "\x01" + " tenant\n", "line 1: the key has a character");
  ExpectParseError(std::string(600, 'k') + " tenant\n", "line 1: the key is longer than 512");
}

TEST(ApiKeysTest, RejectsDuplicateKeysWithoutEchoingThem) {
  const std::string content = std::string(kKeyA) + " one\n" + kKeyB + " two\n" + kKeyA + " three\n";
  absl::StatusOr<ApiKeys> keys = ApiKeys::Parse(content, "keys.txt");
  ASSERT_FALSE(keys.ok());
  EXPECT_EQ(keys.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(keys.status().message().find("line 3: duplicate key"), std::string::npos)
      << keys.status();
  EXPECT_EQ(keys.status().message().find(kKeyA), std::string::npos) << "the key leaked";
}

TEST(ApiKeysTest, RejectsAFileWithoutKeys) {
  ExpectParseError("", "has no keys");
  ExpectParseError("# only a comment\n\n", "has no keys");
}

TEST(ApiKeysTest, LoadsFiles) {
  TempDir dir;
  WriteFile(dir / "keys", std::string(kKeyA) + " tenant-a\n");
  absl::StatusOr<ApiKeys> keys = ApiKeys::LoadFile(dir / "keys");
  ASSERT_TRUE(keys.ok()) << keys.status();
  EXPECT_EQ(keys->TenantForAuthorization(std::string("Bearer ") + kKeyA).value(), "tenant-a");

  absl::StatusOr<ApiKeys> missing = ApiKeys::LoadFile(dir / "nope");
  ASSERT_FALSE(missing.ok());
  EXPECT_EQ(missing.status().code(), absl::StatusCode::kNotFound);
  EXPECT_NE(missing.status().message().find(dir / "nope"), std::string::npos);

  WriteFile(dir / "bad", "\n" + std::string(kKeyA) + "\n");
  absl::StatusOr<ApiKeys> bad = ApiKeys::LoadFile(dir / "bad");
  ASSERT_FALSE(bad.ok());
  EXPECT_NE(bad.status().message().find(dir / "bad"), std::string::npos);
  EXPECT_NE(bad.status().message().find("line 2"), std::string::npos);
}

// ---------------------------------------------------------------------------------------------
// The authorization header

ApiKeys TwoKeys() {
  return ApiKeys::Parse(std::string(kKeyA) + " tenant-a\n" + kKeyB + " tenant-b\n", "test").value();
}

TEST(TenantForAuthorizationTest, AcceptsBearerKeys) {
  const ApiKeys keys = TwoKeys();
  EXPECT_EQ(keys.TenantForAuthorization(std::string("Bearer ") + kKeyA).value(), "tenant-a");
  EXPECT_EQ(keys.TenantForAuthorization(std::string("bearer ") + kKeyB).value(), "tenant-b");
  EXPECT_EQ(keys.TenantForAuthorization(std::string("BEARER ") + kKeyB).value(), "tenant-b");
  EXPECT_EQ(keys.TenantForAuthorization(std::string("  Bearer \t ") + kKeyA + "  ").value(),
            "tenant-a");
}

void ExpectUnauthenticated(const ApiKeys& keys, const std::string& header) {
  absl::StatusOr<std::string> tenant = keys.TenantForAuthorization(header);
  ASSERT_FALSE(tenant.ok()) << "'" << header << "' gave tenant " << *tenant;
  EXPECT_EQ(tenant.status().code(), absl::StatusCode::kUnauthenticated) << header;
  EXPECT_EQ(tenant.status().message().find(kKeyA), std::string::npos) << "the key leaked";
}

TEST(TenantForAuthorizationTest, RejectsMissingMalformedAndUnknownKeys) {
  const ApiKeys keys = TwoKeys();
  const std::string a = kKeyA;
  ExpectUnauthenticated(keys, "");
  ExpectUnauthenticated(keys, "   ");
  ExpectUnauthenticated(keys, a);                      // no scheme
  ExpectUnauthenticated(keys, "Bearer");               // no key
  ExpectUnauthenticated(keys, "Bearer ");
  ExpectUnauthenticated(keys, "Bearer" + a);           // no separator
  ExpectUnauthenticated(keys, "Basic " + a);           // another scheme
  ExpectUnauthenticated(keys, "Bearer " + a + " x");   // two tokens
  ExpectUnauthenticated(keys, "Bearer " + a.substr(0, a.size() - 1));  // a prefix
  ExpectUnauthenticated(keys, "Bearer " + a + "0");    // longer
  ExpectUnauthenticated(keys, "Bearer unknown-key-0123456789");
  ExpectUnauthenticated(keys, "Bearer " + std::string(10000, 'k'));
  std::string flipped = a;
  flipped[0] = 'A';
  ExpectUnauthenticated(keys, "Bearer " + flipped);   // keys are case-sensitive
}

TEST(TenantForAuthorizationTest, DisabledKeysGiveTheDefaultTenant) {
  const ApiKeys keys = ApiKeys::Disabled();
  EXPECT_FALSE(keys.enabled());
  EXPECT_EQ(keys.TenantForAuthorization("").value(), "default");
  EXPECT_EQ(keys.TenantForAuthorization("Bearer whatever").value(), "default");
}

// ---------------------------------------------------------------------------------------------
// Status mapping

TEST(StatusMappingTest, MapsEveryCodeBothWays) {
  EXPECT_TRUE(ToGrpcStatus(absl::OkStatus()).ok());
  EXPECT_TRUE(FromGrpcStatus(grpc::Status::OK).ok());
  for (int code = 1; code <= 16; ++code) {
    const absl::Status a(static_cast<absl::StatusCode>(code), "message " + std::to_string(code));
    const grpc::Status g = ToGrpcStatus(a);
    EXPECT_EQ(static_cast<int>(g.error_code()), code);
    EXPECT_EQ(g.error_message(), "message " + std::to_string(code));
    const absl::Status back = FromGrpcStatus(g);
    EXPECT_EQ(back, a);
  }
  EXPECT_EQ(ToGrpcStatus(absl::NotFoundError("x")).error_code(), grpc::StatusCode::NOT_FOUND);
  EXPECT_EQ(ToGrpcStatus(absl::UnauthenticatedError("x")).error_code(),
            grpc::StatusCode::UNAUTHENTICATED);
  EXPECT_EQ(FromGrpcStatus(grpc::Status(grpc::StatusCode::DATA_LOSS, "d")).code(),
            absl::StatusCode::kDataLoss);
}

// ---------------------------------------------------------------------------------------------
// TLS credentials. Certificates are made here with OpenSSL: a CA, a server certificate for
// localhost / 127.0.0.1 and a client certificate, both signed by the CA, plus an unrelated key.

struct Pem {
  std::string cert, key;
};

std::string ToPem(EVP_PKEY* key) {
  BIO* bio = BIO_new(BIO_s_mem());
  PEM_write_bio_PrivateKey(bio, key, nullptr, nullptr, 0, nullptr, nullptr);
  char* data = nullptr;
  const long n = BIO_get_mem_data(bio, &data);
  std::string out(data, static_cast<size_t>(n));
  BIO_free(bio);
  return out;
}

std::string ToPem(X509* cert) {
  BIO* bio = BIO_new(BIO_s_mem());
  PEM_write_bio_X509(bio, cert);
  char* data = nullptr;
  const long n = BIO_get_mem_data(bio, &data);
  std::string out(data, static_cast<size_t>(n));
  BIO_free(bio);
  return out;
}

void AddExtension(X509* cert, X509* issuer, int nid, const char* value) {
  X509V3_CTX ctx;
  X509V3_set_ctx_nodb(&ctx);
  X509V3_set_ctx(&ctx, issuer, cert, nullptr, nullptr, 0);
  X509_EXTENSION* ext = X509V3_EXT_conf_nid(nullptr, &ctx, nid, value);
  ASSERT_NE(ext, nullptr) << value;
  X509_add_ext(cert, ext, -1);
  X509_EXTENSION_free(ext);
}

// A certificate for `cn` with `key`, signed by issuer (self-signed when issuer is null).
X509* MakeCert(const std::string& cn, EVP_PKEY* key, X509* issuer, EVP_PKEY* issuer_key,
               bool ca, const char* san, long serial) {
  X509* cert = X509_new();
  X509_set_version(cert, 2);
  ASN1_INTEGER_set(X509_get_serialNumber(cert), serial);
  X509_gmtime_adj(X509_getm_notBefore(cert), -3600);
  X509_gmtime_adj(X509_getm_notAfter(cert), 24 * 3600);
  X509_set_pubkey(cert, key);
  X509_NAME* name = X509_get_subject_name(cert);
  X509_NAME_add_entry_by_txt(name, "CN", MBSTRING_ASC,
                             reinterpret_cast<const unsigned char*>(cn.c_str()), -1, -1, 0);
  X509_set_issuer_name(cert, issuer ? X509_get_subject_name(issuer) : name);
  X509* signer = issuer ? issuer : cert;
  if (ca) {
    AddExtension(cert, signer, NID_basic_constraints, "critical,CA:TRUE");
    AddExtension(cert, signer, NID_key_usage, "critical,keyCertSign,cRLSign");
  } else {
    AddExtension(cert, signer, NID_basic_constraints, "critical,CA:FALSE");
    AddExtension(cert, signer, NID_ext_key_usage, "serverAuth,clientAuth");
  }
  if (san) AddExtension(cert, signer, NID_subject_alt_name, san);
  X509_sign(cert, issuer_key ? issuer_key : key, EVP_sha256());
  return cert;
}

struct Pki {
  Pem ca, server, client, stranger;  // stranger: a self-signed client not from the CA
};

const Pki& TestPki() {
  static const Pki* pki = [] {
    auto* p = new Pki;
    EVP_PKEY* ca_key = EVP_EC_gen("P-256");
    EVP_PKEY* server_key = EVP_EC_gen("P-256");
    EVP_PKEY* client_key = EVP_EC_gen("P-256");
    EVP_PKEY* stranger_key = EVP_EC_gen("P-256");
    X509* ca = MakeCert("sharedllm test CA", ca_key, nullptr, nullptr, true, nullptr, 1);
    X509* server = MakeCert("localhost", server_key, ca, ca_key, false,
                            "DNS:localhost,IP:127.0.0.1", 2);
    X509* client = MakeCert("client", client_key, ca, ca_key, false, nullptr, 3);
    X509* stranger = MakeCert("stranger", stranger_key, nullptr, nullptr, false, nullptr, 4);
    p->ca = {ToPem(ca), ToPem(ca_key)};
    p->server = {ToPem(server), ToPem(server_key)};
    p->client = {ToPem(client), ToPem(client_key)};
    p->stranger = {ToPem(stranger), ToPem(stranger_key)};
    for (X509* c : {ca, server, client, stranger}) X509_free(c);
    for (EVP_PKEY* k : {ca_key, server_key, client_key, stranger_key}) EVP_PKEY_free(k);
    return p;
  }();
  return *pki;
}

class CredentialsTest : public ::testing::Test {
 protected:
  void SetUp() override {
    const Pki& pki = TestPki();
    WriteFile(dir_ / "ca.pem", pki.ca.cert);
    WriteFile(dir_ / "server.pem", pki.server.cert);
    WriteFile(dir_ / "server.key", pki.server.key);
    WriteFile(dir_ / "client.pem", pki.client.cert);
    WriteFile(dir_ / "client.key", pki.client.key);
    WriteFile(dir_ / "garbage.pem", "not a certificate\n");
  }
  TempDir dir_;
};

TEST_F(CredentialsTest, InsecureWhenNoCertificate) {
  auto creds = MakeServerCredentials("", "", "");
  ASSERT_TRUE(creds.ok()) << creds.status();
  EXPECT_NE(*creds, nullptr);
}

TEST_F(CredentialsTest, RejectsInconsistentArguments) {
  EXPECT_EQ(MakeServerCredentials("", dir_ / "server.key", "").status().code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(MakeServerCredentials("", "", dir_ / "ca.pem").status().code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(MakeServerCredentials(dir_ / "server.pem", "", "").status().code(),
            absl::StatusCode::kInvalidArgument);
}

TEST_F(CredentialsTest, NamesUnreadableAndBadFiles) {
  auto missing = MakeServerCredentials(dir_ / "none.pem", dir_ / "server.key", "");
  ASSERT_FALSE(missing.ok());
  EXPECT_EQ(missing.status().code(), absl::StatusCode::kNotFound);
  EXPECT_NE(missing.status().message().find(dir_ / "none.pem"), std::string::npos)
      << missing.status();

  auto missing_key = MakeServerCredentials(dir_ / "server.pem", dir_ / "none.key", "");
  ASSERT_FALSE(missing_key.ok());
  EXPECT_NE(missing_key.status().message().find(dir_ / "none.key"), std::string::npos);

  auto garbage = MakeServerCredentials(dir_ / "garbage.pem", dir_ / "server.key", "");
  ASSERT_FALSE(garbage.ok());
  EXPECT_EQ(garbage.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(garbage.status().message().find("garbage.pem"), std::string::npos);

  auto garbage_key = MakeServerCredentials(dir_ / "server.pem", dir_ / "garbage.pem", "");
  ASSERT_FALSE(garbage_key.ok());
  EXPECT_EQ(garbage_key.status().code(), absl::StatusCode::kInvalidArgument);

  auto garbage_ca = MakeServerCredentials(dir_ / "server.pem", dir_ / "server.key",
                                          dir_ / "garbage.pem");
  ASSERT_FALSE(garbage_ca.ok());
  EXPECT_NE(garbage_ca.status().message().find("client CA"), std::string::npos);

  auto mismatch = MakeServerCredentials(dir_ / "server.pem", dir_ / "client.key", "");
  ASSERT_FALSE(mismatch.ok());
  EXPECT_EQ(mismatch.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(mismatch.status().message().find("does not match"), std::string::npos);
}

// A DocumentService whose GetIndexStatus answers with the caller's tenant as document_id.
class WhoAmIService final : public sharedllm::v1::DocumentService::Service {
 public:
  explicit WhoAmIService(const ApiKeys* keys) : keys_(keys) {}
  grpc::Status GetIndexStatus(grpc::ServerContext* context,
                              const sharedllm::v1::GetIndexStatusRequest*,
                              sharedllm::v1::IndexJob* job) override {
    absl::StatusOr<std::string> tenant = keys_->Authenticate(*context);
    if (!tenant.ok()) return ToGrpcStatus(tenant.status());
    job->set_document_id(*tenant);
    return grpc::Status::OK;
  }

 private:
  const ApiKeys* keys_;
};

class TestServer {
 public:
  TestServer(std::shared_ptr<grpc::ServerCredentials> creds, const ApiKeys* keys)
      : service_(keys) {
    grpc::ServerBuilder builder;
    builder.AddListeningPort("127.0.0.1:0", std::move(creds), &port_);
    builder.RegisterService(&service_);
    server_ = builder.BuildAndStart();
  }
  ~TestServer() {
    if (server_) server_->Shutdown(std::chrono::system_clock::now());
  }
  bool ok() const { return server_ != nullptr && port_ > 0; }
  std::string target() const { return "127.0.0.1:" + std::to_string(port_); }

 private:
  WhoAmIService service_;
  int port_ = 0;
  std::unique_ptr<grpc::Server> server_;
};

// Calls GetIndexStatus; the tenant on success.
absl::StatusOr<std::string> WhoAmI(const std::string& target,
                                   std::shared_ptr<grpc::ChannelCredentials> creds,
                                   const std::string& authorization) {
  grpc::ChannelArguments args;
  args.SetSslTargetNameOverride("localhost");
  auto channel = grpc::CreateCustomChannel(target, std::move(creds), args);
  auto stub = sharedllm::v1::DocumentService::NewStub(channel);
  grpc::ClientContext ctx;
  ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(10));
  if (!authorization.empty()) ctx.AddMetadata("authorization", authorization);
  sharedllm::v1::GetIndexStatusRequest request;
  sharedllm::v1::IndexJob job;
  grpc::Status status = stub->GetIndexStatus(&ctx, request, &job);
  if (!status.ok()) return FromGrpcStatus(status);
  return job.document_id();
}

std::shared_ptr<grpc::ChannelCredentials> ClientTls(const Pem* client_pem) {
  grpc::SslCredentialsOptions options;
  options.pem_root_certs = TestPki().ca.cert;
  if (client_pem) {
    options.pem_cert_chain = client_pem->cert;
    options.pem_private_key = client_pem->key;
  }
  return grpc::SslCredentials(options);
}

TEST_F(CredentialsTest, InsecureServerWithoutKeysGivesTheDefaultTenant) {
  const ApiKeys keys = ApiKeys::Disabled();
  TestServer server(MakeServerCredentials("", "", "").value(), &keys);
  ASSERT_TRUE(server.ok());
  EXPECT_EQ(WhoAmI(server.target(), grpc::InsecureChannelCredentials(), "").value(), "default");
}

TEST_F(CredentialsTest, TlsServerAuthenticatesApiKeys) {
  const ApiKeys keys = TwoKeys();
  auto creds = MakeServerCredentials(dir_ / "server.pem", dir_ / "server.key", "");
  ASSERT_TRUE(creds.ok()) << creds.status();
  TestServer server(*creds, &keys);
  ASSERT_TRUE(server.ok());
  const std::string b = std::string("Bearer ") + kKeyB;
  EXPECT_EQ(WhoAmI(server.target(), ClientTls(nullptr), b).value(), "tenant-b");
  EXPECT_EQ(WhoAmI(server.target(), ClientTls(nullptr), "").status().code(),
            absl::StatusCode::kUnauthenticated);
  EXPECT_EQ(WhoAmI(server.target(), ClientTls(nullptr), "Bearer wrong-key-0123456789")
                .status()
                .code(),
            absl::StatusCode::kUnauthenticated);
  // A plaintext client cannot talk to the TLS port.
  EXPECT_FALSE(WhoAmI(server.target(), grpc::InsecureChannelCredentials(), b).ok());
}

TEST_F(CredentialsTest, MutualTlsRequiresAClientCertificateFromTheCa) {
  const ApiKeys keys = TwoKeys();
  auto creds = MakeServerCredentials(dir_ / "server.pem", dir_ / "server.key", dir_ / "ca.pem");
  ASSERT_TRUE(creds.ok()) << creds.status();
  TestServer server(*creds, &keys);
  ASSERT_TRUE(server.ok());
  const std::string a = std::string("Bearer ") + kKeyA;
  const Pki& pki = TestPki();
  EXPECT_EQ(WhoAmI(server.target(), ClientTls(&pki.client), a).value(), "tenant-a");
  EXPECT_FALSE(WhoAmI(server.target(), ClientTls(nullptr), a).ok()) << "no client certificate";
  EXPECT_FALSE(WhoAmI(server.target(), ClientTls(&pki.stranger), a).ok())
      << "a client certificate from another CA";
}

TEST(AuthenticateTest, RejectsRepeatedAuthorizationMetadata) {
  const ApiKeys keys = TwoKeys();
  TestServer server(grpc::InsecureServerCredentials(), &keys);
  ASSERT_TRUE(server.ok());
  auto channel = grpc::CreateChannel(server.target(), grpc::InsecureChannelCredentials());
  auto stub = sharedllm::v1::DocumentService::NewStub(channel);
  grpc::ClientContext ctx;
  ctx.AddMetadata("authorization", std::string("Bearer ") + kKeyA);
  ctx.AddMetadata("authorization", std::string("Bearer ") + kKeyB);
  sharedllm::v1::GetIndexStatusRequest request;
  sharedllm::v1::IndexJob job;
  EXPECT_EQ(stub->GetIndexStatus(&ctx, request, &job).error_code(),
            grpc::StatusCode::UNAUTHENTICATED);
}

TEST(AddressTest, LoopbackIsThisMachineOnly) {
  for (const char* a : {"127.0.0.1:50051", "127.1.2.3", "localhost:1", "[::1]:50051", "::1",
                        "dns:///localhost:50051", "ipv4:127.0.0.1:80", "unix:/tmp/s.sock"}) {
    EXPECT_TRUE(IsLoopbackAddress(a)) << a;
  }
  for (const char* a : {"0.0.0.0:50051", "10.0.0.5:50051", "[::]:50051", "example.com:443",
                        "127.example.com:1", "localhost.evil:1", "dns:///sharedllm:50051", ""}) {
    EXPECT_FALSE(IsLoopbackAddress(a)) << a;
  }
}

}  // namespace
}  // namespace sharedllm::service
