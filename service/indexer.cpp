#include "service/indexer.h"

#include "llm/json_fields.h"

#include "service/encoding.h"

#include <filesystem>
#include <fstream>
#include <sstream>

#include <nlohmann/json.hpp>

namespace sharedllm::service {
namespace {

// Removes a file if it is there; a failure (a file already gone, a read-only directory) is not
// an error worth failing a job or the process over: a leftover upload is removed at the next start.
void RemoveQuietly(const std::string& path) {
  std::error_code ignored;
  std::filesystem::remove(path, ignored);
}

int64_t NowMs() {
  return std::chrono::duration_cast<std::chrono::milliseconds>(
             std::chrono::system_clock::now().time_since_epoch())
      .count();
}

std::string CodeName(absl::StatusCode code) { return absl::StatusCodeToString(code); }

nlohmann::json ToJson(const JobSnapshot& s) {
  return {{"document_id", s.document_id}, {"state", JobStateName(s.state)},
          {"chunks_done", s.chunks_done}, {"chunks_total", s.chunks_total},
          {"num_tokens", s.num_tokens},   {"error_code", s.error_code},
          {"error_message", s.error_message}, {"created_unix_ms", s.created_unix_ms},
          {"updated_unix_ms", s.updated_unix_ms}};
}

JobState StateFromName(const std::string& n) {
  for (int s = 1; s <= 7; ++s) {
    if (n == JobStateName(static_cast<JobState>(s))) return static_cast<JobState>(s);
  }
  return JobState::kFailed;
}

}  // namespace

const char* JobStateName(JobState s) {
  switch (s) {
    case JobState::kQueued: return "QUEUED";
    case JobState::kTokenizing: return "TOKENIZING";
    case JobState::kCompressing: return "COMPRESSING";
    case JobState::kPersisting: return "PERSISTING";
    case JobState::kReady: return "READY";
    case JobState::kFailed: return "FAILED";
    case JobState::kCancelled: return "CANCELLED";
  }
  return "FAILED";
}

bool Terminal(JobState s) {
  return s == JobState::kReady || s == JobState::kFailed || s == JobState::kCancelled;
}

Indexer::Indexer(Engine& engine, TreeStore& store, Metrics& metrics, IndexerOptions options)
    : engine_(engine), store_(store), metrics_(metrics), options_(std::move(options)) {
  if (!options_.storage) options_.storage = Storage::Os();
  std::filesystem::create_directories(options_.uploads_dir);
  for (int i = 0; i < std::max(1, options_.workers); ++i) threads_.emplace_back([this] { WorkerLoop(); });
  threads_.emplace_back([this] { Watchdog(); });
}

Indexer::~Indexer() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    stopping_ = true;
    for (auto& [_, job] : jobs_) {
      if (!Terminal(job->snap.state)) job->cancel = true;  // stops after the current chunk
    }
  }
  work_.notify_all();
  changed_.notify_all();
  for (auto& t : threads_) t.join();
}

std::string Indexer::UploadPath(const std::string& tenant, const std::string& document_id) const {
  return options_.uploads_dir + "/" + HexEncode(tenant) + "." + HexEncode(document_id) + ".txt";
}

void Indexer::ResumeInterrupted() {
  namespace fs = std::filesystem;
  for (const auto& entry : fs::directory_iterator(options_.uploads_dir)) {
    const std::string name = entry.path().filename().string();
    if (entry.path().extension() == ".tmp") {
      RemoveQuietly(entry.path().string());  // an upload cut off by a crash before its rename
      continue;
    }
    const size_t dot = name.find('.');
    if (dot == std::string::npos || entry.path().extension() != ".txt") continue;
    const std::string tenant = HexDecode(name.substr(0, dot));
    const std::string doc = HexDecode(name.substr(dot + 1, name.size() - dot - 5));
    auto meta = store_.GetDocument(tenant, doc);
    if (!meta.ok() || meta->state != kDocumentIndexing) {
      RemoveQuietly(entry.path().string());  // finished or deleted: the upload is no longer needed
      continue;
    }
    // Cancelled (and answered so) but the server stopped before the job cleaned up: finish the
    // cancel instead of indexing the document after all. (No job is live yet: Get reads the
    // stored record.)
    if (auto stored = Get(tenant, doc); stored.ok() && stored->state == JobState::kCancelled) {
      std::lock_guard<std::mutex> document(DocumentLock({tenant, doc}));
      DiscardDocument(tenant, doc);
      continue;
    }
    auto job = std::make_shared<Job>();
    job->snap = {tenant, doc, JobState::kQueued, meta->chunks_done, meta->num_chunks,
                 meta->num_tokens, "", "", meta->created_unix_ms, NowMs(), 1};
    job->resumed = true;
    std::lock_guard<std::mutex> lock(mu_);
    jobs_[{tenant, doc}] = job;
    queue_.push_back(job);
  }
  metrics_.SetIndexQueueDepth(queue_depth());
  work_.notify_all();
}

std::mutex& Indexer::DocumentLock(const Key& key) {
  return document_locks_[std::hash<std::string>{}(key.first + '\0' + key.second) %
                         document_locks_.size()];
}

bool Indexer::Owns(const std::shared_ptr<Job>& job) const {
  std::lock_guard<std::mutex> lock(mu_);
  auto it = jobs_.find({job->snap.tenant, job->snap.document_id});
  return it != jobs_.end() && it->second == job;
}

bool Indexer::WriteIfOwner(const std::shared_ptr<Job>& job, const std::function<void()>& write) {
  std::lock_guard<std::mutex> document(DocumentLock({job->snap.tenant, job->snap.document_id}));
  if (!Owns(job)) return false;
  write();
  return true;
}

void Indexer::DiscardDocument(const std::string& tenant, const std::string& doc) {
  // The upload goes only with the document: were the store refusing the delete (a full disk),
  // the document stays INDEXING with its upload and its CANCELLED record, and the next start
  // finishes the cancel (ResumeInterrupted). Without the upload it would stay INDEXING for good.
  if (store_.DeleteDocument(tenant, doc).ok()) RemoveQuietly(UploadPath(tenant, doc));
}

absl::StatusOr<JobSnapshot> Indexer::Submit(DocumentMeta meta, std::string text) {
  const Key key{meta.tenant, meta.document_id};
  // Admission: every check and the reservation under one lock, so that concurrent submits can
  // neither overfill the queue nor both take the same id.
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (draining_) return absl::UnavailableError("the server is draining; retry on another replica");
    if (static_cast<int>(queue_.size() + admitting_.size()) >= options_.queue_capacity) {
      return absl::ResourceExhaustedError("the index queue is full (" +
                                          std::to_string(options_.queue_capacity) + " jobs)");
    }
    if (options_.queue_per_tenant > 0) {
      int64_t mine = 0;
      for (const auto& q : queue_) mine += q->snap.tenant == meta.tenant;
      for (const auto& a : admitting_) mine += a.first == meta.tenant;
      if (mine >= options_.queue_per_tenant) {
        return absl::ResourceExhaustedError(
            "this tenant has " + std::to_string(mine) + " index jobs waiting, its share of the queue (" +
            std::to_string(options_.queue_per_tenant) + "); retry when one has started");
      }
    }
    auto it = jobs_.find(key);
    if (admitting_.count(key) || (it != jobs_.end() && !Terminal(it->second->snap.state))) {
      return absl::AlreadyExistsError("document " + meta.document_id + " is being indexed");
    }
    admitting_.insert(key);
  }
  // From here the reservation is released however this returns, an exception included (an
  // allocation, the filesystem): a leaked one would block this id and a queue slot for good.
  struct Reservation {
    Indexer* self;
    const Key& key;
    ~Reservation() {
      std::lock_guard<std::mutex> lock(self->mu_);
      self->admitting_.erase(key);
    }
  } reservation{this, key};
  JobSnapshot snap;
  try {
    if (options_.testing_after_admission) options_.testing_after_admission(meta.document_id);
    auto job = std::make_shared<Job>();
    absl::Status status = Admit(meta, text, job, &snap);
    if (!status.ok()) return status;
  } catch (const std::exception& e) {
    return absl::InternalError(std::string("cannot accept the upload: ") + e.what());
  }
  metrics_.SetIndexQueueDepth(queue_depth());
  work_.notify_one();
  return snap;
}

absl::Status Indexer::Admit(DocumentMeta& meta, const std::string& text, const std::shared_ptr<Job>& job,
                            JobSnapshot* snap) {
  // Under the document's lock: a job of an earlier document with this id (cancelled, still
  // cleaning up) cannot remove this upload or data (WriteIfOwner).
  std::lock_guard<std::mutex> document(DocumentLock({meta.tenant, meta.document_id}));
  if (store_.GetDocument(meta.tenant, meta.document_id).ok()) {
    return absl::AlreadyExistsError("document " + meta.document_id + " exists; delete it first");
  }
  if (options_.max_documents_per_tenant <= 0 && options_.max_bytes_per_tenant <= 0) {
    return Store(meta, text, job, snap);
  }
  // The quota's check and the write one upload at a time, so that concurrent uploads cannot
  // both fit in the room one of them leaves.
  std::lock_guard<std::mutex> quota(quota_mu_);
  auto usage = store_.GetTenantUsage(meta.tenant);
  if (!usage.ok()) return usage.status();
  if (options_.max_documents_per_tenant > 0 && usage->documents >= options_.max_documents_per_tenant) {
    return absl::ResourceExhaustedError(
        "this tenant holds " + std::to_string(usage->documents) + " documents, its quota (" +
        std::to_string(options_.max_documents_per_tenant) + "); delete some first");
  }
  if (options_.max_bytes_per_tenant > 0 && usage->bytes + meta.size_bytes > options_.max_bytes_per_tenant) {
    return absl::ResourceExhaustedError(
        "this upload would take the tenant's documents to " + std::to_string(usage->bytes + meta.size_bytes) +
        " bytes, above its quota of " + std::to_string(options_.max_bytes_per_tenant) + "; delete some first");
  }
  return Store(meta, text, job, snap);
}

absl::Status Indexer::Store(DocumentMeta& meta, const std::string& text, const std::shared_ptr<Job>& job,
                            JobSnapshot* out) {
  const Key key{meta.tenant, meta.document_id};
  const std::string path = UploadPath(meta.tenant, meta.document_id);
  // Durable before the INDEXING record is: a power loss after QUEUED is answered must not
  // strand the document without its text.
  if (absl::Status s = options_.storage->WriteFileDurably(path, text); !s.ok()) {
    return absl::Status(s.code(), "cannot store the upload: " + std::string(s.message()));
  }
  meta.state = kDocumentIndexing;
  meta.created_unix_ms = meta.updated_unix_ms = NowMs();
  meta.model_fingerprint = engine_.fingerprint();
  meta.chunks_done = 0;
  if (absl::Status s = store_.PutDocument(meta); !s.ok()) {
    RemoveQuietly(path);
    return s;
  }
  job->snap = {meta.tenant, meta.document_id, JobState::kQueued, 0, 0, 0, "", "",
               meta.created_unix_ms, meta.created_unix_ms, 1};
  {
    std::lock_guard<std::mutex> lock(mu_);
    admitting_.erase(key);
    jobs_[key] = job;  // the new owner: an earlier job of this id writes nothing from now on
    queue_.push_back(job);
    *out = job->snap;
  }
  store_.PutJob(meta.tenant, meta.document_id, ToJson(*out).dump()).IgnoreError();
  return absl::OkStatus();
}

absl::StatusOr<JobSnapshot> Indexer::Get(const std::string& tenant, const std::string& doc) const {
  {
    std::lock_guard<std::mutex> lock(mu_);
    auto it = jobs_.find({tenant, doc});
    if (it != jobs_.end()) return it->second->snap;
  }
  // Not in memory (finished before a restart): the persisted job record, else the document.
  if (auto job = store_.GetJob(tenant, doc); job.ok()) {
    const auto j = nlohmann::json::parse(*job, nullptr, false);
    if (j.is_object()) {
      // A damaged record reads as far as it is sound (JsonValueOr: a field of the wrong type, or
      // a number no int64 holds, counts as absent instead of throwing or overflowing).
      const auto integer = [&](const char* key) { return JsonValueOr<int64_t>(j, key, 0); };
      const auto text = [&](const char* key, const char* fallback) {
        return JsonValueOr<std::string>(j, key, fallback);
      };
      JobSnapshot s;
      s.tenant = tenant;
      s.document_id = doc;
      s.state = StateFromName(text("state", "FAILED"));
      s.chunks_done = integer("chunks_done");
      s.chunks_total = integer("chunks_total");
      s.num_tokens = integer("num_tokens");
      s.error_code = text("error_code", "");
      s.error_message = text("error_message", "");
      s.created_unix_ms = integer("created_unix_ms");
      s.updated_unix_ms = integer("updated_unix_ms");
      s.version = 1;
      if (s.state != JobState::kCancelled && !store_.GetDocument(tenant, doc).ok()) {
        return absl::NotFoundError("no document " + doc);  // deleted since
      }
      return s;
    }
  }
  return absl::NotFoundError("no document " + doc);
}

absl::StatusOr<JobSnapshot> Indexer::WaitForChange(const std::string& tenant, const std::string& doc,
                                                   int64_t version,
                                                   std::chrono::system_clock::time_point deadline) const {
  std::unique_lock<std::mutex> lock(mu_);
  auto it = jobs_.find({tenant, doc});
  if (it == jobs_.end()) {
    lock.unlock();
    auto stored = Get(tenant, doc);
    if (!stored.ok() || stored->version != version) return stored;
    // A stored job with no live one (it finished before a restart, or its document was left
    // INDEXING without an upload to resume) changes only if a new job starts: wait for that,
    // the deadline or shutdown, rather than return at once and make a watcher's loop spin.
    lock.lock();
    changed_.wait_until(lock, deadline, [&] { return stopping_ || jobs_.count({tenant, doc}) > 0; });
    lock.unlock();
    return Get(tenant, doc);
  }
  auto job = it->second;
  changed_.wait_until(lock, deadline, [&] { return job->snap.version > version || stopping_; });
  return job->snap;
}

absl::StatusOr<JobSnapshot> Indexer::Cancel(const std::string& tenant, const std::string& doc) {
  // The document lock first (as WriteIfOwner and Delete take it): a running job's READY flip
  // and this decision cannot interleave.
  std::lock_guard<std::mutex> document(DocumentLock({tenant, doc}));
  std::shared_ptr<Job> job;
  JobSnapshot recorded;
  bool queued = false;
  {
    std::lock_guard<std::mutex> lock(mu_);
    auto it = jobs_.find({tenant, doc});
    if (it == jobs_.end()) {
      if (!store_.GetDocument(tenant, doc).ok()) return absl::NotFoundError("no document " + doc);
      return absl::FailedPreconditionError("the index job of " + doc + " has finished");
    }
    job = it->second;
    if (Terminal(job->snap.state)) {
      return absl::FailedPreconditionError("the index job of " + doc + " has finished (" +
                                           JobStateName(job->snap.state) + ")");
    }
    recorded = job->snap;
  }
  // Durable before it is answered: the CANCELLED record lets the next start finish a cancel that
  // a crash or a full disk kept from cleaning up. Unrecorded, the answer is the store's error and
  // the job goes on.
  recorded.state = JobState::kCancelled;
  recorded.updated_unix_ms = NowMs();
  if (absl::Status s = store_.PutJob(tenant, doc, ToJson(recorded).dump()); !s.ok()) {
    return absl::Status(s.code(), "cannot record the cancel of " + doc + ": " + std::string(s.message()));
  }
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (Terminal(job->snap.state)) {  // failed meanwhile (a READY flip needs the document lock)
      return absl::FailedPreconditionError("the index job of " + doc + " has finished (" +
                                           JobStateName(job->snap.state) + ")");
    }
    job->cancel = true;
    for (auto q = queue_.begin(); q != queue_.end(); ++q) {
      if (*q == job) {
        queue_.erase(q);
        queued = true;
        break;
      }
    }
  }
  if (queued) {
    // Never started: clean up here (the document lock is held and the job, still in jobs_, owns
    // the document). A running job cleans up after its current chunk.
    DiscardDocument(tenant, doc);
  }
  UpdateLocked(job, JobState::kCancelled);
  metrics_.SetIndexQueueDepth(queue_depth());
  std::lock_guard<std::mutex> lock(mu_);
  return job->snap;
}

absl::Status Indexer::Delete(const std::string& tenant, const std::string& doc) {
  const Key key{tenant, doc};
  std::lock_guard<std::mutex> document(DocumentLock(key));
  // The store first: a delete it refuses (a full disk) changes nothing, neither the job nor the
  // upload (removed first, a refused delete would leave the document INDEXING without either).
  // A running job writes only under the document lock, held here throughout.
  if (absl::Status s = store_.DeleteDocument(tenant, doc); !s.ok()) return s;
  {
    std::lock_guard<std::mutex> lock(mu_);
    auto it = jobs_.find(key);
    if (it != jobs_.end()) {
      it->second->cancel = true;
      // A queued job of a deleted document must not run: its upload is gone, and it would fail
      // (upload_lost) or index a later document uploaded under the same id. A running one loses
      // ownership here, so it writes nothing more (WriteIfOwner).
      for (auto q = queue_.begin(); q != queue_.end(); ++q) {
        if (*q == it->second) {
          queue_.erase(q);
          break;
        }
      }
      jobs_.erase(it);
    }
    metrics_.SetIndexQueueDepth(static_cast<int64_t>(queue_.size()));
  }
  RemoveQuietly(UploadPath(tenant, doc));
  store_.DeleteJob(tenant, doc).IgnoreError();
  return absl::OkStatus();
}

void Indexer::Drain() {
  std::lock_guard<std::mutex> lock(mu_);
  draining_ = true;
}

int64_t Indexer::jobs_in_memory() const {
  std::lock_guard<std::mutex> lock(mu_);
  return static_cast<int64_t>(jobs_.size());
}

int64_t Indexer::queue_depth() const {
  std::lock_guard<std::mutex> lock(mu_);
  return static_cast<int64_t>(queue_.size());
}

void Indexer::Update(const std::shared_ptr<Job>& job, JobState state, int64_t chunks_done,
                     const std::string& error_code, const std::string& error_message) {
  UpdateImpl(job, state, chunks_done, error_code, error_message, /*document_locked=*/false);
}

void Indexer::UpdateLocked(const std::shared_ptr<Job>& job, JobState state, int64_t chunks_done) {
  UpdateImpl(job, state, chunks_done, "", "", /*document_locked=*/true);
}

void Indexer::UpdateImpl(const std::shared_ptr<Job>& job, JobState state, int64_t chunks_done,
                         const std::string& error_code, const std::string& error_message,
                         bool document_locked) {
  JobSnapshot snap;
  {
    std::lock_guard<std::mutex> lock(mu_);
    // A cancelled or failed job stays so, whatever its worker reports afterwards.
    if (Terminal(job->snap.state) && state != job->snap.state) return;
    job->snap.state = state;
    if (chunks_done >= 0) job->snap.chunks_done = chunks_done;
    if (!error_code.empty()) {
      job->snap.error_code = error_code;
      job->snap.error_message = error_message;
    }
    job->snap.updated_unix_ms = NowMs();
    job->snap.version++;
    job->heartbeat = std::chrono::steady_clock::now();
    snap = job->snap;
  }
  changed_.notify_all();
  if (Terminal(state) || state == JobState::kQueued) {
    // Only the document's current job records it: a superseded one would overwrite the record
    // of a newer upload under the same id.
    const auto record = [&] {
      const bool stored = store_.PutJob(snap.tenant, snap.document_id, ToJson(snap).dump()).ok();
      if (Terminal(state) && stored) job->recorded = true;
    };
    if (!document_locked) {
      WriteIfOwner(job, record);
    } else if (Owns(job)) {
      record();
    }
  }
}

void Indexer::WorkerLoop() {
  for (;;) {
    std::shared_ptr<Job> job;
    {
      std::unique_lock<std::mutex> lock(mu_);
      work_.wait(lock, [&] { return stopping_ || (!queue_.empty() && !draining_); });
      if (stopping_) return;
      job = queue_.front();
      queue_.pop_front();
      job->heartbeat = std::chrono::steady_clock::now();
    }
    metrics_.SetIndexQueueDepth(queue_depth());
    // An exception from a library the job uses (filesystem, JSON, an allocation) fails this job,
    // not the server: uncaught on a worker thread it would terminate the process.
    try {
      RunJob(job);
    } catch (const std::exception& e) {
      FailQuietly(job, std::string("index worker: ") + e.what());
    } catch (...) {
      FailQuietly(job, "index worker: unknown exception");
    }
  }
}

void Indexer::Watchdog() {
  std::unique_lock<std::mutex> lock(mu_);
  while (!stopping_) {
    changed_.wait_for(lock, std::chrono::seconds(1));
    const auto now = std::chrono::steady_clock::now();
    const int64_t now_ms = NowMs();
    for (auto it = jobs_.begin(); it != jobs_.end();) {
      const std::shared_ptr<Job>& job = it->second;
      const JobState s = job->snap.state;
      // A finished job whose record is stored leaves memory after the retention: the map holds
      // live and recent jobs only, and this scan stays short.
      if (Terminal(s) && job->recorded &&
          now_ms - job->snap.updated_unix_ms > options_.finished_retention_seconds * 1000) {
        it = jobs_.erase(it);
        continue;
      }
      ++it;
      if (s == JobState::kQueued || Terminal(s)) continue;
      if (std::chrono::duration<double>(now - job->heartbeat).count() > options_.stall_seconds) {
        job->cancel = true;
        job->snap.state = JobState::kFailed;
        job->snap.error_code = "DEADLINE_EXCEEDED";
        job->snap.error_message = "no progress for " + std::to_string(options_.stall_seconds) + " s";
        job->snap.version++;
        changed_.notify_all();
      }
    }
  }
}

void Indexer::Fail(const std::shared_ptr<Job>& job, const absl::Status& status,
                   const std::string& reason) {
  const std::string tenant = job->snap.tenant, doc = job->snap.document_id;
  Update(job, JobState::kFailed, -1, CodeName(status.code()), std::string(status.message()));
  metrics_.IndexJobFailed(reason);
  WriteIfOwner(job, [&] {
    auto meta = store_.GetDocument(tenant, doc);
    if (meta.ok()) {
      meta->state = kDocumentFailed;
      meta->error = std::string(status.message());
      // The upload goes only once the failure is stored: were the store failing too (a full
      // disk), the document stays INDEXING with its upload, and a restart indexes it again.
      if (!store_.PutDocument(*meta).ok()) return;
    }
    RemoveQuietly(UploadPath(tenant, doc));
  });
}

void Indexer::FailQuietly(const std::shared_ptr<Job>& job, const std::string& message) {
  try {
    Fail(job, absl::InternalError(message), "internal");
  } catch (...) {
    // The store itself throws: the job stays as it is; the watchdog fails it if it stalls.
  }
}

void Indexer::RunJob(const std::shared_ptr<Job>& job) {
  const std::string tenant = job->snap.tenant, doc = job->snap.document_id;
  // Every change to the document goes through WriteIfOwner: once the document is deleted or
  // re-uploaded, this job stops without writing (whoever took it over has cleaned up).
  auto fail = [&](const absl::Status& status, const std::string& reason) { Fail(job, status, reason); };
  auto stopped = [&] { return job->cancel.load(); };
  auto finish_cancelled = [&] {
    JobState s;
    std::string message;
    {
      std::lock_guard<std::mutex> lock(mu_);
      s = job->snap.state;
      message = job->snap.error_message;
    }
    if (s == JobState::kCancelled) {
      WriteIfOwner(job, [&] {
        DiscardDocument(tenant, doc);
      });
    } else if (s == JobState::kFailed) {
      fail(absl::DeadlineExceededError(message), "stalled");
    }
    // Otherwise the server is stopping, or the document was deleted (the job no longer owns it):
    // nothing to do. A stopping server's document stays INDEXING and resumes at restart.
  };

  Update(job, JobState::kTokenizing);
  std::ifstream in(UploadPath(tenant, doc), std::ios::binary);
  if (!in) {
    if (stopped()) return finish_cancelled();
    return fail(absl::DataLossError("the upload of " + doc + " is missing"), "upload_lost");
  }
  std::stringstream text;
  text << in.rdbuf();
  if (job->resumed) {
    // The file has lain on disk across a restart: index it only if it is still what was uploaded.
    if (auto stored = store_.GetDocument(tenant, doc);
        stored.ok() && !stored->sha256.empty() && Sha256Hex(text.str()) != stored->sha256) {
      return fail(absl::DataLossError("the stored upload of " + doc +
                                      " no longer matches its sha256; upload it again"),
                  "upload_corrupt");
    }
  }
  auto tokens = engine_.Tokenize(text.str());
  if (!tokens.ok()) return fail(tokens.status(), "tokenize");
  const auto spans = engine_.ChunkSpans(static_cast<int64_t>(tokens->size()));
  if (spans.empty()) {
    return fail(absl::InvalidArgumentError("the document has " + std::to_string(tokens->size()) +
                                           " tokens, too few for one context tree"),
                "too_short");
  }
  absl::StatusOr<DocumentMeta> meta = absl::UnknownError("not read");
  absl::Status put;
  if (!WriteIfOwner(job, [&] {
        meta = store_.GetDocument(tenant, doc);
        if (!meta.ok()) return;
        if (meta->model_fingerprint != engine_.fingerprint()) {
          // Resumed under another model (a restart with a changed --model): the chunks already
          // stored are that model's trees, which this one cannot read. Start over from the upload.
          if (meta->chunks_done > 0) {
            put = store_.DeleteDocument(tenant, doc);
            if (!put.ok()) return;
          }
          meta->chunks_done = 0;
          meta->model_fingerprint = engine_.fingerprint();
        }
        meta->num_tokens = static_cast<int64_t>(tokens->size());
        meta->num_chunks = static_cast<int64_t>(spans.size());
        put = store_.PutDocument(*meta);
      })) {
    return finish_cancelled();
  }
  if (!meta.ok()) return stopped() ? finish_cancelled() : fail(meta.status(), "store");
  if (!put.ok()) return fail(put, "store");
  {
    std::lock_guard<std::mutex> lock(mu_);
    job->snap.num_tokens = meta->num_tokens;
    job->snap.chunks_total = meta->num_chunks;
  }
  for (int64_t c = meta->chunks_done; c < meta->num_chunks; ++c) {
    if (stopped()) return finish_cancelled();
    Update(job, JobState::kCompressing, c);
    const std::vector<int64_t> chunk(tokens->begin() + spans[c].first, tokens->begin() + spans[c].second);
    auto records = engine_.EncodeChunk(chunk, c);
    if (!records.ok()) return fail(records.status(), "compress");
    const ChunkTerms terms = engine_.TermsOf(chunk);
    metrics_.AddCompressorTokens(static_cast<int64_t>(chunk.size()));
    if (stopped()) return finish_cancelled();
    Update(job, JobState::kPersisting, c);
    if (options_.testing_before_persist) options_.testing_before_persist(doc, c);
    absl::Status s;
    if (!WriteIfOwner(job, [&] { s = store_.PutChunk(tenant, doc, c, chunk, *records, terms); })) {
      return finish_cancelled();
    }
    if (!s.ok()) return stopped() ? finish_cancelled() : fail(s, "store");
  }
  if (stopped()) return finish_cancelled();
  if (options_.testing_before_ready) options_.testing_before_ready(doc);
  absl::Status ready;
  bool cancelled = false;
  if (!WriteIfOwner(job, [&] {
        // Under the document lock, which Cancel holds while it decides: a cancel either lands
        // before this check (and the document is deleted) or finds the job READY, never a
        // READY document after the client was told CANCELLED.
        if (stopped()) {
          cancelled = true;
          return;
        }
        ready = store_.MarkReady(tenant, doc);
        if (!ready.ok()) return;
        RemoveQuietly(UploadPath(tenant, doc));
        UpdateLocked(job, JobState::kReady, meta->num_chunks);
      })) {
    return finish_cancelled();
  }
  if (cancelled) return finish_cancelled();
  if (!ready.ok()) return fail(ready, "store");
}

}  // namespace sharedllm::service
