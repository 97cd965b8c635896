// Ingestion: a bounded queue of index jobs and worker threads that tokenise a document, build
// every chunk's static tree with the engine, and persist it chunk by chunk (one atomic batch
// each), then flip the document to READY. Jobs survive restarts: the upload is kept on disk until
// the document is READY, and an INDEXING document resumes from its last persisted chunk.
#pragma once

#include <array>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <deque>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "absl/status/statusor.h"
#include "service/engine.h"
#include "service/metrics.h"
#include "store/storage.h"
#include "store/tree_store.h"

namespace sharedllm::service {

enum class JobState { kQueued = 1, kTokenizing, kCompressing, kPersisting, kReady, kFailed, kCancelled };
const char* JobStateName(JobState s);
bool Terminal(JobState s);

struct JobSnapshot {
  std::string tenant, document_id;
  JobState state = JobState::kQueued;
  int64_t chunks_done = 0, chunks_total = 0, num_tokens = 0;
  std::string error_code, error_message;
  int64_t created_unix_ms = 0, updated_unix_ms = 0;
  int64_t version = 0;  // bumps on every change (WatchIndexStatus waits on it)
};

struct IndexerOptions {
  std::string uploads_dir;       // where uploads wait until their document is READY
  std::shared_ptr<Storage> storage;  // what writes the uploads there; null: the OS's file system
  int workers = 1;               // concurrent index jobs
  int queue_capacity = 16;       // queued jobs beyond which Submit is RESOURCE_EXHAUSTED
  double stall_seconds = 600;    // a job with no progress for this long fails (DEADLINE_EXCEEDED)
  // A tenant's queued and admitted jobs beyond which its Submit is RESOURCE_EXHAUSTED, so that
  // one tenant cannot take the whole queue; 0: no cap but the queue's.
  int queue_per_tenant = 0;
  // A tenant's documents (any state) and uploaded bytes beyond which Submit is
  // RESOURCE_EXHAUSTED; 0: unlimited.
  int64_t max_documents_per_tenant = 0;
  int64_t max_bytes_per_tenant = 0;
  // A finished job is kept in memory this long (watchers see its last state), then only its
  // stored record answers: memory holds live jobs and recent ones, not every job ever run.
  double finished_retention_seconds = 60;
  // Testing hooks (unset in production), to hold a thread at a race window: called in Submit once
  // the job is admitted, before its upload is stored; and on the worker once a chunk is encoded,
  // just before it is persisted.
  std::function<void(const std::string& document_id)> testing_after_admission;
  std::function<void(const std::string& document_id, int64_t chunk)> testing_before_persist;
  // ... and once every chunk is persisted, just before the document is marked READY.
  std::function<void(const std::string& document_id)> testing_before_ready;
};

class Indexer {
 public:
  Indexer(Engine& engine, TreeStore& store, Metrics& metrics, IndexerOptions options);
  ~Indexer();  // stops the workers after their current chunk

  // Re-queues documents whose jobs were interrupted (found in uploads_dir). Call once at start.
  void ResumeInterrupted();
  // Persists `text` and the document's INDEXING metadata, then queues the job. Admission is
  // atomic: UNAVAILABLE when draining, RESOURCE_EXHAUSTED when queued plus being-admitted jobs
  // reach queue_capacity, ALREADY_EXISTS when the document is being indexed or admitted, or exists.
  absl::StatusOr<JobSnapshot> Submit(DocumentMeta meta, std::string text);
  // NOT_FOUND for unknown documents (finished jobs are answered from the store).
  absl::StatusOr<JobSnapshot> Get(const std::string& tenant, const std::string& document_id) const;
  // Blocks until the job's version exceeds `version`, or `deadline`; returns the latest snapshot.
  absl::StatusOr<JobSnapshot> WaitForChange(const std::string& tenant, const std::string& document_id,
                                            int64_t version,
                                            std::chrono::system_clock::time_point deadline) const;
  // Cancels a queued or running job and deletes the document. FAILED_PRECONDITION when finished.
  absl::StatusOr<JobSnapshot> Cancel(const std::string& tenant, const std::string& document_id);
  // Deletes the document: cancels its job (a running one writes nothing more: a later upload under
  // the same id is never touched by it), removes its upload and its store data. NOT_FOUND if absent.
  absl::Status Delete(const std::string& tenant, const std::string& document_id);
  // Stops taking jobs (draining); running jobs stop after their current chunk and stay resumable.
  void Drain();
  int64_t queue_depth() const;
  // Jobs held in memory: live ones and those finished within finished_retention_seconds.
  int64_t jobs_in_memory() const;

 private:
  struct Job {
    JobSnapshot snap;
    std::atomic<bool> cancel{false};
    std::chrono::steady_clock::time_point heartbeat;
    bool resumed = false;  // re-queued at start: its upload file is checked against its sha256
    std::atomic<bool> recorded{false};  // its terminal state is in the store's job record
  };
  using Key = std::pair<std::string, std::string>;  // tenant, document

  // Runs `write` (a change to the job's document in the store or its upload file) while holding
  // the document's lock, only if `job` still owns the document: it was not deleted, nor replaced
  // by a newer upload under the same id. False (nothing run) otherwise. Every change to a
  // document's store data or upload goes through the document's lock, so ownership cannot change
  // between the check and the write.
  bool WriteIfOwner(const std::shared_ptr<Job>& job, const std::function<void()>& write);
  // True when `job` is still the document's current job (takes mu_).
  bool Owns(const std::shared_ptr<Job>& job) const;
  // Deletes the document's store data and its upload; the caller holds the document lock.
  void DiscardDocument(const std::string& tenant, const std::string& doc);
  std::mutex& DocumentLock(const Key& key);

  // Submit's part after the reservation, under the document's lock: the existence and quota
  // checks (Admit), then the durable upload, the INDEXING record and the queued job (Store).
  absl::Status Admit(DocumentMeta& meta, const std::string& text, const std::shared_ptr<Job>& job,
                     JobSnapshot* snap);
  absl::Status Store(DocumentMeta& meta, const std::string& text, const std::shared_ptr<Job>& job,
                     JobSnapshot* snap);
  void WorkerLoop();
  void Watchdog();
  void RunJob(const std::shared_ptr<Job>& job);
  void Update(const std::shared_ptr<Job>& job, JobState state, int64_t chunks_done = -1,
              const std::string& error_code = "", const std::string& error_message = "");
  // Update for a caller that already holds the job's document lock (its record is then written
  // without taking the lock again).
  // Marks the job FAILED (status and metric reason) and its document FAILED, upload removed.
  void Fail(const std::shared_ptr<Job>& job, const absl::Status& status, const std::string& reason);
  // Fail with INTERNAL, swallowing anything Fail itself throws (the worker's last resort).
  void FailQuietly(const std::shared_ptr<Job>& job, const std::string& message);
  void UpdateLocked(const std::shared_ptr<Job>& job, JobState state, int64_t chunks_done = -1);
  void UpdateImpl(const std::shared_ptr<Job>& job, JobState state, int64_t chunks_done,
                  const std::string& error_code, const std::string& error_message,
                  bool document_locked);
  std::string UploadPath(const std::string& tenant, const std::string& document_id) const;

  Engine& engine_;
  TreeStore& store_;
  Metrics& metrics_;
  IndexerOptions options_;
  mutable std::mutex mu_;
  mutable std::condition_variable changed_;
  std::condition_variable work_;
  std::deque<std::shared_ptr<Job>> queue_;
  std::map<Key, std::shared_ptr<Job>> jobs_;  // a document's current job: its owner
  std::mutex quota_mu_;  // one tenant-quota check and its write at a time
  std::set<Key> admitting_;  // admitted by Submit, not yet queued (they count against capacity)
  std::array<std::mutex, 64> document_locks_;  // striped by document; taken before mu_, never after
  bool stopping_ = false;
  bool draining_ = false;
  std::vector<std::thread> threads_;
};

}  // namespace sharedllm::service
