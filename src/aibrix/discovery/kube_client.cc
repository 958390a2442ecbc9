#include "aibrix/discovery/kube_client.h"

#include <boost/asio/ssl/context.hpp>

#include "aibrix/common/status_macros.h"
#include "fmt/format.h"

namespace aibrix::discovery {
namespace {

http::ClientOptions ListOptions(const KubeClientOptions& options) {
  http::ClientOptions client;
  client.connect_timeout = options.connect_timeout;
  client.first_byte_timeout = options.request_timeout;
  client.idle_timeout = options.request_timeout;
  client.total_timeout = options.request_timeout;
  client.max_idle_per_address = 2;
  client.read_buffer_bytes = 64 << 10;  // a LIST page is megabytes: read it in large pieces
  return client;
}

http::ClientOptions WatchOptions(const KubeClientOptions& options) {
  http::ClientOptions client = ListOptions(options);
  // Between events a watch may stay silent until the server ends it.
  client.idle_timeout = options.watch_deadline;
  client.total_timeout = options.watch_deadline;
  return client;
}

}  // namespace

absl::StatusOr<std::unique_ptr<KubeClient>> KubeClient::Create(KubeConfig config,
                                                               KubeClientOptions options,
                                                               const common::Clock& clock) {
  ASSIGN_OR_RETURN(std::shared_ptr<boost::asio::ssl::context> tls, MakeTlsContext(config));
  return std::unique_ptr<KubeClient>(
      new KubeClient(std::move(config), options, std::move(tls), clock));
}

KubeClient::KubeClient(KubeConfig config, KubeClientOptions options,
                       std::shared_ptr<boost::asio::ssl::context> tls, const common::Clock& clock)
    : config_(std::move(config)),
      tls_(std::move(tls)),
      list_client_(ListOptions(options)),
      watch_client_(WatchOptions(options)),
      token_(config_.token, config_.token_file, clock) {}

std::shared_ptr<http::ClientCall> KubeClient::Get(
    boost::asio::io_context& io, std::string_view target, CallKind kind,
    std::shared_ptr<http::ResponseObserver> observer) {
  http::ClientRequest request;
  request.method = "GET";
  request.host = config_.host;
  request.port = config_.port;
  request.target = config_.path_prefix + std::string(target);
  request.tls = tls_;
  request.headers.Add("Accept", "application/json");
  request.headers.Add("User-Agent", "aibrix-cache");
  if (const std::string& token = token_.Get(); !token.empty()) {
    request.headers.Add("Authorization", "Bearer " + token);
  }
  http::Client& client = kind == CallKind::kWatch ? watch_client_ : list_client_;
  return client.Start(io, std::move(request), std::move(observer));
}

std::string CollectionPath(Resource resource, std::string_view ns) {
  const std::string scope = ns.empty() ? "" : fmt::format("/namespaces/{}", QueryEscape(ns));
  if (resource == Resource::kPods) return fmt::format("/api/v1{}/pods", scope);
  return fmt::format("/apis/model.aibrix.ai/v1alpha1{}/modeladapters", scope);
}

std::string QueryEscape(std::string_view value) {
  std::string out;
  out.reserve(value.size());
  for (unsigned char c : value) {
    if (std::isalnum(c) || c == '-' || c == '.' || c == '_' || c == '~') {
      out.push_back(static_cast<char>(c));
    } else {
      fmt::format_to(std::back_inserter(out), "%{:02X}", c);
    }
  }
  return out;
}

}  // namespace aibrix::discovery
