// Included by a test file whose process serves ext_proc: registers (before main) a GoogleTest
// environment that applies the service's process-wide gRPC settings before the first test,
// while the process has one thread, as aibrix-cache's main does. The tests then run the gRPC
// engine the service runs (extproc::TuneGrpcForProcess).
#pragma once

#include "aibrix/extproc/server.h"
#include "gtest/gtest.h"

namespace aibrix::testing {

class ServiceGrpcSettings : public ::testing::Environment {
 public:
  void SetUp() override { extproc::TuneGrpcForProcess(); }
};

inline ::testing::Environment* const kServiceGrpcSettings =
    ::testing::AddGlobalTestEnvironment(new ServiceGrpcSettings);

}  // namespace aibrix::testing
