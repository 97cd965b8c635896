// The gRPC port opens before the model and the tree store are loaded (health says NOT_SERVING
// meanwhile), but the handlers need both. These front doors are what the server registers: until
// the real implementations are attached, every call is answered UNAVAILABLE with a message saying
// why; afterwards each call is forwarded unchanged.
#pragma once

#include <atomic>

#include "sharedllm/v1/documents.grpc.pb.h"
#include "sharedllm/v1/query.grpc.pb.h"

namespace sharedllm::service {

// UNAVAILABLE: "the server is starting ...". Retryable, like any UNAVAILABLE.
grpc::Status StartingStatus();

class GatedDocumentService final : public sharedllm::v1::DocumentService::Service {
 public:
  // `impl` must outlive every call; attach it once, when the server is ready.
  void Attach(sharedllm::v1::DocumentService::Service* impl) { impl_.store(impl); }

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
  std::atomic<sharedllm::v1::DocumentService::Service*> impl_{nullptr};
};

class GatedQueryService final : public sharedllm::v1::QueryService::Service {
 public:
  void Attach(sharedllm::v1::QueryService::Service* impl) { impl_.store(impl); }

  grpc::Status Ask(grpc::ServerContext* context, const sharedllm::v1::AskRequest* request,
                   grpc::ServerWriter<sharedllm::v1::AskResponse>* writer) override;
  grpc::Status Retrieve(grpc::ServerContext* context, const sharedllm::v1::RetrieveRequest* request,
                        sharedllm::v1::RetrieveResponse* response) override;

 private:
  std::atomic<sharedllm::v1::QueryService::Service*> impl_{nullptr};
};

}  // namespace sharedllm::service
