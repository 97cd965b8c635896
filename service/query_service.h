// gRPC QueryService: admission (bounded concurrency and queue), document resolution, search over
// stored vectors, K/V loading, and streaming the engine's answer. No tensors here.
#pragma once

#include <atomic>
#include <condition_variable>
#include <deque>
#include <mutex>

#include "sharedllm/v1/query.grpc.pb.h"
#include "service/auth.h"
#include "service/document_service.h"
#include "service/engine.h"
#include "retrieval/lexical.h"
#include "service/metrics.h"
#include "store/tree_store.h"

namespace sharedllm::service {

struct SchedulerOptions {
  int max_running = 1;   // questions answered at once (each uses all intra-op threads)
  int max_waiting = 16;  // queued questions beyond which Ask is RESOURCE_EXHAUSTED
};

// Counts running and waiting requests; a slot is held for the lifetime of an Admission.
class Scheduler {
 public:
  Scheduler(SchedulerOptions options, Metrics& metrics) : options_(options), metrics_(metrics) {}
  class Admission {
   public:
    explicit Admission(Scheduler* s) : s_(s) {}
    Admission(Admission&& o) noexcept : s_(o.s_) { o.s_ = nullptr; }
    ~Admission();
   private:
    Scheduler* s_;
  };
  // Waits for a slot while `alive()` holds; RESOURCE_EXHAUSTED when the queue is full,
  // CANCELLED/DEADLINE_EXCEEDED when the caller gives up.
  absl::StatusOr<Admission> Admit(grpc::ServerContext* context);

 private:
  void Release();
  SchedulerOptions options_;
  Metrics& metrics_;
  std::mutex mu_;
  std::condition_variable cv_;
  int running_ = 0;
  std::deque<uint64_t> waiting_;  // tickets in arrival order: admission is first come, first served
  uint64_t next_ticket_ = 0;
};

// ABORTED when a document a question read (one with chunks read) is no longer the version
// `metas` recorded: deleted, or deleted and uploaded again, while the question read its vectors
// and nodes in separate snapshots, which could then come from two versions. The client asks again.
absl::Status CheckUnchanged(const TreeStore& store, const std::vector<DocumentMeta>& metas,
                            const std::vector<DocumentVectors>& documents);

class QueryServiceImpl final : public sharedllm::v1::QueryService::Service {
 public:
  QueryServiceImpl(const ApiKeys& keys, Engine& engine, TreeStore& store, Scheduler& scheduler,
                   Metrics& metrics, const Limits& limits, const std::atomic<bool>& draining)
      : keys_(keys), engine_(engine), store_(store), scheduler_(scheduler), metrics_(metrics),
        limits_(limits), draining_(draining) {}

  grpc::Status Ask(grpc::ServerContext* context, const sharedllm::v1::AskRequest* request,
                   grpc::ServerWriter<sharedllm::v1::AskResponse>* writer) override;
  grpc::Status Retrieve(grpc::ServerContext* context, const sharedllm::v1::RetrieveRequest* request,
                        sharedllm::v1::RetrieveResponse* response) override;

 private:
  struct Retrieval {
    std::vector<DocumentVectors> documents;  // every document asked about, in request order
    std::vector<DocumentMeta> metas;         // their metadata as first read, in the same order
    std::vector<retrieval::ChunkScore> read;  // the chunks read, in reading order (doc indexes documents)
    std::vector<SelectedRef> selected;
    std::vector<int64_t> prompt_ids;
    int64_t total_chunks = 0;  // of the documents asked about
    int64_t budget = 0;        // the most chunks read (0: no limit)
    bool all = true;           // every chunk fit the budget
    double seconds = 0;
    // The reading position of (document, chunk): its index in `read`.
    int64_t Position(size_t document, int64_t chunk) const;
  };
  // INVALID_ARGUMENT for a malformed question or document selection (checked before admission).
  absl::Status CheckRequest(const google::protobuf::RepeatedPtrField<std::string>& ids,
                            const std::string& collection, const std::string& question) const;
  // Resolves the documents, checks they are READY and built by this model, searches.
  // Chooses the chunks to read within the budget (`max_chunks`, 0: the model's) and searches them.
  absl::StatusOr<Retrieval> Search(const std::string& tenant,
                                   const google::protobuf::RepeatedPtrField<std::string>& ids,
                                   const std::string& collection, const std::string& question,
                                   int64_t max_chunks);
  // Fills the chunks read, the budget and how the chunks were chosen, as Started and
  // RetrieveResponse carry them.
  template <typename Message>
  void FillReading(const Retrieval& r, Message* out) const;
  grpc::Status DoAsk(grpc::ServerContext* context, const sharedllm::v1::AskRequest* request,
                     grpc::ServerWriter<sharedllm::v1::AskResponse>* writer);

  const ApiKeys& keys_;
  Engine& engine_;
  TreeStore& store_;
  Scheduler& scheduler_;
  Metrics& metrics_;
  const Limits& limits_;
  const std::atomic<bool>& draining_;
};

}  // namespace sharedllm::service
