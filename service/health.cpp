#include "service/health.h"

#include "service/encoding.h"

#include <chrono>

namespace sharedllm::service {

using grpc::health::v1::HealthCheckRequest;
using grpc::health::v1::HealthCheckResponse;

HealthService::HealthService(const std::vector<std::string>& services, int max_watches)
    : max_watches_(max_watches) {
  serving_[""] = false;
  for (const auto& s : services) serving_[s] = false;
}

void HealthService::SetServing(bool serving) {
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (shut_down_) return;
    for (auto& [_, s] : serving_) s = serving;
    ++version_;
  }
  changed_.notify_all();
}

void HealthService::Shutdown() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    for (auto& [_, s] : serving_) s = false;
    shut_down_ = true;
    ++version_;
  }
  changed_.notify_all();
}

HealthService::Status HealthService::StatusOf(const std::string& service) const {
  auto it = serving_.find(service);
  if (it == serving_.end()) return HealthCheckResponse::SERVICE_UNKNOWN;
  return it->second ? HealthCheckResponse::SERVING : HealthCheckResponse::NOT_SERVING;
}

grpc::Status HealthService::Check(grpc::ServerContext*, const HealthCheckRequest* request,
                                  HealthCheckResponse* response) {
  std::lock_guard<std::mutex> lock(mu_);
  const Status s = StatusOf(request->service());
  if (s == HealthCheckResponse::SERVICE_UNKNOWN) {
    return grpc::Status(grpc::StatusCode::NOT_FOUND, "unknown service '" + Clip(request->service()) + "'");
  }
  response->set_status(s);
  return grpc::Status::OK;
}

grpc::Status HealthService::Watch(grpc::ServerContext* context, const HealthCheckRequest* request,
                                  grpc::ServerWriter<HealthCheckResponse>* writer) {
  int64_t seen = -1;
  Status last = HealthCheckResponse::UNKNOWN;
  std::unique_lock<std::mutex> lock(mu_);
  if (watches_ >= max_watches_) {
    return grpc::Status(grpc::StatusCode::RESOURCE_EXHAUSTED,
                        std::to_string(max_watches_) + " health watches are open; poll Check instead");
  }
  ++watches_;
  struct Open {
    int& count;
    ~Open() { --count; }  // mu_ is held again whenever Watch returns
  } open{watches_};
  for (;;) {
    if (version_ != seen) {
      seen = version_;
      const Status now = StatusOf(request->service());
      const bool done = shut_down_;
      if (now != last) {  // the protocol sends changes only
        last = now;
        HealthCheckResponse msg;
        msg.set_status(now);
        lock.unlock();
        const bool written = writer->Write(msg);
        lock.lock();
        if (!written) return grpc::Status(grpc::StatusCode::CANCELLED, "client went away");
      }
      if (done) return grpc::Status::OK;
    }
    if (context->IsCancelled()) return grpc::Status(grpc::StatusCode::CANCELLED, "watch cancelled");
    // The timeout bounds how late a client's cancellation is noticed.
    changed_.wait_for(lock, std::chrono::milliseconds(500), [&] { return version_ != seen; });
  }
}

}  // namespace sharedllm::service
