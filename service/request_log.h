// Structured request logs: one JSON line per RPC on stderr (never per token), written by a gRPC
// server interceptor so that every method of every service is covered the same way.
#pragma once

#include <memory>

#include <grpcpp/support/server_interceptor.h>

namespace sharedllm::service {

std::unique_ptr<grpc::experimental::ServerInterceptorFactoryInterface> MakeRequestLogFactory();

// For ThreadSanitizer, a no-op otherwise: every call's end as the request log saw it (its handler
// returned) happens before this returns. The server calls it after grpc::Server::Wait(), whose
// join of gRPC's threads TSan cannot see (Debian's gRPC is not built with it), before it destroys
// what the handlers used; without it every such object's destruction reads as a race.
void AfterAllCalls();

}  // namespace sharedllm::service
