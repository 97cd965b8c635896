#include "llm/safetensors.h"

#include "llm/json_fields.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>

#include <ATen/ATen.h>
#include <nlohmann/json.hpp>

#include "llm/errors.h"
#include "llm/file_util.h"

namespace sharedllm {

// A read-only memory mapping that lives as long as any tensor viewing it.
class MappedFile {
 public:
  explicit MappedFile(const std::string& path) {
    fd_ = ::open(path.c_str(), O_RDONLY);
    if (fd_ < 0) throw ModelError("cannot open " + path + ": " + std::strerror(errno));
    struct stat st;
    if (::fstat(fd_, &st) != 0) {
      ::close(fd_);
      throw ModelError("cannot stat " + path);
    }
    size_ = static_cast<size_t>(st.st_size);
    if (size_ > 0) {
      void* p = ::mmap(nullptr, size_, PROT_READ, MAP_PRIVATE, fd_, 0);
      if (p == MAP_FAILED) {
        ::close(fd_);
        throw ModelError("cannot mmap " + path + ": " + std::strerror(errno));
      }
      data_ = static_cast<const char*>(p);
    }
  }
  ~MappedFile() {
    if (data_) ::munmap(const_cast<char*>(data_), size_);
    if (fd_ >= 0) ::close(fd_);
  }
  MappedFile(const MappedFile&) = delete;
  MappedFile& operator=(const MappedFile&) = delete;
  const char* data() const { return data_; }
  size_t size() const { return size_; }

 private:
  int fd_ = -1;
  const char* data_ = nullptr;
  size_t size_ = 0;
};

namespace {

using nlohmann::json;

struct DtypeName {
  const char* name;
  at::ScalarType type;
};
constexpr DtypeName kDtypes[] = {
    {"F32", at::kFloat}, {"F16", at::kHalf},  {"BF16", at::kBFloat16}, {"F64", at::kDouble},
    {"I64", at::kLong},  {"I32", at::kInt},   {"I16", at::kShort},     {"I8", at::kChar},
    {"U8", at::kByte},   {"BOOL", at::kBool},
};

bool DtypeFromName(const std::string& name, at::ScalarType* out) {
  for (const auto& d : kDtypes) {
    if (name == d.name) {
      *out = d.type;
      return true;
    }
  }
  return false;
}

const char* DtypeToName(at::ScalarType t) {
  for (const auto& d : kDtypes) {
    if (d.type == t) return d.name;
  }
  throw ModelError(std::string("safetensors cannot store dtype ") + c10::toString(t));
}

constexpr uint64_t kMaxHeaderBytes = 100ull << 20;  // the reference implementation's limit

}  // namespace

SafetensorsFile::SafetensorsFile(const std::string& path) : path_(path) {
  file_ = std::make_shared<MappedFile>(path);
  const auto fail = [&](const std::string& why) {
    throw ModelError(path + ": not a valid safetensors file: " + why +
                     " (hint: the file may be truncated or corrupted; re-download or re-write it)");
  };
  if (file_->size() < 8) fail("shorter than the 8-byte header length");
  uint64_t header_len = 0;
  for (int i = 7; i >= 0; --i) {
    header_len = (header_len << 8) | static_cast<unsigned char>(file_->data()[i]);
  }
  if (header_len > kMaxHeaderBytes) fail("header length " + std::to_string(header_len) + " is absurd");
  if (8 + header_len > file_->size()) {
    fail("header length " + std::to_string(header_len) + " exceeds the file size " +
         std::to_string(file_->size()));
  }
  data_start_ = 8 + header_len;
  const size_t data_size = file_->size() - data_start_;
  json header;
  try {
    header = json::parse(file_->data() + 8, file_->data() + 8 + header_len);
  } catch (const json::exception& e) {
    fail(std::string("header is not JSON: ") + e.what());
  }
  if (!header.is_object()) fail("header is not a JSON object");
  std::vector<std::string> problems;
  for (auto it = header.begin(); it != header.end(); ++it) {
    if (it.key() == "__metadata__") {
      if (it->is_object()) {
        for (auto m = it->begin(); m != it->end(); ++m) {
          if (m->is_string()) metadata_[m.key()] = m->get<std::string>();
        }
      }
      continue;
    }
    const json& e = *it;
    Entry entry;
    try {
      const std::string dtype = e.at("dtype").get<std::string>();
      if (!DtypeFromName(dtype, &entry.dtype)) {
        problems.push_back(it.key() + ": unsupported dtype " + dtype);
        continue;
      }
      entry.shape = JsonGet<std::vector<int64_t>>(e.at("shape"));
      const auto offsets = JsonGet<std::vector<uint64_t>>(e.at("data_offsets"));
      if (offsets.size() != 2) throw ModelError("data_offsets must have two numbers");
      entry.begin = offsets[0];
      entry.end = offsets[1];
    } catch (const std::exception& ex) {
      problems.push_back(it.key() + ": malformed entry " + e.dump());
      continue;
    }
    uint64_t bytes = c10::elementSize(entry.dtype);
    bool bad_shape = false, overflow = false;
    for (int64_t d : entry.shape) {
      if (d < 0) bad_shape = true;
      overflow |= __builtin_mul_overflow(bytes, static_cast<uint64_t>(d < 0 ? 0 : d), &bytes);
    }
    if (bad_shape) {
      problems.push_back(it.key() + ": negative dimension");
    } else if (overflow) {
      problems.push_back(it.key() + ": shape is too large (its byte count overflows)");
    } else if (entry.begin > entry.end || entry.end > data_size) {
      problems.push_back(it.key() + ": byte range [" + std::to_string(entry.begin) + ", " +
                         std::to_string(entry.end) + ") lies outside the " +
                         std::to_string(data_size) + "-byte data section");
    } else if (entry.end - entry.begin != bytes) {
      problems.push_back(it.key() + ": byte range holds " + std::to_string(entry.end - entry.begin) +
                         " bytes but the shape needs " + std::to_string(bytes));
    } else {
      entries_.emplace(it.key(), std::move(entry));
    }
  }
  if (!problems.empty()) {
    std::string msg;
    for (const auto& p : problems) msg += "\n  - " + p;
    fail(std::to_string(problems.size()) + " bad tensor entries:" + msg);
  }
}

std::vector<std::string> SafetensorsFile::names() const {
  std::vector<std::string> out;
  for (const auto& [name, _] : entries_) out.push_back(name);
  return out;
}

std::vector<int64_t> SafetensorsFile::shape(const std::string& name) const {
  auto it = entries_.find(name);
  Check(it != entries_.end(), path_ + ": no tensor named " + name);
  return it->second.shape;
}

at::Tensor SafetensorsFile::tensor(const std::string& name) const {
  auto it = entries_.find(name);
  Check(it != entries_.end(), path_ + ": no tensor named " + name);
  const Entry& e = it->second;
  const char* ptr = file_->data() + data_start_ + e.begin;
  auto options = at::TensorOptions().dtype(e.dtype);
  const size_t align = c10::elementSize(e.dtype);
  if (reinterpret_cast<uintptr_t>(ptr) % align != 0) {
    // The format does not promise aligned data; copy rather than hand out a misaligned view.
    at::Tensor out = at::empty(e.shape, options);
    if (e.end > e.begin) std::memcpy(out.data_ptr(), ptr, e.end - e.begin);  // no memcpy to null
    return out;
  }
  auto keep = file_;
  return at::from_blob(const_cast<char*>(ptr), e.shape, [keep](void*) {}, options);
}

CheckpointReader::CheckpointReader(const std::string& dir) {
  const std::string index_path = JoinPath(dir, "model.safetensors.index.json");
  const std::string single = JoinPath(dir, "model.safetensors");
  if (FileExists(index_path)) {
    json index;
    try {
      index = json::parse(ReadTextFile(index_path));
    } catch (const json::exception& e) {
      throw ModelError(index_path + ": not valid JSON: " + e.what());
    }
    if (!index.contains("weight_map") || !index["weight_map"].is_object()) {
      throw ModelError(index_path + ": missing the 'weight_map' object");
    }
    std::map<std::string, const SafetensorsFile*> by_file;
    std::vector<std::string> problems;
    for (auto it = index["weight_map"].begin(); it != index["weight_map"].end(); ++it) {
      if (!it->is_string()) {
        problems.push_back(it.key() + ": shard name is not a string");
        continue;
      }
      const std::string shard = it->get<std::string>();
      if (shard.find('/') != std::string::npos) {
        problems.push_back(it.key() + ": shard name '" + shard + "' must be a plain file name");
        continue;
      }
      auto f = by_file.find(shard);
      if (f == by_file.end()) {
        files_.push_back(std::make_unique<SafetensorsFile>(JoinPath(dir, shard)));
        f = by_file.emplace(shard, files_.back().get()).first;
      }
      if (!f->second->contains(it.key())) {
        problems.push_back(it.key() + ": the index says " + shard + " but it is not there");
        continue;
      }
      where_[it.key()] = f->second;
    }
    if (!problems.empty()) {
      std::string msg = index_path + ": inconsistent with its shards:";
      for (const auto& p : problems) msg += "\n  - " + p;
      throw ModelError(msg);
    }
  } else if (FileExists(single)) {
    files_.push_back(std::make_unique<SafetensorsFile>(single));
    for (const auto& n : files_.back()->names()) where_[n] = files_.back().get();
  } else {
    throw ModelError("no model.safetensors or model.safetensors.index.json in " + dir +
                     " (hint: only safetensors checkpoints are read; convert .bin/.pth files "
                     "with transformers' save_pretrained(safe_serialization=True))");
  }
}

CheckpointReader CheckpointReader::FromFile(const std::string& path) {
  CheckpointReader r;
  r.files_.push_back(std::make_unique<SafetensorsFile>(path));
  for (const auto& n : r.files_.back()->names()) r.where_[n] = r.files_.back().get();
  return r;
}

std::vector<std::string> CheckpointReader::names() const {
  std::vector<std::string> out;
  for (const auto& [name, _] : where_) out.push_back(name);
  return out;
}

std::vector<int64_t> CheckpointReader::shape(const std::string& name) const {
  auto it = where_.find(name);
  Check(it != where_.end(), "checkpoint has no tensor named " + name);
  return it->second->shape(name);
}

at::Tensor CheckpointReader::tensor(const std::string& name) const {
  auto it = where_.find(name);
  Check(it != where_.end(), "checkpoint has no tensor named " + name);
  return it->second->tensor(name);
}

void WriteSafetensors(const std::string& path, const NamedTensors& tensors,
                      const std::map<std::string, std::string>& metadata) {
  json header = json::object();
  if (!metadata.empty()) header["__metadata__"] = metadata;
  std::vector<at::Tensor> cpu;
  cpu.reserve(tensors.size());
  uint64_t offset = 0;
  for (const auto& [name, t] : tensors) {
    Check(!header.contains(name), "duplicate tensor name " + name);
    at::Tensor c = t.detach().to(at::kCPU).contiguous();
    const uint64_t bytes = c.numel() * c.element_size();
    header[name] = {{"dtype", DtypeToName(c.scalar_type())},
                    {"shape", c.sizes().vec()},
                    {"data_offsets", {offset, offset + bytes}}};
    offset += bytes;
    cpu.push_back(std::move(c));
  }
  std::string h = header.dump();
  h.append((8 - h.size() % 8) % 8, ' ');  // keeps the data section 8-byte aligned
  std::string out;
  out.reserve(8 + h.size() + offset);
  const uint64_t n = h.size();
  for (int i = 0; i < 8; ++i) out.push_back(static_cast<char>((n >> (8 * i)) & 0xff));
  out += h;
  for (const auto& c : cpu) {
    out.append(static_cast<const char*>(c.data_ptr()), c.numel() * c.element_size());
  }
  WriteFileAtomic(path, out);
}

namespace {

// Deletes model.safetensors, model.safetensors.index.json and model-*-of-*.safetensors in `dir`.
void RemoveCheckpointFiles(const std::string& dir) {
  std::error_code ec;
  for (const auto& entry : std::filesystem::directory_iterator(dir, ec)) {
    const std::string name = entry.path().filename().string();
    const bool shard = name.rfind("model-", 0) == 0 && name.find("-of-") != std::string::npos &&
                       name.size() > 12 && name.compare(name.size() - 12, 12, ".safetensors") == 0;
    if (shard || name == "model.safetensors" || name == "model.safetensors.index.json") {
      std::filesystem::remove(entry.path(), ec);
    }
  }
}

}  // namespace

void WriteCheckpoint(const std::string& dir, const NamedTensors& tensors, size_t max_shard_bytes) {
  std::vector<NamedTensors> shards(1);
  size_t current = 0, total = 0;
  for (const auto& nt : tensors) {
    const size_t bytes = nt.second.numel() * nt.second.element_size();
    if (current > 0 && current + bytes > max_shard_bytes) {
      shards.emplace_back();
      current = 0;
    }
    shards.back().push_back(nt);
    current += bytes;
    total += bytes;
  }
  const std::map<std::string, std::string> meta = {{"format", "pt"}};
  // A previous checkpoint in another layout must not survive: the reader prefers the index.
  RemoveCheckpointFiles(dir);
  if (shards.size() == 1) {
    WriteSafetensors(JoinPath(dir, "model.safetensors"), tensors, meta);
    return;
  }
  json weight_map = json::object();
  for (size_t i = 0; i < shards.size(); ++i) {
    char name[64];
    std::snprintf(name, sizeof(name), "model-%05zu-of-%05zu.safetensors", i + 1, shards.size());
    WriteSafetensors(JoinPath(dir, name), shards[i], meta);
    for (const auto& nt : shards[i]) weight_map[nt.first] = name;
  }
  json index = {{"metadata", {{"total_size", total}}}, {"weight_map", weight_map}};
  WriteFileAtomic(JoinPath(dir, "model.safetensors.index.json"), index.dump(2) + "\n");
}

}  // namespace sharedllm
