// `sharedllm-load`: a bounded load generator for the SharedLLM gRPC service (proto/sharedllm/v1).
//
//   sharedllm-load --server HOST:PORT [--api-key K] --document F --asks N --uploads M
//                  --duration S [--question TEXT] [--max-tokens T] [--server-pid PID] [--json]
//
// Uploads F once as `load-base` and waits until it is READY, then for S seconds runs N threads
// that each ask a streaming question about it in a loop, and M threads that each upload a copy of F
// under a fresh id, wait for READY and delete it. New requests stop at S seconds; requests still
// in flight get --grace seconds more, then are cut (and counted apart, not as errors). The server
// must be on a loopback address. Measures time to first token, inter-token gaps and totals per
// Ask, counts errors by status code (RESOURCE_EXHAUSTED apart: expected under overload), and
// samples the server's VmRSS every 0.5 s when --server-pid is given.
//
// Exit codes: 0 the run completed (whatever the error counts), 1 it could not start (server
// unreachable, base document not READY), 2 usage error.
#include <arpa/inet.h>
#include <grpcpp/grpcpp.h>
#include <openssl/evp.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cctype>
#include <cmath>
#include <condition_variable>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <iomanip>
#include <iostream>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "cli/client/connection.h"
#include "sharedllm/v1/documents.grpc.pb.h"
#include "sharedllm/v1/query.grpc.pb.h"
#include "cli/flags/flags.h"

namespace {

namespace pb = ::sharedllm::v1;
using Clock = std::chrono::steady_clock;
using sharedllm::cli::FlagSet;

constexpr size_t kChunkBytes = 1 << 20;              // the service's limit per chunk message
constexpr int64_t kMaxDocumentBytes = 64LL << 20;    // the server's default --max-document-mb
constexpr double kBaseIndexTimeout = 300;            // seconds for load-base to become READY
constexpr double kCleanupTimeout = 5;                // seconds per cleanup RPC after the run
constexpr const char* kBaseId = "load-base";

double Seconds(Clock::duration d) { return std::chrono::duration<double>(d).count(); }

using sharedllm::client::StatusCodeName;

// True for "localhost", an IPv4 literal in 127.0.0.0/8 or "::1" (optionally bracketed), followed
// by ":PORT". The tool refuses any other target: it is meant to load a local test server only.
bool LoopbackAddress(const std::string& server, std::string* why) {
  std::string host, port;
  if (!server.empty() && server[0] == '[') {
    const size_t close = server.find(']');
    if (close == std::string::npos || close + 1 >= server.size() || server[close + 1] != ':') {
      *why = "expected [IPV6]:PORT";
      return false;
    }
    host = server.substr(1, close - 1);
    port = server.substr(close + 2);
  } else {
    const size_t colon = server.rfind(':');
    if (colon == std::string::npos) {
      *why = "expected HOST:PORT";
      return false;
    }
    host = server.substr(0, colon);
    port = server.substr(colon + 1);
  }
  if (port.empty() || port.size() > 5 || !std::all_of(port.begin(), port.end(), ::isdigit) ||
      std::stoi(port) < 1 || std::stoi(port) > 65535) {
    *why = "bad port '" + port + "'";
    return false;
  }
  if (host == "localhost") return true;
  in_addr v4{};
  if (inet_pton(AF_INET, host.c_str(), &v4) == 1) {
    if ((ntohl(v4.s_addr) >> 24) == 127) return true;
    *why = host + " is not a loopback address";
    return false;
  }
  in6_addr v6{};
  if (inet_pton(AF_INET6, host.c_str(), &v6) == 1) {
    if (IN6_IS_ADDR_LOOPBACK(&v6)) return true;
    *why = host + " is not a loopback address";
    return false;
  }
  *why = "'" + host + "' is not localhost, 127.x.x.x or ::1";
  return false;
}

bool ReadWholeFile(const std::string& path, std::string* out) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return false;
  std::ostringstream s;
  s << in.rdbuf();
  *out = s.str();
  return !in.bad();
}

std::string Sha256Hex(const std::string& data) {
  unsigned char digest[EVP_MAX_MD_SIZE];
  unsigned int len = 0;
  EVP_Digest(data.data(), data.size(), digest, &len, EVP_sha256(), nullptr);
  std::ostringstream s;
  for (unsigned int i = 0; i < len; ++i) {
    s << std::hex << std::setw(2) << std::setfill('0') << static_cast<int>(digest[i]);
  }
  return s.str();
}

// VmRSS of a process in KiB, or -1 when it cannot be read (the process is gone).
int64_t ReadRssKb(int64_t pid) {
  std::ifstream in("/proc/" + std::to_string(pid) + "/status");
  std::string line;
  while (std::getline(in, line)) {
    if (line.rfind("VmRSS:", 0) == 0) return std::atoll(line.c_str() + 6);
  }
  return -1;
}

// ---------------------------------------------------------------------------------------------

struct Options {
  std::string server, api_key, document, question = "What is the pass key? The pass key is";
  int64_t asks = 0, uploads = 0, max_tokens = 32, server_pid = 0, backoff_ms = 100;
  double duration = 0, grace = 10;
  bool json = false;
};

class Client {
 public:
  explicit Client(const Options& o) : o_(o) {
    connection_.target = o.server;
    connection_.api_key = o.api_key;
    std::string error;  // plaintext with no certificate files: MakeChannel cannot fail
    channel_ = sharedllm::client::MakeChannel(connection_, &error);
    documents_ = pb::DocumentService::NewStub(channel_);
    query_ = pb::QueryService::NewStub(channel_);
  }

  bool WaitConnected(double seconds) {
    return channel_->WaitForConnected(std::chrono::system_clock::now() +
                                      std::chrono::milliseconds(static_cast<int64_t>(seconds * 1000)));
  }

  std::unique_ptr<grpc::ClientContext> Context(std::chrono::system_clock::time_point deadline) const {
    auto ctx = std::make_unique<grpc::ClientContext>();
    sharedllm::client::AddApiKey(connection_, ctx.get());
    ctx->set_deadline(deadline);
    return ctx;
  }

  // Header (id, name, sha256), then the content in chunks of at most 1 MiB.
  grpc::Status Upload(const std::string& id, const std::string& content, const std::string& sha,
                      std::chrono::system_clock::time_point deadline, pb::IndexJob* job) {
    auto ctx = Context(deadline);
    auto writer = documents_->UploadDocument(ctx.get(), job);
    pb::UploadDocumentRequest header;
    header.mutable_header()->set_document_id(id);
    header.mutable_header()->set_name(o_.document.substr(o_.document.find_last_of('/') + 1));
    header.mutable_header()->set_sha256(sha);
    bool open = writer->Write(header);
    for (size_t off = 0; open && off < content.size(); off += kChunkBytes) {
      pb::UploadDocumentRequest chunk;
      chunk.set_chunk(content.substr(off, kChunkBytes));
      open = writer->Write(chunk);  // false: the server ended the call; Finish() tells why
    }
    if (open) writer->WritesDone();
    return writer->Finish();
  }

  // Follows the job until a terminal state; `last` is the last state seen.
  grpc::Status Watch(const std::string& id, std::chrono::system_clock::time_point deadline,
                     pb::IndexJob* last, bool* any) {
    auto ctx = Context(deadline);
    pb::GetIndexStatusRequest request;
    request.set_document_id(id);
    auto reader = documents_->WatchIndexStatus(ctx.get(), request);
    pb::IndexJob job;
    *any = false;
    while (reader->Read(&job)) {
      *last = job;
      *any = true;
    }
    return reader->Finish();
  }

  grpc::Status Delete(const std::string& id, std::chrono::system_clock::time_point deadline) {
    auto ctx = Context(deadline);
    pb::DeleteDocumentRequest request;
    request.set_document_id(id);
    pb::DeleteDocumentResponse response;
    return documents_->DeleteDocument(ctx.get(), request, &response);
  }

  grpc::Status Cancel(const std::string& id, std::chrono::system_clock::time_point deadline) {
    auto ctx = Context(deadline);
    pb::CancelIndexJobRequest request;
    request.set_document_id(id);
    pb::IndexJob job;
    return documents_->CancelIndexJob(ctx.get(), request, &job);
  }

  grpc::Status Get(const std::string& id, std::chrono::system_clock::time_point deadline,
                   pb::Document* doc) {
    auto ctx = Context(deadline);
    pb::GetDocumentRequest request;
    request.set_document_id(id);
    return documents_->GetDocument(ctx.get(), request, doc);
  }

  pb::QueryService::Stub& query() { return *query_; }

 private:
  const Options& o_;
  sharedllm::client::ConnectionOptions connection_;
  std::shared_ptr<grpc::Channel> channel_;
  std::unique_ptr<pb::DocumentService::Stub> documents_;
  std::unique_ptr<pb::QueryService::Stub> query_;
};

std::chrono::system_clock::time_point WallIn(double seconds) {
  return std::chrono::system_clock::now() +
         std::chrono::microseconds(static_cast<int64_t>(seconds * 1e6));
}

// What one worker thread saw; merged after the run (no sharing while it runs).
struct Stats {
  // Ask
  int64_t asks_started = 0, asks_ok = 0, asks_resource_exhausted = 0, asks_cut = 0;
  int64_t deltas = 0;             // TokenDelta messages received (all asks)
  int64_t completion_tokens = 0;  // Final.usage.completion_tokens of completed asks
  int64_t asks_without_delta = 0;  // completed with an empty answer
  int64_t protocol_anomalies = 0;  // OK without Final, delta before Started, more deltas than tokens
  std::map<std::string, int64_t> ask_errors;  // by code, RESOURCE_EXHAUSTED excluded
  std::vector<double> ttft, gaps, total, server_queue;
  // Upload
  int64_t uploads_started = 0, uploads_ready = 0, uploads_resource_exhausted = 0, uploads_cut = 0;
  int64_t deletes_ok = 0;
  std::map<std::string, int64_t> upload_errors;  // RPC codes, "INDEX_FAILED:<code>", "DELETE:<code>"
  std::vector<double> ready_seconds;

  void Merge(const Stats& o) {
    asks_started += o.asks_started;
    asks_ok += o.asks_ok;
    asks_resource_exhausted += o.asks_resource_exhausted;
    asks_cut += o.asks_cut;
    deltas += o.deltas;
    completion_tokens += o.completion_tokens;
    asks_without_delta += o.asks_without_delta;
    protocol_anomalies += o.protocol_anomalies;
    for (const auto& [k, v] : o.ask_errors) ask_errors[k] += v;
    ttft.insert(ttft.end(), o.ttft.begin(), o.ttft.end());
    gaps.insert(gaps.end(), o.gaps.begin(), o.gaps.end());
    total.insert(total.end(), o.total.begin(), o.total.end());
    server_queue.insert(server_queue.end(), o.server_queue.begin(), o.server_queue.end());
    uploads_started += o.uploads_started;
    uploads_ready += o.uploads_ready;
    uploads_resource_exhausted += o.uploads_resource_exhausted;
    uploads_cut += o.uploads_cut;
    deletes_ok += o.deletes_ok;
    for (const auto& [k, v] : o.upload_errors) upload_errors[k] += v;
    ready_seconds.insert(ready_seconds.end(), o.ready_seconds.begin(), o.ready_seconds.end());
  }
};

struct Run {
  Run(const Options& options, Client& c) : o(options), client(c) {}
  const Options& o;
  Client& client;
  std::string content, sha;
  Clock::time_point end;                           // no new request after this
  std::chrono::system_clock::time_point deadline;  // every request's deadline: end + grace
  std::string nonce;                               // makes copy ids unique across runs

  bool Over() const { return Clock::now() >= end; }
  // A DEADLINE_EXCEEDED at (or near) the run's own cut-off was caused by the tool, not the server.
  bool CutByUs(const grpc::Status& s) const {
    return s.error_code() == grpc::StatusCode::DEADLINE_EXCEEDED &&
           std::chrono::system_clock::now() >= deadline - std::chrono::milliseconds(500);
  }
  void Backoff() const {
    const auto until = std::min(end, Clock::now() + std::chrono::milliseconds(o.backoff_ms));
    std::this_thread::sleep_until(until);
  }

  void AskLoop(Stats* st) {
    pb::AskRequest request;
    request.add_document_ids(kBaseId);
    request.set_question(o.question);
    request.mutable_options()->set_max_tokens(static_cast<int32_t>(o.max_tokens));
    while (!Over()) {
      ++st->asks_started;
      auto ctx = client.Context(deadline);
      const auto t0 = Clock::now();
      auto reader = client.query().Ask(ctx.get(), request);
      pb::AskResponse response;
      bool started = false, final_seen = false, anomaly = false;
      int64_t deltas = 0, completion = 0;  // this ask's TokenDelta messages, Final's tokens
      double ttft = 0, queue = 0;
      std::vector<double> gaps;
      auto last = t0;
      while (reader->Read(&response)) {
        const auto now = Clock::now();
        switch (response.event_case()) {
          case pb::AskResponse::kStarted:
            if (started || deltas > 0 || final_seen) anomaly = true;
            started = true;
            break;
          case pb::AskResponse::kDelta:
            if (!started || final_seen) anomaly = true;
            if (deltas == 0) {
              ttft = Seconds(now - t0);
            } else {
              gaps.push_back(Seconds(now - last));
            }
            last = now;
            ++deltas;
            break;
          case pb::AskResponse::kFinal:
            if (final_seen) anomaly = true;
            final_seen = true;
            completion = response.final().usage().completion_tokens();
            queue = response.final().timings().queue_seconds();
            break;
          default:
            anomaly = true;
        }
      }
      const grpc::Status status = reader->Finish();
      const double total = Seconds(Clock::now() - t0);
      st->deltas += deltas;
      if (status.ok()) {
        // A delta carries the text a token added; a token that adds none (or half a UTF-8
        // character) sends no delta, so deltas <= completion tokens, not ==.
        if (!final_seen || deltas > completion) anomaly = true;
        if (deltas == 0) ++st->asks_without_delta;
        ++st->asks_ok;
        st->completion_tokens += completion;
        if (deltas > 0) st->ttft.push_back(ttft);
        st->gaps.insert(st->gaps.end(), gaps.begin(), gaps.end());
        st->total.push_back(total);
        st->server_queue.push_back(queue);
      } else if (status.error_code() == grpc::StatusCode::RESOURCE_EXHAUSTED) {
        ++st->asks_resource_exhausted;
        Backoff();
      } else if (CutByUs(status)) {
        ++st->asks_cut;
      } else {
        ++st->ask_errors[StatusCodeName(status.error_code())];
        if (st->ask_errors[StatusCodeName(status.error_code())] <= 3) {
          std::cerr << "ask error: " << StatusCodeName(status.error_code()) << ": "
                    << status.error_message() << "\n";
        }
        Backoff();
      }
      if (anomaly) ++st->protocol_anomalies;
    }
  }

  // Removes a copy whatever state it is in: cancel it while its job may still run, else delete.
  void Cleanup(const std::string& id, bool finished, Stats* st) {
    if (!finished) {
      const grpc::Status c = client.Cancel(id, WallIn(kCleanupTimeout));
      if (c.ok() || c.error_code() == grpc::StatusCode::NOT_FOUND) {
        if (c.ok()) ++st->deletes_ok;
        return;
      }
    }
    const grpc::Status d = client.Delete(id, WallIn(kCleanupTimeout));
    if (d.ok()) {
      ++st->deletes_ok;
    } else {
      ++st->upload_errors[std::string("DELETE:") + StatusCodeName(d.error_code())];
      std::cerr << "delete " << id << ": " << StatusCodeName(d.error_code()) << ": "
                << d.error_message() << "\n";
    }
  }

  void UploadLoop(int worker, Stats* st) {
    for (int64_t seq = 0; !Over(); ++seq) {
      const std::string id = "load-copy-" + nonce + "-" + std::to_string(worker) + "-" + std::to_string(seq);
      ++st->uploads_started;
      const auto t0 = Clock::now();
      pb::IndexJob job;
      grpc::Status s = client.Upload(id, content, sha, deadline, &job);
      if (!s.ok()) {
        if (s.error_code() == grpc::StatusCode::RESOURCE_EXHAUSTED) {
          ++st->uploads_resource_exhausted;
        } else if (CutByUs(s)) {
          ++st->uploads_cut;
          Cleanup(id, false, st);  // it may have been accepted just before the cut
          continue;
        } else {
          ++st->upload_errors[StatusCodeName(s.error_code())];
          std::cerr << "upload " << id << ": " << StatusCodeName(s.error_code()) << ": "
                    << s.error_message() << "\n";
        }
        Backoff();
        continue;
      }
      pb::IndexJob last = job;
      bool any = false;
      if (job.state() != pb::IndexJob::READY && job.state() != pb::IndexJob::FAILED &&
          job.state() != pb::IndexJob::CANCELLED) {
        s = client.Watch(id, deadline, &last, &any);
      }
      if (last.state() == pb::IndexJob::READY) {
        ++st->uploads_ready;
        st->ready_seconds.push_back(Seconds(Clock::now() - t0));
        Cleanup(id, true, st);
      } else if (!s.ok() && CutByUs(s)) {
        ++st->uploads_cut;
        Cleanup(id, false, st);
      } else if (!s.ok()) {
        ++st->upload_errors[std::string("WATCH:") + StatusCodeName(s.error_code())];
        std::cerr << "watch " << id << ": " << StatusCodeName(s.error_code()) << ": " << s.error_message()
                  << "\n";
        Cleanup(id, false, st);
      } else {
        // The watch ended without READY: FAILED, CANCELLED, or a non-terminal state (a bug).
        const std::string what = last.state() == pb::IndexJob::FAILED
                                     ? "INDEX_FAILED:" + last.error_code()
                                     : "INDEX_ENDED_" + pb::IndexJob::State_Name(last.state());
        ++st->upload_errors[what];
        std::cerr << "index " << id << ": " << what << " " << last.error_message() << "\n";
        Cleanup(id, last.state() == pb::IndexJob::FAILED, st);
      }
    }
  }
};

// Samples VmRSS every 0.5 s on its own thread until Stop().
class RssSampler {
 public:
  explicit RssSampler(int64_t pid) : pid_(pid) {
    if (pid_ > 0) thread_ = std::thread([this] { Loop(); });
  }
  ~RssSampler() { Stop(); }
  size_t Count() {
    std::lock_guard<std::mutex> lock(mu_);
    return series.size();
  }
  void Stop() {
    {
      std::lock_guard<std::mutex> lock(mu_);
      stop_ = true;
    }
    cv_.notify_all();
    if (thread_.joinable()) thread_.join();
  }
  // Read only after Stop() (or through Count()).
  std::vector<int64_t> series;  // KiB; -1 where the process could not be read
  bool gone = false;

 private:
  void Loop() {
    auto next = Clock::now();
    std::unique_lock<std::mutex> lock(mu_);
    while (!stop_) {
      const int64_t kb = ReadRssKb(pid_);
      series.push_back(kb);
      if (kb < 0) gone = true;
      next += std::chrono::milliseconds(500);
      cv_.wait_until(lock, next, [this] { return stop_; });
    }
  }
  int64_t pid_;
  std::mutex mu_;
  std::condition_variable cv_;
  bool stop_ = false;
  std::thread thread_;
};

// Nearest-rank percentile of an ascending vector; NaN when empty.
double Percentile(const std::vector<double>& sorted, double p) {
  if (sorted.empty()) return std::nan("");
  size_t rank = static_cast<size_t>(std::ceil(p / 100.0 * static_cast<double>(sorted.size())));
  rank = std::max<size_t>(rank, 1);
  return sorted[std::min(rank, sorted.size()) - 1];
}

double Mean(const std::vector<double>& v) {
  if (v.empty()) return std::nan("");
  double s = 0;
  for (double x : v) s += x;
  return s / static_cast<double>(v.size());
}

std::string JsonNumber(double x) {
  if (!std::isfinite(x)) return "null";
  char buf[64];
  std::snprintf(buf, sizeof(buf), "%.6g", x);
  return buf;
}

std::string JsonString(const std::string& s) {
  std::string out = "\"";
  for (unsigned char c : s) {
    if (c == '"' || c == '\\') {
      out += '\\';
      out += static_cast<char>(c);
    } else if (c < 0x20) {
      char buf[8];
      std::snprintf(buf, sizeof(buf), "\\u%04x", c);
      out += buf;
    } else {
      out += static_cast<char>(c);
    }
  }
  return out + "\"";
}

std::string JsonCounts(const std::map<std::string, int64_t>& m) {
  std::string out = "{";
  for (const auto& [k, v] : m) {
    if (out.size() > 1) out += ", ";
    out += JsonString(k) + ": " + std::to_string(v);
  }
  return out + "}";
}

std::string JsonPercentiles(const std::vector<double>& sorted) {
  return "{\"count\": " + std::to_string(sorted.size()) + ", \"mean\": " + JsonNumber(Mean(sorted)) +
         ", \"p50\": " + JsonNumber(Percentile(sorted, 50)) + ", \"p95\": " +
         JsonNumber(Percentile(sorted, 95)) + ", \"p99\": " + JsonNumber(Percentile(sorted, 99)) +
         ", \"max\": " + JsonNumber(sorted.empty() ? std::nan("") : sorted.back()) + "}";
}

std::string Ms(double seconds) {
  if (!std::isfinite(seconds)) return "-";
  std::ostringstream s;
  s << std::fixed << std::setprecision(seconds < 0.1 ? 2 : 1) << seconds * 1000 << " ms";
  return s.str();
}

std::string CountsText(const std::map<std::string, int64_t>& m) {
  if (m.empty()) return "none";
  std::string out;
  for (const auto& [k, v] : m) out += (out.empty() ? "" : ", ") + k + " " + std::to_string(v);
  return out;
}

}  // namespace

int main(int argc, char** argv) {
  Options o;
  FlagSet flags(
      "sharedllm-load --server HOST:PORT [--api-key K] --document F --asks N --uploads M "
      "--duration S [--question TEXT] [--max-tokens T] [--server-pid PID] [--json]",
      "Load generator for a local sharedllm-server. Uploads F once as 'load-base' (waits for\n"
      "READY), then for S seconds runs N threads each asking (streaming) about it in a loop and M\n"
      "threads each uploading a copy of F under a fresh id, waiting for READY and deleting it.\n"
      "Reports asks/s, tokens/s, errors by status code (RESOURCE_EXHAUSTED apart), time to first\n"
      "token and inter-token percentiles, uploads and their seconds to READY, and the server's RSS\n"
      "(every 0.5 s, with --server-pid). Only loopback servers are accepted.");
  flags.String("server", &o.server, "service address, loopback only: 127.x.x.x:PORT, localhost:PORT, [::1]:PORT");
  flags.String("api-key", &o.api_key, "API key, sent as 'authorization: Bearer KEY'");
  flags.String("document", &o.document, "UTF-8 text file to upload and ask about");
  flags.Int("asks", &o.asks, "Ask threads, 0-256");
  flags.Int("uploads", &o.uploads, "upload threads, 0-16");
  flags.Double("duration", &o.duration, "seconds of load, 0 < S <= 3600");
  flags.String("question", &o.question, "the question asked");
  flags.Int("max-tokens", &o.max_tokens, "answer tokens per Ask, 1-1024");
  flags.Int("server-pid", &o.server_pid, "sample this process's VmRSS every 0.5 s; 0 = off");
  flags.Double("grace", &o.grace, "seconds in-flight requests may finish after --duration, 0-120");
  flags.Int("backoff-ms", &o.backoff_ms, "pause of a thread after an error or RESOURCE_EXHAUSTED, 0-10000");
  flags.Bool("json", &o.json, "print one JSON object on stdout (the summary goes to stderr)");
  for (const char* name : {"server", "document", "asks", "uploads", "duration"}) flags.Require(name);
  const std::vector<std::string> args(argv + 1, argv + argc);
  if (int rc = flags.Parse(args); rc >= 0) return rc;

  auto usage = [&](const std::string& message) {
    std::cerr << message << "\n";
    return 2;
  };
  std::string why;
  if (!LoopbackAddress(o.server, &why)) return usage("--server " + o.server + ": " + why + " (loopback only)");
  if (o.asks < 0 || o.asks > 256) return usage("--asks must be 0-256");
  if (o.uploads < 0 || o.uploads > 16) return usage("--uploads must be 0-16");
  if (o.asks + o.uploads == 0) return usage("--asks and --uploads are both 0: nothing to do");
  if (!(o.duration > 0 && o.duration <= 3600)) return usage("--duration must be in (0, 3600]");
  if (!(o.grace >= 0 && o.grace <= 120)) return usage("--grace must be in [0, 120]");
  if (o.max_tokens < 1 || o.max_tokens > 1024) return usage("--max-tokens must be 1-1024");
  if (o.backoff_ms < 0 || o.backoff_ms > 10000) return usage("--backoff-ms must be 0-10000");
  if (o.question.empty()) return usage("--question is empty");
  if (o.server_pid < 0) return usage("--server-pid must be >= 0");
  if (o.server_pid > 0 && ReadRssKb(o.server_pid) < 0) {
    return usage("--server-pid " + std::to_string(o.server_pid) + ": no readable /proc/PID/status");
  }

  Client client(o);
  Run run(o, client);
  if (!ReadWholeFile(o.document, &run.content)) {
    return usage("cannot read '" + o.document + "': " + std::strerror(errno));
  }
  if (run.content.empty() || static_cast<int64_t>(run.content.size()) > kMaxDocumentBytes) {
    return usage("--document must be 1 byte to 64 MiB");
  }
  run.sha = Sha256Hex(run.content);
  run.nonce = std::to_string(::getpid()) + "-" +
              std::to_string(std::chrono::duration_cast<std::chrono::milliseconds>(
                                 std::chrono::system_clock::now().time_since_epoch()).count() % 100000000);
  std::ostream& human = o.json ? std::cerr : std::cout;

  if (!client.WaitConnected(10)) {
    std::cerr << "cannot connect to " << o.server << " within 10 s\n";
    return 1;
  }

  // RSS from before the base upload to the end of the run.
  RssSampler rss(o.server_pid);

  // 1. The base document, uploaded once (reused when an earlier run left it, same content).
  const auto base_t0 = Clock::now();
  bool created_base = false;
  {
    pb::IndexJob job;
    grpc::Status s = client.Upload(kBaseId, run.content, run.sha, WallIn(60), &job);
    if (s.error_code() == grpc::StatusCode::ALREADY_EXISTS) {
      pb::Document doc;
      s = client.Get(kBaseId, WallIn(10), &doc);
      if (s.ok() && doc.sha256() != run.sha) {
        std::cerr << "document " << kBaseId << " exists with other content; delete it first\n";
        return 1;
      }
      if (s.ok()) human << "reusing existing " << kBaseId << "\n";
    } else {
      created_base = s.ok();
    }
    if (!s.ok()) {
      std::cerr << "uploading " << kBaseId << ": " << StatusCodeName(s.error_code()) << ": "
                << s.error_message() << "\n";
      return 1;
    }
    pb::IndexJob last;
    bool any = false;
    s = client.Watch(kBaseId, WallIn(kBaseIndexTimeout), &last, &any);
    if (!s.ok() || last.state() != pb::IndexJob::READY) {
      std::cerr << kBaseId << " did not become READY: "
                << (s.ok() ? pb::IndexJob::State_Name(last.state()) + " " + last.error_code() + " " +
                                 last.error_message()
                           : std::string(StatusCodeName(s.error_code())) + ": " + s.error_message())
                << "\n";
      return 1;
    }
  }
  const double base_ready_seconds = Seconds(Clock::now() - base_t0);
  const size_t rss_load_start = rss.Count();  // approximate index of the load's first sample
  human << kBaseId << " READY after " << std::fixed << std::setprecision(2) << base_ready_seconds
        << " s; load: " << o.asks << " ask + " << o.uploads << " upload threads for " << o.duration
        << " s" << std::endl;
  human.unsetf(std::ios::floatfield);

  // 2. The load.
  const auto start = Clock::now();
  run.end = start + std::chrono::microseconds(static_cast<int64_t>(o.duration * 1e6));
  run.deadline = WallIn(o.duration + o.grace);
  std::vector<Stats> stats(static_cast<size_t>(o.asks + o.uploads));
  std::vector<std::thread> threads;
  for (int64_t i = 0; i < o.asks; ++i) threads.emplace_back([&run, &stats, i] { run.AskLoop(&stats[i]); });
  for (int64_t i = 0; i < o.uploads; ++i) {
    threads.emplace_back([&run, &stats, &o, i] { run.UploadLoop(static_cast<int>(i), &stats[o.asks + i]); });
  }
  for (auto& t : threads) t.join();
  const double elapsed = Seconds(Clock::now() - start);
  rss.Stop();

  // 3. The base document goes when this run created it.
  if (created_base) {
    const grpc::Status s = client.Delete(kBaseId, WallIn(kCleanupTimeout));
    if (!s.ok()) std::cerr << "deleting " << kBaseId << ": " << StatusCodeName(s.error_code()) << "\n";
  }

  Stats all;
  for (const auto& s : stats) all.Merge(s);
  for (auto* v : {&all.ttft, &all.gaps, &all.total, &all.ready_seconds, &all.server_queue}) {
    std::sort(v->begin(), v->end());
  }
  int64_t rss_min = -1, rss_max = -1, rss_first = -1, rss_last = -1, rss_load_first = -1;
  for (size_t i = 0; i < rss.series.size(); ++i) {
    const int64_t kb = rss.series[i];
    if (kb < 0) continue;
    if (rss_first < 0) rss_first = kb;
    if (i >= rss_load_start && rss_load_first < 0) rss_load_first = kb;
    rss_last = kb;
    rss_min = rss_min < 0 ? kb : std::min(rss_min, kb);
    rss_max = std::max(rss_max, kb);
  }
  const double asks_per_s = static_cast<double>(all.asks_ok) / elapsed;
  const double tokens_per_s = static_cast<double>(all.completion_tokens) / elapsed;
  const double deltas_per_s = static_cast<double>(all.deltas) / elapsed;
  int64_t ask_errors = 0, upload_errors = 0;
  for (const auto& [k, v] : all.ask_errors) ask_errors += v;
  for (const auto& [k, v] : all.upload_errors) upload_errors += v;

  // Human summary.
  human << std::fixed << std::setprecision(2);
  human << "elapsed " << elapsed << " s (" << o.duration << " s of load + drain)\n"
        << "asks:    " << all.asks_ok << " completed of " << all.asks_started << " started, "
        << asks_per_s << " asks/s, " << all.completion_tokens << " tokens (" << tokens_per_s
        << "/s), " << all.deltas << " deltas (" << deltas_per_s << "/s)\n"
        << "         RESOURCE_EXHAUSTED " << all.asks_resource_exhausted << ", cut at the end "
        << all.asks_cut << ", errors " << CountsText(all.ask_errors)
        << ", empty answers " << all.asks_without_delta << ", protocol anomalies "
        << all.protocol_anomalies << "\n"
        << "TTFT:    p50 " << Ms(Percentile(all.ttft, 50)) << ", p95 " << Ms(Percentile(all.ttft, 95))
        << ", p99 " << Ms(Percentile(all.ttft, 99)) << " (server queue mean "
        << Ms(Mean(all.server_queue)) << ")\n"
        << "gap:     p50 " << Ms(Percentile(all.gaps, 50)) << ", p95 " << Ms(Percentile(all.gaps, 95))
        << ", p99 " << Ms(Percentile(all.gaps, 99)) << " (" << all.gaps.size() << " gaps)\n"
        << "total:   p50 " << Ms(Percentile(all.total, 50)) << ", p95 "
        << Ms(Percentile(all.total, 95)) << ", p99 " << Ms(Percentile(all.total, 99)) << "\n"
        << "uploads: " << all.uploads_ready << " READY of " << all.uploads_started
        << " started, mean " << Mean(all.ready_seconds) << " s to READY, " << all.deletes_ok
        << " deleted, RESOURCE_EXHAUSTED " << all.uploads_resource_exhausted << ", cut "
        << all.uploads_cut << ", errors " << CountsText(all.upload_errors) << "\n";
  if (o.server_pid > 0) {
    human << "RSS:     " << rss_first / 1024.0 << " MiB before the base upload, " << rss_load_first / 1024.0
          << " at load start, min " << rss_min / 1024.0 << ", max " << rss_max / 1024.0
          << ", last " << rss_last / 1024.0 << " MiB (" << rss.series.size() << " samples)"
          << (rss.gone ? "; THE SERVER PROCESS WENT AWAY" : "") << "\n";
  }
  human.unsetf(std::ios::floatfield);
  human.flush();

  if (o.json) {
    std::ostringstream j;
    j << "{\"server\": " << JsonString(o.server) << ", \"document_bytes\": " << run.content.size()
      << ", \"asks_threads\": " << o.asks << ", \"upload_threads\": " << o.uploads
      << ", \"duration_s\": " << JsonNumber(o.duration) << ", \"elapsed_s\": " << JsonNumber(elapsed)
      << ", \"max_tokens\": " << o.max_tokens << ", \"question\": " << JsonString(o.question)
      << ", \"base_ready_s\": " << JsonNumber(base_ready_seconds)
      << ",\n \"asks_started\": " << all.asks_started << ", \"asks_completed\": " << all.asks_ok
      << ", \"asks_per_s\": " << JsonNumber(asks_per_s) << ", \"tokens\": " << all.completion_tokens
      << ", \"tokens_per_s\": " << JsonNumber(tokens_per_s) << ", \"deltas\": " << all.deltas
      << ", \"deltas_per_s\": " << JsonNumber(deltas_per_s)
      << ", \"asks_without_delta\": " << all.asks_without_delta
      << ",\n \"ask_resource_exhausted\": " << all.asks_resource_exhausted
      << ", \"ask_cut_at_end\": " << all.asks_cut << ", \"ask_errors\": " << JsonCounts(all.ask_errors)
      << ", \"ask_errors_total\": " << ask_errors
      << ", \"protocol_anomalies\": " << all.protocol_anomalies
      << ",\n \"ttft_s\": " << JsonPercentiles(all.ttft)
      << ",\n \"inter_token_s\": " << JsonPercentiles(all.gaps)
      << ",\n \"ask_total_s\": " << JsonPercentiles(all.total)
      << ",\n \"server_queue_s\": " << JsonPercentiles(all.server_queue)
      << ",\n \"uploads_started\": " << all.uploads_started << ", \"uploads_ready\": " << all.uploads_ready
      << ", \"upload_mean_s_to_ready\": " << JsonNumber(Mean(all.ready_seconds))
      << ", \"upload_s_to_ready\": " << JsonPercentiles(all.ready_seconds)
      << ", \"uploads_deleted\": " << all.deletes_ok
      << ", \"upload_resource_exhausted\": " << all.uploads_resource_exhausted
      << ", \"upload_cut_at_end\": " << all.uploads_cut
      << ", \"upload_errors\": " << JsonCounts(all.upload_errors)
      << ", \"upload_errors_total\": " << upload_errors;
    if (o.server_pid > 0) {
      auto kb = [](int64_t v) { return v < 0 ? std::string("null") : std::to_string(v); };
      j << ",\n \"rss_kb\": {\"pid\": " << o.server_pid << ", \"interval_s\": 0.5, \"before_base\": "
        << kb(rss_first) << ", \"load_start\": " << kb(rss_load_first) << ", \"min\": " << kb(rss_min)
        << ", \"max\": " << kb(rss_max) << ", \"last\": " << kb(rss_last)
        << ", \"server_went_away\": " << (rss.gone ? "true" : "false") << ", \"series\": [";
      for (size_t i = 0; i < rss.series.size(); ++i) j << (i ? ", " : "") << kb(rss.series[i]);
      j << "]}";
    }
    j << "}\n";
    std::cout << j.str() << std::flush;
  }
  return 0;
}
