// Indexer (service/indexer.h) races, made deterministic with its testing hooks: a thread is held
// exactly where the race window is, the competing operation runs, then the thread is let go.
// Real tiny SharedLLM (made once from models/tiny) and a real RocksDB tree store in a temp dir.
#include "service/indexer.h"

#include <gtest/gtest.h>

#include <chrono>
#include <condition_variable>
#include <filesystem>
#include <map>
#include <mutex>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#include "service/encoding.h"
#include "service/engine.h"
#include "service/metrics.h"
#include "service/query_service.h"
#include "tests/test_util.h"
#include "store/fault_file_system.h"
#include "store/rocksdb_tree_store.h"
#include "store/storage.h"

namespace sharedllm::service {
namespace {

using sharedllm::test::TempDir;
using Clock = std::chrono::steady_clock;

// Deterministic text of about `words` words.
std::string Text(int words, uint32_t seed) {
  static const char* kWords[] = {"the", "river", "north", "summer", "engine", "tree", "chunk",
                                 "memory", "licence", "source", "code", "mountain", "winter"};
  uint32_t state = seed * 2654435761u + 1u;
  std::string out;
  for (int i = 0; i < words; ++i) {
    state = state * 1664525u + 1013904223u;
    out += kWords[(state >> 8) % (sizeof(kWords) / sizeof(kWords[0]))];
    out += i % 9 == 8 ? ". " : " ";
  }
  return out;
}

// A one-shot gate: Wait() blocks (up to 30 s) until Open(); Reached() reports a thread waiting.
class Gate {
 public:
  void Wait() {
    std::unique_lock<std::mutex> lock(mu_);
    reached_ = true;
    cv_.notify_all();
    cv_.wait_for(lock, std::chrono::seconds(30), [&] { return open_; });
  }
  bool WaitReached() {
    std::unique_lock<std::mutex> lock(mu_);
    return cv_.wait_for(lock, std::chrono::seconds(30), [&] { return reached_; });
  }
  void Open() {
    std::lock_guard<std::mutex> lock(mu_);
    open_ = true;
    cv_.notify_all();
  }

 private:
  std::mutex mu_;
  std::condition_variable cv_;
  bool reached_ = false, open_ = false;
};

// Holds every thread that enters Arrive() until `expected` threads have arrived or Leave()d.
class Barrier {
 public:
  explicit Barrier(int expected) : expected_(expected) {}
  void Arrive() {
    std::unique_lock<std::mutex> lock(mu_);
    ++count_;
    cv_.notify_all();
    cv_.wait_for(lock, std::chrono::seconds(30), [&] { return count_ >= expected_; });
  }
  void Leave() {
    std::lock_guard<std::mutex> lock(mu_);
    ++count_;
    cv_.notify_all();
  }

 private:
  std::mutex mu_;
  std::condition_variable cv_;
  int count_ = 0;
  const int expected_;
};

class IndexerTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    suite_dir_ = new TempDir();
    model_dir_ = *suite_dir_ / "model";
    const auto r = sharedllm::test::Run(
        {SHAREDLLM_BIN, "init", "--base", std::string(SHAREDLLM_SOURCE_DIR) + "/models/tiny",
         "--out", model_dir_, "--layers", "1", "--chunk-size", "32", "--depth", "2", "--alphas",
         "4,2"},
        suite_dir_->path());
    if (r.exit_code != 0) {
      error_ = "sharedllm init failed: " + r.out + r.err;
      return;
    }
    EngineOptions eo;
    eo.model_dir = model_dir_;
    eo.threads = 1;
    auto engine = Engine::Load(eo);
    if (!engine.ok()) {
      error_ = std::string(engine.status().message());
      return;
    }
    engine_ = engine->release();
  }
  static void TearDownTestSuite() {
    delete engine_;
    engine_ = nullptr;
    delete suite_dir_;
    suite_dir_ = nullptr;
  }

  void SetUp() override {
    ASSERT_EQ(error_, "");
    RocksDbTreeStoreOptions so;
    so.path = dir_ / "trees";
    so.sync_writes = false;
    auto store = RocksDbTreeStore::Open(so);
    ASSERT_TRUE(store.ok()) << store.status();
    store_ = std::move(*store);
  }

  // Closes the store and opens it again over a file system with faults (returned), or over the
  // operating system's (a restart on a healthy disk; returns null).
  std::shared_ptr<FaultFileSystem> ReopenOverFaults(bool faults = true) {
    store_.reset();
    std::shared_ptr<FaultFileSystem> fs;
    RocksDbTreeStoreOptions so;
    so.path = dir_ / "trees";
    if (faults) {
      StorageFaults f;
      f.journal = dir_ / "journal";
      auto opened = FaultFileSystem::Open(f);
      EXPECT_TRUE(opened.ok()) << opened.status();
      if (!opened.ok()) return nullptr;
      fs = *opened;
      so.storage = std::make_shared<Storage>(fs);
    }
    auto store = RocksDbTreeStore::Open(so);
    EXPECT_TRUE(store.ok()) << store.status();
    if (store.ok()) store_ = std::move(*store);
    return fs;
  }

  std::unique_ptr<Indexer> MakeIndexer(IndexerOptions o, int workers = 1) {
    o.uploads_dir = dir_ / "uploads";
    o.workers = workers;
    return std::make_unique<Indexer>(*engine_, *store_, metrics_, std::move(o));
  }

  static DocumentMeta Meta(const std::string& id, const std::string& sha) {
    DocumentMeta m;
    m.tenant = "t";
    m.document_id = id;
    m.sha256 = sha;
    return m;
  }

  // Waits (up to 60 s) for a terminal state of the document's current job.
  JobSnapshot WaitTerminal(Indexer& indexer, const std::string& id) {
    const auto start = Clock::now();
    JobSnapshot last;
    int64_t version = -1;
    while (Clock::now() - start < std::chrono::seconds(60)) {
      auto s = indexer.WaitForChange("t", id, version,
                                     std::chrono::system_clock::now() + std::chrono::seconds(1));
      if (!s.ok()) continue;
      last = *s;
      version = s->version;
      if (Terminal(s->state)) break;
    }
    return last;
  }

  // The store holds exactly `text`'s tree: READY, its sha, and every chunk's tokens.
  void ExpectDocumentIs(const std::string& id, const std::string& text, const std::string& sha) {
    auto meta = store_->GetDocument("t", id);
    ASSERT_TRUE(meta.ok()) << meta.status();
    EXPECT_EQ(meta->state, kDocumentReady) << meta->error;
    EXPECT_EQ(meta->sha256, sha);
    auto tokens = engine_->Tokenize(text);
    ASSERT_TRUE(tokens.ok());
    const auto spans = engine_->ChunkSpans(static_cast<int64_t>(tokens->size()));
    EXPECT_EQ(meta->num_tokens, static_cast<int64_t>(tokens->size()));
    ASSERT_EQ(meta->num_chunks, static_cast<int64_t>(spans.size()));
    for (size_t c = 0; c < spans.size(); ++c) {
      auto stored = store_->LoadChunkTokens("t", id, static_cast<int64_t>(c));
      ASSERT_TRUE(stored.ok()) << stored.status();
      const std::vector<int64_t> want(tokens->begin() + spans[c].first,
                                      tokens->begin() + spans[c].second);
      EXPECT_EQ(*stored, want) << "chunk " << c << " holds another document's tokens";
    }
  }

  static TempDir* suite_dir_;
  static std::string model_dir_, error_;
  static Engine* engine_;
  TempDir dir_;
  Metrics metrics_{"test", "model"};
  std::unique_ptr<RocksDbTreeStore> store_;
};

TempDir* IndexerTest::suite_dir_ = nullptr;
std::string IndexerTest::model_dir_;
std::string IndexerTest::error_;
Engine* IndexerTest::engine_ = nullptr;

// The old job has encoded chunk 0 of "d" and is about to persist it when "d" is deleted and
// uploaded again with other text. A second worker indexes the new document: it persists its
// chunk 0 and is held before chunk 1. Then the old job is let go: it must not write its chunk 0
// over the new document's (nor anything else), and the new document ends READY and intact.
TEST_F(IndexerTest, DeletedJobDoesNotWriteIntoReuploadedDocument) {
  Gate old_held, new_held;
  int chunk0_calls = 0;  // calls_mu
  std::mutex calls_mu;
  IndexerOptions o;
  o.testing_before_persist = [&](const std::string& id, int64_t chunk) {
    if (id != "d") return;
    int n = 0;
    {
      std::lock_guard<std::mutex> lock(calls_mu);
      if (chunk == 0) n = ++chunk0_calls;
    }
    if (chunk == 0 && n == 1) old_held.Wait();  // the old job
    if (chunk == 1) new_held.Wait();            // the new job (the old one never gets here)
  };
  auto indexer = MakeIndexer(o, /*workers=*/2);
  const std::string old_text = Text(300, 1), new_text = Text(200, 2);
  ASSERT_TRUE(indexer->Submit(Meta("d", "old"), old_text).ok());
  ASSERT_TRUE(old_held.WaitReached());
  ASSERT_TRUE(indexer->Delete("t", "d").ok());
  auto again = indexer->Submit(Meta("d", "new"), new_text);
  ASSERT_TRUE(again.ok()) << again.status();
  ASSERT_TRUE(new_held.WaitReached());  // the new job has persisted its chunk 0
  old_held.Open();
  // The old job has finished once its worker is free: the other worker is held by the new job,
  // so a probe document becomes READY only after the old job returned.
  ASSERT_TRUE(indexer->Submit(Meta("probe", "p"), Text(40, 9)).ok());
  const JobSnapshot probe = WaitTerminal(*indexer, "probe");
  EXPECT_EQ(probe.state, JobState::kReady);
  new_held.Open();
  const JobSnapshot done = WaitTerminal(*indexer, "d");
  EXPECT_EQ(done.state, JobState::kReady) << done.error_code << " " << done.error_message;
  ExpectDocumentIs("d", new_text, "new");
}

// Same window, but the old job was cancelled first (its cleanup deletes "its" document): the
// cleanup must not delete the re-uploaded document or its upload.
TEST_F(IndexerTest, CancelledJobCleanupSparesReuploadedDocument) {
  Gate held;
  bool first = true;
  IndexerOptions o;
  o.testing_before_persist = [&](const std::string& id, int64_t chunk) {
    if (id == "d" && chunk == 0 && first) {
      first = false;
      held.Wait();
    }
  };
  auto indexer = MakeIndexer(o);
  const std::string old_text = Text(300, 3), new_text = Text(200, 4);
  ASSERT_TRUE(indexer->Submit(Meta("d", "old"), old_text).ok());
  ASSERT_TRUE(held.WaitReached());
  auto cancelled = indexer->Cancel("t", "d");
  ASSERT_TRUE(cancelled.ok()) << cancelled.status();
  EXPECT_EQ(cancelled->state, JobState::kCancelled);
  ASSERT_TRUE(indexer->Delete("t", "d").ok());
  ASSERT_TRUE(indexer->Submit(Meta("d", "new"), new_text).ok());
  held.Open();
  const JobSnapshot done = WaitTerminal(*indexer, "d");
  EXPECT_EQ(done.state, JobState::kReady) << done.error_code << " " << done.error_message;
  ExpectDocumentIs("d", new_text, "new");
}

// 24 concurrent submits of distinct documents, a queue of 4, the worker busy: exactly 4 are
// admitted. Every admitted submit is held after admission until all 24 have been decided, so
// none can leave the queue-capacity check before the others made it (the old Submit checked
// capacity under one lock and queued under another: all 24 passed the check).
TEST_F(IndexerTest, ConcurrentSubmitsNeverOverfillTheQueue) {
  constexpr int kSubmits = 24, kCapacity = 4;
  Gate busy;
  Barrier decided(kSubmits);
  IndexerOptions o;
  o.queue_capacity = kCapacity;
  o.testing_before_persist = [&](const std::string& id, int64_t) {
    if (id == "blocker") busy.Wait();
  };
  o.testing_after_admission = [&](const std::string& id) {
    if (id != "blocker") decided.Arrive();
  };
  auto indexer = MakeIndexer(o);
  ASSERT_TRUE(indexer->Submit(Meta("blocker", "b"), Text(100, 5)).ok());
  ASSERT_TRUE(busy.WaitReached());  // the worker holds the blocker: the queue is empty
  std::map<absl::StatusCode, int> codes;
  std::mutex codes_mu;
  std::vector<std::thread> threads;
  for (int i = 0; i < kSubmits; ++i) {
    threads.emplace_back([&, i] {
      auto r = indexer->Submit(Meta("c-" + std::to_string(i), "x"), Text(60, 100 + i));
      if (!r.ok()) decided.Leave();
      std::lock_guard<std::mutex> lock(codes_mu);
      ++codes[r.status().code()];
    });
  }
  for (auto& t : threads) t.join();
  busy.Open();
  EXPECT_EQ(codes[absl::StatusCode::kOk], kCapacity);
  EXPECT_EQ(codes[absl::StatusCode::kResourceExhausted], kSubmits - kCapacity);
  EXPECT_EQ(codes.size(), 2u);
}

// 16 concurrent submits of one id, all held after admission until every one is decided: exactly
// one is admitted, the others are ALREADY_EXISTS (whether refused at admission or, for a document
// that exists, under its lock).
TEST_F(IndexerTest, ConcurrentSubmitsOfOneIdAdmitOne) {
  constexpr int kSubmits = 16;
  Barrier decided(kSubmits);
  IndexerOptions o;
  o.queue_capacity = 64;
  o.testing_after_admission = [&](const std::string&) { decided.Arrive(); };
  auto indexer = MakeIndexer(o);
  std::map<absl::StatusCode, int> codes;
  std::mutex codes_mu;
  std::vector<std::thread> threads;
  for (int i = 0; i < kSubmits; ++i) {
    threads.emplace_back([&, i] {
      auto r = indexer->Submit(Meta("same", "s" + std::to_string(i)), Text(60, 200 + i));
      if (!r.ok()) decided.Leave();
      std::lock_guard<std::mutex> lock(codes_mu);
      ++codes[r.status().code()];
    });
  }
  for (auto& t : threads) t.join();
  EXPECT_EQ(codes[absl::StatusCode::kOk], 1);
  EXPECT_EQ(codes[absl::StatusCode::kAlreadyExists], kSubmits - 1);
  const JobSnapshot done = WaitTerminal(*indexer, "same");
  EXPECT_EQ(done.state, JobState::kReady) << done.error_code << " " << done.error_message;
}

// A stored job with no live one (here a document left INDEXING whose upload is gone, as after a
// crash): a wait first returns the stored state, then waits for a change until its deadline
// instead of returning at once — WatchIndexStatus loops on it, and spun at 100 % CPU.
TEST_F(IndexerTest, WaitOnAStoredJobWithoutALiveOneBlocksUntilItsDeadline) {
  DocumentMeta meta = Meta("stranded", "s");
  ASSERT_TRUE(store_->PutDocument(meta).ok());  // INDEXING
  ASSERT_TRUE(store_->PutJob("t", "stranded",
                             R"({"state": "COMPRESSING", "chunks_done": 1, "chunks_total": 3})")
                  .ok());
  auto indexer = MakeIndexer(IndexerOptions());
  auto first = indexer->WaitForChange("t", "stranded", -1,
                                      std::chrono::system_clock::now() + std::chrono::seconds(5));
  ASSERT_TRUE(first.ok()) << first.status();
  EXPECT_EQ(first->state, JobState::kCompressing);
  const auto start = Clock::now();
  auto again = indexer->WaitForChange("t", "stranded", first->version,
                                      std::chrono::system_clock::now() + std::chrono::milliseconds(300));
  EXPECT_GE(Clock::now() - start, std::chrono::milliseconds(250)) << "returned at once: a watch would spin";
  ASSERT_TRUE(again.ok()) << again.status();
  EXPECT_EQ(again->version, first->version);
  EXPECT_EQ(again->state, JobState::kCompressing);
}

// A job interrupted under one model and resumed under another (a restart with a changed --model)
// starts over from its upload: the chunk the old model stored is replaced, not kept beside the
// new model's, and the document records the model that built all of it.
TEST_F(IndexerTest, ResumeUnderAnotherModelStartsOver) {
  const std::string text = Text(400, 31), other = Text(400, 32);
  // The old model's chunk 0, of other text (so a kept one shows).
  auto old_tokens = engine_->Tokenize(other);
  ASSERT_TRUE(old_tokens.ok());
  const auto spans = engine_->ChunkSpans(static_cast<int64_t>(old_tokens->size()));
  ASSERT_GE(spans.size(), 2u);
  DocumentMeta meta = Meta("moved", Sha256Hex(text));
  meta.model_fingerprint = "another-model";
  meta.num_tokens = static_cast<int64_t>(old_tokens->size());
  meta.num_chunks = static_cast<int64_t>(spans.size());
  ASSERT_TRUE(store_->PutDocument(meta).ok());  // INDEXING
  const std::vector<int64_t> old_chunk(old_tokens->begin() + spans[0].first,
                                       old_tokens->begin() + spans[0].second);
  auto records = engine_->EncodeChunk(old_chunk, 0);
  ASSERT_TRUE(records.ok());
  const absl::Status put = store_->PutChunk("t", "moved", 0, old_chunk, *records, {});
  ASSERT_TRUE(put.ok()) << put;
  ASSERT_EQ(store_->GetDocument("t", "moved")->chunks_done, 1);
  std::filesystem::create_directories(dir_ / "uploads");
  sharedllm::test::WriteFile(std::string(dir_ / "uploads") + "/" + HexEncode("t") + "." + HexEncode("moved") + ".txt", text);

  auto indexer = MakeIndexer(IndexerOptions());
  indexer->ResumeInterrupted();
  const JobSnapshot done = WaitTerminal(*indexer, "moved");
  ASSERT_EQ(done.state, JobState::kReady) << done.error_code << " " << done.error_message;
  ExpectDocumentIs("moved", text, Sha256Hex(text));
  EXPECT_EQ(store_->GetDocument("t", "moved")->model_fingerprint, engine_->fingerprint());
}

// The disk fills while a job writes its chunks: the chunk write fails, and so does the FAILED
// record. The upload must stay (the document is still INDEXING in the store): a restart on a disk
// with room indexes it. Were the upload removed, the document would stay INDEXING for good.
TEST_F(IndexerTest, AFullDiskFailsTheJobAndKeepsTheUploadTheFailureCouldNotBeStoredBeside) {
  auto fs = ReopenOverFaults();
  ASSERT_TRUE(fs);
  auto storage = std::make_shared<Storage>(fs);
  const std::string text = Text(300, 41);
  {
    IndexerOptions o;
    o.storage = storage;
    o.testing_before_persist = [&](const std::string&, int64_t chunk) {
      if (chunk == 1) fs->SetNoSpaceAfter(fs->bytes_written());
    };
    auto indexer = MakeIndexer(o);
    ASSERT_TRUE(indexer->Submit(Meta("full", Sha256Hex(text)), text).ok());
    const JobSnapshot failed = WaitTerminal(*indexer, "full");
    EXPECT_EQ(failed.state, JobState::kFailed);
    EXPECT_EQ(failed.error_code, "RESOURCE_EXHAUSTED") << failed.error_message;
    EXPECT_EQ(store_->GetDocument("t", "full")->state, kDocumentIndexing);
    EXPECT_TRUE(std::filesystem::exists(std::string(dir_ / "uploads") + "/" + HexEncode("t") + "." +
                                        HexEncode("full") + ".txt"));
  }
  ReopenOverFaults(/*faults=*/false);  // the restart, on a disk with room
  auto indexer = MakeIndexer(IndexerOptions());
  indexer->ResumeInterrupted();
  const JobSnapshot done = WaitTerminal(*indexer, "full");
  ASSERT_EQ(done.state, JobState::kReady) << done.error_code << " " << done.error_message;
  ExpectDocumentIs("full", text, Sha256Hex(text));
}

// On a full disk a delete and a cancel the store cannot record are refused, and refused they
// change nothing: the job goes on, the upload stays, and a restart with room indexes the document.
// (A delete that removed the upload before the store refused left the document INDEXING for good;
// a cancel answered before its record was stored came back READY after a restart.)
TEST_F(IndexerTest, OnAFullDiskADeleteAndACancelAreRefusedAndLoseNothing) {
  auto fs = ReopenOverFaults();
  ASSERT_TRUE(fs);
  auto storage = std::make_shared<Storage>(fs);
  const std::string text = Text(300, 42);
  const std::string upload = std::string(dir_ / "uploads") + "/" + HexEncode("t") + "." + HexEncode("x") + ".txt";
  {
    Gate held;
    IndexerOptions o;
    o.storage = storage;
    o.testing_before_persist = [&](const std::string&, int64_t chunk) {
      if (chunk == 0) held.Wait();
    };
    auto indexer = MakeIndexer(o);
    ASSERT_TRUE(indexer->Submit(Meta("x", Sha256Hex(text)), text).ok());
    ASSERT_TRUE(held.WaitReached());
    fs->SetNoSpaceAfter(fs->bytes_written());
    const absl::Status deleted = indexer->Delete("t", "x");
    EXPECT_TRUE(absl::IsResourceExhausted(deleted)) << deleted;
    EXPECT_TRUE(std::filesystem::exists(upload));
    const auto cancelled = indexer->Cancel("t", "x");
    EXPECT_TRUE(absl::IsResourceExhausted(cancelled.status())) << cancelled.status();
    EXPECT_FALSE(Terminal(indexer->Get("t", "x")->state)) << "a refused cancel stops nothing";
    held.Open();
    EXPECT_EQ(WaitTerminal(*indexer, "x").state, JobState::kFailed);  // its chunk cannot be stored
    EXPECT_TRUE(std::filesystem::exists(upload));
  }
  ReopenOverFaults(/*faults=*/false);
  auto indexer = MakeIndexer(IndexerOptions());
  indexer->ResumeInterrupted();
  const JobSnapshot done = WaitTerminal(*indexer, "x");
  ASSERT_EQ(done.state, JobState::kReady) << done.error_code << " " << done.error_message;
  ExpectDocumentIs("x", text, Sha256Hex(text));
}

// A cancel landing after the worker persisted the last chunk and passed its last check, just
// before the READY flip: the client is told CANCELLED, so the document must be gone, not READY.
TEST_F(IndexerTest, CancelJustBeforeReadyRemovesTheDocument) {
  Gate at_ready;
  IndexerOptions o;
  o.testing_before_ready = [&](const std::string&) { at_ready.Wait(); };
  auto indexer = MakeIndexer(o);
  ASSERT_TRUE(indexer->Submit(Meta("late", "s"), Text(200, 41)).ok());
  ASSERT_TRUE(at_ready.WaitReached());
  auto cancelled = indexer->Cancel("t", "late");
  ASSERT_TRUE(cancelled.ok()) << cancelled.status();
  EXPECT_EQ(cancelled->state, JobState::kCancelled);
  at_ready.Open();
  const JobSnapshot done = WaitTerminal(*indexer, "late");
  EXPECT_EQ(done.state, JobState::kCancelled);
  // The worker has finished with it (the job is terminal); give its clean-up a moment.
  for (int i = 0; i < 50 && store_->GetDocument("t", "late").ok(); ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  const auto meta = store_->GetDocument("t", "late");
  EXPECT_FALSE(meta.ok()) << "the document stayed, state " << meta->state;
}

// An exception thrown inside a job (here from the hook before a chunk is persisted, standing for
// a library that throws: filesystem, JSON, allocation) fails that job with INTERNAL and its
// document FAILED; the worker and the process live on and index the next document.
TEST_F(IndexerTest, AnExceptionInAJobFailsTheJobNotTheServer) {
  IndexerOptions o;
  o.testing_before_persist = [](const std::string& id, int64_t) {
    if (id == "boom") throw std::runtime_error("disk on fire");
  };
  auto indexer = MakeIndexer(o);
  ASSERT_TRUE(indexer->Submit(Meta("boom", "s1"), Text(200, 51)).ok());
  const JobSnapshot failed = WaitTerminal(*indexer, "boom");
  EXPECT_EQ(failed.state, JobState::kFailed);
  EXPECT_EQ(failed.error_code, "INTERNAL");
  EXPECT_NE(failed.error_message.find("disk on fire"), std::string::npos) << failed.error_message;
  // The job's snapshot turns FAILED first, then its document record: give that a moment.
  auto meta = store_->GetDocument("t", "boom");
  for (int i = 0; i < 50 && meta.ok() && meta->state != kDocumentFailed; ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
    meta = store_->GetDocument("t", "boom");
  }
  ASSERT_TRUE(meta.ok());
  EXPECT_EQ(meta->state, kDocumentFailed);
  const std::string text = Text(200, 52);
  ASSERT_TRUE(indexer->Submit(Meta("after", "s2"), text).ok());
  EXPECT_EQ(WaitTerminal(*indexer, "after").state, JobState::kReady);
  ExpectDocumentIs("after", text, "s2");
}

// At start, an upload cut off before its rename (*.tmp) is removed, and an interrupted upload is
// indexed only if it still matches the sha256 recorded when it was accepted: a damaged one fails
// DATA_LOSS (upload it again) instead of being indexed as if it were the document.
TEST_F(IndexerTest, ResumeChecksTheUploadAgainstItsSha256AndCleansTmpFiles) {
  const std::string good = Text(200, 61), damaged = Text(200, 62);
  const std::string uploads = std::string(dir_ / "uploads");
  std::filesystem::create_directories(uploads);
  auto spool = [&](const std::string& id, const std::string& recorded, const std::string& on_disk) {
    DocumentMeta meta = Meta(id, Sha256Hex(recorded));
    meta.model_fingerprint = engine_->fingerprint();
    ASSERT_TRUE(store_->PutDocument(meta).ok());  // INDEXING, nothing stored yet
    sharedllm::test::WriteFile(uploads + "/" + HexEncode("t") + "." + HexEncode(id) + ".txt", on_disk);
  };
  spool("intact", good, good);
  std::string flipped = damaged;
  flipped[flipped.size() / 2] ^= 0x20;
  spool("damaged", damaged, flipped);
  const std::string stray = uploads + "/" + HexEncode("t") + "." + HexEncode("cut") + ".txt.tmp";
  sharedllm::test::WriteFile(stray, "half an upl");

  auto indexer = MakeIndexer(IndexerOptions());
  indexer->ResumeInterrupted();
  EXPECT_FALSE(std::filesystem::exists(stray));
  const JobSnapshot bad = WaitTerminal(*indexer, "damaged");
  EXPECT_EQ(bad.state, JobState::kFailed);
  EXPECT_EQ(bad.error_code, "DATA_LOSS") << bad.error_message;
  EXPECT_EQ(WaitTerminal(*indexer, "intact").state, JobState::kReady);
  ExpectDocumentIs("intact", good, Sha256Hex(good));
}

// A job cancelled (the client told CANCELLED) whose worker had not cleaned up when the server
// stopped: at start the cancel is finished — the document deleted, its upload removed — instead of
// the document being resumed and indexed after all.
TEST_F(IndexerTest, ResumeFinishesACancelTheServerStoppedBefore) {
  const std::string text = Text(200, 71);
  DocumentMeta meta = Meta("gone", Sha256Hex(text));
  meta.model_fingerprint = engine_->fingerprint();
  ASSERT_TRUE(store_->PutDocument(meta).ok());  // INDEXING
  ASSERT_TRUE(store_->PutJob("t", "gone", R"({"state": "CANCELLED"})").ok());
  const std::string uploads = std::string(dir_ / "uploads");
  std::filesystem::create_directories(uploads);
  const std::string upload = uploads + "/" + HexEncode("t") + "." + HexEncode("gone") + ".txt";
  sharedllm::test::WriteFile(upload, text);

  auto indexer = MakeIndexer(IndexerOptions());
  indexer->ResumeInterrupted();
  EXPECT_FALSE(store_->GetDocument("t", "gone").ok()) << "a cancelled document came back";
  EXPECT_FALSE(std::filesystem::exists(upload));
  auto job = indexer->Get("t", "gone");
  ASSERT_TRUE(job.ok()) << job.status();
  EXPECT_EQ(job->state, JobState::kCancelled);
}

// An exception between Submit's reservation and the queued job (an allocation, the filesystem)
// is the caller's error, and releases the reservation: the id and the queue slot are free again.
TEST_F(IndexerTest, AnExceptionWhileAdmittingReleasesTheReservation) {
  IndexerOptions o;
  o.queue_capacity = 1;
  bool thrown = false;
  o.testing_after_admission = [&](const std::string& id) {
    if (id == "d" && !thrown) {
      thrown = true;
      throw std::runtime_error("no memory left");
    }
  };
  auto indexer = MakeIndexer(o);
  auto first = indexer->Submit(Meta("d", "s"), Text(100, 60));
  ASSERT_FALSE(first.ok());
  EXPECT_EQ(first.status().code(), absl::StatusCode::kInternal);
  EXPECT_NE(first.status().message().find("no memory left"), std::string::npos);
  EXPECT_FALSE(store_->GetDocument("t", "d").ok()) << "nothing stored";
  const std::string text = Text(100, 61);
  ASSERT_TRUE(indexer->Submit(Meta("d", "s2"), text).ok()) << "the id and the only slot are free";
  EXPECT_EQ(WaitTerminal(*indexer, "d").state, JobState::kReady);
  ExpectDocumentIs("d", text, "s2");
}

// Per-tenant quotas: waiting jobs, documents and bytes, each RESOURCE_EXHAUSTED with a reason;
// another tenant is not held back by them.
TEST_F(IndexerTest, TenantQuotasHold) {
  Gate busy;
  IndexerOptions o;
  o.queue_capacity = 8;
  o.queue_per_tenant = 2;
  o.max_documents_per_tenant = 4;
  o.max_bytes_per_tenant = 3000;
  o.testing_before_persist = [&](const std::string& id, int64_t) {
    if (id == "blocker") busy.Wait();
  };
  auto indexer = MakeIndexer(o);
  auto meta = [](const std::string& tenant, const std::string& id, int64_t bytes) {
    DocumentMeta m = Meta(id, "s");
    m.tenant = tenant;
    m.size_bytes = bytes;
    return m;
  };
  ASSERT_TRUE(indexer->Submit(meta("t", "blocker", 100), Text(100, 70)).ok());
  ASSERT_TRUE(busy.WaitReached());  // running, not waiting
  ASSERT_TRUE(indexer->Submit(meta("t", "w1", 100), Text(50, 71)).ok());
  ASSERT_TRUE(indexer->Submit(meta("t", "w2", 100), Text(50, 72)).ok());
  auto third = indexer->Submit(meta("t", "w3", 100), Text(50, 73));
  EXPECT_EQ(third.status().code(), absl::StatusCode::kResourceExhausted);
  EXPECT_NE(third.status().message().find("share of the queue"), std::string::npos) << third.status();
  EXPECT_TRUE(indexer->Submit(meta("u", "x1", 100), Text(50, 74)).ok()) << "another tenant";
  busy.Open();
  for (const char* id : {"blocker", "w1", "w2"}) EXPECT_EQ(WaitTerminal(*indexer, id).state, JobState::kReady);
  // Bytes: 300 held; 2800 more would pass 3000.
  auto big = indexer->Submit(meta("t", "big", 2800), Text(50, 75));
  EXPECT_EQ(big.status().code(), absl::StatusCode::kResourceExhausted);
  EXPECT_NE(big.status().message().find("quota of 3000"), std::string::npos) << big.status();
  // Documents: a fourth fits, a fifth does not; after a delete it does.
  ASSERT_TRUE(indexer->Submit(meta("t", "w4", 100), Text(50, 76)).ok());
  auto fifth = indexer->Submit(meta("t", "w5", 100), Text(50, 77));
  EXPECT_EQ(fifth.status().code(), absl::StatusCode::kResourceExhausted);
  EXPECT_NE(fifth.status().message().find("holds 4 documents"), std::string::npos) << fifth.status();
  ASSERT_TRUE(indexer->Delete("t", "w1").ok());
  EXPECT_TRUE(indexer->Submit(meta("t", "w5", 100), Text(50, 77)).ok());
}

// Finished jobs leave memory after the retention; their stored record still answers.
TEST_F(IndexerTest, FinishedJobsLeaveMemoryAndStillAnswer) {
  IndexerOptions o;
  o.finished_retention_seconds = 0.2;
  auto indexer = MakeIndexer(o);
  for (int i = 0; i < 3; ++i) {
    const std::string id = "f" + std::to_string(i);
    ASSERT_TRUE(indexer->Submit(Meta(id, "s"), Text(60, 80 + i)).ok());
    EXPECT_EQ(WaitTerminal(*indexer, id).state, JobState::kReady);
  }
  EXPECT_GE(indexer->jobs_in_memory(), 1);
  const auto start = Clock::now();
  while (indexer->jobs_in_memory() > 0 && Clock::now() - start < std::chrono::seconds(10)) {
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  EXPECT_EQ(indexer->jobs_in_memory(), 0);
  auto got = indexer->Get("t", "f1");
  ASSERT_TRUE(got.ok()) << got.status();
  EXPECT_EQ(got->state, JobState::kReady);
  EXPECT_GT(got->chunks_total, 0);
  // A cancel of a finished job says so, from the stored record.
  EXPECT_EQ(indexer->Cancel("t", "f1").status().code(), absl::StatusCode::kFailedPrecondition);
}

// A question reads a document's vectors and nodes in separate snapshots: a delete and re-upload
// in between is caught (ABORTED, ask again) instead of mixing two versions' nodes.
TEST_F(IndexerTest, AQuestionNoticesADocumentReplacedWhileItRead) {
  auto indexer = MakeIndexer({});
  ASSERT_TRUE(indexer->Submit(Meta("v", "s1"), Text(100, 90)).ok());
  ASSERT_EQ(WaitTerminal(*indexer, "v").state, JobState::kReady);
  auto first = store_->GetDocument("t", "v");
  ASSERT_TRUE(first.ok());
  const std::vector<DocumentMeta> metas = {*first};
  std::vector<DocumentVectors> read(1);
  read[0].document_id = "v";
  read[0].chunks = {0};
  EXPECT_TRUE(CheckUnchanged(*store_, metas, read).ok());
  ASSERT_TRUE(indexer->Delete("t", "v").ok());
  EXPECT_EQ(CheckUnchanged(*store_, metas, read).code(), absl::StatusCode::kAborted);
  std::this_thread::sleep_for(std::chrono::milliseconds(5));  // a later creation time
  ASSERT_TRUE(indexer->Submit(Meta("v", "s1"), Text(100, 90)).ok());
  ASSERT_EQ(WaitTerminal(*indexer, "v").state, JobState::kReady);
  const absl::Status replaced = CheckUnchanged(*store_, metas, read);
  EXPECT_EQ(replaced.code(), absl::StatusCode::kAborted) << "the same text, uploaded again";
  EXPECT_NE(replaced.message().find("ask again"), std::string::npos);
  read[0].chunks.clear();
  EXPECT_TRUE(CheckUnchanged(*store_, metas, read).ok()) << "a document none of whose chunks was read";
}

}  // namespace
}  // namespace sharedllm::service
