// The retrieval stage (docs/design/retrieval.md): which chunks of a long document, or of a
// collection, a question reads. Lexical: each chunk's words are indexed at ingestion (the tree
// store persists them as postings, store/tree_store.h), a question's words score the chunks by
// BM25, and the best `budget` chunks are read, in document order. The query-aware tree search
// then runs inside those chunks as before.
//
// Plain C++ (no tensor library, no abseil): the store-backed service, `sharedllm ask` and the
// evaluations all rank chunks through these functions, so they read the same chunks.
#pragma once

#include <cstdint>
#include <map>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace sharedllm::retrieval {

// Longest term kept, bytes; longer words are cut to it (a key field stays small).
inline constexpr size_t kMaxTermBytes = 32;

// A chunk's distinct terms with their counts, sorted by term.
using TermCounts = std::vector<std::pair<std::string, int32_t>>;

// The words of `text`: maximal runs of ASCII letters and digits, and of bytes >= 0x80 (so a
// non-ASCII word is one term), ASCII-lowercased, cut to kMaxTermBytes. Counts of at most 65535.
TermCounts CountTerms(std::string_view text);
// The distinct terms of a question, sorted.
std::vector<std::string> QueryTerms(std::string_view text);
// Words in a chunk: the sum of its counts (BM25's document length).
int64_t TermTotal(const TermCounts& terms);

// One occurrence list entry: document `doc` (an index into the caller's list of documents) has
// term t `count` times in chunk `chunk`, whose length is `length` words.
struct Posting {
  int32_t doc = 0;
  int64_t chunk = 0;
  int32_t count = 0;
  int32_t length = 0;
};

struct ChunkScore {
  int32_t doc = 0;
  int64_t chunk = 0;
  double score = 0;  // BM25; 0 for a chunk chosen without a matching term
  bool operator==(const ChunkScore& o) const {
    return doc == o.doc && chunk == o.chunk && score == o.score;
  }
};

// A query term found in more chunks of the scope than this is too common to choose `budget`
// chunks by: it does not score, and the tree store stops reading its postings there, so that a
// question's retrieval work is bounded by the budget, not by the document (the words "the" and
// "is" are in nearly every chunk of an English text). Such a term's BM25 weight is also small:
// at most ln(1 + N / (4 budget)) against ln(1 + N) for a word found once.
inline constexpr int64_t kCommonTermFactor = 4;
inline int64_t CommonTermLimit(int64_t budget) { return kCommonTermFactor * budget; }

// BM25 (k1 = 1.2, b = 0.75) of every chunk that holds at least one query term. `postings[t]`
// lists query term t's occurrences over the scope (each chunk at most once per term);
// `total_chunks` is the number of chunks in the scope. A term in more than half of them is left
// out (no evidence for any), and with max_postings > 0 so is a term with more postings than that
// (CommonTermLimit). Output sorted by (doc, chunk).
std::vector<ChunkScore> ScoreBm25(const std::vector<std::vector<Posting>>& postings,
                                  int64_t total_chunks, int64_t max_postings);

// True when a scope of `total_chunks` is read whole: no budget (<= 0), or one it fits.
inline bool ReadsEveryChunk(int64_t total_chunks, int64_t budget) {
  return budget <= 0 || total_chunks <= budget;
}

// The chunks a question reads, in reading order (doc, then chunk). `chunks_per_doc[d]` is
// document d's chunk count. With budget <= 0 or at least every chunk of the scope: every chunk
// (each with its score, 0 where none). Otherwise the `budget` best-scored chunks; ties, and the
// places no chunk with a query term fills, go to chunks next to a better one (a key sentence cut
// by a chunk boundary continues there) inside its document; the rest of the budget stays unread.
// When no chunk scores: the last chunks of each document, taken in turn.
std::vector<ChunkScore> ChooseChunks(const std::vector<ChunkScore>& scores,
                                     const std::vector<int64_t>& chunks_per_doc, int64_t budget);

// An in-memory index of chunks' terms: what `sharedllm ask` and the evaluations use over a
// document they tokenize themselves (the service keeps the same postings in its tree store).
class MemoryIndex {
 public:
  void Add(int32_t doc, int64_t chunk, const TermCounts& terms);
  // Postings of each term of `query_terms`, in that order.
  std::vector<std::vector<Posting>> Postings(const std::vector<std::string>& query_terms) const;

 private:
  std::map<std::string, std::vector<Posting>> postings_;
};

}  // namespace sharedllm::retrieval
