// libFuzzer target: what a client sends before any model runs (service/encoding.h, service/auth.h):
// the UTF-8 check of an upload and of streamed text, ids, and clipping of client strings into
// errors and logs.
#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

#include "service/auth.h"
#include "service/encoding.h"

using namespace sharedllm::service;

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string_view s(reinterpret_cast<const char*>(data), size);
  const bool valid = ValidUtf8(s);
  const std::string repaired = ToValidUtf8(s);
  if (!ValidUtf8(repaired)) __builtin_trap();
  if (valid != (repaired == s)) __builtin_trap();
  const std::string clipped = Clip(s, 64);
  for (char c : clipped) {
    if (c < 0x20 || c > 0x7e) __builtin_trap();  // only printable ASCII reaches a log
  }
  if (clipped.size() > 64 + 32) __builtin_trap();
  if (ValidId(s)) {
    if (s.empty() || s.size() > 128) __builtin_trap();
  }
  if (HexDecode(HexEncode(s)) != s) __builtin_trap();
  return 0;
}
