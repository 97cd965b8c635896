// libFuzzer target: the files a model directory holds (llm/config.h, sharedllm/config.h,
// llm/safetensors.h, llm/tokenizer.h), as a user may hand the tools a damaged or hostile one.
// The first byte picks the parser; each may only throw ModelError (what the tools report as a
// clear error), never crash, hang or throw anything else. Files go through /dev/shm (else /tmp)
// because the readers take paths.
#include <unistd.h>

#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <string>

#include "llm/config.h"
#include "llm/errors.h"
#include "llm/safetensors.h"
#include "llm/tokenizer.h"
#include "sharedllm/config.h"

using namespace sharedllm;

namespace {

std::string WriteTemp(const uint8_t* data, size_t size) {
  static const std::string path =
      std::string(access("/dev/shm", W_OK) == 0 ? "/dev/shm" : "/tmp") + "/sharedllm-fuzz-" +
      std::to_string(getpid());
  FILE* f = std::fopen(path.c_str(), "wb");
  if (f == nullptr) __builtin_trap();
  if (size > 0 && std::fwrite(data, 1, size, f) != size) __builtin_trap();
  std::fclose(f);
  return path;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size == 0) return 0;
  const uint8_t which = data[0] % 4;
  const std::string body(reinterpret_cast<const char*>(data) + 1, size - 1);
  try {
    switch (which) {
      case 0:
        (void)ModelConfig::FromJsonText(body);
        break;
      case 1:
        (void)SharedLLMConfig::FromJsonText(body);
        break;
      case 2: {
        SafetensorsFile file(WriteTemp(data + 1, size - 1));
        for (const std::string& name : file.names()) (void)file.tensor(name).sum();
        break;
      }
      case 3: {
        auto tok = LoadSentencePieceTokenizer(WriteTemp(data + 1, size - 1));
        const auto ids = tok->Encode("The pass key is 71432. caf\xc3\xa9 \xf0\x9f\x98\x80");
        (void)tok->Decode(ids);
        break;
      }
    }
  } catch (const ModelError&) {
    // A clear refusal: what every reader promises for a bad file.
  }
  return 0;
}
