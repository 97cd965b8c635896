// What a question reads of a tokenized document: the retrieval stage (retrieval/lexical.h) over
// the chunks' decoded text, within the model's chunk budget. The service indexes the same terms
// at ingestion (TermsOfChunk) and scores them from its tree store; `sharedllm ask` and the
// evaluations, which hold the whole document in memory, use ChooseChunksToRead.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "llm/tokenizer.h"
#include "retrieval/lexical.h"
#include "sharedllm/sharedllm.h"

namespace sharedllm {

// The terms of chunk tokens [begin, end): the words of their decoded text.
retrieval::TermCounts TermsOfChunk(const Tokenizer& tokenizer, const int64_t* begin,
                                 const int64_t* end);

// The budget a request reads with: the model's chunk_budget when `requested` is 0, else
// `requested`; throws ModelError for a negative request or one above the model's budget.
int64_t ReadBudget(const SharedLLMConfig& config, int64_t requested);

// The chunks of `document` (token ids) that `question` reads, in document order, with their
// scores: every chunk when they fit `budget` (<= 0: no limit).
std::vector<retrieval::ChunkScore> ChooseChunksToRead(const SharedLLM& model,
                                                      const Tokenizer& tokenizer,
                                                      const std::vector<int64_t>& document,
                                                      const std::string& question, int64_t budget);

// The chunk indices of `chosen`, in order (what BuildStaticTree(ids, chunks) takes).
std::vector<int64_t> ChunkIndices(const std::vector<retrieval::ChunkScore>& chosen);

}  // namespace sharedllm
