// RocksDB plumbing of RocksDbTreeStore: status mapping and snapshot-consistent reads. Internal to
// store/ (it includes RocksDB headers; the public headers do not).
#pragma once

#include <functional>
#include <string>
#include <vector>

#include <rocksdb/db.h>
#include <rocksdb/slice.h>

#include "absl/status/status.h"
#include "absl/strings/string_view.h"
#include "store/rocksdb_tree_store.h"

namespace sharedllm::treestore {

// Maps a RocksDB status onto the canonical gRPC codes (docs/design/tree_store.md); `context` says what failed.
absl::Status FromRocks(const rocksdb::Status& s, const std::string& context);

inline rocksdb::Slice ToSlice(absl::string_view s) { return rocksdb::Slice(s.data(), s.size()); }
inline absl::string_view ToView(const rocksdb::Slice& s) {
  return absl::string_view(s.data(), s.size());
}

// All reads of one store call go through one snapshot, so that a call never sees half of a
// concurrent write batch (e.g. a DeleteDocument between reading the metadata and the nodes).
class SnapshotView {
 public:
  using Family = RocksDbTreeStore::Family;
  using ScanFn =
      std::function<absl::Status(absl::string_view key, absl::string_view value, bool* stop)>;

  // `handles` is indexed by Family and must outlive the view.
  SnapshotView(rocksdb::DB* db, const std::vector<rocksdb::ColumnFamilyHandle*>& handles);
  ~SnapshotView();
  SnapshotView(const SnapshotView&) = delete;
  SnapshotView& operator=(const SnapshotView&) = delete;

  // NOT_FOUND (its message names the key) when absent.
  absl::Status Get(Family family, const std::string& key, std::string* value) const;
  // Calls fn(key, value) for every key of `family` in [start, PrefixSuccessor(prefix)), in key
  // order, until fn returns an error or sets *stop.
  absl::Status Scan(Family family, const std::string& prefix, const std::string& start,
                    const ScanFn& fn) const;

 private:
  rocksdb::DB* db_;
  const std::vector<rocksdb::ColumnFamilyHandle*>& handles_;
  const rocksdb::Snapshot* snapshot_;
  rocksdb::ReadOptions options_;
};

}  // namespace sharedllm::treestore
