#include "aibrix/gateway/request_body.h"

#include <algorithm>
#include <array>
#include <atomic>
#include <bit>
#include <cstring>
#include <iterator>

#if defined(__SSE2__)
#include <emmintrin.h>
#endif
#if defined(__x86_64__)
#if defined(__GNUC__) && !defined(__clang__)
// GCC 12 warns inside its own AVX-512 headers (_mm512_undefined_* as a permute's unused
// operand); the warning is located in the header, so only a file-wide pragma reaches it.
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#endif
#include <immintrin.h>
#endif

#include "absl/container/inlined_vector.h"
#include "aibrix/common/status_macros.h"
#include "fmt/format.h"
#include "nlohmann/json.hpp"
#include "simdjson.h"

namespace aibrix::gateway {
namespace {

// The DOM API dispatches at run time to the best kernel of the CPU (the on-demand API would
// be fixed at compile time to the portable fallback with Debian's default flags).
namespace dom = simdjson::dom;

absl::Status FieldError(std::string_view field, std::string_view want) {
  return absl::InvalidArgumentError(fmt::format("'{}' must be {}", field, want));
}

// A UTF-8 byte-order mark is not JSON, but some clients send one: skipped.
std::string_view SkipByteOrderMark(std::string_view json) {
  if (json.substr(0, 3) == "\xEF\xBB\xBF") json.remove_prefix(3);
  return json;
}

absl::StatusOr<std::vector<uint32_t>> TokenArray(dom::element value, std::string_view field) {
  dom::array array;
  if (value.get_array().get(array) != simdjson::SUCCESS) {
    return FieldError(field, "an array of token ids");
  }
  std::vector<uint32_t> ids;
  ids.reserve(array.size());
  for (dom::element element : array) {
    uint64_t id = 0;
    if (element.get_uint64().get(id) != simdjson::SUCCESS || id > UINT32_MAX) {
      return absl::InvalidArgumentError(
          fmt::format("'{}': token ids must be integers in [0, 2^32)", field));
    }
    ids.push_back(static_cast<uint32_t>(id));
  }
  return ids;
}

absl::StatusOr<std::string> String(dom::element value, std::string_view field) {
  std::string_view text;
  if (value.get_string().get(text) != simdjson::SUCCESS) return FieldError(field, "a string");
  return std::string(text);
}

// The OpenAI `messages` array, with ParseChatMessages' rules and words (tokenizer/chat_json.h).
absl::StatusOr<std::vector<tokenizer::ChatMessage>> ChatMessages(dom::element value) {
  dom::array array;
  if (value.get_array().get(array) != simdjson::SUCCESS) {
    return FieldError("messages", "an array of messages");
  }
  if (array.size() == 0) return absl::InvalidArgumentError("`messages` must not be empty");
  std::vector<tokenizer::ChatMessage> out;
  out.reserve(array.size());
  size_t i = 0;
  for (dom::element element : array) {
    dom::object message;
    if (element.get_object().get(message) != simdjson::SUCCESS) {
      return absl::InvalidArgumentError(fmt::format("messages[{}] must be an object", i));
    }
    tokenizer::ChatMessage msg;
    std::string_view role;
    if (message.at_key("role").get_string().get(role) != simdjson::SUCCESS) {
      return absl::InvalidArgumentError(fmt::format("messages[{}].role must be a string", i));
    }
    msg.role = role;
    dom::element content;
    if (message.at_key("content").get(content) != simdjson::SUCCESS || content.is_null()) {
      // An assistant message carrying only tool calls: rendered with empty content.
    } else if (std::string_view text; content.get_string().get(text) == simdjson::SUCCESS) {
      msg.content = text;
    } else if (dom::array parts; content.get_array().get(parts) == simdjson::SUCCESS) {
      for (dom::element part : parts) {
        dom::object object;
        if (part.get_object().get(object) != simdjson::SUCCESS) {
          return absl::InvalidArgumentError(
              fmt::format("messages[{}].content parts must be objects", i));
        }
        std::string_view type;
        std::string_view text;
        if (object.at_key("type").get_string().get(type) == simdjson::SUCCESS && type == "text" &&
            object.at_key("text").get_string().get(text) == simdjson::SUCCESS) {
          msg.content += text;
        }
      }
    } else {
      return absl::InvalidArgumentError(
          fmt::format("messages[{}].content must be a string, an array of parts or null", i));
    }
    out.push_back(std::move(msg));
    ++i;
  }
  return out;
}

absl::StatusOr<RequestBody> Parse(dom::element root) {
  dom::object object;
  if (root.get_object().get(object) != simdjson::SUCCESS) {
    return absl::InvalidArgumentError("request body must be a JSON object");
  }
  RequestBody body;
  for (dom::key_value_pair field : object) {
    const std::string_view key = field.key;
    const dom::element value = field.value;
    if (key == "model") {
      ASSIGN_OR_RETURN(body.model, String(value, key));
    } else if (key == "algorithm" || key == "request_id") {
      ASSIGN_OR_RETURN((key == "algorithm" ? body.algorithm : body.request_id), String(value, key));
    } else if (key == "stream") {
      bool stream = false;
      if (!value.is_null() && value.get_bool().get(stream) != simdjson::SUCCESS) {
        return FieldError(key, "a boolean");
      }
      body.stream = stream;  // null: OpenAI's default, not streamed
    } else if (key == "lora" || key == "user") {
      if (!value.is_null()) {
        ASSIGN_OR_RETURN((key == "lora" ? body.lora : body.user), String(value, key));
      }
    } else if (key == "token_ids") {
      ASSIGN_OR_RETURN(body.token_ids, TokenArray(value, key));
    } else if (key == "prompt") {
      if (value.is_string()) {
        ASSIGN_OR_RETURN(body.prompt, String(value, key));
      } else if (value.is_array()) {
        auto ids = TokenArray(value, key);
        if (!ids.ok()) {
          return FieldError(
              key, "a string or an array of token ids (batched prompts are not supported)");
        }
        body.token_ids = std::move(*ids);
      } else {
        return FieldError(key, "a string or an array of token ids");
      }
    } else if (key == "messages") {
      ASSIGN_OR_RETURN(body.messages, ChatMessages(value));
    } else if (key == "input_tokens" || key == "output_tokens") {
      uint64_t count = 0;
      if (value.get_uint64().get(count) != simdjson::SUCCESS) {
        return FieldError(key, "a non-negative integer");
      }
      (key == "input_tokens" ? body.input_tokens : body.output_tokens) = count;
    }
    // Other fields (max_tokens, temperature, ...) are the engine's business: skipped.
  }
  return body;
}

// ------------------------------------------------------------------------------ fast path

#if defined(__x86_64__)
#define AIBRIX_WIDE_TARGET \
  __attribute__((target("avx512f,avx512bw,avx512vl,avx512vbmi,avx512vbmi2")))

bool CpuHasWideWindows() {
  return __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
         __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512vbmi") &&
         __builtin_cpu_supports("avx512vbmi2");
}

// Whether compact windows are parsed with AVX-512 VBMI (the CPU has it; tests may turn it off).
std::atomic<bool> wide_windows{CpuHasWideWindows()};

// One 64-byte window at `p` (at the first digit of an id) holding only digits, commas and
// spaces: writes every id of the window that the next id's first digit follows (at most
// 32) to `out`, and returns through `ids` their count and through `taken` the bytes up to
// that next id. False, with nothing written, when the window has another byte, fewer than
// two ids, a separator other than spaces around one comma, or an id longer than 8 digits or
// with a leading zero: the scalar reader takes it from there.
//
// The ids are parsed eight at a time, one per 64-bit lane: the digit mask is compressed into
// the ids' begin and end offsets, VBMI's byte permute gathers each id's digits right-aligned
// into its lane (zero bytes in front), and two multiply-adds and one 32-bit multiply fold a
// lane's eight digits into its value — no id waits for another's length.
AIBRIX_WIDE_TARGET bool WideWindow(const char* p, uint32_t* out, int* ids, int* taken) {
  alignas(64) static constexpr auto kIota = [] {
    std::array<uint8_t, 64> a{};
    for (int i = 0; i < 64; ++i) a[i] = static_cast<uint8_t>(i);
    return a;
  }();
  // Byte 8j+k of a group's index vectors: id j of the group; its digit k sits 8-k bytes
  // before the id's end.
  alignas(64) static constexpr auto kLaneId = [] {
    std::array<uint8_t, 64> a{};
    for (int i = 0; i < 64; ++i) a[i] = static_cast<uint8_t>(i / 8);
    return a;
  }();
  alignas(64) static constexpr auto kDigitOffset = [] {
    std::array<int8_t, 64> a{};
    for (int i = 0; i < 64; ++i) a[i] = static_cast<int8_t>(i % 8 - 8);
    return a;
  }();
  const __m512i x = _mm512_loadu_si512(p);
  const __m512i zero_char = _mm512_set1_epi8('0');
  const uint64_t digit = _mm512_cmple_epu8_mask(_mm512_sub_epi8(x, zero_char), _mm512_set1_epi8(9));
  const uint64_t comma = _mm512_cmpeq_epi8_mask(x, _mm512_set1_epi8(','));
  const uint64_t space = _mm512_cmpeq_epi8_mask(x, _mm512_set1_epi8(' '));
  if ((digit | comma | space) != ~uint64_t{0} || (digit & 1) == 0) return false;
  // Ids are the digit runs; one is taken when the next begins in the window (its separator
  // is then whole).
  const uint64_t run_begins = digit & ~(digit << 1);
  if (std::popcount(run_begins) < 2) return false;
  const int next_id = 63 - std::countl_zero(run_begins);
  const uint64_t before_next = (uint64_t{1} << next_id) - 1;
  const uint64_t begins_mask = run_begins & before_next;
  const uint64_t ends_mask = ~digit & (digit << 1) & before_next;  // the byte after each id
  // Each separator is spaces, one comma, spaces: past the spaces after an id comes a comma,
  // and past the spaces after a comma comes a digit. (Adding a bit at the start of a space
  // run carries to the first byte after the run.)
  const auto past_spaces = [space](uint64_t at) {
    return (at & ~space) | (((at & space) + space) & ~space);
  };
  if ((past_spaces(ends_mask) & ~comma) != 0) return false;
  if ((past_spaces((comma & before_next) << 1) & ~digit) != 0) return false;
  const int n = std::popcount(begins_mask);  // <= 32: each id and separator takes 2 bytes
  const __m512i iota = _mm512_load_si512(kIota.data());
  const __m512i ends = _mm512_maskz_compress_epi8(ends_mask, iota);
  const __m512i begins = _mm512_maskz_compress_epi8(begins_mask, iota);
  const __m512i lengths = _mm512_sub_epi8(ends, begins);
  const __mmask64 live = (uint64_t{1} << n) - 1;
  if (_mm512_mask_cmpgt_epu8_mask(live, lengths, _mm512_set1_epi8(8)) != 0) return false;
  const __m512i first_digits = _mm512_permutexvar_epi8(begins, x);
  const __mmask64 multi = _mm512_mask_cmpgt_epu8_mask(live, lengths, _mm512_set1_epi8(1));
  if (_mm512_mask_cmpeq_epi8_mask(multi, first_digits, zero_char) != 0) return false;

  const __m512i lane_id = _mm512_load_si512(kLaneId.data());
  const __m512i digit_offset = _mm512_load_si512(kDigitOffset.data());
  const __m512i tens = _mm512_set1_epi16(0x010A);          // bytes 10, 1
  const __m512i hundreds = _mm512_set1_epi32(0x00010064);  // words 100, 1
  const __m512i ten_thousand = _mm512_set1_epi64(10000);
  for (int g = 0; g < n; g += 8) {
    const __m512i pick = _mm512_add_epi8(lane_id, _mm512_set1_epi8(static_cast<char>(g)));
    const __m512i at = _mm512_add_epi8(_mm512_permutexvar_epi8(pick, ends), digit_offset);
    const __mmask64 in_id = _mm512_cmpge_epi8_mask(at, _mm512_permutexvar_epi8(pick, begins));
    // Per lane: the id's digit values, first digit most significant, zero bytes in front.
    const __m512i digits = _mm512_maskz_sub_epi8(in_id, _mm512_permutexvar_epi8(at, x), zero_char);
    const __m512i pairs = _mm512_maddubs_epi16(digits, tens);
    const __m512i quads = _mm512_madd_epi16(pairs, hundreds);
    const __m512i values =
        _mm512_add_epi64(_mm512_mul_epu32(quads, ten_thousand), _mm512_srli_epi64(quads, 32));
    const int count = std::min(8, n - g);
    _mm256_mask_storeu_epi32(out + g, static_cast<__mmask8>((1u << count) - 1),
                             _mm512_cvtepi64_epi32(values));
  }
  *ids = n;
  *taken = next_id;
  return true;
}
#endif

// A cursor over the body for the top-level scan. Every method returns false on anything it
// does not handle exactly; the caller then falls back to the DOM.
class Scanner {
 public:
  explicit Scanner(std::string_view text) : p_(text.data()), end_(text.data() + text.size()) {}

  const char* pos() const { return p_; }
  bool AtEnd() const { return p_ == end_; }
  bool Next(char c) const { return p_ < end_ && *p_ == c; }

  void SkipSpace() {
    while (p_ < end_ && (*p_ == ' ' || *p_ == '\n' || *p_ == '\r' || *p_ == '\t')) ++p_;
  }
  bool Consume(char c) {
    SkipSpace();
    if (!Next(c)) return false;
    ++p_;
    return true;
  }

  // A key: printable ASCII without escapes (anything else goes to the DOM).
  bool Key(std::string_view* out) {
    if (!Consume('"')) return false;
    const char* start = p_;
    while (p_ < end_ && *p_ != '"') {
      const auto c = static_cast<unsigned char>(*p_);
      if (c < 0x20 || c >= 0x80 || c == '\\') return false;
      ++p_;
    }
    if (p_ == end_) return false;
    *out = std::string_view(start, static_cast<size_t>(p_ - start));
    ++p_;
    return true;
  }

  // Skips one value by its structure only: the DOM validates the skipped text later.
  bool SkipValue() {
    SkipSpace();
    if (p_ == end_) return false;
    if (*p_ == '"') return SkipString();
    if (*p_ == '{' || *p_ == '[') {
      int depth = 0;
      while (p_ < end_) {
        const char c = *p_;
        if (c == '"') {
          if (!SkipString()) return false;
          continue;
        }
        ++p_;
        if (c == '{' || c == '[') {
          ++depth;
        } else if ((c == '}' || c == ']') && --depth == 0) {
          return true;
        }
      }
      return false;
    }
    const char* start = p_;
    while (p_ < end_ && std::strchr(",}] \n\r\t", *p_) == nullptr) ++p_;
    return p_ > start;
  }

  // An array of canonical JSON integers in [0, 2^32), at '['.
  bool TokenArray(std::vector<uint32_t>* out) {
    ++p_;  // '['
    // Ids go to a raw buffer through a local pointer (a vector's push_back reloads its end
    // pointer after every store). Each id takes at least two bytes with its separator.
    thread_local std::vector<uint32_t> scratch;
    scratch.resize(std::max(scratch.size(), static_cast<size_t>(end_ - p_) / 2 + 1));
    uint32_t* const first = scratch.data();
    uint32_t* next = first;
    SkipSpace();
    if (Next(']')) {
      ++p_;
      out->clear();
      return true;
    }
    next = CompactIds(next);
    int retry = kCompactRetry;
    while (true) {
      if (!TokenId(next++)) return false;
      if (Next(',')) {  // compact "1,2,3" and "1, 2, 3" without the general loop
        ++p_;
        if (Next(' ')) ++p_;
        if (--retry == 0) {  // back to the windows after what stopped them
          next = CompactIds(next);
          retry = kCompactRetry;
        }
        continue;
      }
      SkipSpace();
      if (Next(',')) {
        ++p_;
        SkipSpace();
      } else if (Next(']')) {
        ++p_;
        out->assign(first, next);
        return true;
      } else {
        return false;
      }
    }
  }

 private:
  bool SkipString() {
    ++p_;  // opening quote
    while (p_ < end_) {
      if (*p_ == '\\') {
        p_ += 2;
        continue;
      }
      if (*p_++ == '"') return true;
    }
    return false;
  }

  // Ids between CompactIds attempts once a window stopped it.
  static constexpr int kCompactRetry = 16;

  // Runs of ids read 64-byte windows at a time. With AVX-512 VBMI (WideWindow): windows of
  // digits, commas and spaces ("12,345,6" and Python's "12, 345, 6"). Else (SSE2): windows
  // holding only digits and commas, whose ids are parsed between the commas; each id's place
  // comes from the window's comma mask, so ids do not wait for one another (TokenId must
  // parse an id to find the next). Stops, with p_ at the start of an id, at anything it does
  // not take exactly — a window with another byte (']', or a space for SSE2), an id that is
  // empty, longer than 8 digits or has a leading zero, or too few bytes left — and TokenId
  // goes on from there.
  // REQUIRES: p_ at the first byte of an id.
  uint32_t* CompactIds(uint32_t* next) {
#if defined(__x86_64__)
    if (wide_windows.load(std::memory_order_relaxed)) {
      int ids = 0, taken = 0;
      while (end_ - p_ >= 64 && WideWindow(p_, next, &ids, &taken)) {
        next += ids;
        p_ += taken;
      }
      return next;
    }
#endif
#if defined(__SSE2__)
    const __m128i zero = _mm_set1_epi8('0');
    const __m128i nine = _mm_set1_epi8(9);
    const __m128i comma_byte = _mm_set1_epi8(',');
    while (end_ - p_ >= 80) {  // a window and the 8-byte reads of its last id
      uint64_t commas = 0, others = 0;
      for (int i = 0; i < 4; ++i) {
        const __m128i x = _mm_loadu_si128(reinterpret_cast<const __m128i*>(p_ + 16 * i));
        const __m128i v = _mm_sub_epi8(x, zero);
        const __m128i digit = _mm_cmpeq_epi8(_mm_min_epu8(v, nine), v);
        const __m128i comma = _mm_cmpeq_epi8(x, comma_byte);
        commas |= uint64_t{static_cast<uint16_t>(_mm_movemask_epi8(comma))} << (16 * i);
        others |= uint64_t{static_cast<uint16_t>(~_mm_movemask_epi8(_mm_or_si128(digit, comma)))}
                  << (16 * i);
      }
      if (others != 0 || commas == 0) return next;
      const char* const window = p_;
      const char* id = p_;
      for (; commas != 0; commas &= commas - 1) {
        const char* const end = window + std::countr_zero(commas);
        const size_t n = static_cast<size_t>(end - id);
        if (n == 0 || n > 8 || (n > 1 && *id == '0')) {
          p_ = id;
          return next;
        }
        uint64_t word;
        std::memcpy(&word, id, 8);
        // The id's digits are the low n bytes (no borrow out of them: each is >= '0'); what
        // follows is shifted out.
        word = (word - 0x3030303030303030ULL) << (8 * (8 - n));
        *next++ = FoldDigits(word);
        id = end + 1;
      }
      p_ = id;  // the id the window cut, if any, starts the next window
    }
#endif
    return next;
  }

  // Eight digit values 0..9 (first digit in the lowest byte, left-padded with zero bytes)
  // as a number.
  static uint32_t FoldDigits(uint64_t word) {
    word = (word * 10 + (word >> 8)) & 0x00FF00FF00FF00FFULL;
    word = (word * 100 + (word >> 16)) & 0x0000FFFF0000FFFFULL;
    word = (word * 10000 + (word >> 32)) & 0xFFFFFFFFULL;
    return static_cast<uint32_t>(word);
  }

  // Digits 0-9 of an 8-byte little-endian word, as values 0..9 in each byte when they are
  // digits; returns the number of leading digit bytes (0..8).
  static int LeadingDigits(uint64_t* word) {
    const uint64_t x = *word - 0x3030303030303030ULL;
    // A byte is not a digit when it was below '0' (the subtraction borrowed: high bit set,
    // or a borrow went into the next byte, which only matters after the first non-digit) or
    // above '9' (x + 0x76 sets the high bit).
    const uint64_t bad = (x | (x + 0x7676767676767676ULL)) & 0x8080808080808080ULL;
    *word = x;
    return bad == 0 ? 8 : std::countr_zero(bad) / 8;
  }

  bool TokenId(uint32_t* out) {
    if (end_ - p_ >= 8) {
      uint64_t word;
      std::memcpy(&word, p_, 8);
      const int n = LeadingDigits(&word);
      if (n == 0 || (n > 1 && *p_ == '0')) return false;  // not a number, or a leading zero
      if (n < 8) {
        // Right-align the digits (first digit most significant), then fold pairs.
        *out = FoldDigits(word << (8 * (8 - n)));
        p_ += n;
        return true;
      }
    }
    // Near the end of the body, or 8+ digits: the plain loop.
    const char* start = p_;
    uint64_t value = 0;
    while (p_ < end_ && *p_ >= '0' && *p_ <= '9' && p_ - start < 11) {
      value = value * 10 + static_cast<uint64_t>(*p_ - '0');
      ++p_;
    }
    if (p_ == start || (p_ - start > 1 && *start == '0') || value > UINT32_MAX) return false;
    *out = static_cast<uint32_t>(value);
    return true;
  }

  const char* p_;
  const char* end_;
};

// The fast path; nullopt means "use the DOM".
std::optional<RequestBody> ParseSplit(std::string_view json) {
  Scanner scan(json);
  if (!scan.Consume('{')) return std::nullopt;
  std::optional<std::vector<uint32_t>> ids;
  std::string rest = "{";  // the other fields, for the DOM
  absl::InlinedVector<std::string_view, 8> keys;
  if (!scan.Consume('}')) {
    while (true) {
      std::string_view key;
      if (!scan.Key(&key) || !scan.Consume(':')) return std::nullopt;
      if (std::find(keys.begin(), keys.end(), key) != keys.end()) return std::nullopt;
      keys.push_back(key);
      scan.SkipSpace();
      if ((key == "token_ids" || key == "prompt") && scan.Next('[')) {
        if (ids) return std::nullopt;  // both: the DOM knows which one wins
        ids.emplace();
        if (!scan.TokenArray(&*ids)) return std::nullopt;
      } else {
        const char* value = scan.pos();
        if (!scan.SkipValue()) return std::nullopt;
        if (rest.size() > 1) rest += ',';
        fmt::format_to(std::back_inserter(rest), "\"{}\":{}", key,
                       std::string_view(value, static_cast<size_t>(scan.pos() - value)));
      }
      if (scan.Consume(',')) continue;
      if (scan.Consume('}')) break;
      return std::nullopt;
    }
  }
  scan.SkipSpace();
  if (!scan.AtEnd() || !ids) return std::nullopt;  // without an id array the DOM is as fast
  rest += '}';
  auto body = internal::ParseRequestBodyDom(rest);
  if (!body.ok()) return std::nullopt;  // the whole-body DOM words the error
  body->token_ids = std::move(ids);
  return std::move(*body);
}

}  // namespace

namespace internal {

absl::StatusOr<RequestBody> ParseRequestBodyDom(std::string_view json) {
  json = SkipByteOrderMark(json);
  thread_local dom::parser parser;
  dom::element root;
  const simdjson::error_code error =
      parser.parse(json.data(), json.size(), /*realloc_if_needed=*/true).get(root);
  if (error == simdjson::NUMBER_ERROR) {
    // Valid JSON with an integer simdjson cannot hold (past 64 bits), as clients send in
    // fields we ignore (a seed): normalized by nlohmann/json (big integers become doubles),
    // then parsed again. Rare: not a hot path.
    nlohmann::json normalized = nlohmann::json::parse(json, nullptr, /*allow_exceptions=*/false);
    if (normalized.is_discarded())
      return absl::InvalidArgumentError("malformed JSON in request body");
    const std::string text =
        normalized.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
    if (parser.parse(text.data(), text.size(), /*realloc_if_needed=*/true).get(root) !=
        simdjson::SUCCESS) {
      return absl::InvalidArgumentError("malformed JSON in request body");
    }
    return Parse(root);
  }
  if (error != simdjson::SUCCESS)
    return absl::InvalidArgumentError("malformed JSON in request body");
  return Parse(root);
}

}  // namespace internal

absl::StatusOr<RequestBody> ParseRequestBody(std::string_view json) {
  if (auto body = ParseSplit(SkipByteOrderMark(json))) return std::move(*body);
  return internal::ParseRequestBodyDom(json);  // skips the mark itself
}

namespace internal {
bool SetWideTokenWindows(bool on) {
#if defined(__x86_64__)
  if (!CpuHasWideWindows()) return false;
  wide_windows.store(on, std::memory_order_relaxed);
  return true;
#else
  (void)on;
  return false;
#endif
}
}  // namespace internal

}  // namespace aibrix::gateway
