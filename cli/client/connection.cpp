#include "cli/client/connection.h"

#include <cstdio>

#include "service/address.h"

#include <cerrno>
#include <cstring>
#include <fstream>
#include <sstream>
#include <utility>

namespace sharedllm::client {
namespace {

bool ReadPem(const std::string& path, std::string* out, std::string* error) {
  std::ifstream in(path, std::ios::binary);
  std::ostringstream s;
  if (in) s << in.rdbuf();
  if (!in || in.bad()) {
    *error = "cannot read '" + path + "': " + std::strerror(errno);
    return false;
  }
  *out = s.str();
  return true;
}

}  // namespace

std::shared_ptr<grpc::Channel> MakeChannel(const ConnectionOptions& o, std::string* error) {
  if (o.tls_cert.empty() != o.tls_key.empty()) {
    *error = "--tls-cert and --tls-key go together";
    return nullptr;
  }
  std::shared_ptr<grpc::ChannelCredentials> creds;
  if (o.tls || !o.tls_ca.empty() || !o.tls_cert.empty()) {
    grpc::SslCredentialsOptions ssl;
    const std::pair<const std::string*, std::string*> files[] = {
        {&o.tls_ca, &ssl.pem_root_certs},
        {&o.tls_cert, &ssl.pem_cert_chain},
        {&o.tls_key, &ssl.pem_private_key}};
    for (const auto& [path, out] : files) {
      if (!path->empty() && !ReadPem(*path, out, error)) return nullptr;
    }
    creds = grpc::SslCredentials(ssl);
  } else {
    creds = grpc::InsecureChannelCredentials();
    if (!o.api_key.empty() && !service::IsLoopbackAddress(o.target)) {
      std::fprintf(stderr,
                   "warning: the API key goes to %s in clear (no --tls or --tls-ca): anyone on the "
                   "path can read it\n",
                   o.target.c_str());
    }
  }
  grpc::ChannelArguments args;
  args.SetMaxReceiveMessageSize(64 << 20);
  return grpc::CreateCustomChannel(o.target, creds, args);
}

void AddApiKey(const ConnectionOptions& o, grpc::ClientContext* context) {
  if (!o.api_key.empty()) context->AddMetadata("authorization", "Bearer " + o.api_key);
}

const char* StatusCodeName(grpc::StatusCode code) {
  switch (code) {
    case grpc::StatusCode::OK: return "OK";
    case grpc::StatusCode::CANCELLED: return "CANCELLED";
    case grpc::StatusCode::UNKNOWN: return "UNKNOWN";
    case grpc::StatusCode::INVALID_ARGUMENT: return "INVALID_ARGUMENT";
    case grpc::StatusCode::DEADLINE_EXCEEDED: return "DEADLINE_EXCEEDED";
    case grpc::StatusCode::NOT_FOUND: return "NOT_FOUND";
    case grpc::StatusCode::ALREADY_EXISTS: return "ALREADY_EXISTS";
    case grpc::StatusCode::PERMISSION_DENIED: return "PERMISSION_DENIED";
    case grpc::StatusCode::RESOURCE_EXHAUSTED: return "RESOURCE_EXHAUSTED";
    case grpc::StatusCode::FAILED_PRECONDITION: return "FAILED_PRECONDITION";
    case grpc::StatusCode::ABORTED: return "ABORTED";
    case grpc::StatusCode::OUT_OF_RANGE: return "OUT_OF_RANGE";
    case grpc::StatusCode::UNIMPLEMENTED: return "UNIMPLEMENTED";
    case grpc::StatusCode::INTERNAL: return "INTERNAL";
    case grpc::StatusCode::UNAVAILABLE: return "UNAVAILABLE";
    case grpc::StatusCode::DATA_LOSS: return "DATA_LOSS";
    case grpc::StatusCode::UNAUTHENTICATED: return "UNAUTHENTICATED";
    default: return "UNKNOWN";
  }
}

}  // namespace sharedllm::client
