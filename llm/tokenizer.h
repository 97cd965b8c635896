// Text <-> token ids.
// The sentencepiece implementation reads tokenizer.model itself (see sentencepiece_tokenizer.cpp).
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

namespace sharedllm {

class Tokenizer {
 public:
  virtual ~Tokenizer() = default;
  // Ids of `text`, without BOS/EOS.
  virtual std::vector<int64_t> Encode(const std::string& text) const = 0;
  virtual std::string Decode(const std::vector<int64_t>& ids) const = 0;
  virtual int64_t vocab_size() const = 0;
  virtual int64_t bos_id() const = 0;  // -1 when the model has none
  virtual int64_t eos_id() const = 0;  // -1 when the model has none
};

// Loads a sentencepiece model file (`tokenizer.model`, as Llama-2 ships it); throws ModelError.
std::unique_ptr<Tokenizer> LoadSentencePieceTokenizer(const std::string& path);

// `<dir>/tokenizer.model` if present, else nullptr (the model then takes token ids only).
std::unique_ptr<Tokenizer> LoadTokenizer(const std::string& dir);

}  // namespace sharedllm
