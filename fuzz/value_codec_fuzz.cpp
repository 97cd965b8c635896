// libFuzzer target: every value decoder of the tree store (store/value_codec.h) over bytes as a
// damaged or hostile database could hold them. Each must return a status, never read out of
// bounds or abort; a value that decodes must encode back to the same bytes.
#include <cstddef>
#include <cstdint>
#include <string>

#include "store/value_codec.h"

using namespace sharedllm;
using namespace sharedllm::treestore;

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string raw(reinterpret_cast<const char*>(data), size);
  // Half the inputs get a valid seal, so the fuzzer reaches the bodies behind the checksum.
  const std::string value = size > 0 && (data[0] & 1) ? Seal(raw.substr(1)) : raw;
  (void)Unseal(value);
  if (auto t = DecodeTokens(value); t.ok() && EncodeTokens(*t) != value) __builtin_trap();
  if (auto n = DecodeNodeVector(value); n.ok() && EncodeNodeVector(*n) != value) __builtin_trap();
  TensorBlob k, v, ks, vs;
  if (DecodeLayerKv(value, &k, &v, &ks, &vs).ok()) {
    const bool scaled = k.dtype == DType::kI8;
    if (EncodeLayerKv(k, v, scaled ? &ks : nullptr, scaled ? &vs : nullptr) != value) __builtin_trap();
  }
  if (auto c = DecodeChunkTerms(value); c.ok()) {
    if (!ValidateChunkTerms(*c).ok() || EncodeChunkTerms(*c) != value) __builtin_trap();
  }
  if (auto p = DecodePosting(value); p.ok() && EncodePosting(*p) != value) __builtin_trap();
  (void)DecodeDocumentMeta(value);
  (void)DecodeJob(value);
  return 0;
}
