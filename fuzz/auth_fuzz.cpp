// libFuzzer target: the API keys file and the authorization header (service/auth.h). The input is
// split at its first NUL: a keys file, then a header value. Parsing must return a status; a key
// the file accepted must authenticate to its tenant; no error message may contain a key.
#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

#include "service/auth.h"

using namespace sharedllm::service;

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string_view all(reinterpret_cast<const char*>(data), size);
  const size_t cut = all.find('\0');
  const std::string_view file = all.substr(0, cut);
  const std::string_view header = cut == std::string_view::npos ? std::string_view() : all.substr(cut + 1);
  auto keys = ApiKeys::Parse(file, "keys");
  if (!keys.ok()) return 0;
  (void)keys->TenantForAuthorization(header);
  // The first line's key, where it parsed: "Bearer KEY" authenticates.
  const size_t line_end = file.find('\n');
  const std::string_view first = file.substr(0, line_end);
  const size_t space = first.find_first_of(" \t");
  if (space != std::string_view::npos && space >= ApiKeys::kMinKeyLength && first[0] != '#') {
    const std::string key(first.substr(0, space));
    auto tenant = keys->TenantForAuthorization("Bearer " + key);
    if (!tenant.ok()) __builtin_trap();
    auto wrong = keys->TenantForAuthorization("Bearer " + key + "x");
    if (!wrong.ok() && std::string(wrong.status().message()).find(key) != std::string::npos) {
      __builtin_trap();
    }
  }
  return 0;
}
