#include "service/request_log.h"

#include "service/auth.h"

#include <chrono>
#include <cstdio>

#include <grpcpp/server_context.h>
#include <nlohmann/json.hpp>

namespace sharedllm::service {
namespace {

class RequestLog : public grpc::experimental::Interceptor {
 public:
  explicit RequestLog(grpc::experimental::ServerRpcInfo* info)
      : info_(info), start_(std::chrono::steady_clock::now()) {}

  void Intercept(grpc::experimental::InterceptorBatchMethods* methods) override {
    using grpc::experimental::InterceptionHookPoints;
    if (methods->QueryInterceptionHookPoint(InterceptionHookPoints::PRE_SEND_STATUS)) {
      const grpc::Status status = methods->GetSendStatus();
      const double seconds =
          std::chrono::duration<double>(std::chrono::steady_clock::now() - start_).count();
      nlohmann::json line = {
          {"ts_unix_ms", std::chrono::duration_cast<std::chrono::milliseconds>(
                             std::chrono::system_clock::now().time_since_epoch()).count()},
          {"rpc", info_->method()},
          {"peer", info_->server_context() ? info_->server_context()->peer() : ""},
          {"code", StatusCodeName(status.error_code())},
          {"seconds", seconds}};
      if (!status.ok()) line["message"] = status.error_message();
      std::fprintf(stderr, "%s\n", line.dump().c_str());
    }
    methods->Proceed();
  }

 private:
  grpc::experimental::ServerRpcInfo* info_;
  std::chrono::steady_clock::time_point start_;
};

class RequestLogFactory : public grpc::experimental::ServerInterceptorFactoryInterface {
 public:
  grpc::experimental::Interceptor* CreateServerInterceptor(
      grpc::experimental::ServerRpcInfo* info) override {
    return new RequestLog(info);
  }
};

}  // namespace

std::unique_ptr<grpc::experimental::ServerInterceptorFactoryInterface> MakeRequestLogFactory() {
  return std::make_unique<RequestLogFactory>();
}

}  // namespace sharedllm::service
