// sharedllm-server: the only place that reads flags; everything else takes ServerOptions.
#include <malloc.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <iostream>

#include "service/server.h"
#include "cli/flags/flags.h"

int main(int argc, char** argv) {
  // glibc gives each thread that allocates under contention an arena of its own and rarely hands
  // their memory back: under 32 concurrent asks the resident set grew 22 % in 3 minutes with no
  // leak (bench/soak.py; with 2 arenas, 3.9 %, the same throughput). MALLOC_ARENA_MAX overrides.
  if (std::getenv("MALLOC_ARENA_MAX") == nullptr) mallopt(M_ARENA_MAX, 2);
  sharedllm::service::ServerOptions o;
  int64_t threads = 0, index_workers = 1, index_queue = 16, max_running = 1, max_waiting = 16;
  int64_t max_document_mb = 16, block_cache_mb = 256, max_uploads = 4, max_threads = 64;
  int64_t max_streams = 32, queue_per_tenant = 0, max_documents_per_tenant = 0, max_tenant_mb = 0;
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
               "element type of the keys/values new documents store: int8 (a quarter of float32's "
               "bytes, with per-channel power-of-two scales) | bfloat16 (half) | float32 (as a "
               "float32 model computes them)");
  flags.Int("index-workers", &index_workers, "concurrent index jobs");
  flags.Int("index-queue", &index_queue, "queued index jobs before RESOURCE_EXHAUSTED");
  flags.Double("index-stall-seconds", &o.index_stall_seconds, "fail an index job without progress");
  flags.Int("max-running", &max_running, "questions answered at once");
  flags.Int("max-waiting", &max_waiting, "queued questions before RESOURCE_EXHAUSTED");
  flags.Int("max-document-mb", &max_document_mb, "largest accepted upload, MiB (1-1024)");
  flags.Int("max-uploads", &max_uploads,
            "uploads received at once (each holds up to --max-document-mb in memory)");
  flags.Int("max-threads", &max_threads,
            "gRPC handler threads (every open call holds one); beyond: RESOURCE_EXHAUSTED");
  flags.Int("max-streams-per-connection", &max_streams, "concurrent calls on one connection");
  flags.Double("keepalive-seconds", &o.keepalive_seconds,
               "ping an idle connection this often; one silent for 20 s more is closed");
  flags.Double("max-idle-seconds", &o.max_idle_seconds,
               "close a connection without calls for this long (clients reconnect); 0: never");
  flags.Int("tenant-queue", &queue_per_tenant,
            "a tenant's waiting index jobs beyond which its uploads are RESOURCE_EXHAUSTED; 0: the "
            "whole --index-queue");
  flags.Int("tenant-max-documents", &max_documents_per_tenant, "documents per tenant; 0: unlimited");
  flags.Int("tenant-max-mb", &max_tenant_mb, "uploaded MiB per tenant; 0: unlimited");
  flags.Double("drain-seconds", &o.drain_seconds, "grace period for in-flight requests on SIGTERM");
  flags.Bool("no-sync", &no_sync, "do not fsync tree-store writes (faster; tests)");
  flags.Int("block-cache-mb", &block_cache_mb, "tree-store (RocksDB) block cache, MiB");
  flags.String("testing-hold-until-file", &o.testing_hold_until_file,
               "testing only: wait for this file to exist before loading the model (health "
               "NOT_SERVING meanwhile)");
  flags.String("testing-storage-faults", &o.testing_storage_faults,
               "testing only (crash trials): journal=PATH[,seed=N][,no_space_after_kb=N]"
               "[,error_one_in=N][,max_errors=N]: drop what was not synced when the last run was "
               "killed, then inject out-of-space and I/O errors");
  flags.Require("model");
  flags.Require("data-dir");
  std::vector<std::string> args(argv + 1, argv + argc);
  if (int rc = flags.Parse(args); rc >= 0) return rc;
  // Every number in range before anything starts: a negative or huge one must not wrap into a
  // plausible setting.
  bool bad = false;
  auto in = [&](const char* name, int64_t v, int64_t lo, int64_t hi) {
    if (v < lo || v > hi) {
      std::fprintf(stderr, "sharedllm-server: --%s must be %lld..%lld, not %lld\n", name,
                   static_cast<long long>(lo), static_cast<long long>(hi), static_cast<long long>(v));
      bad = true;
    }
    return static_cast<int>(std::clamp(v, lo, hi));
  };
  auto positive = [&](const char* name, double v, double lo) {
    if (!(v >= lo) || v > 1e7) {
      std::fprintf(stderr, "sharedllm-server: --%s must be %g..1e7 seconds, not %g\n", name, lo, v);
      bad = true;
    }
  };
  o.threads = in("threads", threads, 0, 1024);
  o.index_workers = in("index-workers", index_workers, 1, 64);
  o.index_queue = in("index-queue", index_queue, 0, 100000);
  o.max_running = in("max-running", max_running, 1, 1024);
  o.max_waiting = in("max-waiting", max_waiting, 0, 100000);
  o.max_document_bytes = int64_t{in("max-document-mb", max_document_mb, 1, 1024)} << 20;
  o.block_cache_mb = in("block-cache-mb", block_cache_mb, 1, 1 << 20);
  o.max_uploads = in("max-uploads", max_uploads, 1, 1024);
  o.max_threads = in("max-threads", max_threads, 8, 100000);
  o.max_streams_per_connection = in("max-streams-per-connection", max_streams, 1, 100000);
  o.queue_per_tenant = in("tenant-queue", queue_per_tenant, 0, 100000);
  o.max_documents_per_tenant = in("tenant-max-documents", max_documents_per_tenant, 0, int64_t{1} << 30);
  o.max_bytes_per_tenant = int64_t{in("tenant-max-mb", max_tenant_mb, 0, 1 << 30)} << 20;
  positive("keepalive-seconds", o.keepalive_seconds, 1);
  positive("max-idle-seconds", o.max_idle_seconds, 0);
  positive("drain-seconds", o.drain_seconds, 0);
  positive("index-stall-seconds", o.index_stall_seconds, 1);
  if (bad) return 2;
  o.sync_writes = !no_sync;
  absl::Status s = sharedllm::service::RunServer(o);
  if (!s.ok()) {
    std::cerr << "sharedllm-server: " << s << "\n";
    return 1;
  }
  return 0;
}
