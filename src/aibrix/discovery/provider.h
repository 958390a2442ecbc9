// A discovery provider feeds pod and ModelAdapter changes into the Store.
//
// Thread safety: Start and Stop are called from one thread; a provider may run its own
// threads between them and writes to the Store from there. Reload may be called from any
// thread between Start and Stop.
#pragma once

#include <string>

#include "absl/status/status.h"
#include "aibrix/store/store.h"

namespace aibrix::discovery {

class Provider {
 public:
  virtual ~Provider() = default;
  // Loads the initial state into `store` and returns once it is consistent (the first sync);
  // an error means the service cannot start. `store` must outlive the provider.
  virtual absl::Status Start(store::Store& store) = 0;
  // Re-reads the provider's own configuration and applies what changed (SIGHUP). An error
  // says why the previous state stays. Providers with nothing to re-read return OK.
  virtual absl::Status Reload() { return absl::OkStatus(); }
  // Stops any background work. Idempotent.
  virtual void Stop() = 0;
  // "static" or "kubernetes".
  virtual std::string type() const = 0;
};

}  // namespace aibrix::discovery
