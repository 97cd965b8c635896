// libFuzzer target: the API keys file and the authorization header (service/auth.h). The input is
// split at its first NUL: a keys file, then a header value. Parsing must return a status; a key
// the file accepted must authenticate to its tenant; no error message may contain a key.
#include <cstddef>
#include <cctype>
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
  // The key of the first line that holds one (as the parser reads a line: without the
  // surrounding whitespace, '#' lines and blank ones skipped) authenticates to a tenant.
  std::string_view rest = file;
  while (!rest.empty()) {
    const size_t end = rest.find('\n');
    std::string_view line = rest.substr(0, end);
    rest = end == std::string_view::npos ? std::string_view() : rest.substr(end + 1);
    while (!line.empty() && std::isspace(static_cast<unsigned char>(line.front()))) line.remove_prefix(1);
    while (!line.empty() && std::isspace(static_cast<unsigned char>(line.back()))) line.remove_suffix(1);
    if (line.empty() || line[0] == '#') continue;
    const std::string key(line.substr(0, line.find_first_of(" \t")));
    auto tenant = keys->TenantForAuthorization("Bearer " + key);
    if (!tenant.ok()) __builtin_trap();
    auto wrong = keys->TenantForAuthorization("Bearer " + key + "x");
    if (!wrong.ok() && std::string(wrong.status().message()).find(key) != std::string::npos) {
      __builtin_trap();
    }
    break;
  }
  return 0;
}
