// Reading and writing the safetensors format (https://huggingface.co/docs/safetensors): an 8-byte
// little-endian header length, a JSON header {name: {dtype, shape, data_offsets}}, then the data.
// Reading memory-maps the file; tensors borrow the mapping (read-only, zero-copy).
#pragma once

#include <map>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include <ATen/core/Tensor.h>

namespace sharedllm {

class MappedFile;

// One .safetensors file, validated when opened: every entry's dtype is known, its byte range lies
// inside the file and matches its shape. Corrupt or truncated files throw ModelError.
class SafetensorsFile {
 public:
  explicit SafetensorsFile(const std::string& path);

  const std::string& path() const { return path_; }
  std::vector<std::string> names() const;
  bool contains(const std::string& name) const { return entries_.count(name) > 0; }
  std::vector<int64_t> shape(const std::string& name) const;
  // A CPU tensor viewing the mapped bytes. Read-only: clone() before writing to it.
  at::Tensor tensor(const std::string& name) const;
  const std::map<std::string, std::string>& metadata() const { return metadata_; }

 private:
  struct Entry {
    at::ScalarType dtype;
    std::vector<int64_t> shape;
    size_t begin = 0;  // offset into the data section
    size_t end = 0;
  };
  std::string path_;
  std::shared_ptr<MappedFile> file_;
  size_t data_start_ = 0;
  std::map<std::string, Entry> entries_;
  std::map<std::string, std::string> metadata_;
};

// All tensors of a checkpoint directory: `model.safetensors`, or the shards named by
// `model.safetensors.index.json`. Throws ModelError when neither exists or a shard is bad.
class CheckpointReader {
 public:
  explicit CheckpointReader(const std::string& dir);
  // Opens one explicit file (e.g. sharedllm.safetensors).
  static CheckpointReader FromFile(const std::string& path);

  std::vector<std::string> names() const;
  bool contains(const std::string& name) const { return where_.count(name) > 0; }
  std::vector<int64_t> shape(const std::string& name) const;
  at::Tensor tensor(const std::string& name) const;

 private:
  CheckpointReader() = default;
  std::vector<std::unique_ptr<SafetensorsFile>> files_;
  std::map<std::string, const SafetensorsFile*> where_;
};

using NamedTensors = std::vector<std::pair<std::string, at::Tensor>>;

// Writes tensors (any device, F32/F16/BF16/I64/I32/U8/BOOL) to one file, atomically.
void WriteSafetensors(const std::string& path, const NamedTensors& tensors,
                      const std::map<std::string, std::string>& metadata = {});

// Writes `model.safetensors` when everything fits in `max_shard_bytes`, otherwise
// `model-0000k-of-0000n.safetensors` shards plus `model.safetensors.index.json`.
void WriteCheckpoint(const std::string& dir, const NamedTensors& tensors,
                     size_t max_shard_bytes = size_t{2} << 30);

}  // namespace sharedllm
