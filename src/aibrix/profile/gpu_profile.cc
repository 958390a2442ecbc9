#include "aibrix/profile/gpu_profile.h"

#include <cmath>

#include "aibrix/common/status_macros.h"
#include "fmt/format.h"
#include "nlohmann/json.hpp"

namespace aibrix::profile {
namespace {

using Json = nlohmann::json;

absl::Status FieldError(std::string_view field, std::string_view what) {
  return absl::InvalidArgumentError(fmt::format("profile field '{}': {}", field, what));
}

absl::StatusOr<double> Number(const Json& value, std::string_view field) {
  if (!value.is_number()) return FieldError(field, "not a number");
  const double number = value.get<double>();
  if (!std::isfinite(number)) return FieldError(field, "not a finite number");
  return number;
}

absl::StatusOr<Table> ParseTable(const Json& value, std::string_view field) {
  if (!value.is_array()) return FieldError(field, "not an array of arrays");
  Table table;
  table.reserve(value.size());
  for (const Json& row : value) {
    if (!row.is_array()) return FieldError(field, "a row is not an array");
    std::vector<double>& out = table.emplace_back();
    out.reserve(row.size());
    for (const Json& cell : row) {
      ASSIGN_OR_RETURN(double number, Number(cell, field));
      out.push_back(number);
    }
  }
  return table;
}

// An optional table: absent or null is "no data".
absl::StatusOr<std::optional<Table>> OptionalTable(const Json& doc, const char* field) {
  auto it = doc.find(field);
  if (it == doc.end() || it->is_null()) return std::optional<Table>();
  ASSIGN_OR_RETURN(Table table, ParseTable(*it, field));
  return std::optional<Table>(std::move(table));
}

absl::StatusOr<double> OptionalNumber(const Json& doc, const char* field) {
  auto it = doc.find(field);
  if (it == doc.end() || it->is_null()) return 0.0;
  return Number(*it, field);
}

absl::Status ParseSlos(const Json& doc, Slos& slos) {
  auto it = doc.find("slos");
  if (it == doc.end() || it->is_null()) return absl::OkStatus();
  if (!it->is_object()) return FieldError("slos", "not an object");
  ASSIGN_OR_RETURN(double percentile, OptionalNumber(*it, "percentile"));
  if (percentile < 0 || percentile > 100) return FieldError("slos.percentile", "not in [0, 100]");
  slos.percentile = static_cast<int>(percentile);
  ASSIGN_OR_RETURN(slos.tput, OptionalNumber(*it, "tput"));
  ASSIGN_OR_RETURN(slos.tt, OptionalNumber(*it, "tt"));
  ASSIGN_OR_RETURN(slos.e2e, OptionalNumber(*it, "e2e"));
  ASSIGN_OR_RETURN(slos.ttft, OptionalNumber(*it, "ttft"));
  ASSIGN_OR_RETURN(slos.tpat, OptionalNumber(*it, "tpat"));
  ASSIGN_OR_RETURN(slos.tpot, OptionalNumber(*it, "tpot"));
  return absl::OkStatus();
}

absl::StatusOr<Table> ParseIndexes(const Json& doc) {
  auto it = doc.find("indexes");
  if (it == doc.end()) return FieldError("indexes", "missing");
  ASSIGN_OR_RETURN(Table indexes, ParseTable(*it, "indexes"));
  if (indexes.size() < 2) {
    return FieldError("indexes", "needs an output-token row and an input-token row");
  }
  for (std::vector<double>& row : indexes) {
    if (row.empty()) return FieldError("indexes", "an empty row");
    for (size_t i = 0; i < row.size(); ++i) {
      if (row[i] <= 0) return FieldError("indexes", "a token count <= 0");
      row[i] = std::log2(row[i]);
      if (i > 0 && row[i] < row[i - 1]) return FieldError("indexes", "a row does not ascend");
    }
  }
  return indexes;
}

// The grid index nearest to `value` in an ascending row (the reference's rule, tolerance 0.5).
int NearestIndex(const std::vector<double>& grid, double value) {
  const int size = static_cast<int>(grid.size());
  if (size == 1 || value <= grid.front()) return 0;
  if (value >= grid.back()) return size - 1;
  int left = 0;
  int right = size - 1;
  while (left < right - 1) {
    const int mid = (left + right) / 2;
    if (value < grid[mid]) {
      right = mid;
    } else if (value > grid[mid]) {
      left = mid;
    } else {
      return mid;
    }
  }
  return value < grid[left] + (grid[right] - grid[left]) * 0.5 ? left : right;
}

absl::StatusOr<double> Lookup(const std::optional<Table>& table, std::string_view what,
                              std::span<const int> signature) {
  if (!table) return absl::NotFoundError(fmt::format("profile has no {} data", what));
  if (signature.size() < 2) {
    return absl::InvalidArgumentError(
        fmt::format("too few signature dimensions: {}", signature.size()));
  }
  const int i = signature[0];
  const int j = signature[1];
  if (i < 0 || static_cast<size_t>(i) >= table->size() || j < 0 ||
      static_cast<size_t>(j) >= (*table)[static_cast<size_t>(i)].size()) {
    return absl::OutOfRangeError(
        fmt::format("signature [{}, {}] outside the {} table", i, j, what));
  }
  return (*table)[static_cast<size_t>(i)][static_cast<size_t>(j)];
}

}  // namespace

absl::StatusOr<std::vector<int>> GpuProfile::Signature(std::span<const double> features) const {
  if (features.empty()) return absl::InvalidArgumentError("no features for a profile signature");
  if (features.size() > indexes.size()) {
    return absl::InvalidArgumentError(fmt::format("{} features but the profile has {} index rows",
                                                  features.size(), indexes.size()));
  }
  std::vector<int> signature(features.size());
  for (size_t i = 0; i < features.size(); ++i) {
    if (!(features[i] >= 0) || !std::isfinite(features[i])) {
      return absl::InvalidArgumentError(
          fmt::format("feature {} must be a finite count >= 0, got {}", i, features[i]));
    }
    // log2(0) = -inf sorts before every grid point: index 0.
    signature[i] = NearestIndex(indexes[i], std::log2(features[i]));
  }
  return signature;
}

absl::StatusOr<double> GpuProfile::Throughput(std::span<const int> signature) const {
  return Lookup(tputs, "throughput", signature);
}
absl::StatusOr<double> GpuProfile::Latency(std::span<const int> signature) const {
  return Lookup(e2e, "E2E latency", signature);
}
absl::StatusOr<double> GpuProfile::Ttft(std::span<const int> signature) const {
  return Lookup(ttft, "TTFT", signature);
}
absl::StatusOr<double> GpuProfile::Tpot(std::span<const int> signature) const {
  return Lookup(tpot, "TPOT", signature);
}

absl::StatusOr<GpuProfile> ParseGpuProfile(std::string_view json) {
  // No exceptions: a parse error yields a discarded value.
  const Json doc = Json::parse(json.begin(), json.end(), nullptr, /*allow_exceptions=*/false);
  if (doc.is_discarded()) return absl::InvalidArgumentError("profile is not JSON");
  if (!doc.is_object()) return absl::InvalidArgumentError("profile is not a JSON object");
  GpuProfile profile;
  if (auto it = doc.find("gpu"); it != doc.end() && !it->is_null()) {
    if (!it->is_string()) return FieldError("gpu", "not a string");
    profile.deployment = it->get<std::string>();
  }
  ASSIGN_OR_RETURN(profile.cost, OptionalNumber(doc, "cost"));
  ASSIGN_OR_RETURN(profile.created, OptionalNumber(doc, "created"));
  ASSIGN_OR_RETURN(profile.indexes, ParseIndexes(doc));
  ASSIGN_OR_RETURN(profile.tputs, OptionalTable(doc, "tputs"));
  ASSIGN_OR_RETURN(profile.e2e, OptionalTable(doc, "e2e"));
  ASSIGN_OR_RETURN(profile.ttft, OptionalTable(doc, "ttft"));
  ASSIGN_OR_RETURN(profile.tpot, OptionalTable(doc, "tpot"));
  RETURN_IF_ERROR(ParseSlos(doc, profile.slos));
  return profile;
}

}  // namespace aibrix::profile
