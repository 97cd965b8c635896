// The storage layer under everything the server keeps on disk: the tree store's RocksDB files and
// the spooled uploads go through one file system, the operating system's or, for crash trials,
// one that injects faults (store/fault_file_system.h), so a fault hits both alike.
#pragma once

#include <memory>
#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace rocksdb {
class FileSystem;
}  // namespace rocksdb

namespace sharedllm {

class FaultFileSystem;

class Storage {
 public:
  // The operating system's file system.
  static std::shared_ptr<Storage> Os();
  // Faults for crash trials: "journal=PATH[,seed=N][,no_space_after_kb=N][,error_one_in=N]
  // [,max_errors=N]". Before anything reads the files, applies the power loss that the journal of
  // a run killed before it ended describes (unsynced data dropped, names not made durable
  // undone); `report` says what it did. Errors and the full disk start with StartFaults().
  static absl::StatusOr<std::shared_ptr<Storage>> WithFaults(absl::string_view spec,
                                                             std::string* report);

  // Writes `bytes` to `path` through path.tmp, a sync, a rename over `path` and a sync of the
  // directory: once this returns OK the file survives a power loss. On an error nothing is left
  // under either name.
  absl::Status WriteFileDurably(const std::string& path, absl::string_view bytes) const;

  // With faults: from now on they are injected (the server calls it once it serves). Else nothing.
  void StartFaults() const;

  // For the tree store's RocksDB.
  const std::shared_ptr<rocksdb::FileSystem>& file_system() const { return fs_; }

  explicit Storage(std::shared_ptr<rocksdb::FileSystem> fs) : fs_(std::move(fs)) {}
  explicit Storage(std::shared_ptr<FaultFileSystem> faults);

 private:
  std::shared_ptr<rocksdb::FileSystem> fs_;
  std::shared_ptr<FaultFileSystem> faults_;  // fs_ when it injects faults
};

}  // namespace sharedllm
