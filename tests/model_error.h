// ErrorOf: the message of the ModelError a call throws, for tests of what bad input is told.
// Free of libtorch (llm/errors.h is std::runtime_error), so the pure-logic tests may use it.
#pragma once

#include <exception>
#include <string>

#include <gtest/gtest.h>

#include "llm/errors.h"

namespace sharedllm::test {

// The ModelError message of `fn()`; fails the test when nothing, or something else, is thrown.
template <typename Fn>
std::string ErrorOf(Fn fn) {
  try {
    fn();
  } catch (const ModelError& e) {
    return e.what();
  } catch (const std::exception& e) {
    ADD_FAILURE() << "threw a non-ModelError: " << e.what();
    return "";
  }
  ADD_FAILURE() << "did not throw";
  return "";
}

}  // namespace sharedllm::test
