#include "aibrix/http/router.h"

#include "aibrix/http/types.h"
#include "fmt/format.h"

namespace aibrix::http {
namespace {

// Calls `visit(segment)` for each segment of `path` after the leading '/'; stops early when
// `visit` returns false. "/" has one empty segment; "/a/" has "a" and "".
template <typename Visit>
bool ForEachSegment(std::string_view path, Visit visit) {
  path.remove_prefix(1);
  while (true) {
    const size_t slash = path.find('/');
    if (!visit(path.substr(0, slash))) return false;
    if (slash == std::string_view::npos) return true;
    path.remove_prefix(slash + 1);
  }
}

}  // namespace

absl::Status Router::Add(std::string_view method, std::string_view pattern) {
  if (pattern.empty() || pattern.front() != '/') {
    return absl::InvalidArgumentError(
        fmt::format("route pattern '{}' must start with '/'", pattern));
  }
  Route route{std::string(method), std::string(pattern), {}};
  bool ok = ForEachSegment(pattern, [&](std::string_view segment) {
    const bool opens = segment.find('{') != std::string_view::npos;
    const bool closes = segment.find('}') != std::string_view::npos;
    if (!opens && !closes) {
      route.segments.push_back({std::string(segment), false});
      return true;
    }
    if (segment.size() < 3 || segment.front() != '{' || segment.back() != '}' ||
        segment.substr(1, segment.size() - 2).find_first_of("{}") != std::string_view::npos) {
      return false;
    }
    route.segments.push_back({"", true});
    return true;
  });
  if (!ok) return absl::InvalidArgumentError(fmt::format("malformed route pattern '{}'", pattern));
  for (const Route& existing : routes_) {
    if (existing.method == method && existing.pattern == pattern) {
      return absl::AlreadyExistsError(fmt::format("route {} {} added twice", method, pattern));
    }
  }
  routes_.push_back(std::move(route));
  return absl::OkStatus();
}

bool Router::Matches(const Route& route, std::string_view raw_path,
                     std::vector<std::string>* params) {
  size_t index = 0;
  params->clear();
  const bool walked = ForEachSegment(raw_path, [&](std::string_view segment) {
    if (index >= route.segments.size()) return false;
    const Segment& want = route.segments[index++];
    if (!want.parameter) return segment == want.literal;
    if (segment.empty()) return false;
    params->push_back(PercentDecode(segment));
    return true;
  });
  return walked && index == route.segments.size();
}

std::optional<Router::Match> Router::Find(std::string_view method, std::string_view raw_path,
                                          Miss* miss) const {
  *miss = Miss::kNoPath;
  if (raw_path.empty() || raw_path.front() != '/') return std::nullopt;
  Match match;
  for (size_t i = 0; i < routes_.size(); ++i) {
    if (!Matches(routes_[i], raw_path, &match.params)) continue;
    if (routes_[i].method != method) {
      *miss = Miss::kWrongMethod;
      continue;
    }
    match.route = i;
    return match;
  }
  return std::nullopt;
}

}  // namespace aibrix::http
