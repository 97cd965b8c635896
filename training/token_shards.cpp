#include "training/token_shards.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <cmath>
#include <cassert>
#include <cerrno>
#include <cstring>

#include "llm/errors.h"

#if !defined(__BYTE_ORDER__) || __BYTE_ORDER__ != __ORDER_LITTLE_ENDIAN__
#error "token_shards.cpp reads little-endian files by memcpy and needs a little-endian host"
#endif

namespace sharedllm {
namespace {

constexpr char kMagic[8] = {'S', 'L', 'T', 'O', 'K', 'v', '1', '\0'};
constexpr uint64_t kHeaderBytes = 32;
constexpr uint64_t kCrcBytes = 4;

template <typename T>
T Load(const unsigned char* p) {
  T v;
  std::memcpy(&v, p, sizeof(T));
  return v;
}

// Slicing-by-8 tables for the reflected CRC-32 polynomial 0xEDB88320.
struct CrcTables {
  std::array<std::array<uint32_t, 256>, 8> t;
  CrcTables() {
    for (uint32_t i = 0; i < 256; ++i) {
      uint32_t c = i;
      for (int k = 0; k < 8; ++k) c = (c & 1) ? (c >> 1) ^ 0xEDB88320u : c >> 1;
      t[0][i] = c;
    }
    for (uint32_t i = 0; i < 256; ++i) {
      for (int s = 1; s < 8; ++s) t[s][i] = (t[s - 1][i] >> 8) ^ t[0][t[s - 1][i] & 0xFF];
    }
  }
};

}  // namespace

uint32_t Crc32(const void* data, size_t size, uint32_t crc) {
  static const CrcTables tables;
  const auto& t = tables.t;
  const unsigned char* p = static_cast<const unsigned char*>(data);
  crc = ~crc;
  while (size >= 8) {
    const uint32_t lo = Load<uint32_t>(p) ^ crc;
    const uint32_t hi = Load<uint32_t>(p + 4);
    crc = t[7][lo & 0xFF] ^ t[6][(lo >> 8) & 0xFF] ^ t[5][(lo >> 16) & 0xFF] ^ t[4][lo >> 24] ^
          t[3][hi & 0xFF] ^ t[2][(hi >> 8) & 0xFF] ^ t[1][(hi >> 16) & 0xFF] ^ t[0][hi >> 24];
    p += 8;
    size -= 8;
  }
  while (size--) crc = (crc >> 8) ^ t[0][(crc ^ *p++) & 0xFF];
  return ~crc;
}

// A read-only private mapping of a whole file, unmapped when the last TokenShard copy goes.
struct TokenShard::Mapping {
  const unsigned char* data = nullptr;
  uint64_t size = 0;
  ~Mapping() {
    if (data != nullptr && size > 0) ::munmap(const_cast<unsigned char*>(data), size);
  }
};

TokenShard TokenShard::Open(const std::string& path, int64_t model_vocab_size) {
  auto fail = [&path](const std::string& why) -> void {
    throw ModelError("token shard " + path + ": " + why);
  };
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) fail(std::string("cannot open: ") + std::strerror(errno));
  struct stat st;
  if (::fstat(fd, &st) != 0) {
    const int err = errno;
    ::close(fd);
    fail(std::string("cannot stat: ") + std::strerror(err));
  }
  const uint64_t size = static_cast<uint64_t>(st.st_size);
  if (size < kHeaderBytes + kCrcBytes) {
    ::close(fd);
    fail("truncated file (" + std::to_string(size) + " bytes; the header and checksum alone need " +
         std::to_string(kHeaderBytes + kCrcBytes) + ")");
  }
  void* addr = ::mmap(nullptr, size, PROT_READ, MAP_PRIVATE, fd, 0);
  const int map_errno = errno;
  ::close(fd);
  if (addr == MAP_FAILED) fail(std::string("cannot mmap: ") + std::strerror(map_errno));
  auto mapping = std::make_shared<Mapping>();
  mapping->data = static_cast<const unsigned char*>(addr);
  mapping->size = size;
  const unsigned char* p = mapping->data;

  if (std::memcmp(p, kMagic, sizeof(kMagic)) != 0) {
    fail("bad magic (not an SLTOKv1 token shard; expected \"SLTOKv1\\0\")");
  }
  const uint32_t vocab = Load<uint32_t>(p + 8);
  const uint32_t dtype = Load<uint32_t>(p + 12);
  const uint64_t n = Load<uint64_t>(p + 16);
  const uint64_t d = Load<uint64_t>(p + 24);
  if (dtype != 2 && dtype != 4) {
    fail("unknown dtype code " + std::to_string(dtype) + " (expected 2 = uint16 or 4 = uint32)");
  }
  if (vocab == 0) fail("vocab_size is 0");
  // Sizes; the comparisons are arranged so that absurd header values cannot overflow.
  const uint64_t body = size - kHeaderBytes - kCrcBytes;
  if (d > body / 8 || n > (body - 8 * d) / dtype) {
    fail("truncated file: " + std::to_string(size) + " bytes, too few for the " +
         std::to_string(n) + " tokens of " + std::to_string(dtype) + " bytes and " +
         std::to_string(d) + " document offsets that its header declares");
  }
  const uint64_t expected = kHeaderBytes + 8 * d + dtype * n + kCrcBytes;
  if (expected != size) {
    fail("size mismatch: " + std::to_string(size) + " bytes, the header implies " +
         std::to_string(expected) + " (trailing bytes)");
  }
  const uint32_t stored = Load<uint32_t>(p + size - kCrcBytes);
  const uint32_t computed = Crc32(p, size - kCrcBytes);
  if (stored != computed) {
    char buf[96];
    std::snprintf(buf, sizeof(buf), "checksum mismatch (stored %08x, computed %08x): file is corrupt",
                  stored, computed);
    fail(buf);
  }
  if (model_vocab_size > 0 && static_cast<int64_t>(vocab) > model_vocab_size) {
    fail("vocab_size " + std::to_string(vocab) + " is larger than the model's " +
         std::to_string(model_vocab_size) + " (tokenised with a different tokenizer?)");
  }

  TokenShard shard;
  shard.mapping_ = mapping;
  shard.path_ = path;
  shard.offsets_ = p + kHeaderBytes;
  shard.tokens_ = p + kHeaderBytes + 8 * d;
  shard.num_tokens_ = static_cast<int64_t>(n);
  shard.num_documents_ = static_cast<int64_t>(d);
  shard.vocab_size_ = vocab;
  shard.dtype_bytes_ = static_cast<int>(dtype);

  if (d == 0 && n > 0) fail(std::to_string(n) + " tokens but no documents");
  uint64_t prev = 0;
  for (uint64_t i = 0; i < d; ++i) {
    const uint64_t off = Load<uint64_t>(shard.offsets_ + 8 * i);
    if (off >= n) {
      fail("document offset " + std::to_string(i) + " (" + std::to_string(off) +
           ") out of range (num_tokens " + std::to_string(n) + ")");
    }
    if (i == 0 && off != 0) fail("document offset 0 is " + std::to_string(off) + ", expected 0");
    if (i > 0 && off <= prev) {
      fail("document offsets not increasing at document " + std::to_string(i) + " (" +
           std::to_string(prev) + " then " + std::to_string(off) + ")");
    }
    prev = off;
  }
  // Every id must be a valid token of the shard's vocabulary.
  uint32_t max_id = 0;
  uint64_t max_at = 0;
  if (dtype == 2) {
    for (uint64_t i = 0; i < n; ++i) {
      const uint32_t v = Load<uint16_t>(shard.tokens_ + 2 * i);
      if (v > max_id) max_id = v, max_at = i;
    }
  } else {
    for (uint64_t i = 0; i < n; ++i) {
      const uint32_t v = Load<uint32_t>(shard.tokens_ + 4 * i);
      if (v > max_id) max_id = v, max_at = i;
    }
  }
  if (n > 0 && max_id >= vocab) {
    fail("token id " + std::to_string(max_id) + " at index " + std::to_string(max_at) +
         " is out of range (vocab_size " + std::to_string(vocab) + ")");
  }
  return shard;
}

int64_t TokenShard::At(int64_t index) const {
  assert(index >= 0 && index < num_tokens_);
  return dtype_bytes_ == 2 ? Load<uint16_t>(tokens_ + 2 * index)
                           : Load<uint32_t>(tokens_ + 4 * index);
}

std::vector<int64_t> TokenShard::Slice(int64_t begin, int64_t count) const {
  if (begin < 0 || count < 0 || begin > num_tokens_ || count > num_tokens_ - begin) {
    throw ModelError("token shard " + path_ + ": slice [" + std::to_string(begin) + ", " +
                     std::to_string(begin) + "+" + std::to_string(count) +
                     ") is outside the " + std::to_string(num_tokens_) + " tokens");
  }
  std::vector<int64_t> out(static_cast<size_t>(count));
  if (dtype_bytes_ == 2) {
    for (int64_t i = 0; i < count; ++i) out[i] = Load<uint16_t>(tokens_ + 2 * (begin + i));
  } else {
    for (int64_t i = 0; i < count; ++i) out[i] = Load<uint32_t>(tokens_ + 4 * (begin + i));
  }
  return out;
}

std::pair<int64_t, int64_t> TokenShard::Document(int64_t i) const {
  if (i < 0 || i >= num_documents_) {
    throw ModelError("token shard " + path_ + ": document " + std::to_string(i) +
                     " out of range (" + std::to_string(num_documents_) + " documents)");
  }
  const int64_t begin = static_cast<int64_t>(Load<uint64_t>(offsets_ + 8 * i));
  const int64_t end = i + 1 < num_documents_
                          ? static_cast<int64_t>(Load<uint64_t>(offsets_ + 8 * (i + 1)))
                          : num_tokens_;
  return {begin, end - begin};
}

TokenPool::TokenPool(const std::vector<std::string>& paths, std::vector<double> weights)
    : weights_(std::move(weights)) {
  if (!weights_.empty()) {
    if (weights_.size() != paths.size()) {
      throw ModelError("train_shard_weights has " + std::to_string(weights_.size()) +
                       " weights for " + std::to_string(paths.size()) + " shards");
    }
    double sum = 0;
    for (double w : weights_) {
      if (!(w >= 0) || !std::isfinite(w)) throw ModelError("shard weights must be finite and >= 0");
      sum += w;
    }
    if (!(sum > 0)) throw ModelError("shard weights must not all be 0");
  }
  for (const auto& p : paths) {
    shards_.push_back(TokenShard::Open(p));
    total_ += shards_.back().num_tokens();
  }
}

int64_t TokenPool::vocab_size() const {
  int64_t v = 0;
  for (const auto& s : shards_) v = std::max(v, s.vocab_size());
  return v;
}

const TokenShard& TokenPool::Pick(std::mt19937_64& rng) const {
  if (shards_.empty()) throw ModelError("no token shards");
  if (!weights_.empty()) {
    return shards_[std::discrete_distribution<size_t>(weights_.begin(), weights_.end())(rng)];
  }
  // One draw over all tokens, not a discrete_distribution of the token counts: the same draws,
  // and so the same samples, as runs from before weights existed.
  int64_t pick = std::uniform_int_distribution<int64_t>(0, total_ - 1)(rng);
  for (const auto& s : shards_) {
    if (pick < s.num_tokens()) return s;
    pick -= s.num_tokens();
  }
  return shards_.back();
}

std::vector<int64_t> TokenPool::Window(std::mt19937_64& rng, int64_t count) const {
  const TokenShard& shard = Pick(rng);
  if (shard.num_tokens() <= count) {
    throw ModelError(shard.path() + " has fewer than " + std::to_string(count + 1) +
                     " tokens; training windows need more");
  }
  const int64_t start =
      std::uniform_int_distribution<int64_t>(0, shard.num_tokens() - count - 1)(rng);
  return shard.Slice(start, count);
}

}  // namespace sharedllm
