#include "service/startup_gate.h"

namespace sharedllm::service {

namespace pb = ::sharedllm::v1;

grpc::Status StartingStatus() {
  return grpc::Status(grpc::StatusCode::UNAVAILABLE,
                      "the server is starting (loading the model and the tree store); retry "
                      "when its health check says SERVING");
}

// Forwards to the attached implementation, or answers StartingStatus().
#define SHAREDLLM_FORWARD(method, ...)               \
  auto* impl = impl_.load();                         \
  return impl ? impl->method(__VA_ARGS__) : StartingStatus()

grpc::Status GatedDocumentService::UploadDocument(grpc::ServerContext* context,
                                                  grpc::ServerReader<pb::UploadDocumentRequest>* reader,
                                                  pb::IndexJob* response) {
  SHAREDLLM_FORWARD(UploadDocument, context, reader, response);
}
grpc::Status GatedDocumentService::GetIndexStatus(grpc::ServerContext* context,
                                                  const pb::GetIndexStatusRequest* request,
                                                  pb::IndexJob* response) {
  SHAREDLLM_FORWARD(GetIndexStatus, context, request, response);
}
grpc::Status GatedDocumentService::WatchIndexStatus(grpc::ServerContext* context,
                                                    const pb::GetIndexStatusRequest* request,
                                                    grpc::ServerWriter<pb::IndexJob>* writer) {
  SHAREDLLM_FORWARD(WatchIndexStatus, context, request, writer);
}
grpc::Status GatedDocumentService::CancelIndexJob(grpc::ServerContext* context,
                                                  const pb::CancelIndexJobRequest* request,
                                                  pb::IndexJob* response) {
  SHAREDLLM_FORWARD(CancelIndexJob, context, request, response);
}
grpc::Status GatedDocumentService::GetDocument(grpc::ServerContext* context,
                                               const pb::GetDocumentRequest* request,
                                               pb::Document* response) {
  SHAREDLLM_FORWARD(GetDocument, context, request, response);
}
grpc::Status GatedDocumentService::ListDocuments(grpc::ServerContext* context,
                                                 const pb::ListDocumentsRequest* request,
                                                 pb::ListDocumentsResponse* response) {
  SHAREDLLM_FORWARD(ListDocuments, context, request, response);
}
grpc::Status GatedDocumentService::DeleteDocument(grpc::ServerContext* context,
                                                  const pb::DeleteDocumentRequest* request,
                                                  pb::DeleteDocumentResponse* response) {
  SHAREDLLM_FORWARD(DeleteDocument, context, request, response);
}

grpc::Status GatedQueryService::Ask(grpc::ServerContext* context, const pb::AskRequest* request,
                                    grpc::ServerWriter<pb::AskResponse>* writer) {
  SHAREDLLM_FORWARD(Ask, context, request, writer);
}
grpc::Status GatedQueryService::Retrieve(grpc::ServerContext* context,
                                         const pb::RetrieveRequest* request,
                                         pb::RetrieveResponse* response) {
  SHAREDLLM_FORWARD(Retrieve, context, request, response);
}

#undef SHAREDLLM_FORWARD

}  // namespace sharedllm::service
