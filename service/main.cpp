// sharedllm-server: the only place that reads flags; everything else takes ServerOptions.
#include <cstdio>
#include <iostream>

#include "service/server.h"
#include "cli/flags/flags.h"

int main(int argc, char** argv) {
  sharedllm::service::ServerOptions o;
  int64_t threads = 0, index_workers = 1, index_queue = 16, max_running = 1, max_waiting = 16;
  int64_t max_document_mb = 16, block_cache_mb = 256;
  bool no_sync = false;
  sharedllm::cli::FlagSet flags(
      "sharedllm-server --model DIR --data-dir DIR [--listen HOST:PORT] [--metrics-listen HOST:PORT]"
      " [--api-keys FILE] [--tls-cert F --tls-key F [--tls-client-ca F]]",
      "Serves DocumentService (upload documents; their context trees are built once and\n"
      "persisted in RocksDB) and QueryService (streamed answers) over gRPC, with standard health\n"
      "checking and reflection, and Prometheus metrics on --metrics-listen. The ports open before\n"
      "the model loads (health NOT_SERVING until ready). SIGTERM drains.");
  flags.String("model", &o.model_dir, "SharedLLM model directory");
  flags.String("data-dir", &o.data_dir, "tree store and pending uploads");
  flags.String("listen", &o.listen, "gRPC address (port 0: any free port)");
  flags.String("metrics-listen", &o.metrics_listen, "/metrics address; empty: off");
  flags.String("api-keys", &o.api_keys_file, "file of 'KEY TENANT' lines; unset: no auth");
  flags.String("tls-cert", &o.tls_cert, "server certificate (PEM)");
  flags.String("tls-key", &o.tls_key, "server private key (PEM)");
  flags.String("tls-client-ca", &o.tls_client_ca, "CA for client certificates (mTLS)");
  flags.Int("threads", &threads, "model intra-op threads; 0: all cores");
  flags.String("dtype", &o.dtype, "model dtype: float32 | bfloat16");
  flags.String("kv-dtype", &o.kv_dtype,
               "element type of the keys/values new documents store: bfloat16 (half the bytes) | "
               "int8 (a quarter, with per-channel scales) | float32 (as a float32 model computes "
               "them)");
  flags.Int("index-workers", &index_workers, "concurrent index jobs");
  flags.Int("index-queue", &index_queue, "queued index jobs before RESOURCE_EXHAUSTED");
  flags.Double("index-stall-seconds", &o.index_stall_seconds, "fail an index job without progress");
  flags.Int("max-running", &max_running, "questions answered at once");
  flags.Int("max-waiting", &max_waiting, "queued questions before RESOURCE_EXHAUSTED");
  flags.Int("max-document-mb", &max_document_mb, "largest accepted upload, MiB (1-1024)");
  flags.Double("drain-seconds", &o.drain_seconds, "grace period for in-flight requests on SIGTERM");
  flags.Bool("no-sync", &no_sync, "do not fsync tree-store writes (faster; tests)");
  flags.Int("block-cache-mb", &block_cache_mb, "tree-store (RocksDB) block cache, MiB");
  flags.String("testing-hold-until-file", &o.testing_hold_until_file,
               "testing only: wait for this file to exist before loading the model (health "
               "NOT_SERVING meanwhile)");
  flags.Require("model");
  flags.Require("data-dir");
  std::vector<std::string> args(argv + 1, argv + argc);
  if (int rc = flags.Parse(args); rc >= 0) return rc;
  o.threads = static_cast<int>(threads);
  o.index_workers = static_cast<int>(index_workers);
  o.index_queue = static_cast<int>(index_queue);
  o.max_running = static_cast<int>(max_running);
  o.max_waiting = static_cast<int>(max_waiting);
  if (max_document_mb < 1 || max_document_mb > 1024) {
    std::fprintf(stderr, "--max-document-mb must be 1..1024\n");
    return 2;
  }
  o.max_document_bytes = max_document_mb << 20;
  o.sync_writes = !no_sync;
  if (block_cache_mb < 1) {
    std::cerr << "sharedllm-server: --block-cache-mb must be >= 1\n";
    return 2;
  }
  o.block_cache_mb = block_cache_mb;
  absl::Status s = sharedllm::service::RunServer(o);
  if (!s.ok()) {
    std::cerr << "sharedllm-server: " << s << "\n";
    return 1;
  }
  return 0;
}
