#include "aibrix/server/upstream_pool.h"

#include "aibrix/common/net.h"

namespace aibrix::server {

UpstreamPool::Lease::~Lease() {
  if (client_ && pool_ != nullptr) pool_->Release(address_, std::move(client_));
}

UpstreamPool::Lease UpstreamPool::Acquire(const std::string& host, int port) {
  const std::string address = common::FormatHostPort(host, static_cast<uint16_t>(port));
  {
    std::lock_guard<std::mutex> lock(mu_);
    auto it = idle_.find(address);
    if (it != idle_.end() && !it->second.empty()) {
      auto client = std::move(it->second.back());
      it->second.pop_back();
      return Lease(this, address, std::move(client));
    }
  }
  auto client = std::make_unique<httplib::Client>(host, port);
  client->set_keep_alive(true);
  client->set_tcp_nodelay(true);
  client->set_connection_timeout(options_.connect_timeout);
  client->set_read_timeout(options_.read_timeout);
  client->set_write_timeout(options_.read_timeout);
  return Lease(this, address, std::move(client));
}

void UpstreamPool::Release(const std::string& address, std::unique_ptr<httplib::Client> client) {
  std::lock_guard<std::mutex> lock(mu_);
  auto& idle = idle_[address];
  if (idle.size() < options_.max_idle_per_address) idle.push_back(std::move(client));
}

}  // namespace aibrix::server
