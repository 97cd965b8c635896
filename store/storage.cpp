#include "store/storage.h"

#include <filesystem>

#include <rocksdb/file_system.h>

#include "absl/strings/str_cat.h"
#include "store/fault_file_system.h"
#include "store/rocksdb_view.h"

namespace sharedllm {

using treestore::FromRocks;  // the store's own mapping: no space is RESOURCE_EXHAUSTED, I/O UNAVAILABLE

Storage::Storage(std::shared_ptr<FaultFileSystem> faults) : fs_(faults), faults_(std::move(faults)) {}

void Storage::StartFaults() const {
  if (faults_) faults_->Arm();
}

std::shared_ptr<Storage> Storage::Os() {
  return std::make_shared<Storage>(rocksdb::FileSystem::Default());
}

absl::StatusOr<std::shared_ptr<Storage>> Storage::WithFaults(absl::string_view spec,
                                                             std::string* report) {
  absl::StatusOr<StorageFaults> faults = ParseStorageFaults(spec);
  if (!faults.ok()) return faults.status();
  faults->armed = false;  // StartFaults()
  absl::StatusOr<PowerLossReport> loss = ApplyPowerLoss(faults->journal);
  if (!loss.ok()) return loss.status();
  if (report) {
    *report = loss->clean ? "the last run ended clean"
                          : absl::StrCat("power loss applied: ", loss->truncated, " files cut back (",
                                         loss->bytes_dropped, " bytes not synced), ", loss->removed,
                                         " names removed, ", loss->restored, " put back");
  }
  absl::StatusOr<std::shared_ptr<FaultFileSystem>> fs = FaultFileSystem::Open(*faults);
  if (!fs.ok()) return fs.status();
  return std::make_shared<Storage>(*std::move(fs));
}

absl::Status Storage::WriteFileDurably(const std::string& path, absl::string_view bytes) const {
  const std::string tmp = path + ".tmp";
  const rocksdb::IOOptions io;
  auto remove_tmp = [&] { fs_->DeleteFile(tmp, io, nullptr).PermitUncheckedError(); };
  std::unique_ptr<rocksdb::FSWritableFile> file;
  rocksdb::IOStatus s = fs_->NewWritableFile(tmp, rocksdb::FileOptions(), &file, nullptr);
  if (!s.ok()) return FromRocks(s, "create " + tmp);
  s = file->Append(rocksdb::Slice(bytes.data(), bytes.size()), io, nullptr);
  if (s.ok()) s = file->Fsync(io, nullptr);
  const rocksdb::IOStatus closed = file->Close(io, nullptr);
  if (s.ok()) s = closed;
  file.reset();
  if (!s.ok()) {
    remove_tmp();
    return FromRocks(s, "write " + tmp);
  }
  s = fs_->RenameFile(tmp, path, io, nullptr);
  if (!s.ok()) {
    remove_tmp();
    return FromRocks(s, "rename " + tmp);
  }
  const std::string dir = std::filesystem::path(path).parent_path().string();
  std::unique_ptr<rocksdb::FSDirectory> d;
  s = fs_->NewDirectory(dir.empty() ? "." : dir, io, &d, nullptr);
  if (s.ok()) s = d->Fsync(io, nullptr);
  if (d) d->Close(io, nullptr).PermitUncheckedError();
  if (!s.ok()) {
    fs_->DeleteFile(path, io, nullptr).PermitUncheckedError();
    return FromRocks(s, "sync the directory of " + path);
  }
  return absl::OkStatus();
}

}  // namespace sharedllm
