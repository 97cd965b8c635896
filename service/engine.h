// The model as the service sees it: text and records in, records and text out, absl::Status for
// every error. The only service file that calls into model/ (which speaks tensors and
// exceptions); handlers translate and schedule, never touch tensors.
#pragma once

#include <atomic>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "store/records.h"
#include "store/tree_store.h"

namespace sharedllm {
struct LoadedModel;
}

namespace sharedllm {
enum class KvFormat : int;  // sharedllm/node_records.h
}  // namespace sharedllm

namespace sharedllm::service {

struct EngineOptions {
  std::string model_dir;    // a SharedLLM model directory (sharedllm.json + weights + tokenizer)
  int threads = 0;          // intra-op threads; 0: all cores
  std::string dtype = "float32";  // float32 | bfloat16 (model weights and kept keys/values)
  // The element type EncodeChunk's keys and values are stored in: bfloat16 | float32 | int8
  // (per-channel scales; sharedllm/node_records.h). The model reads them in `dtype` whatever they
  // were stored in.
  std::string kv_dtype = "int8";
  std::string device = "cpu";
};

// One document's part of a query: the chunks read of it and their stored node vectors.
struct DocumentVectors {
  std::string document_id;
  int64_t num_chunks = 0;          // the document's chunks, read or not
  std::vector<int64_t> chunks;     // the chunks read, ascending (may be empty)
  std::vector<NodeRecord> nodes;   // every node of those chunks, with search vectors (no K/V)
};

struct SelectedRef {
  size_t document = 0;  // index into the DocumentVectors list
  int64_t chunk = 0, level = 0, index = 0, begin = 0, end = 0;
};

// A stored node the answer reads. A parent is stored without the leading rows its left child
// holds (sharedllm/node_records.h DropSharedRows): `left` is its left child, that child's left
// child, ... down to a leaf (LeftChain), whose rows complete it; empty for a leaf.
struct ReadNode {
  NodeRecord record;
  int64_t chunk_position = 0;
  std::vector<NodeRecord> left;
};

struct AnswerOptions {
  int64_t max_tokens = 64;
  double temperature = 0;
  int64_t top_k = 0;
  double top_p = 1;
  uint64_t seed = 0;
  std::vector<std::string> stop;
};

struct AnswerResult {
  std::string finish_reason;  // length | stop | eos | cancelled
  int64_t prompt_tokens = 0;
  int64_t completion_tokens = 0;
  int64_t context_positions = 0;
  double time_to_first_token_seconds = 0;
  double decode_seconds = 0;
};

class Engine {
 public:
  static absl::StatusOr<std::unique_ptr<Engine>> Load(const EngineOptions& options);
  // The name a model directory is known by (its last path component), known before loading.
  static std::string ModelName(const std::string& model_dir);
  ~Engine();

  // Identifies the compressor: trees built by another model are refused.
  const std::string& fingerprint() const { return fingerprint_; }
  const std::string& model_name() const { return model_name_; }
  int64_t window() const;
  // Tokens per chunk: chunk c of a document starts at token c * chunk_size() (ChunkSpans).
  int64_t chunk_size() const;
  // The nodes whose records complete the node (level, index) of a chunk: its left child, that
  // child's left child, ... down to the leaves (ReadNode::left, in that order); empty for a leaf.
  std::vector<std::pair<int64_t, int64_t>> LeftChain(int64_t level, int64_t index) const;
  // Kept positions of a node of that level spanning `length` tokens (what the model reads of it).
  int64_t KeptPositions(int64_t level, int64_t length) const;

  absl::StatusOr<std::vector<int64_t>> Tokenize(const std::string& text) const;
  // Chunk spans [begin, end) of a document of `num_tokens` tokens; empty if too short for a tree.
  std::vector<std::pair<int64_t, int64_t>> ChunkSpans(int64_t num_tokens) const;
  // The static tree of one chunk: every node with its search vector and K/V.
  absl::StatusOr<std::vector<NodeRecord>> EncodeChunk(const std::vector<int64_t>& chunk_tokens,
                                                      int64_t chunk_index);
  // The terms the retrieval index keeps for a chunk (sharedllm/reading.h TermsOfChunk).
  sharedllm::ChunkTerms TermsOf(const std::vector<int64_t>& chunk_tokens) const;
  // The most chunks a question reads with `requested` (0: the model's chunk_budget; 0 back: no
  // limit); INVALID_ARGUMENT for a negative request or one above the model's budget.
  absl::StatusOr<int64_t> ReadBudget(int64_t requested) const;
  // The question as the upper model reads it (BOS + tokens).
  absl::StatusOr<std::vector<int64_t>> PromptIds(const std::string& question) const;
  // The search over stored vectors: per chunk read of each document, its h+1 preserved nodes
  // (SelectedRef::chunk is the chunk's index in its document).
  absl::StatusOr<std::vector<SelectedRef>> Select(const std::vector<int64_t>& prompt_ids,
                                                  const std::vector<DocumentVectors>& documents);
  // Generates the answer reading `nodes` (full records, in the order of Select); node i's chunk
  // is at `nodes[i].chunk_position` of the `read_chunks` chunks read (their reading order, the
  // rotary position of its keys). `on_delta` receives text as it is final and returns false to
  // stop; `cancelled` is polled every token (deadline or client cancel).
  absl::StatusOr<AnswerResult> Answer(const std::vector<int64_t>& prompt_ids,
                                      const std::vector<ReadNode>& nodes,
                                      int64_t read_chunks, const AnswerOptions& options,
                                      const std::function<bool(const std::string&)>& on_delta);

 private:
  Engine() = default;
  std::shared_ptr<const LoadedModel> model_;  // shared by every request, never changed
  KvFormat kv_format_{};  // EngineOptions::kv_dtype
  // Per injection layer: the key/value heads the cross-attention reads (SharedLLM::ReadKvHeads);
  // only those are stored.
  std::vector<std::vector<int64_t>> read_heads_;
  std::string fingerprint_, model_name_;
};

}  // namespace sharedllm::service
