#include "sharedllm/reading.h"

#include "llm/errors.h"

namespace sharedllm {

retrieval::TermCounts TermsOfChunk(const Tokenizer& tokenizer, const int64_t* begin,
                                 const int64_t* end) {
  return retrieval::CountTerms(tokenizer.Decode(std::vector<int64_t>(begin, end)));
}

int64_t ReadBudget(const SharedLLMConfig& config, int64_t requested) {
  Check(requested >= 0, "max_chunks must be >= 0 (0: the model's budget)");
  if (requested == 0) return config.chunk_budget;
  Check(config.chunk_budget == 0 || requested <= config.chunk_budget,
        "max_chunks " + std::to_string(requested) + " is above the model's budget of " +
            std::to_string(config.chunk_budget) + " chunks");
  return requested;
}

std::vector<retrieval::ChunkScore> ChooseChunksToRead(const SharedLLM& model,
                                                      const Tokenizer& tokenizer,
                                                      const std::vector<int64_t>& document,
                                                      const std::string& question, int64_t budget) {
  const auto spans = model.Chunks(static_cast<int64_t>(document.size()));
  const auto count = static_cast<int64_t>(spans.size());
  if (retrieval::ReadsEveryChunk(count, budget)) return retrieval::ChooseChunks({}, {count}, budget);
  retrieval::MemoryIndex index;
  for (int64_t c = 0; c < count; ++c) {
    index.Add(0, c, TermsOfChunk(tokenizer, document.data() + spans[c].first,
                               document.data() + spans[c].second));
  }
  const auto scores = retrieval::ScoreBm25(index.Postings(retrieval::QueryTerms(question)), count,
                                          retrieval::CommonTermLimit(budget));
  return retrieval::ChooseChunks(scores, {count}, budget);
}

std::vector<int64_t> ChunkIndices(const std::vector<retrieval::ChunkScore>& chosen) {
  std::vector<int64_t> out;
  out.reserve(chosen.size());
  for (const auto& c : chosen) out.push_back(c.chunk);
  return out;
}

}  // namespace sharedllm
