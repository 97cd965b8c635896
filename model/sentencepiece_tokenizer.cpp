// The only file that includes sentencepiece: it must include no abseil header (DESIGN.md §5).
#include <sentencepiece_processor.h>

#include "model/errors.h"
#include "model/file_util.h"
#include "model/tokenizer.h"

namespace sharedllm {
namespace {

class SentencePieceTokenizer : public Tokenizer {
 public:
  explicit SentencePieceTokenizer(const std::string& path) {
    const auto status = sp_.Load(path);
    if (!status.ok()) {
      throw ModelError("cannot load sentencepiece model " + path + ": " + status.ToString());
    }
  }
  std::vector<int64_t> Encode(const std::string& text) const override {
    std::vector<int> ids;
    const auto status = sp_.Encode(text, &ids);
    if (!status.ok()) throw ModelError("tokenizer: " + status.ToString());
    return std::vector<int64_t>(ids.begin(), ids.end());
  }
  std::string Decode(const std::vector<int64_t>& ids) const override {
    std::vector<int> in;
    in.reserve(ids.size());
    for (int64_t id : ids) {
      Check(id >= 0 && id < sp_.GetPieceSize(), "tokenizer: id " + std::to_string(id) + " out of range");
      in.push_back(static_cast<int>(id));
    }
    std::string text;
    const auto status = sp_.Decode(in, &text);
    if (!status.ok()) throw ModelError("tokenizer: " + status.ToString());
    return text;
  }
  int64_t vocab_size() const override { return sp_.GetPieceSize(); }
  int64_t bos_id() const override { return sp_.bos_id(); }
  int64_t eos_id() const override { return sp_.eos_id(); }

 private:
  sentencepiece::SentencePieceProcessor sp_;
};

}  // namespace

std::unique_ptr<Tokenizer> LoadSentencePieceTokenizer(const std::string& path) {
  return std::make_unique<SentencePieceTokenizer>(path);
}

std::unique_ptr<Tokenizer> LoadTokenizer(const std::string& dir) {
  const std::string path = JoinPath(dir, "tokenizer.model");
  if (!FileExists(path)) return nullptr;
  return LoadSentencePieceTokenizer(path);
}

}  // namespace sharedllm
