// libFuzzer target: the values the service reads from Redis are untrusted. The first byte
// picks the parser:
//   even: a GPU profile document (profile::ParseGpuProfile); a parsed profile is then asked
//         for the signature of features taken from the input and every table at it;
//   odd:  an HGETALL reply of the replica sync (redis::ParseReplicaEntry), its elements the
//         NUL-separated rest of the input (a leading 0x01 makes an element non-string).
// Either answers a value or an error, never crashes. Seeds: tests/fuzz/corpus/redis_value.
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <string_view>
#include <vector>

#include "aibrix/profile/gpu_profile.h"
#include "aibrix/redis/replica_sync.h"

namespace {

void FuzzProfile(std::string_view text) {
  auto profile = aibrix::profile::ParseGpuProfile(text);
  if (!profile.ok()) return;
  // Features from the input's last 16 bytes (any doubles: negative, NaN, huge).
  std::vector<double> features(2, 0.0);
  if (text.size() >= 16) std::memcpy(features.data(), text.data() + text.size() - 16, 16);
  for (size_t n = 0; n <= 3; ++n) {
    std::vector<double> f(features.begin(), features.begin() + std::min<size_t>(n, 2));
    if (n == 3) f.push_back(1.0);
    auto signature = profile->Signature(f);
    if (!signature.ok()) continue;
    (void)profile->Throughput(*signature);
    (void)profile->Latency(*signature);
    (void)profile->Ttft(*signature);
    (void)profile->Tpot(*signature);
  }
}

void FuzzReplicaEntry(std::string_view text) {
  aibrix::redis::Reply reply;
  reply.type = aibrix::redis::Reply::Type::kArray;
  size_t start = 0;
  while (start <= text.size()) {
    const size_t end = std::min(text.find('\0', start), text.size());
    aibrix::redis::Reply element;
    std::string_view part = text.substr(start, end - start);
    if (!part.empty() && part[0] == '\x01') {
      element.type = aibrix::redis::Reply::Type::kInteger;
    } else {
      element.type = aibrix::redis::Reply::Type::kString;
      element.str = std::string(part);
    }
    reply.elements.push_back(std::move(element));
    start = end + 1;
  }
  (void)aibrix::redis::ParseReplicaEntry(reply);
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size == 0) return 0;
  const std::string_view rest(reinterpret_cast<const char*>(data) + 1, size - 1);
  if (data[0] % 2 == 0) {
    FuzzProfile(rest);
  } else {
    FuzzReplicaEntry(rest);
  }
  return 0;
}
