#include "aibrix/kvpublish/encoder.h"

#include <algorithm>
#include <array>
#include <cctype>
#include <string>
#include <variant>

#include "absl/status/status.h"
#include "aibrix/kvpublish/msgpack_writer.h"
#include "fmt/format.h"
#include "nlohmann/json.hpp"

namespace aibrix::kvpublish {
namespace {

struct EraShape {
  bool batch_has_dp_rank;
  bool signed_hashes;
  int stored_len;   // array length of BlockStored, tag included
  int removed_len;  // array length of BlockRemoved, tag included
};

EraShape ShapeOf(WireFormat f) {
  switch (f) {
    case WireFormat::kV0_9_0:
      return {false, true, 6, 2};
    case WireFormat::kV0_9_1:
      return {true, true, 6, 2};
    case WireFormat::kMedium:
      return {true, false, 7, 3};
    case WireFormat::kLoraName:
      return {true, false, 8, 3};
    case WireFormat::kExtraKeys:
      return {true, false, 9, 3};
    case WireFormat::kGroupIdx:
      return {true, false, 10, 4};
    case WireFormat::kSpecKind:
    case WireFormat::kMap:
      return {true, false, 12, 4};
  }
  return {true, false, 12, 4};
}

int HexDigit(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}

void WriteJson(MsgpackWriter& w, const nlohmann::json& j) {
  switch (j.type()) {
    case nlohmann::json::value_t::null:
    case nlohmann::json::value_t::discarded:
      w.Nil();
      return;
    case nlohmann::json::value_t::boolean:
      w.Bool(j.get<bool>());
      return;
    case nlohmann::json::value_t::number_unsigned:
      w.Uint(j.get<uint64_t>());
      return;
    case nlohmann::json::value_t::number_integer:
      w.Int(j.get<int64_t>());
      return;
    case nlohmann::json::value_t::number_float:
      w.Double(j.get<double>());
      return;
    case nlohmann::json::value_t::string:
      w.Str(j.get_ref<const std::string&>());
      return;
    case nlohmann::json::value_t::binary: {
      const auto& b = j.get_binary();
      w.Bin(std::string_view(reinterpret_cast<const char*>(b.data()), b.size()));
      return;
    }
    case nlohmann::json::value_t::array:
      w.Array(j.size());
      for (const auto& e : j) WriteJson(w, e);
      return;
    case nlohmann::json::value_t::object: {
      if (j.size() == 1 && j.contains("$bin") && j["$bin"].is_string()) {
        const auto& hex = j["$bin"].get_ref<const std::string&>();
        std::string bytes;
        bytes.reserve(hex.size() / 2);
        for (size_t i = 0; i + 1 < hex.size(); i += 2) {
          const int hi = HexDigit(hex[i]);
          const int lo = HexDigit(hex[i + 1]);
          bytes.push_back(static_cast<char>(((hi < 0 ? 0 : hi) << 4) | (lo < 0 ? 0 : lo)));
        }
        w.Bin(bytes);
        return;
      }
      w.Map(j.size());
      for (const auto& [k, v] : j.items()) {
        w.Str(k);
        WriteJson(w, v);
      }
      return;
    }
  }
  w.Nil();
}

class BatchEncoder {
 public:
  BatchEncoder(std::string* out, WireFormat format, HashEncoding hashes)
      : w_(out), format_(format), hashes_(hashes), shape_(ShapeOf(format)) {}

  void Encode(const kv::EventBatch& batch) {
    w_.Array(shape_.batch_has_dp_rank ? 3 : 2);
    w_.Double(batch.ts);
    w_.Array(batch.events.size());
    for (const auto& e : batch.events) {
      std::visit([this](const auto& ev) { Event(ev); }, e);
    }
    if (shape_.batch_has_dp_rank) OptInt(batch.data_parallel_rank);
  }

 private:
  void Hash(kv::EngineHash h) {
    if (hashes_ == HashEncoding::kBytes32) {
      std::array<char, 32> b{};
      for (int i = 0; i < 8; ++i) b[24 + i] = static_cast<char>(h >> (8 * (7 - i)));
      w_.Bin(std::string_view(b.data(), b.size()));
    } else if (shape_.signed_hashes) {
      w_.Int(static_cast<int64_t>(h));
    } else {
      w_.Uint(h);
    }
  }
  void Hashes(const std::vector<kv::EngineHash>& hs) {
    w_.Array(hs.size());
    for (auto h : hs) Hash(h);
  }
  void OptInt(const std::optional<int64_t>& v) {
    if (v) {
      w_.Int(*v);
    } else {
      w_.Nil();
    }
  }
  void OptStr(const std::optional<std::string>& v) {
    if (v) {
      w_.Str(*v);
    } else {
      w_.Nil();
    }
  }
  void ExtraKeys(const std::optional<std::string>& v) {
    if (!v) return w_.Nil();
    WriteJson(w_, nlohmann::json::parse(*v, nullptr, /*allow_exceptions=*/false));
  }
  void Tokens(const std::vector<uint32_t>& t) { w_.UintArray(t); }
  void Parent(const std::optional<kv::EngineHash>& p) {
    if (p) {
      Hash(*p);
    } else {
      w_.Nil();
    }
  }

  void Event(const kv::BlockStored& e) {
    if (format_ == WireFormat::kMap) {
      size_t n = 8 + (e.extra_keys_json ? 1 : 0) + (e.group_idx ? 1 : 0) +
                 (e.kv_cache_spec_kind ? 1 : 0) + (e.kv_cache_spec_sliding_window ? 1 : 0);
      w_.Map(n);
      w_.Str("type");
      w_.Str("BlockStored");
      w_.Str("block_hashes");
      Hashes(e.block_hashes);
      w_.Str("parent_block_hash");
      Parent(e.parent_block_hash);
      w_.Str("token_ids");
      Tokens(e.token_ids);
      w_.Str("block_size");
      w_.Int(e.block_size);
      w_.Str("lora_id");
      OptInt(e.lora_id);
      w_.Str("medium");
      OptStr(e.medium);
      w_.Str("lora_name");
      OptStr(e.lora_name);
      if (e.extra_keys_json) {
        w_.Str("extra_keys");
        ExtraKeys(e.extra_keys_json);
      }
      if (e.group_idx) {
        w_.Str("group_idx");
        w_.Int(*e.group_idx);
      }
      if (e.kv_cache_spec_kind) {
        w_.Str("kv_cache_spec_kind");
        w_.Str(*e.kv_cache_spec_kind);
      }
      if (e.kv_cache_spec_sliding_window) {
        w_.Str("kv_cache_spec_sliding_window");
        w_.Int(*e.kv_cache_spec_sliding_window);
      }
      return;
    }
    const int n = shape_.stored_len;
    w_.Array(n);
    w_.Str("BlockStored");
    Hashes(e.block_hashes);
    Parent(e.parent_block_hash);
    Tokens(e.token_ids);
    w_.Int(e.block_size);
    OptInt(e.lora_id);
    if (n > 6) OptStr(e.medium);
    if (n > 7) OptStr(e.lora_name);
    if (n > 8) ExtraKeys(e.extra_keys_json);
    if (n > 9) OptInt(e.group_idx);
    if (n > 10) {
      OptStr(e.kv_cache_spec_kind);
      OptInt(e.kv_cache_spec_sliding_window);
    }
  }

  void Event(const kv::BlockRemoved& e) {
    if (format_ == WireFormat::kMap) {
      w_.Map(e.group_idx ? 4 : 3);
      w_.Str("type");
      w_.Str("BlockRemoved");
      w_.Str("block_hashes");
      Hashes(e.block_hashes);
      w_.Str("medium");
      OptStr(e.medium);
      if (e.group_idx) {
        w_.Str("group_idx");
        w_.Int(*e.group_idx);
      }
      return;
    }
    const int n = shape_.removed_len;
    w_.Array(n);
    w_.Str("BlockRemoved");
    Hashes(e.block_hashes);
    if (n > 2) OptStr(e.medium);
    if (n > 3) OptInt(e.group_idx);
  }

  void Event(const kv::AllBlocksCleared&) {
    if (format_ == WireFormat::kMap) {
      w_.Map(1);
      w_.Str("type");
    } else {
      w_.Array(1);
    }
    w_.Str("AllBlocksCleared");
  }

  MsgpackWriter w_;
  const WireFormat format_;
  const HashEncoding hashes_;
  const EraShape shape_;
};

struct NamedFormat {
  std::string_view name;
  std::string_view alias;
  WireFormat format;
};
constexpr NamedFormat kFormats[] = {
    {"0.9.0", "p1", WireFormat::kV0_9_0},         {"0.9.1", "p2", WireFormat::kV0_9_1},
    {"medium", "p3", WireFormat::kMedium},        {"lora-name", "p4", WireFormat::kLoraName},
    {"extra-keys", "p5", WireFormat::kExtraKeys}, {"group-idx", "p6", WireFormat::kGroupIdx},
    {"spec-kind", "p7", WireFormat::kSpecKind},   {"map", "m1", WireFormat::kMap},
};

}  // namespace

std::string EncodeBatch(const kv::EventBatch& batch, WireFormat format, HashEncoding hashes) {
  std::string out;
  size_t estimate = 32;
  for (const auto& e : batch.events) {
    if (const auto* s = std::get_if<kv::BlockStored>(&e)) {
      estimate += 64 + s->block_hashes.size() * 9 + s->token_ids.size() * 5;
    } else {
      estimate += 48;
    }
  }
  out.reserve(estimate);
  BatchEncoder(&out, format, hashes).Encode(batch);
  return out;
}

absl::StatusOr<WireFormat> ParseWireFormat(std::string_view name) {
  std::string lower(name);
  std::transform(lower.begin(), lower.end(), lower.begin(),
                 [](unsigned char c) { return static_cast<char>(std::tolower(c)); });
  if (!lower.empty() && lower[0] == 'v' && lower.size() > 1 &&
      std::isdigit(static_cast<unsigned char>(lower[1]))) {
    lower.erase(0, 1);
  }
  std::replace(lower.begin(), lower.end(), '_', '-');
  for (const auto& f : kFormats) {
    if (lower == f.name || lower == f.alias) return f.format;
  }
  return absl::InvalidArgumentError(
      fmt::format("unknown KV event wire format '{}' (want one of 0.9.0, 0.9.1, medium, "
                  "lora-name, extra-keys, group-idx, spec-kind, map)",
                  name));
}

std::string_view WireFormatName(WireFormat format) {
  for (const auto& f : kFormats) {
    if (f.format == format) return f.name;
  }
  return "map";
}

}  // namespace aibrix::kvpublish
