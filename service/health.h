// grpc.health.v1.Health served by sharedllm-server itself. gRPC's default health service reports
// SERVING for "" from the moment the server starts, before this process could say otherwise; this
// one starts NOT_SERVING for every name it knows, so a probe never sees SERVING before the model
// and the tree store are loaded (server.cpp flips it) and sees NOT_SERVING again once draining.
#pragma once

#include <condition_variable>
#include <map>
#include <mutex>
#include <string>
#include <vector>

#include "grpc/health/v1/health.grpc.pb.h"

namespace sharedllm::service {

class HealthService final : public grpc::health::v1::Health::Service {
 public:
  // Knows "" (the whole server) and `services` (full names, e.g. "sharedllm.v1.QueryService"),
  // all NOT_SERVING. Any other name is NOT_FOUND (Check) or SERVICE_UNKNOWN (Watch).
  // At most `max_watches` Watch streams are open at once (health is unauthenticated, and each
  // stream holds a handler thread); one more is RESOURCE_EXHAUSTED.
  explicit HealthService(const std::vector<std::string>& services, int max_watches = 8);

  // Sets every known name to SERVING or NOT_SERVING. Ignored after Shutdown.
  void SetServing(bool serving);
  // Every name NOT_SERVING for good; open Watch streams get that update and end, so that they do
  // not hold up the server's shutdown.
  void Shutdown();

  grpc::Status Check(grpc::ServerContext* context, const grpc::health::v1::HealthCheckRequest* request,
                     grpc::health::v1::HealthCheckResponse* response) override;
  grpc::Status Watch(grpc::ServerContext* context, const grpc::health::v1::HealthCheckRequest* request,
                     grpc::ServerWriter<grpc::health::v1::HealthCheckResponse>* writer) override;

 private:
  using Status = grpc::health::v1::HealthCheckResponse::ServingStatus;
  Status StatusOf(const std::string& service) const;  // mu_ held

  mutable std::mutex mu_;
  std::condition_variable changed_;
  std::map<std::string, bool> serving_;  // known names
  bool shut_down_ = false;
  int64_t version_ = 0;  // bumps on every change (Watch waits on it)
  const int max_watches_;
  int watches_ = 0;  // open Watch streams
};

}  // namespace sharedllm::service
