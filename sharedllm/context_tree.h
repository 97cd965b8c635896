// The context tree of SharedLLM (docs/design/method.md): chunking, the binary split of a chunk down to
// depth h (with training noise), the query-aware choice of which nodes to preserve, and the
// per-level downsampling of keys/values. Pure shape logic plus one tensor op; no model weights.
#pragma once

#include <cstdint>
#include <functional>
#include <random>
#include <string>
#include <utility>
#include <vector>

#include <ATen/core/Tensor.h>

namespace sharedllm {

// A node of one chunk's tree: level 1..h (the root, level 0, is never encoded), index 0..2^level-1
// from left to right, and its token span [begin, end) within the chunk.
struct TreeNode {
  int64_t level = 0;
  int64_t index = 0;
  int64_t begin = 0;
  int64_t end = 0;
  int64_t length() const { return end - begin; }
  bool operator==(const TreeNode& o) const {
    return level == o.level && index == o.index && begin == o.begin && end == o.end;
  }
};

class ChunkTree {
 public:
  // Splits [0, length) level by level down to `depth`. A node of l tokens splits at
  // b = floor(l/2 - eps), eps ~ N(0, (l/noise_divisor)^2) when `rng` is given (training), eps = 0
  // otherwise; b is clamped to [1, l-1] so both children are non-empty. Needs length >= 2^depth.
  static ChunkTree Build(int64_t length, int64_t depth, std::mt19937_64* rng = nullptr,
                         double noise_divisor = 5.0);

  int64_t depth() const { return static_cast<int64_t>(levels_.size()); }
  int64_t length() const { return length_; }
  const TreeNode& node(int64_t level, int64_t index) const { return levels_[level - 1][index]; }
  // Every node, level 1 first, left to right within a level (2 + 4 + ... + 2^h nodes).
  std::vector<TreeNode> AllNodes() const;
  // Position of (level, index) in AllNodes().
  static int64_t FlatIndex(int64_t level, int64_t index) { return (int64_t{1} << level) - 2 + index; }

 private:
  int64_t length_ = 0;
  std::vector<std::vector<TreeNode>> levels_;  // levels_[k-1]: the 2^k nodes of level k
};

// The policy at one non-leaf level: given the two children, true to expand the right one.
using ChildChooser = std::function<bool(const TreeNode& left, const TreeNode& right)>;

// The preserved nodes of one chunk (h + 1 of them), ordered by position: walking down from the
// root, the chooser picks the child to expand and its sibling is preserved; at the last level both
// children are preserved.
std::vector<TreeNode> PreservedNodes(const ChunkTree& tree, const ChildChooser& expand_right);

// Language-modelling policy: always expand the right (later) child.
inline bool AlwaysRight(const TreeNode&, const TreeNode&) { return true; }

// Query policy: expand the child whose search vector is closer (cosine) to the query's; ties go
// left. This gives the cosine (in double) of every vector ([hidden] each) to the query in one
// batched operation and one copy to the host, so a search costs no per-node synchronisation.
std::vector<double> CosineToQuery(const std::vector<at::Tensor>& vectors, const at::Tensor& query);
// The same with a query per vector: the cosine of vectors[i] to queries[which[i]].
std::vector<double> CosineToQueries(const std::vector<at::Tensor>& vectors,
                                    const std::vector<at::Tensor>& queries,
                                    const std::vector<int64_t>& which);

// Chunk spans [begin, end) of a context of `length` tokens: chunks of `chunk_size`, the last one
// shorter; a tail shorter than `min_length` (2^depth) joins the previous chunk, so no token is
// dropped. Empty when length < min_length.
std::vector<std::pair<int64_t, int64_t>> ChunkSpans(int64_t length, int64_t chunk_size,
                                                    int64_t min_length);

// Keeps ceil(L / alpha) positions of x: [..., L, D] -> [..., ceil(L/alpha), D]. Block i covers
// [i*alpha, min((i+1)*alpha, L)); mode "first" keeps its first position (the reference code),
// "last" its last (which has seen the whole block), "mean" averages the block.
at::Tensor Downsample(const at::Tensor& x, int64_t alpha, const std::string& mode);

// How SharedLLM::Encode batches nodes of these lengths for the lower model: longest first, each
// batch right-padded to its first (longest) node, taking nodes down to 3/4 of that width and at
// most max_batch_tokens / width of them. Indices into `lengths`, per batch.
std::vector<std::vector<size_t>> EncodeBatches(const std::vector<int64_t>& lengths,
                                               int64_t max_batch_tokens);

// Kept positions of a node of `length` tokens with stride `alpha`.
inline int64_t KeptLength(int64_t length, int64_t alpha) { return (length + alpha - 1) / alpha; }

// The position each kept row of such a node stands for, relative to the node's start: its block's
// first ("first") or last ("last") position; empty for "mean" (a block average is no one position).
std::vector<int64_t> KeptOffsets(int64_t length, int64_t alpha, const std::string& mode);

// A node and its left child start at the same token and are each encoded alone from position 0 by
// a causal model, so the node's keys/values at a position inside the child are the child's own.
// The rows of the left child (`left_length` tokens, stride `left_alpha`) equal to the parent's
// leading kept rows, in order: row i of the parent is row result[i] of the child; never all of
// the parent's rows (its last stays its own). Empty when nothing is shared ("mean", or strides
// that do not line up).
std::vector<int64_t> SharedLeadingRows(int64_t parent_length, int64_t parent_alpha,
                                       int64_t left_length, int64_t left_alpha,
                                       const std::string& mode);

}  // namespace sharedllm
