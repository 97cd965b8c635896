// Structured request logs: one JSON line per RPC on stderr (never per token), written by a gRPC
// server interceptor so that every method of every service is covered the same way.
#pragma once

#include <memory>

#include <grpcpp/support/server_interceptor.h>

namespace sharedllm::service {

std::unique_ptr<grpc::experimental::ServerInterceptorFactoryInterface> MakeRequestLogFactory();

}  // namespace sharedllm::service
