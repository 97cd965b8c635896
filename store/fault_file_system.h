// A rocksdb::FileSystem that injects storage faults, for crash trials and tests (in the manner of
// RocksDB's FaultInjectionTestFS, which Debian's package does not ship). Over the operating
// system's file system it
//
//   - keeps a journal of what was made durable: each file's size at its last Sync/Fsync, each
//     directory sync, each rename (with a copy of the file a rename replaced). After the process
//     is killed, ApplyPowerLoss() cuts the files back to what a power loss would have left:
//     data not synced is dropped, a name (a new file, a rename) not followed by a sync of its
//     directory is undone. A run that ends by destroying the file system ends clean: nothing is
//     dropped;
//   - makes writes fail with "no space left on device" once a budget of bytes is written;
//   - makes operations (appends, syncs, reads, creations, renames) fail with an I/O error at a
//     random one in N, at most a given number of times;
//   - can be frozen, as a process dies: from then on writes, syncs, renames and deletions do
//     nothing, so that an in-process test can "crash", then apply the power loss and reopen.
//
// Deletions are not undone (a file deleted without a directory sync stays deleted), and ranges
// synced with RangeSync do not count as durable. Directories created are assumed durable.
#pragma once

#include <atomic>
#include <cstdint>
#include <memory>
#include <mutex>
#include <random>
#include <string>

#include <rocksdb/file_system.h>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace sharedllm {

struct StorageFaults {
  std::string journal;              // file recording syncs and names (outside the data directory)
  uint64_t seed = 1;                // of the random I/O errors
  int64_t no_space_after_bytes = -1;  // appends past this many bytes fail with ENOSPC; -1: never
  int64_t error_one_in = 0;         // an operation fails with an I/O error at one in N; 0: never
  int64_t max_errors = -1;          // at most this many injected I/O errors; -1: no limit
  // false: no fault is injected (the journal is kept) until Arm(), e.g. once a server serves,
  // so that its start-up is not what the faults hit.
  bool armed = true;
};

// "journal=PATH[,seed=N][,no_space_after_kb=N][,error_one_in=N][,max_errors=N]".
absl::StatusOr<StorageFaults> ParseStorageFaults(absl::string_view spec);

// What ApplyPowerLoss did.
struct PowerLossReport {
  bool clean = true;          // the journal ended clean (or there was none): nothing was done
  int64_t truncated = 0;      // files cut back to their synced size
  int64_t bytes_dropped = 0;  // bytes those cuts removed
  int64_t removed = 0;        // names removed (created or renamed to, never made durable)
  int64_t restored = 0;       // files a rename had replaced, put back
};

// Reads the journal a killed process left and applies the power loss it describes; removes the
// journal and its copies. No journal: nothing to do.
absl::StatusOr<PowerLossReport> ApplyPowerLoss(const std::string& journal);

class FaultFileSystem : public rocksdb::FileSystemWrapper {
 public:
  // Starts a new journal at faults.journal (apply the previous one's power loss first).
  static absl::StatusOr<std::shared_ptr<FaultFileSystem>> Open(const StorageFaults& faults);
  ~FaultFileSystem() override;  // ends the journal clean unless frozen

  const char* Name() const override { return "SharedLLMFaultFileSystem"; }

  // From now on writes, syncs, renames and deletions do nothing (the process "died").
  void Freeze() { frozen_ = true; }
  bool frozen() const { return frozen_; }
  int64_t injected_errors() const { return injected_; }
  // Changes the faults of a running file system (tests): I/O errors at one in `one_in` (0: none),
  // at most `max_errors` more (-1: no limit); no space once `bytes` in all are written (-1: never).
  void SetErrors(int64_t one_in, int64_t max_errors);
  void SetNoSpaceAfter(int64_t bytes) { no_space_after_ = bytes; }
  // Starts injecting the configured faults; the no-space budget counts from here.
  void Arm() {
    written_ = 0;
    armed_ = true;
  }
  int64_t bytes_written() const { return written_; }

  rocksdb::IOStatus NewWritableFile(const std::string& f, const rocksdb::FileOptions& o,
                                    std::unique_ptr<rocksdb::FSWritableFile>* r,
                                    rocksdb::IODebugContext* dbg) override;
  rocksdb::IOStatus ReopenWritableFile(const std::string& f, const rocksdb::FileOptions& o,
                                       std::unique_ptr<rocksdb::FSWritableFile>* r,
                                       rocksdb::IODebugContext* dbg) override;
  rocksdb::IOStatus NewRandomAccessFile(const std::string& f, const rocksdb::FileOptions& o,
                                        std::unique_ptr<rocksdb::FSRandomAccessFile>* r,
                                        rocksdb::IODebugContext* dbg) override;
  rocksdb::IOStatus NewDirectory(const std::string& name, const rocksdb::IOOptions& o,
                                 std::unique_ptr<rocksdb::FSDirectory>* r,
                                 rocksdb::IODebugContext* dbg) override;
  rocksdb::IOStatus RenameFile(const std::string& src, const std::string& dst,
                               const rocksdb::IOOptions& o, rocksdb::IODebugContext* dbg) override;
  rocksdb::IOStatus DeleteFile(const std::string& f, const rocksdb::IOOptions& o,
                               rocksdb::IODebugContext* dbg) override;

  // Used by the files and directories this file system hands out.
  rocksdb::IOStatus MaybeError(const char* what);              // a random injected I/O error
  rocksdb::IOStatus ChargeWrite(size_t bytes);                 // ENOSPC past the budget
  void Record(const std::string& line);                        // one journal line
  std::string Normal(const std::string& path) const;           // lexically normal, no trailing /

 private:
  FaultFileSystem(const StorageFaults& faults, int journal_fd);
  // NewWritableFile (truncates) and ReopenWritableFile (keeps the content), journaled and wrapped.
  rocksdb::IOStatus OpenForWrite(const std::string& fname, bool reopen, const rocksdb::FileOptions& o,
                                 std::unique_ptr<rocksdb::FSWritableFile>* r,
                                 rocksdb::IODebugContext* dbg);

  const StorageFaults faults_;
  const int journal_fd_;
  std::atomic<bool> frozen_{false};
  std::atomic<bool> armed_;
  std::atomic<int64_t> written_{0};
  std::atomic<int64_t> injected_{0};
  std::atomic<int64_t> backups_{0};
  std::atomic<int64_t> no_space_after_;
  int64_t error_one_in_ = 0, errors_left_ = -1;  // under mu_
  std::mutex mu_;  // the generator and the journal's line order
  std::mt19937_64 rng_;
};

}  // namespace sharedllm
