#include "service/request_log.h"

#include "service/auth.h"

#include <chrono>
#include <cstdio>

#include <grpcpp/server_context.h>
#include <nlohmann/json.hpp>

// ThreadSanitizer's annotations (gcc and clang define __SANITIZE_THREAD__ under -fsanitize=thread).
#if defined(__SANITIZE_THREAD__)
extern "C" void __tsan_acquire(void* addr);
extern "C" void __tsan_release(void* addr);
#endif

namespace sharedllm::service {
namespace {

char g_calls_ended;  // the address TSan's annotations synchronise on

void CallEnded() {
#if defined(__SANITIZE_THREAD__)
  __tsan_release(&g_calls_ended);
#endif
}

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
      CallEnded();  // the handler has returned (this runs on its thread, before the status goes)
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

void AfterAllCalls() {
#if defined(__SANITIZE_THREAD__)
  __tsan_acquire(&g_calls_ended);
#endif
}

std::unique_ptr<grpc::experimental::ServerInterceptorFactoryInterface> MakeRequestLogFactory() {
  return std::make_unique<RequestLogFactory>();
}

}  // namespace sharedllm::service
