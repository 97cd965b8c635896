#include "service/metrics.h"

#include "service/auth.h"

#include <httplib.h>
#include <sys/socket.h>

#include <atomic>
#include <chrono>
#include <cstdlib>
#include <sstream>
#include <thread>
#include <utility>

#include "absl/status/status.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "prometheus/text_serializer.h"

namespace sharedllm::service {
namespace {

bool IsCodeName(const std::string& s) {
  for (int c = 0; c < kNumStatusCodes; ++c) {
    if (s == StatusCodeName(static_cast<grpc::StatusCode>(c))) return true;
  }
  return false;
}

bool IsReasonToken(const std::string& s) {
  if (s.empty() || s.size() > 64) return false;
  for (char c : s) {
    const bool ok = (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') ||
                    c == '_' || c == '.' || c == '-';
    if (!ok) return false;
  }
  return true;
}

prometheus::Histogram& MakeHistogram(prometheus::Registry& registry, const std::string& name,
                                     const std::string& help,
                                     const prometheus::Histogram::BucketBoundaries& buckets) {
  return prometheus::BuildHistogram().Name(name).Help(help).Register(registry).Add({}, buckets);
}

prometheus::Gauge& MakeGauge(prometheus::Registry& registry, const std::string& name,
                             const std::string& help) {
  return prometheus::BuildGauge().Name(name).Help(help).Register(registry).Add({});
}

prometheus::Counter& MakeCounter(prometheus::Registry& registry, const std::string& name,
                                 const std::string& help) {
  return prometheus::BuildCounter().Name(name).Help(help).Register(registry).Add({});
}

// Histogram observations in seconds; NaN and negative durations (a clock oddity) count as 0.
double Seconds(double s) { return s > 0 ? s : 0.0; }

}  // namespace

Metrics::Metrics(const std::string& version, const std::string& model_name)
    : registry_(std::make_shared<prometheus::Registry>()) {
  auto& r = *registry_;
  ask_requests_ = &prometheus::BuildCounter()
                       .Name("sharedllm_ask_requests_total")
                       .Help("Finished Ask requests by gRPC status code name.")
                       .Register(r);
  // Every code starts at 0, so rate() and absent-series alerts work from the first scrape.
  for (int c = 0; c < kNumStatusCodes; ++c) {
    ask_requests_->Add({{"status", StatusCodeName(static_cast<grpc::StatusCode>(c))}});
  }

  // Buckets in seconds. A token takes milliseconds on a GPU and up to ~1 s for a large model on
  // 2 CPU cores; a whole answer up to minutes.
  ttft_ = &MakeHistogram(r, "sharedllm_ask_time_to_first_token_seconds",
                         "Time from receiving an Ask to its first answer token.",
                         {0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 20, 30, 60, 120});
  inter_token_ = &MakeHistogram(r, "sharedllm_ask_inter_token_latency_seconds",
                                "Time between consecutive answer tokens of an Ask.",
                                {0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5,
                                 1, 2.5, 5});
  request_duration_ = &MakeHistogram(r, "sharedllm_ask_request_duration_seconds",
                                     "Total duration of an Ask, from receipt to its last message.",
                                     {0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 20, 30, 60, 120, 300,
                                      600});
  queue_ = &MakeHistogram(r, "sharedllm_ask_queue_duration_seconds",
                          "Time an Ask waited in the query queue before it ran.",
                          {0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60,
                           120});
  retrieval_ = &MakeHistogram(r, "sharedllm_retrieval_duration_seconds",
                              "Time to search the stored node vectors of the asked documents.",
                              {0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5,
                               1, 2.5, 5});
  kv_load_ = &MakeHistogram(r, "sharedllm_kv_load_duration_seconds",
                            "Time to load the selected nodes' keys/values from the tree store.",
                            {0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5,
                             10, 30});

  requests_running_ = &MakeGauge(r, "sharedllm_requests_running", "Ask requests being generated.");
  requests_waiting_ =
      &MakeGauge(r, "sharedllm_requests_waiting", "Ask requests waiting in the query queue.");
  index_queue_depth_ = &MakeGauge(r, "sharedllm_index_queue_depth",
                                  "Index jobs queued or running (documents being ingested).");

  prompt_tokens_ = &MakeCounter(r, "sharedllm_prompt_tokens_total",
                                "Question tokens read by the upper model.");
  generation_tokens_ =
      &MakeCounter(r, "sharedllm_generation_tokens_total", "Answer tokens generated.");
  compressor_tokens_ = &MakeCounter(r, "sharedllm_compressor_tokens_total",
                                    "Document tokens encoded by the lower model (compressor).");
  store_memory_ = &prometheus::BuildGauge()
                       .Name("sharedllm_store_memory_bytes")
                       .Help("Memory the tree store holds on purpose (bounded by its settings), by "
                             "kind: unflushed writes, the block cache, table index and filters.")
                       .Register(r);
  index_job_failures_ = &prometheus::BuildCounter()
                             .Name("sharedllm_index_job_failures_total")
                             .Help("Index jobs that ended FAILED, by reason.")
                             .Register(r);

  prometheus::BuildGauge()
      .Name("sharedllm_build_info")
      .Help("Build and model of this process; the value is always 1.")
      .Register(r)
      .Add({{"version", version}, {"model", model_name}})
      .Set(1);
}

Metrics::~Metrics() = default;

void Metrics::AskFinished(const std::string& status, double duration_seconds) {
  ask_requests_->Add({{"status", IsCodeName(status) ? status : std::string("UNKNOWN")}})
      .Increment();
  request_duration_->Observe(Seconds(duration_seconds));
}

void Metrics::ObserveTimeToFirstToken(double seconds) { ttft_->Observe(Seconds(seconds)); }
void Metrics::ObserveInterTokenLatency(double seconds) { inter_token_->Observe(Seconds(seconds)); }
void Metrics::ObserveQueue(double seconds) { queue_->Observe(Seconds(seconds)); }
void Metrics::ObserveRetrieval(double seconds) { retrieval_->Observe(Seconds(seconds)); }
void Metrics::ObserveKvLoad(double seconds) { kv_load_->Observe(Seconds(seconds)); }

void Metrics::SetRequestsRunning(int64_t n) { requests_running_->Set(static_cast<double>(n)); }
void Metrics::SetRequestsWaiting(int64_t n) { requests_waiting_->Set(static_cast<double>(n)); }
void Metrics::SetIndexQueueDepth(int64_t n) { index_queue_depth_->Set(static_cast<double>(n)); }

void Metrics::AddPromptTokens(int64_t n) {
  if (n > 0) prompt_tokens_->Increment(static_cast<double>(n));
}
void Metrics::AddGenerationTokens(int64_t n) {
  if (n > 0) generation_tokens_->Increment(static_cast<double>(n));
}
void Metrics::AddCompressorTokens(int64_t n) {
  if (n > 0) compressor_tokens_->Increment(static_cast<double>(n));
}

void Metrics::IndexJobFailed(const std::string& reason) {
  std::string label = IsReasonToken(reason) ? reason : "other";
  {
    std::lock_guard<std::mutex> lock(reasons_mu_);
    if (!reasons_.count(label)) {
      if (static_cast<int>(reasons_.size()) >= kMaxFailureReasons) label = "other";
      reasons_.insert(label);
    }
  }
  index_job_failures_->Add({{"reason", label}}).Increment();
}

void Metrics::SetStoreMemory(int64_t memtables, int64_t block_cache, int64_t table_readers) {
  for (const auto& [kind, bytes] : {std::pair<const char*, int64_t>{"memtables", memtables},
                                    {"block_cache", block_cache},
                                    {"table_readers", table_readers}}) {
    if (bytes >= 0) store_memory_->Add({{"kind", kind}}).Set(static_cast<double>(bytes));
  }
}

void Metrics::OnScrape(std::function<void()> hook) {
  std::lock_guard<std::mutex> lock(scrape_mu_);
  on_scrape_ = std::move(hook);
}

std::string Metrics::Serialize() const {
  {
    std::lock_guard<std::mutex> lock(scrape_mu_);
    if (on_scrape_) on_scrape_();
  }
  std::ostringstream out;
  prometheus::TextSerializer().Serialize(out, registry_->Collect());
  return out.str();
}

// ---------------------------------------------------------------------------------------------

absl::Status ParseHostPort(const std::string& host_port, std::string* host, int* port) {
  const auto bad = [&](const char* why) {
    return absl::InvalidArgumentError(
        absl::StrCat("bad address '", host_port, "' (want HOST:PORT, [V6]:PORT or :PORT): ", why));
  };
  std::string h, p;
  if (!host_port.empty() && host_port[0] == '[') {
    const size_t close = host_port.find(']');
    if (close == std::string::npos) return bad("unterminated '['");
    h = host_port.substr(1, close - 1);
    if (h.empty()) return bad("empty IPv6 address");
    if (close + 1 >= host_port.size() || host_port[close + 1] != ':') return bad("no port");
    p = host_port.substr(close + 2);
  } else {
    const size_t colon = host_port.rfind(':');
    if (colon == std::string::npos) return bad("no port");
    h = host_port.substr(0, colon);
    if (h.find(':') != std::string::npos) return bad("IPv6 addresses need brackets");
    p = host_port.substr(colon + 1);
  }
  int value = 0;
  if (p.empty() || p.find_first_not_of("0123456789") != std::string::npos ||
      !absl::SimpleAtoi(p, &value) || value < 0 || value > 65535) {
    return bad("port must be 0-65535");
  }
  *host = h;
  *port = value;
  return absl::OkStatus();
}

struct MetricsServer::Impl {
  httplib::Server server;
  std::thread thread;
  std::atomic<bool> listen_returned{false};
};

MetricsServer::MetricsServer(std::unique_ptr<Impl> impl, int port)
    : impl_(std::move(impl)), port_(port) {}

MetricsServer::~MetricsServer() {
  if (!impl_) return;
  impl_->server.stop();
  if (impl_->thread.joinable()) impl_->thread.join();
}

absl::StatusOr<std::unique_ptr<MetricsServer>> MetricsServer::Start(const Metrics& metrics,
                                                                    const std::string& host_port) {
  std::string host;
  int port = 0;
  if (absl::Status s = ParseHostPort(host_port, &host, &port); !s.ok()) return s;
  if (host.empty()) host = "0.0.0.0";

  auto impl = std::make_unique<Impl>();
  httplib::Server& server = impl->server;
  server.set_payload_max_length(64 * 1024);  // /metrics takes no body
  server.set_read_timeout(10, 0);
  server.set_write_timeout(10, 0);
  // httplib's default also sets SO_REUSEPORT, which lets a second process bind the same port and
  // silently take half of the scrapes; keep SO_REUSEADDR only (restart without TIME_WAIT trouble).
  server.set_socket_options([](socket_t sock) {
    int yes = 1;
    ::setsockopt(sock, SOL_SOCKET, SO_REUSEADDR, &yes, sizeof yes);
  });
  const Metrics* m = &metrics;
  server.Get("/metrics", [m](const httplib::Request&, httplib::Response& res) {
    res.set_content(m->Serialize(), "text/plain; version=0.0.4; charset=utf-8");
  });

  int bound = port;
  if (port == 0) {
    bound = server.bind_to_any_port(host);
    if (bound < 0) {
      return absl::UnavailableError(
          absl::StrCat("metrics endpoint: cannot bind ", host, " to any port"));
    }
  } else if (!server.bind_to_port(host, port)) {
    return absl::UnavailableError(absl::StrCat("metrics endpoint: cannot bind ", host_port,
                                               " (address in use or not local?)"));
  }

  // The socket is bound and listening; connections queue until the accept loop runs.
  Impl* raw = impl.get();
  raw->thread = std::thread([raw] {
    raw->server.listen_after_bind();
    raw->listen_returned = true;
  });
  // httplib's stop() only works once listen_after_bind() has marked the server running, so wait
  // for that here: otherwise a server destroyed at once would never stop.
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(10);
  while (!raw->server.is_running() && !raw->listen_returned) {
    if (std::chrono::steady_clock::now() > deadline) {
      // Unreachable in practice; detach rather than hang. (The Impl leaks deliberately.)
      raw->thread.detach();
      impl.release();
      return absl::InternalError("metrics endpoint: HTTP server thread did not start");
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(1));
  }
  if (raw->listen_returned && !raw->server.is_running()) {
    raw->thread.join();
    return absl::UnavailableError(absl::StrCat("metrics endpoint on ", host_port, " stopped at once"));
  }
  return std::unique_ptr<MetricsServer>(new MetricsServer(std::move(impl), bound));
}

}  // namespace sharedllm::service
