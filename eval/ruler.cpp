#include "eval/ruler.h"

#include <algorithm>
#include <cmath>
#include <map>
#include <regex>
#include <set>
#include <sstream>

#include <ATen/ATen.h>
#include <c10/core/InferenceMode.h>

#include "llm/decoder.h"
#include "llm/errors.h"
#include "eval/streaming_llm.h"

namespace sharedllm {
namespace {

// Word lists (common English words) for needle keys (adjective-noun, as RULER's wonderwords
// keys) and for the common-words task. Not used by the training generators.
const char* const kNouns =
    "apple anchor arrow badge basket battery beach beard bell berry blanket bottle bracket "
    "bread bridge brush bucket button cabin cable camera candle canoe canyon carpet castle "
    "cattle ceiling chain chair chalk cherry chimney circle cliff clock cloud coat coffee "
    "collar comet compass copper cotton cradle crayon crown cup curtain cushion dagger desert "
    "diamond dolphin donkey door dragon drawer drum eagle earth engine falcon feather fence "
    "fiddle flag flame flower forest fountain fox frog garden garlic gate giant glove goat "
    "grape guitar hammer harbor harp helmet hill honey horizon horse island jacket jelly jewel "
    "kettle kitten ladder lake lamp lantern leaf lemon letter lighthouse lion lizard lobster "
    "magnet maple marble meadow mirror monkey moon mountain mushroom needle nest ocean olive "
    "onion orange orchard otter owl paddle palace panda paper parrot pearl pebble pencil pepper "
    "piano pillow pirate planet pocket pony potato pumpkin puzzle rabbit radio rainbow raven "
    "ribbon river robot rocket saddle sailor salmon sandal scarf shadow shell shovel silver "
    "skate sparrow spider spoon squirrel stamp star statue stone storm sugar sunset swan sword "
    "table teapot tent thunder tiger tomato tower tractor train treasure trumpet tulip turtle "
    "umbrella valley velvet violin wagon walnut whale whistle window wizard wolf yacht zebra ";
const char* const kAdjectives =
    "able ancient angry bold brave bright brisk busy calm careful cheerful chilly clever cloudy "
    "clumsy cold cosy crisp curious damp dark dear deep dusty eager early easy elegant empty "
    "fancy fast fierce flat fluffy fond fragile fresh friendly funny gentle giant glad golden "
    "graceful grand green grumpy happy hasty heavy hidden hollow honest huge humble icy jolly "
    "keen kind large lazy light little lively lonely loud lucky mellow merry mighty misty "
    "modern narrow neat nervous noble odd old orange plain pleasant polite proud purple quick "
    "quiet rapid rare red rich rough round royal rusty sandy scarlet shiny short shy silent "
    "silly simple sleepy slow small smooth snowy soft solid sour spicy steady sticky stormy "
    "strange strong sunny sweet swift tall tame tender thin tidy tiny tough wandering warm "
    "weary wide wild windy wise witty young ";
const char* const kVerbs =
    "accept admire answer arrive bake balance bathe begin blink boil borrow bounce breathe "
    "build calculate carry carve catch chase cheer chew climb collect cook count crawl dance "
    "deliver describe dig discover dive draw dream drift drink drive earn enjoy escape explain "
    "explore fetch fix float fold follow forgive gather giggle glow grow guard guess hammer "
    "hang hop hunt hurry imagine invent invite jog juggle jump kick kneel knit knock laugh "
    "launch lead lean listen march measure melt mend nod obey open order paint pause plant play "
    "polish pour pray print promise pull push question race read relax remember repair rescue "
    "ride roll row run sail scribble search sew shake shine shout sing sketch skip sleep slide "
    "smile sneeze sparkle spin splash sprint squeeze stitch stretch swim swing talk teach "
    "tickle travel tumble twist unlock visit wait walk wander wash whisper wiggle wink wonder "
    "write yawn ";

std::vector<std::string> Words(const char* text) {
  std::vector<std::string> out;
  std::stringstream in(text);
  std::string w;
  while (in >> w) out.push_back(w);
  return out;
}

const std::vector<std::string>& KeyAdjectives() {
  static const std::vector<std::string> w = Words(kAdjectives);
  return w;
}
const std::vector<std::string>& KeyNouns() {
  static const std::vector<std::string> w = Words(kNouns);
  return w;
}
// Every distinct word of the three lists, in a fixed order.
const std::vector<std::string>& WordPool() {
  static const std::vector<std::string> pool = [] {
    std::vector<std::string> out;
    std::set<std::string> seen;
    for (const char* list : {kNouns, kAdjectives, kVerbs}) {
      for (auto& w : Words(list)) {
        if (seen.insert(w).second) out.push_back(w);
      }
    }
    return out;
  }();
  return pool;
}

// RULER's noise haystack sentence (also the pass-key filler; never a training filler).
const char* const kNoise =
    "The grass is green. The sky is blue. The sun is yellow. Here we go. There and back again.";

int64_t Uniform(std::mt19937_64& rng, int64_t lo, int64_t hi) {
  return std::uniform_int_distribution<int64_t>(lo, hi)(rng);
}

template <class T>
void Shuffle(std::vector<T>& v, std::mt19937_64& rng) {
  for (size_t i = v.size(); i > 1; --i) std::swap(v[i - 1], v[Uniform(rng, 0, i - 1)]);
}

// k distinct values of [0, n), sorted.
std::vector<int64_t> SampleSorted(std::mt19937_64& rng, int64_t n, int64_t k) {
  std::vector<int64_t> all(n);
  for (int64_t i = 0; i < n; ++i) all[i] = i;
  for (int64_t i = 0; i < k; ++i) std::swap(all[i], all[Uniform(rng, i, n - 1)]);
  std::vector<int64_t> out(all.begin(), all.begin() + k);
  std::sort(out.begin(), out.end());
  return out;
}

std::string Join(const std::vector<std::string>& parts, const std::string& sep) {
  std::string out;
  for (size_t i = 0; i < parts.size(); ++i) out += (i ? sep : "") + parts[i];
  return out;
}

std::string ReplaceAll(std::string s, const std::string& from, const std::string& to) {
  for (size_t at = s.find(from); at != std::string::npos; at = s.find(from, at + to.size())) {
    s.replace(at, from.size(), to);
  }
  return s;
}

std::string RandomKeyWord(std::mt19937_64& rng) {
  const auto& a = KeyAdjectives();
  const auto& n = KeyNouns();
  return a[Uniform(rng, 0, a.size() - 1)] + "-" + n[Uniform(rng, 0, n.size() - 1)];
}

std::string RandomUuid(std::mt19937_64& rng) {
  static const char* hex = "0123456789abcdef";
  std::string s;
  for (int i = 0; i < 32; ++i) {
    int nibble = static_cast<int>(Uniform(rng, 0, 15));
    if (i == 12) nibble = 4;                    // version 4
    if (i == 16) nibble = 8 + (nibble & 3);     // variant 10xx
    if (i == 8 || i == 12 || i == 16 || i == 20) s += '-';
    s += hex[nibble];
  }
  return s;
}

std::string RandomNeedle(std::mt19937_64& rng, const std::string& type) {
  if (type == "numbers") return std::to_string(Uniform(rng, 1000000, 9999999));  // 7 digits
  if (type == "uuids") return RandomUuid(rng);
  return RandomKeyWord(rng);
}

std::string NeedleSentence(const std::string& type_v, const std::string& key, const std::string& value) {
  return "One of the special magic " + type_v + " for " + key + " is: " + value + ".";
}

// RULER niah with one key, one value, one query (the three tasks here): `units` haystack lines.
TaskSample Niah(const std::string& task, const std::string& haystack, const std::string& type_k,
                const std::string& type_v, int64_t units, std::mt19937_64& rng) {
  TaskSample s;
  s.task = task;
  const std::string key = RandomNeedle(rng, type_k), value = RandomNeedle(rng, type_v);
  std::vector<std::string> lines;
  for (int64_t i = 0; i < units; ++i) {
    if (haystack == "noise") {
      lines.push_back(kNoise);
    } else {  // distractor needles with other keys
      std::string k = RandomNeedle(rng, type_k);
      while (k == key) k = RandomNeedle(rng, type_k);
      lines.push_back(NeedleSentence(type_v, k, RandomNeedle(rng, type_v)));
    }
  }
  lines.insert(lines.begin() + Uniform(rng, 0, units), NeedleSentence(type_v, key, value));
  // RULER's templates, with its singular edits for one queried value.
  std::string context_t = "Some special magic {type_needle_v} are hidden within the following text. Make sure "
                          "to memorize it. I will quiz you about the {type_needle_v} afterwards.\n";
  std::string query_t = "What are all the special magic {type_needle_v} for {query} mentioned in the "
                        "provided text?";
  std::string answer_t = " The special magic {type_needle_v} for {query} mentioned in the provided text are";
  for (std::string* t : {&context_t, &query_t, &answer_t}) {
    *t = ReplaceAll(*t, "Some", "A");
    *t = ReplaceAll(*t, "are all", "is");
    *t = ReplaceAll(*t, "are", "is");
    *t = ReplaceAll(*t, "answers", "answer");
    *t = ReplaceAll(*t, "{type_needle_v}", type_v.substr(0, type_v.size() - 1));
    *t = ReplaceAll(*t, "{query}", key);
  }
  s.context = context_t + Join(lines, "\n") + "\n";
  s.question = query_t + answer_t;
  s.answers = {value};
  return s;
}

// RULER variable tracking: one chain of 4 hops in the noise haystack of `units` sentences.
TaskSample VariableTracking(int64_t units, std::mt19937_64& rng) {
  const int64_t hops = 4;
  std::set<std::string> seen;
  std::vector<std::string> vars;
  while (static_cast<int64_t>(vars.size()) < hops + 1) {
    std::string v;
    for (int i = 0; i < 5; ++i) v += static_cast<char>('A' + Uniform(rng, 0, 25));
    if (seen.insert(v).second) vars.push_back(v);
  }
  const std::string value = std::to_string(Uniform(rng, 10000, 99999));
  std::vector<std::string> chain = {"VAR " + vars[0] + " = " + value};
  for (int64_t h = 0; h < hops; ++h) chain.push_back("VAR " + vars[h + 1] + " = VAR " + vars[h] + " ");
  std::vector<std::string> sents(units, kNoise);
  // RULER draws distinct gaps of the noise (needs units >= 5); at short lengths gaps may repeat.
  std::vector<int64_t> positions;
  if (units >= static_cast<int64_t>(chain.size())) {
    positions = SampleSorted(rng, units, static_cast<int64_t>(chain.size()));
  } else {
    for (size_t i = 0; i < chain.size(); ++i) positions.push_back(Uniform(rng, 0, units));
    std::sort(positions.begin(), positions.end());
  }
  for (size_t i = 0; i < chain.size(); ++i) sents.insert(sents.begin() + positions[i] + i, chain[i]);
  TaskSample s;
  s.task = "vt";
  s.context = "Memorize and track the chain(s) of variable assignment hidden in the following text.\n\n" +
              ReplaceAll(Join(sents, "\n"), ". \n", ".\n") + "\n";
  s.question = "Question: Find all variables that are assigned the value " + value +
               " in the text above. Answer: According to the chain(s) of variable assignment in the "
               "text above, " + std::to_string(hops + 1) + " variables are assgined the value " +
               value + ", they are: ";
  s.answers = vars;
  return s;
}

// RULER common words: 10 words `freq_cw` times each and `units` words `freq_ucw` times each.
TaskSample CommonWords(int64_t units, int64_t freq_cw, int64_t freq_ucw, std::mt19937_64& rng) {
  const int64_t num_cw = 10;
  std::vector<std::string> pool = WordPool();
  Check(units + num_cw <= static_cast<int64_t>(pool.size()), "cwe: the word pool is too small");
  Shuffle(pool, rng);
  std::vector<std::string> list;
  for (int64_t i = 0; i < num_cw + units; ++i) {
    for (int64_t r = 0; r < (i < num_cw ? freq_cw : freq_ucw); ++r) list.push_back(pool[i]);
  }
  Shuffle(list, rng);
  std::vector<std::string> numbered;
  for (size_t i = 0; i < list.size(); ++i) numbered.push_back(std::to_string(i + 1) + ". " + list[i]);
  TaskSample s;
  s.task = "cwe";
  s.context = "Below is a numbered list of words. In these words, some appear more often than others. "
              "Memorize the ones that appear most often.\n" + Join(numbered, " ") + "\n";
  s.question = "Question: What are the 10 most common words in the above list? Answer: The top 10 "
               "words that appear most often in the list are:";
  s.answers.assign(pool.begin(), pool.begin() + num_cw);
  return s;
}

// RULER frequent words: `units` coded words drawn by Zipf(alpha = 2) counts over a vocabulary of
// `vocab_size` random 6-letter words, the most frequent being the noise "...".
TaskSample FrequentWords(int64_t units, int64_t vocab_size, std::mt19937_64& rng) {
  const double alpha = 2.0;
  std::set<std::string> seen;
  std::vector<std::string> vocab;
  while (static_cast<int64_t>(vocab.size()) < vocab_size) {
    std::string w;
    for (int i = 0; i < 6; ++i) w += static_cast<char>('a' + Uniform(rng, 0, 25));
    if (seen.insert(w).second) vocab.push_back(w);
  }
  vocab[0] = "...";
  double zeta = 0;
  for (int64_t k = 1; k <= vocab_size; ++k) zeta += std::pow(static_cast<double>(k), -alpha);
  std::vector<std::string> stream;
  for (int64_t k = 1; k <= vocab_size; ++k) {
    const auto count = static_cast<int64_t>(units * std::pow(static_cast<double>(k), -alpha) / zeta);
    for (int64_t r = 0; r < count; ++r) stream.push_back(vocab[k - 1]);
  }
  Shuffle(stream, rng);
  TaskSample s;
  s.task = "fwe";
  s.context = "Read the following coded text and track the frequency of each coded word. Find the three "
              "most frequently appeared coded words. " + Join(stream, " ") + "\n";
  s.question = "Question: Do not provide any explanation. Please ignore the dots '....'. What are the "
               "three most frequently appeared words in the above coded text? Answer: According to the "
               "coded text above, the three most frequently appeared words are:";
  s.answers.assign(vocab.begin() + 1, vocab.begin() + 4);
  return s;
}

// InfiniteBench Math.Find ("{prefix}\n\n{context}\n\n{input}"), scaled: a list of 2 units + 1
// integers from a per-sample range; the largest number, the smallest number or the median.
TaskSample MathFind(int64_t units, std::mt19937_64& rng) {
  static const char* kTargets[] = {"largest number", "smallest number", "median"};
  const std::string target = kTargets[Uniform(rng, 0, 2)];
  const int64_t hi = Uniform(rng, 100, 9999), lo = Uniform(rng, 0, hi / 2);
  std::vector<int64_t> values(2 * units + 1);
  for (auto& v : values) v = Uniform(rng, lo, hi);
  std::vector<std::string> text;
  for (int64_t v : values) text.push_back(std::to_string(v));
  std::vector<int64_t> sorted = values;
  std::sort(sorted.begin(), sorted.end());
  const int64_t answer = target == "median" ? sorted[units]
                         : target == "largest number" ? sorted.back() : sorted.front();
  TaskSample s;
  s.task = "math_find";
  s.context = "What is the " + target + " in the following list?\n\n[" + Join(text, ", ") + "]\n\n";
  s.question = "The " + target + " of the list is:";
  s.answers = {std::to_string(answer)};
  return s;
}

int64_t SampleTokens(const Tokenizer& tok, const TaskSample& s) {
  return 1 + static_cast<int64_t>(tok.Encode(s.context).size() + tok.Encode(s.question).size());
}

// The largest unit count in [lo, hi] whose sample fits `target` tokens (doubling, then binary
// search; the sample is regenerated from the seed at each size, as RULER does).
template <class Render>
TaskSample Fit(const Render& render, const Tokenizer& tok, int64_t target, int64_t lo, int64_t hi,
               const std::string& task, int64_t* units = nullptr) {
  TaskSample best = render(lo);
  if (SampleTokens(tok, best) > target) {
    throw TooShort(task + ": the smallest sample has " + std::to_string(SampleTokens(tok, best)) +
                   " tokens, more than " + std::to_string(target));
  }
  auto fits = [&](int64_t u, TaskSample* keep) {
    TaskSample s = render(u);
    if (SampleTokens(tok, s) > target) return false;
    *keep = std::move(s);
    return true;
  };
  while (lo < hi && fits(std::min(hi, std::max<int64_t>(1, 2 * lo)), &best)) {
    lo = std::min(hi, std::max<int64_t>(1, 2 * lo));
  }
  hi = std::min(hi, std::max<int64_t>(lo, 2 * lo - 1));  // 2 lo did not fit (or is past hi)
  while (lo < hi) {
    const int64_t mid = lo + (hi - lo + 1) / 2;
    if (fits(mid, &best)) lo = mid;
    else hi = mid - 1;
  }
  if (units) *units = lo;
  return best;
}

uint64_t Mix(uint64_t x) {  // splitmix64
  x += 0x9e3779b97f4a7c15ULL;
  x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ULL;
  x = (x ^ (x >> 27)) * 0x94d049bb133111ebULL;
  return x ^ (x >> 31);
}

}  // namespace

uint64_t TaskSampleSeed(uint64_t seed, const std::string& task, double multiple, int64_t trial) {
  uint64_t h = Mix(seed ^ 0x52554c45522d6576ULL);  // "RULER-ev": evaluation streams of their own
  for (char c : task) h = Mix(h ^ static_cast<unsigned char>(c));
  h = Mix(h ^ static_cast<uint64_t>(std::llround(multiple * 1000)));
  return Mix(h ^ static_cast<uint64_t>(trial));
}

const std::vector<std::string>& RulerTaskNames() {
  static const std::vector<std::string> names = {"niah_single_1", "niah_multikey_2", "niah_multikey_3",
                                                 "vt", "cwe", "fwe"};
  return names;
}

int64_t TaskMaxTokens(const std::string& task, int64_t window) {
  int64_t ruler = 0;
  if (task.rfind("niah", 0) == 0) ruler = 128;
  else if (task == "vt") ruler = 30;
  else if (task == "cwe") ruler = 120;
  else if (task == "fwe") ruler = 50;
  else if (task == "math_find") ruler = 8;
  else throw ModelError("unknown task '" + task + "'");
  return std::max<int64_t>(1, std::min<int64_t>(ruler, window / 4));
}

TaskSample MakeTaskSample(const std::string& task, const Tokenizer& tok, int64_t target, uint64_t seed) {
  auto with_seed = [seed](auto make) {
    return [seed, make](int64_t units) {
      std::mt19937_64 rng(seed);
      return make(units, rng);
    };
  };
  TaskSample s;
  if (task == "niah_single_1" || task == "niah_multikey_2" || task == "niah_multikey_3") {
    const std::string haystack = task == "niah_single_1" ? "noise" : "needle";
    const std::string type = task == "niah_multikey_3" ? "uuids" : "numbers";
    const std::string type_k = task == "niah_multikey_3" ? "uuids" : "words";
    s = Fit(with_seed([&](int64_t u, std::mt19937_64& rng) { return Niah(task, haystack, type_k, type, u, rng); }),
            tok, target, haystack == "needle" ? 0 : 1, int64_t{1} << 24, task);
  } else if (task == "vt") {
    s = Fit(with_seed([](int64_t u, std::mt19937_64& rng) { return VariableTracking(u, rng); }), tok,
            target, 1, int64_t{1} << 24, task);
  } else if (task == "cwe") {
    // Frequencies from the list's size: RULER's 30 / 3 at long lengths; at short ones the common
    // words take ~30 % of the entries, at least twice each.
    std::mt19937_64 probe(seed);
    const double short_list = static_cast<double>(tok.Encode(CommonWords(0, 1, 1, probe).context).size());
    const double long_list = static_cast<double>(tok.Encode(CommonWords(60, 1, 1, probe).context).size());
    const double per_entry = std::max(1.0, (long_list - short_list) / 60);
    const double entries = static_cast<double>(target) / per_entry;
    const int64_t freq_cw = std::clamp<int64_t>(std::llround(0.3 * entries / 10), 2, 30);
    const int64_t pool = static_cast<int64_t>(WordPool().size()) - 10;
    // More repeats of the uncommon words only when the word pool runs out before the length.
    for (int64_t freq_ucw = freq_cw >= 10 ? 3 : 1;; ++freq_ucw) {
      int64_t units = 0;
      s = Fit(with_seed([&](int64_t u, std::mt19937_64& rng) { return CommonWords(u, freq_cw, freq_ucw, rng); }),
              tok, target, 1, pool, task, &units);
      if (units < pool || SampleTokens(tok, s) >= target * 9 / 10 || 2 * (freq_ucw + 1) > freq_cw) break;
    }
  } else if (task == "fwe") {
    const int64_t vocab = std::max<int64_t>(10, target / 50);
    s = Fit(with_seed([&](int64_t u, std::mt19937_64& rng) { return FrequentWords(u, vocab, rng); }), tok,
            target, 10, int64_t{1} << 24, task);
  } else if (task == "math_find") {
    s = Fit(with_seed([](int64_t u, std::mt19937_64& rng) { return MathFind(u, rng); }), tok, target, 1,
            int64_t{1} << 24, task);
  } else {
    std::string known;
    for (const auto& t : RulerTaskNames()) known += t + ", ";
    throw ModelError("unknown task '" + task + "' (" + known + "math_find)");
  }
  return s;
}

std::string PostprocessPrediction(const std::string& prediction) {
  std::string s = prediction;
  for (char& c : s) {
    if (static_cast<unsigned char>(c) < 0x20) c = '\n';
  }
  const auto first = s.find_first_not_of(" \t\n\r\f\v");
  if (first == std::string::npos) return "";
  const auto last = s.find_last_not_of(" \t\n\r\f\v");
  return s.substr(first, last - first + 1);
}

namespace {
std::string Lower(std::string s) {
  for (char& c : s) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return s;
}
}  // namespace

double StringMatchAll(const std::string& prediction, const std::vector<std::string>& references) {
  Check(!references.empty(), "string_match_all needs references");
  const std::string p = Lower(prediction);
  int64_t hits = 0;
  for (const auto& r : references) hits += p.find(Lower(r)) != std::string::npos;
  return static_cast<double>(hits) / static_cast<double>(references.size());
}

double MathFindScore(const std::string& prediction, const std::string& label) {
  static const std::regex number(R"(\d+\.\d+|\d+)");
  std::smatch m;
  if (!std::regex_search(prediction, m, number)) return 0;
  return std::stod(m.str()) == std::stod(label) ? 1 : 0;
}

double TaskScore(const std::string& task, const std::string& prediction,
                 const std::vector<std::string>& references) {
  const std::string p = PostprocessPrediction(prediction);
  if (task == "math_find") return MathFindScore(p, references.at(0));
  return StringMatchAll(p, references);
}

std::vector<TaskPoint> EvaluateTasks(LoadedModel& m, const std::vector<std::string>& tasks,
                                     const std::vector<double>& multiples, int64_t trials,
                                     uint64_t seed, bool streaming, std::ostream* log) {
  Check(m.shared != nullptr && m.tokenizer != nullptr, "task evaluation needs a SharedLLM with a tokenizer");
  c10::InferenceMode guard;
  const Tokenizer& tok = *m.tokenizer;
  const int64_t w = m.config.max_position_embeddings;
  std::vector<TaskPoint> out;
  for (const auto& task : tasks) {
    const int64_t budget = TaskMaxTokens(task, w);
    SamplingOptions sampling;  // greedy
    sampling.max_tokens = budget;
    for (double x : multiples) {
      TaskPoint p;
      p.task = task;
      p.length_multiple = x;
      double shared_sum = 0, trunc_sum = 0, stream_sum = 0, tokens = 0;
      for (int64_t t = 0; t < trials; ++t) {
        const int64_t target = static_cast<int64_t>(x * w) - budget;
        TaskSample s;
        try {
          s = MakeTaskSample(task, tok, target, TaskSampleSeed(seed, task, x, t));
        } catch (const TooShort& e) {  // this sample's smallest instance does not fit the length
          p.skipped = e.what();
          ++p.skipped_trials;
          continue;
        }
        const auto doc = tok.Encode(s.context);
        std::vector<int64_t> question;
        if (tok.bos_id() >= 0) question.push_back(tok.bos_id());
        const auto q = tok.Encode(s.question);
        question.insert(question.end(), q.begin(), q.end());
        tokens += static_cast<double>(doc.size() + question.size());
        {  // SharedLLM: the context through the tree, searched with the question.
          DocumentTree tree = m.shared->BuildStaticTree(doc);
          auto selected = m.shared->Select(tree, m.shared->QueryVector(question));
          InjectionContext ctx = m.shared->MakeContext(selected, tree.num_chunks());
          Decoder decoder(m.lm, &ctx);
          const std::string pred = decoder.Generate(question, sampling, &tok).text;
          shared_sum += TaskScore(task, pred, s.answers);
          if (log) {
            *log << task << " " << x << "x trial " << t << " (" << doc.size() + question.size()
                 << " tokens) references:";
            for (const auto& a : s.answers) *log << " [" << a << "]";
            *log << "\n  SharedLLM:    " << PostprocessPrediction(pred) << "\n";
          }
        }
        {  // Truncated base model: as much of the context's end as fits with the question.
          std::vector<int64_t> prompt;
          if (tok.bos_id() >= 0) prompt.push_back(tok.bos_id());
          const int64_t room = w - static_cast<int64_t>(question.size()) - budget;
          const int64_t keep = std::clamp<int64_t>(room, 0, static_cast<int64_t>(doc.size()));
          prompt.insert(prompt.end(), doc.end() - keep, doc.end());
          prompt.insert(prompt.end(), q.begin(), q.end());
          Decoder decoder(m.lm);
          const std::string pred = decoder.Generate(prompt, sampling, &tok).text;
          trunc_sum += TaskScore(task, pred, s.answers);
          if (log) *log << "  truncated:    " << PostprocessPrediction(pred) << "\n";
        }
        if (streaming) {  // StreamingLLM: the whole prompt through the sink + window cache.
          std::vector<int64_t> prompt;
          if (tok.bos_id() >= 0) prompt.push_back(tok.bos_id());
          prompt.insert(prompt.end(), doc.begin(), doc.end());
          prompt.insert(prompt.end(), q.begin(), q.end());
          const std::string pred = StreamingGenerate(m.lm, prompt, budget, tok);
          stream_sum += TaskScore(task, pred, s.answers);
          if (log) *log << "  StreamingLLM: " << PostprocessPrediction(pred) << "\n";
        }
        ++p.trials;
      }
      if (p.trials > 0) {
        p.skipped.clear();
        p.sharedllm_score = 100 * shared_sum / p.trials;
        p.truncated_score = 100 * trunc_sum / p.trials;
        if (streaming) p.streaming_score = 100 * stream_sum / p.trials;
        p.mean_tokens = tokens / p.trials;
      }
      out.push_back(p);
    }
  }
  return out;
}

}  // namespace sharedllm
