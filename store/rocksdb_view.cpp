#include "store/rocksdb_view.h"

#include <memory>

#include "absl/strings/str_cat.h"
#include "store/key_codec.h"

namespace sharedllm::treestore {

absl::Status FromRocks(const rocksdb::Status& s, const std::string& context) {
  if (s.ok()) return absl::OkStatus();
  const std::string message = absl::StrCat(context, ": ", s.ToString());
  if (s.IsNotFound()) return absl::NotFoundError(message);
  if (s.IsCorruption()) return absl::DataLossError(message);
  if (s.IsNoSpace() || s.IsMemoryLimit()) return absl::ResourceExhaustedError(message);
  // IO errors include "lock held by another process" on open: retryable, hence UNAVAILABLE.
  if (s.IsIOError() || s.IsBusy() || s.IsTryAgain() || s.IsShutdownInProgress()) {
    return absl::UnavailableError(message);
  }
  if (s.IsTimedOut()) return absl::DeadlineExceededError(message);
  if (s.IsAborted()) return absl::AbortedError(message);
  if (s.IsInvalidArgument()) return absl::InvalidArgumentError(message);
  if (s.IsNotSupported()) return absl::UnimplementedError(message);
  return absl::InternalError(message);
}

SnapshotView::SnapshotView(rocksdb::DB* db,
                           const std::vector<rocksdb::ColumnFamilyHandle*>& handles)
    : db_(db), handles_(handles), snapshot_(db->GetSnapshot()) {
  options_.snapshot = snapshot_;
}

SnapshotView::~SnapshotView() { db_->ReleaseSnapshot(snapshot_); }

absl::Status SnapshotView::Get(Family family, const std::string& key, std::string* value) const {
  return FromRocks(db_->Get(options_, handles_[family], ToSlice(key), value),
                   absl::StrCat("read ", DescribeKey(RocksDbTreeStore::FamilyName(family), key)));
}

absl::Status SnapshotView::Scan(Family family, const std::string& prefix, const std::string& start,
                                const ScanFn& fn) const {
  const std::string upper = PrefixSuccessor(prefix);
  const rocksdb::Slice upper_slice = ToSlice(upper);
  rocksdb::ReadOptions options = options_;
  if (!upper.empty()) options.iterate_upper_bound = &upper_slice;  // outlives the iterator
  std::unique_ptr<rocksdb::Iterator> it(db_->NewIterator(options, handles_[family]));
  bool stop = false;
  for (it->Seek(ToSlice(start)); it->Valid() && !stop; it->Next()) {
    if (absl::Status s = fn(ToView(it->key()), ToView(it->value()), &stop); !s.ok()) return s;
  }
  return FromRocks(
      it->status(),
      absl::StrCat("scan ", DescribeKey(RocksDbTreeStore::FamilyName(family), prefix)));
}

}  // namespace sharedllm::treestore
