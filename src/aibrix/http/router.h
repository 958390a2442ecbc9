// Path-segment routing: a pattern such as "/cache/pods/{namespace}/{name}" matches a path
// with the same number of '/'-separated segments, literal segments equal and each
// {parameter} a non-empty segment (its percent-decoded value goes to Request::params). No
// regular expressions: matching is a linear walk over the raw path, bounded by its length.
//
// Thread safety: add routes before use; Match is const and safe from any thread.
#pragma once

#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/status.h"

namespace aibrix::http {

class Router {
 public:
  struct Match {
    size_t route = 0;                 // index in the order of Add calls
    std::vector<std::string> params;  // decoded parameter values
  };
  enum class Miss { kNoPath, kWrongMethod };

  // Adds `method pattern` as the next route. InvalidArgument for a pattern that does not
  // start with '/', has an empty or malformed segment ("{x" or "a{x}"), or repeats a route.
  absl::Status Add(std::string_view method, std::string_view pattern);

  // The first route matching `method` and the raw (not yet decoded) `path`; otherwise why
  // nothing matched (so the server can answer 404 or 405).
  std::optional<Match> Find(std::string_view method, std::string_view raw_path, Miss* miss) const;

  const std::string& pattern(size_t route) const { return routes_[route].pattern; }
  size_t size() const { return routes_.size(); }

 private:
  struct Segment {
    std::string literal;  // empty for a parameter
    bool parameter = false;
  };
  struct Route {
    std::string method;
    std::string pattern;
    std::vector<Segment> segments;
  };
  static bool Matches(const Route& route, std::string_view raw_path,
                      std::vector<std::string>* params);

  std::vector<Route> routes_;
};

}  // namespace aibrix::http
