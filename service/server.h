// The sharedllm-server process: one binary holding every role (ingestion, query) over a local
// RocksDB tree store. ServerOptions are runtime settings; the model's hyper-parameters live in
// its directory (config.json, sharedllm.json).
#pragma once

#include <atomic>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/status.h"

namespace sharedllm::service {

struct ServerOptions {
  std::string model_dir;            // SharedLLM model directory, e.g. models/mini
  std::string data_dir;             // tree store and pending uploads, e.g. /var/lib/sharedllm
  std::string listen = "127.0.0.1:50051";          // gRPC address
  std::string metrics_listen = "127.0.0.1:9090";   // /metrics address; empty: off
  std::string api_keys_file;        // "KEY TENANT" lines; empty: no auth, tenant "default"
  std::string tls_cert, tls_key;    // PEM files; empty: plaintext
  std::string tls_client_ca;        // PEM; set: clients must present a certificate it signed
  int threads = 0;                  // model intra-op threads; 0: all cores
  std::string dtype = "float32";    // model dtype: float32 | bfloat16
  std::string kv_dtype = "int8";  // stored keys/values: int8 | bfloat16 | float32
  int index_workers = 1;            // concurrent index jobs
  int index_queue = 16;             // queued index jobs before RESOURCE_EXHAUSTED
  double index_stall_seconds = 600; // an index job without progress for this long fails
  int max_running = 1;              // questions answered at once
  int max_waiting = 16;             // queued questions before RESOURCE_EXHAUSTED
  // Each uploaded MiB costs about a minute of indexing on 2 cores and about 0.55 GB of store with
  // models/mini (docs/RESULTS.md "Documents of any length"): 16 MiB is what one node carries.
  int64_t max_document_bytes = 16ll << 20;
  int max_uploads = 4;              // uploads received at once (each buffers until admitted)
  int max_threads = 64;             // gRPC handler threads; a call beyond is RESOURCE_EXHAUSTED
  int max_streams_per_connection = 32;  // concurrent calls on one HTTP/2 connection
  double keepalive_seconds = 60;    // server pings on idle connections; 20 s unanswered: closed
  double max_idle_seconds = 300;    // a connection without calls this long is closed; 0: never
  int queue_per_tenant = 0;         // a tenant's waiting index jobs; 0: the whole index_queue
  int64_t max_documents_per_tenant = 0;  // 0: unlimited
  int64_t max_bytes_per_tenant = 0;      // uploaded bytes; 0: unlimited
  double drain_seconds = 30;        // on SIGTERM: how long in-flight requests may finish
  bool sync_writes = true;          // fsync each tree-store batch
  int64_t block_cache_mb = 256;     // tree-store (RocksDB) block cache
  // Testing only: before loading the model, wait until this file exists (or a signal arrives),
  // so that a test can observe the server while it is starting. Empty: no wait.
  std::string testing_hold_until_file;
  // Testing only (crash trials): a storage layer that journals syncs, applies the last killed
  // run's power loss at start and injects faults (store/storage.h); empty: the OS's.
  std::string testing_storage_faults;
};

// What is insecure about these options, one line each (printed to stderr at start): listening
// beyond loopback without API keys, API keys over plaintext beyond loopback, a keys file other
// users may read. Empty when nothing is.
std::vector<std::string> SecurityWarnings(const ServerOptions& options);

// Opens the gRPC and metrics ports first: while the model and the tree store load, health says
// NOT_SERVING and DocumentService/QueryService calls are UNAVAILABLE ("the server is starting").
// Prints "starting: gRPC on HOST:PORT" and "metrics on port P" then, and "listening on HOST:PORT"
// once serving (health SERVING). Runs until SIGTERM/SIGINT, then drains: health NOT_SERVING, new
// work UNAVAILABLE, in-flight requests get `drain_seconds`, index jobs stop after their current
// chunk (they resume on the next start). A signal while starting stops the start and exits.
absl::Status RunServer(const ServerOptions& options);

}  // namespace sharedllm::service
