// Efficiency of SharedLLM against its baselines (docs/PERFORMANCE.md): FLOP counts of each
// phase from the configuration, the phases themselves as the `sharedllm eval efficiency` child
// processes run them (ingestion, a question over a built tree, a question that rebuilds the tree,
// full attention over the whole document), process-memory probes, and the cost model behind
// `sharedllm plan` (time = FLOPs / measured matmul peak + fixed per-layer cost; memory = weights +
// the phase's largest live tensors).
//
// FLOPs count 2 per multiply-add of the matmuls only (projections, MLP, attention scores and
// weighted sums, lm_head); embeddings, norms, rotary, softmax and masks are not counted. Attention
// counts the causal work (token t of a sequence attends to t+1 keys), not the masked half a dense
// kernel also computes.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "llm/config.h"
#include "sharedllm/context_tree.h"
#include "sharedllm/config.h"

namespace sharedllm {

struct LoadedModel;

// ---- FLOP counting --------------------------------------------------------------------------

// q, k, v, o projections and the SwiGLU MLP of one decoder layer, per token.
double LayerMatmulFlopsPerToken(const ModelConfig& c);
// Scores and weighted sums of `tokens` new tokens after `past` cached ones (causal).
double SelfAttentionFlops(const ModelConfig& c, int64_t tokens, int64_t past);
// Cross-attention of one injection layer: q_proj and o_proj of `tokens`, attention to `context`.
double CrossAttentionFlops(const ModelConfig& c, int64_t tokens, int64_t context);
double LmHeadFlops(const ModelConfig& c, int64_t rows);
// The lower model (`layers` bottom layers) run over each sequence alone (positions 0..l-1); above
// one layer, the top layer costs only its key/value projections (CausalLMImpl::ForwardLower).
double LowerModelFlops(const ModelConfig& c, int64_t layers, const std::vector<int64_t>& lengths);
// The lower model as SharedLLM encodes (`s`): one pass of M layers, or with separate_layers K < M
// the copy's K layers and then the base's own M.
double EncodeFlops(const ModelConfig& c, const SharedLLMConfig& s, const std::vector<int64_t>& lengths);
// One upper-model forward of `tokens` after `past` cached ones, cross-attending to `context`
// positions in `injection_layers` layers, logits of the last position only (Decoder::Prefill).
double UpperForwardFlops(const ModelConfig& c, int64_t injection_layers, int64_t tokens,
                         int64_t past, int64_t context);
// `steps` single-token forwards after `past` cached tokens (DecodeOneToken).
double DecodeFlops(const ModelConfig& c, int64_t injection_layers, int64_t past, int64_t steps,
                   int64_t context);

// ---- Tree shapes (pure: from the configuration, no weights) -----------------------------------

struct TreeShape {
  std::vector<std::pair<int64_t, int64_t>> spans;  // chunk spans of the document
  std::vector<std::vector<TreeNode>> nodes;        // per chunk: every node (ChunkTree::AllNodes)
  std::vector<int64_t> NodeLengths() const;        // every node of every chunk
};
TreeShape StaticTreeShape(const SharedLLMConfig& s, int64_t length);
// Kept K/V positions of a node (level k keeps ceil(l / alpha_k)).
int64_t KeptPositions(const SharedLLMConfig& s, const TreeNode& node);
// The kept positions the store holds of each node of one chunk (`nodes`: its whole tree): a
// parent's rows that its left child holds are stored once (SharedRowCounts).
std::vector<int64_t> StoredPositions(const SharedLLMConfig& s, const std::vector<TreeNode>& nodes);
// Cross-attention positions of a question: the h+1 preserved nodes of every chunk under the
// right-child policy (the query-aware search differs by at most a position per level and chunk).
int64_t PreservedContextPositions(const SharedLLMConfig& s, const TreeShape& shape);
// Tokens the dynamic (rebuild) tree encodes under the right-child policy with a query: both
// children at every level (their vectors decide the walk).
std::vector<int64_t> DynamicTreeLengths(const SharedLLMConfig& s, const TreeShape& shape);

// ---- Process memory -------------------------------------------------------------------------

struct ProcessMemory {
  int64_t rss_bytes = 0;   // VmRSS
  int64_t peak_bytes = 0;  // VmHWM: the peak since the start or the last ResetPeakMemory
};
ProcessMemory ReadProcessMemory();
// Returns freed heap memory to the OS (malloc_trim) and resets VmHWM to the current RSS
// (/proc/self/clear_refs, Linux >= 4.0). False when the kernel refused the reset.
bool ResetPeakMemory();
// The caching allocator's peak bytes on a CUDA device since the last reset; -1 on a CPU device or
// a libtorch built without CUDA.
int64_t DeviceAllocatorPeakBytes(const std::string& device);
void ResetDeviceAllocatorPeak(const std::string& device);

// ---- The measured phases --------------------------------------------------------------------

enum class EfficiencyPhase {
  kIngest,       // BuildStaticTree of the document; the tree is then written to `tree_file`
  kAsk,          // a question over the tree in `tree_file`: vectors, search, selected K/V, prefill, decode
  kRebuild,      // a question that re-encodes the document (BuildDynamicTree with the query)
  kFullAttention,  // the base model over document + question, rotary scaled linearly (PI); the
                   // document's keys/values of every layer are then written to `cache_file`
  kStoredCache     // prefix caching: the question prefilled against the cache in `cache_file`
};
const char* PhaseName(EfficiencyPhase p);
EfficiencyPhase PhaseFromName(const std::string& name);  // throws ModelError

struct PhaseInput {
  std::vector<int64_t> document, question;
  int64_t decode_tokens = 32;
  std::string tree_file;   // written by kIngest, read by kAsk
  std::string cache_file;  // written by kFullAttention, read by kStoredCache
};

struct PhaseResult {
  double seconds = 0;         // kIngest: the tree build; else time to first token
  double decode_seconds = 0;  // decode_tokens single-token steps after the first token
  int64_t decode_tokens = 0;
  double flops = 0;           // of `seconds`
  double decode_flops = 0;
  int64_t encoded_tokens = 0;     // tokens through the lower model (tree build)
  int64_t context_positions = 0;  // cross-attention positions (SharedLLM) / keys (full attention)
  int64_t tree_record_bytes = 0;  // kIngest: K/V + vectors as stored (tensor bytes only)
  int64_t cache_bytes = 0;        // kFullAttention: the document's keys/values of every layer
  // Tensor bytes a question reads from storage: kAsk the vectors and the selected nodes' K/V,
  // kStoredCache the whole cache.
  int64_t read_bytes = 0;
  int64_t first_token = -1;  // the greedy first answer token (not kIngest)
  // Read when the measured part ends (kIngest: before the tree file is written).
  int64_t peak_bytes = 0;          // VmHWM: since the caller's ResetPeakMemory
  int64_t device_peak_bytes = -1;  // the CUDA caching allocator's peak; -1 on the CPU
};

// Runs one phase; the caller resets the peaks (ResetPeakMemory, ResetDeviceAllocatorPeak) first. Greedy decoding, EOS ignored, so every
// configuration decodes the same number of tokens.
PhaseResult RunPhase(LoadedModel& model, EfficiencyPhase phase, const PhaseInput& input);

// A seeded pseudo-random document / question of `length` ids in [3, vocab) (content does not
// change the work done; ids 0..2 are the usual special tokens).
std::vector<int64_t> SyntheticTokens(int64_t length, int64_t vocab, uint64_t seed);

// ---- Cost model (`sharedllm plan`) ----------------------------------------------------------

// Measured throughput of this machine.
struct MachineRates {
  double matmul_flops_per_second = 0;  // matmul throughput at the model's shapes (or the peak)
  double layer_overhead_seconds = 0;   // fixed cost of one decoder layer's forward (dispatch)
  double memory_bytes_per_second = 0;  // streaming bandwidth (elementwise add of 64 MiB tensors)
  double attention_element_seconds = 0;  // one element of a dense causal score matrix, all passes
  double node_seconds = 0;  // ingestion's per-node bookkeeping for one layer (views of K and V)
};
// Median of `repeats` n x n x n matmuls in `dtype` on `device` (after a warm-up).
double MeasureMatmulPeak(int64_t n, const std::string& dtype, const std::string& device, int repeats);
// FLOP/s of the model's MLP projection ([tokens, hidden] x [hidden, intermediate]) in `dtype`.
double MeasureModelMatmulRate(const ModelConfig& c, const std::string& dtype, const std::string& device,
                              int64_t tokens, int repeats);
// Seconds per score element of the model's self-attention over `tokens` tokens (causal mask built,
// scores, softmax, weighted sum: the kernel of llm/layers.h), per head and query-key pair.
double MeasureAttentionElementSeconds(const ModelConfig& c, const std::string& dtype,
                                      const std::string& device, int64_t tokens, int repeats);
// Seconds to cut one node's K and V of one layer out of its batch (what Encode does per node).
double MeasureNodeSeconds(const ModelConfig& c, const SharedLLMConfig& s, const std::string& device,
                          int repeats);
// Bytes per second of a large elementwise add (two reads and a write per element).
double MeasureMemoryBandwidth(const std::string& device, int repeats);
// Fixed cost of one decoder layer: single-token decode steps of a 1-layer and a 3-layer model of
// width 16 (negligible FLOPs), difference / 2.
double MeasureLayerOverhead(const std::string& device, int steps);

struct PhasePrediction {
  double seconds = 0, flops = 0;
  int64_t memory_bytes = 0;  // above the process before the model was loaded: weights + working set
};
struct PlanPrediction {
  int64_t length = 0, chunks = 0, context_positions = 0;
  int64_t weight_bytes = 0;
  PhasePrediction ingest, ask_ttft, ask_decode, rebuild_ttft, full_ttft, full_decode;
  double ask_tokens_per_second = 0, full_tokens_per_second = 0;
};
PlanPrediction PredictPlan(const ModelConfig& c, const SharedLLMConfig& s, int64_t element_bytes,
                           int64_t length, int64_t question_tokens, int64_t decode_tokens,
                           const MachineRates& rates);

}  // namespace sharedllm
