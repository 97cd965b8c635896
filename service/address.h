// Whether a gRPC address stays on this machine: what the server and the clients check before
// they warn that something crosses the network unauthenticated or in clear. Header-only, shared
// by the server and the C++ clients (which link nothing of the server).
#pragma once

#include <string_view>

namespace sharedllm::service {

// True for an address only this machine reaches: "localhost", 127.0.0.0/8, [::1] or a unix
// socket, with or without ":PORT" and gRPC's "dns:///", "ipv4:", "ipv6:" prefixes.
inline bool IsLoopbackAddress(std::string_view a) {
  for (std::string_view prefix : {"dns:///", "ipv4:", "ipv6:", "unix:"}) {
    if (a.substr(0, prefix.size()) == prefix) {
      if (prefix == "unix:") return true;  // a socket file: this machine only
      a.remove_prefix(prefix.size());
      break;
    }
  }
  std::string_view host = a;
  if (!host.empty() && host.front() == '[') {
    const size_t close = host.find(']');
    host = close == std::string_view::npos ? host : host.substr(1, close - 1);
  } else if (const size_t colon = host.rfind(':'); colon != std::string_view::npos &&
                                                    host.find(':') == colon) {
    host = host.substr(0, colon);  // one colon: host:port
  }
  if (host == "localhost" || host == "::1") return true;
  return host.substr(0, 4) == "127." && host.find_first_not_of("0123456789.") == std::string_view::npos;
}

}  // namespace sharedllm::service
