// Builders for PodObjects in tests.
#pragma once

#include <string>

#include "aibrix/store/pod.h"

namespace aibrix::store::testing {

// A ready, running pod serving `model` with the given IP.
inline PodObject MakePod(const std::string& name, const std::string& model,
                         const std::string& ip = "10.0.0.1", const std::string& ns = "default") {
  PodObject pod;
  pod.ns = ns;
  pod.name = name;
  pod.uid = "uid-" + name;
  if (!model.empty()) pod.labels[kModelNameLabel] = model;
  pod.ip = ip;
  pod.phase = "Running";
  pod.ready_condition = true;
  pod.containers.push_back(Container{"vllm", {ContainerPort{"http", 8000, "TCP"}}, {}});
  return pod;
}

}  // namespace aibrix::store::testing
