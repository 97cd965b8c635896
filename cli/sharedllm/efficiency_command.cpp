// `sharedllm eval efficiency` (time and memory of SharedLLM against full attention, against a
// stored full key/value cache (prefix caching) and against rebuilding the tree per question,
// docs/PERFORMANCE.md) and `sharedllm plan` (the cost
// model's prediction for one document length). Every configuration of every run is measured in a
// fresh child process — this binary re-executed with the hidden flag --child-phase — so that one
// phase's peak memory cannot mask another's; ratios are taken within a run, then the medians.
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <functional>
#include <fstream>
#include <iostream>
#include <map>
#include <sstream>

#include <ATen/Parallel.h>
#include <nlohmann/json.hpp>

#include "eval/efficiency.h"
#include "llm/errors.h"
#include "sharedllm/loaded_model.h"
#include "cli/sharedllm/commands.h"
#include "store/footprint.h"

namespace sharedllm::cli {
namespace {

using nlohmann::json;

double Median(std::vector<double> v) {
  if (v.empty()) return 0;
  std::sort(v.begin(), v.end());
  const size_t n = v.size();
  return n % 2 ? v[n / 2] : (v[n / 2 - 1] + v[n / 2]) / 2;
}

// Runs this binary with `args`; returns its stdout and its whole-lifetime peak RSS (wait4).
std::string RunChild(const std::vector<std::string>& args, int64_t* max_rss_bytes) {
  int fds[2];
  Check(pipe(fds) == 0, "pipe failed");
  const pid_t pid = fork();
  Check(pid >= 0, "fork failed");
  if (pid == 0) {
    dup2(fds[1], STDOUT_FILENO);
    close(fds[0]);
    close(fds[1]);
    std::vector<char*> argv;
    for (const auto& a : args) argv.push_back(const_cast<char*>(a.c_str()));
    argv.push_back(nullptr);
    execv("/proc/self/exe", argv.data());
    std::perror("execv /proc/self/exe");
    _exit(127);
  }
  close(fds[1]);
  std::string out;
  char buf[4096];
  for (ssize_t n; (n = read(fds[0], buf, sizeof buf)) > 0;) out.append(buf, static_cast<size_t>(n));
  close(fds[0]);
  int status = 0;
  struct rusage usage {};
  Check(wait4(pid, &status, 0, &usage) == pid, "wait4 failed");
  Check(WIFEXITED(status) && WEXITSTATUS(status) == 0,
        "efficiency child (" + args[4] + ") failed with status " + std::to_string(status));
  *max_rss_bytes = static_cast<int64_t>(usage.ru_maxrss) * 1024;
  return out;
}

// The child: loads the model, warms the phase up on one window, resets the peaks, runs the phase
// once and prints one JSON object.
int ChildMain(const Args& args) {
  std::string model_dir, phase_name, tree_file, cache_file;
  int64_t tokens = 0, question_tokens = 16, decode_tokens = 32, seed = 1;
  RuntimeFlags runtime;
  FlagSet flags("sharedllm eval efficiency --child-phase P ...", "internal: one measured phase");
  flags.String("model", &model_dir, "");
  flags.String("child-phase", &phase_name, "");
  flags.String("tree-file", &tree_file, "");
  flags.String("cache-file", &cache_file, "");
  flags.Int("tokens", &tokens, "");
  flags.Int("question-tokens", &question_tokens, "");
  flags.Int("decode-tokens", &decode_tokens, "");
  flags.Int("seed", &seed, "");
  runtime.Register(flags);
  if (int rc = flags.Parse(args); rc >= 0) return rc;
  const ProcessMemory at_start = ReadProcessMemory();
  auto model = LoadModel(model_dir, runtime.Get());
  const ProcessMemory loaded = ReadProcessMemory();
  const EfficiencyPhase phase = PhaseFromName(phase_name);
  PhaseInput input;
  input.document = SyntheticTokens(tokens, model->config.vocab_size, static_cast<uint64_t>(seed));
  input.question = SyntheticTokens(question_tokens, model->config.vocab_size, static_cast<uint64_t>(seed) + 1000003);
  if (model->config.bos_token_id >= 0) input.question[0] = model->config.bos_token_id;
  input.decode_tokens = decode_tokens;
  input.tree_file = tree_file;
  input.cache_file = cache_file;
  // Warm-up on one window (lazy initialisation, first-touch allocations, thread pools); the ask
  // phase warms up on the rebuild path, which runs the same kernels without a tree file, the
  // cached phase on the full-attention path (a prefill against a cache) without a cache file.
  PhaseInput warm = input;
  warm.document.resize(std::min<int64_t>(tokens, model->config.max_position_embeddings));
  warm.decode_tokens = 2;
  warm.tree_file.clear();
  warm.cache_file.clear();
  RunPhase(*model,
           phase == EfficiencyPhase::kAsk           ? EfficiencyPhase::kRebuild
           : phase == EfficiencyPhase::kStoredCache ? EfficiencyPhase::kFullAttention
                                                    : phase,
           warm);
  // This machine's matmul peak now, in the model's dtype: utilisation is measured against the
  // peak under the same load as the phase (a shared machine's peak drifts).
  const double peak = MeasureMatmulPeak(1024, runtime.Get().dtype == "auto" ? model->config.torch_dtype
                                                                          : runtime.Get().dtype,
                                        runtime.Get().device, 3);
  const bool reset = ResetPeakMemory();
  ResetDeviceAllocatorPeak(runtime.Get().device);
  const ProcessMemory before = ReadProcessMemory();
  const PhaseResult r = RunPhase(*model, phase, input);
  json j = {{"phase", phase_name},
            {"tokens", tokens},
            {"seconds", r.seconds},
            {"decode_seconds", r.decode_seconds},
            {"decode_tokens", r.decode_tokens},
            {"flops", r.flops},
            {"decode_flops", r.decode_flops},
            {"encoded_tokens", r.encoded_tokens},
            {"context_positions", r.context_positions},
            {"tree_record_bytes", r.tree_record_bytes},
            {"cache_bytes", r.cache_bytes},
            {"read_bytes", r.read_bytes},
            {"rss_at_start_bytes", at_start.rss_bytes},
            {"rss_model_loaded_bytes", loaded.rss_bytes},
            {"rss_before_phase_bytes", before.rss_bytes},
            {"phase_peak_rss_bytes", r.peak_bytes},
            {"peak_reset", reset},
            {"matmul_peak_flops", peak},
            {"device_peak_bytes", r.device_peak_bytes},
            {"threads", at::get_num_threads()}};
  std::cout << j.dump() << std::endl;
  return 0;
}

struct Options {
  std::string model_dir, out, bench, dtype, device;
  int64_t runs = 3, question_tokens = 16, decode_tokens = 32, seed = 1, threads = 0;
  double full_max = 32;
};

double PeakFromBench(const std::string& path, const std::string& dtype) {
  std::ifstream in(path);
  Check(static_cast<bool>(in), "cannot read " + path);
  const json j = json::parse(in);
  const std::string key = dtype == "bfloat16" || dtype == "bf16" ? "bfloat16" : "float32";
  return j.at("matmul_peak_gflops").at(key).get<double>() * 1e9;
}

}  // namespace

int EfficiencyCommand(const Args& args) {
  for (const auto& a : args) {
    if (a == "--child-phase" || a.rfind("--child-phase=", 0) == 0) return ChildMain(args);
  }
  Options o;
  std::string lengths = "1,2,4,8,16,32";
  RuntimeFlags runtime;
  FlagSet flags(
      "sharedllm eval efficiency --model DIR [--lengths L] [--runs N] [--device cpu|cuda] [--out F.json]",
      "Per length (multiples of the window W): ingestion (static tree build), a question over the\n"
      "built tree (time to first token, decode tokens/s), the same question rebuilding the tree,\n"
      "full attention over document + question (base model, rotary scaled linearly), and where\n"
      "full attention runs, a stored full key/value cache of the document (prefix caching: the\n"
      "question prefilled against every layer's keys/values, read from a file); bytes stored and\n"
      "read per question, peak memory of each; FLOP utilisation against the measured matmul peak.\n"
      "Each configuration of each run is a fresh child process; medians over runs, ratios within\n"
      "a run.");
  flags.String("model", &o.model_dir, "SharedLLM model directory");
  flags.String("lengths", &lengths, "document lengths as multiples of the window, comma-separated");
  flags.Int("runs", &o.runs, "runs per length (medians are reported)");
  flags.Int("question-tokens", &o.question_tokens, "question length in tokens (first = BOS)");
  flags.Int("decode-tokens", &o.decode_tokens, "tokens decoded after the first one");
  flags.Double("full-attention-max", &o.full_max,
               "measure full attention up to this multiple (O(L^2) memory); 0 = never");
  flags.String("bench", &o.bench, "sharedllm-bench JSON to take the matmul peak from (default: measure it now)");
  flags.Int("seed", &o.seed, "synthetic document and question");
  flags.String("out", &o.out, "also write the JSON here");
  runtime.Register(flags);
  flags.Require("model");
  if (int rc = flags.Parse(args); rc >= 0) return rc;
  const RuntimeOptions rt = runtime.Get();
  InitRuntime(rt);
  const ModelConfig config = ModelConfig::Load(o.model_dir);
  const SharedLLMConfig shared = SharedLLMConfig::Load(o.model_dir);
  const int64_t w = config.max_position_embeddings;
  Check(o.runs >= 1, "--runs must be at least 1");

  const std::string dtype = rt.dtype == "auto" ? config.torch_dtype : rt.dtype;
  const double bench_peak = o.bench.empty() ? 0 : PeakFromBench(o.bench, dtype);
  const std::string peak_source =
      o.bench.empty() ? "each child, before its phase: 1024^3 matmul, median of 3" : o.bench;

  const std::filesystem::path tmp = std::filesystem::temp_directory_path() /
                                    ("sharedllm-efficiency-" + std::to_string(getpid()));
  std::filesystem::create_directories(tmp);
  json j = {{"task", "efficiency"},
            {"model", o.model_dir},
            {"window", w},
            {"chunk_size", shared.chunk_size},
            {"device", rt.device},
            {"dtype", dtype},
            {"threads", at::get_num_threads()},
            {"runs", o.runs},
            {"question_tokens", o.question_tokens},
            {"decode_tokens", o.decode_tokens},
            {"matmul_peak_source", peak_source},
            {"points", json::array()}};
  const char* omp = std::getenv("OMP_NUM_THREADS");
  const char* core = std::getenv("OPENBLAS_CORETYPE");
  j["env"] = {{"OMP_NUM_THREADS", omp ? omp : ""}, {"OPENBLAS_CORETYPE", core ? core : ""}};

  try {
    for (double mult : ParseDoubleList(lengths)) {
      const int64_t tokens = static_cast<int64_t>(std::llround(mult * w));
      const bool full = o.full_max > 0 && mult <= o.full_max + 1e-9;
      std::vector<std::string> phases = {"ingest", "ask", "rebuild"};
      if (full) {
        phases.push_back("full");
        phases.push_back("cached");  // reads the cache the full phase wrote
      }
      std::map<std::string, std::vector<json>> per_phase;
      std::map<std::string, std::vector<double>> ratios;
      json runs = json::array();
      for (int64_t run = 0; run < o.runs; ++run) {
        std::map<std::string, json> now;
        const std::string tree_file = (tmp / ("tree-" + std::to_string(tokens) + ".safetensors")).string();
        const std::string cache_file = (tmp / ("cache-" + std::to_string(tokens) + ".safetensors")).string();
        for (const auto& phase : phases) {
          std::vector<std::string> argv = {
              "sharedllm", "eval", "efficiency", "--child-phase", phase, "--model", o.model_dir,
              "--tokens", std::to_string(tokens), "--question-tokens", std::to_string(o.question_tokens),
              "--decode-tokens", std::to_string(o.decode_tokens), "--seed", std::to_string(o.seed),
              "--tree-file", tree_file, "--cache-file", cache_file, "--threads", std::to_string(rt.threads), "--dtype", rt.dtype,
              "--device", rt.device};
          int64_t max_rss = 0;
          json r = json::parse(RunChild(argv, &max_rss));
          r["process_peak_rss_bytes"] = max_rss;
          now[phase] = r;
          per_phase[phase].push_back(r);
        }
        std::filesystem::remove(tree_file);
        std::filesystem::remove(cache_file);
        auto ttft = [&](const std::string& p) { return now[p]["seconds"].get<double>(); };
        auto tps = [&](const std::string& p) {
          return now[p]["decode_tokens"].get<double>() / now[p]["decode_seconds"].get<double>();
        };
        auto rss = [&](const std::string& p) { return now[p]["phase_peak_rss_bytes"].get<double>(); };
        ratios["rebuild_ttft_over_ask_ttft"].push_back(ttft("rebuild") / ttft("ask"));
        ratios["ingest_plus_ask_over_rebuild"].push_back((ttft("ingest") + ttft("ask")) / ttft("rebuild"));
        if (full) {
          ratios["full_ttft_over_ask_ttft"].push_back(ttft("full") / ttft("ask"));
          ratios["ask_decode_over_full_decode"].push_back(tps("ask") / tps("full"));
          ratios["full_peak_rss_over_ask_peak_rss"].push_back(rss("full") / rss("ask"));
          ratios["full_peak_rss_over_ingest_peak_rss"].push_back(rss("full") / rss("ingest"));
          ratios["cached_ttft_over_ask_ttft"].push_back(ttft("cached") / ttft("ask"));
          ratios["cache_bytes_over_tree_bytes"].push_back(now["full"]["cache_bytes"].get<double>() /
                                                          now["ingest"]["tree_record_bytes"].get<double>());
          ratios["cached_read_bytes_over_ask_read_bytes"].push_back(
              now["cached"]["read_bytes"].get<double>() / now["ask"]["read_bytes"].get<double>());
          // Questions after which ingesting once and asking beats full attention per question.
          const double saved = ttft("full") - ttft("ask");
          if (saved > 0) ratios["break_even_questions_vs_full"].push_back(ttft("ingest") / saved);
        }
        runs.push_back(now);
        std::fprintf(stderr, "%5gx W (%lld tokens) run %lld: ingest %.3f s, ask ttft %.3f s, rebuild ttft %.3f s%s\n",
                     mult, static_cast<long long>(tokens), static_cast<long long>(run + 1), ttft("ingest"),
                     ttft("ask"), ttft("rebuild"),
                     full ? (", full ttft " + std::to_string(ttft("full")) + " s, stored-cache ttft " +
                             std::to_string(ttft("cached")) + " s")
                                .c_str()
                          : "");
      }
      json point = {{"length_multiple", mult}, {"tokens", tokens},
                    {"chunks", static_cast<int64_t>(StaticTreeShape(shared, tokens).spans.size())}};
      for (const auto& [phase, rs] : per_phase) {
        auto med = [&](const std::function<double(const json&)>& f) {
          std::vector<double> v;
          for (const auto& r : rs) v.push_back(f(r));
          return Median(v);
        };
        // Utilisation against the peak measured by the same child (or the bench file's).
        auto peak_of = [&](const json& r) {
          return bench_peak > 0 ? bench_peak : r["matmul_peak_flops"].get<double>();
        };
        json p;
        p["matmul_peak_gflops"] = med([&](const json& r) { return peak_of(r) / 1e9; });
        const bool ingest = phase == "ingest";
        p[ingest ? "seconds" : "ttft_seconds"] = med([](const json& r) { return r["seconds"].get<double>(); });
        p[ingest ? "utilization" : "ttft_utilization"] =
            med([&](const json& r) { return r["flops"].get<double>() / r["seconds"].get<double>() / peak_of(r); });
        p[ingest ? "gflop" : "ttft_gflop"] = rs[0]["flops"].get<double>() / 1e9;
        if (ingest) {
          p["tokens_per_second"] = med([&](const json& r) { return tokens / r["seconds"].get<double>(); });
          p["encoded_tokens"] = rs[0]["encoded_tokens"];
          p["tree_record_bytes"] = rs[0]["tree_record_bytes"];
        } else {
          p["decode_tokens_per_second"] = med([](const json& r) {
            return r["decode_tokens"].get<double>() / r["decode_seconds"].get<double>();
          });
          p["decode_utilization"] = med([&](const json& r) {
            return r["decode_flops"].get<double>() / r["decode_seconds"].get<double>() / peak_of(r);
          });
          p["context_positions"] = rs[0]["context_positions"];
          if (phase == "rebuild") p["encoded_tokens"] = rs[0]["encoded_tokens"];
          if (phase == "ask" || phase == "cached") p["read_bytes"] = rs[0]["read_bytes"];
          if (phase == "full") p["cache_bytes"] = rs[0]["cache_bytes"];
        }
        p["phase_peak_rss_bytes"] = med([](const json& r) { return r["phase_peak_rss_bytes"].get<double>(); });
        p["phase_rss_increase_bytes"] = med([](const json& r) {
          return r["phase_peak_rss_bytes"].get<double>() - r["rss_before_phase_bytes"].get<double>();
        });
        p["process_peak_rss_bytes"] = med([](const json& r) { return r["process_peak_rss_bytes"].get<double>(); });
        p["rss_model_loaded_bytes"] = med([](const json& r) { return r["rss_model_loaded_bytes"].get<double>(); });
        p["device_peak_bytes"] = med([](const json& r) { return r["device_peak_bytes"].get<double>(); });
        p["peak_reset"] = rs[0]["peak_reset"];
        point[phase == "full" ? "full_attention" : phase == "cached" ? "stored_cache" : phase] = p;
      }
      json rj;
      for (const auto& [name, v] : ratios) rj[name] = Median(v);
      point["ratios"] = rj;
      point["runs"] = runs;
      j["points"].push_back(point);
    }
  } catch (...) {
    std::filesystem::remove_all(tmp);
    throw;
  }
  std::filesystem::remove_all(tmp);
  std::cout << j.dump(2) << std::endl;
  if (!o.out.empty()) std::ofstream(o.out) << j.dump(2) << "\n";
  return 0;
}

int PlanCommand(const Args& args) {
  std::string model_dir, bench, tenant = "default", document_id = "doc";
  int64_t length = 0, question_tokens = 16, decode_tokens = 32, document_bytes = 0;
  bool as_json = false;
  RuntimeFlags runtime;
  FlagSet flags("sharedllm plan --model DIR --length L [--json]",
                "Predicts, for a document of L tokens and this model's configuration: the bytes the\n"
                "service's tree store holds (exact count of keys and values per column family),\n"
                "peak memory (weights + the largest live tensors of each phase) and time (FLOPs /\n"
                "matmul throughput measured now at the model's shapes, or the --bench peak; plus\n"
                "a measured per-layer dispatch cost and per-score-element attention cost) of\n"
                "ingestion, a question over the built tree, rebuilding the tree, full attention.");
  flags.String("model", &model_dir, "SharedLLM model directory (config.json + sharedllm.json)");
  flags.Int("length", &length, "document tokens");
  flags.Int("question-tokens", &question_tokens, "question tokens");
  flags.Int("decode-tokens", &decode_tokens, "answer tokens after the first");
  flags.Int("document-bytes", &document_bytes, "uploaded bytes (metadata only); default 4 per token");
  flags.String("tenant", &tenant, "tenant id (key bytes)");
  flags.String("document-id", &document_id, "document id (key bytes)");
  flags.String("bench", &bench, "sharedllm-bench JSON for the matmul peak (default: measure now)");
  flags.Bool("json", &as_json, "print JSON");
  runtime.Register(flags);
  flags.Require("model");
  flags.Require("length");
  if (int rc = flags.Parse(args); rc >= 0) return rc;
  const RuntimeOptions rt = runtime.Get();
  InitRuntime(rt);
  const ModelConfig c = ModelConfig::Load(model_dir);
  const SharedLLMConfig s = SharedLLMConfig::Load(model_dir);
  const std::string dtype = rt.dtype == "auto" ? c.torch_dtype : rt.dtype;
  const int64_t e = ParseDtype(dtype, c) == at::kFloat ? 4 : 2;

  MachineRates rates;
  // Throughput at the model's own shapes (a 1024^3 peak from --bench overestimates small models).
  rates.matmul_flops_per_second = bench.empty() ? MeasureModelMatmulRate(c, dtype, rt.device, 1024, 5)
                                                : PeakFromBench(bench, dtype);
  rates.attention_element_seconds = MeasureAttentionElementSeconds(c, dtype, rt.device, 512, 5);
  rates.node_seconds = MeasureNodeSeconds(c, s, rt.device, 5);
  rates.memory_bytes_per_second = MeasureMemoryBandwidth(rt.device, 5);
  rates.layer_overhead_seconds = MeasureLayerOverhead(rt.device, 32);
  const PlanPrediction p = PredictPlan(c, s, e, length, question_tokens, decode_tokens, rates);

  treestore::DocumentShape d;
  d.tenant = tenant;
  d.document_id = document_id;
  d.num_tokens = length;
  d.size_bytes = document_bytes > 0 ? document_bytes : 4 * length;
  const TreeShape shape = StaticTreeShape(s, length);
  for (size_t ci = 0; ci < shape.spans.size(); ++ci) {
    d.chunk_tokens.push_back(shape.spans[ci].second - shape.spans[ci].first);
    d.node_kept.push_back(StoredPositions(s, shape.nodes[ci]));
  }
  d.hidden = c.hidden_size;
  d.kv_heads = c.num_key_value_heads;
  d.head_dim = c.head_dim;
  d.layers = s.num_injection_layers;
  d.kv_element_bytes = e;
  d.vector_element_bytes = e == 4 ? 4 : 2;  // float32 with float32 keys/values, else bfloat16
  const treestore::StoreFootprint f = treestore::CountFootprint(d);

  auto family = [](const treestore::FamilyBytes& b) {
    return json{{"records", b.records}, {"key_bytes", b.key_bytes}, {"value_bytes", b.value_bytes},
                {"bytes", b.total()}};
  };
  auto phase = [](const PhasePrediction& x) {
    return json{{"seconds", x.seconds}, {"gflop", x.flops / 1e9}, {"memory_bytes", x.memory_bytes}};
  };
  const json j = {
      {"model", model_dir}, {"length", length}, {"chunks", p.chunks}, {"dtype", dtype},
      {"device", rt.device}, {"threads", at::get_num_threads()},
      {"context_positions", p.context_positions}, {"weight_bytes", p.weight_bytes},
      {"rates", {{"matmul_gflops", rates.matmul_flops_per_second / 1e9},
                 {"memory_gb_per_second", rates.memory_bytes_per_second / 1e9},
                 {"layer_overhead_seconds", rates.layer_overhead_seconds},
                 {"attention_element_seconds", rates.attention_element_seconds},
                 {"node_seconds", rates.node_seconds}}},
      {"tree_store", {{"documents", family(f.documents)}, {"tokens", family(f.tokens)},
                      {"vectors", family(f.vectors)}, {"kv", family(f.kv)}, {"jobs", family(f.jobs)},
                      {"tree_bytes", f.tree_bytes()}, {"total_bytes", f.total()}}},
      {"ingest", phase(p.ingest)},
      {"ask", {{"ttft", phase(p.ask_ttft)}, {"decode", phase(p.ask_decode)},
               {"decode_tokens_per_second", p.ask_tokens_per_second}}},
      {"rebuild", {{"ttft", phase(p.rebuild_ttft)}}},
      {"full_attention", {{"ttft", phase(p.full_ttft)}, {"decode", phase(p.full_decode)},
                          {"decode_tokens_per_second", p.full_tokens_per_second}}}};
  if (as_json) {
    std::cout << j.dump(2) << std::endl;
    return 0;
  }
  auto mib = [](double b) { return b / (1 << 20); };
  std::printf("document: %lld tokens, %lld chunks; a question reads %lld context positions\n",
              static_cast<long long>(length), static_cast<long long>(p.chunks),
              static_cast<long long>(p.context_positions));
  std::printf("rates: matmul %.1f GFLOP/s, memory %.1f GB/s, %.1f us per layer forward (%d threads)\n",
              rates.matmul_flops_per_second / 1e9, rates.memory_bytes_per_second / 1e9,
              rates.layer_overhead_seconds * 1e6, at::get_num_threads());
  std::printf("tree store: %.2f MiB (kv %.2f, vectors %.2f, tokens %.2f, metadata + job %lld bytes)\n",
              mib(f.total()), mib(f.kv.total()), mib(f.vectors.total()), mib(f.tokens.total()),
              static_cast<long long>(f.documents.total() + f.jobs.total()));
  std::printf("%-28s %10s %10s %12s\n", "phase", "seconds", "GFLOP", "memory MiB");
  auto row = [&](const char* name, const PhasePrediction& x) {
    std::printf("%-28s %10.4f %10.3f %12.1f\n", name, x.seconds, x.flops / 1e9, mib(x.memory_bytes));
  };
  row("ingest (static tree)", p.ingest);
  row("ask: time to first token", p.ask_ttft);
  row("rebuild: time to first token", p.rebuild_ttft);
  row("full attention: TTFT", p.full_ttft);
  std::printf("decode: %.1f tokens/s over the tree, %.1f tokens/s with full attention\n",
              p.ask_tokens_per_second, p.full_tokens_per_second);
  std::printf("memory is above the process before the model loads (weights %.1f MiB included)\n",
              mib(p.weight_bytes));
  return 0;
}

}  // namespace sharedllm::cli
