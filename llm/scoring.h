// Per-token negative log-likelihood, the quantity perplexity is made of.
#pragma once

#include <random>
#include <vector>

#include "llm/llama.h"

namespace sharedllm {

// ids: n tokens -> n-1 values, nll[i] = -ln p(ids[i+1] | ids[0..i]), in one causal forward;
// with an injection each layer adds its update (LayerInjection).
std::vector<double> TokenNll(CausalLM& lm, const std::vector<int64_t>& ids,
                             const LayerInjection* injection = nullptr);

// ids: n tokens -> n-1 flags, copyable[i]: ids[i+1] is a token only `context` gives, by copying —
// the bigram (ids[i], ids[i+1]) occurs in the context but not in ids[0..i], and ids[i+1] does not
// occur in ids[0..i]. What a long context can add that the running text cannot (identifiers of a
// file, names of a book); `eval ppl` reports these tokens apart, `lm_copy_weight` weights them.
std::vector<bool> CopyableTokens(const std::vector<int64_t>& context, const std::vector<int64_t>& ids);

// Renames every distinct token of `context` and `running` whose id lies in [lo, hi) to an id of
// that range drawn without replacement: one to one, the same in both, every other token as it was
// (`lm_rename` trains on such documents, `eval ppl --rename-ids` scores them). Draws from `rng`
// only for the tokens it renames, in order of first appearance: `context` first.
void RenameTokens(std::vector<int64_t>& context, std::vector<int64_t>& running, int64_t lo, int64_t hi,
                  std::mt19937_64& rng);

// Throws ModelError unless `ids` is a renaming range [lo, hi): two ids, 0 <= lo, at least two ids
// in it, inside a vocabulary of `vocab_size` (lm_rename_ids, eval ppl --rename-ids).
void CheckRenameIds(const std::vector<int64_t>& ids, int64_t vocab_size);

}  // namespace sharedllm
