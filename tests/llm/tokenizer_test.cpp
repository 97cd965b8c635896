// Parity of the in-process sentencepiece reader with the reference tools spm_train/spm_encode/
// spm_decode (Debian package `sentencepiece`), on a model trained by the test itself.
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <iterator>
#include <sstream>
#include <string>
#include <vector>

#include <gtest/gtest.h>

#include "llm/errors.h"
#include "llm/tokenizer.h"

namespace sharedllm {
namespace {

std::string RunCommand(const std::string& cmd) {
  std::string out;
  FILE* p = popen(cmd.c_str(), "r");
  if (!p) return out;
  char buf[4096];
  size_t n;
  while ((n = fread(buf, 1, sizeof(buf), p)) > 0) out.append(buf, n);
  pclose(p);
  return out;
}

class TokenizerTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    if (std::system("command -v spm_train >/dev/null 2>&1") != 0) return;
    char tmpl[] = "/tmp/sharedllm-tok-XXXXXX";
    dir_ = mkdtemp(tmpl);
    std::ofstream corpus(dir_ + "/corpus.txt");
    // A small corpus with repeated words, digits, punctuation and non-ASCII text.
    for (int i = 0; i < 200; ++i) {
      corpus << "The quick brown fox jumps over the lazy dog " << i * 37 << " times.\n"
             << "Déjà vu: the café served crème brûlée; naïve coöperation.\n"
             << "def function_" << i << "(x):  return x * " << i << "  # comment\n";
    }
    corpus.close();
    const std::string cmd = "spm_train --input=" + dir_ + "/corpus.txt --model_prefix=" + dir_ +
                            "/tok --vocab_size=400 --model_type=bpe --byte_fallback=true "
                            "--character_coverage=0.99 --normalization_rule_name=identity "
                            "--user_defined_symbols='<tool>' --minloglevel=2 >/dev/null 2>&1";
    ASSERT_EQ(std::system(cmd.c_str()), 0);
  }
  static void TearDownTestSuite() {
    if (!dir_.empty()) std::system(("rm -rf " + dir_).c_str());
  }
  void SetUp() override {
    if (dir_.empty()) GTEST_SKIP() << "spm_train (Debian package sentencepiece) is not installed";
  }
  std::vector<int64_t> SpmEncode(const std::string& text) {
    std::ofstream(dir_ + "/in.txt") << text << "\n";
    std::istringstream out(RunCommand("spm_encode --model=" + dir_ + "/tok.model --output_format=id < " +
                               dir_ + "/in.txt"));
    std::vector<int64_t> ids;
    int64_t id;
    while (out >> id) ids.push_back(id);
    return ids;
  }
  static std::string dir_;
};
std::string TokenizerTest::dir_;

TEST_F(TokenizerTest, EncodeMatchesSpmEncode) {
  auto tok = LoadSentencePieceTokenizer(dir_ + "/tok.model");
  const std::vector<std::string> texts = {
      "The quick brown fox jumps over the lazy dog 74 times.",
      "  leading and   repeated   spaces  ",
      "Déjà vu: crème brûlée",
      "unseen characters: 漢字 and emoji 🙂 fall back to bytes",
      "def function_12(x):  return x * 12  # comment",
      "a <tool> call",
      "x",
  };
  for (const auto& text : texts) {
    EXPECT_EQ(tok->Encode(text), SpmEncode(text)) << "text: " << text;
  }
}

// Without user-defined pieces Encode works word by word (no piece holds a space after a
// non-space, only runs of spaces): the ids must still be exactly the reference's, with runs of
// spaces kept (pieces of spaces only, as models/mini's tokenizer has), repeated words (the
// per-call memory of words) and a long run without a space.
TEST_F(TokenizerTest, WordByWordEncodeMatchesSpmEncode) {
  const std::string model = dir_ + "/words";
  const std::string cmd = "spm_train --input=" + dir_ + "/corpus.txt --model_prefix=" + model +
                          " --vocab_size=400 --model_type=bpe --byte_fallback=true "
                          "--character_coverage=0.99 --normalization_rule_name=identity "
                          "--remove_extra_whitespaces=false --allow_whitespace_only_pieces=true "
                          "--minloglevel=2 >/dev/null 2>&1";
  ASSERT_EQ(std::system(cmd.c_str()), 0);
  auto tok = LoadSentencePieceTokenizer(model + ".model");
  std::string long_run(3000, 'x');
  for (size_t i = 0; i < long_run.size(); i += 7) long_run[i] = 'o';
  const std::vector<std::string> texts = {
      "def function_12(x):    return x * 12  # comment",
      "    indented     code   with   runs of spaces    ",
      "the the the fox the fox fox the quick the lazy the",
      "Déjà vu: crème brûlée, naïve coöperation 漢字",
      long_run + " and after " + long_run,
  };
  for (const auto& text : texts) {
    std::ofstream(dir_ + "/in.txt") << text << "\n";
    std::istringstream out(RunCommand("spm_encode --model=" + model +
                                      ".model --output_format=id < " + dir_ + "/in.txt"));
    std::vector<int64_t> want;
    int64_t id;
    while (out >> id) want.push_back(id);
    EXPECT_EQ(tok->Encode(text), want) << "text: " << text.substr(0, 80);
  }
}

TEST_F(TokenizerTest, DecodeInvertsEncodeLikeSpmDecode) {
  auto tok = LoadSentencePieceTokenizer(dir_ + "/tok.model");
  const std::string text = "Déjà vu 漢字 🙂 fox 1234";
  const auto ids = tok->Encode(text);
  EXPECT_EQ(tok->Decode(ids), text);
  std::string line;
  for (size_t i = 0; i < ids.size(); ++i) line += (i ? " " : "") + std::to_string(ids[i]);
  std::ofstream(dir_ + "/ids.txt") << line << "\n";
  std::string ref = RunCommand("spm_decode --model=" + dir_ + "/tok.model --input_format=id < " + dir_ +
                        "/ids.txt");
  if (!ref.empty() && ref.back() == '\n') ref.pop_back();
  EXPECT_EQ(tok->Decode(ids), ref);
}

TEST_F(TokenizerTest, SpecialIdsAndIncompleteUtf8Tail) {
  auto tok = LoadSentencePieceTokenizer(dir_ + "/tok.model");
  EXPECT_EQ(tok->bos_id(), 1);
  EXPECT_EQ(tok->eos_id(), 2);
  EXPECT_EQ(tok->vocab_size(), 400);
  // "漢" is three bytes, all byte-fallback pieces; a prefix of them decodes to raw bytes (kept for
  // streaming), never to a replacement character.
  const auto ids = tok->Encode("漢");
  ASSERT_GE(ids.size(), 3u);
  const std::vector<int64_t> partial(ids.begin(), ids.end() - 1);
  const std::string text = tok->Decode(partial);
  EXPECT_EQ(text.find("\xEF\xBF\xBD"), std::string::npos);
  EXPECT_EQ(tok->Decode(ids), "漢");
  // Control pieces decode to nothing.
  EXPECT_EQ(tok->Decode({1, 2}), "");
}

TEST(TokenizerErrors, RejectsNonModelFiles) {
  char tmpl[] = "/tmp/sharedllm-tokbad-XXXXXX";
  const std::string dir = mkdtemp(tmpl);
  std::ofstream(dir + "/garbage.model") << "\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff";
  EXPECT_THROW(LoadSentencePieceTokenizer(dir + "/garbage.model"), ModelError);
  std::ofstream(dir + "/empty.model") << "";
  EXPECT_THROW(LoadSentencePieceTokenizer(dir + "/empty.model"), ModelError);
  EXPECT_THROW(LoadSentencePieceTokenizer(dir + "/missing.model"), ModelError);
  EXPECT_EQ(LoadTokenizer(dir), nullptr);  // no tokenizer.model: ids-only model
  std::system(("rm -rf " + dir).c_str());
}

// Byte pieces must read exactly <0xHH>, each byte once: models/tiny's tokenizer.model with its
// "<0x41>" piece rewritten is refused with a model error, never a crash or a stray exception.
TEST(TokenizerErrors, RejectsMalformedOrRepeatedBytePieces) {
  std::ifstream in(std::string(SHAREDLLM_SOURCE_DIR) + "/models/tiny/tokenizer.model", std::ios::binary);
  const std::string model((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  const size_t at = model.find("<0x41>");
  ASSERT_NE(at, std::string::npos);
  char tmpl[] = "/tmp/sharedllm-tokbyte-XXXXXX";
  const std::string dir = mkdtemp(tmpl);
  for (const std::string piece : {"<0x-1>", "<0xZZ>", "<0x4G>", "<0x42>"}) {
    std::string bad = model;
    bad.replace(at, 6, piece);
    const std::string path = dir + "/bad.model";
    std::ofstream(path, std::ios::binary) << bad;
    try {
      LoadSentencePieceTokenizer(path);
      ADD_FAILURE() << piece << " accepted";
    } catch (const ModelError& e) {
      EXPECT_NE(std::string(e.what()).find("byte piece"), std::string::npos) << piece << ": " << e.what();
    }
  }
  std::system(("rm -rf " + dir).c_str());
}

}  // namespace
}  // namespace sharedllm
