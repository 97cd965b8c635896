#include "store/fault_file_system.h"

#include <fcntl.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <map>
#include <sstream>
#include <vector>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"

namespace sharedllm {
namespace {

namespace fs = std::filesystem;
using rocksdb::IOStatus;

// Journal lines, fields separated by tabs, the path(s) last:
//   W <existed 0|1> <size> <path>   opened for writing, its content then <size> bytes
//   S <size> <path>                 synced: its first <size> bytes are durable
//   D <dir>                         directory synced: the names in it are durable
//   R <backup|-> <src> <dst>        renamed; <backup> holds the file <dst> replaced
//   X <path>                        deleted
//   C                               the run ended clean
constexpr char kClean[] = "C";

std::string Parent(const std::string& path) { return fs::path(path).parent_path().string(); }

// Copies src to dst with plain calls (the journal's own files are not subject to faults).
bool CopyFile(const std::string& src, const std::string& dst) {
  std::error_code ec;
  return fs::copy_file(src, dst, fs::copy_options::overwrite_existing, ec) && !ec;
}

class FaultWritableFile : public rocksdb::FSWritableFileOwnerWrapper {
 public:
  FaultWritableFile(FaultFileSystem* fs, std::string path, uint64_t size,
                    std::unique_ptr<rocksdb::FSWritableFile> target)
      : FSWritableFileOwnerWrapper(std::move(target)), fs_(fs), path_(std::move(path)), size_(size) {}

  IOStatus Append(const rocksdb::Slice& data, const rocksdb::IOOptions& o,
                  rocksdb::IODebugContext* dbg) override {
    if (fs_->frozen()) return IOStatus::OK();
    if (IOStatus s = Charge(data.size()); !s.ok()) return s;
    IOStatus s = target()->Append(data, o, dbg);
    if (s.ok()) size_ += data.size();
    return s;
  }
  IOStatus Append(const rocksdb::Slice& data, const rocksdb::IOOptions& o,
                  const rocksdb::DataVerificationInfo&, rocksdb::IODebugContext* dbg) override {
    return Append(data, o, dbg);
  }
  IOStatus PositionedAppend(const rocksdb::Slice& data, uint64_t offset, const rocksdb::IOOptions& o,
                            rocksdb::IODebugContext* dbg) override {
    if (fs_->frozen()) return IOStatus::OK();
    if (IOStatus s = Charge(data.size()); !s.ok()) return s;
    IOStatus s = target()->PositionedAppend(data, offset, o, dbg);
    if (s.ok()) size_ = std::max<uint64_t>(size_, offset + data.size());
    return s;
  }
  IOStatus PositionedAppend(const rocksdb::Slice& data, uint64_t offset, const rocksdb::IOOptions& o,
                            const rocksdb::DataVerificationInfo&, rocksdb::IODebugContext* dbg) override {
    return PositionedAppend(data, offset, o, dbg);
  }
  IOStatus Truncate(uint64_t size, const rocksdb::IOOptions& o, rocksdb::IODebugContext* dbg) override {
    if (fs_->frozen()) return IOStatus::OK();
    IOStatus s = target()->Truncate(size, o, dbg);
    if (s.ok()) size_ = size;
    return s;
  }
  IOStatus Sync(const rocksdb::IOOptions& o, rocksdb::IODebugContext* dbg) override {
    return Synced(target()->Sync(o, dbg));
  }
  IOStatus Fsync(const rocksdb::IOOptions& o, rocksdb::IODebugContext* dbg) override {
    return Synced(target()->Fsync(o, dbg));
  }
  IOStatus RangeSync(uint64_t offset, uint64_t nbytes, const rocksdb::IOOptions& o,
                     rocksdb::IODebugContext* dbg) override {
    if (fs_->frozen()) return IOStatus::OK();
    return target()->RangeSync(offset, nbytes, o, dbg);  // not durable here (see the header)
  }
  IOStatus Flush(const rocksdb::IOOptions& o, rocksdb::IODebugContext* dbg) override {
    if (fs_->frozen()) return IOStatus::OK();
    return target()->Flush(o, dbg);
  }

 private:
  IOStatus Charge(size_t n) {
    if (IOStatus s = fs_->MaybeError("append"); !s.ok()) return s;
    return fs_->ChargeWrite(n);
  }
  // A sync that failed (or is made to fail after it ran) promised nothing: no journal line.
  IOStatus Synced(IOStatus done) {
    if (fs_->frozen()) return IOStatus::OK();
    if (!done.ok()) return done;
    if (IOStatus s = fs_->MaybeError("sync"); !s.ok()) return s;
    fs_->Record(absl::StrCat("S\t", size_.load(), "\t", path_));
    return done;
  }

  FaultFileSystem* const fs_;
  const std::string path_;
  std::atomic<uint64_t> size_;
};

class FaultRandomAccessFile : public rocksdb::FSRandomAccessFileOwnerWrapper {
 public:
  FaultRandomAccessFile(FaultFileSystem* fs, std::unique_ptr<rocksdb::FSRandomAccessFile> target)
      : FSRandomAccessFileOwnerWrapper(std::move(target)), fs_(fs) {}
  IOStatus Read(uint64_t offset, size_t n, const rocksdb::IOOptions& o, rocksdb::Slice* result,
                char* scratch, rocksdb::IODebugContext* dbg) const override {
    if (IOStatus s = fs_->MaybeError("read"); !s.ok()) return s;
    return target()->Read(offset, n, o, result, scratch, dbg);
  }
  IOStatus MultiRead(rocksdb::FSReadRequest* reqs, size_t num_reqs, const rocksdb::IOOptions& o,
                     rocksdb::IODebugContext* dbg) override {
    if (IOStatus s = fs_->MaybeError("read"); !s.ok()) return s;
    return target()->MultiRead(reqs, num_reqs, o, dbg);
  }

 private:
  FaultFileSystem* const fs_;
};

class FaultDirectory : public rocksdb::FSDirectoryWrapper {
 public:
  FaultDirectory(FaultFileSystem* fs, std::string dir, std::unique_ptr<rocksdb::FSDirectory> target)
      : FSDirectoryWrapper(std::move(target)), fs_(fs), dir_(std::move(dir)) {}
  IOStatus Fsync(const rocksdb::IOOptions& o, rocksdb::IODebugContext* dbg) override {
    return Synced(FSDirectoryWrapper::Fsync(o, dbg));
  }
  IOStatus FsyncWithDirOptions(const rocksdb::IOOptions& o, rocksdb::IODebugContext* dbg,
                               const rocksdb::DirFsyncOptions& d) override {
    return Synced(FSDirectoryWrapper::FsyncWithDirOptions(o, dbg, d));
  }

 private:
  IOStatus Synced(IOStatus done) {
    if (fs_->frozen()) return IOStatus::OK();
    if (!done.ok()) return done;
    if (IOStatus s = fs_->MaybeError("directory sync"); !s.ok()) return s;
    fs_->Record(absl::StrCat("D\t", dir_));
    return done;
  }
  FaultFileSystem* const fs_;
  const std::string dir_;
};

}  // namespace

absl::StatusOr<StorageFaults> ParseStorageFaults(absl::string_view spec) {
  StorageFaults f;
  for (absl::string_view item : absl::StrSplit(spec, ',', absl::SkipEmpty())) {
    const size_t eq = item.find('=');
    if (eq == absl::string_view::npos) {
      return absl::InvalidArgumentError(absl::StrCat("storage faults: \"", item, "\" is not NAME=VALUE"));
    }
    const absl::string_view name = item.substr(0, eq), value = item.substr(eq + 1);
    if (name == "journal") {
      f.journal = std::string(value);
      continue;
    }
    int64_t n = 0;
    if (!absl::SimpleAtoi(value, &n) || n < -1) {
      return absl::InvalidArgumentError(absl::StrCat("storage faults: ", name, " must be an integer >= -1"));
    }
    if (name == "seed") {
      f.seed = static_cast<uint64_t>(n);
    } else if (name == "no_space_after_kb") {
      f.no_space_after_bytes = n < 0 ? -1 : n * 1024;
    } else if (name == "error_one_in") {
      f.error_one_in = std::max<int64_t>(0, n);
    } else if (name == "max_errors") {
      f.max_errors = n;
    } else {
      return absl::InvalidArgumentError(absl::StrCat(
          "storage faults: unknown \"", name,
          "\" (journal, seed, no_space_after_kb, error_one_in, max_errors)"));
    }
  }
  if (f.journal.empty()) return absl::InvalidArgumentError("storage faults: journal=PATH is required");
  return f;
}

absl::StatusOr<PowerLossReport> ApplyPowerLoss(const std::string& journal) {
  PowerLossReport report;
  std::ifstream in(journal);
  if (!in) return report;  // no journal: the first run
  struct File {
    int64_t synced = -1;  // -1: not written in the run; its content stays
    bool durable = true;  // its name survives
    std::string backup;   // what to put back under this name when the name is undone
  };
  std::map<std::string, File> files;
  std::vector<std::string> backups;
  std::string line;
  bool clean = false;
  while (std::getline(in, line)) {
    const std::vector<std::string> f = absl::StrSplit(line, '\t');
    clean = false;
    int64_t n = 0;
    if (f[0] == kClean) {
      clean = true;
    } else if (f[0] == "W" && f.size() == 4 && absl::SimpleAtoi(f[2], &n)) {
      auto [it, fresh] = files.try_emplace(f[3]);
      if (fresh) it->second.durable = f[1] == "1";
      it->second.synced = n;
    } else if (f[0] == "S" && f.size() == 3 && absl::SimpleAtoi(f[1], &n)) {
      files[f[2]].synced = n;
    } else if (f[0] == "D" && f.size() == 2) {
      for (auto& [path, file] : files) {
        if (Parent(path) == f[1]) {
          file.durable = true;
          file.backup.clear();
        }
      }
    } else if (f[0] == "R" && f.size() == 4) {
      if (f[1] != "-") backups.push_back(f[1]);
      File moved;
      if (auto it = files.find(f[2]); it != files.end()) {
        moved = it->second;
        files.erase(it);
      }
      moved.durable = false;
      moved.backup = f[1] == "-" ? "" : f[1];
      // Renamed over a name not yet durable itself: what comes back is what was there before.
      if (auto it = files.find(f[3]); it != files.end() && !it->second.durable) {
        moved.backup = it->second.backup;
      }
      files[f[3]] = moved;
    } else if (f[0] == "X" && f.size() == 2) {
      files.erase(f[1]);
    } else if (!line.empty()) {
      // A line cut off by the kill can only be the last one; anything else is a defect.
      if (in.peek() != EOF) return absl::DataLossError(absl::StrCat(journal, ": bad line \"", line, "\""));
    }
  }
  in.close();
  report.clean = clean;
  if (!clean) {
    for (const auto& [path, file] : files) {
      std::error_code ec;
      if (!file.durable) {
        if (fs::remove(path, ec)) report.removed++;
        if (!file.backup.empty() && fs::exists(file.backup, ec)) {
          if (!CopyFile(file.backup, path)) {
            return absl::InternalError(absl::StrCat("cannot put back ", path, " from ", file.backup));
          }
          report.restored++;
        }
        continue;
      }
      if (file.synced < 0) continue;
      const auto size = fs::file_size(path, ec);
      if (ec || static_cast<int64_t>(size) <= file.synced) continue;
      fs::resize_file(path, static_cast<uintmax_t>(file.synced), ec);
      if (ec) return absl::InternalError(absl::StrCat("cannot truncate ", path, ": ", ec.message()));
      report.truncated++;
      report.bytes_dropped += static_cast<int64_t>(size) - file.synced;
    }
  }
  std::error_code ec;
  for (const std::string& b : backups) fs::remove(b, ec);
  fs::remove(journal, ec);
  return report;
}

absl::StatusOr<std::shared_ptr<FaultFileSystem>> FaultFileSystem::Open(const StorageFaults& faults) {
  const int fd = ::open(faults.journal.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_APPEND | O_CLOEXEC, 0600);
  if (fd < 0) {
    return absl::UnavailableError(absl::StrCat("storage faults: cannot open the journal ", faults.journal,
                                               ": ", std::strerror(errno)));
  }
  return std::shared_ptr<FaultFileSystem>(new FaultFileSystem(faults, fd));
}

FaultFileSystem::FaultFileSystem(const StorageFaults& faults, int journal_fd)
    : FileSystemWrapper(rocksdb::FileSystem::Default()),
      faults_(faults),
      journal_fd_(journal_fd),
      armed_(faults.armed),
      no_space_after_(faults.no_space_after_bytes),
      error_one_in_(faults.error_one_in),
      errors_left_(faults.max_errors),
      rng_(faults.seed) {}

void FaultFileSystem::SetErrors(int64_t one_in, int64_t max_errors) {
  std::lock_guard<std::mutex> lock(mu_);
  error_one_in_ = one_in;
  errors_left_ = max_errors;
}

FaultFileSystem::~FaultFileSystem() {
  if (!frozen_) Record(kClean);
  ::close(journal_fd_);
}

std::string FaultFileSystem::Normal(const std::string& path) const {
  std::string p = fs::path(path).lexically_normal().string();
  while (p.size() > 1 && p.back() == '/') p.pop_back();
  return p;
}

void FaultFileSystem::Record(const std::string& line) {
  const std::string out = line + "\n";
  std::lock_guard<std::mutex> lock(mu_);
  // One write per line, O_APPEND: a kill leaves whole lines and at most one cut-off last line.
  // Not synced: the journal stands for what the disk promised, and a SIGKILL keeps the page cache.
  size_t done = 0;
  while (done < out.size()) {
    const ssize_t n = ::write(journal_fd_, out.data() + done, out.size() - done);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) break;
    done += static_cast<size_t>(n);
  }
}

IOStatus FaultFileSystem::MaybeError(const char* what) {
  if (!armed_) return IOStatus::OK();
  std::lock_guard<std::mutex> lock(mu_);
  if (error_one_in_ <= 0 || errors_left_ == 0) return IOStatus::OK();
  if (rng_() % static_cast<uint64_t>(error_one_in_) != 0) return IOStatus::OK();
  if (errors_left_ > 0) errors_left_--;
  injected_++;
  return IOStatus::IOError(absl::StrCat(what, ": injected I/O error"));
}

IOStatus FaultFileSystem::ChargeWrite(size_t bytes) {
  if (!armed_) return IOStatus::OK();
  const int64_t limit = no_space_after_;
  if (limit < 0) {
    written_ += static_cast<int64_t>(bytes);
    return IOStatus::OK();
  }
  int64_t before = written_.load();
  do {
    if (before + static_cast<int64_t>(bytes) > limit) {
      return IOStatus::NoSpace("injected: no space left on device");
    }
  } while (!written_.compare_exchange_weak(before, before + static_cast<int64_t>(bytes)));
  return IOStatus::OK();
}

IOStatus FaultFileSystem::OpenForWrite(const std::string& fname, bool reopen,
                                       const rocksdb::FileOptions& o,
                                       std::unique_ptr<rocksdb::FSWritableFile>* r,
                                       rocksdb::IODebugContext* dbg) {
  if (frozen_) return IOStatus::IOError("the storage is frozen (a simulated crash)");
  if (IOStatus s = MaybeError("create"); !s.ok()) return s;
  const std::string f = Normal(fname);
  // A new file starts empty; a reopened one keeps what it holds.
  uint64_t size = 0;
  const bool existed = target()->GetFileSize(f, rocksdb::IOOptions(), &size, dbg).ok();
  if (!existed || !reopen) size = 0;
  Record(absl::StrCat("W\t", existed ? 1 : 0, "\t", size, "\t", f));  // before: a kill in between undoes it
  IOStatus s = reopen ? target()->ReopenWritableFile(f, o, r, dbg) : target()->NewWritableFile(f, o, r, dbg);
  if (s.ok()) *r = std::make_unique<FaultWritableFile>(this, f, size, std::move(*r));
  return s;
}

IOStatus FaultFileSystem::NewWritableFile(const std::string& fname, const rocksdb::FileOptions& o,
                                          std::unique_ptr<rocksdb::FSWritableFile>* r,
                                          rocksdb::IODebugContext* dbg) {
  return OpenForWrite(fname, /*reopen=*/false, o, r, dbg);
}

IOStatus FaultFileSystem::ReopenWritableFile(const std::string& fname, const rocksdb::FileOptions& o,
                                             std::unique_ptr<rocksdb::FSWritableFile>* r,
                                             rocksdb::IODebugContext* dbg) {
  return OpenForWrite(fname, /*reopen=*/true, o, r, dbg);
}

IOStatus FaultFileSystem::NewRandomAccessFile(const std::string& f, const rocksdb::FileOptions& o,
                                              std::unique_ptr<rocksdb::FSRandomAccessFile>* r,
                                              rocksdb::IODebugContext* dbg) {
  IOStatus s = target()->NewRandomAccessFile(f, o, r, dbg);
  if (s.ok()) *r = std::make_unique<FaultRandomAccessFile>(this, std::move(*r));
  return s;
}

IOStatus FaultFileSystem::NewDirectory(const std::string& name, const rocksdb::IOOptions& o,
                                       std::unique_ptr<rocksdb::FSDirectory>* r,
                                       rocksdb::IODebugContext* dbg) {
  IOStatus s = target()->NewDirectory(name, o, r, dbg);
  if (s.ok()) *r = std::make_unique<FaultDirectory>(this, Normal(name), std::move(*r));
  return s;
}

IOStatus FaultFileSystem::RenameFile(const std::string& src, const std::string& dst,
                                     const rocksdb::IOOptions& o, rocksdb::IODebugContext* dbg) {
  if (frozen_) return IOStatus::OK();
  if (IOStatus s = MaybeError("rename"); !s.ok()) return s;
  const std::string from = Normal(src), to = Normal(dst);
  std::string backup = "-";
  if (target()->FileExists(to, o, dbg).ok()) {
    backup = absl::StrCat(faults_.journal, ".b", backups_++);
    if (!CopyFile(to, backup)) return IOStatus::IOError("storage faults: cannot copy " + to);
  }
  Record(absl::StrCat("R\t", backup, "\t", from, "\t", to));
  return target()->RenameFile(from, to, o, dbg);
}

IOStatus FaultFileSystem::DeleteFile(const std::string& fname, const rocksdb::IOOptions& o,
                                     rocksdb::IODebugContext* dbg) {
  if (frozen_) return IOStatus::OK();
  const std::string f = Normal(fname);
  IOStatus s = target()->DeleteFile(f, o, dbg);
  if (s.ok()) Record(absl::StrCat("X\t", f));
  return s;
}

}  // namespace sharedllm
