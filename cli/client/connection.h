// How the C++ clients (sharedllm-cli, sharedllm-load) reach the service: the channel with its
// credentials (plaintext, TLS, mutual TLS), the API key on every call, and status-code names for
// messages. One place, so the clients cannot drift apart.
#pragma once

#include <grpcpp/grpcpp.h>

#include <memory>
#include <string>

namespace sharedllm::client {

struct ConnectionOptions {
  std::string target;    // service address, e.g. "127.0.0.1:50051"
  std::string api_key;   // sent as "authorization: Bearer KEY" on every call; empty: none
  bool tls = false;      // TLS, verifying the server with the system's root certificates
  std::string tls_ca;    // PEM CA certificate(s) to verify the server with (implies TLS)
  std::string tls_cert;  // PEM client certificate for mutual TLS (implies TLS; needs tls_key)
  std::string tls_key;   // PEM private key of tls_cert
};

// A channel to options.target (largest received message 64 MiB), or nullptr with *error set: a
// certificate file that cannot be read, or tls_cert without tls_key (or the reverse).
std::shared_ptr<grpc::Channel> MakeChannel(const ConnectionOptions& options, std::string* error);

// Adds the API key (if any) to a call's metadata.
void AddApiKey(const ConnectionOptions& options, grpc::ClientContext* context);

// "OK", "CANCELLED", ... "UNAUTHENTICATED": the canonical name of a gRPC status code.
const char* StatusCodeName(grpc::StatusCode code);

}  // namespace sharedllm::client
