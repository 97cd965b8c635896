// TreeStore on an embedded RocksDB (the default deployment: one process, a local directory).
// Layout — column families, keys, values, why a crash cannot leave half a chunk — in
// docs/design/tree_store.md. Thread-safe: reads run on a RocksDB snapshot without locks; writes that
// read-modify-write a document's metadata hold a per-document lock (striped).
#pragma once

#include <array>
#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "store/storage.h"
#include "store/tree_store.h"

namespace rocksdb {
class ColumnFamilyHandle;
class DB;
class Env;
class WriteBatch;
}  // namespace rocksdb

namespace sharedllm {
namespace treestore {
class SnapshotView;
class WriteStopWatch;
}  // namespace treestore

struct RocksDbTreeStoreOptions {
  // Directory of the database, e.g. "/var/lib/sharedllm/trees". One process opens it at a time.
  std::string path;
  // Create the database and any missing column family on open; false fails on a missing database.
  bool create_if_missing = true;
  // One LRU block cache shared by all column families, MiB (e.g. 256). 0: RocksDB's default
  // per-family 8 MiB caches.
  int64_t block_cache_mb = 256;
  // fsync the write-ahead log on every write batch, so a chunk reported written survives a power
  // loss. false is faster and still crash-consistent for a process crash (tests, bulk loads).
  bool sync_writes = true;
  // Keep K/V values (KBs to MBs each, written once) in RocksDB blob files rather than in the LSM
  // tree, so compactions do not rewrite them.
  bool kv_blob_files = true;
  // The file system under the database (store/storage.h); null: the operating system's.
  std::shared_ptr<Storage> storage;
  // Called once, from the writing thread, when RocksDB has stopped taking writes after a storage
  // error it cannot resume from (a failed log sync, say): only a restart, which replays the
  // write-ahead log, recovers. Writes fail with UNAVAILABLE from then on; reads go on.
  std::function<void(const absl::Status&)> on_fatal_error;
};

class RocksDbTreeStore : public TreeStore {
 public:
  // Column families, in the order of their handles (docs/design/tree_store.md).
  enum Family { kDocuments = 0, kTokens, kVectors, kKv, kJobs, kTerms, kPostings, kNumFamilies };
  // "documents", "tokens", "vectors", "kv", "jobs", "terms", "postings"
  static const char* FamilyName(Family family);

  // Opens (or creates) the database. UNAVAILABLE when another process holds it.
  static absl::StatusOr<std::unique_ptr<RocksDbTreeStore>> Open(
      const RocksDbTreeStoreOptions& options);
  ~RocksDbTreeStore() override;  // flushes nothing extra: every batch is already in the WAL

  RocksDbTreeStore(const RocksDbTreeStore&) = delete;
  RocksDbTreeStore& operator=(const RocksDbTreeStore&) = delete;

  StoreMemory Memory() const override;
  absl::Status PutDocument(const DocumentMeta& meta) override;
  absl::StatusOr<DocumentMeta> GetDocument(const std::string& tenant,
                                           const std::string& document_id) const override;
  absl::StatusOr<DocumentPage> ListDocuments(const std::string& tenant,
                                             const std::string& collection_id,
                                             const std::string& page_token,
                                             int64_t page_size) const override;
  absl::Status DeleteDocument(const std::string& tenant, const std::string& document_id) override;
  absl::Status CheckFingerprint(const std::string& tenant, const std::string& document_id,
                                const std::string& expected_fingerprint) const override;

  absl::Status PutChunk(const std::string& tenant, const std::string& document_id,
                        int64_t chunk_index, const std::vector<int64_t>& tokens,
                        const std::vector<NodeRecord>& nodes, const ChunkTerms& terms) override;
  absl::Status MarkReady(const std::string& tenant, const std::string& document_id) override;

  absl::StatusOr<std::vector<NodeRecord>> LoadVectors(
      const std::string& tenant, const std::string& document_id) const override;
  absl::StatusOr<std::vector<NodeRecord>> LoadVectors(
      const std::string& tenant, const std::string& document_id,
      const std::vector<int64_t>& chunks) const override;
  absl::StatusOr<std::vector<NodeRecord>> LoadNodes(
      const std::string& tenant, const std::string& document_id,
      const std::vector<NodeRef>& refs) const override;
  absl::StatusOr<std::vector<int64_t>> LoadChunkTokens(const std::string& tenant,
                                                       const std::string& document_id,
                                                       int64_t chunk_index) const override;

  absl::StatusOr<TenantUsage> GetTenantUsage(const std::string& tenant) const override;
  absl::StatusOr<std::vector<TermPosting>> LoadPostings(const std::string& tenant,
                                                        const std::string& term,
                                                        const std::string& collection_id,
                                                        const std::string& document_id,
                                                        int64_t limit) const override;

  absl::Status PutJob(const std::string& tenant, const std::string& job_id,
                      const std::string& json) override;
  absl::StatusOr<std::string> GetJob(const std::string& tenant,
                                     const std::string& job_id) const override;
  absl::StatusOr<std::vector<JobRecord>> ListJobs(const std::string& tenant) const override;
  absl::Status DeleteJob(const std::string& tenant, const std::string& job_id) override;

 private:
  RocksDbTreeStore(const RocksDbTreeStoreOptions& options, std::unique_ptr<rocksdb::Env> env,
                   std::shared_ptr<treestore::WriteStopWatch> watch,
                   std::unique_ptr<rocksdb::DB> db, std::vector<rocksdb::ColumnFamilyHandle*> handles);
  std::mutex& DocumentLock(const std::string& tenant, const std::string& document_id);
  // Reads a document's metadata through `view`: NOT_FOUND if absent, DATA_LOSS if corrupt.
  absl::StatusOr<DocumentMeta> ReadMeta(const treestore::SnapshotView& view,
                                        const std::string& tenant,
                                        const std::string& document_id) const;
  // ReadMeta plus FAILED_PRECONDITION unless the document is READY.
  absl::StatusOr<DocumentMeta> ReadReadyMeta(const treestore::SnapshotView& view,
                                             const std::string& tenant,
                                             const std::string& document_id) const;
  absl::Status Write(rocksdb::WriteBatch* batch, const std::string& what);
  // Adds to `batch` the deletion of the postings of the document's chunks [from, ...), read from
  // their `terms` records through `view` (the terms records themselves are range-deleted by the
  // caller with the rest of the chunks).
  // Deletes the postings of chunks [from, to) of a document (found through its terms records)
  // filed under `*collection_id`, or under any collection where it is null.
  absl::Status DeletePostings(const treestore::SnapshotView& view, const std::string& tenant,
                              const std::string& document_id, const std::string* collection_id,
                              uint32_t from, uint32_t to, rocksdb::WriteBatch* batch) const;
  // Decodes one `vectors` record of chunk `chunk`.
  absl::StatusOr<NodeRecord> VectorRecord(absl::string_view key, absl::string_view value) const;

  RocksDbTreeStoreOptions options_;
  std::unique_ptr<rocksdb::Env> env_;  // over options_.storage; outlives db_
  std::shared_ptr<treestore::WriteStopWatch> watch_;  // RocksDB's background errors
  std::unique_ptr<rocksdb::DB> db_;
  std::mutex resume_mu_;               // one Resume() at a time
  bool fatal_reported_ = false;        // under resume_mu_
  std::vector<rocksdb::ColumnFamilyHandle*> handles_;  // indexed by Family; destroyed before db_
  std::array<std::mutex, 64> document_locks_;          // striped by hash of tenant | document
};

}  // namespace sharedllm
