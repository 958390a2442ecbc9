// Reading AIBRIX_* environment variables with the reference's parsing rules (spec §8):
// strings: empty = unset; ints: must parse and be > 0; bools: Go's ParseBool. Anything
// invalid yields the default.
//
// Thread safety: reads the process environment; call during start-up.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

namespace aibrix::common {

// The variable's value, or nullopt when unset or empty.
std::optional<std::string> EnvString(const char* name);
// The variable as a positive integer, or `fallback` when unset, malformed or <= 0.
int64_t EnvPositiveInt(const char* name, int64_t fallback);
// The variable as a finite number (strtod syntax, the whole value), or `fallback` when unset or
// invalid (the reference's LoadEnvFloat).
double EnvFloat(const char* name, double fallback);
// The variable parsed like Go's strconv.ParseBool, or `fallback` when unset or invalid.
bool EnvBool(const char* name, bool fallback);
// Go's strconv.ParseBool: 1 t T TRUE true True / 0 f F FALSE false False; nullopt otherwise.
std::optional<bool> ParseGoBool(std::string_view text);

}  // namespace aibrix::common
