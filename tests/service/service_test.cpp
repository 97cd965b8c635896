// End-to-end tests of sharedllm-server: every test starts the real server binary on a loopback
// port with a fresh data directory and a tiny SharedLLM (made once per test process from
// models/tiny, random weights: its answers are noise, so the tests check protocol behaviour —
// streams, status codes, persistence, limits, tenants, metrics — never answer content), and talks
// to it through the generated gRPC stubs. Child processes (servers, prometheus) are killed in
// teardown (SIGTERM, then SIGKILL after a grace period) and also die with the test process
// (PR_SET_PDEATHSIG), so no test leaves one behind. Every wait is bounded in time.
#include <fcntl.h>
#include <grpcpp/generic/generic_stub.h>
#include <grpcpp/grpcpp.h>
#include <glob.h>

#include <gtest/gtest.h>
#include <httplib.h>
#include <openssl/sha.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>

#include <cctype>
#include <chrono>
#include <cmath>
#include <condition_variable>
#include <cstdio>
#include <future>
#include <map>
#include <memory>
#include <mutex>
#include <nlohmann/json.hpp>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "sharedllm/v1/documents.grpc.pb.h"
#include "sharedllm/v1/query.grpc.pb.h"
#include "tests/test_util.h"

namespace sharedllm::test {
namespace {

namespace pb = ::sharedllm::v1;
using Clock = std::chrono::steady_clock;

// The tiny model's shape (sharedllm init flags below): chunks of 32 tokens, trees of depth 2.
constexpr int kChunkSize = 32;
constexpr int kDepth = 2;

double SecondsSince(Clock::time_point t) {
  return std::chrono::duration<double>(Clock::now() - t).count();
}

void SleepMs(int ms) { std::this_thread::sleep_for(std::chrono::milliseconds(ms)); }

std::string HexSha256(const std::string& data) {
  unsigned char d[SHA256_DIGEST_LENGTH];
  SHA256(reinterpret_cast<const unsigned char*>(data.data()), data.size(), d);
  std::string hex;
  char buf[3];
  for (unsigned char c : d) {
    std::snprintf(buf, sizeof buf, "%02x", c);
    hex += buf;
  }
  return hex;
}

// Strict UTF-8 (Unicode table 3-7: no overlong forms, surrogates or code points above U+10FFFF).
bool StrictUtf8(const std::string& s) {
  size_t i = 0;
  const auto b = [&](size_t k) { return static_cast<unsigned char>(s[k]); };
  while (i < s.size()) {
    const unsigned char c = b(i);
    size_t len;
    unsigned char lo = 0x80, hi = 0xBF;
    if (c < 0x80) {
      len = 1;
    } else if (c >= 0xC2 && c <= 0xDF) {
      len = 2;
    } else if (c >= 0xE0 && c <= 0xEF) {
      len = 3;
      if (c == 0xE0) lo = 0xA0;
      if (c == 0xED) hi = 0x9F;
    } else if (c >= 0xF0 && c <= 0xF4) {
      len = 4;
      if (c == 0xF0) lo = 0x90;
      if (c == 0xF4) hi = 0x8F;
    } else {
      return false;
    }
    if (i + len > s.size()) return false;
    for (size_t k = 1; k < len; ++k) {
      const unsigned char x = b(i + k);
      const unsigned char l = k == 1 ? lo : 0x80, h = k == 1 ? hi : 0xBF;
      if (x < l || x > h) return false;
    }
    i += len;
  }
  return true;
}

// Deterministic English-like text of exactly `bytes` bytes (a few non-ASCII words included).
std::string Text(size_t bytes, uint32_t seed) {
  static const char* kWords[] = {
      "the",     "licence",  "software", "program", "work",     "copy",      "source",
      "code",    "author",   "right",    "notice",  "terms",    "condition", "distribute",
      "modify",  "warranty", "without",  "any",     "may",      "you",       "must",
      "other",   "such",     "which",    "this",    "that",     "with",      "under",
      "version", "public",   "general",  "free",    "patent",   "user",      "library",
      "object",  "form",     "binary",   "library", "document", "question",  "answer",
      "café",    "naïve",    "façade",   "über",    "—",        "river",     "mountain",
      "north",   "summer",   "winter",   "engine",  "tree",     "chunk",     "memory"};
  constexpr size_t kNumWords = sizeof(kWords) / sizeof(kWords[0]);
  uint32_t state = seed * 2654435761u + 12345u;
  auto next = [&] {
    state = state * 1664525u + 1013904223u;
    return state >> 8;
  };
  std::string out;
  int in_sentence = 0;
  while (out.size() < bytes + 16) {
    std::string w = kWords[next() % kNumWords];
    if (in_sentence == 0) w[0] = static_cast<char>(std::toupper(static_cast<unsigned char>(w[0])));
    out += w;
    if (++in_sentence > 6 + static_cast<int>(next() % 10)) {
      out += next() % 7 == 0 ? ".\n" : ". ";
      in_sentence = 0;
    } else {
      out += next() % 9 == 0 ? ", " : " ";
    }
  }
  // Cut at `bytes` without splitting a character.
  size_t cut = bytes;
  while (cut > 0 && (static_cast<unsigned char>(out[cut]) & 0xC0) == 0x80) --cut;
  out.resize(cut);
  while (out.size() < bytes) out += ' ';
  return out;
}

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

// ---------------------------------------------------------------------------------------------
// Child processes.

// A child process with stdout and stderr in files. Dies with the test process (PDEATHSIG); the
// destructor terminates it (SIGTERM, SIGKILL after a grace period) and reaps it.
class Child {
 public:
  Child() = default;
  Child(const Child&) = delete;
  Child& operator=(const Child&) = delete;
  ~Child() { Terminate(5); }

  // Starts argv[0] with `argv`; stdout to out_path, stderr to err_path.
  bool Start(const std::vector<std::string>& argv, const std::string& out_path,
             const std::string& err_path) {
    out_path_ = out_path;
    err_path_ = err_path;
    exited_ = false;
    status_ = 0;
    // Everything the child needs is prepared before fork(): between fork and exec only
    // async-signal-safe calls are made (the test process has gRPC threads).
    std::vector<char*> args;
    for (const auto& a : argv) args.push_back(const_cast<char*>(a.c_str()));
    args.push_back(nullptr);
    const pid_t parent = ::getpid();
    pid_ = ::fork();
    if (pid_ < 0) return false;
    if (pid_ == 0) {
      ::prctl(PR_SET_PDEATHSIG, SIGKILL);
      if (::getppid() != parent) ::_exit(126);
      const int in = ::open("/dev/null", O_RDONLY);
      const int out = ::open(out_path.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
      const int err = ::open(err_path.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
      if (in < 0 || out < 0 || err < 0) ::_exit(126);
      ::dup2(in, STDIN_FILENO);
      ::dup2(out, STDOUT_FILENO);
      ::dup2(err, STDERR_FILENO);
      ::execv(args[0], args.data());
      ::_exit(127);
    }
    return true;
  }

  bool running() {
    Poll();
    return pid_ > 0 && !exited_;
  }
  pid_t pid() const { return pid_; }

  // Waits up to `seconds` for the child to exit; true if it did.
  bool Wait(double seconds) {
    const auto start = Clock::now();
    for (int i = 0; i < 100000; ++i) {
      Poll();
      if (pid_ <= 0 || exited_) return true;
      if (SecondsSince(start) > seconds) return false;
      SleepMs(10);
    }
    return false;
  }

  void Signal(int sig) {
    if (running()) ::kill(pid_, sig);
  }

  // SIGTERM, then SIGKILL when it has not exited after `grace_seconds`. Returns the exit code,
  // or -signal when killed by a signal.
  int Terminate(double grace_seconds) {
    if (pid_ <= 0) return -1;
    if (running()) {
      ::kill(pid_, SIGTERM);
      if (!Wait(grace_seconds)) {
        ::kill(pid_, SIGKILL);
        Wait(30);
      }
    }
    return ExitCode();
  }

  // SIGKILL at once.
  void Kill() {
    if (running()) {
      ::kill(pid_, SIGKILL);
      Wait(30);
    }
  }

  int ExitCode() const {
    if (!exited_) return -1000;
    if (WIFEXITED(status_)) return WEXITSTATUS(status_);
    if (WIFSIGNALED(status_)) return -WTERMSIG(status_);
    return -1000;
  }

  std::string Out() const { return Exists(out_path_) ? ReadFile(out_path_) : ""; }
  std::string Err() const { return Exists(err_path_) ? ReadFile(err_path_) : ""; }
  // The last `n` bytes of stdout and stderr, for failure messages.
  std::string Log(size_t n = 4000) const {
    auto tail = [&](const std::string& s) { return s.size() > n ? s.substr(s.size() - n) : s; };
    return "--- stdout:\n" + tail(Out()) + "\n--- stderr:\n" + tail(Err());
  }

 private:
  void Poll() {
    if (pid_ <= 0 || exited_) return;
    int status = 0;
    const pid_t r = ::waitpid(pid_, &status, WNOHANG);
    if (r == pid_) {
      exited_ = true;
      status_ = status;
    } else if (r < 0) {
      exited_ = true;  // not our child any more (already reaped)
    }
  }

  pid_t pid_ = -1;
  bool exited_ = false;
  int status_ = 0;
  std::string out_path_, err_path_;
};

// A sharedllm-server process.
class Server {
 public:
  // Starts the server on 127.0.0.1 port 0 and waits (up to 90 s) for its "metrics on port" line
  // and, with `until_ready`, its "listening on" line (serving), else its "starting: gRPC on" line
  // (ports open, model still loading). Returns "" or an error with the server's log.
  std::string Start(const std::string& model_dir, const std::string& data_dir,
                    const std::string& log_dir, const std::vector<std::string>& extra,
                    bool until_ready = true) {
    static int counter = 0;
    const std::string base = log_dir + "/server" + std::to_string(counter++);
    std::vector<std::string> argv = {SHAREDLLM_SERVER_BIN,
                                     "--model",
                                     model_dir,
                                     "--data-dir",
                                     data_dir,
                                     "--listen",
                                     "127.0.0.1:0",
                                     "--metrics-listen",
                                     "127.0.0.1:0",
                                     "--threads",
                                     "1",
                                     "--no-sync"};
    argv.insert(argv.end(), extra.begin(), extra.end());
    if (!child_.Start(argv, base + ".out", base + ".err")) return "fork failed";
    const std::string line = until_ready ? "listening on " : "starting: gRPC on ";
    const auto start = Clock::now();
    for (int i = 0; i < 10000 && SecondsSince(start) < 90; ++i) {
      const std::string out = child_.Out();
      int a = 0, b = 0, c = 0, d = 0, p = 0, m = 0;
      const size_t l = out.find(line);
      const size_t mp = out.find("metrics on port ");
      if (l != std::string::npos && mp != std::string::npos &&
          std::sscanf(out.c_str() + l + line.size(), "%d.%d.%d.%d:%d", &a, &b, &c, &d, &p) == 5 &&
          std::sscanf(out.c_str() + mp, "metrics on port %d", &m) == 1 &&
          out.find('\n', mp) != std::string::npos && out.find('\n', l) != std::string::npos) {
        port_ = p;
        metrics_port_ = m;
        return "";
      }
      if (!child_.running()) {
        return "the server exited (" + std::to_string(child_.ExitCode()) + ") before '" + line +
               "'\n" + child_.Log();
      }
      SleepMs(20);
    }
    return "the server did not print '" + line + "' within 90 s\n" + child_.Log();
  }

  std::string address() const { return "127.0.0.1:" + std::to_string(port_); }
  int port() const { return port_; }
  int metrics_port() const { return metrics_port_; }
  Child& child() { return child_; }
  std::string Log() const { return child_.Log(); }

 private:
  Child child_;
  int port_ = 0, metrics_port_ = 0;
};

// ---------------------------------------------------------------------------------------------
// gRPC helpers.

struct Conn {
  std::shared_ptr<grpc::Channel> channel;
  std::unique_ptr<pb::DocumentService::Stub> docs;
  std::unique_ptr<pb::QueryService::Stub> query;
  std::string api_key;  // sent as "authorization: Bearer KEY" when not empty

  Conn(const std::string& address, std::string key = "") : api_key(std::move(key)) {
    grpc::ChannelArguments args;
    args.SetMaxReceiveMessageSize(64 << 20);
    channel = grpc::CreateCustomChannel(address, grpc::InsecureChannelCredentials(), args);
    docs = pb::DocumentService::NewStub(channel);
    query = pb::QueryService::NewStub(channel);
  }
  // Every RPC gets a deadline, so no call can hang a test.
  void Prepare(grpc::ClientContext* ctx, double seconds = 30) const {
    ctx->set_deadline(std::chrono::system_clock::now() +
                      std::chrono::milliseconds(static_cast<int64_t>(seconds * 1000)));
    if (!api_key.empty()) ctx->AddMetadata("authorization", "Bearer " + api_key);
  }
};

struct UploadOptions {
  std::string collection;
  std::string name = "doc.txt";
  bool send_header = true;
  bool send_sha256 = true;
  std::string sha256_override;  // sent instead of the content's digest when not empty
  size_t piece = 1 << 20;       // bytes per chunk message
};

grpc::Status Upload(const Conn& c, const std::string& id, const std::string& text,
                    pb::IndexJob* job, const UploadOptions& o = {}) {
  grpc::ClientContext ctx;
  c.Prepare(&ctx, 60);
  auto writer = c.docs->UploadDocument(&ctx, job);
  bool ok = true;
  if (o.send_header) {
    pb::UploadDocumentRequest header;
    header.mutable_header()->set_document_id(id);
    header.mutable_header()->set_collection_id(o.collection);
    header.mutable_header()->set_name(o.name);
    if (!o.sha256_override.empty()) {
      header.mutable_header()->set_sha256(o.sha256_override);
    } else if (o.send_sha256) {
      header.mutable_header()->set_sha256(HexSha256(text));
    }
    ok = writer->Write(header);
  }
  for (size_t off = 0; ok && off < text.size(); off += o.piece) {
    pb::UploadDocumentRequest chunk;
    chunk.set_chunk(text.substr(off, o.piece));
    ok = writer->Write(chunk);  // false once the server has answered early (an error)
  }
  writer->WritesDone();
  return writer->Finish();
}

struct WatchResult {
  grpc::Status status;
  std::vector<pb::IndexJob> jobs;
};

// Streams the job until the server ends the stream (after a terminal state).
WatchResult Watch(const Conn& c, const std::string& id, double seconds = 90) {
  WatchResult r;
  grpc::ClientContext ctx;
  c.Prepare(&ctx, seconds);
  pb::GetIndexStatusRequest req;
  req.set_document_id(id);
  auto reader = c.docs->WatchIndexStatus(&ctx, req);
  pb::IndexJob job;
  for (int i = 0; i < 1000000 && reader->Read(&job); ++i) r.jobs.push_back(job);
  r.status = reader->Finish();
  return r;
}

struct AskResult {
  grpc::Status status;
  bool has_started = false;
  pb::Started started;
  std::vector<std::string> deltas;
  std::string text;  // the deltas concatenated
  bool has_final = false;
  pb::Final final;
  std::string protocol_error;  // messages out of order: Started, TokenDelta*, Final
};

pb::AskRequest AskFor(const std::vector<std::string>& ids, const std::string& question,
                      int max_tokens) {
  pb::AskRequest req;
  for (const auto& id : ids) req.add_document_ids(id);
  req.set_question(question);
  req.mutable_options()->set_max_tokens(max_tokens);
  return req;
}

AskResult Ask(const Conn& c, const pb::AskRequest& req, double seconds = 60) {
  AskResult r;
  grpc::ClientContext ctx;
  c.Prepare(&ctx, seconds);
  auto reader = c.query->Ask(&ctx, req);
  pb::AskResponse msg;
  for (int i = 0; i < 100000 && reader->Read(&msg); ++i) {
    switch (msg.event_case()) {
      case pb::AskResponse::kStarted:
        if (r.has_started || !r.deltas.empty() || r.has_final) r.protocol_error += "late Started; ";
        r.has_started = true;
        r.started = msg.started();
        break;
      case pb::AskResponse::kDelta:
        if (!r.has_started || r.has_final) r.protocol_error += "delta outside Started..Final; ";
        r.deltas.push_back(msg.delta().text());
        r.text += msg.delta().text();
        break;
      case pb::AskResponse::kFinal:
        if (!r.has_started || r.has_final) r.protocol_error += "Final without Started or twice; ";
        r.has_final = true;
        r.final = msg.final();
        break;
      default:
        r.protocol_error += "empty event; ";
    }
  }
  r.status = reader->Finish();
  return r;
}

grpc::Status Retrieve(const Conn& c, const pb::RetrieveRequest& req, pb::RetrieveResponse* resp) {
  grpc::ClientContext ctx;
  c.Prepare(&ctx);
  return c.query->Retrieve(&ctx, req, resp);
}

grpc::Status GetDocument(const Conn& c, const std::string& id, pb::Document* doc) {
  grpc::ClientContext ctx;
  c.Prepare(&ctx);
  pb::GetDocumentRequest req;
  req.set_document_id(id);
  return c.docs->GetDocument(&ctx, req, doc);
}

grpc::Status GetIndexStatus(const Conn& c, const std::string& id, pb::IndexJob* job) {
  grpc::ClientContext ctx;
  c.Prepare(&ctx);
  pb::GetIndexStatusRequest req;
  req.set_document_id(id);
  return c.docs->GetIndexStatus(&ctx, req, job);
}

grpc::Status Delete(const Conn& c, const std::string& id) {
  grpc::ClientContext ctx;
  c.Prepare(&ctx);
  pb::DeleteDocumentRequest req;
  req.set_document_id(id);
  pb::DeleteDocumentResponse resp;
  return c.docs->DeleteDocument(&ctx, req, &resp);
}

grpc::Status CancelJob(const Conn& c, const std::string& id, pb::IndexJob* job) {
  grpc::ClientContext ctx;
  c.Prepare(&ctx);
  pb::CancelIndexJobRequest req;
  req.set_document_id(id);
  return c.docs->CancelIndexJob(&ctx, req, job);
}

// Every document of the caller (all pages), optionally of one collection.
grpc::Status ListAll(const Conn& c, std::vector<pb::Document>* out,
                     const std::string& collection = "") {
  std::string token;
  for (int page = 0; page < 100; ++page) {
    grpc::ClientContext ctx;
    c.Prepare(&ctx);
    pb::ListDocumentsRequest req;
    req.set_collection_id(collection);
    req.set_page_size(2);  // small pages: paging is exercised too
    req.set_page_token(token);
    pb::ListDocumentsResponse resp;
    grpc::Status s = c.docs->ListDocuments(&ctx, req, &resp);
    if (!s.ok()) return s;
    for (const auto& d : resp.documents()) out->push_back(d);
    token = resp.next_page_token();
    if (token.empty()) return grpc::Status::OK;
  }
  return grpc::Status(grpc::StatusCode::INTERNAL, "more than 100 pages");
}

std::set<std::string> Ids(const std::vector<pb::Document>& docs) {
  std::set<std::string> ids;
  for (const auto& d : docs) ids.insert(d.document_id());
  return ids;
}

// grpc.health.v1.Health/Check through the generic stub, the two messages hand-encoded:
// HealthCheckRequest{string service = 1}, HealthCheckResponse{ServingStatus status = 1}
// (UNKNOWN 0, SERVING 1, NOT_SERVING 2). *serving_status is -1 when the reply cannot be read.
grpc::Status HealthCheck(const Conn& c, const std::string& service, int* serving_status) {
  *serving_status = -1;
  std::string request_bytes;
  if (!service.empty()) {
    request_bytes += '\x0a';
    request_bytes += static_cast<char>(service.size());  // < 128 bytes in these tests
    request_bytes += service;
  }
  grpc::Slice slice(request_bytes);
  grpc::ByteBuffer request(&slice, 1), response;
  grpc::ClientContext ctx;
  c.Prepare(&ctx, 10);
  grpc::GenericStub stub(c.channel);
  std::promise<grpc::Status> done;
  std::future<grpc::Status> result = done.get_future();
  stub.UnaryCall(&ctx, "/grpc.health.v1.Health/Check", grpc::StubOptions(), &request, &response,
                 [&done](grpc::Status s) { done.set_value(std::move(s)); });
  if (result.wait_for(std::chrono::seconds(20)) != std::future_status::ready) {
    ctx.TryCancel();
    result.wait();  // the cancelled call completes
  }
  grpc::Status status = result.get();
  if (status.ok()) {
    std::vector<grpc::Slice> slices;
    std::string bytes;
    if (response.Dump(&slices).ok()) {
      for (const auto& s : slices) bytes.append(reinterpret_cast<const char*>(s.begin()), s.size());
    }
    if (bytes.empty()) {
      *serving_status = 0;  // every field at its default: UNKNOWN
    } else if (bytes.size() == 2 && bytes[0] == '\x08') {
      *serving_status = static_cast<unsigned char>(bytes[1]);
    }
  }
  return status;
}

// grpc.health.v1.Health/Watch through the generic stub (a server-streaming call made as a
// bidirectional one: one request, then half-close), collecting every status it streams.
class HealthWatch : public grpc::ClientBidiReactor<grpc::ByteBuffer, grpc::ByteBuffer> {
 public:
  HealthWatch(const Conn& c, const std::string& service, double seconds)
      : stub_(c.channel) {
    c.Prepare(&ctx_, seconds);
    std::string bytes;
    if (!service.empty()) {
      bytes += '\x0a';
      bytes += static_cast<char>(service.size());  // < 128 bytes in these tests
      bytes += service;
    }
    grpc::Slice slice(bytes);
    request_ = grpc::ByteBuffer(&slice, 1);
    stub_.PrepareBidiStreamingCall(&ctx_, "/grpc.health.v1.Health/Watch", grpc::StubOptions(), this);
    StartWrite(&request_);
    StartRead(&response_);
    StartCall();
  }
  ~HealthWatch() override {
    ctx_.TryCancel();
    std::unique_lock<std::mutex> lock(mu_);
    cv_.wait(lock, [&] { return done_; });  // the reactor must not outlive the call
  }

  void OnWriteDone(bool ok) override {
    if (ok) StartWritesDone();
  }
  void OnReadDone(bool ok) override {
    if (!ok) return;
    std::vector<grpc::Slice> slices;
    std::string bytes;
    if (response_.Dump(&slices).ok()) {
      for (const auto& s : slices) bytes.append(reinterpret_cast<const char*>(s.begin()), s.size());
    }
    int status = -1;
    if (bytes.empty()) status = 0;
    if (bytes.size() == 2 && bytes[0] == '\x08') status = static_cast<unsigned char>(bytes[1]);
    {
      std::lock_guard<std::mutex> lock(mu_);
      statuses_.push_back(status);
    }
    cv_.notify_all();
    StartRead(&response_);
  }
  void OnDone(const grpc::Status& s) override {
    {
      std::lock_guard<std::mutex> lock(mu_);
      status_ = s;
      done_ = true;
    }
    cv_.notify_all();
  }

  // Waits up to `seconds` until `count` statuses have arrived or the call ended; returns them.
  std::vector<int> WaitFor(size_t count, double seconds) {
    std::unique_lock<std::mutex> lock(mu_);
    cv_.wait_for(lock, std::chrono::milliseconds(static_cast<int64_t>(seconds * 1000)),
                 [&] { return statuses_.size() >= count || done_; });
    return statuses_;
  }
  // Waits up to `seconds` for the call to end; false if it has not.
  bool WaitDone(double seconds, grpc::Status* status) {
    std::unique_lock<std::mutex> lock(mu_);
    cv_.wait_for(lock, std::chrono::milliseconds(static_cast<int64_t>(seconds * 1000)),
                 [&] { return done_; });
    *status = status_;
    return done_;
  }

 private:
  grpc::GenericStub stub_;
  grpc::ClientContext ctx_;
  grpc::ByteBuffer request_, response_;
  std::mutex mu_;
  std::condition_variable cv_;
  std::vector<int> statuses_;  // UNKNOWN 0, SERVING 1, NOT_SERVING 2, SERVICE_UNKNOWN 3; -1 unreadable
  bool done_ = false;
  grpc::Status status_;
};

// ---------------------------------------------------------------------------------------------
// Metrics.

std::string Scrape(int port) {
  httplib::Client http("127.0.0.1", port);
  http.set_connection_timeout(2, 0);
  http.set_read_timeout(5, 0);
  auto res = http.Get("/metrics");
  return res && res->status == 200 ? res->body : "";
}

// The value of `series` (name with its labels exactly as exposed, e.g.
// `sharedllm_ask_requests_total{status="OK"}`) in a text exposition; NaN when absent.
double Sample(const std::string& exposition, const std::string& series) {
  size_t pos = 0;
  while (pos < exposition.size()) {
    size_t end = exposition.find('\n', pos);
    if (end == std::string::npos) end = exposition.size();
    const std::string line = exposition.substr(pos, end - pos);
    pos = end + 1;
    if (line.compare(0, series.size() + 1, series + " ") == 0) {
      return std::strtod(line.c_str() + series.size() + 1, nullptr);
    }
  }
  return std::nan("");
}

// Polls /metrics until `series` satisfies `pred` or `seconds` pass; returns the last value.
template <typename Pred>
double WaitForSample(int port, const std::string& series, Pred pred, double seconds = 10) {
  const auto start = Clock::now();
  double v = std::nan("");
  for (int i = 0; i < 1000; ++i) {
    v = Sample(Scrape(port), series);
    if (pred(v) || SecondsSince(start) > seconds) break;
    SleepMs(50);
  }
  return v;
}

std::string Describe(const grpc::Status& s) {
  return "status " + std::to_string(static_cast<int>(s.error_code())) + ": " + s.error_message();
}

// ---------------------------------------------------------------------------------------------
// The fixture.

class ServiceTest : public ::testing::Test {
 protected:
  // One tiny SharedLLM per test process.
  static void SetUpTestSuite() {
    suite_dir_ = new TempDir();
    model_dir_ = *suite_dir_ / "model";
    const CommandResult r = sharedllm::test::Run(
        {SHAREDLLM_BIN, "init", "--base", std::string(SHAREDLLM_SOURCE_DIR) + "/models/tiny",
         "--out", model_dir_, "--layers", "1", "--chunk-size", std::to_string(kChunkSize),
         "--depth", std::to_string(kDepth), "--alphas", "4,2"},
        suite_dir_->path());
    model_error_ = r.exit_code == 0 ? "" : "sharedllm init failed: " + r.out + r.err;
  }
  static void TearDownTestSuite() {
    delete suite_dir_;
    suite_dir_ = nullptr;
  }

  void SetUp() override { ASSERT_EQ(model_error_, ""); }

  // Starts a server (kept in servers_, stopped in teardown) and fails the test if it cannot.
  // `data_dir` defaults to a fresh directory.
  // `until_ready` false: returns once the ports are open (see Server::Start).
  // `model` defaults to the suite's tiny SharedLLM.
  Server& StartServer(const std::vector<std::string>& extra = {}, std::string data_dir = "",
                      bool until_ready = true, const std::string& model = "") {
    if (data_dir.empty()) data_dir = dir_.Mkdir("data" + std::to_string(servers_.size()));
    servers_.push_back(std::make_unique<Server>());
    Server& s = *servers_.back();
    const std::string error =
        s.Start(model.empty() ? model_dir_ : model, data_dir, dir_.path(), extra, until_ready);
    EXPECT_EQ(error, "");
    return s;
  }

  // Uploads `text` and waits for READY.
  void UploadReady(const Conn& c, const std::string& id, const std::string& text,
                   const std::string& collection = "") {
    pb::IndexJob job;
    UploadOptions o;
    o.collection = collection;
    grpc::Status s = Upload(c, id, text, &job, o);
    ASSERT_TRUE(s.ok()) << id << ": " << Describe(s);
    WatchResult w = Watch(c, id);
    ASSERT_TRUE(w.status.ok()) << id << ": " << Describe(w.status);
    ASSERT_FALSE(w.jobs.empty());
    ASSERT_EQ(w.jobs.back().state(), pb::IndexJob::READY)
        << id << ": " << w.jobs.back().ShortDebugString();
  }

  void TearDown() override {
    for (auto& s : servers_) {
      if (s->child().running()) s->child().Terminate(10);  // SIGKILL after 10 s
    }
    servers_.clear();
  }

  static TempDir* suite_dir_;
  static std::string model_dir_;
  static std::string model_error_;
  TempDir dir_;
  std::vector<std::unique_ptr<Server>> servers_;
};

TempDir* ServiceTest::suite_dir_ = nullptr;
std::string ServiceTest::model_dir_;
std::string ServiceTest::model_error_;

// Chunks of a document of `tokens` tokens: C tokens each, a last piece shorter than a tree's
// minimum (2^depth tokens) joins the chunk before it (sharedllm/context_tree.cpp ChunkSpans).
int64_t NumChunks(int64_t tokens) {
  return tokens / kChunkSize + (tokens % kChunkSize >= (1 << kDepth) ? 1 : 0);
}

// Checks the Started message of an answer over documents with the given token counts.
void CheckStarted(const pb::Started& started, const std::map<std::string, int64_t>& num_tokens) {
  int64_t total_chunks = 0;
  for (const auto& [id, tokens] : num_tokens) total_chunks += NumChunks(tokens);
  EXPECT_EQ(started.num_chunks(), total_chunks);
  ASSERT_GT(started.nodes_size(), 0);
  std::map<std::pair<std::string, int>, int> per_chunk;
  std::vector<std::string> bad;  // reported together, a few at most
  for (const auto& n : started.nodes()) {
    auto it = num_tokens.find(n.document_id());
    if (it == num_tokens.end()) {
      bad.push_back("unexpected document: " + n.ShortDebugString());
      continue;
    }
    const int64_t chunks = NumChunks(it->second);
    // Chunk c covers document tokens [c*C, (c+1)*C); the last one runs to the end.
    const int64_t chunk_begin = int64_t{n.chunk()} * kChunkSize;
    const int64_t chunk_end = n.chunk() + 1 == chunks ? it->second : chunk_begin + kChunkSize;
    if (n.chunk() < 0 || n.chunk() >= chunks) {
      bad.push_back("chunk out of range: " + n.ShortDebugString());
    } else if (!(chunk_begin <= n.token_begin() && n.token_begin() < n.token_end() &&
                 n.token_end() <= chunk_end)) {
      bad.push_back("span outside document tokens [" + std::to_string(chunk_begin) + ", " +
                    std::to_string(chunk_end) + ") of its chunk: " + n.ShortDebugString());
    }
    if (n.level() < 1 || n.level() > kDepth || n.index() < 0 || n.index() >= (1 << n.level())) {
      bad.push_back("bad level/index: " + n.ShortDebugString());
    }
    ++per_chunk[{n.document_id(), n.chunk()}];
  }
  // Every chunk of every document contributes its depth+1 preserved nodes.
  EXPECT_EQ(static_cast<int64_t>(per_chunk.size()), total_chunks);
  for (const auto& [key, count] : per_chunk) {
    if (count != kDepth + 1) {
      bad.push_back(key.first + " chunk " + std::to_string(key.second) + " has " +
                    std::to_string(count) + " nodes");
    }
  }
  std::string report;
  for (size_t i = 0; i < bad.size() && i < 5; ++i) report += "\n  " + bad[i];
  EXPECT_TRUE(bad.empty()) << bad.size() << " problems in Started, e.g." << report;
}

// Node identity and the positions the model reads of it (Retrieve and Ask's Started agree).
std::vector<std::string> NodeKeys(
    const google::protobuf::RepeatedPtrField<pb::SelectedNode>& nodes) {
  std::vector<std::string> keys;
  for (const auto& n : nodes) {
    keys.push_back(n.document_id() + "/" + std::to_string(n.chunk()) + "/" +
                   std::to_string(n.level()) + "/" + std::to_string(n.index()) + "/" +
                   std::to_string(n.token_begin()) + "-" + std::to_string(n.token_end()) + "/" +
                   std::to_string(n.kept_positions()));
  }
  return keys;
}

// ---------------------------------------------------------------------------------------------
// 1. Upload, watch, ask, retrieve.

// An upload the client cancels mid-stream (a disconnect looks the same to the server) stores
// nothing, with or without a sha256 in its header: the id stays unknown and the whole document
// uploads under it afterwards. Ending the stream must not be taken for a complete upload.
TEST_F(ServiceTest, UploadCutOffMidStreamStoresNothing) {
  Server& server = StartServer();
  ASSERT_FALSE(HasFailure());
  Conn c(server.address());
  const std::string text = Text(6000, 11);
  for (const bool with_sha : {false, true}) {
    const std::string id = with_sha ? "cut-sha" : "cut";
    grpc::ClientContext ctx;
    c.Prepare(&ctx, 60);
    pb::IndexJob job;
    auto writer = c.docs->UploadDocument(&ctx, &job);
    pb::UploadDocumentRequest header;
    header.mutable_header()->set_document_id(id);
    if (with_sha) header.mutable_header()->set_sha256(HexSha256(text));
    ASSERT_TRUE(writer->Write(header));
    pb::UploadDocumentRequest first_half;
    first_half.set_chunk(text.substr(0, text.size() / 2));
    ASSERT_TRUE(writer->Write(first_half));
    // Let the server read what was sent, then cut the call off without WritesDone.
    std::this_thread::sleep_for(std::chrono::milliseconds(300));
    ctx.TryCancel();
    EXPECT_EQ(writer->Finish().error_code(), grpc::StatusCode::CANCELLED) << id;
    std::this_thread::sleep_for(std::chrono::milliseconds(300));
    pb::Document doc;
    EXPECT_EQ(GetDocument(c, id, &doc).error_code(), grpc::StatusCode::NOT_FOUND)
        << id << ": a cut-off upload was stored (" << doc.size_bytes() << " bytes)";
    pb::IndexJob whole;
    const grpc::Status retry = Upload(c, id, text, &whole);
    EXPECT_TRUE(retry.ok()) << id << ": " << Describe(retry);
  }
}

TEST_F(ServiceTest, UploadWatchAskRetrieve) {
  Server& server = StartServer();
  ASSERT_FALSE(HasFailure());
  Conn c(server.address());

  // ~300 chunks: indexing takes long enough for the watch to see progress.
  const std::string text = Text(30000, 1);
  pb::IndexJob job;
  UploadOptions o;
  o.piece = 7000;  // several chunk messages
  o.name = "licence.txt";
  grpc::Status s = Upload(c, "doc-1", text, &job, o);
  ASSERT_TRUE(s.ok()) << Describe(s) << server.Log();
  EXPECT_EQ(job.document_id(), "doc-1");
  EXPECT_EQ(job.state(), pb::IndexJob::QUEUED);
  EXPECT_GT(job.created_unix_ms(), 0);

  WatchResult w = Watch(c, "doc-1");
  ASSERT_TRUE(w.status.ok()) << Describe(w.status);
  ASSERT_FALSE(w.jobs.empty());
  EXPECT_GE(w.jobs.size(), 2u) << "no progress was streamed before READY";
  int64_t last_done = 0;
  int previous_state = 0;
  for (const auto& j : w.jobs) {
    EXPECT_EQ(j.document_id(), "doc-1");
    EXPECT_GE(j.chunks_done(), last_done) << j.ShortDebugString();
    last_done = j.chunks_done();
    if (j.state() >= pb::IndexJob::COMPRESSING) {
      EXPECT_GT(j.chunks_total(), 0) << j.ShortDebugString();
    }
    EXPECT_LE(j.chunks_done(), std::max<int64_t>(j.chunks_total(), 0)) << j.ShortDebugString();
    EXPECT_NE(j.state(), pb::IndexJob::FAILED) << j.ShortDebugString();
    // States only move forward (COMPRESSING and PERSISTING alternate chunk by chunk).
    if (!(previous_state == pb::IndexJob::PERSISTING && j.state() == pb::IndexJob::COMPRESSING)) {
      EXPECT_GE(j.state(), previous_state) << j.ShortDebugString();
    }
    previous_state = j.state();
  }
  const pb::IndexJob& ready = w.jobs.back();
  ASSERT_EQ(ready.state(), pb::IndexJob::READY) << ready.ShortDebugString();
  EXPECT_GT(ready.chunks_total(), 100);
  EXPECT_EQ(ready.chunks_done(), ready.chunks_total());
  EXPECT_GT(ready.num_tokens(), ready.chunks_total() * (kChunkSize - 1));

  pb::Document doc;
  s = GetDocument(c, "doc-1", &doc);
  ASSERT_TRUE(s.ok()) << Describe(s);
  EXPECT_EQ(doc.state(), pb::IndexJob::READY);
  EXPECT_EQ(doc.sha256(), HexSha256(text));
  EXPECT_EQ(doc.size_bytes(), static_cast<int64_t>(text.size()));
  EXPECT_EQ(doc.name(), "licence.txt");
  EXPECT_EQ(doc.num_chunks(), ready.chunks_total());
  EXPECT_EQ(doc.num_tokens(), ready.num_tokens());
  EXPECT_EQ(doc.model_fingerprint().size(), 64u);
  pb::IndexJob status;
  ASSERT_TRUE(GetIndexStatus(c, "doc-1", &status).ok());
  EXPECT_EQ(status.state(), pb::IndexJob::READY);

  const std::map<std::string, int64_t> tokens = {{"doc-1", doc.num_tokens()}};
  constexpr int kMaxTokens = 24;
  AskResult a = Ask(c, AskFor({"doc-1"}, "What does the licence allow?", kMaxTokens));
  ASSERT_TRUE(a.status.ok()) << Describe(a.status) << server.Log();
  EXPECT_EQ(a.protocol_error, "");
  ASSERT_TRUE(a.has_started);
  ASSERT_NO_FATAL_FAILURE(CheckStarted(a.started, tokens));
  EXPECT_EQ(a.started.num_chunks(), doc.num_chunks());
  int64_t kept = 0;
  for (const auto& n : a.started.nodes()) {
    EXPECT_GT(n.kept_positions(), 0) << n.ShortDebugString();
    kept += n.kept_positions();
  }
  EXPECT_GE(a.deltas.size(), 1u);
  EXPECT_TRUE(StrictUtf8(a.text)) << "the answer is not valid UTF-8";
  ASSERT_TRUE(a.has_final);
  const pb::Final& f = a.final;
  if (f.finish_reason() == pb::Final::LENGTH) {
    EXPECT_EQ(f.usage().completion_tokens(), kMaxTokens);
  } else {
    EXPECT_EQ(f.finish_reason(), pb::Final::EOS);
    EXPECT_LT(f.usage().completion_tokens(), kMaxTokens);
  }
  EXPECT_GT(f.usage().prompt_tokens(), 1);
  EXPECT_EQ(f.usage().context_tokens(), doc.num_tokens());
  EXPECT_EQ(f.usage().context_positions(), kept);
  // Citations: exactly the selected nodes of the deepest level.
  int32_t finest = 0;
  for (const auto& n : a.started.nodes()) finest = std::max(finest, n.level());
  int citations = 0;
  for (const auto& n : a.started.nodes()) citations += n.level() == finest;
  EXPECT_EQ(f.citations_size(), citations);
  for (const auto& n : f.citations()) {
    EXPECT_EQ(n.level(), finest);
    EXPECT_EQ(n.document_id(), "doc-1");
    EXPECT_LT(n.token_begin(), n.token_end());
  }
  const auto& t = f.timings();
  for (double v : {t.queue_seconds(), t.retrieval_seconds(), t.kv_load_seconds(),
                   t.time_to_first_token_seconds(), t.decode_seconds(), t.total_seconds()}) {
    EXPECT_GE(v, 0) << t.ShortDebugString();
  }
  EXPECT_GT(t.total_seconds(), 0);
  EXPECT_GE(t.total_seconds(), t.decode_seconds());
  EXPECT_GE(t.total_seconds(), t.retrieval_seconds());

  // Greedy decoding is deterministic.
  AskResult b = Ask(c, AskFor({"doc-1"}, "What does the licence allow?", kMaxTokens));
  ASSERT_TRUE(b.status.ok()) << Describe(b.status);
  EXPECT_EQ(b.text, a.text);
  EXPECT_EQ(NodeKeys(b.started.nodes()), NodeKeys(a.started.nodes()));
  EXPECT_EQ(b.final.usage().completion_tokens(), f.usage().completion_tokens());

  // Retrieve selects exactly the nodes Ask read.
  pb::RetrieveRequest rr;
  rr.add_document_ids("doc-1");
  rr.set_question("What does the licence allow?");
  pb::RetrieveResponse resp;
  s = Retrieve(c, rr, &resp);
  ASSERT_TRUE(s.ok()) << Describe(s);
  EXPECT_EQ(NodeKeys(resp.nodes()), NodeKeys(a.started.nodes()));
  EXPECT_EQ(resp.num_chunks(), a.started.num_chunks());
  EXPECT_GE(resp.retrieval_seconds(), 0);

  // A long answer stays valid UTF-8 message by message (the random model emits byte tokens).
  AskResult longer = Ask(c, AskFor({"doc-1"}, "Tell me everything.", 400));
  ASSERT_TRUE(longer.status.ok()) << Describe(longer.status);
  for (const auto& d : longer.deltas) EXPECT_TRUE(StrictUtf8(d));
  EXPECT_TRUE(StrictUtf8(longer.text));

  // Structured logs: one JSON line per RPC on the server's stderr, none per token.
  std::string logs;
  glob_t g;
  if (::glob((dir_ / "server*.err").c_str(), 0, nullptr, &g) == 0) {
    for (size_t i = 0; i < g.gl_pathc; ++i) logs += test::ReadFile(g.gl_pathv[i]);
    ::globfree(&g);
  }
  size_t ask_lines = 0;
  for (size_t at = logs.find("\"rpc\":\"/sharedllm.v1.QueryService/Ask\""); at != std::string::npos;
       at = logs.find("\"rpc\":\"/sharedllm.v1.QueryService/Ask\"", at + 1)) {
    ++ask_lines;
  }
  EXPECT_EQ(ask_lines, 3u) << logs;  // three Asks, 400+ tokens: still three lines
  EXPECT_NE(logs.find("\"rpc\":\"/sharedllm.v1.DocumentService/UploadDocument\""), std::string::npos);
}

// 2. Restart: SIGTERM drains and exits 0; the tree persists.

TEST_F(ServiceTest, RestartKeepsDocumentsAndAnswers) {
  const std::string data = dir_.Mkdir("persistent");
  Server& first = StartServer({}, data);
  ASSERT_FALSE(HasFailure());
  std::string answer;
  std::vector<std::string> nodes;
  {
    Conn c(first.address());
    ASSERT_NO_FATAL_FAILURE(UploadReady(c, "kept", Text(3000, 2), "coll"));
    AskResult a = Ask(c, AskFor({"kept"}, "Who is the author?", 16));
    ASSERT_TRUE(a.status.ok()) << Describe(a.status);
    answer = a.text;
    nodes = NodeKeys(a.started.nodes());
  }
  first.child().Signal(SIGTERM);
  ASSERT_TRUE(first.child().Wait(60)) << "no exit within 60 s of SIGTERM\n" << first.Log();
  EXPECT_EQ(first.child().ExitCode(), 0) << first.Log();
  EXPECT_NE(first.child().Out().find("draining"), std::string::npos);

  Server& second = StartServer({}, data);
  ASSERT_FALSE(HasFailure());
  Conn c(second.address());
  AskResult a = Ask(c, AskFor({"kept"}, "Who is the author?", 16));
  ASSERT_TRUE(a.status.ok()) << Describe(a.status) << second.Log();
  EXPECT_EQ(a.text, answer);
  EXPECT_EQ(NodeKeys(a.started.nodes()), nodes);

  pb::Document doc;
  ASSERT_TRUE(GetDocument(c, "kept", &doc).ok());
  EXPECT_EQ(doc.state(), pb::IndexJob::READY);
  EXPECT_EQ(doc.collection_id(), "coll");
  pb::IndexJob job;
  grpc::Status s = GetIndexStatus(c, "kept", &job);
  ASSERT_TRUE(s.ok()) << Describe(s);
  EXPECT_EQ(job.state(), pb::IndexJob::READY);
  EXPECT_EQ(job.chunks_done(), doc.num_chunks());
  std::vector<pb::Document> all;
  ASSERT_TRUE(ListAll(c, &all).ok());
  ASSERT_EQ(all.size(), 1u);
  EXPECT_EQ(all[0].document_id(), "kept");
  EXPECT_EQ(all[0].state(), pb::IndexJob::READY);
}

// 3. kill -9 while indexing: the job resumes from its last persisted chunk.

TEST_F(ServiceTest, KillDuringIndexingResumesAfterRestart) {
  const std::string data = dir_.Mkdir("crash");
  Server& first = StartServer({}, data);
  ASSERT_FALSE(HasFailure());
  int64_t seen_done = 0;
  {
    Conn c(first.address());
    ASSERT_NO_FATAL_FAILURE(UploadReady(c, "small", Text(2000, 3)));
    pb::IndexJob job;
    grpc::Status s = Upload(c, "big", Text(200000, 4), &job);
    ASSERT_TRUE(s.ok()) << Describe(s);

    // Watch until a good part is persisted, then kill the server in the middle of the job.
    grpc::ClientContext ctx;
    c.Prepare(&ctx, 60);
    pb::GetIndexStatusRequest req;
    req.set_document_id("big");
    auto reader = c.docs->WatchIndexStatus(&ctx, req);
    bool killed = false;
    for (int i = 0; i < 1000000 && reader->Read(&job); ++i) {
      ASSERT_NE(job.state(), pb::IndexJob::READY) << "indexing finished before the kill";
      ASSERT_NE(job.state(), pb::IndexJob::FAILED) << job.ShortDebugString();
      seen_done = std::max(seen_done, job.chunks_done());
      if ((job.state() == pb::IndexJob::COMPRESSING || job.state() == pb::IndexJob::PERSISTING) &&
          job.chunks_done() >= 200) {
        first.child().Signal(SIGKILL);
        killed = true;
        break;
      }
    }
    ASSERT_TRUE(killed) << "never saw the job past chunk 200";
    ASSERT_TRUE(first.child().Wait(30));
    EXPECT_EQ(first.child().ExitCode(), -SIGKILL);
    ctx.TryCancel();
    reader->Finish();
  }

  Server& second = StartServer({}, data);
  ASSERT_FALSE(HasFailure());
  Conn c(second.address());
  pb::IndexJob job;
  grpc::Status s = GetIndexStatus(c, "big", &job);
  ASSERT_TRUE(s.ok()) << Describe(s);
  EXPECT_NE(job.state(), pb::IndexJob::FAILED) << job.ShortDebugString();
  EXPECT_GE(job.chunks_done(), seen_done)
      << "persisted chunks were lost: " << job.ShortDebugString();

  WatchResult w = Watch(c, "big");
  ASSERT_TRUE(w.status.ok()) << Describe(w.status) << second.Log();
  ASSERT_FALSE(w.jobs.empty());
  int64_t last = seen_done;
  for (const auto& j : w.jobs) {
    EXPECT_GE(j.chunks_done(), last) << "chunks_done went backwards: " << j.ShortDebugString();
    last = std::max(last, j.chunks_done());
  }
  ASSERT_EQ(w.jobs.back().state(), pb::IndexJob::READY) << w.jobs.back().ShortDebugString();
  EXPECT_EQ(w.jobs.back().chunks_done(), w.jobs.back().chunks_total());

  // No document is corrupt: both are READY, complete, and answer.
  for (const std::string& id : {std::string("small"), std::string("big")}) {
    pb::Document doc;
    s = GetDocument(c, id, &doc);
    ASSERT_TRUE(s.ok()) << id << ": " << Describe(s);
    EXPECT_EQ(doc.state(), pb::IndexJob::READY) << id;
    AskResult a = Ask(c, AskFor({id}, "What is it about?", 8));
    ASSERT_TRUE(a.status.ok()) << id << ": " << Describe(a.status) << second.Log();
    EXPECT_NE(a.status.error_code(), grpc::StatusCode::DATA_LOSS);
    ASSERT_NO_FATAL_FAILURE(CheckStarted(a.started, {{id, doc.num_tokens()}}));
    EXPECT_TRUE(a.has_final);
  }
  AskResult both = Ask(c, AskFor({"small", "big"}, "Compare them.", 4));
  EXPECT_TRUE(both.status.ok()) << Describe(both.status);
}

// 4. A cancelled Ask stops generating at once and frees its worker.

TEST_F(ServiceTest, ClientCancelFreesTheWorker) {
  Server& server = StartServer({"--max-running", "1", "--max-waiting", "0"});
  ASSERT_FALSE(HasFailure());
  Conn c(server.address());
  ASSERT_NO_FATAL_FAILURE(UploadReady(c, "doc", Text(40000, 5)));

  {
    grpc::ClientContext ctx;
    c.Prepare(&ctx, 60);
    auto reader = c.query->Ask(&ctx, AskFor({"doc"}, "Go on and on.", 1000));
    pb::AskResponse msg;
    int deltas = 0;
    for (int i = 0; i < 100 && deltas == 0 && reader->Read(&msg); ++i) {
      if (msg.has_delta()) ++deltas;
    }
    ASSERT_EQ(deltas, 1) << "no delta before the end of the stream";
    ctx.TryCancel();
    for (int i = 0; i < 100000 && reader->Read(&msg); ++i) {
    }
    EXPECT_EQ(reader->Finish().error_code(), grpc::StatusCode::CANCELLED);
  }
  const auto cancelled_at = Clock::now();
  // The next Ask is admitted as soon as the server has seen the cancellation (a few
  // milliseconds; retried on RESOURCE_EXHAUSTED for at most 2 s).
  AskResult next;
  for (int i = 0; i < 200; ++i) {
    next = Ask(c, AskFor({"doc"}, "Short one.", 4), 30);
    if (next.status.error_code() != grpc::StatusCode::RESOURCE_EXHAUSTED ||
        SecondsSince(cancelled_at) > 2) {
      break;
    }
    SleepMs(10);
  }
  ASSERT_TRUE(next.status.ok()) << Describe(next.status);
  EXPECT_TRUE(next.has_final);
  EXPECT_LT(SecondsSince(cancelled_at), 5);

  // The cancelled request ended as CANCELLED and its model loop stopped early.
  const int port = server.metrics_port();
  EXPECT_EQ(WaitForSample(port, "sharedllm_ask_requests_total{status=\"CANCELLED\"}",
                          [](double v) { return v == 1; }),
            1);
  const std::string metrics = Scrape(port);
  const double generated = Sample(metrics, "sharedllm_generation_tokens_total");
  EXPECT_GE(generated, 1);
  EXPECT_LT(generated, 1000 + 4) << "the cancelled answer was generated to the end";
  EXPECT_EQ(Sample(metrics, "sharedllm_requests_running"), 0);
}

// 5. A deadline that passes while generating ends the Ask with DEADLINE_EXCEEDED.

TEST_F(ServiceTest, DeadlineExceededWhileGenerating) {
  Server& server = StartServer();
  ASSERT_FALSE(HasFailure());
  Conn c(server.address());
  ASSERT_NO_FATAL_FAILURE(UploadReady(c, "doc", Text(40000, 6)));
  // Warm up (first-call allocations) so that the deadline measures generation.
  ASSERT_TRUE(Ask(c, AskFor({"doc"}, "Warm up.", 2)).status.ok());

  AskResult a = Ask(c, AskFor({"doc"}, "Go on and on.", 1000), /*seconds=*/0.2);
  EXPECT_EQ(a.status.error_code(), grpc::StatusCode::DEADLINE_EXCEEDED) << Describe(a.status);
  EXPECT_FALSE(a.has_final);

  // The server saw the deadline too, stopped the model loop, and freed the worker.
  const int port = server.metrics_port();
  EXPECT_EQ(WaitForSample(port, "sharedllm_ask_requests_total{status=\"DEADLINE_EXCEEDED\"}",
                          [](double v) { return v == 1; }),
            1);
  EXPECT_LT(Sample(Scrape(port), "sharedllm_generation_tokens_total"), 1000 + 2);
  AskResult after = Ask(c, AskFor({"doc"}, "Short one.", 4));
  EXPECT_TRUE(after.status.ok()) << Describe(after.status);
}

// 6. Bounded queues: questions and index jobs.

TEST_F(ServiceTest, FullQueuesAreResourceExhausted) {
  Server& server = StartServer(
      {"--max-running", "1", "--max-waiting", "0", "--index-queue", "1", "--index-workers", "1"});
  ASSERT_FALSE(HasFailure());
  Conn c(server.address());
  ASSERT_NO_FATAL_FAILURE(UploadReady(c, "doc", Text(3000, 7)));

  {
    // A long answer holds the only slot...
    grpc::ClientContext ctx;
    c.Prepare(&ctx, 60);
    auto reader = c.query->Ask(&ctx, AskFor({"doc"}, "Go on and on.", 1000));
    pb::AskResponse msg;
    int deltas = 0;
    for (int i = 0; i < 100 && deltas == 0 && reader->Read(&msg); ++i) {
      if (msg.has_delta()) ++deltas;
    }
    ASSERT_EQ(deltas, 1);
    // ...so another question has no place, not even in the queue.
    AskResult second = Ask(c, AskFor({"doc"}, "Me too?", 4));
    EXPECT_EQ(second.status.error_code(), grpc::StatusCode::RESOURCE_EXHAUSTED)
        << Describe(second.status);
    pb::RetrieveRequest rr;
    rr.add_document_ids("doc");
    rr.set_question("Me too?");
    pb::RetrieveResponse resp;
    EXPECT_EQ(Retrieve(c, rr, &resp).error_code(), grpc::StatusCode::RESOURCE_EXHAUSTED);
    ctx.TryCancel();
    for (int i = 0; i < 100000 && reader->Read(&msg); ++i) {
    }
    reader->Finish();
  }

  // Index queue of 1 with one worker: a long job runs, one waits, the next is refused.
  std::vector<grpc::StatusCode> codes;
  const std::vector<std::pair<std::string, std::string>> uploads = {
      {"q1", Text(200000, 8)}, {"q2", Text(2000, 9)}, {"q3", Text(2000, 10)}};
  for (const auto& [id, text] : uploads) {
    pb::IndexJob job;
    codes.push_back(Upload(c, id, text, &job).error_code());
  }
  EXPECT_EQ(codes[0], grpc::StatusCode::OK);
  int exhausted = 0;
  for (size_t i = 0; i < codes.size(); ++i) {
    if (codes[i] == grpc::StatusCode::RESOURCE_EXHAUSTED) {
      ++exhausted;
      // A refused upload leaves nothing behind.
      pb::Document doc;
      EXPECT_EQ(GetDocument(c, uploads[i].first, &doc).error_code(), grpc::StatusCode::NOT_FOUND);
    } else {
      EXPECT_EQ(codes[i], grpc::StatusCode::OK) << uploads[i].first;
    }
  }
  EXPECT_GE(exhausted, 1);
  // Cancelling the long job ends the test quickly.
  pb::IndexJob job;
  EXPECT_TRUE(CancelJob(c, "q1", &job).ok());
}

// Limits that hold: uploads received at once, health watches (unauthenticated, each holding a
// thread), per-tenant quotas, idle connections, and numbers out of range refused at the start.
TEST_F(ServiceTest, LimitsHold) {
  Server& server = StartServer({"--max-uploads", "1", "--tenant-max-documents", "2",
                                "--max-idle-seconds", "1"});
  ASSERT_FALSE(HasFailure());
  Conn c(server.address());
  {
    // An upload in flight holds the only slot: another is refused before its bytes are read.
    grpc::ClientContext ctx;
    c.Prepare(&ctx, 60);
    pb::IndexJob job;
    auto writer = c.docs->UploadDocument(&ctx, &job);
    pb::UploadDocumentRequest header;
    header.mutable_header()->set_document_id("slow");
    ASSERT_TRUE(writer->Write(header));
    SleepMs(300);
    pb::IndexJob other;
    const grpc::Status refused = Upload(c, "other", Text(2000, 3), &other);
    EXPECT_EQ(refused.error_code(), grpc::StatusCode::RESOURCE_EXHAUSTED) << Describe(refused);
    EXPECT_NE(refused.error_message().find("--max-uploads"), std::string::npos) << Describe(refused);
    pb::UploadDocumentRequest body;
    body.set_chunk(Text(2000, 4));
    ASSERT_TRUE(writer->Write(body));
    writer->WritesDone();
    const grpc::Status done = writer->Finish();
    EXPECT_TRUE(done.ok()) << Describe(done);
  }
  // The slot is free again; the tenant's second document fits, a third does not.
  ASSERT_NO_FATAL_FAILURE(UploadReady(c, "second", Text(2000, 5)));
  pb::IndexJob job;
  const grpc::Status third = Upload(c, "third", Text(2000, 6), &job);
  EXPECT_EQ(third.error_code(), grpc::StatusCode::RESOURCE_EXHAUSTED) << Describe(third);
  EXPECT_NE(third.error_message().find("holds 2 documents"), std::string::npos) << Describe(third);
  ASSERT_TRUE(Delete(c, "second").ok());
  EXPECT_TRUE(Upload(c, "third", Text(2000, 6), &job).ok());
  {
    // Eight health watches at once; a ninth is refused, and a closed one frees its place.
    std::vector<std::unique_ptr<HealthWatch>> watches;
    for (int i = 0; i < 8; ++i) {
      watches.push_back(std::make_unique<HealthWatch>(c, "", 30));
      EXPECT_EQ(watches.back()->WaitFor(1, 10).size(), 1u) << i;
    }
    HealthWatch ninth(c, "", 30);
    grpc::Status status;
    ASSERT_TRUE(ninth.WaitDone(10, &status));
    EXPECT_EQ(status.error_code(), grpc::StatusCode::RESOURCE_EXHAUSTED) << Describe(status);
    watches.pop_back();
    SleepMs(800);  // the server notices the cancel within its 500 ms poll
    HealthWatch again(c, "", 30);
    EXPECT_EQ(again.WaitFor(1, 10).size(), 1u);
  }
  // A connection without calls is closed by the server after --max-idle-seconds.
  Conn idle(server.address());
  int serving = -1;
  ASSERT_TRUE(HealthCheck(idle, "", &serving).ok());
  EXPECT_EQ(idle.channel->GetState(false), GRPC_CHANNEL_READY);
  for (int i = 0; i < 100 && idle.channel->GetState(false) == GRPC_CHANNEL_READY; ++i) SleepMs(50);
  EXPECT_EQ(idle.channel->GetState(false), GRPC_CHANNEL_IDLE) << "the server closed it";
  EXPECT_TRUE(HealthCheck(idle, "", &serving).ok()) << "and a new call reconnects";
  // Numbers out of range stop the server before it loads anything, naming the flag.
  for (const std::vector<std::string>& bad :
       {std::vector<std::string>{"--threads", "-1"}, {"--max-uploads", "0"},
        {"--index-queue", "9999999999"}, {"--keepalive-seconds", "-5"}}) {
    std::vector<std::string> argv = {SHAREDLLM_SERVER_BIN, "--model", "none", "--data-dir", dir_ / "x"};
    argv.insert(argv.end(), bad.begin(), bad.end());
    const auto r = sharedllm::test::Run(argv, dir_.path());
    EXPECT_EQ(r.exit_code, 2) << bad[0];
    EXPECT_NE(r.err.find(bad[0]), std::string::npos) << r.err;
  }
}

// 7. NOT_FOUND and FAILED_PRECONDITION.

TEST_F(ServiceTest, UnknownIdsAndDocumentsNotReady) {
  Server& server = StartServer();
  ASSERT_FALSE(HasFailure());
  Conn c(server.address());
  pb::Document doc;
  pb::IndexJob job;
  EXPECT_EQ(GetDocument(c, "nope", &doc).error_code(), grpc::StatusCode::NOT_FOUND);
  EXPECT_EQ(GetIndexStatus(c, "nope", &job).error_code(), grpc::StatusCode::NOT_FOUND);
  EXPECT_EQ(Watch(c, "nope", 10).status.error_code(), grpc::StatusCode::NOT_FOUND);
  EXPECT_EQ(Delete(c, "nope").error_code(), grpc::StatusCode::NOT_FOUND);
  EXPECT_EQ(CancelJob(c, "nope", &job).error_code(), grpc::StatusCode::NOT_FOUND);
  EXPECT_EQ(Ask(c, AskFor({"nope"}, "Q?", 4)).status.error_code(), grpc::StatusCode::NOT_FOUND);
  pb::AskRequest by_collection = AskFor({}, "Q?", 4);
  by_collection.set_collection_id("no-such-collection");
  EXPECT_EQ(Ask(c, by_collection).status.error_code(), grpc::StatusCode::NOT_FOUND);
  pb::RetrieveRequest rr;
  rr.add_document_ids("nope");
  rr.set_question("Q?");
  pb::RetrieveResponse resp;
  EXPECT_EQ(Retrieve(c, rr, &resp).error_code(), grpc::StatusCode::NOT_FOUND);

  // A document that is still being indexed cannot be asked about.
  grpc::Status s = Upload(c, "big", Text(200000, 11), &job);
  ASSERT_TRUE(s.ok()) << Describe(s);
  AskResult a = Ask(c, AskFor({"big"}, "Ready yet?", 4));
  EXPECT_EQ(a.status.error_code(), grpc::StatusCode::FAILED_PRECONDITION) << Describe(a.status);
  EXPECT_FALSE(a.has_started);
  rr.set_document_ids(0, "big");
  EXPECT_EQ(Retrieve(c, rr, &resp).error_code(), grpc::StatusCode::FAILED_PRECONDITION);
  ASSERT_TRUE(GetDocument(c, "big", &doc).ok());
  EXPECT_NE(doc.state(), pb::IndexJob::READY);

  // Cancelling the job removes the document; a finished job cannot be cancelled again.
  s = CancelJob(c, "big", &job);
  ASSERT_TRUE(s.ok()) << Describe(s);
  EXPECT_EQ(job.state(), pb::IndexJob::CANCELLED);
  WatchResult w = Watch(c, "big", 30);
  ASSERT_TRUE(w.status.ok()) << Describe(w.status);
  ASSERT_FALSE(w.jobs.empty());
  EXPECT_EQ(w.jobs.back().state(), pb::IndexJob::CANCELLED);
  grpc::StatusCode code = grpc::StatusCode::OK;
  const auto start = Clock::now();
  for (int i = 0; i < 500 && SecondsSince(start) < 20; ++i) {
    code = GetDocument(c, "big", &doc).error_code();
    if (code == grpc::StatusCode::NOT_FOUND) break;
    SleepMs(20);
  }
  EXPECT_EQ(code, grpc::StatusCode::NOT_FOUND);
  EXPECT_EQ(CancelJob(c, "big", &job).error_code(), grpc::StatusCode::FAILED_PRECONDITION);
  EXPECT_EQ(Ask(c, AskFor({"big"}, "Q?", 4)).status.error_code(), grpc::StatusCode::NOT_FOUND);
}

// 8. INVALID_ARGUMENT.

TEST_F(ServiceTest, InvalidArguments) {
  Server& server = StartServer({"--max-document-mb", "1"});
  ASSERT_FALSE(HasFailure());
  Conn c(server.address());
  pb::IndexJob job;
  auto upload_code = [&](const std::string& id, const std::string& text, UploadOptions o,
                         std::string* message = nullptr) {
    grpc::Status s = Upload(c, id, text, &job, o);
    if (message) *message = s.error_message();
    return s.error_code();
  };
  const auto kInvalid = grpc::StatusCode::INVALID_ARGUMENT;
  const std::string good = Text(2000, 12);
  std::string message;

  EXPECT_EQ(upload_code("empty", "", {}), kInvalid);
  EXPECT_EQ(upload_code("huge", Text(2 << 20, 13), {}, &message), kInvalid);
  EXPECT_NE(message.find("document exceeds"), std::string::npos) << message;
  UploadOptions one_piece;
  one_piece.piece = (1 << 20) + 1;
  EXPECT_EQ(upload_code("big-chunk", Text((1 << 20) + 1, 14), one_piece, &message), kInvalid);
  EXPECT_NE(message.find("chunk"), std::string::npos) << message;
  EXPECT_EQ(upload_code("latin1", "caf\xe9 au lait, \xff\xfe", {}), kInvalid);
  EXPECT_EQ(upload_code("overlong", good + "\xc0\xaf", {}), kInvalid);       // overlong '/'
  EXPECT_EQ(upload_code("surrogate", good + "\xed\xa0\x80", {}), kInvalid);  // U+D800
  EXPECT_EQ(upload_code("truncated", good + "\xe2\x82", {}), kInvalid);
  EXPECT_EQ(upload_code("../x", good, {}), kInvalid);
  EXPECT_EQ(upload_code("", good, {}), kInvalid);
  EXPECT_EQ(upload_code(std::string(200, 'a'), good, {}), kInvalid);
  EXPECT_EQ(upload_code("has space", good, {}), kInvalid);
  UploadOptions bad_collection;
  bad_collection.collection = "a/b";
  EXPECT_EQ(upload_code("ok-id", good, bad_collection), kInvalid);
  UploadOptions wrong_sha;
  wrong_sha.sha256_override = HexSha256("something else");
  EXPECT_EQ(upload_code("sha", good, wrong_sha, &message), kInvalid);
  EXPECT_NE(message.find("sha256"), std::string::npos) << message;
  UploadOptions no_header;
  no_header.send_header = false;
  EXPECT_EQ(upload_code("noheader", good, no_header), kInvalid);
  // None of them created a document.
  std::vector<pb::Document> all;
  ASSERT_TRUE(ListAll(c, &all).ok());
  EXPECT_TRUE(all.empty()) << all.size() << " documents, e.g. " << all[0].document_id();

  // A good upload, so that only the argument is wrong below.
  ASSERT_NO_FATAL_FAILURE(UploadReady(c, "doc", good));
  EXPECT_TRUE(Ask(c, AskFor({"doc"}, "Fine?", 2)).status.ok());
  auto ask_code = [&](const pb::AskRequest& r) { return Ask(c, r).status.error_code(); };
  EXPECT_EQ(ask_code(AskFor({"doc"}, "", 4)), kInvalid);                      // empty question
  EXPECT_EQ(ask_code(AskFor({"doc"}, std::string(5000, 'q'), 4)), kInvalid);  // too long
  pb::AskRequest both = AskFor({"doc"}, "Q?", 4);
  both.set_collection_id("c");
  EXPECT_EQ(ask_code(both), kInvalid);
  EXPECT_EQ(ask_code(AskFor({}, "Q?", 4)), kInvalid);  // neither
  EXPECT_EQ(ask_code(AskFor({"doc"}, "Q?", 100000)), kInvalid);
  EXPECT_EQ(ask_code(AskFor({"doc"}, "Q?", -1)), kInvalid);
  EXPECT_EQ(ask_code(AskFor({"../doc"}, "Q?", 4)), kInvalid);
  // A client string is never echoed whole: a 100,000-byte bad id gets a short error.
  const AskResult huge = Ask(c, AskFor({std::string(100000, '/')}, "Q?", 4));
  EXPECT_EQ(huge.status.error_code(), kInvalid);
  EXPECT_LT(huge.status.error_message().size(), 200u) << huge.status.error_message().size();
  // The same document twice would be loaded twice: refused, by name.
  const AskResult twice = Ask(c, AskFor({"doc", "doc"}, "Q?", 4));
  EXPECT_EQ(twice.status.error_code(), kInvalid);
  EXPECT_NE(twice.status.error_message().find("'doc' is given more than once"), std::string::npos)
      << twice.status.error_message();
  pb::AskRequest hot = AskFor({"doc"}, "Q?", 4);
  hot.mutable_options()->set_temperature(-1);
  EXPECT_EQ(ask_code(hot), kInvalid);
  pb::AskRequest stops = AskFor({"doc"}, "Q?", 4);
  for (int i = 0; i < 5; ++i) stops.mutable_options()->add_stop("s" + std::to_string(i));
  EXPECT_EQ(ask_code(stops), kInvalid);

  grpc::ClientContext ctx;
  c.Prepare(&ctx);
  pb::ListDocumentsRequest list;
  list.set_page_size(1001);
  pb::ListDocumentsResponse listed;
  EXPECT_EQ(c.docs->ListDocuments(&ctx, list, &listed).error_code(), kInvalid);
  pb::Document doc;
  EXPECT_EQ(GetDocument(c, "../x", &doc).error_code(), kInvalid);
  EXPECT_EQ(Delete(c, "").error_code(), kInvalid);
  // The server is still healthy.
  EXPECT_TRUE(Ask(c, AskFor({"doc"}, "Still fine?", 2)).status.ok());
}

// 9. Tenants and API keys.

TEST_F(ServiceTest, TenantsAreIsolatedAndKeysRequired) {
  const std::string key_a = "key-of-tenant-a-0123456789";
  const std::string key_b = "key-of-tenant-b-9876543210";
  WriteFile(dir_ / "keys", "# test keys\n" + key_a + " tenant-a\n" + key_b + " tenant-b\n");
  Server& server = StartServer({"--api-keys", dir_ / "keys"});
  ASSERT_FALSE(HasFailure());
  Conn a(server.address(), key_a), b(server.address(), key_b);
  ASSERT_NO_FATAL_FAILURE(UploadReady(a, "secret", Text(3000, 15), "shared"));

  pb::Document doc;
  pb::IndexJob job;
  const auto kNotFound = grpc::StatusCode::NOT_FOUND;
  EXPECT_EQ(GetDocument(b, "secret", &doc).error_code(), kNotFound);
  EXPECT_EQ(GetIndexStatus(b, "secret", &job).error_code(), kNotFound);
  EXPECT_EQ(Watch(b, "secret", 10).status.error_code(), kNotFound);
  EXPECT_EQ(Ask(b, AskFor({"secret"}, "Tell me.", 4)).status.error_code(), kNotFound);
  pb::AskRequest by_collection = AskFor({}, "Tell me.", 4);
  by_collection.set_collection_id("shared");
  EXPECT_EQ(Ask(b, by_collection).status.error_code(), kNotFound);
  pb::RetrieveRequest rr;
  rr.add_document_ids("secret");
  rr.set_question("Tell me.");
  pb::RetrieveResponse resp;
  EXPECT_EQ(Retrieve(b, rr, &resp).error_code(), kNotFound);
  EXPECT_EQ(CancelJob(b, "secret", &job).error_code(), kNotFound);
  EXPECT_EQ(Delete(b, "secret").error_code(), kNotFound);
  std::vector<pb::Document> listed;
  ASSERT_TRUE(ListAll(b, &listed).ok());
  EXPECT_TRUE(listed.empty());
  listed.clear();
  ASSERT_TRUE(ListAll(b, &listed, "shared").ok());
  EXPECT_TRUE(listed.empty());

  // B's document of the same id is B's own; A's is untouched.
  ASSERT_NO_FATAL_FAILURE(UploadReady(b, "secret", Text(2500, 16)));
  ASSERT_TRUE(GetDocument(a, "secret", &doc).ok());
  EXPECT_EQ(doc.sha256(), HexSha256(Text(3000, 15)));
  ASSERT_TRUE(GetDocument(b, "secret", &doc).ok());
  EXPECT_EQ(doc.sha256(), HexSha256(Text(2500, 16)));
  AskResult asked = Ask(a, by_collection);
  ASSERT_TRUE(asked.status.ok()) << Describe(asked.status);
  listed.clear();
  ASSERT_TRUE(ListAll(a, &listed).ok());
  EXPECT_EQ(Ids(listed), std::set<std::string>{"secret"});

  // No key, an unknown key, a malformed header: UNAUTHENTICATED everywhere.
  const auto kUnauth = grpc::StatusCode::UNAUTHENTICATED;
  for (const std::string& key : {std::string(), std::string("not-a-known-key-000000")}) {
    Conn x(server.address(), key);
    EXPECT_EQ(GetDocument(x, "secret", &doc).error_code(), kUnauth) << key;
    EXPECT_EQ(GetIndexStatus(x, "secret", &job).error_code(), kUnauth) << key;
    EXPECT_EQ(Watch(x, "secret", 10).status.error_code(), kUnauth) << key;
    EXPECT_EQ(Ask(x, AskFor({"secret"}, "Q?", 4)).status.error_code(), kUnauth) << key;
    EXPECT_EQ(Retrieve(x, rr, &resp).error_code(), kUnauth) << key;
    EXPECT_EQ(Delete(x, "secret").error_code(), kUnauth) << key;
    EXPECT_EQ(Upload(x, "intruder", Text(2000, 17), &job).error_code(), kUnauth) << key;
    listed.clear();
    EXPECT_EQ(ListAll(x, &listed).error_code(), kUnauth) << key;
  }
  {
    grpc::ClientContext ctx;
    ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(30));
    ctx.AddMetadata("authorization", key_a);  // no "Bearer"
    pb::GetDocumentRequest req;
    req.set_document_id("secret");
    EXPECT_EQ(a.docs->GetDocument(&ctx, req, &doc).error_code(), kUnauth);
  }
  EXPECT_EQ(GetDocument(b, "intruder", &doc).error_code(), kNotFound);
  EXPECT_EQ(GetDocument(a, "intruder", &doc).error_code(), kNotFound);
}

// 10. Delete.

TEST_F(ServiceTest, DeleteThenReupload) {
  Server& server = StartServer();
  ASSERT_FALSE(HasFailure());
  Conn c(server.address());
  const std::string text = Text(3000, 18);
  ASSERT_NO_FATAL_FAILURE(UploadReady(c, "gone", text));
  ASSERT_NO_FATAL_FAILURE(UploadReady(c, "stays", Text(2000, 19)));
  pb::IndexJob job;
  EXPECT_EQ(Upload(c, "gone", text, &job).error_code(), grpc::StatusCode::ALREADY_EXISTS);

  grpc::Status s = Delete(c, "gone");
  ASSERT_TRUE(s.ok()) << Describe(s);
  pb::Document doc;
  EXPECT_EQ(GetDocument(c, "gone", &doc).error_code(), grpc::StatusCode::NOT_FOUND);
  EXPECT_EQ(GetIndexStatus(c, "gone", &job).error_code(), grpc::StatusCode::NOT_FOUND);
  std::vector<pb::Document> all;
  ASSERT_TRUE(ListAll(c, &all).ok());
  EXPECT_EQ(Ids(all), std::set<std::string>{"stays"});
  EXPECT_EQ(Ask(c, AskFor({"gone"}, "Still there?", 4)).status.error_code(),
            grpc::StatusCode::NOT_FOUND);
  EXPECT_EQ(Delete(c, "gone").error_code(), grpc::StatusCode::NOT_FOUND);
  EXPECT_TRUE(Ask(c, AskFor({"stays"}, "Still there?", 4)).status.ok());

  // The id is free again.
  ASSERT_NO_FATAL_FAILURE(UploadReady(c, "gone", text));
  AskResult a = Ask(c, AskFor({"gone"}, "Back again?", 4));
  ASSERT_TRUE(a.status.ok()) << Describe(a.status);
  ASSERT_TRUE(GetDocument(c, "gone", &doc).ok());
  ASSERT_NO_FATAL_FAILURE(CheckStarted(a.started, {{"gone", doc.num_tokens()}}));

  // Deleting documents whose jobs wait behind a long one drops their jobs: they never run (a
  // job without its upload would fail as upload_lost), and an id can be reused at once.
  ASSERT_TRUE(Upload(c, "long", Text(100000, 20), &job).ok());
  ASSERT_TRUE(Upload(c, "queued", Text(3000, 21), &job).ok());
  ASSERT_TRUE(Upload(c, "dropped", Text(3000, 23), &job).ok());
  s = Delete(c, "queued");
  ASSERT_TRUE(s.ok()) << Describe(s);
  s = Delete(c, "dropped");
  ASSERT_TRUE(s.ok()) << Describe(s);
  EXPECT_EQ(GetIndexStatus(c, "dropped", &job).error_code(), grpc::StatusCode::NOT_FOUND);
  ASSERT_NO_FATAL_FAILURE(UploadReady(c, "queued", Text(2500, 22)));  // after "long" (one worker)
  ASSERT_TRUE(GetDocument(c, "queued", &doc).ok());
  EXPECT_EQ(doc.sha256(), HexSha256(Text(2500, 22)));
  EXPECT_EQ(doc.state(), pb::IndexJob::READY);
  EXPECT_TRUE(Ask(c, AskFor({"queued"}, "Which one?", 4)).status.ok());
  const std::string metrics = Scrape(server.metrics_port());
  ASSERT_NE(metrics, "");
  EXPECT_TRUE(
      std::isnan(Sample(metrics, "sharedllm_index_job_failures_total{reason=\"upload_lost\"}")))
      << "a deleted document's job ran without its upload";
  EXPECT_EQ(GetDocument(c, "dropped", &doc).error_code(), grpc::StatusCode::NOT_FOUND);
  std::vector<pb::Document> left;
  ASSERT_TRUE(ListAll(c, &left).ok());
  EXPECT_EQ(Ids(left), (std::set<std::string>{"gone", "stays", "long", "queued"}));
}

// 11. Collections.

TEST_F(ServiceTest, AskByCollectionReadsEveryDocument) {
  Server& server = StartServer();
  ASSERT_FALSE(HasFailure());
  Conn c(server.address());
  ASSERT_NO_FATAL_FAILURE(UploadReady(c, "c-one", Text(2000, 23), "c"));
  ASSERT_NO_FATAL_FAILURE(UploadReady(c, "c-two", Text(2600, 24), "c"));
  ASSERT_NO_FATAL_FAILURE(UploadReady(c, "elsewhere", Text(2000, 25), "d"));

  std::vector<pb::Document> in_c;
  ASSERT_TRUE(ListAll(c, &in_c, "c").ok());
  EXPECT_EQ(Ids(in_c), (std::set<std::string>{"c-one", "c-two"}));
  std::map<std::string, int64_t> tokens;
  for (const auto& d : in_c) tokens[d.document_id()] = d.num_tokens();

  pb::AskRequest req = AskFor({}, "What do they have in common?", 8);
  req.set_collection_id("c");
  AskResult a = Ask(c, req);
  ASSERT_TRUE(a.status.ok()) << Describe(a.status);
  std::set<std::string> ids;
  for (const auto& n : a.started.nodes()) ids.insert(n.document_id());
  EXPECT_EQ(ids, (std::set<std::string>{"c-one", "c-two"}));
  ASSERT_NO_FATAL_FAILURE(CheckStarted(a.started, tokens));
  EXPECT_TRUE(a.has_final);
  EXPECT_EQ(a.final.usage().context_tokens(), tokens["c-one"] + tokens["c-two"]);

  // The same documents named one by one select the same nodes.
  AskResult named = Ask(c, AskFor({"c-one", "c-two"}, "What do they have in common?", 8));
  ASSERT_TRUE(named.status.ok());
  EXPECT_EQ(NodeKeys(named.started.nodes()), NodeKeys(a.started.nodes()));
  EXPECT_EQ(named.text, a.text);
}

// A document of more chunks than the model's chunk budget is read where its words match the
// question: the budget's best-scored chunks and their neighbours, in document order, numbered as
// in the document; the index survives a restart; max_chunks lowers the budget and cannot raise it.
TEST_F(ServiceTest, AskBeyondTheBudgetReadsTheMatchingChunks) {
  const std::string budget_model = dir_.path() + "/budget-model";
  const CommandResult edit = sharedllm::test::Run(
      {SHAREDLLM_BIN, "edit", "--model", model_dir_, "--out", budget_model, "--chunk-budget", "3"},
      dir_.path());
  ASSERT_EQ(edit.exit_code, 0) << edit.out << edit.err;
  const std::string data = dir_.Mkdir("budget-data");
  Server& server = StartServer({}, data, true, budget_model);
  ASSERT_FALSE(HasFailure());
  Conn c(server.address());
  // A rare word at both ends of a document of many chunks.
  const std::string text = "zebraquartz " + Text(3000, 31) + " zebraquartz";
  ASSERT_NO_FATAL_FAILURE(UploadReady(c, "long", text));
  pb::Document meta;
  ASSERT_TRUE(GetDocument(c, "long", &meta).ok());
  const int64_t chunks = NumChunks(meta.num_tokens());
  ASSERT_GT(chunks, 8);

  auto chunks_read = [](const auto& m) {
    std::vector<std::pair<int, double>> out;
    for (const auto& r : m.chunks_read()) {
      EXPECT_EQ(r.document_id(), "long");
      out.push_back({r.chunk(), r.score()});
    }
    return out;
  };
  const std::string question = "zebraquartz?";  // no other word of the document
  AskResult a = Ask(c, AskFor({"long"}, question, 4));
  ASSERT_TRUE(a.status.ok()) << Describe(a.status);
  EXPECT_EQ(a.started.chunk_selection(), "bm25");
  EXPECT_EQ(a.started.chunk_budget(), 3);
  EXPECT_EQ(a.started.num_chunks(), chunks);
  const auto read = chunks_read(a.started);
  ASSERT_EQ(read.size(), 3u);
  EXPECT_EQ(read.front().first, 0);
  EXPECT_EQ(read.back().first, chunks - 1);
  EXPECT_GT(read.front().second, 0);
  EXPECT_GT(read.back().second, 0);
  EXPECT_TRUE(read[1].first == 1 || read[1].first == chunks - 2) << read[1].first;
  // The nodes come from the chunks read only, depth + 1 of each, spans in the document's tokens.
  std::map<int, int> per_chunk;
  for (const auto& n : a.started.nodes()) {
    ++per_chunk[n.chunk()];
    EXPECT_GE(n.token_begin(), int64_t{n.chunk()} * kChunkSize);
  }
  std::map<int, int> want;
  for (const auto& r : read) want[r.first] = kDepth + 1;
  EXPECT_EQ(per_chunk, want);
  EXPECT_EQ(chunks_read(a.final), read);

  pb::RetrieveRequest rr;
  rr.add_document_ids("long");
  rr.set_question(question);
  pb::RetrieveResponse retrieved;
  ASSERT_TRUE(Retrieve(c, rr, &retrieved).ok());
  EXPECT_EQ(chunks_read(retrieved), read);

  // A lower budget per request: the best chunk only (equal scores: the first in reading order).
  pb::AskRequest one = AskFor({"long"}, question, 4);
  one.set_max_chunks(1);
  AskResult a1 = Ask(c, one);
  ASSERT_TRUE(a1.status.ok()) << Describe(a1.status);
  ASSERT_EQ(a1.started.chunks_read_size(), 1);
  EXPECT_GT(a1.started.chunks_read(0).score(), 0);
  // Above the model's budget: refused.
  one.set_max_chunks(4);
  EXPECT_EQ(Ask(c, one).status.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  one.set_max_chunks(-1);
  EXPECT_EQ(Ask(c, one).status.error_code(), grpc::StatusCode::INVALID_ARGUMENT);

  // A question without a word of the document reads the document's end.
  AskResult none = Ask(c, AskFor({"long"}, "qqqq", 4));
  ASSERT_TRUE(none.status.ok()) << Describe(none.status);
  EXPECT_EQ(chunks_read(none.started),
            (std::vector<std::pair<int, double>>{{chunks - 3, 0}, {chunks - 2, 0}, {chunks - 1, 0}}));

  // A collection's chunks compete for one budget.
  ASSERT_NO_FATAL_FAILURE(UploadReady(c, "plain", Text(2000, 32), "zc"));
  ASSERT_NO_FATAL_FAILURE(UploadReady(c, "marked", Text(1000, 33) + " zebraquartz", "zc"));
  pb::AskRequest in_collection = AskFor({}, question, 4);
  in_collection.set_collection_id("zc");
  AskResult ac = Ask(c, in_collection);
  ASSERT_TRUE(ac.status.ok()) << Describe(ac.status);
  ASSERT_EQ(ac.started.chunks_read_size(), 3);
  double best = 0;
  std::string best_doc;
  for (const auto& r : ac.started.chunks_read()) {
    if (r.score() > best) best = r.score(), best_doc = r.document_id();
  }
  EXPECT_EQ(best_doc, "marked");

  // The retrieval index persists with the trees.
  server.child().Terminate(10);
  Server& again = StartServer({}, data, true, budget_model);
  ASSERT_FALSE(HasFailure());
  Conn c2(again.address());
  AskResult after = Ask(c2, AskFor({"long"}, question, 4));
  ASSERT_TRUE(after.status.ok()) << Describe(after.status);
  EXPECT_EQ(chunks_read(after.started), read);
  EXPECT_EQ(after.text, a.text);
}

// 12. A real Prometheus scrapes the server's /metrics.

TEST_F(ServiceTest, PrometheusScrapesServerMetrics) {
  const std::string prometheus = SHAREDLLM_PROMETHEUS;
  if (prometheus.empty()) GTEST_SKIP() << "prometheus not found (apt-get install prometheus)";
  Server& server = StartServer();
  ASSERT_FALSE(HasFailure());
  Conn c(server.address());
  ASSERT_NO_FATAL_FAILURE(UploadReady(c, "doc", Text(3000, 26)));
  constexpr int kAsks = 3;
  for (int i = 0; i < kAsks; ++i) {
    ASSERT_TRUE(Ask(c, AskFor({"doc"}, "Question " + std::to_string(i) + "?", 4)).status.ok());
  }

  const int web_port = FreePort();
  ASSERT_GT(web_port, 0);
  WriteFile(dir_ / "prometheus.yml",
            "global:\n"
            "  scrape_interval: 1s\n"
            "  scrape_timeout: 1s\n"
            "scrape_configs:\n"
            "  - job_name: sharedllm\n"
            "    static_configs:\n"
            "      - targets: ['127.0.0.1:" +
                std::to_string(server.metrics_port()) + "']\n");
  Child prom;
  ASSERT_TRUE(
      prom.Start({prometheus, "--config.file=" + dir_ / "prometheus.yml",
                  "--storage.tsdb.path=" + dir_.Mkdir("tsdb"),
                  "--web.listen-address=127.0.0.1:" + std::to_string(web_port), "--log.level=warn"},
                 dir_ / "prometheus.out", dir_ / "prometheus.err"));

  httplib::Client api("127.0.0.1", web_port);
  api.set_connection_timeout(1, 0);
  api.set_read_timeout(5, 0);
  auto query = [&](const std::string& promql) {
    auto res = api.Get("/api/v1/query", httplib::Params{{"query", promql}}, httplib::Headers{});
    if (!res || res->status != 200) return std::nan("");
    const auto j = nlohmann::json::parse(res->body, nullptr, false);
    if (j.is_discarded() || j.value("status", "") != "success") return std::nan("");
    const auto& result = j["data"]["result"];
    if (!result.is_array() || result.size() != 1) return std::nan("");
    return std::stod(result[0]["value"][1].get<std::string>());
  };
  const auto start = Clock::now();
  double up = std::nan(""), asks = std::nan(""), compressed = std::nan("");
  for (int i = 0; i < 1000 && SecondsSince(start) < 60 && prom.running(); ++i) {
    up = query("up{job=\"sharedllm\"}");
    asks = query("sharedllm_ask_requests_total{status=\"OK\"}");
    compressed = query("sharedllm_compressor_tokens_total");
    if (up == 1 && asks >= kAsks && compressed > 0) break;
    SleepMs(250);
  }
  ASSERT_EQ(up, 1) << prom.Log();
  EXPECT_GE(asks, kAsks);
  EXPECT_GT(compressed, 0);
  EXPECT_GT(query("sharedllm_generation_tokens_total"), 0);
  EXPECT_EQ(query("sharedllm_ask_time_to_first_token_seconds_count"), kAsks);
  EXPECT_EQ(query("sharedllm_build_info{model=\"model\"}"), 1);
  prom.Terminate(10);
}

// 13. Standard gRPC health checking.

TEST_F(ServiceTest, HealthCheckServing) {
  Server& server = StartServer();
  ASSERT_FALSE(HasFailure());
  Conn c(server.address());
  int serving = -1;
  grpc::Status s = HealthCheck(c, "", &serving);
  ASSERT_TRUE(s.ok()) << Describe(s);
  EXPECT_EQ(serving, 1) << "expected SERVING";
  s = HealthCheck(c, "no.such.Service", &serving);
  EXPECT_EQ(s.error_code(), grpc::StatusCode::NOT_FOUND) << Describe(s);
  // Health checks need no API key.
  WriteFile(dir_ / "keys", "some-key-0123456789abcdef tenant\n");
  Server& with_keys = StartServer({"--api-keys", dir_ / "keys"});
  ASSERT_FALSE(HasFailure());
  Conn anonymous(with_keys.address());
  s = HealthCheck(anonymous, "", &serving);
  ASSERT_TRUE(s.ok()) << Describe(s);
  EXPECT_EQ(serving, 1);
}


// Insecure settings are said at start, one WARNING line each; a loopback server with no keys
// says nothing.
TEST_F(ServiceTest, InsecureSettingsAreSaidAtStart) {
  Server& quiet = StartServer();
  ASSERT_FALSE(HasFailure());
  EXPECT_EQ(quiet.Log().find("WARNING"), std::string::npos) << quiet.Log();
  WriteFile(dir_ / "keys", "some-key-0123456789abcdef tenant\n");
  ASSERT_EQ(chmod((dir_ / "keys").c_str(), 0644), 0);
  Server& open = StartServer({"--listen", "0.0.0.0:0", "--api-keys", dir_ / "keys"});
  ASSERT_FALSE(HasFailure());
  const std::string log = open.Log();
  EXPECT_NE(log.find("WARNING: API keys cross the network in clear"), std::string::npos) << log;
  EXPECT_NE(log.find("is readable by other users (mode 0644)"), std::string::npos) << log;
  Server& anonymous = StartServer({"--listen", "0.0.0.0:0"});
  ASSERT_FALSE(HasFailure());
  EXPECT_NE(anonymous.Log().find("without --api-keys"), std::string::npos) << anonymous.Log();
}

// 14. The ports open before the model loads: health NOT_SERVING (overall and per service) and
// service calls UNAVAILABLE until ready, then SERVING; NOT_SERVING again once draining. The
// server holds its start until a file exists (--testing-hold-until-file), so the test decides
// when loading begins instead of racing it.

TEST_F(ServiceTest, HealthNotServingUntilLoadedThenServingThenDraining) {
  const std::string hold = dir_ / "release-start";
  Server& server = StartServer({"--testing-hold-until-file", hold}, "", /*until_ready=*/false);
  ASSERT_FALSE(HasFailure());
  Conn c(server.address());
  const std::vector<std::string> names = {"", "sharedllm.v1.DocumentService",
                                          "sharedllm.v1.QueryService"};
  for (const auto& name : names) {
    int serving = -1;
    grpc::Status s = HealthCheck(c, name, &serving);
    ASSERT_TRUE(s.ok()) << "'" << name << "': " << Describe(s) << server.Log();
    EXPECT_EQ(serving, 2) << "'" << name << "': expected NOT_SERVING while starting";
  }
  int serving = -1;
  EXPECT_EQ(HealthCheck(c, "no.such.Service", &serving).error_code(), grpc::StatusCode::NOT_FOUND);
  HealthWatch watch(c, "", 60);
  EXPECT_EQ(watch.WaitFor(1, 10), std::vector<int>{2});

  // Every service call is answered at once, UNAVAILABLE with the reason; none reaches a handler.
  pb::IndexJob job;
  grpc::Status s = Upload(c, "early", Text(2000, 40), &job);
  EXPECT_EQ(s.error_code(), grpc::StatusCode::UNAVAILABLE) << Describe(s);
  EXPECT_NE(s.error_message().find("starting"), std::string::npos) << s.error_message();
  AskResult early = Ask(c, AskFor({"early"}, "Anyone there?", 4));
  EXPECT_EQ(early.status.error_code(), grpc::StatusCode::UNAVAILABLE) << Describe(early.status);
  EXPECT_NE(early.status.error_message().find("starting"), std::string::npos);
  EXPECT_FALSE(early.has_started);
  pb::Document doc;
  EXPECT_EQ(GetDocument(c, "early", &doc).error_code(), grpc::StatusCode::UNAVAILABLE);
  std::vector<pb::Document> all;
  EXPECT_EQ(ListAll(c, &all).error_code(), grpc::StatusCode::UNAVAILABLE);
  pb::RetrieveRequest retrieve;
  retrieve.add_document_ids("early");
  retrieve.set_question("Anyone?");
  pb::RetrieveResponse retrieved;
  EXPECT_EQ(Retrieve(c, retrieve, &retrieved).error_code(), grpc::StatusCode::UNAVAILABLE);
  // The metrics port is open too.
  EXPECT_NE(Scrape(server.metrics_port()).find("sharedllm_build_info"), std::string::npos);
  EXPECT_EQ(server.child().Out().find("listening on"), std::string::npos) << "ready too early";

  // Let it load; health turns SERVING (polled, with a deadline).
  WriteFile(hold, "");
  const auto start = Clock::now();
  for (int i = 0; i < 10000 && SecondsSince(start) < 90; ++i) {
    ASSERT_TRUE(HealthCheck(c, "", &serving).ok());
    if (serving != 2) break;
    SleepMs(50);
  }
  ASSERT_EQ(serving, 1) << "expected SERVING after loading\n" << server.Log();
  for (const auto& name : names) {
    ASSERT_TRUE(HealthCheck(c, name, &serving).ok());
    EXPECT_EQ(serving, 1) << "'" << name << "'";
  }
  EXPECT_EQ(watch.WaitFor(2, 10), (std::vector<int>{2, 1}));
  ASSERT_NO_FATAL_FAILURE(UploadReady(c, "doc", Text(2000, 41)));
  EXPECT_TRUE(Ask(c, AskFor({"doc"}, "Ready now?", 4)).status.ok());

  // SIGTERM: the watch sees NOT_SERVING and ends (it does not hold up the drain); exit 0.
  server.child().Signal(SIGTERM);
  EXPECT_EQ(watch.WaitFor(3, 30), (std::vector<int>{2, 1, 2}));
  grpc::Status watch_status;
  ASSERT_TRUE(watch.WaitDone(30, &watch_status));
  EXPECT_TRUE(watch_status.ok()) << Describe(watch_status);
  ASSERT_TRUE(server.child().Wait(60)) << server.Log();
  EXPECT_EQ(server.child().ExitCode(), 0) << server.Log();
}

TEST_F(ServiceTest, SignalWhileStartingExitsWithoutLoading) {
  Server& server = StartServer({"--testing-hold-until-file", dir_ / "never"}, "",
                               /*until_ready=*/false);
  ASSERT_FALSE(HasFailure());
  Conn c(server.address());
  int serving = -1;
  ASSERT_TRUE(HealthCheck(c, "", &serving).ok());
  EXPECT_EQ(serving, 2);
  server.child().Signal(SIGTERM);
  ASSERT_TRUE(server.child().Wait(30)) << server.Log();
  EXPECT_EQ(server.child().ExitCode(), 0) << server.Log();
  EXPECT_NE(server.child().Out().find("stopped while starting"), std::string::npos) << server.Log();
}

}  // namespace
}  // namespace sharedllm::test
