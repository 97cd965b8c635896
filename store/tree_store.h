// The tree store: persistence of documents' encoded context trees (docs/design/tree_store.md).
// An interface so that the service can be tested against a fake and so that a remote/sharded
// store can replace the embedded RocksDB one (rocksdb_tree_store.h) without touching callers.
//
// Invariants every implementation keeps (docs/design/tree_store.md):
//   I1  tree data (tokens, vectors, K/V) exists for exactly the chunks [0, meta.chunks_done);
//       a chunk and the chunks_done that counts it are written atomically.
//   I2  state READY implies chunks_done == num_chunks; only MarkReady sets READY.
//   I3  every key starts with its tenant; no call of tenant A reads or writes a key of tenant B.
// Tree reads (LoadVectors, LoadNodes, LoadChunkTokens) serve READY documents only.
#pragma once

#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "store/records.h"

namespace sharedllm {

// Values of DocumentMeta::state.
inline constexpr char kDocumentIndexing[] = "INDEXING";
inline constexpr char kDocumentReady[] = "READY";
inline constexpr char kDocumentFailed[] = "FAILED";

struct DocumentMeta {
  std::string tenant;       // owner, from the caller's credentials (never a request field)
  std::string document_id;  // client-chosen id, unique within the tenant
  std::string collection_id;
  std::string name;
  std::string sha256;      // of the uploaded bytes, hex
  int64_t size_bytes = 0;  // uploaded bytes
  int64_t num_tokens = 0;
  int64_t num_chunks = 0;
  std::string state = kDocumentIndexing;  // kDocumentIndexing | kDocumentReady | kDocumentFailed
  std::string model_fingerprint;          // of the compressor that built the trees
  int64_t created_unix_ms = 0;
  int64_t updated_unix_ms = 0;  // set by the store on PutChunk/MarkReady: a progress heartbeat
  int64_t chunks_done = 0;      // chunks [0, chunks_done) are stored; advanced by PutChunk only
  std::string error;            // why the document FAILED; empty otherwise
};

// A node of a stored tree, as the search selects it.
struct NodeRef {
  int64_t chunk = 0;
  int64_t level = 0;  // 1..h
  int64_t index = 0;  // 0..2^level-1
};

// A chunk's distinct terms with their counts, sorted by term (retrieval/lexical.h TermCounts).
using ChunkTerms = std::vector<std::pair<std::string, int32_t>>;

// One entry of a term's postings: the term occurs `count` times in chunk `chunk` of
// `document_id`, a chunk of `length` words.
struct TenantUsage {
  int64_t documents = 0;
  int64_t bytes = 0;  // DocumentMeta::size_bytes summed
};

struct TermPosting {
  std::string document_id;
  int64_t chunk = 0;
  int32_t count = 0;
  int32_t length = 0;
};

// FAILED_PRECONDITION, naming both fingerprints, unless `meta` was built by the model of
// `expected_fingerprint` (what TreeStore::CheckFingerprint answers, for metadata already read).
absl::Status CheckDocumentFingerprint(const DocumentMeta& meta, const std::string& expected_fingerprint);

struct DocumentPage {
  std::vector<DocumentMeta> documents;
  std::string next_page_token;  // empty on the last page
};

struct JobRecord {
  std::string job_id;
  std::string json;  // opaque to the store
};

// Memory the store holds on purpose, bounded by its configuration (what an operator sets against
// the process's resident memory); -1: not known.
struct StoreMemory {
  int64_t memtables = -1;      // writes not yet flushed to table files
  int64_t block_cache = -1;    // table blocks cached for reads
  int64_t table_readers = -1;  // index and filter blocks of the open table files
};

class TreeStore {
 public:
  virtual ~TreeStore() = default;

  virtual StoreMemory Memory() const { return {}; }

  // Documents ---------------------------------------------------------------------------------

  // Creates or replaces the metadata of meta.tenant/meta.document_id. Refuses (FAILED_PRECONDITION)
  // to raise chunks_done above the stored value (only PutChunk advances it) and to set READY
  // (only MarkReady does; an already READY document may be rewritten as READY). Lowering
  // chunks_done (restarting a job) deletes the stored chunks at and beyond it in the same batch.
  virtual absl::Status PutDocument(const DocumentMeta& meta) = 0;
  // NOT_FOUND for an unknown document.
  virtual absl::StatusOr<DocumentMeta> GetDocument(const std::string& tenant,
                                                   const std::string& document_id) const = 0;
  // The tenant's documents, optionally only those of `collection_id` (empty = all), at most
  // `page_size` (<= 0: a default; capped) per page, in key order: ids ordered by length, then
  // bytewise (the key is length-prefixed). `page_token` is "" or a previous next_page_token.
  // A page may be short (even empty) with a non-empty token when a filter skips documents.
  virtual absl::StatusOr<DocumentPage> ListDocuments(const std::string& tenant,
                                                     const std::string& collection_id,
                                                     const std::string& page_token,
                                                     int64_t page_size) const = 0;
  // The tenant's documents, whatever their state, and the sum of their uploaded bytes (a scan
  // of its metadata: for quotas). A record that does not decode counts as a document of 0 bytes.
  virtual absl::StatusOr<TenantUsage> GetTenantUsage(const std::string& tenant) const = 0;
  // Removes the metadata and every tree key of the document, atomically. NOT_FOUND if absent.
  // Job records are kept (they are keyed by job, not by document).
  virtual absl::Status DeleteDocument(const std::string& tenant,
                                      const std::string& document_id) = 0;
  // FAILED_PRECONDITION, naming both fingerprints, when the document was built by another model.
  virtual absl::Status CheckFingerprint(const std::string& tenant, const std::string& document_id,
                                        const std::string& expected_fingerprint) const = 0;

  // Ingestion ---------------------------------------------------------------------------------

  // Writes chunk `chunk_index` — its token ids and every node's search vector and per-layer K/V —
  // and advances meta.chunks_done to chunk_index + 1, in one atomic batch. Chunks are written in
  // order: chunk_index must be <= chunks_done (FAILED_PRECONDITION otherwise; a chunk below
  // chunks_done is rewritten, e.g. by a retried write). The document must be INDEXING.
  // Every node must have node.chunk == chunk_index. `terms` (ValidateChunkTerms: 1..255 bytes,
  // each once, counts 1..65535) go into the retrieval index in the same batch.
  virtual absl::Status PutChunk(const std::string& tenant, const std::string& document_id,
                                int64_t chunk_index, const std::vector<int64_t>& tokens,
                                const std::vector<NodeRecord>& nodes, const ChunkTerms& terms) = 0;
  // Flips an INDEXING document to READY once chunks_done == num_chunks (FAILED_PRECONDITION
  // otherwise). Idempotent on a READY document.
  virtual absl::Status MarkReady(const std::string& tenant, const std::string& document_id) = 0;

  // Tree reads (READY documents only, else FAILED_PRECONDITION) ---------------------------------

  // Every node of the document, chunk by chunk, level 1 first, left to right within a level, with
  // only chunk/level/index/begin/end/search filled: what the query-time search needs.
  virtual absl::StatusOr<std::vector<NodeRecord>> LoadVectors(
      const std::string& tenant, const std::string& document_id) const = 0;
  // The same for the chunks `chunks` only (ascending), chunk by chunk: OUT_OF_RANGE for a chunk
  // outside the document, INVALID_ARGUMENT unless ascending.
  virtual absl::StatusOr<std::vector<NodeRecord>> LoadVectors(
      const std::string& tenant, const std::string& document_id,
      const std::vector<int64_t>& chunks) const = 0;
  // Full records (with K/V) of `refs`, in the order of `refs`. OUT_OF_RANGE for a chunk outside
  // the document, INVALID_ARGUMENT for an impossible level/index, NOT_FOUND for a node the tree
  // does not have (e.g. deeper than it).
  virtual absl::StatusOr<std::vector<NodeRecord>> LoadNodes(
      const std::string& tenant, const std::string& document_id,
      const std::vector<NodeRef>& refs) const = 0;
  // The token ids of one chunk (for citations). OUT_OF_RANGE for a chunk outside the document.
  virtual absl::StatusOr<std::vector<int64_t>> LoadChunkTokens(const std::string& tenant,
                                                               const std::string& document_id,
                                                               int64_t chunk_index) const = 0;

  // The retrieval index ---------------------------------------------------------------------

  // The postings of `term` in the tenant's collection `collection_id` ("" = the documents
  // uploaded without one), or, where `document_id` is given, in that document only (then
  // `collection_id` must be the document's own). Whatever the documents' states, ordered by
  // document key then chunk: callers keep those of the documents they read. With limit > 0 at
  // most `limit` of them: a caller that asks for one more than it will use learns that a term
  // is more common than that without reading every posting of it.
  virtual absl::StatusOr<std::vector<TermPosting>> LoadPostings(const std::string& tenant,
                                                                const std::string& term,
                                                                const std::string& collection_id,
                                                                const std::string& document_id,
                                                                int64_t limit) const = 0;

  // Index jobs: opaque JSON records keyed by tenant | job id ----------------------------------

  // INVALID_ARGUMENT if `json` does not parse.
  virtual absl::Status PutJob(const std::string& tenant, const std::string& job_id,
                              const std::string& json) = 0;
  virtual absl::StatusOr<std::string> GetJob(const std::string& tenant,
                                             const std::string& job_id) const = 0;
  // Every job of the tenant, in key order.
  virtual absl::StatusOr<std::vector<JobRecord>> ListJobs(const std::string& tenant) const = 0;
  // NOT_FOUND if absent.
  virtual absl::Status DeleteJob(const std::string& tenant, const std::string& job_id) = 0;
};

}  // namespace sharedllm
