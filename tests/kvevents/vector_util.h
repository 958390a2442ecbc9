// Test helpers: read the protocol vectors (tests/testdata, see its README.md) and build the
// expected kv::EventBatch from a vector's JSON, applying the normalisation rules of issue 3
// (negative ints as two's complement, byte strings as their last 8 bytes big-endian,
// extra_keys re-encoded as compact JSON with {"$bin": hex} for byte strings).
//
// Thread safety: pure functions.
#pragma once

#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

#include "aibrix/kv/events.h"
#include "nlohmann/json.hpp"

namespace aibrix::kvevents::testing {

// The directory holding kv/, zmq/, tokenize/ and metrics/ (tests/testdata).
inline std::string VectorsDir() { return AIBRIX_TESTDATA_DIR; }

inline std::string ReadFile(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

inline std::string FromHex(const std::string& hex) {
  std::string out;
  auto digit = [](char c) -> int {
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    return -1;
  };
  int hi = -1;
  for (char c : hex) {
    const int d = digit(c);
    if (d < 0) continue;
    if (hi < 0) {
      hi = d;
    } else {
      out.push_back(static_cast<char>((hi << 4) | d));
      hi = -1;
    }
  }
  return out;
}

inline std::string ToHex(const std::string& bytes) {
  static const char* kDigits = "0123456789abcdef";
  std::string out;
  for (unsigned char c : bytes) {
    out.push_back(kDigits[c >> 4]);
    out.push_back(kDigits[c & 15]);
  }
  return out;
}

// A .frames file: one "<length> <hex>" line per frame.
inline std::vector<std::string> ReadFrames(const std::string& path) {
  std::vector<std::string> frames;
  std::ifstream in(path);
  std::string line;
  while (std::getline(in, line)) {
    if (line.empty()) continue;
    const size_t sp = line.find(' ');
    frames.push_back(FromHex(sp == std::string::npos ? "" : line.substr(sp + 1)));
  }
  return frames;
}

// Names (without extension) of every vector in tests/testdata/kv, sorted.
inline std::vector<std::string> KvVectorNames() {
  std::vector<std::string> names;
  for (const auto& e : std::filesystem::directory_iterator(VectorsDir() + "/kv")) {
    if (e.path().extension() == ".hex") names.push_back(e.path().stem().string());
  }
  std::sort(names.begin(), names.end());
  return names;
}

inline kv::EngineHash HashFromJson(const nlohmann::json& j) {
  if (j.is_object()) {
    const std::string bytes = FromHex(j.at("$bin").get<std::string>());
    uint64_t v = 0;
    const size_t start = bytes.size() > 8 ? bytes.size() - 8 : 0;
    for (size_t i = start; i < bytes.size(); ++i)
      v = (v << 8) | static_cast<unsigned char>(bytes[i]);
    return v;
  }
  if (j.is_number_unsigned()) return j.get<uint64_t>();
  return static_cast<uint64_t>(j.get<int64_t>());
}

inline std::vector<kv::EngineHash> HashesFromJson(const nlohmann::json& j) {
  std::vector<kv::EngineHash> out;
  for (const auto& h : j) out.push_back(HashFromJson(h));
  return out;
}

template <typename T>
std::optional<T> Opt(const nlohmann::json& j) {
  if (j.is_null()) return std::nullopt;
  return j.get<T>();
}

inline kv::Event EventFromJson(const nlohmann::json& e) {
  // Normalise both encodings to the map form.
  nlohmann::json m;
  if (e.is_array()) {
    static const char* kStored[] = {
        "type",      "block_hashes",       "parent_block_hash",
        "token_ids", "block_size",         "lora_id",
        "medium",    "lora_name",          "extra_keys",
        "group_idx", "kv_cache_spec_kind", "kv_cache_spec_sliding_window"};
    static const char* kRemoved[] = {"type", "block_hashes", "medium", "group_idx"};
    const bool stored = e.at(0) == "BlockStored";
    for (size_t i = 0; i < e.size(); ++i) {
      if (stored && i < 12) m[kStored[i]] = e[i];
      if (!stored && i < 4) m[kRemoved[i]] = e[i];
    }
  } else {
    m = e;
  }
  auto get = [&](const char* k) { return m.contains(k) ? m[k] : nlohmann::json(); };
  const std::string type = m.at("type");
  if (type == "BlockStored") {
    kv::BlockStored s;
    s.block_hashes = HashesFromJson(m.at("block_hashes"));
    if (!get("parent_block_hash").is_null())
      s.parent_block_hash = HashFromJson(m["parent_block_hash"]);
    for (const auto& t : m.at("token_ids")) s.token_ids.push_back(t.get<uint32_t>());
    s.block_size = m.at("block_size").get<int64_t>();
    s.lora_id = Opt<int64_t>(get("lora_id"));
    s.medium = Opt<std::string>(get("medium"));
    s.lora_name = Opt<std::string>(get("lora_name"));
    if (!get("extra_keys").is_null()) s.extra_keys_json = m["extra_keys"].dump();
    s.group_idx = Opt<int64_t>(get("group_idx"));
    s.kv_cache_spec_kind = Opt<std::string>(get("kv_cache_spec_kind"));
    s.kv_cache_spec_sliding_window = Opt<int64_t>(get("kv_cache_spec_sliding_window"));
    return s;
  }
  if (type == "BlockRemoved") {
    kv::BlockRemoved r;
    r.block_hashes = HashesFromJson(m.at("block_hashes"));
    r.medium = Opt<std::string>(get("medium"));
    r.group_idx = Opt<int64_t>(get("group_idx"));
    return r;
  }
  return kv::AllBlocksCleared{};
}

inline kv::EventBatch BatchFromJson(const nlohmann::json& j) {
  kv::EventBatch b;
  b.ts = j.at(0).get<double>();
  for (const auto& e : j.at(1)) b.events.push_back(EventFromJson(e));
  if (j.size() > 2 && !j[2].is_null()) b.data_parallel_rank = j[2].get<int64_t>();
  return b;
}

inline kv::EventBatch VectorBatch(const std::string& name) {
  return BatchFromJson(nlohmann::json::parse(ReadFile(VectorsDir() + "/kv/" + name + ".json")));
}
inline std::string VectorPayload(const std::string& name) {
  return FromHex(ReadFile(VectorsDir() + "/kv/" + name + ".hex"));
}

}  // namespace aibrix::kvevents::testing
