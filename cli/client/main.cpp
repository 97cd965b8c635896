// `sharedllm-cli`: command-line client of the SharedLLM gRPC service (proto/sharedllm/v1).
//
//   sharedllm-cli --server HOST:PORT [--api-key KEY] [--tls-ca F] [--timeout S] COMMAND ...
//
// Exit codes: 0 ok, 2 usage error, 1 RPC error (the status code name and message go to stderr)
// or a failed/cancelled index job.
#include <grpcpp/grpcpp.h>
#include <openssl/evp.h>

#include <chrono>
#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <iomanip>
#include <iostream>
#include <map>
#include <memory>
#include <set>
#include <sstream>
#include <string>
#include <vector>

#include "cli/client/connection.h"
#include "sharedllm/v1/documents.grpc.pb.h"
#include "sharedllm/v1/query.grpc.pb.h"
#include "cli/flags/flags.h"

namespace {

namespace pb = ::sharedllm::v1;
using Args = std::vector<std::string>;
using sharedllm::cli::FlagSet;

constexpr size_t kChunkBytes = 1 << 20;  // the service's limit per chunk message

// ---------------------------------------------------------------------------------------------
// Connection flags, accepted before the command and by every command.

struct Connection {
  std::string server;
  std::string api_key;
  std::string tls_ca, tls_cert, tls_key;
  bool tls = false;
  double timeout = 0;

  void Register(FlagSet& flags) {
    flags.String("server", &server, "service address HOST:PORT (env SHAREDLLM_SERVER)");
    flags.String("api-key", &api_key, "API key, sent as 'authorization: Bearer KEY' (env SHAREDLLM_API_KEY)");
    flags.Bool("tls", &tls, "use TLS with the system's root certificates");
    flags.String("tls-ca", &tls_ca, "PEM CA certificate(s) to verify the server with (implies --tls)");
    flags.String("tls-cert", &tls_cert, "PEM client certificate for mTLS (implies --tls)");
    flags.String("tls-key", &tls_key, "PEM private key of --tls-cert");
    flags.Double("timeout", &timeout, "deadline of each RPC in seconds; 0 = none");
  }
};

const std::set<std::string> kGlobalValueFlags = {"server",   "api-key", "tls-ca",
                                                 "tls-cert", "tls-key", "timeout"};
const std::set<std::string> kGlobalBoolFlags = {"tls"};

int RpcError(const grpc::Status& status) {
  std::cerr << "error: " << sharedllm::client::StatusCodeName(status.error_code()) << ": " << status.error_message() << "\n";
  return 1;
}

// A connected client; nullptr after printing the reason (a usage error, exit 2).
class Client {
 public:
  static std::unique_ptr<Client> Connect(Connection c) {
    if (c.server.empty()) {
      if (const char* env = std::getenv("SHAREDLLM_SERVER")) c.server = env;
    }
    if (c.api_key.empty()) {
      if (const char* env = std::getenv("SHAREDLLM_API_KEY")) c.api_key = env;
    }
    if (c.server.empty()) {
      std::cerr << "no server: give --server HOST:PORT (or set SHAREDLLM_SERVER)\n";
      return nullptr;
    }
    if (c.timeout < 0) {
      std::cerr << "--timeout must be >= 0\n";
      return nullptr;
    }
    sharedllm::client::ConnectionOptions options;
    options.target = c.server;
    options.api_key = c.api_key;
    options.tls = c.tls;
    options.tls_ca = c.tls_ca;
    options.tls_cert = c.tls_cert;
    options.tls_key = c.tls_key;
    std::string error;
    auto channel = sharedllm::client::MakeChannel(options, &error);
    if (!channel) {
      std::cerr << error << "\n";
      return nullptr;
    }
    auto client = std::unique_ptr<Client>(new Client);
    client->conn_ = c;
    client->options_ = options;
    client->channel_ = std::move(channel);
    client->documents_ = pb::DocumentService::NewStub(client->channel_);
    client->query_ = pb::QueryService::NewStub(client->channel_);
    return client;
  }

  // A context carrying the API key and the deadline.
  std::unique_ptr<grpc::ClientContext> Context() const {
    auto ctx = std::make_unique<grpc::ClientContext>();
    sharedllm::client::AddApiKey(options_, ctx.get());
    if (conn_.timeout > 0) {
      ctx->set_deadline(std::chrono::system_clock::now() +
                        std::chrono::microseconds(static_cast<int64_t>(conn_.timeout * 1e6)));
    }
    return ctx;
  }

  pb::DocumentService::Stub& documents() { return *documents_; }
  pb::QueryService::Stub& query() { return *query_; }

 private:
  Client() = default;
  Connection conn_;
  sharedllm::client::ConnectionOptions options_;
  std::shared_ptr<grpc::Channel> channel_;
  std::unique_ptr<pb::DocumentService::Stub> documents_;
  std::unique_ptr<pb::QueryService::Stub> query_;
};

// Splits args into positional arguments and flags (for FlagSet::Parse). A flag named in
// `bool_flags` (or written --name=value) takes no following value; every other flag does.
void SplitPositionals(const Args& args, const std::set<std::string>& bool_flags, Args* positional,
                      Args* flags) {
  for (size_t i = 0; i < args.size(); ++i) {
    const std::string& a = args[i];
    if (a.size() > 2 && a.rfind("--", 0) == 0) {
      flags->push_back(a);
      const std::string name = a.substr(2);
      if (name.find('=') == std::string::npos && !bool_flags.count(name) &&
          !kGlobalBoolFlags.count(name) && name != "help" && i + 1 < args.size()) {
        flags->push_back(args[++i]);
      }
    } else if (a == "-h") {
      flags->push_back(a);
    } else {
      positional->push_back(a);
    }
  }
}

// Parses a command's flags and exactly `want` positional arguments (named in `names` for the
// error message). Returns -1 to go on, else the exit code.
int ParseCommand(FlagSet& flags, const Args& args, const std::set<std::string>& bool_flags,
                 size_t want, const char* names, Args* positional) {
  Args flag_args;
  SplitPositionals(args, bool_flags, positional, &flag_args);
  if (int rc = flags.Parse(flag_args); rc >= 0) return rc;
  if (positional->size() != want) {
    if (want == 0) {
      std::cerr << "unexpected argument '" << (*positional)[0] << "'\n\n" << flags.Help();
    } else {
      std::cerr << "expected " << names << "\n\n" << flags.Help();
    }
    return 2;
  }
  return -1;
}

// ---------------------------------------------------------------------------------------------
// Printing

const char* StateName(pb::IndexJob::State s) {
  const std::string& name = pb::IndexJob::State_Name(s);
  return name.empty() ? "?" : name.c_str();
}

bool Terminal(pb::IndexJob::State s) {
  return s == pb::IndexJob::READY || s == pb::IndexJob::FAILED || s == pb::IndexJob::CANCELLED;
}

void PrintJob(const pb::IndexJob& job) {
  std::cout << job.document_id() << "  " << StateName(job.state());
  if (job.chunks_total() > 0) {
    std::cout << "  chunks " << job.chunks_done() << "/" << job.chunks_total() << " ("
              << std::fixed << std::setprecision(0)
              << 100.0 * static_cast<double>(job.chunks_done()) / static_cast<double>(job.chunks_total())
              << "%)";
    std::cout.unsetf(std::ios::floatfield);
  }
  if (job.num_tokens() > 0) std::cout << "  tokens " << job.num_tokens();
  if (!job.error_code().empty() || !job.error_message().empty()) {
    std::cout << "  error " << job.error_code() << ": " << job.error_message();
  }
  std::cout << std::endl;
}

// 0 for READY, 1 for FAILED/CANCELLED (or a non-terminal state when the stream ended).
int JobExitCode(const pb::IndexJob& job) { return job.state() == pb::IndexJob::READY ? 0 : 1; }

void PrintDocument(const pb::Document& d) {
  std::cout << "document_id:       " << d.document_id() << "\n"
            << "collection_id:     " << d.collection_id() << "\n"
            << "name:              " << d.name() << "\n"
            << "state:             " << StateName(d.state()) << "\n"
            << "size_bytes:        " << d.size_bytes() << "\n"
            << "num_tokens:        " << d.num_tokens() << "\n"
            << "num_chunks:        " << d.num_chunks() << "\n"
            << "sha256:            " << d.sha256() << "\n"
            << "model_fingerprint: " << d.model_fingerprint() << "\n"
            << "created_unix_ms:   " << d.created_unix_ms() << "\n";
}

void PrintNodes(std::ostream& out, const google::protobuf::RepeatedPtrField<pb::SelectedNode>& nodes,
                int num_chunks) {
  int64_t positions = 0;
  std::set<std::string> docs;
  for (const auto& n : nodes) {
    positions += n.kept_positions();
    docs.insert(n.document_id());
  }
  out << "selected " << nodes.size() << " nodes over " << num_chunks << " chunks of "
      << docs.size() << " document(s), " << positions << " key/value positions\n";
}

// Which chunks a question read and why: "read 128 of 5812 chunks (bm25, budget 128); best:
// doc#57 12.31, ...".
template <typename Message>
void PrintReading(std::ostream& out, const Message& m) {
  const auto& read = m.chunks_read();
  out << "read " << read.size() << " of " << m.num_chunks() << " chunks (" << m.chunk_selection()
      << ", budget " << m.chunk_budget() << ")";
  std::vector<const pb::ReadChunk*> best;
  for (const auto& c : read) {
    if (c.score() > 0) best.push_back(&c);
  }
  std::sort(best.begin(), best.end(),
            [](const pb::ReadChunk* a, const pb::ReadChunk* b) { return a->score() > b->score(); });
  if (!best.empty()) out << "; best:";
  for (size_t i = 0; i < best.size() && i < 3; ++i) {
    out << (i ? "," : "") << " " << best[i]->document_id() << "#" << best[i]->chunk() << " "
        << std::fixed << std::setprecision(2) << best[i]->score();
  }
  out.unsetf(std::ios::floatfield);
  out << "\n";
}

void PrintNodeTable(std::ostream& out,
                    const google::protobuf::RepeatedPtrField<pb::SelectedNode>& nodes) {
  out << "document_id\tchunk\tlevel\tindex\ttokens\tkept_positions\n";
  for (const auto& n : nodes) {
    out << n.document_id() << "\t" << n.chunk() << "\t" << n.level() << "\t" << n.index() << "\t"
        << n.token_begin() << "-" << n.token_end() << "\t" << n.kept_positions() << "\n";
  }
}

// ---------------------------------------------------------------------------------------------
// Commands

// Lowercase hex SHA-256 of a file; false on a read error.
bool Sha256File(const std::string& path, std::string* hex, int64_t* size) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return false;
  std::unique_ptr<EVP_MD_CTX, decltype(&EVP_MD_CTX_free)> ctx(EVP_MD_CTX_new(), &EVP_MD_CTX_free);
  if (!ctx || EVP_DigestInit_ex(ctx.get(), EVP_sha256(), nullptr) != 1) return false;
  std::vector<char> buf(kChunkBytes);
  *size = 0;
  while (in) {
    in.read(buf.data(), static_cast<std::streamsize>(buf.size()));
    const std::streamsize n = in.gcount();
    if (n > 0) {
      EVP_DigestUpdate(ctx.get(), buf.data(), static_cast<size_t>(n));
      *size += n;
    }
  }
  if (in.bad()) return false;
  unsigned char digest[EVP_MAX_MD_SIZE];
  unsigned int len = 0;
  if (EVP_DigestFinal_ex(ctx.get(), digest, &len) != 1) return false;
  std::ostringstream s;
  for (unsigned int i = 0; i < len; ++i) {
    s << std::hex << std::setw(2) << std::setfill('0') << static_cast<int>(digest[i]);
  }
  *hex = s.str();
  return true;
}

// Streams WatchIndexStatus, printing every change. Returns the exit code.
int Watch(Client& client, const std::string& id) {
  auto ctx = client.Context();
  pb::GetIndexStatusRequest request;
  request.set_document_id(id);
  auto reader = client.documents().WatchIndexStatus(ctx.get(), request);
  pb::IndexJob job, last;
  bool any = false;
  while (reader->Read(&job)) {
    PrintJob(job);
    last = job;
    any = true;
  }
  grpc::Status status = reader->Finish();
  if (!status.ok()) return RpcError(status);
  if (!any) {
    std::cerr << "error: the watch ended without any job state\n";
    return 1;
  }
  if (!Terminal(last.state())) {
    std::cerr << "error: the watch ended in state " << StateName(last.state()) << "\n";
    return 1;
  }
  return JobExitCode(last);
}

int UploadCommand(const Connection& base, const Args& args) {
  Connection conn = base;
  std::string id, collection, name;
  bool wait = false;
  FlagSet flags("sharedllm-cli upload FILE --id ID [--collection C] [--name N] [--wait]",
                "Uploads FILE (UTF-8 text) as document ID in 1 MiB chunks, with its SHA-256, and\n"
                "prints the index job. With --wait, follows the job until READY or FAILED\n"
                "(exit code 1 when it does not end READY).");
  flags.String("id", &id, "document id: 1-128 characters of [A-Za-z0-9._-]");
  flags.String("collection", &collection, "collection id (optional)");
  flags.String("name", &name, "display name (default: FILE's base name)");
  flags.Bool("wait", &wait, "watch the index job until it ends");
  conn.Register(flags);
  flags.Require("id");
  Args pos;
  if (int rc = ParseCommand(flags, args, {"wait"}, 1, "one FILE", &pos); rc >= 0) return rc;
  const std::string path = pos[0];
  if (!flags.Given("name")) {
    const size_t slash = path.find_last_of('/');
    name = slash == std::string::npos ? path : path.substr(slash + 1);
  }

  std::string sha;
  int64_t size = 0;
  if (!Sha256File(path, &sha, &size)) {
    std::cerr << "cannot read '" << path << "': " << std::strerror(errno) << "\n";
    return 2;
  }
  auto client = Client::Connect(conn);
  if (!client) return 2;

  auto ctx = client->Context();
  pb::IndexJob job;
  auto writer = client->documents().UploadDocument(ctx.get(), &job);
  pb::UploadDocumentRequest header;
  header.mutable_header()->set_document_id(id);
  header.mutable_header()->set_collection_id(collection);
  header.mutable_header()->set_name(name);
  header.mutable_header()->set_sha256(sha);
  bool open = writer->Write(header);
  std::ifstream in(path, std::ios::binary);
  if (!in) {
    ctx->TryCancel();
    writer->Finish();
    std::cerr << "cannot read '" << path << "': " << std::strerror(errno) << "\n";
    return 1;
  }
  std::string buf(kChunkBytes, '\0');
  int64_t sent = 0;
  while (open && in) {
    in.read(buf.data(), static_cast<std::streamsize>(buf.size()));
    const std::streamsize n = in.gcount();
    if (n <= 0) break;
    pb::UploadDocumentRequest chunk;
    chunk.set_chunk(buf.data(), static_cast<size_t>(n));
    open = writer->Write(chunk);  // false: the server ended the call; Finish() tells why
    sent += n;
  }
  if (in.bad()) {
    ctx->TryCancel();
    writer->Finish();
    std::cerr << "error reading '" << path << "' after " << sent << " bytes\n";
    return 1;
  }
  if (open) writer->WritesDone();
  grpc::Status status = writer->Finish();
  if (!status.ok()) return RpcError(status);
  std::cerr << "uploaded " << size << " bytes, sha256 " << sha << "\n";
  PrintJob(job);
  if (!wait || Terminal(job.state())) return wait ? JobExitCode(job) : 0;
  return Watch(*client, id);
}

// The commands on one document (status, watch, get, delete, cancel): parses the connection flags
// and one document ID into *id, then connects. Null with *rc set where the command ends there (the
// flags' exit code: 0 for --help, 2 for bad input or no connection).
std::unique_ptr<Client> ConnectForDocument(const Connection& base, const Args& args,
                                           const char* usage, const char* help, std::string* id,
                                           int* rc) {
  Connection conn = base;
  FlagSet flags(usage, help);
  conn.Register(flags);
  Args pos;
  if ((*rc = ParseCommand(flags, args, {}, 1, "one document ID", &pos)) >= 0) return nullptr;
  *id = pos[0];
  auto client = Client::Connect(conn);
  if (!client) *rc = 2;
  return client;
}

// A unary call on one document: parses `ID`, sends {document_id: ID} with `rpc` and prints the
// response with `print(id, response)`.
template <typename Request, typename Response, typename Print>
int DocumentCall(const Connection& base, const Args& args, const char* usage, const char* help,
                 grpc::Status (pb::DocumentService::Stub::*rpc)(grpc::ClientContext*,
                                                                const Request&, Response*),
                 Print print) {
  std::string id;
  int rc;
  auto client = ConnectForDocument(base, args, usage, help, &id, &rc);
  if (!client) return rc;
  auto ctx = client->Context();
  Request request;
  request.set_document_id(id);
  Response response;
  grpc::Status status = (client->documents().*rpc)(ctx.get(), request, &response);
  if (!status.ok()) return RpcError(status);
  print(id, response);
  return 0;
}

int StatusCommand(const Connection& base, const Args& args) {
  return DocumentCall(base, args, "sharedllm-cli status ID",
                      "Prints the index job of document ID once.",
                      &pb::DocumentService::Stub::GetIndexStatus,
                      [](const std::string&, const pb::IndexJob& job) { PrintJob(job); });
}

int WatchCommand(const Connection& base, const Args& args) {
  std::string id;
  int rc;
  auto client = ConnectForDocument(
      base, args, "sharedllm-cli watch ID",
      "Prints the index job of document ID each time it changes, until it ends\n"
      "(exit code 0 for READY, 1 for FAILED or CANCELLED).",
      &id, &rc);
  if (!client) return rc;
  return Watch(*client, id);
}

int GetCommand(const Connection& base, const Args& args) {
  return DocumentCall(base, args, "sharedllm-cli get ID", "Prints the metadata of document ID.",
                      &pb::DocumentService::Stub::GetDocument,
                      [](const std::string&, const pb::Document& doc) { PrintDocument(doc); });
}

int ListCommand(const Connection& base, const Args& args) {
  Connection conn = base;
  std::string collection;
  int64_t page_size = 0;
  FlagSet flags("sharedllm-cli list [--collection C]",
                "Lists the caller's documents (all pages), tab-separated:\n"
                "document_id, collection_id, state, size_bytes, num_tokens, num_chunks, name.");
  flags.String("collection", &collection, "only this collection");
  flags.Int("page-size", &page_size, "documents per request, 1-1000; 0 = the server's default");
  conn.Register(flags);
  Args pos;
  if (int rc = ParseCommand(flags, args, {}, 0, "", &pos); rc >= 0) return rc;
  if (page_size < 0 || page_size > 1000) {
    std::cerr << "--page-size must be 0-1000\n";
    return 2;
  }
  auto client = Client::Connect(conn);
  if (!client) return 2;
  pb::ListDocumentsRequest request;
  request.set_collection_id(collection);
  request.set_page_size(static_cast<int32_t>(page_size));
  std::cout << "document_id\tcollection_id\tstate\tsize_bytes\tnum_tokens\tnum_chunks\tname\n";
  for (int pages = 0;; ++pages) {
    auto ctx = client->Context();
    pb::ListDocumentsResponse response;
    grpc::Status status = client->documents().ListDocuments(ctx.get(), request, &response);
    if (!status.ok()) return RpcError(status);
    for (const auto& d : response.documents()) {
      std::cout << d.document_id() << "\t" << d.collection_id() << "\t" << StateName(d.state())
                << "\t" << d.size_bytes() << "\t" << d.num_tokens() << "\t" << d.num_chunks()
                << "\t" << d.name() << "\n";
    }
    if (response.next_page_token().empty()) break;
    if (response.next_page_token() == request.page_token()) {
      std::cerr << "error: the server repeated page token; stopping\n";
      return 1;
    }
    request.set_page_token(response.next_page_token());
  }
  return 0;
}

int DeleteCommand(const Connection& base, const Args& args) {
  return DocumentCall(base, args, "sharedllm-cli delete ID",
                      "Removes document ID and its context tree.",
                      &pb::DocumentService::Stub::DeleteDocument,
                      [](const std::string& id, const pb::DeleteDocumentResponse&) {
                        std::cout << "deleted " << id << "\n";
                      });
}

int CancelCommand(const Connection& base, const Args& args) {
  return DocumentCall(
      base, args, "sharedllm-cli cancel ID",
      "Cancels the queued or running index job of document ID (the document is removed).",
      &pb::DocumentService::Stub::CancelIndexJob,
      [](const std::string&, const pb::IndexJob& job) { PrintJob(job); });
}

// Flags shared by ask and retrieve: which documents, and the question.
struct Target {
  std::vector<std::string> ids;
  std::string collection, question;
  int64_t max_chunks = 0;
  void Register(FlagSet& flags) {
    flags.List("id", &ids, "a document to read, in order");
    flags.String("collection", &collection, "read every document of this collection instead");
    flags.String("question", &question, "the question (the answer continues it)");
    flags.Int("max-chunks", &max_chunks,
              "read at most N chunks, the best-matching ones (0: the model's budget)");
    flags.Require("question");
  }
  // false after printing a usage error.
  bool Check(const FlagSet& flags) const {
    if (ids.empty() == collection.empty()) {
      std::cerr << "give either --id ID (repeatable) or --collection C\n\n" << flags.Help();
      return false;
    }
    return true;
  }
};

const char* FinishReasonName(pb::Final::FinishReason r) {
  switch (r) {
    case pb::Final::LENGTH: return "length";
    case pb::Final::STOP: return "stop";
    case pb::Final::EOS: return "eos";
    default: return "unspecified";
  }
}

int AskCommand(const Connection& base, const Args& args) {
  Connection conn = base;
  Target target;
  int64_t max_tokens = 0, top_k = 0, seed = 0;
  double temperature = 0, top_p = 0;
  std::vector<std::string> stop;
  bool quiet = false, nodes = false;
  FlagSet flags("sharedllm-cli ask (--id ID ... | --collection C) --question TEXT [--max-tokens N]"
                " [--temperature T]",
                "Asks a question about indexed documents. The answer streams to stdout as it is\n"
                "generated; the selected-nodes summary before it and the finish reason, token\n"
                "usage and timings after it go to stderr.");
  target.Register(flags);
  flags.Int("max-tokens", &max_tokens, "answer tokens at most, 1-1024; 0 = the server's default (64)");
  flags.Double("temperature", &temperature, "sampling temperature; 0 = greedy");
  flags.Int("top-k", &top_k, "sample from the k most likely tokens; 0 = all");
  flags.Double("top-p", &top_p, "nucleus sampling mass; 0 or 1 = off");
  flags.Int("seed", &seed, "sampling seed");
  flags.List("stop", &stop, "stop before this string");
  flags.Bool("nodes", &nodes, "also list every selected node on stderr");
  flags.Bool("quiet", &quiet, "print the answer only");
  conn.Register(flags);
  Args pos;
  if (int rc = ParseCommand(flags, args, {"nodes", "quiet"}, 0, "", &pos); rc >= 0) return rc;
  if (!target.Check(flags)) return 2;
  auto client = Client::Connect(conn);
  if (!client) return 2;

  pb::AskRequest request;
  for (const auto& id : target.ids) request.add_document_ids(id);
  request.set_collection_id(target.collection);
  request.set_question(target.question);
  request.set_max_chunks(static_cast<int32_t>(target.max_chunks));
  auto* options = request.mutable_options();
  options->set_max_tokens(static_cast<int32_t>(max_tokens));
  options->set_temperature(static_cast<float>(temperature));
  options->set_top_k(static_cast<int32_t>(top_k));
  options->set_top_p(static_cast<float>(top_p));
  options->set_seed(static_cast<uint64_t>(seed));
  for (const auto& s : stop) options->add_stop(s);

  auto ctx = client->Context();
  auto reader = client->query().Ask(ctx.get(), request);
  pb::AskResponse response;
  bool answered = false;
  while (reader->Read(&response)) {
    switch (response.event_case()) {
      case pb::AskResponse::kStarted:
        if (!quiet) {
          PrintNodes(std::cerr, response.started().nodes(), response.started().num_chunks());
          PrintReading(std::cerr, response.started());
          if (nodes) PrintNodeTable(std::cerr, response.started().nodes());
          std::cerr.flush();
        }
        break;
      case pb::AskResponse::kDelta:
        std::cout << response.delta().text() << std::flush;
        answered = true;
        break;
      case pb::AskResponse::kFinal: {
        if (answered) std::cout << "\n" << std::flush;
        if (quiet) break;
        const auto& f = response.final();
        const auto& u = f.usage();
        const auto& t = f.timings();
        std::cerr << "finish: " << FinishReasonName(f.finish_reason()) << "\n"
                  << "usage: prompt_tokens=" << u.prompt_tokens()
                  << " completion_tokens=" << u.completion_tokens()
                  << " context_tokens=" << u.context_tokens()
                  << " context_positions=" << u.context_positions() << "\n"
                  << std::fixed << std::setprecision(3) << "timings: queue=" << t.queue_seconds()
                  << "s retrieval=" << t.retrieval_seconds() << "s kv_load=" << t.kv_load_seconds()
                  << "s ttft=" << t.time_to_first_token_seconds()
                  << "s decode=" << t.decode_seconds() << "s total=" << t.total_seconds() << "s\n";
        std::cerr.unsetf(std::ios::floatfield);
        break;
      }
      default:
        break;
    }
  }
  grpc::Status status = reader->Finish();
  if (!status.ok()) {
    if (answered) std::cout << "\n" << std::flush;
    return RpcError(status);
  }
  return 0;
}

int RetrieveCommand(const Connection& base, const Args& args) {
  Connection conn = base;
  Target target;
  FlagSet flags("sharedllm-cli retrieve (--id ID ... | --collection C) --question TEXT",
                "Prints the tree nodes Ask would select for the question (tab-separated:\n"
                "document_id, chunk, level, index, token span, kept positions), without\n"
                "generating.");
  target.Register(flags);
  conn.Register(flags);
  Args pos;
  if (int rc = ParseCommand(flags, args, {}, 0, "", &pos); rc >= 0) return rc;
  if (!target.Check(flags)) return 2;
  auto client = Client::Connect(conn);
  if (!client) return 2;
  pb::RetrieveRequest request;
  for (const auto& id : target.ids) request.add_document_ids(id);
  request.set_collection_id(target.collection);
  request.set_question(target.question);
  request.set_max_chunks(static_cast<int32_t>(target.max_chunks));
  auto ctx = client->Context();
  pb::RetrieveResponse response;
  grpc::Status status = client->query().Retrieve(ctx.get(), request, &response);
  if (!status.ok()) return RpcError(status);
  PrintNodeTable(std::cout, response.nodes());
  PrintNodes(std::cerr, response.nodes(), response.num_chunks());
  PrintReading(std::cerr, response);
  std::cerr << "retrieval: " << std::fixed << std::setprecision(4) << response.retrieval_seconds()
            << "s\n";
  return 0;
}

struct Command {
  const char* name;
  const char* summary;
  int (*run)(const Connection&, const Args&);
};

const Command kCommands[] = {
    {"upload", "upload a document and start indexing it (--wait: until READY)", UploadCommand},
    {"status", "print a document's index job", StatusCommand},
    {"watch", "follow a document's index job until it ends", WatchCommand},
    {"get", "print a document's metadata", GetCommand},
    {"list", "list documents", ListCommand},
    {"delete", "delete a document and its tree", DeleteCommand},
    {"cancel", "cancel a document's index job", CancelCommand},
    {"ask", "ask a question; the answer streams to stdout", AskCommand},
    {"retrieve", "print the tree nodes a question selects", RetrieveCommand},
};

void Usage(std::ostream& out) {
  out << "usage: sharedllm-cli --server HOST:PORT [--api-key KEY] [--tls-ca F] [--timeout S] "
         "COMMAND [flags]\n"
         "       (sharedllm-cli COMMAND --help for a command's flags)\n\n"
         "Client of the SharedLLM long-document question answering service.\n\n"
         "connection flags (before or after COMMAND):\n"
         "  --server HOST:PORT        service address (env SHAREDLLM_SERVER)\n"
         "  --api-key KEY             API key (env SHAREDLLM_API_KEY)\n"
         "  --tls                     TLS with the system's root certificates\n"
         "  --tls-ca F                TLS, verifying the server with the CA certificate(s) in F\n"
         "  --tls-cert F --tls-key F  client certificate and key for mutual TLS\n"
         "  --timeout S               deadline of each RPC in seconds (default: none)\n\n"
         "commands:\n";
  for (const auto& c : kCommands) {
    out << "  " << c.name << std::string(12 - std::strlen(c.name), ' ') << c.summary << "\n";
  }
  out << "\nexit codes: 0 ok, 1 RPC error (code and message on stderr) or failed job, 2 usage\n";
}

}  // namespace

int main(int argc, char** argv) {
  const Args all(argv + 1, argv + argc);
  // Connection flags before the command travel on to the command's own parser.
  Args leading;
  size_t i = 0;
  while (i < all.size() && all[i].rfind("-", 0) == 0) {
    const std::string& a = all[i];
    if (a == "--help" || a == "-h") {
      Usage(std::cout);
      return 0;
    }
    std::string name = a.size() > 2 ? a.substr(2) : "";
    const size_t eq = name.find('=');
    if (eq != std::string::npos) name = name.substr(0, eq);
    if (a.rfind("--", 0) != 0 || (!kGlobalValueFlags.count(name) && !kGlobalBoolFlags.count(name))) {
      std::cerr << "unknown flag " << a << " before the command\n\n";
      Usage(std::cerr);
      return 2;
    }
    leading.push_back(a);
    ++i;
    if (eq == std::string::npos && kGlobalValueFlags.count(name)) {
      if (i >= all.size()) {
        std::cerr << "flag " << a << " needs a value\n";
        return 2;
      }
      leading.push_back(all[i++]);
    }
  }
  if (i >= all.size()) {
    Usage(std::cerr);
    return 2;
  }
  const std::string name = all[i];
  if (name == "help") {
    Usage(std::cout);
    return 0;
  }
  Args rest = leading;
  rest.insert(rest.end(), all.begin() + static_cast<std::ptrdiff_t>(i) + 1, all.end());
  for (const auto& c : kCommands) {
    if (name == c.name) return c.run(Connection{}, rest);
  }
  std::cerr << "unknown command '" << name << "'\n\n";
  Usage(std::cerr);
  return 2;
}
