// gRPC DocumentService: validates and translates requests, authenticates the tenant, and hands
// work to the Indexer and the TreeStore. No tensors here.
#pragma once

#include <atomic>
#include <string>
#include <string_view>

#include "sharedllm/v1/documents.grpc.pb.h"
#include "service/auth.h"
#include "service/indexer.h"
#include "store/tree_store.h"

namespace sharedllm::service {

struct Limits {
  int64_t max_document_bytes = 16ll << 20;  // uploads larger than this are INVALID_ARGUMENT
  int64_t max_chunk_bytes = 1 << 20;        // per UploadDocument chunk message
  int64_t max_question_bytes = 4096;
  int64_t max_answer_tokens = 1024;
  int64_t max_documents_per_ask = 64;
  // Uploads received at once (each holds up to max_document_bytes in memory until it is
  // admitted); one more is RESOURCE_EXHAUSTED before its bytes are read.
  int max_uploads = 4;
};

class DocumentServiceImpl final : public sharedllm::v1::DocumentService::Service {
 public:
  DocumentServiceImpl(const ApiKeys& keys, Indexer& indexer, TreeStore& store, const Limits& limits,
                      const std::atomic<bool>& draining)
      : keys_(keys), indexer_(indexer), store_(store), limits_(limits), draining_(draining) {}

  grpc::Status UploadDocument(grpc::ServerContext* context,
                              grpc::ServerReader<sharedllm::v1::UploadDocumentRequest>* reader,
                              sharedllm::v1::IndexJob* response) override;
  grpc::Status GetIndexStatus(grpc::ServerContext* context,
                              const sharedllm::v1::GetIndexStatusRequest* request,
                              sharedllm::v1::IndexJob* response) override;
  grpc::Status WatchIndexStatus(grpc::ServerContext* context,
                                const sharedllm::v1::GetIndexStatusRequest* request,
                                grpc::ServerWriter<sharedllm::v1::IndexJob>* writer) override;
  grpc::Status CancelIndexJob(grpc::ServerContext* context,
                              const sharedllm::v1::CancelIndexJobRequest* request,
                              sharedllm::v1::IndexJob* response) override;
  grpc::Status GetDocument(grpc::ServerContext* context,
                           const sharedllm::v1::GetDocumentRequest* request,
                           sharedllm::v1::Document* response) override;
  grpc::Status ListDocuments(grpc::ServerContext* context,
                             const sharedllm::v1::ListDocumentsRequest* request,
                             sharedllm::v1::ListDocumentsResponse* response) override;
  grpc::Status DeleteDocument(grpc::ServerContext* context,
                              const sharedllm::v1::DeleteDocumentRequest* request,
                              sharedllm::v1::DeleteDocumentResponse* response) override;

 private:
  const ApiKeys& keys_;
  Indexer& indexer_;
  TreeStore& store_;
  const Limits& limits_;
  const std::atomic<bool>& draining_;
  std::atomic<int> uploads_in_flight_{0};
};


// Fills an IndexJob message from a snapshot.
void ToProto(const JobSnapshot& s, sharedllm::v1::IndexJob* out);

}  // namespace sharedllm::service
