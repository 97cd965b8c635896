#include "sharedllm/context_tree.h"

#include <algorithm>
#include <cmath>
#include <numeric>

#include <ATen/ATen.h>
#include <c10/core/GradMode.h>

#include "llm/errors.h"

namespace sharedllm {

ChunkTree ChunkTree::Build(int64_t length, int64_t depth, std::mt19937_64* rng,
                           double noise_divisor) {
  Check(depth >= 1, "tree depth must be >= 1");
  Check(length >= (int64_t{1} << depth),
        "a chunk of " + std::to_string(length) + " tokens cannot split to depth " +
            std::to_string(depth));
  ChunkTree tree;
  tree.length_ = length;
  std::vector<TreeNode> parents = {TreeNode{0, 0, 0, length}};
  for (int64_t level = 1; level <= depth; ++level) {
    std::vector<TreeNode> children;
    for (const TreeNode& p : parents) {
      const int64_t l = p.length();
      double eps = 0;
      if (rng) eps = std::normal_distribution<double>(0.0, l / noise_divisor)(*rng);
      // Clamp so both children keep enough tokens to split further down to `depth`.
      const int64_t min_child = int64_t{1} << (depth - level);
      int64_t b = static_cast<int64_t>(std::floor(l / 2.0 - eps));
      b = std::clamp<int64_t>(b, min_child, l - min_child);
      children.push_back({level, 2 * p.index, p.begin, p.begin + b});
      children.push_back({level, 2 * p.index + 1, p.begin + b, p.end});
    }
    tree.levels_.push_back(children);
    parents = std::move(children);
  }
  return tree;
}

std::vector<TreeNode> ChunkTree::AllNodes() const {
  std::vector<TreeNode> out;
  for (const auto& level : levels_) out.insert(out.end(), level.begin(), level.end());
  return out;
}

std::vector<TreeNode> PreservedNodes(const ChunkTree& tree, const ChildChooser& expand_right) {
  std::vector<TreeNode> out;
  int64_t parent = 0;  // index of the expanded node at the level above
  for (int64_t level = 1; level <= tree.depth(); ++level) {
    const TreeNode& left = tree.node(level, 2 * parent);
    const TreeNode& right = tree.node(level, 2 * parent + 1);
    if (level == tree.depth()) {
      out.push_back(left);
      out.push_back(right);
      break;
    }
    const bool right_expands = expand_right(left, right);
    out.push_back(right_expands ? left : right);
    parent = right_expands ? right.index : left.index;
  }
  std::sort(out.begin(), out.end(),
            [](const TreeNode& a, const TreeNode& b) { return a.begin < b.begin; });
  return out;
}

std::vector<double> CosineToQuery(const std::vector<at::Tensor>& vectors, const at::Tensor& query) {
  return CosineToQueries(vectors, {query}, std::vector<int64_t>(vectors.size(), 0));
}

std::vector<double> CosineToQueries(const std::vector<at::Tensor>& vectors,
                                    const std::vector<at::Tensor>& queries,
                                    const std::vector<int64_t>& which) {
  Check(which.size() == vectors.size(), "one query index per vector");
  if (vectors.empty()) return {};
  c10::NoGradGuard no_grad;  // a decision, not part of the loss
  auto all = at::stack(vectors).to(at::kDouble);                              // [N, hidden]
  auto q = at::stack(queries).to(all.device()).to(at::kDouble).view({static_cast<int64_t>(queries.size()), -1});
  auto index = at::tensor(which, at::TensorOptions().dtype(at::kLong)).to(all.device());
  auto cos = at::cosine_similarity(all, q.index_select(0, index), 1).to(at::kCPU).contiguous();
  return std::vector<double>(cos.data_ptr<double>(), cos.data_ptr<double>() + cos.numel());
}

std::vector<std::vector<size_t>> EncodeBatches(const std::vector<int64_t>& lengths,
                                               int64_t max_batch_tokens) {
  std::vector<size_t> order(lengths.size());
  std::iota(order.begin(), order.end(), size_t{0});
  std::stable_sort(order.begin(), order.end(),
                   [&](size_t a, size_t b) { return lengths[a] > lengths[b]; });
  std::vector<std::vector<size_t>> batches;
  for (size_t first = 0; first < order.size();) {
    const int64_t width = lengths[order[first]];
    const size_t capacity = static_cast<size_t>(std::max<int64_t>(1, max_batch_tokens / width));
    batches.emplace_back();
    while (first < order.size() && batches.back().size() < capacity &&
           4 * lengths[order[first]] >= 3 * width) {
      batches.back().push_back(order[first++]);
    }
  }
  return batches;
}

std::vector<std::pair<int64_t, int64_t>> ChunkSpans(int64_t length, int64_t chunk_size,
                                                    int64_t min_length) {
  Check(chunk_size >= min_length, "chunk size smaller than a tree's minimum length");
  std::vector<std::pair<int64_t, int64_t>> spans;
  for (int64_t begin = 0; begin < length; begin += chunk_size) {
    spans.emplace_back(begin, std::min(begin + chunk_size, length));
  }
  if (!spans.empty() && spans.back().second - spans.back().first < min_length) {
    const int64_t end = spans.back().second;
    spans.pop_back();
    if (!spans.empty()) spans.back().second = end;
  }
  return spans;
}

std::vector<int64_t> KeptOffsets(int64_t length, int64_t alpha, const std::string& mode) {
  std::vector<int64_t> out;
  if (mode != "first" && mode != "last") return out;
  for (int64_t i = 0; i < KeptLength(length, alpha); ++i) {
    out.push_back(mode == "first" ? i * alpha : std::min((i + 1) * alpha, length) - 1);
  }
  return out;
}

std::vector<int64_t> SharedLeadingRows(int64_t parent_length, int64_t parent_alpha,
                                       int64_t left_length, int64_t left_alpha,
                                       const std::string& mode) {
  const std::vector<int64_t> parent = KeptOffsets(parent_length, parent_alpha, mode);
  const std::vector<int64_t> left = KeptOffsets(left_length, left_alpha, mode);
  std::vector<int64_t> rows;
  size_t j = 0;
  for (int64_t p : parent) {
    while (j < left.size() && left[j] < p) ++j;
    if (j == left.size() || left[j] != p) break;
    rows.push_back(static_cast<int64_t>(j));
  }
  // The parent keeps at least one row of its own: a stored tensor of no rows has nothing to scale.
  if (!rows.empty() && rows.size() == parent.size()) rows.pop_back();
  return rows;
}

at::Tensor Downsample(const at::Tensor& x, int64_t alpha, const std::string& mode) {
  const int64_t l = x.size(-2);
  const int64_t kept = KeptLength(l, alpha);
  if (alpha == 1) return x;
  auto opts = at::TensorOptions().dtype(at::kLong).device(x.device());
  if (mode == "first") return x.index_select(-2, at::arange(0, l, alpha, opts));
  if (mode == "last") {
    return x.index_select(-2, (at::arange(1, kept + 1, opts) * alpha - 1).clamp_max(l - 1));
  }
  Check(mode == "mean", "unknown downsampling mode '" + mode + "' (first, last, mean)");
  // Sum each block with a padded reshape, then divide by the block's true size.
  auto sizes = x.sizes().vec();
  sizes[sizes.size() - 2] = kept * alpha;
  auto padded = at::zeros(sizes, x.options().dtype(at::kFloat));
  padded.narrow(-2, 0, l).copy_(x);
  sizes[sizes.size() - 2] = kept;
  sizes.insert(sizes.end() - 1, alpha);
  auto sums = padded.view(sizes).sum(-2);                              // [..., kept, D]
  auto counts = (at::full({kept}, alpha, opts).to(at::kFloat));
  counts[kept - 1] = static_cast<float>(l - (kept - 1) * alpha);
  return (sums / counts.unsqueeze(-1)).to(x.scalar_type());
}

}  // namespace sharedllm
