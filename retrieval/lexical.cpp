#include "retrieval/lexical.h"

#include <algorithm>
#include <cmath>
#include <set>

namespace sharedllm::retrieval {
namespace {

bool WordByte(unsigned char c) {
  return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c >= 0x80;
}

template <typename F>
void ForEachWord(std::string_view text, F&& f) {
  size_t i = 0;
  while (i < text.size()) {
    while (i < text.size() && !WordByte(static_cast<unsigned char>(text[i]))) ++i;
    const size_t begin = i;
    while (i < text.size() && WordByte(static_cast<unsigned char>(text[i]))) ++i;
    if (i == begin) continue;
    std::string word(text.substr(begin, std::min(i - begin, kMaxTermBytes)));
    for (char& c : word) {
      if (c >= 'A' && c <= 'Z') c = static_cast<char>(c - 'A' + 'a');
    }
    f(std::move(word));
  }
}

// BM25's constants, the usual ones (Robertson and Zaragoza, "The Probabilistic Relevance
// Framework: BM25 and Beyond").
constexpr double kK1 = 1.2;
constexpr double kB = 0.75;

}  // namespace

TermCounts CountTerms(std::string_view text) {
  std::map<std::string, int32_t> counts;
  ForEachWord(text, [&](std::string w) {
    int32_t& n = counts[std::move(w)];
    n = std::min<int32_t>(n + 1, 65535);
  });
  return TermCounts(counts.begin(), counts.end());
}

std::vector<std::string> QueryTerms(std::string_view text) {
  std::set<std::string> terms;
  ForEachWord(text, [&](std::string w) { terms.insert(std::move(w)); });
  return std::vector<std::string>(terms.begin(), terms.end());
}

int64_t TermTotal(const TermCounts& terms) {
  int64_t n = 0;
  for (const auto& t : terms) n += t.second;
  return n;
}

std::vector<ChunkScore> ScoreBm25(const std::vector<std::vector<Posting>>& all_postings,
                                  int64_t total_chunks, int64_t max_postings) {
  std::vector<const std::vector<Posting>*> postings;
  for (const auto& list : all_postings) {
    const auto df = static_cast<int64_t>(list.size());
    // A term in more than half of the scope's chunks is no evidence for any of them (its
    // Robertson-Sparck Jones weight, ln((N - df + 0.5) / (df + 0.5)), is below zero): it does not
    // score, so it cannot rank chunks that only hold it above the neighbours of a real match.
    if (2 * df > std::max<int64_t>(total_chunks, 1)) continue;
    if (max_postings <= 0 || df <= max_postings) postings.push_back(&list);
  }
  // The mean chunk length over the chunks seen: every full chunk has the same number of tokens,
  // so lengths in words differ little and this estimate is close to the scope's true mean.
  double length_sum = 0;
  int64_t length_count = 0;
  for (const auto* list : postings) {
    for (const Posting& p : *list) {
      length_sum += p.length;
      ++length_count;
    }
  }
  const double mean_length = length_count > 0 ? std::max(1.0, length_sum / length_count) : 1.0;
  const double n = static_cast<double>(std::max<int64_t>(total_chunks, 1));
  std::map<std::pair<int32_t, int64_t>, double> score;
  for (const auto* list : postings) {
    if (list->empty()) continue;
    const double df = static_cast<double>(list->size());
    const double idf = std::log(1.0 + (n - df + 0.5) / (df + 0.5));
    for (const Posting& p : *list) {
      const double tf = p.count;
      const double norm = kK1 * (1.0 - kB + kB * p.length / mean_length);
      score[{p.doc, p.chunk}] += idf * tf * (kK1 + 1.0) / (tf + norm);
    }
  }
  std::vector<ChunkScore> out;
  out.reserve(score.size());
  for (const auto& [key, s] : score) out.push_back({key.first, key.second, s});
  return out;
}

std::vector<ChunkScore> ChooseChunks(const std::vector<ChunkScore>& scores,
                                     const std::vector<int64_t>& chunks_per_doc, int64_t budget) {
  int64_t total = 0;
  for (int64_t n : chunks_per_doc) total += n;
  std::map<std::pair<int32_t, int64_t>, double> chosen;  // ordered: the reading order
  auto inside = [&](int32_t doc, int64_t chunk) {
    return doc >= 0 && doc < static_cast<int32_t>(chunks_per_doc.size()) && chunk >= 0 &&
           chunk < chunks_per_doc[doc];
  };
  std::map<std::pair<int32_t, int64_t>, double> score_of;
  for (const ChunkScore& s : scores) {
    if (inside(s.doc, s.chunk)) score_of[{s.doc, s.chunk}] = s.score;
  }
  if (ReadsEveryChunk(total, budget)) {
    std::vector<ChunkScore> all;
    all.reserve(static_cast<size_t>(total));
    for (int32_t d = 0; d < static_cast<int32_t>(chunks_per_doc.size()); ++d) {
      for (int64_t c = 0; c < chunks_per_doc[d]; ++c) {
        auto it = score_of.find({d, c});
        all.push_back({d, c, it == score_of.end() ? 0.0 : it->second});
      }
    }
    return all;
  }
  // Best first; equal scores in reading order.
  std::vector<ChunkScore> ranked;
  for (const auto& [key, s] : score_of) {
    if (s > 0) ranked.push_back({key.first, key.second, s});
  }
  std::stable_sort(ranked.begin(), ranked.end(),
                   [](const ChunkScore& a, const ChunkScore& b) { return a.score > b.score; });
  for (const ChunkScore& s : ranked) {
    if (static_cast<int64_t>(chosen.size()) == budget) break;
    chosen[{s.doc, s.chunk}] = s.score;
  }
  // Room left: the neighbours of the chosen chunks, nearest first, best-scored seeds first.
  std::vector<std::pair<int32_t, int64_t>> seeds;
  for (const ChunkScore& s : ranked) {
    if (chosen.count({s.doc, s.chunk})) seeds.push_back({s.doc, s.chunk});
  }

  int64_t longest = 0;
  for (int64_t n : chunks_per_doc) longest = std::max(longest, n);
  for (int64_t r = 1; r < longest && static_cast<int64_t>(chosen.size()) < budget && !seeds.empty(); ++r) {
    for (const auto& [d, c] : seeds) {
      for (int64_t next : {c + r, c - r}) {
        if (static_cast<int64_t>(chosen.size()) == budget) break;
        if (inside(d, next)) chosen.emplace(std::make_pair(d, next), 0.0);
      }
    }
  }
  // No chunk holds a query term: each document's last chunks, taken in turn. (With a match, the
  // budget is not filled with documents that hold none: unrelated text costs time and says
  // nothing; the model reads short contexts as well as long ones.)
  for (int64_t back = 1; ranked.empty() && static_cast<int64_t>(chosen.size()) < budget; ++back) {
    for (int32_t d = 0; d < static_cast<int32_t>(chunks_per_doc.size()); ++d) {
      if (static_cast<int64_t>(chosen.size()) == budget) break;
      if (inside(d, chunks_per_doc[d] - back)) chosen.emplace(std::make_pair(d, chunks_per_doc[d] - back), 0.0);
    }
  }
  std::vector<ChunkScore> out;
  out.reserve(chosen.size());
  for (const auto& [key, s] : chosen) out.push_back({key.first, key.second, s});
  return out;
}

void MemoryIndex::Add(int32_t doc, int64_t chunk, const TermCounts& terms) {
  const auto length = static_cast<int32_t>(std::min<int64_t>(TermTotal(terms), INT32_MAX));
  for (const auto& [term, count] : terms) postings_[term].push_back({doc, chunk, count, length});
}

std::vector<std::vector<Posting>> MemoryIndex::Postings(
    const std::vector<std::string>& query_terms) const {
  std::vector<std::vector<Posting>> out;
  for (const std::string& t : query_terms) {
    auto it = postings_.find(t);
    out.push_back(it == postings_.end() ? std::vector<Posting>() : it->second);
  }
  return out;
}

}  // namespace sharedllm::retrieval
