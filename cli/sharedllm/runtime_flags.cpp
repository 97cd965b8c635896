#include "cli/sharedllm/commands.h"

namespace sharedllm::cli {

void RuntimeFlags::Register(FlagSet& flags) {
  flags.Int("threads", &threads, "intra-op threads, 0 = all cores");
  flags.String("dtype", &options.dtype, "float32 | bfloat16 | float16 | auto (config's)");
  flags.String("device", &options.device, "cpu | cuda | cuda:N");
}

RuntimeOptions RuntimeFlags::Get() const {
  RuntimeOptions o = options;
  o.threads = static_cast<int>(threads);
  return o;
}

}  // namespace sharedllm::cli
