#include "mooncake_trace.h"

#include <algorithm>

#include "fmt/format.h"
#include "nlohmann/json.hpp"

namespace aibrix::loadgen {
namespace {

using json = nlohmann::json;

// SplitMix64's finalizer: a fixed bijective mix, identical on every platform.
uint64_t Mix(uint64_t x) {
  x ^= x >> 30;
  x *= 0xbf58476d1ce4e5b9ULL;
  x ^= x >> 27;
  x *= 0x94d049bb133111ebULL;
  x ^= x >> 31;
  return x;
}

// Filler blocks live in the top half of the id space; published hash ids are small integers.
constexpr uint64_t kFillerBit = uint64_t{1} << 63;

// Calls emit(r) for each of the prompt's `length` positions with a 64-bit pseudo-random r
// that depends only on the block's id and the position within the block.
template <typename Emit>
void ForEachPosition(const BlockPrompt& p, Emit emit) {
  const int64_t bt = p.block_tokens;
  for (int64_t pos = 0; pos < p.length;) {
    const uint64_t b = static_cast<uint64_t>(pos / bt);
    const uint64_t id = b < p.hash_ids.size()
                            ? p.hash_ids[b]
                            : kFillerBit | Mix(p.filler_id * 0x9e3779b97f4a7c15ULL + b);
    const uint64_t seed = Mix(id + 0x6a09e667f3bcc909ULL);
    const int64_t end = std::min<int64_t>(pos + bt - pos % bt, p.length);
    for (int64_t j = pos % bt; pos < end; ++j, ++pos) emit(Mix(seed + static_cast<uint64_t>(j)));
  }
}

}  // namespace

std::vector<uint32_t> BlockPrompt::Tokens() const {
  std::vector<uint32_t> out;
  out.reserve(static_cast<size_t>(length));
  ForEachPosition(*this,
                  [&](uint64_t r) { out.push_back(static_cast<uint32_t>(r % kBlockPromptVocab)); });
  return out;
}

std::string BlockPrompt::Text() const {
  static constexpr char kAlphabet[] = "abcdefghijklmnopqrstuvwxyz ";
  std::string out;
  out.reserve(static_cast<size_t>(length));
  ForEachPosition(*this,
                  [&](uint64_t r) { out.push_back(kAlphabet[r % (sizeof(kAlphabet) - 1)]); });
  return out;
}

absl::StatusOr<MooncakeRecord> ParseMooncakeLine(std::string_view line, int line_no) {
  auto bad = [line_no](const std::string& what) {
    return absl::InvalidArgumentError(fmt::format("line {}: {}", line_no, what));
  };
  const json j = json::parse(line, nullptr, /*allow_exceptions=*/false);
  if (j.is_discarded()) return bad("not valid JSON");
  if (!j.is_object()) return bad("not a JSON object");
  auto integer = [&](const char* name, int64_t lo, int64_t hi) -> absl::StatusOr<int64_t> {
    auto it = j.find(name);
    if (it == j.end()) return bad(fmt::format("\"{}\" is missing", name));
    const bool ok = it->is_number_unsigned() ? it->get<uint64_t>() <= static_cast<uint64_t>(hi)
                                             : it->is_number_integer();
    if (!ok || it->get<int64_t>() < lo || it->get<int64_t>() > hi) {
      return bad(fmt::format("\"{}\" must be an integer in [{}, {}]", name, lo, hi));
    }
    return it->get<int64_t>();
  };
  MooncakeRecord r;
  auto ts = j.find("timestamp");
  if (ts == j.end() || !ts->is_number() || !(ts->get<double>() >= 0)) {
    return bad("\"timestamp\" must be a number >= 0 (milliseconds)");
  }
  r.timestamp_ms = ts->get<double>();
  absl::StatusOr<int64_t> in = integer("input_length", 1, kMaxTraceInputLength);
  if (!in.ok()) return in.status();
  absl::StatusOr<int64_t> out = integer("output_length", 0, kMaxTraceOutputLength);
  if (!out.ok()) return out.status();
  r.input_length = *in;
  r.output_length = *out;
  auto ids = j.find("hash_ids");
  if (ids == j.end() || !ids->is_array()) return bad("\"hash_ids\" must be an array");
  r.hash_ids.reserve(ids->size());
  for (const json& id : *ids) {
    if (!id.is_number_unsigned() && !(id.is_number_integer() && id.get<int64_t>() >= 0)) {
      return bad("\"hash_ids\" must hold integers >= 0");
    }
    r.hash_ids.push_back(id.get<uint64_t>());
  }
  return r;
}

}  // namespace aibrix::loadgen
