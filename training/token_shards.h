// Token shards: pre-tokenised documents in one memory-mapped file, so training never tokenises on
// the fly. Written by corpus/make_shards.py (format code: corpus/shards.py).
//
// File format "SLTOKv1", all integers little-endian:
//   offset   size       field
//   0        8          magic "SLTOKv1\0"
//   8        4          u32 vocab_size (every token id is < vocab_size)
//   12       4          u32 dtype code: 2 = uint16 tokens, 4 = uint32 tokens
//   16       8          u64 num_tokens (N)
//   24       8          u64 num_documents (D)
//   32       8*D        u64 document start offsets: offsets[0] == 0, strictly increasing, < N;
//                       document i is tokens [offsets[i], offsets[i+1]) (the last ends at N)
//   32+8*D   dtype*N    tokens
//   ...      4          u32 CRC-32 (zlib's polynomial) of every byte before it
// make_shards.py starts every document with BOS.
#pragma once

#include <cstdint>
#include <memory>
#include <random>
#include <string>
#include <utility>
#include <vector>

namespace sharedllm {

class TokenShard {
 public:
  // Maps `path` and validates it completely (size, checksum, offsets, every token id < the
  // shard's vocab_size). When `model_vocab_size` > 0, a shard whose vocab_size exceeds it is
  // rejected. Throws ModelError naming the file on any problem.
  static TokenShard Open(const std::string& path, int64_t model_vocab_size = 0);

  int64_t num_tokens() const { return num_tokens_; }
  int64_t num_documents() const { return num_documents_; }
  int64_t vocab_size() const { return vocab_size_; }
  int dtype_bytes() const { return dtype_bytes_; }
  const std::string& path() const { return path_; }

  // Tokens [begin, begin + count) of the whole token array (they may cross documents); throws
  // ModelError when the range is outside [0, num_tokens()).
  std::vector<int64_t> Slice(int64_t begin, int64_t count) const;
  // Document i as {first token index, number of tokens}: Slice(d.first, d.second) is its tokens.
  std::pair<int64_t, int64_t> Document(int64_t i) const;
  // Token at `index` (no bounds check beyond a debug assertion).
  int64_t At(int64_t index) const;

 private:
  struct Mapping;
  TokenShard() = default;

  std::shared_ptr<const Mapping> mapping_;  // shared: copies of a shard share one mapping
  std::string path_;
  const unsigned char* offsets_ = nullptr;
  const unsigned char* tokens_ = nullptr;
  int64_t num_tokens_ = 0;
  int64_t num_documents_ = 0;
  int64_t vocab_size_ = 0;
  int dtype_bytes_ = 0;
};

// Windows of tokens drawn from several shards. Without weights a shard is picked in proportion to
// its tokens (every token equally likely); with `weights` (one per shard, >= 0, not all 0) shard i
// is picked with probability weights[i] / sum(weights), and a window is then uniform within it.
// A window never crosses shards; it may cross documents of its shard.
class TokenPool {
 public:
  explicit TokenPool(const std::vector<std::string>& paths, std::vector<double> weights = {});
  bool empty() const { return shards_.empty(); }
  int64_t vocab_size() const;
  // `count` consecutive tokens from a random place; throws ModelError when the picked shard has
  // no more than `count` tokens.
  std::vector<int64_t> Window(std::mt19937_64& rng, int64_t count) const;

 private:
  const TokenShard& Pick(std::mt19937_64& rng) const;

  std::vector<TokenShard> shards_;
  std::vector<double> weights_;
  int64_t total_ = 0;
};

// CRC-32 as zlib computes it (reflected polynomial 0xEDB88320), continuing from `crc`.
uint32_t Crc32(const void* data, size_t size, uint32_t crc = 0);

}  // namespace sharedllm
