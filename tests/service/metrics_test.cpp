// service/metrics.h: the metric families of docs/user/metrics.md and the cpp-httplib /metrics endpoint.
// The endpoint is tested in a process that has loaded libtorch, where prometheus-cpp's civetweb
// Exposer cannot start (docs/design/decisions.md).
#include "service/metrics.h"

#include <gtest/gtest.h>
#include <httplib.h>

#include <unistd.h>

#include <cstdlib>
#include <fstream>
#include <regex>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

// From libtorch (ATen/Parallel.h); declared here rather than included to keep the test quick to
// compile. Calling it makes sure libtorch is really loaded into this process.
namespace at {
int get_num_threads();
}

namespace sharedllm::service {
namespace {

// The value of the sample `series` (metric name plus labels, exactly as serialized); NaN if absent.
double Sample(const std::string& text, const std::string& series) {
  std::istringstream in(text);
  std::string line;
  while (std::getline(in, line)) {
    if (line.size() > series.size() && line.compare(0, series.size(), series) == 0 &&
        line[series.size()] == ' ') {
      return std::stod(line.substr(series.size() + 1));
    }
  }
  return std::nan("");
}

const std::vector<std::pair<std::string, std::string>> kFamilies = {
    {"sharedllm_ask_requests_total", "counter"},
    {"sharedllm_ask_time_to_first_token_seconds", "histogram"},
    {"sharedllm_ask_inter_token_latency_seconds", "histogram"},
    {"sharedllm_ask_request_duration_seconds", "histogram"},
    {"sharedllm_ask_queue_duration_seconds", "histogram"},
    {"sharedllm_retrieval_duration_seconds", "histogram"},
    {"sharedllm_kv_load_duration_seconds", "histogram"},
    {"sharedllm_requests_running", "gauge"},
    {"sharedllm_requests_waiting", "gauge"},
    {"sharedllm_index_queue_depth", "gauge"},
    {"sharedllm_prompt_tokens_total", "counter"},
    {"sharedllm_generation_tokens_total", "counter"},
    {"sharedllm_compressor_tokens_total", "counter"},
    {"sharedllm_index_job_failures_total", "counter"},
    {"sharedllm_store_memory_bytes", "gauge"},
    {"sharedllm_build_info", "gauge"},
};

void RecordOneOfEach(Metrics& m) {
  m.AskFinished("OK", 1.5);
  m.ObserveTimeToFirstToken(0.2);
  m.ObserveInterTokenLatency(0.03);
  m.ObserveQueue(0.004);
  m.ObserveRetrieval(0.002);
  m.ObserveKvLoad(0.02);
  m.SetRequestsRunning(2);
  m.SetRequestsWaiting(5);
  m.SetIndexQueueDepth(3);
  m.AddPromptTokens(12);
  m.AddGenerationTokens(34);
  m.AddCompressorTokens(5678);
  m.IndexJobFailed("DEADLINE_EXCEEDED");
  m.SetStoreMemory(100, 200, -1);
}

TEST(MetricsTest, ExposesExactlyTheDesignedFamilies) {
  Metrics m("0.1.0", "tiny-llama");
  RecordOneOfEach(m);
  const std::string text = m.Serialize();
  for (const auto& [name, type] : kFamilies) {
    EXPECT_NE(text.find("# TYPE " + name + " " + type + "\n"), std::string::npos)
        << name << " " << type << " missing in\n" << text;
  }
  // No other family, and no colons in names.
  int types = 0;
  std::istringstream in(text);
  std::string line;
  while (std::getline(in, line)) {
    if (line.rfind("# TYPE ", 0) == 0) ++types;
    if (line.empty() || line[0] == '#') continue;
    const std::string name = line.substr(0, line.find_first_of("{ "));
    EXPECT_EQ(name.find(':'), std::string::npos) << line;
    EXPECT_EQ(name.rfind("sharedllm_", 0), 0u) << line;
  }
  EXPECT_EQ(types, static_cast<int>(kFamilies.size())) << text;
}

TEST(MetricsTest, RecordsValues) {
  Metrics m("0.1.0", "tiny-llama");
  RecordOneOfEach(m);
  const std::string text = m.Serialize();
  EXPECT_EQ(Sample(text, "sharedllm_build_info{model=\"tiny-llama\",version=\"0.1.0\"}"), 1);
  EXPECT_EQ(Sample(text, "sharedllm_ask_requests_total{status=\"OK\"}"), 1);
  EXPECT_EQ(Sample(text, "sharedllm_ask_requests_total{status=\"CANCELLED\"}"), 0);
  EXPECT_EQ(Sample(text, "sharedllm_requests_running"), 2);
  EXPECT_EQ(Sample(text, "sharedllm_requests_waiting"), 5);
  EXPECT_EQ(Sample(text, "sharedllm_index_queue_depth"), 3);
  EXPECT_EQ(Sample(text, "sharedllm_prompt_tokens_total"), 12);
  EXPECT_EQ(Sample(text, "sharedllm_generation_tokens_total"), 34);
  EXPECT_EQ(Sample(text, "sharedllm_compressor_tokens_total"), 5678);
  EXPECT_EQ(Sample(text, "sharedllm_index_job_failures_total{reason=\"DEADLINE_EXCEEDED\"}"), 1);
  EXPECT_EQ(Sample(text, "sharedllm_store_memory_bytes{kind=\"memtables\"}"), 100);
  EXPECT_EQ(Sample(text, "sharedllm_store_memory_bytes{kind=\"block_cache\"}"), 200);
  EXPECT_EQ(text.find("kind=\"table_readers\""), std::string::npos) << "not known: left out";
  EXPECT_EQ(Sample(text, "sharedllm_ask_request_duration_seconds_count"), 1);
  EXPECT_DOUBLE_EQ(Sample(text, "sharedllm_ask_request_duration_seconds_sum"), 1.5);
  EXPECT_EQ(Sample(text, "sharedllm_ask_request_duration_seconds_bucket{le=\"1\"}"), 0);
  EXPECT_EQ(Sample(text, "sharedllm_ask_request_duration_seconds_bucket{le=\"2.5\"}"), 1);
  EXPECT_EQ(Sample(text, "sharedllm_ask_request_duration_seconds_bucket{le=\"+Inf\"}"), 1);
  for (const char* h :
       {"sharedllm_ask_time_to_first_token_seconds", "sharedllm_ask_inter_token_latency_seconds",
        "sharedllm_ask_queue_duration_seconds", "sharedllm_retrieval_duration_seconds",
        "sharedllm_kv_load_duration_seconds"}) {
    EXPECT_EQ(Sample(text, std::string(h) + "_count"), 1) << h;
  }
}

TEST(MetricsTest, HistogramCountsMove) {
  Metrics m("v", "m");
  const std::string series = "sharedllm_ask_inter_token_latency_seconds_count";
  EXPECT_EQ(Sample(m.Serialize(), series), 0);
  for (int i = 0; i < 7; ++i) m.ObserveInterTokenLatency(0.01 * i);
  EXPECT_EQ(Sample(m.Serialize(), series), 7);
  m.ObserveTimeToFirstToken(-1);  // a clock oddity counts as 0, in the first bucket
  const std::string text = m.Serialize();
  EXPECT_EQ(Sample(text, "sharedllm_ask_time_to_first_token_seconds_bucket{le=\"0.01\"}"), 1);
  EXPECT_EQ(Sample(text, "sharedllm_ask_time_to_first_token_seconds_sum"), 0);
}

TEST(MetricsTest, BoundsLabelCardinality) {
  Metrics m("v", "m");
  m.AskFinished("OK", 0.1);
  m.AskFinished("NOT_A_CODE", 0.1);
  m.AskFinished("ok", 0.1);
  EXPECT_EQ(Sample(m.Serialize(), "sharedllm_ask_requests_total{status=\"UNKNOWN\"}"), 2);
  EXPECT_EQ(Sample(m.Serialize(), "sharedllm_ask_requests_total{status=\"OK\"}"), 1);

  m.IndexJobFailed("bad reason with spaces");
  m.IndexJobFailed("");
  EXPECT_EQ(Sample(m.Serialize(), "sharedllm_index_job_failures_total{reason=\"other\"}"), 2);
  for (int i = 0; i < 100; ++i) m.IndexJobFailed("reason_" + std::to_string(i));
  const std::string text = m.Serialize();
  int series = 0;
  std::istringstream in(text);
  std::string line;
  while (std::getline(in, line)) {
    if (line.rfind("sharedllm_index_job_failures_total{", 0) == 0) ++series;
  }
  EXPECT_LE(series, Metrics::kMaxFailureReasons + 1);
  EXPECT_EQ(Sample(text, "sharedllm_index_job_failures_total{reason=\"reason_0\"}"), 1);
}

TEST(MetricsTest, CountersIgnoreNegativeAmounts) {
  Metrics m("v", "m");
  m.AddGenerationTokens(5);
  m.AddGenerationTokens(-3);
  m.AddGenerationTokens(0);
  EXPECT_EQ(Sample(m.Serialize(), "sharedllm_generation_tokens_total"), 5);
}

TEST(MetricsTest, ConcurrentUpdates) {
  Metrics m("v", "m");
  std::vector<std::thread> threads;
  for (int t = 0; t < 4; ++t) {
    threads.emplace_back([&m] {
      for (int i = 0; i < 1000; ++i) {
        m.AskFinished(i % 2 ? "OK" : "CANCELLED", 0.01);
        m.AddGenerationTokens(1);
        m.IndexJobFailed("INTERNAL");
      }
    });
  }
  for (auto& t : threads) t.join();
  const std::string text = m.Serialize();
  EXPECT_EQ(Sample(text, "sharedllm_ask_requests_total{status=\"OK\"}"), 2000);
  EXPECT_EQ(Sample(text, "sharedllm_ask_requests_total{status=\"CANCELLED\"}"), 2000);
  EXPECT_EQ(Sample(text, "sharedllm_generation_tokens_total"), 4000);
  EXPECT_EQ(Sample(text, "sharedllm_index_job_failures_total{reason=\"INTERNAL\"}"), 4000);
  EXPECT_EQ(Sample(text, "sharedllm_ask_request_duration_seconds_count"), 4000);
}

// promtool (Debian package prometheus) lints the exposition: naming conventions, units, types.
TEST(MetricsTest, PassesPromtoolLint) {
  const std::string promtool = SHAREDLLM_PROMTOOL;
  if (promtool.empty()) GTEST_SKIP() << "promtool not found (apt-get install prometheus)";
  Metrics m("0.1.0", "tiny-llama");
  RecordOneOfEach(m);
  char path[] = "/tmp/sharedllm_metrics_XXXXXX";
  const int fd = ::mkstemp(path);
  ASSERT_GE(fd, 0);
  const std::string text = m.Serialize();
  ASSERT_EQ(::write(fd, text.data(), text.size()), static_cast<ssize_t>(text.size()));
  ::close(fd);
  const std::string out_path = std::string(path) + ".out";
  const std::string cmd =
      promtool + " check metrics < " + path + " > " + out_path + " 2>&1";
  const int rc = std::system(cmd.c_str());
  std::ifstream in(out_path);
  std::stringstream out;
  out << in.rdbuf();
  ::unlink(path);
  ::unlink(out_path.c_str());
  EXPECT_EQ(rc, 0) << out.str();
  EXPECT_EQ(out.str(), "") << out.str();
}

TEST(ParseHostPortTest, Forms) {
  std::string host;
  int port = -1;
  ASSERT_TRUE(ParseHostPort("127.0.0.1:9090", &host, &port).ok());
  EXPECT_EQ(host, "127.0.0.1");
  EXPECT_EQ(port, 9090);
  ASSERT_TRUE(ParseHostPort(":0", &host, &port).ok());
  EXPECT_EQ(host, "");
  EXPECT_EQ(port, 0);
  ASSERT_TRUE(ParseHostPort("[::1]:65535", &host, &port).ok());
  EXPECT_EQ(host, "::1");
  EXPECT_EQ(port, 65535);
  ASSERT_TRUE(ParseHostPort("localhost:80", &host, &port).ok());
  EXPECT_EQ(host, "localhost");
  for (const char* bad : {"", "9090", "host:", "host:x", "host:65536", "host:-1", "::1:80",
                          "[::1]", "[::1", "[]:80", "host:80 "}) {
    EXPECT_EQ(ParseHostPort(bad, &host, &port).code(), absl::StatusCode::kInvalidArgument) << bad;
  }
}

bool LibtorchLoaded() {
  std::ifstream maps("/proc/self/maps");
  std::string line;
  while (std::getline(maps, line)) {
    if (line.find("libtorch") != std::string::npos) return true;
  }
  return false;
}

TEST(MetricsServerTest, ServesMetricsOverHttpInALibtorchProcess) {
  ASSERT_GE(at::get_num_threads(), 1);
  ASSERT_TRUE(LibtorchLoaded()) << "the test must run where civetweb's small stacks would fail";

  Metrics m("0.1.0", "tiny");
  m.AddGenerationTokens(42);
  auto server = MetricsServer::Start(m, "127.0.0.1:0");
  ASSERT_TRUE(server.ok()) << server.status();
  const int port = (*server)->port();
  ASSERT_GT(port, 0);

  httplib::Client client("127.0.0.1", port);
  client.set_connection_timeout(5, 0);
  client.set_read_timeout(5, 0);
  auto res = client.Get("/metrics");
  ASSERT_TRUE(res) << httplib::to_string(res.error());
  EXPECT_EQ(res->status, 200);
  EXPECT_EQ(res->get_header_value("Content-Type"), "text/plain; version=0.0.4; charset=utf-8");
  EXPECT_EQ(Sample(res->body, "sharedllm_generation_tokens_total"), 42) << res->body;

  // Values move between scrapes.
  m.AddGenerationTokens(8);
  res = client.Get("/metrics");
  ASSERT_TRUE(res);
  EXPECT_EQ(Sample(res->body, "sharedllm_generation_tokens_total"), 50);

  // Compressed when the scraper asks for it (Prometheus sends Accept-Encoding: gzip).
  httplib::Client gz("127.0.0.1", port);
  gz.set_decompress(true);
  res = gz.Get("/metrics", {{"Accept-Encoding", "gzip"}});
  ASSERT_TRUE(res);
  EXPECT_EQ(Sample(res->body, "sharedllm_generation_tokens_total"), 50);

  res = client.Get("/other");
  ASSERT_TRUE(res);
  EXPECT_EQ(res->status, 404);

  // Stopping releases the port.
  server->reset();
  httplib::Client after("127.0.0.1", port);
  after.set_connection_timeout(1, 0);
  EXPECT_FALSE(after.Get("/metrics"));
}

TEST(MetricsServerTest, StartsAndStopsRepeatedly) {
  Metrics m("v", "m");
  for (int i = 0; i < 20; ++i) {
    auto server = MetricsServer::Start(m, "127.0.0.1:0");
    ASSERT_TRUE(server.ok()) << server.status();
  }
}

TEST(MetricsServerTest, ReportsBindErrors) {
  Metrics m("v", "m");
  auto first = MetricsServer::Start(m, "127.0.0.1:0");
  ASSERT_TRUE(first.ok()) << first.status();
  auto second = MetricsServer::Start(m, "127.0.0.1:" + std::to_string((*first)->port()));
  ASSERT_FALSE(second.ok());
  EXPECT_EQ(second.status().code(), absl::StatusCode::kUnavailable);
  EXPECT_EQ(MetricsServer::Start(m, "nonsense").status().code(),
            absl::StatusCode::kInvalidArgument);
}

}  // namespace
}  // namespace sharedllm::service
