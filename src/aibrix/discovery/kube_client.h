// KubeClient: GET requests to the Kubernetes API server over the project's http::Client
// (Boost.Beast; TLS through OpenSSL when the server is https), with the bearer token (re-read
// as it rotates, kube_config.h) and `Accept: application/json`. A LIST page is a request
// like any other; a WATCH streams until the server ends it, so it has a deadline of its own.
// Responses stream to the caller's observer with back-pressure (http/client.h).
//
// Thread safety: Get is called from the thread running the io_context given to it (the
// discovery thread); the observer's callbacks run there too.
#pragma once

#include <chrono>
#include <memory>
#include <string>
#include <string_view>

#include "absl/status/statusor.h"
#include "aibrix/common/clock.h"
#include "aibrix/discovery/k8s_objects.h"
#include "aibrix/discovery/kube_config.h"
#include "aibrix/http/client.h"

namespace aibrix::discovery {

struct KubeClientOptions {
  std::chrono::milliseconds connect_timeout{5000};  // TCP connect and TLS handshake
  // A LIST page in full; the response head of a WATCH.
  std::chrono::milliseconds request_timeout{60000};
  // The longest a WATCH response may stream (the server ends it after its timeoutSeconds;
  // this catches a server that does not).
  std::chrono::milliseconds watch_deadline{std::chrono::minutes(11)};
};

enum class CallKind { kList, kWatch };

class KubeClient {
 public:
  // InvalidArgument when the TLS material cannot be loaded.
  static absl::StatusOr<std::unique_ptr<KubeClient>> Create(KubeConfig config,
                                                            KubeClientOptions options,
                                                            const common::Clock& clock);
  KubeClient(const KubeClient&) = delete;
  KubeClient& operator=(const KubeClient&) = delete;

  // Starts `GET <path prefix><target>` on `io`; see http::Client::Start.
  std::shared_ptr<http::ClientCall> Get(boost::asio::io_context& io, std::string_view target,
                                        CallKind kind,
                                        std::shared_ptr<http::ResponseObserver> observer);

  const KubeConfig& config() const { return config_; }

 private:
  KubeClient(KubeConfig config, KubeClientOptions options,
             std::shared_ptr<boost::asio::ssl::context> tls, const common::Clock& clock);

  // Constant after construction.
  const KubeConfig config_;
  const std::shared_ptr<boost::asio::ssl::context> tls_;  // null for http
  http::Client list_client_;
  http::Client watch_client_;
  // The discovery thread.
  TokenSource token_;
};

// The URL path of a resource's collection: /api/v1[/namespaces/NS]/pods or
// /apis/model.aibrix.ai/v1alpha1[/namespaces/NS]/modeladapters ("" namespace: all).
std::string CollectionPath(Resource resource, std::string_view ns);
// Percent-encodes a query parameter value (everything but RFC 3986 unreserved characters).
std::string QueryEscape(std::string_view value);

}  // namespace aibrix::discovery
