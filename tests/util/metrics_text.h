// Reading one series out of a Prometheus text exposition (GET /metrics), for tests.
#pragma once

#include <sstream>
#include <string>

namespace aibrix::testing {

// The value of `series` ("name" or "name{labels}", exactly as rendered) in `text`; 0 when
// absent.
inline double SeriesValue(const std::string& text, const std::string& series) {
  std::istringstream lines(text);
  std::string line;
  while (std::getline(lines, line)) {
    if (line.rfind(series + " ", 0) == 0) return std::stod(line.substr(series.size() + 1));
  }
  return 0;
}

}  // namespace aibrix::testing
