// Reading AIBRIX_* environment variables: the value of a variable under any of its spellings
// (AIBrix's and the seed document's differ for some), and strict parsers for the value forms
// the reference uses (spec §8): strings (empty = unset), positive integers, Go's ParseBool and
// Go durations. The parsers return nullopt for a malformed value; callers turn that into a
// start-up error naming the variable (server/config.cc).
//
// Thread safety: the Env* functions read the process environment; call them during start-up.
// The parsers are pure.
#pragma once

#include <chrono>
#include <cstdint>
#include <initializer_list>
#include <optional>
#include <string>
#include <string_view>

#include "absl/status/statusor.h"

namespace aibrix::common {

// The variable's value, or nullopt when unset or empty.
std::optional<std::string> EnvString(const char* name);

// A variable's value and the spelling it was found under.
struct EnvValue {
  std::string name;
  std::string value;
};
// Whether two values of a variable mean the same (e.g. "true" and "1" for a boolean).
using EnvSameValue = bool (*)(std::string_view, std::string_view);
// The value of a variable known under several spellings (`names`, the preferred first), or
// nullopt when none is set (empty counts as unset). InvalidArgument, naming both, when two
// spellings are set to values that differ (per `same`; by default, as strings).
absl::StatusOr<std::optional<EnvValue>> EnvAny(std::initializer_list<const char*> names,
                                               EnvSameValue same = nullptr);

// Go's strconv.ParseBool: 1 t T TRUE true True / 0 f F FALSE false False; nullopt otherwise.
std::optional<bool> ParseGoBool(std::string_view text);
// A finite number in strtod syntax spanning the whole text, or nullopt.
std::optional<double> ParseFiniteNumber(std::string_view text);
// A decimal integer > 0 with nothing around it; nullopt otherwise.
std::optional<int64_t> ParsePositiveInt(std::string_view text);
// Go's time.ParseDuration ("300ms", "1.5s", "2h45m", "-1s"; units ns us µs ms s m h; "0"
// alone is zero); nullopt for anything else, a bare number included, and on overflow.
std::optional<std::chrono::nanoseconds> ParseGoDuration(std::string_view text);

}  // namespace aibrix::common
