// A real Prometheus server (Debian package prometheus) scrapes a MetricsServer running in this
// process (which has libtorch loaded), and its query API returns the values recorded here.
#include <arpa/inet.h>
#include <gtest/gtest.h>
#include <httplib.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <nlohmann/json.hpp>
#include <string>
#include <thread>

#include "service/metrics.h"
#include "tests/test_util.h"

namespace at {
int get_num_threads();  // libtorch (ATen/Parallel.h): makes sure libtorch is loaded
}

namespace sharedllm::service {
namespace {

int FreePort() {
  const int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  addr.sin_port = 0;
  socklen_t len = sizeof addr;
  int port = -1;
  if (::bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) == 0 &&
      ::getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len) == 0) {
    port = ntohs(addr.sin_port);
  }
  ::close(fd);
  return port;
}

// Runs prometheus until destroyed (SIGTERM, then waits).
class Prometheus {
 public:
  Prometheus(const std::string& binary, const test::TempDir& dir, int web_port, int target_port)
      : log_(dir / "prometheus.log") {
    test::WriteFile(dir / "prometheus.yml",
                    "global:\n"
                    "  scrape_interval: 1s\n"
                    "  scrape_timeout: 1s\n"
                    "scrape_configs:\n"
                    "  - job_name: sharedllm\n"
                    "    static_configs:\n"
                    "      - targets: ['127.0.0.1:" + std::to_string(target_port) + "']\n");
    const std::string config = "--config.file=" + dir / "prometheus.yml";
    const std::string storage = "--storage.tsdb.path=" + dir.Mkdir("data");
    const std::string listen = "--web.listen-address=127.0.0.1:" + std::to_string(web_port);
    pid_ = ::fork();
    if (pid_ == 0) {
      FILE* out = std::freopen(log_.c_str(), "w", stdout);
      (void)out;
      ::dup2(STDOUT_FILENO, STDERR_FILENO);
      ::execl(binary.c_str(), binary.c_str(), config.c_str(), storage.c_str(), listen.c_str(),
              "--log.level=warn", static_cast<char*>(nullptr));
      ::_exit(127);
    }
  }
  ~Prometheus() {
    if (pid_ > 0) {
      ::kill(pid_, SIGTERM);
      int status = 0;
      ::waitpid(pid_, &status, 0);
    }
  }
  bool started() const { return pid_ > 0; }
  std::string Log() const { return test::Exists(log_) ? test::ReadFile(log_) : ""; }

 private:
  std::string log_;
  pid_t pid_ = -1;
};

// The value of a single-sample instant query; NaN until Prometheus has it.
double Query(httplib::Client& api, const std::string& promql) {
  auto res = api.Get("/api/v1/query", httplib::Params{{"query", promql}}, httplib::Headers{});
  if (!res || res->status != 200) return std::nan("");
  const auto j = nlohmann::json::parse(res->body, nullptr, false);
  if (j.is_discarded() || j.value("status", "") != "success") return std::nan("");
  const auto& result = j["data"]["result"];
  if (!result.is_array() || result.size() != 1) return std::nan("");
  return std::stod(result[0]["value"][1].get<std::string>());
}

TEST(PrometheusScrapeTest, ScrapesTheMetricsEndpoint) {
  const std::string binary = SHAREDLLM_PROMETHEUS;
  if (binary.empty()) GTEST_SKIP() << "prometheus not found (apt-get install prometheus)";
  ASSERT_GE(at::get_num_threads(), 1);

  Metrics metrics("0.1.0", "tiny-llama");
  metrics.AddGenerationTokens(42);
  metrics.AskFinished("OK", 0.3);
  metrics.AskFinished("CANCELLED", 2.0);
  metrics.IndexJobFailed("DATA_LOSS");
  auto server = MetricsServer::Start(metrics, "127.0.0.1:0");
  ASSERT_TRUE(server.ok()) << server.status();

  test::TempDir dir;
  const int web_port = FreePort();
  ASSERT_GT(web_port, 0);
  Prometheus prometheus(binary, dir, web_port, (*server)->port());
  ASSERT_TRUE(prometheus.started());

  httplib::Client api("127.0.0.1", web_port);
  api.set_connection_timeout(1, 0);
  api.set_read_timeout(5, 0);
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(60);
  double up = std::nan(""), tokens = std::nan("");
  while (std::chrono::steady_clock::now() < deadline) {
    up = Query(api, "up{job=\"sharedllm\"}");
    tokens = Query(api, "sharedllm_generation_tokens_total");
    if (up == 1 && tokens == 42) break;
    std::this_thread::sleep_for(std::chrono::milliseconds(250));
  }
  ASSERT_EQ(up, 1) << prometheus.Log();
  EXPECT_EQ(tokens, 42);
  EXPECT_EQ(Query(api, "sharedllm_ask_requests_total{status=\"CANCELLED\"}"), 1);
  EXPECT_EQ(Query(api, "sum(sharedllm_ask_requests_total)"), 2);
  EXPECT_EQ(Query(api, "sharedllm_ask_request_duration_seconds_count"), 2);
  EXPECT_EQ(Query(api, "sharedllm_ask_request_duration_seconds_bucket{le=\"0.5\"}"), 1);
  EXPECT_EQ(Query(api, "sharedllm_index_job_failures_total{reason=\"DATA_LOSS\"}"), 1);
  EXPECT_EQ(Query(api, "sharedllm_build_info{version=\"0.1.0\",model=\"tiny-llama\"}"), 1);
}

}  // namespace
}  // namespace sharedllm::service
