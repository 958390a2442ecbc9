// Where the Kubernetes API server is and how to authenticate to it: from inside a pod
// (service-account token, CA and KUBERNETES_SERVICE_HOST/PORT) or from a kubeconfig file
// (its current context: cluster server, CA, insecure-skip-tls-verify; user token, token
// file, client certificate and key). The bearer token of a token file is re-read when the
// file changes (projected service-account tokens rotate) and at least every minute.
//
// Thread safety: KubeConfig is a plain value and the loaders are pure (they read files);
// a TokenSource is used by one thread at a time.
#pragma once

#include <sys/types.h>

#include <chrono>
#include <cstdint>
#include <memory>
#include <string>
#include <string_view>

#include "absl/status/statusor.h"
#include "aibrix/common/clock.h"

namespace boost::asio::ssl {
class context;
}

namespace aibrix::discovery {

inline constexpr char kServiceAccountDir[] = "/var/run/secrets/kubernetes.io/serviceaccount";

struct KubeConfig {
  std::string origin;  // "in-cluster" or the kubeconfig path, for messages
  // The server: scheme, host (IPv6 without brackets), port and a path prefix ("" or
  // e.g. "/k8s/clusters/c-1" behind a proxy), from a URL such as https://10.96.0.1:443.
  bool https = true;
  std::string host;
  uint16_t port = 443;
  std::string path_prefix;
  // Authentication (any may be empty): a bearer token, or a file holding one.
  std::string token;
  std::string token_file;
  // TLS: trusted CAs (a PEM file and/or PEM text; neither: the system's), or no check.
  std::string ca_file;
  std::string ca_pem;
  bool insecure_skip_tls_verify = false;
  // A client certificate and its key (file or PEM text each).
  std::string client_cert_file;
  std::string client_cert_pem;
  std::string client_key_file;
  std::string client_key_pem;

  // "https://host:port/prefix".
  std::string ServerUrl() const;
};

// In-cluster configuration: server https://$KUBERNETES_SERVICE_HOST:$KUBERNETES_SERVICE_PORT,
// token file `account_dir`/token, CA `account_dir`/ca.crt. FailedPrecondition when the host
// or port is unset (not running in a pod) or the token file is missing.
absl::StatusOr<KubeConfig> InClusterConfig(std::string_view service_host,
                                           std::string_view service_port,
                                           const std::string& account_dir = kServiceAccountDir);
// The same from the process environment.
absl::StatusOr<KubeConfig> InClusterConfigFromEnvironment();

// The current context of a kubeconfig text. Relative file paths in it are taken relative to
// `base_dir` (the kubeconfig's directory, as kubectl does); `-data` fields are base64.
// InvalidArgument naming `origin` and the field: malformed YAML, no current-context, a
// context, cluster or user that is not defined, a server URL that is not http(s)://host[:port],
// bad base64, or a user whose only credentials are of a kind not supported here (exec
// plugins, auth providers, basic auth).
absl::StatusOr<KubeConfig> ParseKubeConfig(std::string_view yaml, const std::string& base_dir,
                                           std::string_view origin);
// Reads and parses a kubeconfig file.
absl::StatusOr<KubeConfig> LoadKubeConfig(const std::string& path);

// The TLS context for an https server (null for http): verification against the CA (or the
// system's trust store), or none when insecure_skip_tls_verify; the client certificate and
// key when given. InvalidArgument naming the file or field that cannot be loaded.
absl::StatusOr<std::shared_ptr<boost::asio::ssl::context>> MakeTlsContext(const KubeConfig& config);

// The bearer token to send: a fixed one, or the content of a token file (whitespace trimmed)
// re-read when the file's identity (inode, size, modification time) changed or `max_age`
// passed since the last read (on `clock`). A file that cannot be read keeps the last token
// (and is logged, rate-limited).
class TokenSource {
 public:
  TokenSource(std::string token, std::string token_file, const common::Clock& clock,
              std::chrono::nanoseconds max_age = std::chrono::minutes(1));
  // "" when there is no token at all.
  const std::string& Get();
  // Times the file was read (tests).
  int reads() const { return reads_; }

 private:
  struct FileId {
    ino_t inode = 0;
    off_t size = -1;
    int64_t mtime_ns = -1;
    bool operator==(const FileId&) const = default;
  };

  // Constant after construction.
  const std::string file_;
  const common::Clock& clock_;
  const std::chrono::nanoseconds max_age_;
  // The caller's thread.
  std::string token_;
  FileId read_id_;
  std::chrono::steady_clock::time_point read_at_{};
  int reads_ = 0;
};

}  // namespace aibrix::discovery
