#include "store/rocksdb_tree_store.h"

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <set>
#include <utility>

#include <rocksdb/cache.h>
#include <rocksdb/db.h>
#include <rocksdb/env.h>
#include <rocksdb/file_system.h>
#include <rocksdb/listener.h>
#include <rocksdb/options.h>
#include <rocksdb/slice.h>
#include <rocksdb/table.h>
#include <rocksdb/write_batch.h>
#include <nlohmann/json.hpp>

#include "absl/strings/escaping.h"
#include "absl/strings/str_cat.h"
#include "store/key_codec.h"
#include "store/rocksdb_view.h"
#include "store/value_codec.h"

namespace sharedllm {
namespace treestore {

// Follows RocksDB's background error: set when RocksDB stops taking writes, cleared when its
// recovery ends with no error left (by itself, for a full disk, or through Resume()).
class WriteStopWatch : public rocksdb::EventListener {
 public:
  const char* Name() const override { return "SharedLLMWriteStopWatch"; }
  void OnBackgroundError(rocksdb::BackgroundErrorReason, rocksdb::Status* error) override {
    if (error == nullptr || error->ok()) return;
    no_space_ = error->IsNoSpace();
    stopped_ = true;
  }
  void OnErrorRecoveryEnd(const rocksdb::BackgroundErrorRecoveryInfo& info) override {
    if (info.new_bg_error.ok()) stopped_ = false;
  }
  // Writes stopped for a full disk, not yet recovered.
  bool stopped_for_space() const { return stopped_ && no_space_; }

 private:
  std::atomic<bool> stopped_{false}, no_space_{false};
};

}  // namespace treestore

namespace {

using treestore::ChunkKey;
using treestore::DescribeKey;
using treestore::DocumentKey;
using treestore::FromRocks;
using treestore::JobKey;
using treestore::KeyReader;
using treestore::LayerKey;
using treestore::NodeKey;
using treestore::PostingKey;
using treestore::PrefixSuccessor;
using treestore::TenantPrefix;
using treestore::ToSlice;
using treestore::ValidateId;

#define TS_RETURN_IF_ERROR(expr)                          \
  do {                                                    \
    if (absl::Status _st = (expr); !_st.ok()) return _st; \
  } while (0)

constexpr int64_t kDefaultPageSize = 100;
constexpr int64_t kMaxPageSize = 1000;

// A decoder's DATA_LOSS, prefixed with the key it was reading.
absl::Status Corrupt(RocksDbTreeStore::Family family, absl::string_view key,
                     const absl::Status& s) {
  return absl::DataLossError(
      absl::StrCat(DescribeKey(RocksDbTreeStore::FamilyName(family), key), ": ", s.message()));
}

// The fields of a `postings` key after tenant and term (key_codec.h).
struct PostingKeyFields {
  absl::string_view collection, document;
  uint32_t chunk = 0;
};

absl::StatusOr<PostingKeyFields> ParsePostingKey(absl::string_view key) {
  KeyReader reader(key);
  reader.Str();
  reader.Str();
  PostingKeyFields f;
  f.collection = reader.Str();
  f.document = reader.Str();
  f.chunk = reader.U32();
  if (!reader.done()) return absl::DataLossError("malformed key");
  return f;
}

int64_t NowUnixMs() {
  return std::chrono::duration_cast<std::chrono::milliseconds>(
             std::chrono::system_clock::now().time_since_epoch())
      .count();
}

std::string Quoted(const std::string& id) { return absl::StrCat("\"", absl::CHexEscape(id), "\""); }

absl::Status ValidateIds(const std::string& tenant, const std::string& document_id) {
  TS_RETURN_IF_ERROR(ValidateId("tenant", tenant));
  return ValidateId("document", document_id);
}

bool IsState(const std::string& state) {
  return state == kDocumentIndexing || state == kDocumentReady || state == kDocumentFailed;
}

}  // namespace

const char* RocksDbTreeStore::FamilyName(Family family) {
  switch (family) {
    case kDocuments:
      return "documents";
    case kTokens:
      return "tokens";
    case kVectors:
      return "vectors";
    case kKv:
      return "kv";
    case kJobs:
      return "jobs";
    case kTerms:
      return "terms";
    case kPostings:
      return "postings";
    case kNumFamilies:
      break;
  }
  return "?";
}

absl::StatusOr<std::unique_ptr<RocksDbTreeStore>> RocksDbTreeStore::Open(
    const RocksDbTreeStoreOptions& options) {
  if (options.path.empty()) return absl::InvalidArgumentError("tree store path is empty");
  if (options.block_cache_mb < 0) {
    return absl::InvalidArgumentError("tree store block_cache_mb is negative");
  }
  rocksdb::DBOptions db_options;
  db_options.create_if_missing = options.create_if_missing;
  db_options.create_missing_column_families = options.create_if_missing;
  // A family written rarely (documents, jobs) would otherwise pin every write-ahead log since its
  // last flush: a 1 MB upload left 1.7 GB of logs whose K/V was long in blob files. Past this
  // total, RocksDB flushes the families that hold the oldest log, and the log goes.
  db_options.max_total_wal_size = uint64_t{64} << 20;
  auto watch = std::make_shared<treestore::WriteStopWatch>();
  db_options.listeners.push_back(watch);
  std::unique_ptr<rocksdb::Env> env;
  if (options.storage) {
    env = rocksdb::NewCompositeEnv(options.storage->file_system());
    db_options.env = env.get();
  }

  rocksdb::BlockBasedTableOptions table;
  if (options.block_cache_mb > 0) {
    table.block_cache = rocksdb::NewLRUCache(static_cast<size_t>(options.block_cache_mb) << 20);
  }
  // One factory, hence one cache, for every column family.
  std::shared_ptr<rocksdb::TableFactory> factory(rocksdb::NewBlockBasedTableFactory(table));

  std::vector<rocksdb::ColumnFamilyDescriptor> families;
  rocksdb::ColumnFamilyOptions base;
  base.table_factory = factory;
  // RocksDB requires the default family to be opened; the store keeps nothing in it.
  families.emplace_back(rocksdb::kDefaultColumnFamilyName, base);
  for (int f = 0; f < kNumFamilies; ++f) {
    rocksdb::ColumnFamilyOptions cf = base;
    if (f == kKv && options.kv_blob_files) {
      cf.enable_blob_files = true;
      cf.min_blob_size = 4096;
      cf.enable_blob_garbage_collection = true;            // reclaims deleted documents' blobs
      cf.blob_compression_type = rocksdb::kZSTD;
    }
    if (f == kKv) cf.compression = rocksdb::kZSTD;
    families.emplace_back(FamilyName(static_cast<Family>(f)), cf);
  }

  rocksdb::DB* raw = nullptr;
  std::vector<rocksdb::ColumnFamilyHandle*> handles;
  const rocksdb::Status s = rocksdb::DB::Open(db_options, options.path, families, &handles, &raw);
  std::unique_ptr<rocksdb::DB> db(raw);  // owns the DB from here on, on every path
  if (!s.ok()) return FromRocks(s, absl::StrCat("open tree store at ", options.path));
  if (handles.size() != families.size()) {
    for (auto* h : handles) db->DestroyColumnFamilyHandle(h).PermitUncheckedError();
    return absl::InternalError("RocksDB opened an unexpected number of column families");
  }
  // The default family's handle is not needed.
  if (absl::Status st =
          FromRocks(db->DestroyColumnFamilyHandle(handles[0]), "close default family");
      !st.ok()) {
    for (size_t i = 1; i < handles.size(); ++i) {
      db->DestroyColumnFamilyHandle(handles[i]).PermitUncheckedError();
    }
    return st;
  }
  handles.erase(handles.begin());
  return std::unique_ptr<RocksDbTreeStore>(
      new RocksDbTreeStore(options, std::move(env), std::move(watch), std::move(db), std::move(handles)));
}

RocksDbTreeStore::RocksDbTreeStore(const RocksDbTreeStoreOptions& options,
                                   std::unique_ptr<rocksdb::Env> env,
                                   std::shared_ptr<treestore::WriteStopWatch> watch,
                                   std::unique_ptr<rocksdb::DB> db,
                                   std::vector<rocksdb::ColumnFamilyHandle*> handles)
    : options_(options),
      env_(std::move(env)),
      watch_(std::move(watch)),
      db_(std::move(db)),
      handles_(std::move(handles)) {}

RocksDbTreeStore::~RocksDbTreeStore() {
  for (auto* h : handles_) {
    const rocksdb::Status s = db_->DestroyColumnFamilyHandle(h);
    if (!s.ok())
      std::fprintf(stderr, "tree store: closing a column family: %s\n", s.ToString().c_str());
  }
  const rocksdb::Status s = db_->Close();
  if (!s.ok()) std::fprintf(stderr, "tree store: close: %s\n", s.ToString().c_str());
}

std::mutex& RocksDbTreeStore::DocumentLock(const std::string& tenant,
                                           const std::string& document_id) {
  return document_locks_[std::hash<std::string>()(DocumentKey(tenant, document_id)) %
                         document_locks_.size()];
}

absl::Status RocksDbTreeStore::Write(rocksdb::WriteBatch* batch, const std::string& what) {
  rocksdb::WriteOptions write_options;
  write_options.sync = options_.sync_writes;
  if (watch_->stopped_for_space()) {
    // RocksDB has stopped writing for a full disk and resumes by itself once there is room. Until
    // then the write is refused here: sent on, it could reach a write-ahead log whose last write
    // failed, on which Debian's RocksDB 7.8 (built with its assertions) aborts the process.
    return absl::ResourceExhaustedError(absl::StrCat(
        what, ": the disk is full; the tree store takes writes again once there is room"));
  }
  rocksdb::Status s = db_->Write(write_options, batch);
  if (s.IsIOError() && !s.IsNoSpace()) {
    // After a failed log write or sync, or a failed flush, RocksDB takes no more writes (its
    // background error). Some such errors it can resume from; then the batch is written once
    // more (a failed batch was not applied, and were it in the log after all, replaying it twice
    // gives the same state). Most it cannot (a sync that failed leaves the page cache in an
    // unknown state; RocksDB calls these fatal, as PostgreSQL panics on a failed fsync): then
    // only a restart, which replays the log, recovers, and the owner is told once. A full disk is
    // not resumed here: RocksDB resumes by itself once there is room, and until then writes fail
    // with RESOURCE_EXHAUSTED.
    std::lock_guard<std::mutex> lock(resume_mu_);
    const rocksdb::Status resumed = db_->Resume();
    if (resumed.ok()) {
      s = db_->Write(write_options, batch);
    } else if (!fatal_reported_) {
      fatal_reported_ = true;
      const absl::Status fatal = FromRocks(s, absl::StrCat("tree store: ", what));
      std::fprintf(stderr, "%s; RocksDB cannot resume writes (%s): a restart recovers\n",
                   fatal.ToString().c_str(), resumed.ToString().c_str());
      if (options_.on_fatal_error) options_.on_fatal_error(fatal);
    }
  }
  return FromRocks(s, what);
}

StoreMemory RocksDbTreeStore::Memory() const {
  StoreMemory m;
  uint64_t v = 0;
  if (db_->GetAggregatedIntProperty(rocksdb::DB::Properties::kCurSizeAllMemTables, &v)) {
    m.memtables = static_cast<int64_t>(v);
  }
  // One cache serves every family: read it through one of them, not summed.
  if (db_->GetIntProperty(handles_[0], rocksdb::DB::Properties::kBlockCacheUsage, &v)) {
    m.block_cache = static_cast<int64_t>(v);
  }
  if (db_->GetAggregatedIntProperty(rocksdb::DB::Properties::kEstimateTableReadersMem, &v)) {
    m.table_readers = static_cast<int64_t>(v);
  }
  return m;
}

absl::StatusOr<DocumentMeta> RocksDbTreeStore::ReadMeta(const treestore::SnapshotView& view,
                                                        const std::string& tenant,
                                                        const std::string& document_id) const {
  const std::string key = DocumentKey(tenant, document_id);
  std::string value;
  const absl::Status s = view.Get(kDocuments, key, &value);
  if (absl::IsNotFound(s)) {
    return absl::NotFoundError(absl::StrCat("document ", Quoted(document_id), " not found"));
  }
  TS_RETURN_IF_ERROR(s);
  absl::StatusOr<DocumentMeta> meta = treestore::DecodeDocumentMeta(value);
  if (!meta.ok()) return Corrupt(kDocuments, key, meta.status());
  // The key is authoritative for who owns the record.
  meta->tenant = tenant;
  meta->document_id = document_id;
  return meta;
}

absl::StatusOr<DocumentMeta> RocksDbTreeStore::ReadReadyMeta(const treestore::SnapshotView& view,
                                                             const std::string& tenant,
                                                             const std::string& document_id) const {
  absl::StatusOr<DocumentMeta> meta = ReadMeta(view, tenant, document_id);
  if (meta.ok() && meta->state != kDocumentReady) {
    return absl::FailedPreconditionError(
        absl::StrCat("document ", Quoted(document_id), " is ", meta->state, " (", meta->chunks_done,
                     " of ", meta->num_chunks, " chunks stored), not READY"));
  }
  return meta;
}

// Documents -----------------------------------------------------------------------------------

absl::Status RocksDbTreeStore::PutDocument(const DocumentMeta& meta) {
  TS_RETURN_IF_ERROR(ValidateIds(meta.tenant, meta.document_id));
  if (!IsState(meta.state)) {
    return absl::InvalidArgumentError(absl::StrCat("unknown document state \"", meta.state, "\""));
  }
  if (meta.num_chunks < 0 || meta.num_chunks > treestore::kMaxChunks) {
    return absl::InvalidArgumentError(absl::StrCat("num_chunks ", meta.num_chunks));
  }
  if (meta.chunks_done < 0 || meta.chunks_done > meta.num_chunks) {
    return absl::InvalidArgumentError(
        absl::StrCat("chunks_done ", meta.chunks_done, " is outside 0..", meta.num_chunks));
  }
  if (meta.size_bytes < 0 || meta.num_tokens < 0) {
    return absl::InvalidArgumentError("negative document size");
  }
  const std::string key = DocumentKey(meta.tenant, meta.document_id);

  std::lock_guard<std::mutex> lock(DocumentLock(meta.tenant, meta.document_id));
  treestore::SnapshotView view(db_.get(), handles_);
  absl::StatusOr<DocumentMeta> stored = ReadMeta(view, meta.tenant, meta.document_id);
  if (!stored.ok() && !absl::IsNotFound(stored.status())) return stored.status();
  const int64_t stored_done = stored.ok() ? stored->chunks_done : 0;
  if (meta.chunks_done > stored_done) {
    return absl::FailedPreconditionError(absl::StrCat(
        "document ", Quoted(meta.document_id), ": chunks_done ", meta.chunks_done,
        " is ahead of the ", stored_done, " chunks stored; only PutChunk advances it"));
  }
  if (meta.state == kDocumentReady &&
      !(stored.ok() && stored->state == kDocumentReady && stored->num_chunks == meta.num_chunks &&
        meta.chunks_done == meta.num_chunks)) {
    return absl::FailedPreconditionError(absl::StrCat("document ", Quoted(meta.document_id),
                                                      ": only MarkReady makes a document READY"));
  }

  rocksdb::WriteBatch batch;
  if (meta.chunks_done < stored_done) {
    // A restarted job: drop the chunks it will rewrite, so that tree data exists for exactly the
    // chunks [0, chunks_done) (invariant I1).
    const std::string begin =
        ChunkKey(meta.tenant, meta.document_id, static_cast<uint32_t>(meta.chunks_done));
    const std::string end = PrefixSuccessor(key);
    TS_RETURN_IF_ERROR(DeletePostings(view, meta.tenant, meta.document_id, &meta.collection_id,
                                      static_cast<uint32_t>(meta.chunks_done),
                                      static_cast<uint32_t>(stored_done), &batch));
    for (Family f : {kTokens, kVectors, kKv, kTerms}) {
      TS_RETURN_IF_ERROR(
          FromRocks(batch.DeleteRange(handles_[f], ToSlice(begin), ToSlice(end)), "batch"));
    }
  }
  TS_RETURN_IF_ERROR(FromRocks(
      batch.Put(handles_[kDocuments], ToSlice(key), treestore::EncodeDocumentMeta(meta)), "batch"));
  return Write(&batch, absl::StrCat("write document ", Quoted(meta.document_id)));
}

absl::StatusOr<DocumentMeta> RocksDbTreeStore::GetDocument(const std::string& tenant,
                                                           const std::string& document_id) const {
  TS_RETURN_IF_ERROR(ValidateIds(tenant, document_id));
  treestore::SnapshotView view(db_.get(), handles_);
  return ReadMeta(view, tenant, document_id);
}

absl::StatusOr<TenantUsage> RocksDbTreeStore::GetTenantUsage(const std::string& tenant) const {
  TS_RETURN_IF_ERROR(ValidateId("tenant", tenant));
  const std::string prefix = TenantPrefix(tenant);
  treestore::SnapshotView view(db_.get(), handles_);
  TenantUsage usage;
  TS_RETURN_IF_ERROR(view.Scan(kDocuments, prefix, prefix,
                               [&](absl::string_view, absl::string_view value, bool*) -> absl::Status {
                                 ++usage.documents;
                                 if (auto meta = treestore::DecodeDocumentMeta(value); meta.ok()) {
                                   usage.bytes += meta->size_bytes;
                                 }
                                 return absl::OkStatus();
                               }));
  return usage;
}

absl::StatusOr<DocumentPage> RocksDbTreeStore::ListDocuments(const std::string& tenant,
                                                             const std::string& collection_id,
                                                             const std::string& page_token,
                                                             int64_t page_size) const {
  TS_RETURN_IF_ERROR(ValidateId("tenant", tenant));
  if (page_size <= 0) page_size = kDefaultPageSize;
  page_size = std::min(page_size, kMaxPageSize);
  std::string after;  // the last document id of the previous page
  if (!page_token.empty()) {
    absl::StatusOr<std::string> decoded = treestore::DecodePageToken(page_token);
    if (!decoded.ok()) return decoded.status();
    after = *std::move(decoded);
    TS_RETURN_IF_ERROR(ValidateId("page token document", after));
  }
  const std::string prefix = TenantPrefix(tenant);
  const std::string start = after.empty() ? prefix : DocumentKey(tenant, after);

  treestore::SnapshotView view(db_.get(), handles_);
  DocumentPage page;
  bool full = false;
  TS_RETURN_IF_ERROR(view.Scan(
      kDocuments, prefix, start,
      [&](absl::string_view key, absl::string_view value, bool* stop) -> absl::Status {
        if (full) {  // a key remains after a full page: there is a next page
          page.next_page_token = treestore::EncodePageToken(page.documents.back().document_id);
          *stop = true;
          return absl::OkStatus();
        }
        KeyReader reader(key);
        reader.Str();
        const absl::string_view id = reader.Str();
        if (!reader.done()) return Corrupt(kDocuments, key, absl::DataLossError("malformed key"));
        if (!after.empty() && id == after) return absl::OkStatus();
        absl::StatusOr<DocumentMeta> meta = treestore::DecodeDocumentMeta(value);
        if (!meta.ok()) {
          // One damaged record must not hide the tenant's other documents: it is listed as
          // FAILED with the reason (its collection is unknown, so only in an unfiltered list),
          // and can be deleted like any other.
          if (!collection_id.empty()) return absl::OkStatus();
          DocumentMeta damaged;
          damaged.state = kDocumentFailed;
          damaged.error = std::string(Corrupt(kDocuments, key, meta.status()).message()) +
                          "; delete the document and upload it again";
          meta = std::move(damaged);
        }
        if (!collection_id.empty() && meta->collection_id != collection_id) {
          return absl::OkStatus();
        }
        meta->tenant = tenant;
        meta->document_id = std::string(id);
        page.documents.push_back(*std::move(meta));
        full = static_cast<int64_t>(page.documents.size()) == page_size;
        return absl::OkStatus();
      }));
  return page;
}

absl::Status RocksDbTreeStore::DeleteDocument(const std::string& tenant,
                                              const std::string& document_id) {
  TS_RETURN_IF_ERROR(ValidateIds(tenant, document_id));
  const std::string begin = DocumentKey(tenant, document_id);
  // Non-empty: the key starts with a u16 length <= kMaxIdBytes, never 0xff 0xff.
  const std::string end = PrefixSuccessor(begin);

  std::lock_guard<std::mutex> lock(DocumentLock(tenant, document_id));
  rocksdb::WriteBatch batch;
  {
    // Existence only, without decoding: a document with corrupt metadata can still be deleted.
    treestore::SnapshotView view(db_.get(), handles_);
    std::string value;
    const absl::Status got = view.Get(kDocuments, begin, &value);
    if (absl::IsNotFound(got)) {
      return absl::NotFoundError(absl::StrCat("document ", Quoted(document_id), " not found"));
    }
    TS_RETURN_IF_ERROR(got);
    // Postings are keyed by term, outside the document's range: found through its terms records,
    // under its collection (or, where the metadata does not decode, under any collection).
    absl::StatusOr<DocumentMeta> meta = treestore::DecodeDocumentMeta(value);
    TS_RETURN_IF_ERROR(DeletePostings(view, tenant, document_id,
                                      meta.ok() ? &meta->collection_id : nullptr, 0, UINT32_MAX,
                                      &batch));
  }
  // The length-prefixed document id makes [begin, end) exactly this document's keys: "doc1"
  // encodes as 00 04 'd' 'o' 'c' '1', outside the range of "doc" (00 03 'd' 'o' 'c' ...).
  for (Family f : {kDocuments, kTokens, kVectors, kKv, kTerms}) {
    TS_RETURN_IF_ERROR(
        FromRocks(batch.DeleteRange(handles_[f], ToSlice(begin), ToSlice(end)), "batch"));
  }
  return Write(&batch, absl::StrCat("delete document ", Quoted(document_id)));
}

absl::Status CheckDocumentFingerprint(const DocumentMeta& meta, const std::string& expected_fingerprint) {
  if (meta.model_fingerprint == expected_fingerprint) return absl::OkStatus();
  return absl::FailedPreconditionError(
      absl::StrCat("document ", Quoted(meta.document_id), " was built by model fingerprint \"",
                   meta.model_fingerprint, "\" but this server's model is \"",
                   expected_fingerprint, "\"; re-index the document"));
}

absl::Status RocksDbTreeStore::CheckFingerprint(const std::string& tenant,
                                                const std::string& document_id,
                                                const std::string& expected_fingerprint) const {
  absl::StatusOr<DocumentMeta> meta = GetDocument(tenant, document_id);
  if (!meta.ok()) return meta.status();
  return CheckDocumentFingerprint(*meta, expected_fingerprint);
}

// Ingestion -----------------------------------------------------------------------------------

absl::Status RocksDbTreeStore::PutChunk(const std::string& tenant, const std::string& document_id,
                                        int64_t chunk_index, const std::vector<int64_t>& tokens,
                                        const std::vector<NodeRecord>& nodes,
                                        const ChunkTerms& terms) {
  TS_RETURN_IF_ERROR(ValidateIds(tenant, document_id));
  TS_RETURN_IF_ERROR(treestore::ValidateChunkTerms(terms));
  if (chunk_index < 0 || chunk_index >= treestore::kMaxChunks) {
    return absl::InvalidArgumentError(absl::StrCat("chunk index ", chunk_index));
  }
  if (nodes.empty()) return absl::InvalidArgumentError("a chunk needs at least one node");
  const auto chunk = static_cast<uint32_t>(chunk_index);

  // Validate and encode outside the lock: checksumming megabytes of K/V takes a while.
  std::vector<std::pair<std::string, std::string>> vectors, kv;
  std::set<uint16_t> seen;
  for (const NodeRecord& node : nodes) {
    absl::StatusOr<uint16_t> flat = treestore::ValidateNodeRecord(node, chunk_index, tokens.size());
    if (!flat.ok()) return flat.status();
    if (!seen.insert(*flat).second) {
      return absl::InvalidArgumentError(
          absl::StrCat("node (level ", node.level, ", index ", node.index, ") is passed twice"));
    }
    treestore::NodeVectorValue value{node.begin, node.end, static_cast<uint16_t>(node.k.size()),
                                     node.search};
    vectors.emplace_back(NodeKey(tenant, document_id, chunk, *flat),
                         treestore::EncodeNodeVector(value));
    for (size_t l = 0; l < node.k.size(); ++l) {
      kv.emplace_back(LayerKey(tenant, document_id, chunk, *flat, static_cast<uint16_t>(l)),
                      treestore::EncodeLayerKv(node.k[l], node.v[l],
                                               l < node.k_scale.size() ? &node.k_scale[l] : nullptr,
                                               l < node.v_scale.size() ? &node.v_scale[l] : nullptr));
    }
  }
  const std::string tokens_key = ChunkKey(tenant, document_id, chunk);
  const std::string tokens_value = treestore::EncodeTokens(tokens);
  const std::string meta_key = DocumentKey(tenant, document_id);
  uint32_t length = 0;  // the chunk's words
  for (const auto& t : terms) length += static_cast<uint32_t>(t.second);

  std::lock_guard<std::mutex> lock(DocumentLock(tenant, document_id));
  rocksdb::WriteBatch batch;
  absl::StatusOr<DocumentMeta> meta;
  {
    treestore::SnapshotView view(db_.get(), handles_);
    meta = ReadMeta(view, tenant, document_id);
    if (meta.ok() && chunk_index < meta->chunks_done) {
      // A rewrite: the old write's postings go first (its terms may differ).
      TS_RETURN_IF_ERROR(
          DeletePostings(view, tenant, document_id, &meta->collection_id, chunk, chunk + 1, &batch));
    }
  }
  if (!meta.ok()) return meta.status();
  if (meta->state != kDocumentIndexing) {
    return absl::FailedPreconditionError(
        absl::StrCat("document ", Quoted(document_id), " is ", meta->state, ", not INDEXING"));
  }
  if (chunk_index >= meta->num_chunks) {
    return absl::OutOfRangeError(absl::StrCat("chunk ", chunk_index, " of document ",
                                              Quoted(document_id), " with ", meta->num_chunks,
                                              " chunks"));
  }
  if (chunk_index > meta->chunks_done) {
    return absl::FailedPreconditionError(absl::StrCat(
        "document ", Quoted(document_id), ": chunk ", chunk_index,
        " written out of order; chunks are written in order and the next is ", meta->chunks_done));
  }

  if (chunk_index < meta->chunks_done) {
    // A rewrite (a retried write): clear the chunk first so no node of the old write lingers.
    // Within a batch the later puts win over this earlier range deletion.
    const std::string end = PrefixSuccessor(tokens_key);
    for (Family f : {kTokens, kVectors, kKv, kTerms}) {
      TS_RETURN_IF_ERROR(
          FromRocks(batch.DeleteRange(handles_[f], ToSlice(tokens_key), ToSlice(end)), "batch"));
    }
  }
  TS_RETURN_IF_ERROR(
      FromRocks(batch.Put(handles_[kTokens], ToSlice(tokens_key), ToSlice(tokens_value)), "batch"));
  for (const auto& [key, value] : vectors) {
    TS_RETURN_IF_ERROR(
        FromRocks(batch.Put(handles_[kVectors], ToSlice(key), ToSlice(value)), "batch"));
  }
  for (const auto& [key, value] : kv) {
    TS_RETURN_IF_ERROR(FromRocks(batch.Put(handles_[kKv], ToSlice(key), ToSlice(value)), "batch"));
  }
  TS_RETURN_IF_ERROR(FromRocks(
      batch.Put(handles_[kTerms], ToSlice(tokens_key), treestore::EncodeChunkTerms(terms)), "batch"));
  for (const auto& [term, count] : terms) {
    TS_RETURN_IF_ERROR(FromRocks(
        batch.Put(handles_[kPostings],
                  ToSlice(PostingKey(tenant, term, meta->collection_id, document_id, chunk)),
                  treestore::EncodePosting({static_cast<uint16_t>(count), length})),
        "batch"));
  }
  meta->chunks_done = std::max(meta->chunks_done, chunk_index + 1);
  meta->updated_unix_ms = NowUnixMs();
  TS_RETURN_IF_ERROR(FromRocks(
      batch.Put(handles_[kDocuments], ToSlice(meta_key), treestore::EncodeDocumentMeta(*meta)),
      "batch"));
  return Write(&batch,
               absl::StrCat("write chunk ", chunk_index, " of document ", Quoted(document_id)));
}

absl::Status RocksDbTreeStore::MarkReady(const std::string& tenant,
                                         const std::string& document_id) {
  TS_RETURN_IF_ERROR(ValidateIds(tenant, document_id));
  std::lock_guard<std::mutex> lock(DocumentLock(tenant, document_id));
  absl::StatusOr<DocumentMeta> meta;
  {
    treestore::SnapshotView view(db_.get(), handles_);
    meta = ReadMeta(view, tenant, document_id);
  }
  if (!meta.ok()) return meta.status();
  if (meta->state == kDocumentReady) return absl::OkStatus();
  if (meta->state != kDocumentIndexing) {
    return absl::FailedPreconditionError(
        absl::StrCat("document ", Quoted(document_id), " is ", meta->state, ", not INDEXING"));
  }
  if (meta->chunks_done != meta->num_chunks) {
    return absl::FailedPreconditionError(absl::StrCat("document ", Quoted(document_id), " has ",
                                                      meta->chunks_done, " of ", meta->num_chunks,
                                                      " chunks stored; it cannot be READY yet"));
  }
  meta->state = kDocumentReady;
  meta->error.clear();
  meta->updated_unix_ms = NowUnixMs();
  rocksdb::WriteBatch batch;
  TS_RETURN_IF_ERROR(
      FromRocks(batch.Put(handles_[kDocuments], ToSlice(DocumentKey(tenant, document_id)),
                          treestore::EncodeDocumentMeta(*meta)),
                "batch"));
  return Write(&batch, absl::StrCat("mark document ", Quoted(document_id), " READY"));
}

// Tree reads ----------------------------------------------------------------------------------

absl::StatusOr<NodeRecord> RocksDbTreeStore::VectorRecord(absl::string_view key,
                                                          absl::string_view value) const {
  KeyReader reader(key);
  reader.Str();
  reader.Str();
  NodeRecord node;
  node.chunk = reader.U32();
  const uint16_t flat = reader.U16();
  if (!reader.done()) return Corrupt(kVectors, key, absl::DataLossError("malformed key"));
  absl::StatusOr<treestore::NodeVectorValue> decoded = treestore::DecodeNodeVector(value);
  if (!decoded.ok()) return Corrupt(kVectors, key, decoded.status());
  treestore::LevelAndIndex(flat, &node.level, &node.index);
  node.begin = decoded->begin;
  node.end = decoded->end;
  node.search = std::move(decoded->search);
  return node;
}

absl::StatusOr<std::vector<NodeRecord>> RocksDbTreeStore::LoadVectors(
    const std::string& tenant, const std::string& document_id) const {
  TS_RETURN_IF_ERROR(ValidateIds(tenant, document_id));
  treestore::SnapshotView view(db_.get(), handles_);
  absl::StatusOr<DocumentMeta> meta = ReadReadyMeta(view, tenant, document_id);
  if (!meta.ok()) return meta.status();

  std::vector<NodeRecord> nodes;
  int64_t last_chunk = -1;
  const std::string prefix = DocumentKey(tenant, document_id);
  TS_RETURN_IF_ERROR(view.Scan(
      kVectors, prefix, prefix,
      [&](absl::string_view key, absl::string_view value, bool*) -> absl::Status {
        absl::StatusOr<NodeRecord> node = VectorRecord(key, value);
        if (!node.ok()) return node.status();
        // Invariant I1: a READY document has nodes for exactly the chunks 0..num_chunks-1.
        if (node->chunk != last_chunk) {
          if (node->chunk != last_chunk + 1 || node->chunk >= meta->num_chunks) {
            return Corrupt(kVectors, key,
                           absl::DataLossError(absl::StrCat("expected chunk ", last_chunk + 1,
                                                            " of ", meta->num_chunks)));
          }
          last_chunk = node->chunk;
        }
        nodes.push_back(*std::move(node));
        return absl::OkStatus();
      }));
  if (last_chunk + 1 != meta->num_chunks) {
    return absl::DataLossError(absl::StrCat("document ", Quoted(document_id), " is READY with ",
                                            meta->num_chunks, " chunks but has nodes for ",
                                            last_chunk + 1));
  }
  return nodes;
}

absl::StatusOr<std::vector<NodeRecord>> RocksDbTreeStore::LoadVectors(
    const std::string& tenant, const std::string& document_id,
    const std::vector<int64_t>& chunks) const {
  TS_RETURN_IF_ERROR(ValidateIds(tenant, document_id));
  treestore::SnapshotView view(db_.get(), handles_);
  absl::StatusOr<DocumentMeta> meta = ReadReadyMeta(view, tenant, document_id);
  if (!meta.ok()) return meta.status();
  std::vector<NodeRecord> nodes;
  for (size_t i = 0; i < chunks.size(); ++i) {
    const int64_t c = chunks[i];
    if (c < 0 || c >= meta->num_chunks) {
      return absl::OutOfRangeError(absl::StrCat("chunk ", c, " of document ", Quoted(document_id),
                                                " with ", meta->num_chunks, " chunks"));
    }
    if (i > 0 && c <= chunks[i - 1]) {
      return absl::InvalidArgumentError("chunks to load must be ascending");
    }
    const std::string prefix = ChunkKey(tenant, document_id, static_cast<uint32_t>(c));
    const size_t before = nodes.size();
    TS_RETURN_IF_ERROR(view.Scan(
        kVectors, prefix, prefix,
        [&](absl::string_view key, absl::string_view value, bool*) -> absl::Status {
          absl::StatusOr<NodeRecord> node = VectorRecord(key, value);
          if (!node.ok()) return node.status();
          nodes.push_back(*std::move(node));
          return absl::OkStatus();
        }));
    // Invariant I1: every chunk of a READY document has its nodes.
    if (nodes.size() == before) {
      return Corrupt(kVectors, prefix, absl::DataLossError("the chunk of a READY document has no nodes"));
    }
  }
  return nodes;
}

absl::StatusOr<std::vector<NodeRecord>> RocksDbTreeStore::LoadNodes(
    const std::string& tenant, const std::string& document_id,
    const std::vector<NodeRef>& refs) const {
  TS_RETURN_IF_ERROR(ValidateIds(tenant, document_id));
  treestore::SnapshotView view(db_.get(), handles_);
  absl::StatusOr<DocumentMeta> meta = ReadReadyMeta(view, tenant, document_id);
  if (!meta.ok()) return meta.status();

  std::vector<NodeRecord> nodes;
  nodes.reserve(refs.size());
  for (const NodeRef& ref : refs) {
    if (ref.chunk < 0 || ref.chunk >= meta->num_chunks) {
      return absl::OutOfRangeError(absl::StrCat("chunk ", ref.chunk, " of document ",
                                                Quoted(document_id), " with ", meta->num_chunks,
                                                " chunks"));
    }
    absl::StatusOr<uint16_t> flat = treestore::FlatNodeIndex(ref.level, ref.index);
    if (!flat.ok()) return flat.status();
    const auto chunk = static_cast<uint32_t>(ref.chunk);
    const std::string node_key = NodeKey(tenant, document_id, chunk, *flat);

    std::string value;
    const absl::Status got = view.Get(kVectors, node_key, &value);
    if (absl::IsNotFound(got)) {
      return absl::NotFoundError(absl::StrCat("document ", Quoted(document_id),
                                              " has no node (chunk ", ref.chunk, ", level ",
                                              ref.level, ", index ", ref.index, ")"));
    }
    TS_RETURN_IF_ERROR(got);
    absl::StatusOr<treestore::NodeVectorValue> decoded = treestore::DecodeNodeVector(value);
    if (!decoded.ok()) return Corrupt(kVectors, node_key, decoded.status());

    NodeRecord node;
    node.chunk = ref.chunk;
    node.level = ref.level;
    node.index = ref.index;
    node.begin = decoded->begin;
    node.end = decoded->end;
    node.search = std::move(decoded->search);
    node.k.resize(decoded->num_layers);
    node.v.resize(decoded->num_layers);
    std::vector<TensorBlob> k_scale(decoded->num_layers), v_scale(decoded->num_layers);
    // The node's layers are the keys node_key | u16 layer, 0..num_layers-1, contiguous.
    uint16_t layer = 0;
    TS_RETURN_IF_ERROR(view.Scan(
        kKv, node_key, node_key,
        [&](absl::string_view key, absl::string_view kv_value, bool*) -> absl::Status {
          if (layer >= decoded->num_layers ||
              key != LayerKey(tenant, document_id, chunk, *flat, layer)) {
            return Corrupt(kKv, key,
                           absl::DataLossError(absl::StrCat("expected layer ", layer, " of ",
                                                            decoded->num_layers)));
          }
          absl::Status s = treestore::DecodeLayerKv(kv_value, &node.k[layer], &node.v[layer],
                                                    &k_scale[layer], &v_scale[layer]);
          if (!s.ok()) return Corrupt(kKv, key, s);
          ++layer;
          return absl::OkStatus();
        }));
    if (layer != decoded->num_layers) {
      return Corrupt(kKv, LayerKey(tenant, document_id, chunk, *flat, layer),
                     absl::DataLossError(
                         absl::StrCat("missing: the node has ", decoded->num_layers, " layers")));
    }
    if (std::any_of(node.k.begin(), node.k.end(),
                    [](const TensorBlob& k) { return k.dtype == DType::kI8; })) {
      node.k_scale = std::move(k_scale);
      node.v_scale = std::move(v_scale);
    }
    nodes.push_back(std::move(node));
  }
  return nodes;
}

absl::StatusOr<std::vector<int64_t>> RocksDbTreeStore::LoadChunkTokens(
    const std::string& tenant, const std::string& document_id, int64_t chunk_index) const {
  TS_RETURN_IF_ERROR(ValidateIds(tenant, document_id));
  treestore::SnapshotView view(db_.get(), handles_);
  absl::StatusOr<DocumentMeta> meta = ReadReadyMeta(view, tenant, document_id);
  if (!meta.ok()) return meta.status();
  if (chunk_index < 0 || chunk_index >= meta->num_chunks) {
    return absl::OutOfRangeError(absl::StrCat("chunk ", chunk_index, " of document ",
                                              Quoted(document_id), " with ", meta->num_chunks,
                                              " chunks"));
  }
  const std::string key = ChunkKey(tenant, document_id, static_cast<uint32_t>(chunk_index));
  std::string value;
  const absl::Status got = view.Get(kTokens, key, &value);
  // A READY document has every chunk's tokens (invariant I1): absence is loss, not a bad request.
  if (absl::IsNotFound(got)) return Corrupt(kTokens, key, absl::DataLossError("missing"));
  TS_RETURN_IF_ERROR(got);
  absl::StatusOr<std::vector<int64_t>> tokens = treestore::DecodeTokens(value);
  if (!tokens.ok()) return Corrupt(kTokens, key, tokens.status());
  return tokens;
}

// The retrieval index ------------------------------------------------------------------------

absl::Status RocksDbTreeStore::DeletePostings(const treestore::SnapshotView& view,
                                              const std::string& tenant,
                                              const std::string& document_id,
                                              const std::string* collection_id, uint32_t from,
                                              uint32_t to, rocksdb::WriteBatch* batch) const {
  const std::string prefix = DocumentKey(tenant, document_id);
  return view.Scan(
      kTerms, prefix, ChunkKey(tenant, document_id, from),
      [&](absl::string_view key, absl::string_view value, bool* stop) -> absl::Status {
        KeyReader reader(key);
        reader.Str();
        reader.Str();
        const uint32_t chunk = reader.U32();
        if (!reader.done()) return Corrupt(kTerms, key, absl::DataLossError("malformed key"));
        if (chunk >= to) {
          *stop = true;
          return absl::OkStatus();
        }
        absl::StatusOr<ChunkTerms> terms = treestore::DecodeChunkTerms(value);
        if (!terms.ok()) return Corrupt(kTerms, key, terms.status());
        for (const auto& t : *terms) {
          if (collection_id != nullptr) {
            TS_RETURN_IF_ERROR(FromRocks(
                batch->Delete(handles_[kPostings],
                              ToSlice(PostingKey(tenant, t.first, *collection_id, document_id, chunk))),
                "batch"));
            continue;
          }
          // The collection is unknown: this document's posting of the term under any collection.
          const std::string term_prefix = treestore::TermPrefix(tenant, t.first);
          TS_RETURN_IF_ERROR(view.Scan(
              kPostings, term_prefix, term_prefix,
              [&](absl::string_view pkey, absl::string_view, bool*) -> absl::Status {
                absl::StatusOr<PostingKeyFields> f = ParsePostingKey(pkey);
                if (!f.ok()) return Corrupt(kPostings, pkey, f.status());
                if (f->document == document_id && f->chunk == chunk) {
                  return FromRocks(batch->Delete(handles_[kPostings], ToSlice(pkey)), "batch");
                }
                return absl::OkStatus();
              }));
        }
        return absl::OkStatus();
      });
}

absl::StatusOr<std::vector<TermPosting>> RocksDbTreeStore::LoadPostings(
    const std::string& tenant, const std::string& term, const std::string& collection_id,
    const std::string& document_id, int64_t limit) const {
  TS_RETURN_IF_ERROR(ValidateId("tenant", tenant));
  if (term.empty() || term.size() > 255) {
    return absl::InvalidArgumentError(absl::StrCat("a term of ", term.size(), " bytes (1..255)"));
  }
  if (collection_id.size() > treestore::kMaxIdBytes) {
    return absl::InvalidArgumentError(absl::StrCat("a collection id of ", collection_id.size(), " bytes"));
  }
  if (!document_id.empty()) TS_RETURN_IF_ERROR(ValidateId("document", document_id));
  const std::string prefix =
      document_id.empty() ? treestore::TermPrefix(tenant, term, collection_id)
                          : treestore::TermDocumentPrefix(tenant, term, collection_id, document_id);
  treestore::SnapshotView view(db_.get(), handles_);
  std::vector<TermPosting> out;
  TS_RETURN_IF_ERROR(view.Scan(
      kPostings, prefix, prefix,
      [&](absl::string_view key, absl::string_view value, bool* stop) -> absl::Status {
        absl::StatusOr<PostingKeyFields> f = ParsePostingKey(key);
        if (!f.ok()) return Corrupt(kPostings, key, f.status());
        absl::StatusOr<treestore::PostingValue> p = treestore::DecodePosting(value);
        if (!p.ok()) return Corrupt(kPostings, key, p.status());
        out.push_back({std::string(f->document), f->chunk, p->count, static_cast<int32_t>(p->length)});
        if (limit > 0 && static_cast<int64_t>(out.size()) >= limit) *stop = true;
        return absl::OkStatus();
      }));
  return out;
}

// Jobs ----------------------------------------------------------------------------------------

absl::Status RocksDbTreeStore::PutJob(const std::string& tenant, const std::string& job_id,
                                      const std::string& json) {
  TS_RETURN_IF_ERROR(ValidateId("tenant", tenant));
  TS_RETURN_IF_ERROR(ValidateId("job", job_id));
  if (!nlohmann::json::accept(json)) {
    return absl::InvalidArgumentError(absl::StrCat("job ", Quoted(job_id), ": record is not JSON"));
  }
  rocksdb::WriteBatch batch;
  TS_RETURN_IF_ERROR(FromRocks(
      batch.Put(handles_[kJobs], ToSlice(JobKey(tenant, job_id)), treestore::EncodeJob(json)),
      "batch"));
  return Write(&batch, absl::StrCat("write job ", Quoted(job_id)));
}

absl::StatusOr<std::string> RocksDbTreeStore::GetJob(const std::string& tenant,
                                                     const std::string& job_id) const {
  TS_RETURN_IF_ERROR(ValidateId("tenant", tenant));
  TS_RETURN_IF_ERROR(ValidateId("job", job_id));
  const std::string key = JobKey(tenant, job_id);
  treestore::SnapshotView view(db_.get(), handles_);
  std::string value;
  const absl::Status got = view.Get(kJobs, key, &value);
  if (absl::IsNotFound(got)) {
    return absl::NotFoundError(absl::StrCat("job ", Quoted(job_id), " not found"));
  }
  TS_RETURN_IF_ERROR(got);
  absl::StatusOr<std::string> json = treestore::DecodeJob(value);
  if (!json.ok()) return Corrupt(kJobs, key, json.status());
  return json;
}

absl::StatusOr<std::vector<JobRecord>> RocksDbTreeStore::ListJobs(const std::string& tenant) const {
  TS_RETURN_IF_ERROR(ValidateId("tenant", tenant));
  const std::string prefix = TenantPrefix(tenant);
  treestore::SnapshotView view(db_.get(), handles_);
  std::vector<JobRecord> jobs;
  TS_RETURN_IF_ERROR(
      view.Scan(kJobs, prefix, prefix,
                [&](absl::string_view key, absl::string_view value, bool*) -> absl::Status {
                  KeyReader reader(key);
                  reader.Str();
                  const absl::string_view id = reader.Str();
                  if (!reader.done())
                    return Corrupt(kJobs, key, absl::DataLossError("malformed key"));
                  absl::StatusOr<std::string> json = treestore::DecodeJob(value);
                  if (!json.ok()) return Corrupt(kJobs, key, json.status());
                  jobs.push_back({std::string(id), *std::move(json)});
                  return absl::OkStatus();
                }));
  return jobs;
}

absl::Status RocksDbTreeStore::DeleteJob(const std::string& tenant, const std::string& job_id) {
  TS_RETURN_IF_ERROR(ValidateId("tenant", tenant));
  TS_RETURN_IF_ERROR(ValidateId("job", job_id));
  {
    // Existence only, without decoding: a corrupt record can still be deleted.
    treestore::SnapshotView view(db_.get(), handles_);
    std::string value;
    const absl::Status got = view.Get(kJobs, JobKey(tenant, job_id), &value);
    if (absl::IsNotFound(got)) {
      return absl::NotFoundError(absl::StrCat("job ", Quoted(job_id), " not found"));
    }
    TS_RETURN_IF_ERROR(got);
  }
  rocksdb::WriteBatch batch;
  TS_RETURN_IF_ERROR(
      FromRocks(batch.Delete(handles_[kJobs], ToSlice(JobKey(tenant, job_id))), "batch"));
  return Write(&batch, absl::StrCat("delete job ", Quoted(job_id)));
}

}  // namespace sharedllm
