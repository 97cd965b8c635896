// libFuzzer target: the tree store's binary keys and page tokens (store/key_codec.h), as read back
// from a database or a client. A key is read field by field the way every scan does; nothing may
// read past the end or abort, and what a builder writes must read back the same.
#include <cstddef>
#include <cstdint>
#include <string>

#include "store/key_codec.h"

using namespace sharedllm::treestore;

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string bytes(reinterpret_cast<const char*>(data), size);
  for (const char* family : {"documents", "jobs", "tokens", "vectors", "kv", "terms", "postings"}) {
    (void)DescribeKey(family, bytes);
  }
  KeyReader r(bytes);
  const std::string a(r.Str()), b(r.Str());
  const uint32_t chunk = r.U32();
  const uint16_t node = r.U16();
  if (r.ok()) {
    // Re-encoding what was read gives back the bytes read.
    const std::string rebuilt = KeyBuilder().Str(a).Str(b).U32(chunk).U16(node).Build();
    if (bytes.compare(0, rebuilt.size(), rebuilt) != 0) __builtin_trap();
    int64_t level = 0, index = 0;
    LevelAndIndex(node, &level, &index);
    if (level >= 1 && level <= kMaxLevel) {
      auto flat = FlatNodeIndex(level, index);
      if (flat.ok() && *flat != node) __builtin_trap();
    }
  }
  if (!bytes.empty()) {
    const std::string next = PrefixSuccessor(bytes);
    if (!next.empty() && !(bytes < next)) __builtin_trap();
  }
  // Page tokens are hex of either case; what one decodes to encodes to a token decoding the same.
  auto token = DecodePageToken(bytes);
  if (token.ok()) {
    auto again = DecodePageToken(EncodePageToken(*token));
    if (!again.ok() || *again != *token) __builtin_trap();
  }
  (void)ValidateId("document", bytes);
  return 0;
}
