#include "retrieval/lexical.h"

#include <gtest/gtest.h>

namespace sharedllm::retrieval {
namespace {

TEST(LexicalTest, TermsAreLowercasedWordsAndNonAsciiRuns) {
  const TermCounts t = CountTerms("The pass key is 71432. THE key! caf\xc3\xa9-au-lait");
  const TermCounts want = {{"71432", 1}, {"au", 1}, {"caf\xc3\xa9", 1}, {"is", 1}, {"key", 2},
                           {"lait", 1},  {"pass", 1}, {"the", 2}};
  EXPECT_EQ(t, want);
  EXPECT_EQ(TermTotal(t), 10);
  EXPECT_EQ(QueryTerms("What is the pass key? The pass key is"),
            (std::vector<std::string>{"is", "key", "pass", "the", "what"}));
  EXPECT_TRUE(CountTerms("  ...  !? ").empty());
  // A long word is cut, so a key field stays small.
  EXPECT_EQ(CountTerms(std::string(100, 'a'))[0].first.size(), kMaxTermBytes);
}

TEST(LexicalTest, Bm25PrefersTheRareTermsChunk) {
  MemoryIndex index;
  // 50 chunks of filler; 20 of them say "green"; chunk 31 also says "pass key".
  for (int c = 0; c < 50; ++c) {
    std::string text = "the grass is here";
    if (c < 20) text += " green";
    if (c == 31) text += " the pass key is 123";
    index.Add(0, c, CountTerms(text));
  }
  const auto terms = QueryTerms("Is the green pass key here?");
  const auto scores = ScoreBm25(index.Postings(terms), 50, 0);
  ASSERT_EQ(scores.size(), 21u);  // the chunks with "green", and chunk 31
  const ChunkScore* best = &scores[0];
  for (const auto& s : scores) {
    if (s.score > best->score) best = &s;
  }
  EXPECT_EQ(best->chunk, 31);
  // A term in 20 chunks counts for little next to one in a single chunk.
  EXPECT_GT(best->score, 5 * scores[0].score);
}

TEST(LexicalTest, TermsInMoreThanHalfOfTheChunksDoNotScore) {
  MemoryIndex index;
  for (int c = 0; c < 50; ++c) {
    std::string text = "grass";
    if (c < 26) text += " the";       // 26 of 50: more than half
    if (c < 25) text += " green";     // 25 of 50: half, still evidence
    if (c == 40) text += " key";
    index.Add(0, c, CountTerms(text));
  }
  const auto scores = ScoreBm25(index.Postings(QueryTerms("the green key")), 50, 0);
  ASSERT_EQ(scores.size(), 26u);  // "green" (chunks 0-24) and "key" (40); "the" adds nothing
  for (const auto& s : scores) EXPECT_TRUE(s.chunk < 25 || s.chunk == 40) << s.chunk;
  EXPECT_EQ(scores[0].score, scores[24].score) << "chunk 25 has \"the\" only, chunk 0 both";
  // A question of such terms only scores nothing: the chunks read are each document's last.
  EXPECT_TRUE(ScoreBm25(index.Postings(QueryTerms("the grass")), 50, 0).empty());
}

TEST(LexicalTest, TermsAboveTheCommonTermLimitDoNotScore) {
  MemoryIndex index;
  for (int c = 0; c < 50; ++c) {
    std::string text = c < 20 ? "the grass is green" : "the grass is blue";  // one length
    if (c == 7 || c == 31) text += " pass key";
    index.Add(0, c, CountTerms(text));
  }
  const auto postings = index.Postings(QueryTerms("Is the green pass key?"));
  EXPECT_EQ(CommonTermLimit(3), 12);
  // "green" is in 20 chunks, above 12: only the two chunks with "pass key" score.
  const auto scores = ScoreBm25(postings, 50, CommonTermLimit(3));
  ASSERT_EQ(scores.size(), 2u);
  EXPECT_EQ(scores[0].chunk, 7);
  EXPECT_EQ(scores[1].chunk, 31);
  const auto unlimited = ScoreBm25(postings, 50, 0);
  EXPECT_EQ(unlimited.size(), 21u);
  // Without the limit "green" adds to its chunks, and the two still rank first.
  EXPECT_EQ(scores[0].score, scores[1].score);
  double seven = 0, thirty_one = 0;
  for (const auto& s : unlimited) {
    if (s.chunk == 7) seven = s.score;
    if (s.chunk == 31) thirty_one = s.score;
  }
  for (const auto& s : unlimited) {
    if (s.chunk != 7 && s.chunk != 31) EXPECT_LT(s.score, std::min(seven, thirty_one));
  }
  // What is chosen: the two chunks, then their neighbours.
  EXPECT_EQ(ChooseChunks(scores, {50}, 4),
            (std::vector<ChunkScore>{{0, 6, 0}, {0, 7, scores[0].score}, {0, 8, 0},
                                     {0, 31, scores[1].score}}));
}

TEST(LexicalTest, ChooseChunksKeepsEverythingWithinTheBudget) {
  const std::vector<ChunkScore> scores = {{0, 2, 1.5}};
  const auto all = ChooseChunks(scores, {3, 2}, 5);
  ASSERT_EQ(all.size(), 5u);
  EXPECT_EQ(all[2], (ChunkScore{0, 2, 1.5}));
  EXPECT_EQ(all[3], (ChunkScore{1, 0, 0.0}));
  EXPECT_EQ(ChooseChunks(scores, {3, 2}, 0).size(), 5u);  // no budget: all
}

TEST(LexicalTest, ChooseChunksTakesTheBestThenNeighboursInReadingOrder) {
  // Two documents of 100 chunks; three scored chunks; budget 6.
  const std::vector<ChunkScore> scores = {{0, 10, 0.5}, {1, 40, 3.0}, {1, 90, 2.0}};
  const auto got = ChooseChunks(scores, {100, 100}, 6);
  const std::vector<ChunkScore> want = {{0, 10, 0.5}, {1, 39, 0}, {1, 40, 3.0},
                                        {1, 41, 0},   {1, 90, 2.0}, {1, 91, 0}};
  EXPECT_EQ(got, want);
  // The budget cuts the scored chunks themselves: the best two.
  const auto two = ChooseChunks(scores, {100, 100}, 2);
  EXPECT_EQ(two, (std::vector<ChunkScore>{{1, 40, 3.0}, {1, 90, 2.0}}));
  // A neighbour past a document's end is not taken.
  EXPECT_EQ(ChooseChunks({{0, 99, 1.0}}, {100}, 3),
            (std::vector<ChunkScore>{{0, 97, 0}, {0, 98, 0}, {0, 99, 1.0}}));
}

TEST(LexicalTest, ChooseChunksReadsOnlyTheDocumentsThatMatch) {
  // A collection of 50 documents of 2 chunks, one match: its document only, not 6 chunks of
  // documents that hold no query term.
  const std::vector<int64_t> sizes(50, 2);
  EXPECT_EQ(ChooseChunks({{17, 1, 2.0}}, sizes, 6), (std::vector<ChunkScore>{{17, 0, 0}, {17, 1, 2.0}}));
}

TEST(LexicalTest, ChooseChunksWithoutAMatchReadsEachDocumentsEnd) {
  const auto got = ChooseChunks({}, {10, 3, 10}, 4);
  EXPECT_EQ(got, (std::vector<ChunkScore>{{0, 8, 0}, {0, 9, 0}, {1, 2, 0}, {2, 9, 0}}));
  // Scores outside the scope are ignored.
  EXPECT_EQ(ChooseChunks({{5, 1, 9.0}, {0, 50, 9.0}}, {10}, 1), (std::vector<ChunkScore>{{0, 9, 0}}));
}

}  // namespace
}  // namespace sharedllm::retrieval
