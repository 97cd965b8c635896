// The storage layer with faults (store/fault_file_system.h, store/storage.h): what a power loss
// keeps and drops, and how the tree store behaves over I/O errors and a full disk. Each test
// "crashes" by freezing the file system (nothing more reaches the disk, as when a process dies),
// closes, applies the power loss the journal describes and reopens on the operating system's
// file system.
#include "store/fault_file_system.h"

#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <atomic>
#include <mutex>
#include <set>
#include <sstream>
#include <thread>
#include <vector>

#include "store/rocksdb_tree_store.h"
#include "store/storage.h"
#include "tests/test_util.h"

namespace sharedllm {
namespace {

using test::TempDir;
namespace fs = std::filesystem;

std::string Read(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::stringstream s;
  s << in.rdbuf();
  return s.str();
}

std::shared_ptr<FaultFileSystem> OpenFaults(const std::string& journal) {
  StorageFaults f;
  f.journal = journal;
  auto fs = FaultFileSystem::Open(f);
  EXPECT_TRUE(fs.ok()) << fs.status();
  return *fs;
}

// Appends `data` to a new file through `fs`; syncs it when asked.
void WriteFile(rocksdb::FileSystem& fs, const std::string& path, const std::string& data, bool sync) {
  std::unique_ptr<rocksdb::FSWritableFile> f;
  ASSERT_TRUE(fs.NewWritableFile(path, rocksdb::FileOptions(), &f, nullptr).ok());
  ASSERT_TRUE(f->Append(data, rocksdb::IOOptions(), nullptr).ok());
  if (sync) {
    ASSERT_TRUE(f->Fsync(rocksdb::IOOptions(), nullptr).ok());
  }
  ASSERT_TRUE(f->Close(rocksdb::IOOptions(), nullptr).ok());
}

void SyncDir(rocksdb::FileSystem& fs, const std::string& dir) {
  std::unique_ptr<rocksdb::FSDirectory> d;
  ASSERT_TRUE(fs.NewDirectory(dir, rocksdb::IOOptions(), &d, nullptr).ok());
  ASSERT_TRUE(d->Fsync(rocksdb::IOOptions(), nullptr).ok());
}

DocumentMeta Meta(const std::string& id) {
  DocumentMeta m;
  m.tenant = "t";
  m.document_id = id;
  m.state = kDocumentIndexing;
  m.num_chunks = 1;
  m.model_fingerprint = "f";
  return m;
}

std::unique_ptr<RocksDbTreeStore> OpenStore(const std::string& path, std::shared_ptr<Storage> storage,
                                            bool sync = true) {
  RocksDbTreeStoreOptions o;
  o.path = path;
  o.storage = std::move(storage);
  o.sync_writes = sync;
  o.block_cache_mb = 1;
  auto store = RocksDbTreeStore::Open(o);
  EXPECT_TRUE(store.ok()) << store.status();
  return store.ok() ? *std::move(store) : nullptr;
}

TEST(FaultFileSystemTest, PowerLossDropsWhatWasNotSyncedAndUndoesNamesNotMadeDurable) {
  TempDir tmp;
  const std::string dir = tmp.Mkdir("d"), journal = tmp / "journal";
  WriteFile(*rocksdb::FileSystem::Default(), dir + "/current", "old", true);  // before the run
  {
    auto fs = OpenFaults(journal);
    WriteFile(*fs, dir + "/kept", "synced", true);
    SyncDir(*fs, dir);  // "kept" is durable, name and content
    std::unique_ptr<rocksdb::FSWritableFile> f;
    ASSERT_TRUE(fs->ReopenWritableFile(dir + "/kept", rocksdb::FileOptions(), &f, nullptr).ok());
    ASSERT_TRUE(f->Append(" and not synced", rocksdb::IOOptions(), nullptr).ok());
    ASSERT_TRUE(f->Close(rocksdb::IOOptions(), nullptr).ok());
    WriteFile(*fs, dir + "/new", "synced, its name never", true);
    WriteFile(*fs, dir + "/tmp", "new", true);
    ASSERT_TRUE(fs->RenameFile(dir + "/tmp", dir + "/current", rocksdb::IOOptions(), nullptr).ok());
    fs->Freeze();  // the process dies: no clean end of the journal
    EXPECT_EQ(Read(dir + "/kept"), "synced and not synced");
    EXPECT_EQ(Read(dir + "/current"), "new");
  }
  auto report = ApplyPowerLoss(journal);
  ASSERT_TRUE(report.ok()) << report.status();
  EXPECT_FALSE(report->clean);
  EXPECT_EQ(Read(dir + "/kept"), "synced");
  EXPECT_EQ(report->bytes_dropped, 15);
  EXPECT_FALSE(fs::exists(dir + "/new"));
  EXPECT_EQ(Read(dir + "/current"), "old");  // the rename was never made durable
  EXPECT_EQ(report->restored, 1);
  EXPECT_FALSE(fs::exists(journal));
  EXPECT_EQ(std::distance(fs::directory_iterator(tmp.path()), fs::directory_iterator()), 1)
      << "the journal's copies are removed";
}

TEST(FaultFileSystemTest, ARunThatEndsCleanKeepsEverything) {
  TempDir tmp;
  const std::string dir = tmp.Mkdir("d"), journal = tmp / "journal";
  {
    auto fs = OpenFaults(journal);
    WriteFile(*fs, dir + "/f", "never synced", false);
  }
  auto report = ApplyPowerLoss(journal);
  ASSERT_TRUE(report.ok());
  EXPECT_TRUE(report->clean);
  EXPECT_EQ(Read(dir + "/f"), "never synced");
}

TEST(FaultFileSystemTest, AnUploadWrittenDurablySurvivesAPowerLoss) {
  TempDir tmp;
  const std::string dir = tmp.Mkdir("uploads"), journal = tmp / "journal";
  {
    auto fs = OpenFaults(journal);
    Storage storage(fs);
    ASSERT_TRUE(storage.WriteFileDurably(dir + "/a.txt", "the text").ok());
    WriteFile(*fs, dir + "/b.txt", "written without a sync", false);
    fs->Freeze();
  }
  ASSERT_TRUE(ApplyPowerLoss(journal).ok());
  EXPECT_EQ(Read(dir + "/a.txt"), "the text");
  EXPECT_FALSE(fs::exists(dir + "/a.txt.tmp"));
  EXPECT_FALSE(fs::exists(dir + "/b.txt"));
}

TEST(FaultFileSystemTest, SyncedStoreWritesSurviveAPowerLossAndUnsyncedOnesDoNot) {
  TempDir tmp;
  const std::string db = tmp / "trees", journal = tmp / "journal";
  {
    auto fs = OpenFaults(journal);
    auto store = OpenStore(db, std::make_shared<Storage>(fs), /*sync=*/true);
    ASSERT_TRUE(store);
    ASSERT_TRUE(store->PutDocument(Meta("synced")).ok());
    fs->Freeze();
  }
  ASSERT_TRUE(ApplyPowerLoss(journal).ok());
  {
    auto fs = OpenFaults(journal);
    auto store = OpenStore(db, std::make_shared<Storage>(fs), /*sync=*/false);
    ASSERT_TRUE(store);
    EXPECT_TRUE(store->GetDocument("t", "synced").ok());
    ASSERT_TRUE(store->PutDocument(Meta("not-synced")).ok());
    EXPECT_TRUE(store->GetDocument("t", "not-synced").ok());
    fs->Freeze();
  }
  auto report = ApplyPowerLoss(journal);
  ASSERT_TRUE(report.ok());
  EXPECT_GT(report->bytes_dropped, 0);
  auto store = OpenStore(db, Storage::Os());
  ASSERT_TRUE(store);
  EXPECT_TRUE(store->GetDocument("t", "synced").ok());
  EXPECT_TRUE(absl::IsNotFound(store->GetDocument("t", "not-synced").status()))
      << "a write never synced came back after a power loss: the layer dropped nothing";
}

TEST(FaultFileSystemTest, AWriteErrorRocksDbCannotResumeFromIsReportedOnceAndARestartRecovers) {
  TempDir tmp;
  int fatal = 0;
  absl::Status reported;
  {
    auto fs = OpenFaults(tmp / "journal");
    RocksDbTreeStoreOptions o;
    o.path = tmp / "trees";
    o.storage = std::make_shared<Storage>(fs);
    o.on_fatal_error = [&](const absl::Status& s) {
      ++fatal;
      reported = s;
    };
    auto store = RocksDbTreeStore::Open(o);
    ASSERT_TRUE(store.ok()) << store.status();
    ASSERT_TRUE((*store)->PutDocument(Meta("before")).ok());
    fs->SetErrors(/*one_in=*/1, /*max_errors=*/1);  // the next operation (the log append) fails
    const absl::Status failed = (*store)->PutDocument(Meta("a"));
    EXPECT_TRUE(absl::IsUnavailable(failed)) << failed;
    EXPECT_EQ(fatal, 1);
    EXPECT_TRUE(absl::IsUnavailable(reported)) << reported;
    EXPECT_TRUE(absl::IsUnavailable((*store)->PutDocument(Meta("b"))));  // no writes until a restart
    EXPECT_EQ(fatal, 1) << "reported once";
    EXPECT_TRUE((*store)->GetDocument("t", "before").ok()) << "reads go on";
  }
  auto store = OpenStore(tmp / "trees", Storage::Os());
  ASSERT_TRUE(store);
  EXPECT_TRUE(store->GetDocument("t", "before").ok());
  EXPECT_TRUE(store->PutDocument(Meta("b")).ok());
}

TEST(FaultFileSystemTest, AReadErrorFailsThatReadOnly) {
  TempDir tmp;
  {
    auto store = OpenStore(tmp / "trees", Storage::Os());
    ASSERT_TRUE(store && store->PutDocument(Meta("a")).ok());
  }
  auto fs = OpenFaults(tmp / "journal");
  int fatal = 0;
  RocksDbTreeStoreOptions o;
  o.path = tmp / "trees";
  o.storage = std::make_shared<Storage>(fs);
  o.block_cache_mb = 1;
  o.on_fatal_error = [&](const absl::Status&) { ++fatal; };
  auto store = RocksDbTreeStore::Open(o);  // the log replayed into a table file: reads hit the disk
  ASSERT_TRUE(store.ok()) << store.status();
  fs->SetErrors(1, 1);
  const auto failed = (*store)->GetDocument("t", "a");
  EXPECT_TRUE(absl::IsUnavailable(failed.status())) << failed.status();
  EXPECT_EQ(fs->injected_errors(), 1);
  EXPECT_TRUE((*store)->GetDocument("t", "a").ok());
  EXPECT_TRUE((*store)->PutDocument(Meta("b")).ok());
  EXPECT_EQ(fatal, 0);
}

TEST(FaultFileSystemTest, AFullDiskRefusesWritesWithResourceExhaustedUntilThereIsRoom) {
  TempDir tmp;
  auto fs = OpenFaults(tmp / "journal");
  int fatal = 0;
  RocksDbTreeStoreOptions o;
  o.path = tmp / "trees";
  o.storage = std::make_shared<Storage>(fs);
  o.on_fatal_error = [&](const absl::Status&) { ++fatal; };
  auto opened = RocksDbTreeStore::Open(o);
  ASSERT_TRUE(opened.ok()) << opened.status();
  auto& store = *opened;
  ASSERT_TRUE(store->PutDocument(Meta("before")).ok());
  fs->SetNoSpaceAfter(fs->bytes_written());
  const absl::Status full = store->PutDocument(Meta("after"));
  EXPECT_TRUE(absl::IsResourceExhausted(full)) << full;
  EXPECT_TRUE(store->GetDocument("t", "before").ok());
  Storage storage(fs);
  const absl::Status upload = storage.WriteFileDurably(tmp / "upload.txt", "text");
  EXPECT_TRUE(absl::IsResourceExhausted(upload)) << upload;
  EXPECT_FALSE(fs::exists(tmp / "upload.txt"));
  EXPECT_FALSE(fs::exists(tmp / "upload.txt.tmp"));
  fs->SetNoSpaceAfter(-1);  // room again: RocksDB resumes by itself (it polls for free space)
  absl::Status after;
  for (int i = 0; i < 300; ++i) {
    after = store->PutDocument(Meta("after"));
    if (after.ok()) break;
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
  EXPECT_TRUE(after.ok()) << after;
  EXPECT_EQ(fatal, 0) << "a full disk is not fatal";
}

// Writers at once on a disk that fills up and frees again: no write acknowledged is lost (after a
// restart), and the process survives (RocksDB 7.8, built with its assertions, aborted in a crash
// trial when it wrote to a write-ahead log after a failed write to it).
TEST(FaultFileSystemTest, ConcurrentWritersOnADiskThatFillsUpLoseNoAcknowledgedWrite) {
  for (int round = 0; round < 12; ++round) {
    TempDir tmp;
    std::set<std::string> acknowledged;
    {
      auto fs = OpenFaults(tmp / "journal");
      auto store = OpenStore(tmp / "trees", std::make_shared<Storage>(fs));
      ASSERT_TRUE(store);
      std::atomic<bool> stop{false};
      std::mutex mu;
      std::vector<std::thread> writers;
      for (int w = 0; w < 4; ++w) {
        writers.emplace_back([&, w] {
          for (int i = 0; !stop; ++i) {
            const std::string id = "w" + std::to_string(w) + "-" + std::to_string(i);
            if (store->PutDocument(Meta(id)).ok()) {
              std::lock_guard<std::mutex> lock(mu);
              acknowledged.insert(id);
            }
          }
        });
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(20));
      fs->SetNoSpaceAfter(fs->bytes_written() + 997 * round);
      std::this_thread::sleep_for(std::chrono::milliseconds(150));
      fs->SetNoSpaceAfter(-1);
      std::this_thread::sleep_for(std::chrono::milliseconds(150));
      stop = true;
      for (auto& t : writers) t.join();
    }
    auto store = OpenStore(tmp / "trees", Storage::Os());
    ASSERT_TRUE(store);
    for (const std::string& id : acknowledged) {
      ASSERT_TRUE(store->GetDocument("t", id).ok()) << "round " << round << ": " << id << " was acknowledged";
    }
  }
}

TEST(FaultFileSystemTest, SpecsParseAndBadOnesAreRefused) {
  auto f = ParseStorageFaults("journal=/tmp/j,seed=7,no_space_after_kb=2,error_one_in=100,max_errors=3");
  ASSERT_TRUE(f.ok()) << f.status();
  EXPECT_EQ(f->journal, "/tmp/j");
  EXPECT_EQ(f->seed, 7u);
  EXPECT_EQ(f->no_space_after_bytes, 2048);
  EXPECT_EQ(f->error_one_in, 100);
  EXPECT_EQ(f->max_errors, 3);
  EXPECT_FALSE(ParseStorageFaults("seed=1").ok());                  // no journal
  EXPECT_FALSE(ParseStorageFaults("journal=/j,speed=1").ok());      // unknown
  EXPECT_FALSE(ParseStorageFaults("journal=/j,seed=x").ok());       // not a number
  EXPECT_FALSE(ParseStorageFaults("journal=/j,error_one_in").ok());  // no value
}

}  // namespace
}  // namespace sharedllm
