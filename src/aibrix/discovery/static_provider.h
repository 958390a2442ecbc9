// Static discovery: the pods of a static config file, added once at start-up.
//
// Thread safety: Start/Stop from one thread; no background work.
#pragma once

#include <string>

#include "aibrix/discovery/provider.h"
#include "aibrix/discovery/static_config.h"

namespace aibrix::discovery {

class StaticProvider final : public Provider {
 public:
  explicit StaticProvider(StaticConfig config) : config_(std::move(config)) {}
  // Loads `path`; the error names the file, line and field.
  static absl::StatusOr<std::unique_ptr<StaticProvider>> FromFile(const std::string& path);

  absl::Status Start(store::Store& store) override;
  void Stop() override {}
  bool synced() const override { return true; }
  std::string type() const override { return "static"; }

 private:
  const StaticConfig config_;
};

}  // namespace aibrix::discovery
