// service/encoding.h: hex and SHA-256 against published test vectors (FIPS 180-2 examples).
#include "service/encoding.h"

#include <string>

#include <gtest/gtest.h>

namespace sharedllm::service {
namespace {

constexpr char kAbc[] = "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad";
constexpr char kEmpty[] = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";
constexpr char kTwoBlocks[] = "248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1";
constexpr char kTwoBlocksText[] = "abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq";

TEST(Encoding, Sha256HexMatchesPublishedVectors) {
  EXPECT_EQ(Sha256Hex("abc"), kAbc);
  EXPECT_EQ(Sha256Hex(""), kEmpty);
  EXPECT_EQ(Sha256Hex(kTwoBlocksText), kTwoBlocks);
}

TEST(Encoding, IncrementalHashEqualsOneShot) {
  const std::string text = kTwoBlocksText;
  for (size_t cut : {size_t{0}, size_t{1}, size_t{7}, text.size()}) {
    Sha256Hasher hasher;
    hasher.Update(text.data(), cut);
    hasher.Update(text.data() + cut, text.size() - cut);
    EXPECT_EQ(hasher.HexDigest(), kTwoBlocks) << "split at " << cut;
  }
  Sha256Hasher nothing;
  EXPECT_EQ(nothing.HexDigest(), kEmpty);
}

TEST(Encoding, HexRoundTripsAndStopsAtNonHex) {
  const std::string bytes("ab\x01\xff\0z", 6);
  EXPECT_EQ(HexEncode(bytes), "616201ff007a");
  EXPECT_EQ(HexDecode(HexEncode(bytes)), bytes);
  EXPECT_EQ(HexDecode("6162zz63"), "ab");
}

// What a client sent, as an error or a log line may show it: bounded, printable, the length said.
TEST(Encoding, ClipBoundsAndSanitisesClientStrings) {
  EXPECT_EQ(Clip("doc-1"), "doc-1");
  EXPECT_EQ(Clip(std::string("a\x01\xff\nb", 5)), "a???b");
  EXPECT_EQ(Clip(std::string(10000, 'x'), 8), "xxxxxxxx... (10000 bytes)");
  EXPECT_EQ(Clip(std::string(64, 'y')), std::string(64, 'y'));
}

TEST(Encoding, Utf8IsCheckedStrictlyAndRepairedByteByByte) {
  EXPECT_TRUE(ValidUtf8(""));
  EXPECT_TRUE(ValidUtf8("caf\xc3\xa9 \xe2\x82\xac \xf0\x9f\x98\x80"));
  EXPECT_EQ(Utf8CharLength("\xf0\x9f\x98\x80", 0), 4u);
  for (const char* bad : {"\xc0\xaf",           // overlong '/'
                          "\xe0\x80\xaf",       // overlong, three bytes
                          "\xed\xa0\x80",       // a surrogate (U+D800)
                          "\xf4\x90\x80\x80",   // above U+10FFFF
                          "\xc3",               // cut short
                          "\x80", "\xff"}) {
    EXPECT_FALSE(ValidUtf8(bad)) << Clip(bad);
    EXPECT_TRUE(ValidUtf8(ToValidUtf8(bad))) << Clip(bad);
  }
  // Each byte that starts no character becomes one U+FFFD; good characters around stay.
  EXPECT_EQ(ToValidUtf8("a\xc3(b"), "a\xef\xbf\xbd(b");
  EXPECT_EQ(ToValidUtf8("\xed\xa0\x80"), "\xef\xbf\xbd\xef\xbf\xbd\xef\xbf\xbd");
  EXPECT_EQ(ToValidUtf8("ok \xc3\xa9"), "ok \xc3\xa9");
}

}  // namespace
}  // namespace sharedllm::service
