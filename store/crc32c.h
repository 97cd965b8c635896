// CRC32C (Castagnoli), the checksum of every stored value. Debian's RocksDB does not install
// util/crc32c.h, so the store carries its own: SSE4.2 `crc32` instructions where the CPU has them
// (several GB/s: K/V values are megabytes per chunk), a table otherwise.
#pragma once

#include <cstddef>
#include <cstdint>

#include "absl/strings/string_view.h"

namespace sharedllm::treestore {

// CRC32C of `data`, continuing from `crc` (0 to start). Crc32c("123456789") == 0xe3069283.
uint32_t Crc32c(absl::string_view data, uint32_t crc = 0);
// The table implementation, exposed so a test can check both agree.
uint32_t Crc32cPortable(absl::string_view data, uint32_t crc = 0);

}  // namespace sharedllm::treestore
