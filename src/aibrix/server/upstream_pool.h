// Keep-alive HTTP clients to engine pods, pooled per address: one request per client at a
// time (an httplib::Client serialises its requests), idle clients reused.
//
// Thread safety: Acquire/Release are safe from any thread; a leased client belongs to the
// caller until released.
#pragma once

#include <chrono>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "httplib.h"

namespace aibrix::server {

class UpstreamPool {
 public:
  struct Options {
    std::chrono::milliseconds connect_timeout{2000};
    std::chrono::milliseconds read_timeout{300000};
    size_t max_idle_per_address = 64;
  };

  // A leased client; returns itself to the pool when destroyed unless Discard()ed.
  class Lease {
   public:
    Lease(UpstreamPool* pool, std::string address, std::unique_ptr<httplib::Client> client)
        : pool_(pool), address_(std::move(address)), client_(std::move(client)) {}
    ~Lease();
    Lease(Lease&&) = default;
    httplib::Client& client() { return *client_; }
    // Drops the connection instead of pooling it (after an error).
    void Discard() { client_.reset(); }

   private:
    UpstreamPool* pool_;
    std::string address_;
    std::unique_ptr<httplib::Client> client_;
  };

  explicit UpstreamPool(Options options) : options_(options) {}
  // A client connected (lazily) to host:port.
  Lease Acquire(const std::string& host, int port);

 private:
  void Release(const std::string& address, std::unique_ptr<httplib::Client> client);

  const Options options_;
  std::mutex mu_;
  std::map<std::string, std::vector<std::unique_ptr<httplib::Client>>> idle_;  // guarded by mu_
};

}  // namespace aibrix::server
