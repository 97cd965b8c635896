// Helpers for the tests that run a model: tiny seeded configs and models, a "scripted" model whose
// greedy continuation is fixed by a table, tensor comparison and a sentencepiece model trained on
// the fly with spm_train.
#pragma once

#include <fstream>
#include <map>
#include <string>
#include <vector>

#include <ATen/ATen.h>
#include <ATen/CPUGeneratorImpl.h>

#include "llm/config.h"
#include "llm/llama.h"
#include "sharedllm/sharedllm.h"
#include "training/token_shards.h"
#include "tests/test_util.h"

#ifndef SHAREDLLM_SPM_TRAIN
#define SHAREDLLM_SPM_TRAIN ""
#endif

namespace sharedllm::test {

// Gives every cross-attention o_proj random weights, so the context changes the output.
inline void RandomizeCrossAttention(CausalLM& lm, uint64_t seed) {
  auto gen = at::make_generator<at::CPUGeneratorImpl>(seed);
  c10::NoGradGuard no_grad;
  for (auto& p : lm->named_parameters()) {
    if (IsSharedLLMParameter(p.key()) && p.key().find("o_proj") != std::string::npos) {
      p.value().copy_(at::normal(0.0, 0.3, p.value().sizes(), gen));
    }
  }
}

// vocab 61, hidden 32, 2 layers, 4 query heads sharing 2 kv heads, untied.
inline ModelConfig TinyConfig() {
  ModelConfig c;
  c.vocab_size = 61;
  c.hidden_size = 32;
  c.intermediate_size = 48;
  c.num_hidden_layers = 2;
  c.num_attention_heads = 4;
  c.num_key_value_heads = 2;
  c.head_dim = 8;
  c.rms_norm_eps = 1e-6;
  c.max_position_embeddings = 128;
  c.bos_token_id = 1;
  c.eos_token_ids = {2};
  c.Validate();
  return c;
}

// std 0.1 so that logits vary by more than float32 noise.
inline CausalLM TinyModel(const ModelConfig& c = TinyConfig(), uint64_t seed = 1234,
                          at::ScalarType dtype = at::kFloat) {
  CausalLM lm(c, at::TensorOptions().dtype(dtype));
  lm->InitRandom(seed, 0.1);
  lm->eval();
  return lm;
}

inline at::Tensor Ids(const std::vector<int64_t>& ids) {
  return at::tensor(ids, at::TensorOptions().dtype(at::kLong)).view({1, -1});
}

inline std::vector<int64_t> SeededIds(int64_t n, int64_t vocab, uint64_t seed) {
  auto gen = at::make_generator<at::CPUGeneratorImpl>(seed);
  auto t = at::randint(vocab, {n}, gen, at::TensorOptions().dtype(at::kLong));
  return std::vector<int64_t>(t.data_ptr<int64_t>(), t.data_ptr<int64_t>() + n);
}

// Writes a token shard in the SLTOKv1 format (training/token_shards.h) with uint16 tokens.
inline void WriteTokenShard(const std::string& path, uint32_t vocab,
                            const std::vector<std::vector<int64_t>>& docs) {
  std::string out = std::string("SLTOKv1", 7) + '\0';
  auto put = [&](uint64_t v, int bytes) {
    for (int i = 0; i < bytes; ++i) out.push_back(static_cast<char>((v >> (8 * i)) & 0xff));
  };
  uint64_t n = 0;
  for (const auto& d : docs) n += d.size();
  put(vocab, 4);
  put(2, 4);
  put(n, 8);
  put(docs.size(), 8);
  uint64_t at = 0;
  for (const auto& d : docs) {
    put(at, 8);
    at += d.size();
  }
  for (const auto& d : docs) {
    for (int64_t t : d) put(static_cast<uint64_t>(t), 2);
  }
  put(Crc32(out.data(), out.size()), 4);
  std::ofstream(path, std::ios::binary) << out;
}

inline double MaxAbsDiff(const at::Tensor& a, const at::Tensor& b) {
  return (a.to(at::kDouble) - b.to(at::kDouble)).abs().max().item<double>();
}

// Full forward logits [T, vocab] of one sequence.
inline at::Tensor FullLogits(CausalLM& lm, const std::vector<int64_t>& ids) {
  c10::NoGradGuard no_grad;
  return lm->forward(Ids(ids)).squeeze(0);
}

// A model whose greedy next token depends only on the current one: next[a] (or `fallback`).
// Attention and MLP outputs are zero (o_proj, down_proj = 0), embeddings are one-hot, so the
// final hidden state of token a is sqrt(hidden) * e_a and lm_head picks the scripted successor.
inline CausalLM ScriptedModel(int64_t vocab, const std::map<int64_t, int64_t>& next,
                              int64_t fallback) {
  ModelConfig c;
  c.vocab_size = vocab;
  c.hidden_size = (vocab + 3) / 4 * 4;
  c.intermediate_size = 4;
  c.num_hidden_layers = 1;
  c.num_attention_heads = 2;
  c.num_key_value_heads = 2;
  c.head_dim = c.hidden_size / 2;
  c.eos_token_ids = {};
  CausalLM lm(c, at::TensorOptions().dtype(at::kFloat));
  c10::NoGradGuard no_grad;
  for (auto& p : lm->named_parameters()) {
    if (p.key().find("norm") != std::string::npos) p.value().fill_(1.0);
    else p.value().zero_();
  }
  auto& emb = lm->model->embed_tokens->weight;
  for (int64_t a = 0; a < vocab; ++a) emb[a][a].fill_(1.0);
  auto& head = lm->lm_head->weight;  // [vocab, hidden]
  for (int64_t a = 0; a < vocab; ++a) {
    auto it = next.find(a);
    head[it == next.end() ? fallback : it->second][a].fill_(1.0);
  }
  lm->eval();
  return lm;
}

inline const char* kTokenizerText =
    "the quick brown fox jumps over the lazy dog.\n"
    "hello world, this is a small text for the tokenizer.\n"
    "the end of the story is near; more text follows here.\n"
    "a stop string should never be streamed to the client.\n"
    "numbers like 12345 and words like tokenizer, streaming and decoding.\n";

// Trains a byte-fallback BPE sentencepiece model in `dir`; returns its path, or "" when spm_train
// is not available (the caller then skips).
inline std::string TrainTokenizer(const TempDir& dir, std::string* why = nullptr) {
  const std::string spm = SHAREDLLM_SPM_TRAIN;
  if (spm.empty() || ::access(spm.c_str(), X_OK) != 0) {
    if (why) *why = "spm_train not found (Debian package sentencepiece)";
    return "";
  }
  std::string text;
  for (int i = 0; i < 4; ++i) text += kTokenizerText;
  // Frequent enough that each of its words becomes one piece (the text tests need distinct tokens).
  for (int i = 0; i < 30; ++i) text += "hello world, this is the end of it\n";
  WriteFile(dir / "spm_input.txt", text);
  auto r = Run({spm, "--input=" + (dir / "spm_input.txt"), "--model_prefix=" + (dir / "spm"),
                "--vocab_size=320", "--model_type=bpe", "--byte_fallback=true",
                "--character_coverage=1.0", "--hard_vocab_limit=false",
                "--normalization_rule_name=identity", "--minloglevel=2"},
               dir.path());
  if (r.exit_code != 0 || !Exists(dir / "spm.model")) {
    if (why) *why = "spm_train failed: " + r.err;
    return "";
  }
  return dir / "spm.model";
}

}  // namespace sharedllm::test
