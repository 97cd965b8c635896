#include "service/server.h"

#include <sys/stat.h>

#include <grpcpp/ext/proto_server_reflection_plugin.h>
#include <grpcpp/server.h>
#include <grpcpp/server_builder.h>

#include <csignal>
#include <cstdio>
#include <filesystem>
#include <mutex>
#include <thread>

#include "absl/strings/str_cat.h"

#include "service/address.h"
#include "service/auth.h"
#include "service/document_service.h"
#include "service/engine.h"
#include "service/health.h"
#include "service/indexer.h"
#include "service/metrics.h"
#include "service/query_service.h"
#include "service/request_log.h"
#include "service/startup_gate.h"
#include "store/rocksdb_tree_store.h"

namespace sharedllm::service {
namespace {

std::atomic<bool> g_signalled{false};
void OnSignal(int) { g_signalled = true; }

}  // namespace

std::vector<std::string> SecurityWarnings(const ServerOptions& o) {
  std::vector<std::string> out;
  const bool exposed = !IsLoopbackAddress(o.listen);
  const bool tls = !o.tls_cert.empty();
  if (exposed && o.api_keys_file.empty()) {
    out.push_back("gRPC on " + o.listen + " without --api-keys: anyone who reaches this port reads, "
                  "writes and deletes the documents of tenant 'default' (docs/user/security.md)");
  }
  if (exposed && !o.api_keys_file.empty() && !tls) {
    out.push_back("API keys cross the network in clear on " + o.listen +
                  ": add --tls-cert/--tls-key, or terminate TLS in front of the server");
  }
  if (!o.api_keys_file.empty()) {
    struct stat st {};
    if (::stat(o.api_keys_file.c_str(), &st) == 0 && (st.st_mode & (S_IRWXG | S_IRWXO)) != 0) {
      char mode[8];
      std::snprintf(mode, sizeof mode, "%04o", static_cast<unsigned>(st.st_mode & 07777));
      out.push_back(o.api_keys_file + " is readable by other users (mode " + mode + "): chmod 600 it");
    }
  }
  if (!o.metrics_listen.empty() && !IsLoopbackAddress(o.metrics_listen)) {
    out.push_back("metrics on " + o.metrics_listen +
                  " are unauthenticated: keep that address inside the scraper's network");
  }
  return out;
}

absl::Status RunServer(const ServerOptions& o) {
  if (o.model_dir.empty() || o.data_dir.empty()) {
    return absl::InvalidArgumentError("--model and --data-dir are required");
  }
  std::error_code ec;
  std::filesystem::create_directories(o.data_dir, ec);
  if (ec) return absl::InvalidArgumentError("cannot create --data-dir " + o.data_dir + ": " + ec.message());

  ApiKeys keys = ApiKeys::Disabled();
  if (!o.api_keys_file.empty()) {
    auto loaded = ApiKeys::LoadFile(o.api_keys_file);
    if (!loaded.ok()) return loaded.status();
    keys = std::move(*loaded);
  }
  auto credentials = MakeServerCredentials(o.tls_cert, o.tls_key, o.tls_client_ca);
  if (!credentials.ok()) return credentials.status();
  for (const std::string& w : SecurityWarnings(o)) std::fprintf(stderr, "WARNING: %s\n", w.c_str());

  // From here on SIGTERM stops the start or drains, instead of killing the process with the
  // store open.
  std::signal(SIGTERM, OnSignal);
  std::signal(SIGINT, OnSignal);

  // 1. The ports open first, so that probes get an answer (NOT_SERVING) while loading.
  Metrics metrics(SHAREDLLM_VERSION, Engine::ModelName(o.model_dir));
  std::unique_ptr<MetricsServer> metrics_server;
  if (!o.metrics_listen.empty()) {
    auto started = MetricsServer::Start(metrics, o.metrics_listen);
    if (!started.ok()) return started.status();
    metrics_server = std::move(*started);
  }

  HealthService health({sharedllm::v1::DocumentService::service_full_name(),
                        sharedllm::v1::QueryService::service_full_name()});
  GatedDocumentService documents_gate;
  GatedQueryService queries_gate;
  grpc::EnableDefaultHealthCheckService(false);  // `health` replaces it (service/health.h)
  grpc::reflection::InitProtoReflectionServerBuilderPlugin();
  grpc::ServerBuilder builder;
  int port = 0;
  builder.AddListeningPort(o.listen, *credentials, &port);
  builder.RegisterService(&health);
  builder.RegisterService(&documents_gate);
  builder.RegisterService(&queries_gate);
  builder.SetMaxReceiveMessageSize(2 << 20);  // upload chunks are at most 1 MiB
  // Bounded resources per process and per connection: every open call holds a handler thread,
  // so the quota's threads bound the calls (one more is RESOURCE_EXHAUSTED, from gRPC itself);
  // a connection carries at most so many calls; idle and dead connections are closed.
  grpc::ResourceQuota quota("sharedllm-server");
  quota.SetMaxThreads(o.max_threads);
  builder.SetResourceQuota(quota);
  builder.AddChannelArgument(GRPC_ARG_MAX_CONCURRENT_STREAMS, o.max_streams_per_connection);
  builder.AddChannelArgument(GRPC_ARG_KEEPALIVE_TIME_MS, static_cast<int>(o.keepalive_seconds * 1000));
  builder.AddChannelArgument(GRPC_ARG_KEEPALIVE_TIMEOUT_MS, 20000);
  // A client may ping an idle connection every 10 s without being called abusive.
  builder.AddChannelArgument(GRPC_ARG_HTTP2_MIN_RECV_PING_INTERVAL_WITHOUT_DATA_MS, 10000);
  builder.AddChannelArgument(GRPC_ARG_KEEPALIVE_PERMIT_WITHOUT_CALLS, 1);
  if (o.max_idle_seconds > 0) {
    builder.AddChannelArgument(GRPC_ARG_MAX_CONNECTION_IDLE_MS, static_cast<int>(o.max_idle_seconds * 1000));
  }
  std::vector<std::unique_ptr<grpc::experimental::ServerInterceptorFactoryInterface>> interceptors;
  interceptors.push_back(MakeRequestLogFactory());
  builder.experimental().SetInterceptorCreators(std::move(interceptors));
  std::unique_ptr<grpc::Server> server = builder.BuildAndStart();
  if (!server || port == 0) return absl::UnavailableError("cannot listen on " + o.listen);
  // Ends every call (each handler below returns promptly or is bounded) before the objects it
  // uses go out of scope, whichever way this function returns.
  struct StopServer {
    grpc::Server* server;
    HealthService* health;
    ~StopServer() {
      health->Shutdown();
      server->Shutdown(std::chrono::system_clock::now() + std::chrono::seconds(5));
      server->Wait();
      AfterAllCalls();
    }
  } stop_server{server.get(), &health};
  const std::string host = o.listen.substr(0, o.listen.rfind(':'));
  std::printf("starting: gRPC on %s:%d (health NOT_SERVING until the model and store are loaded)\n",
              host.c_str(), port);
  if (metrics_server) std::printf("metrics on port %d\n", metrics_server->port());
  std::fflush(stdout);

  // 2. The model and the store.
  if (!o.testing_hold_until_file.empty()) {
    while (!g_signalled && !std::filesystem::exists(o.testing_hold_until_file)) {
      std::this_thread::sleep_for(std::chrono::milliseconds(20));
    }
  }
  if (g_signalled) {
    std::printf("stopped while starting\n");
    return absl::OkStatus();
  }
  EngineOptions eo;
  eo.model_dir = o.model_dir;
  eo.threads = o.threads;
  eo.dtype = o.dtype;
  eo.kv_dtype = o.kv_dtype;
  auto engine = Engine::Load(eo);
  if (!engine.ok()) return engine.status();

  // Everything the server keeps on disk goes through one storage layer (store/storage.h).
  std::shared_ptr<Storage> storage = Storage::Os();
  if (!o.testing_storage_faults.empty()) {
    std::string report;
    auto faulty = Storage::WithFaults(o.testing_storage_faults, &report);
    if (!faulty.ok()) return faulty.status();
    storage = *std::move(faulty);
    std::printf("testing: storage faults %s; %s\n", o.testing_storage_faults.c_str(), report.c_str());
    std::fflush(stdout);
  }
  // A storage error RocksDB cannot resume from: drain what reads can still finish, then exit
  // non-zero so that the supervisor restarts the server, whose start replays the log.
  std::mutex fatal_mu;
  absl::Status fatal;
  std::atomic<bool> storage_failed{false};
  RocksDbTreeStoreOptions so;
  so.storage = storage;
  so.on_fatal_error = [&](const absl::Status& s) {
    {
      std::lock_guard<std::mutex> lock(fatal_mu);
      fatal = s;
    }
    storage_failed = true;
  };
  so.path = o.data_dir + "/trees";
  so.sync_writes = o.sync_writes;
  so.block_cache_mb = o.block_cache_mb;
  auto store = RocksDbTreeStore::Open(so);
  if (!store.ok()) return store.status();
  // The store's memory is read at each scrape; the hook goes before the store does.
  metrics.OnScrape([&metrics, s = store->get()] {
    const StoreMemory m = s->Memory();
    metrics.SetStoreMemory(m.memtables, m.block_cache, m.table_readers);
  });
  struct ClearScrapeHook {
    Metrics& metrics;
    ~ClearScrapeHook() { metrics.OnScrape(nullptr); }
  } clear_scrape_hook{metrics};

  IndexerOptions io;
  io.uploads_dir = o.data_dir + "/uploads";
  io.storage = storage;
  io.workers = o.index_workers;
  io.queue_capacity = o.index_queue;
  io.stall_seconds = o.index_stall_seconds;
  io.queue_per_tenant = o.queue_per_tenant;
  io.max_documents_per_tenant = o.max_documents_per_tenant;
  io.max_bytes_per_tenant = o.max_bytes_per_tenant;
  Indexer indexer(**engine, **store, metrics, io);
  indexer.ResumeInterrupted();

  Limits limits;
  limits.max_document_bytes = o.max_document_bytes;
  limits.max_uploads = o.max_uploads;
  std::atomic<bool> draining{false};
  Scheduler scheduler({o.max_running, o.max_waiting}, metrics);
  DocumentServiceImpl documents(keys, indexer, **store, limits, draining);
  QueryServiceImpl queries(keys, **engine, **store, scheduler, metrics, limits, draining);

  // 3. Serving. No return until the drain below, whose server->Wait() ends every call before
  // `documents`, `queries` and what they use go out of scope.
  documents_gate.Attach(&documents);
  queries_gate.Attach(&queries);
  health.SetServing(true);
  storage->StartFaults();  // testing only: the faults hit serving, not start-up
  std::printf("listening on %s:%d (model %s, fingerprint %.12s)\n", host.c_str(), port,
              (*engine)->model_name().c_str(), (*engine)->fingerprint().c_str());
  std::fflush(stdout);

  while (!g_signalled && !storage_failed) std::this_thread::sleep_for(std::chrono::milliseconds(100));

  if (storage_failed) {
    std::printf("storage failed: the tree store takes no more writes; draining, then exiting for a "
                "restart (which recovers from the write-ahead log)\n");
  }
  std::printf("draining (up to %.0f s)\n", o.drain_seconds);
  std::fflush(stdout);
  health.Shutdown();  // NOT_SERVING from now on; open health watches end
  draining = true;
  indexer.Drain();
  server->Shutdown(std::chrono::system_clock::now() +
                   std::chrono::milliseconds(static_cast<int64_t>(o.drain_seconds * 1000)));
  server->Wait();
  AfterAllCalls();
  if (storage_failed) {
    std::lock_guard<std::mutex> lock(fatal_mu);
    return absl::UnavailableError(absl::StrCat("storage failed (", fatal.ToString(),
                                               "); restart the server"));
  }
  return absl::OkStatus();
}

}  // namespace sharedllm::service
