// Small file helpers shared by the loaders and writers of model/.
#pragma once

#include <string>

namespace sharedllm {

// Whole file as a string; throws ModelError naming the path when it cannot be read.
std::string ReadTextFile(const std::string& path);
// Writes `data` to `path` via a temporary file and rename, so readers never see a partial file.
void WriteFileAtomic(const std::string& path, const std::string& data);
bool FileExists(const std::string& path);
std::string JoinPath(const std::string& dir, const std::string& name);

}  // namespace sharedllm
