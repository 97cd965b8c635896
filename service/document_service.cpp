#include "service/document_service.h"

#include "service/encoding.h"


#include <chrono>

namespace sharedllm::service {
namespace {

using grpc::Status;
using grpc::StatusCode;


sharedllm::v1::IndexJob::State StateToProto(JobState s) {
  return static_cast<sharedllm::v1::IndexJob::State>(static_cast<int>(s));
}

// Authenticates and returns the tenant, or the error status to return.
absl::StatusOr<std::string> Tenant(const ApiKeys& keys, grpc::ServerContext* context) {
  return keys.Authenticate(*context);
}

Status CheckId(const std::string& id, const char* what) {
  if (!ValidId(id)) {
    return Status(StatusCode::INVALID_ARGUMENT,
                  std::string(what) + " must be 1-128 characters of [A-Za-z0-9._-]");
  }
  return Status::OK;
}

}  // namespace


void ToProto(const JobSnapshot& s, sharedllm::v1::IndexJob* out) {
  out->set_document_id(s.document_id);
  out->set_state(StateToProto(s.state));
  out->set_chunks_done(s.chunks_done);
  out->set_chunks_total(s.chunks_total);
  out->set_num_tokens(s.num_tokens);
  out->set_error_code(s.error_code);
  out->set_error_message(s.error_message);
  out->set_created_unix_ms(s.created_unix_ms);
  out->set_updated_unix_ms(s.updated_unix_ms);
}

Status DocumentServiceImpl::UploadDocument(
    grpc::ServerContext* context, grpc::ServerReader<sharedllm::v1::UploadDocumentRequest>* reader,
    sharedllm::v1::IndexJob* response) {
  auto tenant = Tenant(keys_, context);
  if (!tenant.ok()) return ToGrpcStatus(tenant.status());
  if (draining_) return Status(StatusCode::UNAVAILABLE, "the server is draining");
  // A slot for the bytes this upload will hold, taken before any is read.
  struct Slot {
    std::atomic<int>& count;
    ~Slot() { --count; }
  } slot{uploads_in_flight_};
  if (++uploads_in_flight_ > limits_.max_uploads) {
    return Status(StatusCode::RESOURCE_EXHAUSTED,
                  std::to_string(limits_.max_uploads) +
                      " uploads are being received (--max-uploads); retry in a moment");
  }
  sharedllm::v1::UploadDocumentRequest msg;
  if (!reader->Read(&msg) || !msg.has_header()) {
    return Status(StatusCode::INVALID_ARGUMENT, "the first message must carry the header");
  }
  const auto header = msg.header();
  if (Status s = CheckId(header.document_id(), "document_id"); !s.ok()) return s;
  if (!header.collection_id().empty()) {
    if (Status s = CheckId(header.collection_id(), "collection_id"); !s.ok()) return s;
  }
  if (header.name().size() > 256) return Status(StatusCode::INVALID_ARGUMENT, "name is longer than 256 bytes");
  std::string text;
  while (reader->Read(&msg)) {
    if (msg.has_header()) return Status(StatusCode::INVALID_ARGUMENT, "a second header");
    if (static_cast<int64_t>(msg.chunk().size()) > limits_.max_chunk_bytes) {
      return Status(StatusCode::INVALID_ARGUMENT, "an upload chunk exceeds 1 MiB");
    }
    if (static_cast<int64_t>(text.size() + msg.chunk().size()) > limits_.max_document_bytes) {
      return Status(StatusCode::INVALID_ARGUMENT,
                    "the document exceeds this server's upload limit of " +
                        std::to_string(limits_.max_document_bytes >> 20) +
                        " MiB (--max-document-mb); split it into several documents of a collection");
    }
    text += msg.chunk();
    if (context->IsCancelled()) return Status(StatusCode::CANCELLED, "upload cancelled");
  }
  // Read() ends the same way on the client's WritesDone and on a cancel or a disconnect: only
  // the first is a complete upload. The received prefix of a cut-off one is never stored.
  if (context->IsCancelled()) return Status(StatusCode::CANCELLED, "upload cut off before its end");
  if (text.empty()) return Status(StatusCode::INVALID_ARGUMENT, "the document is empty");
  if (!ValidUtf8(text)) return Status(StatusCode::INVALID_ARGUMENT, "the document is not UTF-8 text");
  const std::string sha = Sha256Hex(text);
  if (!header.sha256().empty() && header.sha256() != sha) {
    return Status(StatusCode::INVALID_ARGUMENT, "sha256 mismatch: header " + Clip(header.sha256()) +
                                                    ", content " + sha);
  }
  DocumentMeta meta;
  meta.tenant = *tenant;
  meta.document_id = header.document_id();
  meta.collection_id = header.collection_id();
  meta.name = header.name();
  meta.sha256 = sha;
  meta.size_bytes = static_cast<int64_t>(text.size());
  auto job = indexer_.Submit(std::move(meta), std::move(text));
  if (!job.ok()) return ToGrpcStatus(job.status());
  ToProto(*job, response);
  return Status::OK;
}

Status DocumentServiceImpl::GetIndexStatus(grpc::ServerContext* context,
                                           const sharedllm::v1::GetIndexStatusRequest* request,
                                           sharedllm::v1::IndexJob* response) {
  auto tenant = Tenant(keys_, context);
  if (!tenant.ok()) return ToGrpcStatus(tenant.status());
  if (Status s = CheckId(request->document_id(), "document_id"); !s.ok()) return s;
  auto job = indexer_.Get(*tenant, request->document_id());
  if (!job.ok()) return ToGrpcStatus(job.status());
  ToProto(*job, response);
  return Status::OK;
}

Status DocumentServiceImpl::WatchIndexStatus(grpc::ServerContext* context,
                                             const sharedllm::v1::GetIndexStatusRequest* request,
                                             grpc::ServerWriter<sharedllm::v1::IndexJob>* writer) {
  auto tenant = Tenant(keys_, context);
  if (!tenant.ok()) return ToGrpcStatus(tenant.status());
  if (Status s = CheckId(request->document_id(), "document_id"); !s.ok()) return s;
  int64_t version = -1;
  for (;;) {
    if (context->IsCancelled()) return Status(StatusCode::CANCELLED, "watch cancelled");
    auto job = indexer_.WaitForChange(*tenant, request->document_id(), version,
                                      std::chrono::system_clock::now() + std::chrono::seconds(1));
    if (!job.ok()) return ToGrpcStatus(job.status());
    if (job->version != version) {
      sharedllm::v1::IndexJob msg;
      ToProto(*job, &msg);
      if (!writer->Write(msg)) return Status(StatusCode::CANCELLED, "client went away");
      version = job->version;
      if (Terminal(job->state)) return Status::OK;
    }
    if (draining_) return Status(StatusCode::UNAVAILABLE, "the server is draining");
  }
}

Status DocumentServiceImpl::CancelIndexJob(grpc::ServerContext* context,
                                           const sharedllm::v1::CancelIndexJobRequest* request,
                                           sharedllm::v1::IndexJob* response) {
  auto tenant = Tenant(keys_, context);
  if (!tenant.ok()) return ToGrpcStatus(tenant.status());
  if (Status s = CheckId(request->document_id(), "document_id"); !s.ok()) return s;
  auto job = indexer_.Cancel(*tenant, request->document_id());
  if (!job.ok()) return ToGrpcStatus(job.status());
  ToProto(*job, response);
  return Status::OK;
}

namespace {
void DocumentToProto(const DocumentMeta& m, sharedllm::v1::Document* out) {
  out->set_document_id(m.document_id);
  out->set_collection_id(m.collection_id);
  out->set_name(m.name);
  out->set_sha256(m.sha256);
  out->set_size_bytes(m.size_bytes);
  out->set_num_tokens(m.num_tokens);
  out->set_num_chunks(m.num_chunks);
  out->set_state(m.state == kDocumentReady    ? sharedllm::v1::IndexJob::READY
                 : m.state == kDocumentFailed ? sharedllm::v1::IndexJob::FAILED
                                              : sharedllm::v1::IndexJob::COMPRESSING);
  out->set_model_fingerprint(m.model_fingerprint);
  out->set_created_unix_ms(m.created_unix_ms);
}
}  // namespace

Status DocumentServiceImpl::GetDocument(grpc::ServerContext* context,
                                        const sharedllm::v1::GetDocumentRequest* request,
                                        sharedllm::v1::Document* response) {
  auto tenant = Tenant(keys_, context);
  if (!tenant.ok()) return ToGrpcStatus(tenant.status());
  if (Status s = CheckId(request->document_id(), "document_id"); !s.ok()) return s;
  auto meta = store_.GetDocument(*tenant, request->document_id());
  if (!meta.ok()) return ToGrpcStatus(meta.status());
  DocumentToProto(*meta, response);
  return Status::OK;
}

Status DocumentServiceImpl::ListDocuments(grpc::ServerContext* context,
                                          const sharedllm::v1::ListDocumentsRequest* request,
                                          sharedllm::v1::ListDocumentsResponse* response) {
  auto tenant = Tenant(keys_, context);
  if (!tenant.ok()) return ToGrpcStatus(tenant.status());
  if (!request->collection_id().empty()) {
    if (Status s = CheckId(request->collection_id(), "collection_id"); !s.ok()) return s;
  }
  if (request->page_size() < 0 || request->page_size() > 1000) {
    return Status(StatusCode::INVALID_ARGUMENT, "page_size must be in 0..1000");
  }
  auto page = store_.ListDocuments(*tenant, request->collection_id(), request->page_token(),
                                   request->page_size() == 0 ? 100 : request->page_size());
  if (!page.ok()) return ToGrpcStatus(page.status());
  for (const auto& m : page->documents) DocumentToProto(m, response->add_documents());
  response->set_next_page_token(page->next_page_token);
  return Status::OK;
}

Status DocumentServiceImpl::DeleteDocument(grpc::ServerContext* context,
                                           const sharedllm::v1::DeleteDocumentRequest* request,
                                           sharedllm::v1::DeleteDocumentResponse*) {
  auto tenant = Tenant(keys_, context);
  if (!tenant.ok()) return ToGrpcStatus(tenant.status());
  if (Status s = CheckId(request->document_id(), "document_id"); !s.ok()) return s;
  return ToGrpcStatus(indexer_.Delete(*tenant, request->document_id()));
}

}  // namespace sharedllm::service
