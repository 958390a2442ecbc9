#include "aibrix/kvevents/decoder.h"

#include <algorithm>
#include <bit>
#include <cstdint>
#include <cstring>
#include <optional>
#include <string>
#include <utility>
#include <variant>

#include "absl/status/status.h"
#include "fmt/format.h"
#include "nlohmann/json.hpp"

namespace aibrix::kvevents {
namespace {

constexpr int kMaxDepth = 32;

enum class Kind : uint8_t { kNil, kBool, kUint, kInt, kFloat, kStr, kBin, kArray, kMap, kExt };

const char* KindName(Kind k) {
  switch (k) {
    case Kind::kNil:
      return "nil";
    case Kind::kBool:
      return "bool";
    case Kind::kUint:
    case Kind::kInt:
      return "int";
    case Kind::kFloat:
      return "float";
    case Kind::kStr:
      return "str";
    case Kind::kBin:
      return "bin";
    case Kind::kArray:
      return "array";
    case Kind::kMap:
      return "map";
    case Kind::kExt:
      return "ext";
  }
  return "?";
}

// One msgpack header; for str/bin/ext also the bytes, for array/map the element count.
struct Val {
  Kind kind = Kind::kNil;
  bool b = false;
  uint64_t u = 0;
  int64_t i = 0;
  double d = 0;
  std::string_view s;
  uint32_t n = 0;
};

// Big-endian reads of a fixed width: one load and a byte swap (a byte loop is not unrolled at
// -O2 and cost ~4 instructions a byte).
template <typename T>
inline T BeFixed(const uint8_t* p) {
  static_assert(std::endian::native == std::endian::little ||
                std::endian::native == std::endian::big);
  T v;
  std::memcpy(&v, p, sizeof v);
  if constexpr (std::endian::native == std::endian::little) {
    if constexpr (sizeof(T) == 2) v = __builtin_bswap16(v);
    if constexpr (sizeof(T) == 4) v = __builtin_bswap32(v);
    if constexpr (sizeof(T) == 8) v = __builtin_bswap64(v);
  }
  return v;
}

// The first `n` (0..8) bytes at `p`, big-endian.
inline uint64_t Be(const uint8_t* p, int n) {
  switch (n) {
    case 1:
      return p[0];
    case 2:
      return BeFixed<uint16_t>(p);
    case 4:
      return BeFixed<uint32_t>(p);
    case 8:
      return BeFixed<uint64_t>(p);
    default: {
      uint64_t v = 0;
      for (int k = 0; k < n; ++k) v = (v << 8) | p[k];
      return v;
    }
  }
}

class Decoder {
 public:
  Decoder(std::string_view in, DecodeStats* stats, size_t budget)
      : begin_(reinterpret_cast<const uint8_t*>(in.data())),
        p_(begin_),
        end_(begin_ + in.size()),
        stats_(stats),
        limit_(budget),
        budget_(budget) {}

  absl::StatusOr<kv::EventBatch> Run() {
    kv::EventBatch batch;
    if (!Batch(&batch)) {
      if (over_budget_) return absl::ResourceExhaustedError(error_);
      return absl::InvalidArgumentError(error_);
    }
    if (p_ != end_) {
      return absl::InvalidArgumentError(
          fmt::format("{} trailing bytes after the batch at offset {}", end_ - p_, p_ - begin_));
    }
    return batch;
  }

 private:
  size_t remaining() const { return static_cast<size_t>(end_ - p_); }

  // Charges `count` elements of `size` bytes against the decoded-memory budget.
  bool Charge(uint64_t count, size_t size) {
    const uint64_t bytes = count * size;
    if (bytes > budget_) {
      over_budget_ = true;
      return Fail(fmt::format("decoded batch exceeds the limit of {} bytes", limit_));
    }
    budget_ -= bytes;
    return true;
  }

  bool Fail(std::string_view what) {
    if (error_.empty()) error_ = fmt::format("{} at offset {}", what, p_ - begin_);
    return false;
  }

  bool Take(size_t n, std::string_view* out) {
    if (n > remaining()) return Fail("truncated");
    *out = std::string_view(reinterpret_cast<const char*>(p_), n);
    p_ += n;
    return true;
  }
  bool Len(int bytes, uint64_t* n) {
    *n = 0;
    if (static_cast<size_t>(bytes) > remaining()) return Fail("truncated");
    *n = Be(p_, bytes);
    p_ += bytes;
    return true;
  }
  bool Count(int bytes, Val* v, Kind kind) {
    uint64_t n;
    if (!Len(bytes, &n)) return false;
    // Every element takes at least one byte (a map entry two).
    if (n > remaining()) return Fail("container longer than the input");
    v->kind = kind;
    v->n = static_cast<uint32_t>(n);
    return true;
  }
  bool Bytes(int len_bytes, Val* v, Kind kind) {
    uint64_t n;
    if (!Len(len_bytes, &n)) return false;
    v->kind = kind;
    return Take(n, &v->s);
  }
  bool Ext(uint64_t n, Val* v) {
    std::string_view type;
    if (!Take(1, &type)) return false;
    v->kind = Kind::kExt;
    return Take(n, &v->s);
  }

  // Reads one header (and the payload of str/bin/ext).
  bool Next(Val* v) {
    if (p_ == end_) return Fail("truncated");
    const uint8_t c = *p_++;
    if (c <= 0x7f) {
      v->kind = Kind::kUint;
      v->u = c;
      return true;
    }
    if (c >= 0xe0) {
      v->kind = Kind::kInt;
      v->i = static_cast<int8_t>(c);
      return true;
    }
    if (c <= 0x8f) {
      v->kind = Kind::kMap;
      v->n = c & 0x0f;
      if (v->n > remaining()) return Fail("container longer than the input");
      return true;
    }
    if (c <= 0x9f) {
      v->kind = Kind::kArray;
      v->n = c & 0x0f;
      if (v->n > remaining()) return Fail("container longer than the input");
      return true;
    }
    if (c <= 0xbf) {
      v->kind = Kind::kStr;
      return Take(c & 0x1f, &v->s);
    }
    uint64_t x;
    switch (c) {
      case 0xc0:
        v->kind = Kind::kNil;
        return true;
      case 0xc2:
      case 0xc3:
        v->kind = Kind::kBool;
        v->b = c == 0xc3;
        return true;
      case 0xc4:
        return Bytes(1, v, Kind::kBin);
      case 0xc5:
        return Bytes(2, v, Kind::kBin);
      case 0xc6:
        return Bytes(4, v, Kind::kBin);
      case 0xc7:
        return Len(1, &x) && Ext(x, v);
      case 0xc8:
        return Len(2, &x) && Ext(x, v);
      case 0xc9:
        return Len(4, &x) && Ext(x, v);
      case 0xca: {
        if (!Len(4, &x)) return false;
        const uint32_t bits = static_cast<uint32_t>(x);
        float f;
        std::memcpy(&f, &bits, sizeof f);
        v->kind = Kind::kFloat;
        v->d = f;
        return true;
      }
      case 0xcb: {
        if (!Len(8, &x)) return false;
        v->kind = Kind::kFloat;
        std::memcpy(&v->d, &x, sizeof x);
        return true;
      }
      case 0xcc:
      case 0xcd:
      case 0xce:
      case 0xcf:
        v->kind = Kind::kUint;
        return Len(1 << (c - 0xcc), &v->u);
      case 0xd0:
        if (!Len(1, &x)) return false;
        v->kind = Kind::kInt;
        v->i = static_cast<int8_t>(x);
        return true;
      case 0xd1:
        if (!Len(2, &x)) return false;
        v->kind = Kind::kInt;
        v->i = static_cast<int16_t>(x);
        return true;
      case 0xd2:
        if (!Len(4, &x)) return false;
        v->kind = Kind::kInt;
        v->i = static_cast<int32_t>(x);
        return true;
      case 0xd3:
        if (!Len(8, &x)) return false;
        v->kind = Kind::kInt;
        v->i = static_cast<int64_t>(x);
        return true;
      case 0xd4:
      case 0xd5:
      case 0xd6:
      case 0xd7:
      case 0xd8:
        return Ext(uint64_t{1} << (c - 0xd4), v);
      case 0xd9:
        return Bytes(1, v, Kind::kStr);
      case 0xda:
        return Bytes(2, v, Kind::kStr);
      case 0xdb:
        return Bytes(4, v, Kind::kStr);
      case 0xdc:
        return Count(2, v, Kind::kArray);
      case 0xdd:
        return Count(4, v, Kind::kArray);
      case 0xde:
        return Count(2, v, Kind::kMap);
      case 0xdf:
        return Count(4, v, Kind::kMap);
      default:
        --p_;
        return Fail("invalid msgpack byte 0xc1");
    }
  }

  // Skips the children of an already-read header.
  bool SkipChildren(const Val& v, int depth) {
    if (v.kind != Kind::kArray && v.kind != Kind::kMap) return true;
    if (depth > kMaxDepth) return Fail("nesting too deep");
    const uint64_t n = v.kind == Kind::kMap ? uint64_t{v.n} * 2 : v.n;
    for (uint64_t k = 0; k < n; ++k) {
      if (!Skip(depth + 1)) return false;
    }
    return true;
  }
  bool Skip(int depth) {
    Val v;
    return Next(&v) && SkipChildren(v, depth);
  }

  bool Number(double* out, const char* what) {
    Val v;
    if (!Next(&v)) return false;
    switch (v.kind) {
      case Kind::kFloat:
        *out = v.d;
        return true;
      case Kind::kUint:
        *out = static_cast<double>(v.u);
        return true;
      case Kind::kInt:
        *out = static_cast<double>(v.i);
        return true;
      default:
        return Fail(fmt::format("{} is {}, want a number", what, KindName(v.kind)));
    }
  }

  bool HashOf(const Val& v, kv::EngineHash* out, const char* what) {
    switch (v.kind) {
      case Kind::kUint:
        *out = v.u;
        return true;
      case Kind::kInt:
        *out = static_cast<uint64_t>(v.i);
        return true;
      case Kind::kBin:
      case Kind::kStr: {
        const size_t n = v.s.size();
        const size_t start = n > 8 ? n - 8 : 0;
        *out =
            Be(reinterpret_cast<const uint8_t*>(v.s.data()) + start, static_cast<int>(n - start));
        return true;
      }
      default:
        return Fail(fmt::format("{} is {}, want int or bytes", what, KindName(v.kind)));
    }
  }

  // The per-id loops below read runs of ids without a bounds check per id: a run is as many
  // ids as the remaining bytes hold at the widest form the run accepts, so no id in it can
  // reach past the end. A run stops at any other form; that id, and every id once fewer
  // bytes remain than one widest form, takes the general, checked path (Next).

  bool Hashes(std::vector<kv::EngineHash>* out) {
    Val v;
    if (!Next(&v)) return false;
    if (v.kind != Kind::kArray) {
      return Fail(fmt::format("block_hashes is {}, want array", KindName(v.kind)));
    }
    if (!Charge(v.n, sizeof(kv::EngineHash))) return false;
    out->resize(v.n);
    kv::EngineHash* h = out->data();
    kv::EngineHash* const h_end = h + v.n;
    // The cursor lives in a register for the runs (see Tokens).
    const uint8_t* p = p_;
    while (h != h_end) {
      constexpr size_t kWidest = 9;  // uint64 (cf), the form vLLM's int hashes take
      const size_t run = std::min<size_t>(h_end - h, static_cast<size_t>(end_ - p) / kWidest);
      kv::EngineHash* const run_end = h + run;
      while (h != run_end && *p == 0xcf) {
        *h++ = BeFixed<uint64_t>(p + 1);
        p += kWidest;
      }
      if (run != 0 && h == run_end) continue;
      p_ = p;
      Val x;
      if (!Next(&x) || !HashOf(x, h, "block hash")) return false;
      ++h;
      p = p_;
    }
    p_ = p;
    return true;
  }

  bool OptHash(std::optional<kv::EngineHash>* out) {
    Val v;
    if (!Next(&v)) return false;
    if (v.kind == Kind::kNil) {
      out->reset();
      return true;
    }
    kv::EngineHash h = 0;
    if (!HashOf(v, &h, "parent_block_hash")) return false;
    *out = h;
    return true;
  }

  bool Tokens(std::vector<uint32_t>* out) {
    Val v;
    if (!Next(&v)) return false;
    if (v.kind != Kind::kArray) {
      return Fail(fmt::format("token_ids is {}, want array", KindName(v.kind)));
    }
    if (!Charge(v.n, sizeof(uint32_t))) return false;
    out->resize(v.n);
    uint32_t* t = out->data();
    uint32_t* const t_end = t + v.n;
    // The cursor lives in a register for the runs: through p_, every id's store to `t`
    // would be followed by a store and a reload of p_ (a memory round trip per id).
    const uint8_t* p = p_;
    while (t != t_end) {
      constexpr size_t kWidest = 5;  // uint32 (ce)
      const size_t run = std::min<size_t>(t_end - t, static_cast<size_t>(end_ - p) / kWidest);
      uint32_t* const run_end = t + run;
      for (; t != run_end; ++t) {
        const uint8_t c = *p;
        if (c <= 0x7f) {
          *t = c;
          ++p;
        } else if (c == 0xcd) {
          *t = BeFixed<uint16_t>(p + 1);
          p += 3;
        } else if (c == 0xce) {
          *t = BeFixed<uint32_t>(p + 1);
          p += 5;
        } else if (c == 0xcc) {
          *t = p[1];
          p += 2;
        } else {
          break;
        }
      }
      if (run != 0 && t == run_end) continue;
      p_ = p;
      if (!Token(t)) return false;
      ++t;
      p = p_;
    }
    p_ = p;
    return true;
  }

  // One token id of any form, bounds-checked, at p_.
  bool Token(uint32_t* out) {
    Val x;
    if (!Next(&x)) return false;
    if (x.kind == Kind::kUint && x.u <= 0xffffffffULL) {
      *out = static_cast<uint32_t>(x.u);
    } else if (x.kind == Kind::kInt && x.i >= 0 && x.i <= 0xffffffffLL) {
      *out = static_cast<uint32_t>(x.i);
    } else {
      return Fail("token id is not an int in uint32 range");
    }
    return true;
  }

  bool Int(int64_t* out, const char* what) {
    Val v;
    if (!Next(&v)) return false;
    if (v.kind == Kind::kInt) {
      *out = v.i;
    } else if (v.kind == Kind::kUint && v.u <= static_cast<uint64_t>(INT64_MAX)) {
      *out = static_cast<int64_t>(v.u);
    } else {
      return Fail(fmt::format("{} is {}, want int", what, KindName(v.kind)));
    }
    return true;
  }

  // Optional fields are lenient: nil or a value of another type (e.g. SGLang's metadata map
  // at index 7) leaves the field unset.
  bool OptInt(std::optional<int64_t>* out, int depth) {
    Val v;
    if (!Next(&v)) return false;
    out->reset();
    if (v.kind == Kind::kInt) {
      *out = v.i;
    } else if (v.kind == Kind::kUint && v.u <= static_cast<uint64_t>(INT64_MAX)) {
      *out = static_cast<int64_t>(v.u);
    }
    return SkipChildren(v, depth);
  }
  bool OptStr(std::optional<std::string>* out, int depth) {
    Val v;
    if (!Next(&v)) return false;
    out->reset();
    if (v.kind == Kind::kStr || v.kind == Kind::kBin) out->emplace(v.s);
    return SkipChildren(v, depth);
  }

  bool ToJson(const Val& v, int depth, nlohmann::json* out) {
    if (depth > kMaxDepth) return Fail("nesting too deep");
    switch (v.kind) {
      case Kind::kNil:
      case Kind::kExt:
        *out = nullptr;
        return true;
      case Kind::kBool:
        *out = v.b;
        return true;
      case Kind::kUint:
        *out = v.u;
        return true;
      case Kind::kInt:
        *out = v.i;
        return true;
      case Kind::kFloat:
        *out = v.d;
        return true;
      case Kind::kStr:
        *out = std::string(v.s);
        return true;
      case Kind::kBin: {
        static const char* kDigits = "0123456789abcdef";
        std::string hex;
        hex.reserve(v.s.size() * 2);
        for (unsigned char c : v.s) {
          hex.push_back(kDigits[c >> 4]);
          hex.push_back(kDigits[c & 15]);
        }
        *out = nlohmann::json{{"$bin", std::move(hex)}};
        return true;
      }
      case Kind::kArray: {
        *out = nlohmann::json::array();
        for (uint32_t k = 0; k < v.n; ++k) {
          Val e;
          nlohmann::json j;
          if (!Next(&e) || !ToJson(e, depth + 1, &j)) return false;
          out->push_back(std::move(j));
        }
        return true;
      }
      case Kind::kMap: {
        *out = nlohmann::json::object();
        for (uint32_t k = 0; k < v.n; ++k) {
          Val key, val;
          nlohmann::json vj;
          if (!Next(&key)) return false;
          // JSON keys are strings. Scalars are spelled out; container keys (which Python
          // cannot even produce for a dict) are dropped with their value: rendering them as
          // text would let nested keys grow the output exponentially through escaping.
          std::string name;
          switch (key.kind) {
            case Kind::kStr:
              name = std::string(key.s);
              break;
            case Kind::kUint:
              name = std::to_string(key.u);
              break;
            case Kind::kInt:
              name = std::to_string(key.i);
              break;
            case Kind::kBool:
              name = key.b ? "true" : "false";
              break;
            case Kind::kNil:
              name = "null";
              break;
            case Kind::kFloat:
              name = fmt::format("{}", key.d);
              break;
            case Kind::kBin: {
              nlohmann::json kj;
              if (!ToJson(key, depth + 1, &kj)) return false;
              name = kj["$bin"].get<std::string>();
              break;
            }
            default:
              if (!SkipChildren(key, depth + 1) || !Skip(depth + 1)) return false;
              continue;
          }
          if (!Next(&val) || !ToJson(val, depth + 1, &vj)) return false;
          (*out)[name] = std::move(vj);
        }
        return true;
      }
    }
    return true;
  }

  bool ExtraKeys(std::optional<std::string>* out, int depth) {
    Val v;
    if (!Next(&v)) return false;
    out->reset();
    if (v.kind == Kind::kNil) return true;
    nlohmann::json j;
    if (!ToJson(v, depth, &j)) return false;
    *out = j.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
    return true;
  }

  void Skipped() {
    if (stats_) ++stats_->skipped_events;
  }

  // Positional BlockStored: `n` elements including the tag, which is already read.
  bool StoredArray(uint32_t n, kv::BlockStored* s, int depth) {
    if (n < 5) return Fail(fmt::format("BlockStored has {} elements, want at least 5", n));
    if (!Hashes(&s->block_hashes) || !OptHash(&s->parent_block_hash) || !Tokens(&s->token_ids) ||
        !Int(&s->block_size, "block_size")) {
      return false;
    }
    for (uint32_t idx = 5; idx < n; ++idx) {
      bool ok = true;
      switch (idx) {
        case 5:
          ok = OptInt(&s->lora_id, depth);
          break;
        case 6:
          ok = OptStr(&s->medium, depth);
          break;
        case 7:
          ok = OptStr(&s->lora_name, depth);
          break;
        case 8:
          ok = ExtraKeys(&s->extra_keys_json, depth);
          break;
        case 9:
          ok = OptInt(&s->group_idx, depth);
          break;
        case 10:
          ok = OptStr(&s->kv_cache_spec_kind, depth);
          break;
        case 11:
          ok = OptInt(&s->kv_cache_spec_sliding_window, depth);
          break;
        default:
          ok = Skip(depth);
      }
      if (!ok) return false;
    }
    return true;
  }

  bool RemovedArray(uint32_t n, kv::BlockRemoved* r, int depth) {
    if (n < 2) return Fail(fmt::format("BlockRemoved has {} elements, want at least 2", n));
    if (!Hashes(&r->block_hashes)) return false;
    for (uint32_t idx = 2; idx < n; ++idx) {
      bool ok = true;
      if (idx == 2) {
        ok = OptStr(&r->medium, depth);
      } else if (idx == 3) {
        ok = OptInt(&r->group_idx, depth);
      } else {
        ok = Skip(depth);
      }
      if (!ok) return false;
    }
    return true;
  }

  bool EventMap(uint32_t n, std::vector<kv::Event>* events, int depth) {
    kv::BlockStored s;
    std::string type;
    bool has_hashes = false;
    for (uint32_t k = 0; k < n; ++k) {
      Val key;
      if (!Next(&key)) return false;
      if (key.kind != Kind::kStr) {
        if (!SkipChildren(key, depth) || !Skip(depth)) return false;
        continue;
      }
      const std::string_view name = key.s;
      bool ok = true;
      if (name == "type") {
        Val t;
        ok = Next(&t);
        if (ok && t.kind == Kind::kStr) {
          type = std::string(t.s);
        } else if (ok) {
          ok = SkipChildren(t, depth);
        }
      } else if (name == "block_hashes") {
        ok = Hashes(&s.block_hashes);
        has_hashes = true;
      } else if (name == "parent_block_hash") {
        ok = OptHash(&s.parent_block_hash);
      } else if (name == "token_ids") {
        ok = Tokens(&s.token_ids);
      } else if (name == "block_size") {
        ok = Int(&s.block_size, "block_size");
      } else if (name == "lora_id") {
        ok = OptInt(&s.lora_id, depth);
      } else if (name == "medium") {
        ok = OptStr(&s.medium, depth);
      } else if (name == "lora_name") {
        ok = OptStr(&s.lora_name, depth);
      } else if (name == "extra_keys") {
        ok = ExtraKeys(&s.extra_keys_json, depth);
      } else if (name == "group_idx") {
        ok = OptInt(&s.group_idx, depth);
      } else if (name == "kv_cache_spec_kind") {
        ok = OptStr(&s.kv_cache_spec_kind, depth);
      } else if (name == "kv_cache_spec_sliding_window") {
        ok = OptInt(&s.kv_cache_spec_sliding_window, depth);
      } else {
        ok = Skip(depth);
      }
      if (!ok) return false;
    }
    if (type == "BlockStored") {
      if (!has_hashes) return Fail("BlockStored map without block_hashes");
      events->emplace_back(std::move(s));
    } else if (type == "BlockRemoved") {
      if (!has_hashes) return Fail("BlockRemoved map without block_hashes");
      kv::BlockRemoved r;
      r.block_hashes = std::move(s.block_hashes);
      r.medium = std::move(s.medium);
      r.group_idx = s.group_idx;
      events->emplace_back(std::move(r));
    } else if (type == "AllBlocksCleared") {
      events->emplace_back(kv::AllBlocksCleared{});
    } else {
      Skipped();
    }
    return true;
  }

  bool Event(std::vector<kv::Event>* events) {
    constexpr int depth = 3;
    Val v;
    if (!Next(&v)) return false;
    if (v.kind == Kind::kMap) return EventMap(v.n, events, depth);
    if (v.kind != Kind::kArray || v.n == 0) {
      Skipped();
      return SkipChildren(v, depth);
    }
    Val tag;
    if (!Next(&tag)) return false;
    if (tag.kind == Kind::kStr) {
      if (tag.s == "BlockStored") {
        kv::BlockStored s;
        if (!StoredArray(v.n, &s, depth)) return false;
        events->emplace_back(std::move(s));
        return true;
      }
      if (tag.s == "BlockRemoved") {
        kv::BlockRemoved r;
        if (!RemovedArray(v.n, &r, depth)) return false;
        events->emplace_back(std::move(r));
        return true;
      }
      if (tag.s == "AllBlocksCleared") {
        events->emplace_back(kv::AllBlocksCleared{});
        for (uint32_t k = 1; k < v.n; ++k) {
          if (!Skip(depth)) return false;
        }
        return true;
      }
    } else if (!SkipChildren(tag, depth)) {
      return false;
    }
    Skipped();
    for (uint32_t k = 1; k < v.n; ++k) {
      if (!Skip(depth)) return false;
    }
    return true;
  }

  bool Events(std::vector<kv::Event>* events) {
    Val v;
    if (!Next(&v)) return false;
    if (v.kind != Kind::kArray) {
      return Fail(fmt::format("events is {}, want array", KindName(v.kind)));
    }
    if (!Charge(v.n, sizeof(kv::Event))) return false;
    events->reserve(v.n);
    for (uint32_t k = 0; k < v.n; ++k) {
      if (!Event(events)) return false;
    }
    return true;
  }

  bool DpRank(std::optional<int64_t>* out) { return OptInt(out, 1); }

  bool Batch(kv::EventBatch* batch) {
    if (begin_ == end_) return Fail("empty payload");
    if (remaining() > kMaxPayloadBytes) {
      return Fail(fmt::format("payload of {} bytes exceeds {}", remaining(), kMaxPayloadBytes));
    }
    Val v;
    if (!Next(&v)) return false;
    if (v.kind == Kind::kArray) {
      if (v.n < 2) return Fail(fmt::format("batch has {} elements, want 2 or more", v.n));
      if (!Number(&batch->ts, "ts") || !Events(&batch->events)) return false;
      if (v.n >= 3 && !DpRank(&batch->data_parallel_rank)) return false;
      for (uint32_t k = 3; k < v.n; ++k) {
        if (!Skip(1)) return false;
      }
      return true;
    }
    if (v.kind == Kind::kMap) {
      bool has_events = false;
      for (uint32_t k = 0; k < v.n; ++k) {
        Val key;
        if (!Next(&key)) return false;
        bool ok = true;
        if (key.kind != Kind::kStr) {
          ok = SkipChildren(key, 1) && Skip(1);
        } else if (key.s == "ts") {
          ok = Number(&batch->ts, "ts");
        } else if (key.s == "events") {
          ok = Events(&batch->events);
          has_events = true;
        } else if (key.s == "data_parallel_rank") {
          ok = DpRank(&batch->data_parallel_rank);
        } else {
          ok = Skip(1);
        }
        if (!ok) return false;
      }
      if (!has_events) return Fail("batch map without events");
      return true;
    }
    return Fail(fmt::format("batch is {}, want array or map", KindName(v.kind)));
  }

  const uint8_t* const begin_;
  const uint8_t* p_;
  const uint8_t* const end_;
  DecodeStats* stats_;
  const size_t limit_;
  uint64_t budget_;
  bool over_budget_ = false;
  std::string error_;
};

}  // namespace

absl::StatusOr<kv::EventBatch> DecodeBatch(std::string_view payload, DecodeStats* stats,
                                           const DecodeLimits& limits) {
  return Decoder(payload, stats, limits.max_decoded_bytes).Run();
}

size_t DecodedBytes(const kv::EventBatch& batch) {
  auto text = [](const std::optional<std::string>& s) { return s ? s->capacity() : 0; };
  size_t bytes = sizeof(kv::EventBatch) + batch.events.capacity() * sizeof(kv::Event);
  for (const kv::Event& event : batch.events) {
    if (const auto* s = std::get_if<kv::BlockStored>(&event)) {
      bytes += s->block_hashes.capacity() * sizeof(kv::EngineHash) +
               s->token_ids.capacity() * sizeof(uint32_t) + text(s->medium) + text(s->lora_name) +
               text(s->extra_keys_json) + text(s->kv_cache_spec_kind);
    } else if (const auto* r = std::get_if<kv::BlockRemoved>(&event)) {
      bytes += r->block_hashes.capacity() * sizeof(kv::EngineHash) + text(r->medium);
    }
  }
  return bytes;
}

}  // namespace aibrix::kvevents
