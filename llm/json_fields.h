// Reading numbers out of JSON the model files hold (config.json, sharedllm.json, safetensors
// headers) without undefined behaviour: nlohmann converts a float such as 1e250 to an integer
// type by a plain cast (undefined beyond the type's range; found by fuzz/model_files_fuzz) and
// 2.5 by truncation. JsonGet<T> refuses, with the json type_error the callers already report,
// any value an integer T (or a vector of them) cannot hold exactly.
#pragma once

#include <limits>
#include <type_traits>
#include <vector>

#include <nlohmann/json.hpp>

namespace sharedllm {

namespace json_fields_internal {
template <typename T>
struct IsVector : std::false_type {};
template <typename U>
struct IsVector<std::vector<U>> : std::true_type {};

template <typename T>
void CheckInteger(const nlohmann::json& v) {
  bool fits = false;
  if (v.is_number_unsigned()) {
    fits = v.get<uint64_t>() <= static_cast<uint64_t>(std::numeric_limits<T>::max());
  } else if (v.is_number_integer()) {
    const int64_t x = v.get<int64_t>();
    fits = std::numeric_limits<T>::is_signed ? x >= static_cast<int64_t>(std::numeric_limits<T>::min()) &&
                                                   x <= static_cast<int64_t>(std::numeric_limits<T>::max())
                                             : x >= 0;
  }
  if (!fits) throw nlohmann::json::type_error::create(302, "expected an integer, found " + v.dump(), &v);
}
}  // namespace json_fields_internal

template <typename T>
T JsonGet(const nlohmann::json& v) {
  using namespace json_fields_internal;
  if constexpr (std::is_integral_v<T> && !std::is_same_v<T, bool>) {
    CheckInteger<T>(v);
  } else if constexpr (IsVector<T>::value) {
    using U = typename T::value_type;
    if constexpr (std::is_integral_v<U> && !std::is_same_v<U, bool>) {
      if (!v.is_array()) throw nlohmann::json::type_error::create(302, "expected an array", &v);
      for (const auto& e : v) CheckInteger<U>(e);
    }
  }
  return v.get<T>();
}

// `j[key]` read as T when present (and not null), else `fallback`.
template <typename T>
T JsonValue(const nlohmann::json& j, const char* key, const T& fallback) {
  const auto it = j.find(key);
  return it == j.end() || it->is_null() ? fallback : JsonGet<T>(*it);
}

// The same for a record read as far as it is sound: a value of the wrong type (a string for a
// number, a number no T holds) counts as absent.
template <typename T>
T JsonValueOr(const nlohmann::json& j, const char* key, const T& fallback) {
  try {
    return JsonValue(j, key, fallback);
  } catch (const nlohmann::json::exception&) {
    return fallback;
  }
}

}  // namespace sharedllm
