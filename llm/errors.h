// Errors raised inside model/. Callers outside model/ catch ModelError at the facade and turn it
// into a status; inside model/ exceptions keep the tensor code free of status plumbing.
#pragma once

#include <stdexcept>
#include <string>

namespace sharedllm {

class ModelError : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

// Throws ModelError(message) when `condition` is false.
inline void Check(bool condition, const std::string& message) {
  if (!condition) throw ModelError(message);
}

}  // namespace sharedllm
