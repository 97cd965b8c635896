#include "eval/evaluation.h"

#include "sharedllm/reading.h"

#include <algorithm>
#include <cmath>
#include <random>

#include <ATen/ATen.h>
#include <c10/core/InferenceMode.h>

#include "llm/decoder.h"
#include "llm/errors.h"
#include "llm/scoring.h"
#include "eval/streaming_llm.h"

namespace sharedllm {
namespace {

// Mean of the last `scored` values of `nll`; `tail`, if given, receives them.
double TailMean(const std::vector<double>& nll, int64_t scored, std::vector<double>* tail) {
  double sum = 0;
  for (auto it = nll.end() - scored; it != nll.end(); ++it) sum += *it;
  if (tail != nullptr) tail->assign(nll.end() - scored, nll.end());
  return sum / static_cast<double>(scored);
}

// Mean NLL of the last `scored` tokens of `text`, reading `context` (may be empty) through the
// right-child tree; `tail`, if given, receives those tokens' NLLs.
double TailNll(LoadedModel& m, const std::vector<int64_t>& context, const std::vector<int64_t>& text,
               int64_t scored, std::vector<double>* tail = nullptr,
               std::optional<KvFormat> kv_format = std::nullopt) {
  InjectionContext ctx;
  std::vector<EncodedNode> nodes;
  const InjectionContext* ptr = nullptr;
  if (!context.empty()) {
    if (kv_format) {
      // As the service stores it: every node of the static tree through the format (a parent
      // completed from the rows its left child holds), then the same right-child selection.
      DocumentTree tree = m.shared->BuildStaticTree(context);
      for (auto& chunk : tree.nodes) chunk = RoundTripChunk(*m.shared, chunk, *kv_format);
      for (const EncodedNode* n : m.shared->Select(tree, at::Tensor())) nodes.push_back(*n);
    } else {
      nodes = m.shared->BuildDynamicTree(context, at::Tensor());
    }
    std::vector<const EncodedNode*> p;
    for (const auto& n : nodes) p.push_back(&n);
    ctx = m.shared->MakeContext(p, static_cast<int64_t>(m.shared->Chunks(context.size()).size()));
    ptr = &ctx;
  }
  return TailMean(TokenNll(m.lm, text, ptr), scored, tail);
}

// [begin, end) of each run of tokens of `ids` whose pieces hold a digit.
std::vector<std::pair<int64_t, int64_t>> DigitRuns(const Tokenizer& tok, const std::vector<int64_t>& ids) {
  std::vector<std::pair<int64_t, int64_t>> runs;
  int64_t start = -1;
  for (int64_t i = 0; i <= static_cast<int64_t>(ids.size()); ++i) {
    bool digit = false;
    if (i < static_cast<int64_t>(ids.size())) {
      const std::string piece = tok.Decode({ids[i]});
      digit = piece.find_first_of("0123456789") != std::string::npos;
    }
    if (digit && start < 0) start = i;
    if (!digit && start >= 0) {
      runs.emplace_back(start, i);
      start = -1;
    }
  }
  return runs;
}

}  // namespace

PairedDifference PooledMeanDifference(const std::vector<double>& sums, const std::vector<double>& counts) {
  Check(sums.size() == counts.size(), "PooledMeanDifference needs one count per sum");
  PairedDifference d;
  double total = 0, n = 0;
  for (size_t i = 0; i < sums.size(); ++i) {
    total += sums[i];
    n += counts[i];
  }
  if (n <= 0) return d;
  d.mean = total / n;
  const auto windows = static_cast<double>(sums.size());
  if (sums.size() < 2) return d;
  double ss = 0;
  for (size_t i = 0; i < sums.size(); ++i) {
    ss += (sums[i] - d.mean * counts[i]) * (sums[i] - d.mean * counts[i]);
  }
  d.standard_error = std::sqrt(ss * windows / (windows - 1)) / n;
  return d;
}

PairedDifference PairedMeanDifference(const std::vector<double>& a, const std::vector<double>& b) {
  Check(a.size() == b.size(), "PairedMeanDifference needs two samples of the same size");
  PairedDifference d;
  const auto n = static_cast<double>(a.size());
  if (a.empty()) return d;
  for (size_t i = 0; i < a.size(); ++i) d.mean += (a[i] - b[i]) / n;
  if (a.size() < 2) return d;
  double ss = 0;
  for (size_t i = 0; i < a.size(); ++i) ss += (a[i] - b[i] - d.mean) * (a[i] - b[i] - d.mean);
  d.standard_error = std::sqrt(ss / (n - 1) / n);
  return d;
}

int64_t FirstInteger(const std::string& text) {
  size_t i = 0;
  while (i < text.size() && !std::isdigit(static_cast<unsigned char>(text[i]))) ++i;
  if (i == text.size()) return -1;
  int64_t v = 0;
  size_t digits = 0;
  for (; i < text.size() && std::isdigit(static_cast<unsigned char>(text[i])) && digits < 18; ++i, ++digits) {
    v = v * 10 + (text[i] - '0');
  }
  return v;
}

// Mean NLL of the last `scored` tokens of `all`, read whole by the base model with its rotary
// embedding scaled for the length (the zero-shot context-extension baselines).
double FullAttentionNll(LoadedModel& m, const std::vector<int64_t>& all, int64_t scored,
                        RopeType type, double factor, std::vector<double>* tail = nullptr) {
  const ScopedRopeScaling scaled(*m.lm, type, factor);
  return TailMean(TokenNll(m.lm, all), scored, tail);
}

// One model's NLL summed over the copyable scored tokens and over the others.
struct SplitNll {
  double copyable = 0, other = 0;
  static SplitNll Of(const std::vector<double>& tail, const std::vector<bool>& flags) {
    SplitNll s;
    for (size_t k = 0; k < tail.size(); ++k) (flags[k] ? s.copyable : s.other) += tail[k];
    return s;
  }
  void operator+=(const SplitNll& o) {
    copyable += o.copyable;
    other += o.other;
  }
};

std::vector<PplPoint> EvaluatePerplexity(LoadedModel& m, const TokenShard& shard,
                                         const std::vector<double>& multiples, int64_t windows,
                                         uint64_t seed, const PplOptions& options) {
  Check(m.shared != nullptr, "perplexity evaluation needs a SharedLLM model");
  const bool foreign_context = options.foreign_context;
  const std::vector<int64_t>& rename = options.rename_ids;
  if (!rename.empty()) CheckRenameIds(rename, m.config.vocab_size);
  Check(rename.empty() || !foreign_context, "renaming and a foreign context exclude each other");
  c10::InferenceMode guard;
  const int64_t w = m.config.max_position_embeddings;
  const int64_t chunk = m.shared->config().chunk_size;
  const int64_t scored = std::max<int64_t>(1, w / 16);
  double longest = 1;
  for (double x : multiples) longest = std::max(longest, x);
  const int64_t max_len = static_cast<int64_t>(longest * w);
  std::vector<int64_t> docs;
  for (int64_t d = 0; d < shard.num_documents(); ++d) {
    if (shard.Document(d).second >= max_len) docs.push_back(d);
  }
  Check(!docs.empty(), shard.path() + " has no document of " + std::to_string(max_len) + " tokens");
  Check(!foreign_context || docs.size() >= 2,
        shard.path() + " needs two documents of " + std::to_string(max_len) +
            " tokens for a foreign context");
  std::vector<PplPoint> out;
  for (double x : multiples) {
    PplPoint p;
    p.length_multiple = x;
    const int64_t length = static_cast<int64_t>(x * w);
    const int64_t context_len = (length - w) / chunk * chunk;  // n × C
    std::mt19937_64 rng(seed);
    std::mt19937_64 foreign_rng(seed ^ 0x5eed'f0e1'9c0fULL);  // apart, so the windows stay the same
    std::vector<double> shared_nll, trunc_nll, stream_nll;  // per window
    double linear_sum = 0, yarn_sum = 0;
    // The scored tokens split by CopyableTokens: NLL sums per model (all windows pooled), and per
    // window Σ (SharedLLM − truncated) NLL over its copyable tokens and their count.
    SplitNll split_shared, split_trunc, split_yarn;
    std::vector<double> copy_diff, copy_n;
    const bool full = x > 1 && x <= options.full_attention_max;
    for (int64_t i = 0; i < windows; ++i) {
      const size_t doc = rng() % docs.size();
      const auto [first, count] = shard.Document(docs[doc]);
      const int64_t start = first + static_cast<int64_t>(rng() % (count - max_len + 1));
      // The same last W tokens in every length: only the context in front of them grows.
      std::vector<int64_t> all = shard.Slice(start + max_len - w - context_len, context_len + w);
      std::vector<int64_t> context(all.begin(), all.begin() + context_len);
      std::vector<int64_t> text(all.begin() + context_len, all.end());
      if (!rename.empty()) {
        // One generator per window, the text's ids drawn first: its renaming is the same at
        // every length, only the context's grows.
        std::mt19937_64 rename_rng((seed ^ 0x4e41'4d45'7265'6eULL) + static_cast<uint64_t>(i));
        RenameTokens(text, context, rename[0], rename[1], rename_rng);
        std::copy(context.begin(), context.end(), all.begin());
        std::copy(text.begin(), text.end(), all.begin() + context_len);
      }
      if (foreign_context) {
        // As long a context from another document: what the text gains from its genre alone.
        const size_t other = (doc + 1 + foreign_rng() % (docs.size() - 1)) % docs.size();
        const auto [ofirst, ocount] = shard.Document(docs[other]);
        const int64_t ostart =
            ofirst + static_cast<int64_t>(foreign_rng() % (ocount - context_len + 1));
        context = shard.Slice(ostart, context_len);
      }
      std::vector<double> trunc_tail, shared_tail;
      const double truncated = TailNll(m, {}, text, scored, &trunc_tail);
      trunc_nll.push_back(truncated);
      shared_nll.push_back(context.empty() ? truncated
                                           : TailNll(m, context, text, scored, &shared_tail,
                                                     options.kv_format));
      std::vector<bool> flags;  // the scored tokens' CopyableTokens against the context read
      if (!context.empty()) {
        const std::vector<bool> copyable = CopyableTokens(context, text);
        flags.assign(copyable.end() - scored, copyable.end());
        const SplitNll t = SplitNll::Of(trunc_tail, flags), sh = SplitNll::Of(shared_tail, flags);
        split_trunc += t;
        split_shared += sh;
        copy_diff.push_back(sh.copyable - t.copyable);
        copy_n.push_back(static_cast<double>(std::count(flags.begin(), flags.end(), true)));
      }
      stream_nll.push_back(StreamingNll(m.lm, all, scored));
      if (full) {
        const double factor = static_cast<double>(all.size()) / w;
        std::vector<double> yarn_tail;
        linear_sum += FullAttentionNll(m, all, scored, RopeType::kLinear, factor);
        yarn_sum += FullAttentionNll(m, all, scored, RopeType::kYarn, factor, &yarn_tail);
        // Full attention reads the text's own context: split by it (foreign: not comparable).
        if (!foreign_context && !flags.empty()) split_yarn += SplitNll::Of(yarn_tail, flags);
      }
      ++p.windows;
    }
    const auto mean = [](const std::vector<double>& v) {
      double s = 0;
      for (double x : v) s += x;
      return s / static_cast<double>(v.size());
    };
    p.sharedllm_ppl = std::exp(mean(shared_nll));
    p.truncated_ppl = std::exp(mean(trunc_nll));
    p.log_ratio_se = PairedMeanDifference(shared_nll, trunc_nll).standard_error;
    p.streaming_ppl = std::exp(mean(stream_nll));
    p.streaming_log_ratio_se = PairedMeanDifference(stream_nll, trunc_nll).standard_error;
    // Windows with a context, each scoring `scored` tokens.
    int64_t copy_count = 0;
    for (double n : copy_n) copy_count += static_cast<int64_t>(n);
    const int64_t other_count = static_cast<int64_t>(copy_n.size()) * scored - copy_count;
    if (!copy_n.empty()) {
      p.copyable_fraction = static_cast<double>(copy_count) / static_cast<double>(copy_count + other_count);
    }
    const auto ppl = [](double sum, int64_t count) {
      return count > 0 ? std::exp(sum / static_cast<double>(count)) : 0.0;
    };
    p.sharedllm_copyable_ppl = ppl(split_shared.copyable, copy_count);
    p.truncated_copyable_ppl = ppl(split_trunc.copyable, copy_count);
    p.sharedllm_other_ppl = ppl(split_shared.other, other_count);
    p.truncated_other_ppl = ppl(split_trunc.other, other_count);
    p.copyable_log_ratio_se = PooledMeanDifference(copy_diff, copy_n).standard_error;
    if (full) {
      p.full_linear_ppl = std::exp(linear_sum / p.windows);
      p.full_yarn_ppl = std::exp(yarn_sum / p.windows);
      if (!foreign_context) {
        p.full_yarn_copyable_ppl = ppl(split_yarn.copyable, copy_count);
        p.full_yarn_other_ppl = ppl(split_yarn.other, other_count);
      }
    }
    out.push_back(p);
  }
  return out;
}

bool SpanAtFullResolution(int64_t begin, int64_t end, const std::vector<const EncodedNode*>& selected,
                          const std::vector<int64_t>& chunk_begins, const std::vector<int64_t>& alphas) {
  for (const EncodedNode* e : selected) {
    const int64_t level = e->node.level;
    if (level < 1 || level > static_cast<int64_t>(alphas.size()) || alphas[level - 1] != 1) continue;
    const int64_t offset = chunk_begins.at(e->chunk);
    if (offset + e->node.begin <= begin && end <= offset + e->node.end) return true;
  }
  return false;
}

std::vector<PasskeyPoint> EvaluatePasskey(LoadedModel& m, const std::vector<double>& multiples,
                                          const std::vector<double>& depths, int64_t trials,
                                          uint64_t seed, std::optional<KvFormat> kv_format) {
  Check(m.shared != nullptr && m.tokenizer != nullptr, "passkey needs a SharedLLM with a tokenizer");
  c10::InferenceMode guard;
  const Tokenizer& tok = *m.tokenizer;
  const int64_t w = m.config.max_position_embeddings;
  const auto intro = tok.Encode("There is an important info hidden inside a lot of irrelevant text. "
                                "Find it and memorize them. I will quiz you about the important "
                                "information there.");
  const auto filler = tok.Encode(" The grass is green. The sky is blue. The sun is yellow. Here we "
                                 "go. There and back again.");
  std::vector<int64_t> question = {};
  if (tok.bos_id() >= 0) question.push_back(tok.bos_id());
  const std::string question_text = "What is the pass key? The pass key is";
  for (int64_t id : tok.Encode(question_text)) question.push_back(id);
  SamplingOptions sampling;
  sampling.max_tokens = 8;
  std::vector<PasskeyPoint> out;
  for (double x : multiples) {
    for (double depth : depths) {
      PasskeyPoint p;
      p.length_multiple = x;
      p.depth = depth;
      std::mt19937_64 rng(seed + static_cast<uint64_t>(x * 1000) + static_cast<uint64_t>(depth * 100));
      for (int64_t t = 0; t < trials; ++t) {
        const int64_t key = 10000 + static_cast<int64_t>(rng() % 90000);
        const auto needle = tok.Encode(" The pass key is " + std::to_string(key) + ". Remember it. " +
                                       std::to_string(key) + " is the pass key.");
        // Haystack of filler repeats so that intro + haystack + question ≈ x × W tokens.
        const int64_t target = static_cast<int64_t>(x * w) - static_cast<int64_t>(question.size());
        const int64_t repeats = std::max<int64_t>(
            1, (target - static_cast<int64_t>(intro.size() + needle.size())) / static_cast<int64_t>(filler.size()));
        const int64_t at = static_cast<int64_t>(std::llround(depth * repeats));
        std::vector<int64_t> doc = intro;
        for (int64_t r = 0; r <= repeats; ++r) {
          if (r == at) doc.insert(doc.end(), needle.begin(), needle.end());
          if (r < repeats) doc.insert(doc.end(), filler.begin(), filler.end());
        }
        // SharedLLM: the document through the tree, searched with the question.
        {
          // A document of more chunks than the budget is read where its words match the question.
          const auto chosen = ChunkIndices(ChooseChunksToRead(*m.shared, tok, doc, question_text,
                                                              m.shared->config().chunk_budget));
          DocumentTree tree = m.shared->BuildStaticTree(doc, chosen);
          if (kv_format) {
            for (auto& chunk : tree.nodes) chunk = RoundTripChunk(*m.shared, chunk, *kv_format);
          }
          auto selected = m.shared->Select(tree, m.shared->QueryVector(question));
          const auto spans = m.shared->Chunks(static_cast<int64_t>(doc.size()));
          std::vector<int64_t> chunk_begins;  // of each chunk read, by its reading position
          for (int64_t c : chosen) chunk_begins.push_back(spans[c].first);
          const int64_t needle_at = static_cast<int64_t>(intro.size() + at * filler.size());
          bool full = false;
          for (const auto& run : DigitRuns(tok, needle)) {
            full = full || SpanAtFullResolution(needle_at + run.first, needle_at + run.second, selected,
                                                chunk_begins, m.shared->config().alphas);
          }
          p.key_full_resolution.push_back(full ? 1 : 0);
          InjectionContext ctx = m.shared->MakeContext(selected, tree.num_chunks());
          Decoder decoder(m.lm, &ctx);
          p.sharedllm_answers.push_back(FirstInteger(decoder.Generate(question, sampling, &tok).text));
          if (p.sharedllm_answers.back() == key) ++p.sharedllm_correct;
        }
        // Baseline: the base model with as much of the document's end as fits its window.
        {
          std::vector<int64_t> prompt;
          const int64_t room = w - static_cast<int64_t>(question.size()) - sampling.max_tokens;
          const int64_t keep = std::min<int64_t>(room, static_cast<int64_t>(doc.size()));
          if (tok.bos_id() >= 0) prompt.push_back(tok.bos_id());
          prompt.insert(prompt.end(), doc.end() - keep, doc.end());
          prompt.insert(prompt.end(), question.begin() + (tok.bos_id() >= 0 ? 1 : 0), question.end());
          Decoder decoder(m.lm);  // no context: cross-attention is skipped
          p.truncated_answers.push_back(FirstInteger(decoder.Generate(prompt, sampling, &tok).text));
          if (p.truncated_answers.back() == key) ++p.truncated_correct;
        }
        p.keys.push_back(key);
        ++p.trials;
      }
      out.push_back(p);
    }
  }
  return out;
}

}  // namespace sharedllm
