// The command-line flag parser of the sharedllm tool (cli/sharedllm/flags.cpp).
#include "cli/flags/flags.h"

#include <gtest/gtest.h>

#include <stdexcept>

namespace sharedllm::cli {
namespace {

struct Parsed {
  int rc;
  std::string out, err;
};

// A flag set with one flag of each kind, bound to the members.
struct Fixture {
  std::string model = "default-model";
  int64_t n = 64;
  double temperature = 0.7;
  bool json = false;
  std::vector<std::string> stop;
  FlagSet flags{"tool --model DIR", "A test tool."};

  Fixture() {
    flags.String("model", &model, "model directory");
    flags.Int("max-tokens", &n, "tokens");
    flags.Double("temperature", &temperature, "temperature");
    flags.Bool("json", &json, "json output");
    flags.List("stop", &stop, "stop string");
  }
  Parsed Parse(const std::vector<std::string>& args) {
    testing::internal::CaptureStdout();
    testing::internal::CaptureStderr();
    const int rc = flags.Parse(args);
    std::string out = testing::internal::GetCapturedStdout();
    std::string err = testing::internal::GetCapturedStderr();
    return {rc, out, err};
  }
};

TEST(FlagsTest, SeparateAndEqualsValues) {
  Fixture f;
  const Parsed p = f.Parse({"--model", "/m", "--max-tokens=12", "--temperature", "0.25"});
  EXPECT_EQ(p.rc, -1);
  EXPECT_EQ(f.model, "/m");
  EXPECT_EQ(f.n, 12);
  EXPECT_DOUBLE_EQ(f.temperature, 0.25);
  EXPECT_TRUE(f.flags.Given("model"));
  EXPECT_TRUE(f.flags.Given("max-tokens"));
  EXPECT_FALSE(f.flags.Given("json"));
  EXPECT_FALSE(f.flags.Given("no-such-flag"));
  EXPECT_TRUE(p.err.empty()) << p.err;
}

TEST(FlagsTest, NegativeNumbersAreValues) {
  Fixture f;
  EXPECT_EQ(f.Parse({"--max-tokens", "-3", "--temperature=-1.5"}).rc, -1);
  EXPECT_EQ(f.n, -3);
  EXPECT_DOUBLE_EQ(f.temperature, -1.5);
}

TEST(FlagsTest, BoolForms) {
  Fixture a;
  EXPECT_EQ(a.Parse({"--json"}).rc, -1);
  EXPECT_TRUE(a.json);
  Fixture b;
  b.json = true;
  EXPECT_EQ(b.Parse({"--json=false"}).rc, -1);
  EXPECT_FALSE(b.json);
  Fixture c;
  EXPECT_EQ(c.Parse({"--json=1"}).rc, -1);
  EXPECT_TRUE(c.json);
  Fixture d;
  const Parsed p = d.Parse({"--json=maybe"});
  EXPECT_EQ(p.rc, 2);
  EXPECT_NE(p.err.find("bad value 'maybe' for --json"), std::string::npos) << p.err;
  // A bool flag does not swallow the next argument.
  Fixture e;
  EXPECT_EQ(e.Parse({"--json", "--model", "x"}).rc, -1);
  EXPECT_TRUE(e.json);
  EXPECT_EQ(e.model, "x");
}

TEST(FlagsTest, ListIsRepeatable) {
  Fixture f;
  EXPECT_EQ(f.Parse({"--stop", "a", "--stop=b c", "--stop", ""}).rc, -1);
  EXPECT_EQ(f.stop, std::vector<std::string>({"a", "b c", ""}));
}

TEST(FlagsTest, DefaultsKeptWhenAbsent) {
  Fixture f;
  EXPECT_EQ(f.Parse({}).rc, -1);
  EXPECT_EQ(f.model, "default-model");
  EXPECT_EQ(f.n, 64);
  EXPECT_DOUBLE_EQ(f.temperature, 0.7);
}

TEST(FlagsTest, HelpReturnsZeroAndListsFlags) {
  Fixture f;
  f.flags.Require("model");
  for (const char* h : {"--help", "-h"}) {
    const Parsed p = f.Parse({h});
    EXPECT_EQ(p.rc, 0) << h;
    EXPECT_NE(p.out.find("usage: tool --model DIR"), std::string::npos) << p.out;
    EXPECT_NE(p.out.find("A test tool."), std::string::npos) << p.out;
    EXPECT_NE(p.out.find("--model TEXT"), std::string::npos) << p.out;
    EXPECT_NE(p.out.find("(required)"), std::string::npos) << p.out;
    EXPECT_NE(p.out.find("--max-tokens N"), std::string::npos) << p.out;
    EXPECT_NE(p.out.find("(default: 64)"), std::string::npos) << p.out;
    EXPECT_NE(p.out.find("(repeatable)"), std::string::npos) << p.out;
    EXPECT_NE(p.out.find("--help"), std::string::npos) << p.out;
  }
  EXPECT_EQ(f.flags.Help().find("usage: tool"), 0u);
}

TEST(FlagsTest, UsageErrorsReturnTwo) {
  struct Case {
    std::vector<std::string> args;
    const char* message;
  };
  const Case cases[] = {
      {{"--bogus"}, "unknown flag --bogus"},
      {{"--bogus=1"}, "unknown flag --bogus"},
      {{"positional"}, "unexpected argument 'positional'"},
      {{"--model"}, "flag --model needs a value"},
      {{"--max-tokens", "12abc"}, "bad value '12abc' for --max-tokens"},
      {{"--max-tokens", "1.5"}, "bad value '1.5' for --max-tokens"},
      {{"--max-tokens", ""}, "bad value '' for --max-tokens"},
      {{"--max-tokens", "99999999999999999999999"}, "bad value"},
      {{"--temperature", "warm"}, "bad value 'warm' for --temperature"},
      {{"--temperature", "0.5x"}, "bad value '0.5x' for --temperature"},
  };
  for (const auto& c : cases) {
    Fixture f;
    const Parsed p = f.Parse(c.args);
    EXPECT_EQ(p.rc, 2) << c.args[0];
    EXPECT_NE(p.err.find(c.message), std::string::npos) << "stderr: " << p.err;
  }
}

TEST(FlagsTest, RequiredFlags) {
  Fixture f;
  f.flags.Require("model");
  const Parsed p = f.Parse({"--json"});
  EXPECT_EQ(p.rc, 2);
  EXPECT_NE(p.err.find("missing required flag --model"), std::string::npos) << p.err;
  Fixture g;
  g.flags.Require("model");
  EXPECT_EQ(g.Parse({"--model", "m"}).rc, -1);
  // --help wins over a missing required flag.
  Fixture h;
  h.flags.Require("model");
  EXPECT_EQ(h.Parse({"--help"}).rc, 0);
}

TEST(FlagsTest, ParseDoubleList) {
  EXPECT_EQ(ParseDoubleList("1,2.5,32"), std::vector<double>({1, 2.5, 32}));
  EXPECT_EQ(ParseDoubleList("0.25"), std::vector<double>({0.25}));
  EXPECT_THROW(ParseDoubleList(""), std::invalid_argument);
  EXPECT_THROW(ParseDoubleList("1,,2"), std::invalid_argument);
  EXPECT_THROW(ParseDoubleList("1,2x"), std::invalid_argument);
  EXPECT_THROW(ParseDoubleList("four"), std::invalid_argument);
}

TEST(FlagsTest, ParseIdList) {
  EXPECT_EQ(ParseIdList("1,2,3"), std::vector<int64_t>({1, 2, 3}));
  EXPECT_EQ(ParseIdList("42"), std::vector<int64_t>({42}));
  EXPECT_EQ(ParseIdList("0,-1,9000000000"), std::vector<int64_t>({0, -1, 9000000000}));
  for (const char* bad : {"1,x,3", "1,,2", "1;2", "1.5", "a", "1,2x"}) {
    EXPECT_THROW(ParseIdList(bad), std::invalid_argument) << bad;
  }
  try {
    ParseIdList("4,five");
    FAIL();
  } catch (const std::invalid_argument& e) {
    EXPECT_NE(std::string(e.what()).find("bad token id 'five'"), std::string::npos) << e.what();
  }
}

}  // namespace
}  // namespace sharedllm::cli
