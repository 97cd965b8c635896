// sharedllm-cli (clients/cli) as a subprocess against an in-process fake of the gRPC services:
// chunked upload with its SHA-256, job watching, streamed answers, paging, API keys, exit codes.
#include <grpcpp/grpcpp.h>
#include <gtest/gtest.h>
#include <openssl/sha.h>

#include <cstdio>
#include <mutex>
#include <string>
#include <vector>

#include "service/auth.h"
#include "sharedllm/v1/documents.grpc.pb.h"
#include "sharedllm/v1/query.grpc.pb.h"
#include "tests/test_util.h"

namespace sharedllm::service {
namespace {

namespace pb = ::sharedllm::v1;
using sharedllm::test::TempDir;

constexpr const char* kKey = "cli-test-key-0123456789";

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

pb::IndexJob Job(const std::string& id, pb::IndexJob::State state, int done, int total) {
  pb::IndexJob job;
  job.set_document_id(id);
  job.set_state(state);
  job.set_chunks_done(done);
  job.set_chunks_total(total);
  return job;
}

class FakeDocuments final : public pb::DocumentService::Service {
 public:
  explicit FakeDocuments(const ApiKeys* keys) : keys_(keys) {}

  grpc::Status UploadDocument(grpc::ServerContext* ctx,
                              grpc::ServerReader<pb::UploadDocumentRequest>* reader,
                              pb::IndexJob* job) override {
    if (auto t = keys_->Authenticate(*ctx); !t.ok()) return ToGrpcStatus(t.status());
    pb::UploadDocumentRequest msg;
    if (!reader->Read(&msg) || !msg.has_header()) {
      return grpc::Status(grpc::StatusCode::INVALID_ARGUMENT, "header first");
    }
    std::lock_guard<std::mutex> lock(mu_);
    header = msg.header();
    content.clear();
    chunk_sizes.clear();
    while (reader->Read(&msg)) {
      if (!msg.has_chunk()) return grpc::Status(grpc::StatusCode::INVALID_ARGUMENT, "two headers");
      chunk_sizes.push_back(msg.chunk().size());
      content += msg.chunk();
    }
    if (header.document_id() == "taken") {
      return grpc::Status(grpc::StatusCode::ALREADY_EXISTS, "document taken exists");
    }
    if (header.sha256() != HexSha256(content)) {
      return grpc::Status(grpc::StatusCode::INVALID_ARGUMENT, "sha256 mismatch");
    }
    *job = Job(header.document_id(), pb::IndexJob::QUEUED, 0, 0);
    return grpc::Status::OK;
  }

  grpc::Status GetIndexStatus(grpc::ServerContext* ctx, const pb::GetIndexStatusRequest* req,
                              pb::IndexJob* job) override {
    if (auto t = keys_->Authenticate(*ctx); !t.ok()) return ToGrpcStatus(t.status());
    if (req->document_id() == "missing") {
      return grpc::Status(grpc::StatusCode::NOT_FOUND, "no document missing");
    }
    *job = Job(req->document_id(), pb::IndexJob::READY, 2, 2);
    return grpc::Status::OK;
  }

  grpc::Status WatchIndexStatus(grpc::ServerContext* ctx, const pb::GetIndexStatusRequest* req,
                                grpc::ServerWriter<pb::IndexJob>* writer) override {
    if (auto t = keys_->Authenticate(*ctx); !t.ok()) return ToGrpcStatus(t.status());
    const std::string& id = req->document_id();
    writer->Write(Job(id, pb::IndexJob::QUEUED, 0, 0));
    writer->Write(Job(id, pb::IndexJob::COMPRESSING, 1, 2));
    if (id == "bad") {
      pb::IndexJob failed = Job(id, pb::IndexJob::FAILED, 1, 2);
      failed.set_error_code("DEADLINE_EXCEEDED");
      failed.set_error_message("heartbeat lost");
      writer->Write(failed);
    } else {
      writer->Write(Job(id, pb::IndexJob::READY, 2, 2));
    }
    return grpc::Status::OK;
  }

  grpc::Status GetDocument(grpc::ServerContext* ctx, const pb::GetDocumentRequest* req,
                           pb::Document* doc) override {
    if (auto t = keys_->Authenticate(*ctx); !t.ok()) return ToGrpcStatus(t.status());
    doc->set_document_id(req->document_id());
    doc->set_collection_id("c9");
    doc->set_state(pb::IndexJob::READY);
    doc->set_num_tokens(1234);
    return grpc::Status::OK;
  }

  grpc::Status ListDocuments(grpc::ServerContext* ctx, const pb::ListDocumentsRequest* req,
                             pb::ListDocumentsResponse* resp) override {
    if (auto t = keys_->Authenticate(*ctx); !t.ok()) return ToGrpcStatus(t.status());
    auto* d = resp->add_documents();
    d->set_collection_id(req->collection_id());
    d->set_state(pb::IndexJob::READY);
    if (req->page_token().empty()) {
      d->set_document_id("doc-page1");
      resp->set_next_page_token("p2");
    } else {
      d->set_document_id("doc-page2");
    }
    return grpc::Status::OK;
  }

  grpc::Status DeleteDocument(grpc::ServerContext* ctx, const pb::DeleteDocumentRequest*,
                              pb::DeleteDocumentResponse*) override {
    if (auto t = keys_->Authenticate(*ctx); !t.ok()) return ToGrpcStatus(t.status());
    return grpc::Status::OK;
  }

  grpc::Status CancelIndexJob(grpc::ServerContext* ctx, const pb::CancelIndexJobRequest*,
                              pb::IndexJob*) override {
    if (auto t = keys_->Authenticate(*ctx); !t.ok()) return ToGrpcStatus(t.status());
    return grpc::Status(grpc::StatusCode::FAILED_PRECONDITION, "job already finished");
  }

  std::mutex mu_;
  pb::UploadHeader header;
  std::string content;
  std::vector<size_t> chunk_sizes;

 private:
  const ApiKeys* keys_;
};

class FakeQuery final : public pb::QueryService::Service {
 public:
  explicit FakeQuery(const ApiKeys* keys) : keys_(keys) {}

  grpc::Status Ask(grpc::ServerContext* ctx, const pb::AskRequest* req,
                   grpc::ServerWriter<pb::AskResponse>* writer) override {
    if (auto t = keys_->Authenticate(*ctx); !t.ok()) return ToGrpcStatus(t.status());
    {
      std::lock_guard<std::mutex> lock(mu_);
      last = *req;
    }
    pb::AskResponse r;
    auto* started = r.mutable_started();
    started->set_num_chunks(3);
    for (int i = 0; i < 2; ++i) {
      auto* n = started->add_nodes();
      n->set_document_id(req->document_ids_size() ? req->document_ids(0) : "c");
      n->set_chunk(i);
      n->set_level(1);
      n->set_kept_positions(8);
    }
    writer->Write(r);
    for (const char* piece : {"Hello", " world"}) {
      r.Clear();
      r.mutable_delta()->set_text(piece);
      writer->Write(r);
    }
    r.Clear();
    r.mutable_final()->set_finish_reason(pb::Final::EOS);
    r.mutable_final()->mutable_usage()->set_completion_tokens(2);
    r.mutable_final()->mutable_timings()->set_total_seconds(0.25);
    writer->Write(r);
    return grpc::Status::OK;
  }

  grpc::Status Retrieve(grpc::ServerContext* ctx, const pb::RetrieveRequest* req,
                        pb::RetrieveResponse* resp) override {
    if (auto t = keys_->Authenticate(*ctx); !t.ok()) return ToGrpcStatus(t.status());
    auto* n = resp->add_nodes();
    n->set_document_id("doc-r");
    n->set_chunk(4);
    n->set_level(3);
    n->set_token_begin(10);
    n->set_token_end(20);
    resp->set_num_chunks(5);
    return grpc::Status::OK;
  }

  std::mutex mu_;
  pb::AskRequest last;

 private:
  const ApiKeys* keys_;
};

class CliClientTest : public ::testing::Test {
 protected:
  void SetUp() override {
    keys_ = ApiKeys::Parse(std::string(kKey) + " tenant\n", "test").value();
    grpc::ServerBuilder builder;
    builder.AddListeningPort("127.0.0.1:0", grpc::InsecureServerCredentials(), &port_);
    builder.RegisterService(&documents_);
    builder.RegisterService(&query_);
    server_ = builder.BuildAndStart();
    ASSERT_TRUE(server_);
    ASSERT_GT(port_, 0);
  }
  void TearDown() override {
    if (server_) server_->Shutdown(std::chrono::system_clock::now());
  }

  // Runs sharedllm-cli with the connection flags first, then args.
  test::CommandResult Cli(const std::vector<std::string>& args, bool with_key = true) {
    std::vector<std::string> argv = {SHAREDLLM_CLI_BIN, "--server",
                                     "127.0.0.1:" + std::to_string(port_), "--timeout", "20"};
    if (with_key) {
      argv.push_back("--api-key");
      argv.push_back(kKey);
    }
    argv.insert(argv.end(), args.begin(), args.end());
    return test::Run(argv, dir_.path());
  }

  TempDir dir_;
  ApiKeys keys_ = ApiKeys::Disabled();
  FakeDocuments documents_{&keys_};
  FakeQuery query_{&keys_};
  int port_ = 0;
  std::unique_ptr<grpc::Server> server_;
};

TEST_F(CliClientTest, UploadStreamsChunksWithTheSha256AndWaits) {
  std::string content;
  for (int i = 0; content.size() < (5u << 19); ++i) content += "line " + std::to_string(i) + "\n";
  test::WriteFile(dir_ / "doc.txt", content);
  auto r = Cli({"upload", dir_ / "doc.txt", "--id", "doc-1", "--collection", "c1", "--wait"});
  EXPECT_EQ(r.exit_code, 0) << r.out << r.err;
  EXPECT_NE(r.out.find("doc-1  QUEUED"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("COMPRESSING  chunks 1/2 (50%)"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("doc-1  READY  chunks 2/2"), std::string::npos) << r.out;
  std::lock_guard<std::mutex> lock(documents_.mu_);
  EXPECT_EQ(documents_.content, content);
  EXPECT_EQ(documents_.header.document_id(), "doc-1");
  EXPECT_EQ(documents_.header.collection_id(), "c1");
  EXPECT_EQ(documents_.header.name(), "doc.txt");
  EXPECT_EQ(documents_.header.sha256(), HexSha256(content));
  ASSERT_EQ(documents_.chunk_sizes.size(), 3u);
  EXPECT_EQ(documents_.chunk_sizes[0], 1u << 20);
  EXPECT_EQ(documents_.chunk_sizes[1], 1u << 20);
}

TEST_F(CliClientTest, UploadReportsAFailedJobAndRpcErrors) {
  test::WriteFile(dir_ / "doc.txt", "text");
  auto failed = Cli({"upload", "--id", "bad", dir_ / "doc.txt", "--wait", "--name", "N"});
  EXPECT_EQ(failed.exit_code, 1) << failed.out << failed.err;
  EXPECT_NE(failed.out.find("FAILED"), std::string::npos) << failed.out;
  EXPECT_NE(failed.out.find("DEADLINE_EXCEEDED: heartbeat lost"), std::string::npos);

  auto taken = Cli({"upload", dir_ / "doc.txt", "--id", "taken"});
  EXPECT_EQ(taken.exit_code, 1);
  EXPECT_NE(taken.err.find("error: ALREADY_EXISTS: document taken exists"), std::string::npos)
      << taken.err;

  auto no_file = Cli({"upload", dir_ / "none.txt", "--id", "x"});
  EXPECT_EQ(no_file.exit_code, 2) << no_file.err;
}

TEST_F(CliClientTest, AskStreamsTheAnswerToStdout) {
  auto r = Cli({"ask", "--id", "d1", "--id", "d2", "--question", "Who?", "--max-tokens", "7",
                "--temperature", "0.5", "--stop", "\n"});
  EXPECT_EQ(r.exit_code, 0) << r.err;
  EXPECT_EQ(r.out, "Hello world\n");
  EXPECT_NE(r.err.find("selected 2 nodes over 3 chunks of 1 document(s), 16 key/value positions"),
            std::string::npos)
      << r.err;
  EXPECT_NE(r.err.find("finish: eos"), std::string::npos) << r.err;
  EXPECT_NE(r.err.find("completion_tokens=2"), std::string::npos) << r.err;
  EXPECT_NE(r.err.find("total=0.250s"), std::string::npos) << r.err;
  {
    std::lock_guard<std::mutex> lock(query_.mu_);
    ASSERT_EQ(query_.last.document_ids_size(), 2);
    EXPECT_EQ(query_.last.document_ids(1), "d2");
    EXPECT_EQ(query_.last.question(), "Who?");
    EXPECT_EQ(query_.last.options().max_tokens(), 7);
    EXPECT_FLOAT_EQ(query_.last.options().temperature(), 0.5f);
    ASSERT_EQ(query_.last.options().stop_size(), 1);
    EXPECT_EQ(query_.last.options().stop(0), "\n");
  }

  auto quiet = Cli({"ask", "--collection", "c", "--question", "Q", "--quiet"});
  EXPECT_EQ(quiet.exit_code, 0);
  EXPECT_EQ(quiet.out, "Hello world\n");
  EXPECT_EQ(quiet.err, "");
}

TEST_F(CliClientTest, RpcErrorsExitOneWithTheCodeName) {
  auto unauth = Cli({"ask", "--id", "d", "--question", "Q"}, /*with_key=*/false);
  EXPECT_EQ(unauth.exit_code, 1);
  EXPECT_NE(unauth.err.find("error: UNAUTHENTICATED: missing API key"), std::string::npos)
      << unauth.err;

  auto missing = Cli({"status", "missing"});
  EXPECT_EQ(missing.exit_code, 1);
  EXPECT_NE(missing.err.find("error: NOT_FOUND: no document missing"), std::string::npos);

  auto cancel = Cli({"cancel", "doc"});
  EXPECT_EQ(cancel.exit_code, 1);
  EXPECT_NE(cancel.err.find("FAILED_PRECONDITION"), std::string::npos);

  auto down = test::Run({SHAREDLLM_CLI_BIN, "--server", "127.0.0.1:1", "status", "x"}, dir_.path());
  EXPECT_EQ(down.exit_code, 1);
  EXPECT_NE(down.err.find("error: UNAVAILABLE"), std::string::npos) << down.err;
  EXPECT_EQ(down.err.find("in clear"), std::string::npos) << "no key sent, nothing to warn of";
  // A key over plaintext to another machine is sent, with a warning (never the key itself).
  auto clear = test::Run({SHAREDLLM_CLI_BIN, "--server", "sharedllm.invalid:1", "--api-key",
                          "secret-key-0123456789", "--timeout", "2", "status", "x"},
                         dir_.path());
  EXPECT_EQ(clear.exit_code, 1);
  EXPECT_NE(clear.err.find("the API key goes to sharedllm.invalid:1 in clear"), std::string::npos)
      << clear.err;
  EXPECT_EQ(clear.err.find("secret-key"), std::string::npos) << clear.err;
}

TEST_F(CliClientTest, OtherCommands) {
  auto status = Cli({"status", "doc"});
  EXPECT_EQ(status.exit_code, 0);
  EXPECT_NE(status.out.find("doc  READY"), std::string::npos) << status.out;

  auto get = Cli({"get", "doc"});
  EXPECT_EQ(get.exit_code, 0) << get.err;
  EXPECT_NE(get.out.find("document_id:       doc\n"), std::string::npos) << get.out;
  EXPECT_NE(get.out.find("collection_id:     c9\n"), std::string::npos) << get.out;
  EXPECT_NE(get.out.find("num_tokens:        1234\n"), std::string::npos) << get.out;

  auto list = Cli({"list", "--collection", "c9"});
  EXPECT_EQ(list.exit_code, 0) << list.err;
  EXPECT_NE(list.out.find("doc-page1\tc9\tREADY"), std::string::npos) << list.out;
  EXPECT_NE(list.out.find("doc-page2\tc9\tREADY"), std::string::npos) << list.out;

  auto del = Cli({"delete", "doc"});
  EXPECT_EQ(del.exit_code, 0);
  EXPECT_EQ(del.out, "deleted doc\n");

  auto watch = Cli({"watch", "bad"});
  EXPECT_EQ(watch.exit_code, 1);

  auto retrieve = Cli({"retrieve", "--id", "d", "--question", "Q"});
  EXPECT_EQ(retrieve.exit_code, 0) << retrieve.err;
  EXPECT_NE(retrieve.out.find("doc-r\t4\t3\t0\t10-20\t0"), std::string::npos) << retrieve.out;

  // Connection flags may follow the command too.
  auto after = test::Run({SHAREDLLM_CLI_BIN, "status", "doc", "--api-key", kKey, "--server",
                    "127.0.0.1:" + std::to_string(port_)},
                   dir_.path());
  EXPECT_EQ(after.exit_code, 0) << after.err;
}

TEST_F(CliClientTest, UsageErrorsExitTwo) {
  const std::string bin = SHAREDLLM_CLI_BIN;
  EXPECT_EQ(test::Run({bin}, dir_.path()).exit_code, 2);
  EXPECT_EQ(test::Run({bin, "--help"}, dir_.path()).exit_code, 0);
  EXPECT_EQ(test::Run({bin, "frobnicate"}, dir_.path()).exit_code, 2);
  EXPECT_EQ(test::Run({bin, "--bogus", "x", "list"}, dir_.path()).exit_code, 2);
  for (const char* cmd : {"upload", "status", "watch", "get", "list", "delete", "cancel", "ask",
                          "retrieve"}) {
    auto help = Cli({cmd, "--help"});
    EXPECT_EQ(help.exit_code, 0) << cmd;
    EXPECT_NE(help.out.find(std::string("usage: sharedllm-cli ") + cmd), std::string::npos) << cmd;
  }
  EXPECT_EQ(Cli({"ask", "--question", "Q"}).exit_code, 2);                      // no target
  EXPECT_EQ(Cli({"ask", "--id", "a", "--collection", "c", "--question", "Q"}).exit_code, 2);
  EXPECT_EQ(Cli({"ask", "--id", "a"}).exit_code, 2);                             // no question
  EXPECT_EQ(Cli({"upload", "--id", "a"}).exit_code, 2);                          // no file
  EXPECT_EQ(Cli({"status"}).exit_code, 2);
  EXPECT_EQ(Cli({"status", "a", "b"}).exit_code, 2);
  EXPECT_EQ(Cli({"list", "extra"}).exit_code, 2);
  EXPECT_EQ(Cli({"ask", "--id", "a", "--question", "Q", "--max-tokens", "x"}).exit_code, 2);
  EXPECT_EQ(test::Run({bin, "status", "x"}, dir_.path()).exit_code, 2);  // no --server
}

}  // namespace
}  // namespace sharedllm::service
