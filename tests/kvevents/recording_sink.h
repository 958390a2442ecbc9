// A recording EventSink for tests: keeps the call log (one entry per batch: the first block
// hash of its first event, or a clear) and a model of the index (stored hashes per pod).
#pragma once

#include <chrono>
#include <condition_variable>
#include <functional>
#include <map>
#include <mutex>
#include <set>
#include <string>
#include <variant>
#include <vector>

#include "aibrix/kv/events.h"

namespace aibrix::kvevents::testing {

class RecordingSink : public kv::EventSink {
 public:
  static constexpr uint64_t kClear = ~uint64_t{0};

  void ApplyBatch(const kv::PodSource& source, const kv::EventBatch& batch) override {
    std::unique_lock<std::mutex> l(mu_);
    gate_cv_.wait(l, [&] { return open_; });
    uint64_t id = 0;
    for (const auto& e : batch.events) {
      if (const auto* s = std::get_if<kv::BlockStored>(&e)) {
        if (id == 0 && !s->block_hashes.empty()) id = s->block_hashes[0];
        for (auto h : s->block_hashes) blocks_[source.pod_key].insert(h);
      } else if (const auto* r = std::get_if<kv::BlockRemoved>(&e)) {
        for (auto h : r->block_hashes) blocks_[source.pod_key].erase(h);
      } else {
        blocks_[source.pod_key].clear();
      }
    }
    log_.push_back(id);
    pods_.push_back(source.pod_key);
    cv_.notify_all();
  }
  void ClearPod(const std::string& pod_key) override {
    std::lock_guard<std::mutex> l(mu_);
    blocks_[pod_key].clear();
    log_.push_back(kClear);
    pods_.push_back(pod_key);
    cv_.notify_all();
  }

  // Blocks ApplyBatch calls until Open() (slow consumer).
  void Close() {
    std::lock_guard<std::mutex> l(mu_);
    open_ = false;
  }
  void Open() {
    std::lock_guard<std::mutex> l(mu_);
    open_ = true;
    gate_cv_.notify_all();
  }

  // Waits until `pred(log)` holds; false after `timeout`.
  bool WaitFor(const std::function<bool(const std::vector<uint64_t>&)>& pred,
               std::chrono::milliseconds timeout = std::chrono::seconds(10)) {
    std::unique_lock<std::mutex> l(mu_);
    return cv_.wait_for(l, timeout, [&] { return pred(log_); });
  }
  bool WaitBatches(size_t n, std::chrono::milliseconds timeout = std::chrono::seconds(10)) {
    return WaitFor(
        [n](const std::vector<uint64_t>& log) {
          size_t k = 0;
          for (auto x : log) k += x != kClear;
          return k >= n;
        },
        timeout);
  }
  bool WaitContains(uint64_t id, std::chrono::milliseconds timeout = std::chrono::seconds(10)) {
    return WaitFor(
        [id](const std::vector<uint64_t>& log) {
          return std::find(log.begin(), log.end(), id) != log.end();
        },
        timeout);
  }

  std::vector<uint64_t> log() const {
    std::lock_guard<std::mutex> l(mu_);
    return log_;
  }
  std::vector<std::string> pods() const {
    std::lock_guard<std::mutex> l(mu_);
    return pods_;
  }
  std::set<uint64_t> blocks(const std::string& pod) const {
    std::lock_guard<std::mutex> l(mu_);
    auto it = blocks_.find(pod);
    return it == blocks_.end() ? std::set<uint64_t>{} : it->second;
  }
  size_t clears() const {
    std::lock_guard<std::mutex> l(mu_);
    return static_cast<size_t>(std::count(log_.begin(), log_.end(), kClear));
  }

 private:
  mutable std::mutex mu_;
  std::condition_variable cv_;
  std::condition_variable gate_cv_;
  bool open_ = true;
  std::vector<uint64_t> log_;
  std::vector<std::string> pods_;
  std::map<std::string, std::set<uint64_t>> blocks_;
};

}  // namespace aibrix::kvevents::testing
