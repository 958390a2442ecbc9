// Reading one series out of a Prometheus text exposition (GET /metrics), for tests that check
// a series as it is rendered (name and label set, exactly). To sum series by label, parse the
// text with aibrix/metrics/exposition.h and use metrics::SumSeries.
#pragma once

#include <optional>
#include <sstream>
#include <string>

namespace aibrix::testing {

// The value of `series` ("name" or "name{labels}", exactly as rendered) in `text`; nullopt
// when absent.
inline std::optional<double> FindSeries(const std::string& text, const std::string& series) {
  std::istringstream lines(text);
  std::string line;
  while (std::getline(lines, line)) {
    if (line.rfind(series + " ", 0) == 0) return std::stod(line.substr(series.size() + 1));
  }
  return std::nullopt;
}

// The same, 0 when absent.
inline double SeriesValue(const std::string& text, const std::string& series) {
  return FindSeries(text, series).value_or(0);
}

}  // namespace aibrix::testing
