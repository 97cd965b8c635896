// Prometheus metrics of the service (docs/user/metrics.md) and the HTTP endpoint that serves them.
//
// prometheus-cpp's own `Exposer` (civetweb, 100 KB worker stacks) cannot start in a process that
// has loaded Debian's libtorch (docs/design/decisions.md), so `MetricsServer` serves the registry's text
// exposition with cpp-httplib instead, whose workers are std::threads with the default stack.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <set>
#include <string>

#include "absl/status/statusor.h"
#include "prometheus/counter.h"
#include "prometheus/family.h"
#include "prometheus/gauge.h"
#include "prometheus/histogram.h"
#include "prometheus/registry.h"

namespace sharedllm::service {

// Owns a prometheus::Registry with exactly the metric families of docs/user/metrics.md. Every method is
// thread-safe and cheap enough to call per token.
class Metrics {
 public:
  // Sets sharedllm_build_info{version, model} to 1.
  Metrics(const std::string& version, const std::string& model_name);
  ~Metrics();
  Metrics(const Metrics&) = delete;
  Metrics& operator=(const Metrics&) = delete;

  // One finished Ask: sharedllm_ask_requests_total{status} += 1 and the request-duration
  // histogram. `status` is a canonical gRPC code name ("OK", "CANCELLED", ...); anything else is
  // counted as "UNKNOWN" so that the label's cardinality stays bounded.
  void AskFinished(const std::string& status, double duration_seconds);
  void ObserveTimeToFirstToken(double seconds);
  void ObserveInterTokenLatency(double seconds);
  void ObserveQueue(double seconds);
  void ObserveRetrieval(double seconds);
  void ObserveKvLoad(double seconds);

  void SetRequestsRunning(int64_t n);
  void SetRequestsWaiting(int64_t n);
  void SetIndexQueueDepth(int64_t n);
  // sharedllm_store_memory_bytes{kind="memtables"|"block_cache"|"table_readers"}; a negative
  // amount (not known) leaves that series out.
  void SetStoreMemory(int64_t memtables, int64_t block_cache, int64_t table_readers);
  // Runs `hook` at the start of every Serialize() (a scrape), e.g. to read gauges that are cheaper
  // to read on demand than to keep current; replaces the previous one; empty: none.
  void OnScrape(std::function<void()> hook);

  // Counters; negative amounts are ignored (counters only go up).
  void AddPromptTokens(int64_t n);
  void AddGenerationTokens(int64_t n);
  void AddCompressorTokens(int64_t n);

  // sharedllm_index_job_failures_total{reason} += 1. `reason` should be a short token such as a
  // gRPC code name ("DEADLINE_EXCEEDED"); values that are not 1-64 characters of [A-Za-z0-9_.-],
  // and new values beyond the first kMaxFailureReasons distinct ones, are counted as "other".
  void IndexJobFailed(const std::string& reason);
  static constexpr int kMaxFailureReasons = 32;

  // The Prometheus text exposition format (version 0.0.4) of every family.
  std::string Serialize() const;

  prometheus::Registry& registry() { return *registry_; }

 private:
  std::shared_ptr<prometheus::Registry> registry_;

  prometheus::Family<prometheus::Counter>* ask_requests_ = nullptr;
  prometheus::Histogram* ttft_ = nullptr;
  prometheus::Histogram* inter_token_ = nullptr;
  prometheus::Histogram* request_duration_ = nullptr;
  prometheus::Histogram* queue_ = nullptr;
  prometheus::Histogram* retrieval_ = nullptr;
  prometheus::Histogram* kv_load_ = nullptr;
  prometheus::Gauge* requests_running_ = nullptr;
  prometheus::Gauge* requests_waiting_ = nullptr;
  prometheus::Gauge* index_queue_depth_ = nullptr;
  prometheus::Counter* prompt_tokens_ = nullptr;
  prometheus::Counter* generation_tokens_ = nullptr;
  prometheus::Counter* compressor_tokens_ = nullptr;
  prometheus::Family<prometheus::Counter>* index_job_failures_ = nullptr;
  prometheus::Family<prometheus::Gauge>* store_memory_ = nullptr;
  mutable std::mutex scrape_mu_;
  std::function<void()> on_scrape_;  // under scrape_mu_

  std::mutex reasons_mu_;
  std::set<std::string> reasons_;  // distinct failure reasons seen so far
};

// Serves `GET /metrics` (text exposition of a Metrics) over plain HTTP with cpp-httplib on its own
// thread. Every other path answers 404. The Metrics must outlive the server.
class MetricsServer {
 public:
  // host_port: "HOST:PORT", "[V6ADDR]:PORT" or ":PORT" (all interfaces, 0.0.0.0). Port 0 picks a
  // free port; port() reports the bound one. The socket is listening when this returns.
  // INVALID_ARGUMENT for a malformed host_port, UNAVAILABLE when the address cannot be bound.
  static absl::StatusOr<std::unique_ptr<MetricsServer>> Start(const Metrics& metrics,
                                                                const std::string& host_port);
  ~MetricsServer();  // stops serving and joins the thread
  MetricsServer(const MetricsServer&) = delete;
  MetricsServer& operator=(const MetricsServer&) = delete;

  int port() const { return port_; }

 private:
  struct Impl;
  explicit MetricsServer(std::unique_ptr<Impl> impl, int port);
  std::unique_ptr<Impl> impl_;
  int port_ = 0;
};

// Splits "HOST:PORT" / "[V6]:PORT" / ":PORT" into host ("" for the last form) and port 0-65535.
absl::Status ParseHostPort(const std::string& host_port, std::string* host, int* port);

}  // namespace sharedllm::service
