#include "aibrix/discovery/kube_config.h"

#include <sys/stat.h>

#include <boost/asio/buffer.hpp>
#include <boost/asio/ssl/context.hpp>
#include <cstdlib>
#include <fstream>
#include <sstream>

#include "absl/strings/escaping.h"
#include "aibrix/common/logging.h"
#include "aibrix/common/net.h"
#include "aibrix/common/status_macros.h"
#include "aibrix/common/strings.h"
#include "fmt/format.h"
#include "yaml-cpp/yaml.h"

namespace aibrix::discovery {
namespace {

namespace ssl = boost::asio::ssl;

absl::StatusOr<std::string> ReadFile(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return absl::NotFoundError(fmt::format("cannot read {}", path));
  std::stringstream text;
  text << in.rdbuf();
  return text.str();
}

bool FileExists(const std::string& path) {
  struct stat st {};
  return ::stat(path.c_str(), &st) == 0;
}

std::string_view TrimSpace(std::string_view text) {
  constexpr std::string_view kSpace = " \t\r\n";
  const size_t begin = text.find_first_not_of(kSpace);
  if (begin == std::string_view::npos) return {};
  return text.substr(begin, text.find_last_not_of(kSpace) - begin + 1);
}

// Parses "http(s)://host[:port][/prefix]" into `config`.
absl::Status ParseServerUrl(std::string_view url, KubeConfig* config) {
  const auto bad = [&](std::string_view why) {
    return absl::InvalidArgumentError(fmt::format("server '{}' {}", url, why));
  };
  const size_t scheme_end = url.find("://");
  if (scheme_end == std::string_view::npos) return bad("is not http(s)://host[:port]");
  const std::string_view scheme = url.substr(0, scheme_end);
  if (scheme != "http" && scheme != "https") return bad("is not http(s)://host[:port]");
  config->https = scheme == "https";
  std::string_view rest = url.substr(scheme_end + 3);
  const size_t slash = rest.find('/');
  const std::string_view authority = rest.substr(0, slash);
  std::string_view prefix = slash == std::string_view::npos ? "" : rest.substr(slash);
  while (!prefix.empty() && prefix.back() == '/') prefix.remove_suffix(1);
  auto host_port = common::ParseHostPort(authority, config->https ? 443 : 80);
  if (!host_port.ok()) return bad(common::AsStd(host_port.status().message()));
  config->host = std::move(host_port->host);
  config->port = host_port->port;
  config->path_prefix = std::string(prefix);
  return absl::OkStatus();
}

// The kubeconfig being read: errors name the file, the field and its line.
class KubeConfigReader {
 public:
  KubeConfigReader(std::string_view origin, std::string base_dir)
      : origin_(origin), base_dir_(std::move(base_dir)) {}

  absl::Status Error(const YAML::Node& node, std::string_view field, std::string_view what) const {
    const int line = node.IsDefined() ? node.Mark().line + 1 : 0;
    return absl::InvalidArgumentError(line > 0
                                          ? fmt::format("{}:{}: {}: {}", origin_, line, field, what)
                                          : fmt::format("{}: {}: {}", origin_, field, what));
  }

  // A string field of `map`; "" when absent.
  absl::StatusOr<std::string> String(const YAML::Node& map, const char* key,
                                     std::string_view field) const {
    const YAML::Node node = map[key];
    if (!node.IsDefined() || node.IsNull()) return std::string();
    if (!node.IsScalar()) return Error(node, field, "not a string");
    return node.as<std::string>();
  }

  absl::StatusOr<bool> Bool(const YAML::Node& map, const char* key, std::string_view field) const {
    const YAML::Node node = map[key];
    if (!node.IsDefined() || node.IsNull()) return false;
    bool value = false;
    if (!node.IsScalar() || !YAML::convert<bool>::decode(node, value)) {
      return Error(node, field, "not a boolean");
    }
    return value;
  }

  // The base64 `-data` field decoded, "" when absent.
  absl::StatusOr<std::string> Base64(const YAML::Node& map, const char* key,
                                     std::string_view field) const {
    ASSIGN_OR_RETURN(std::string encoded, String(map, key, field));
    std::string decoded;
    if (!encoded.empty() && !absl::Base64Unescape(common::AsAbsl(encoded), &decoded)) {
      return Error(map[key], field, "not valid base64");
    }
    return decoded;
  }

  // A file path field, made absolute relative to the kubeconfig's directory.
  absl::StatusOr<std::string> Path(const YAML::Node& map, const char* key,
                                   std::string_view field) const {
    ASSIGN_OR_RETURN(std::string path, String(map, key, field));
    if (!path.empty() && path.front() != '/' && !base_dir_.empty()) path = base_dir_ + "/" + path;
    return path;
  }

  // The `inner` map of the element of list `list` named `name` (clusters, contexts, users).
  absl::StatusOr<YAML::Node> Named(const YAML::Node& root, const char* list, const char* inner,
                                   const std::string& name) const {
    const YAML::Node entries = root[list];
    // (A missing key gives an invalid node: only IsDefined may be asked of it.)
    if (entries.IsDefined() && !entries.IsNull()) {
      if (!entries.IsSequence()) return Error(entries, list, "not a list");
      for (const YAML::Node& entry : entries) {
        if (!entry.IsMap()) return Error(entry, list, "an element is not a map");
        const YAML::Node entry_name = entry["name"];
        if (entry_name.IsDefined() && entry_name.IsScalar() &&
            entry_name.as<std::string>() == name) {
          const YAML::Node value = entry[inner];
          if (!value.IsDefined() || !value.IsMap()) {
            return Error(entry, fmt::format("{}[{}].{}", list, name, inner),
                         "missing or not a map");
          }
          return value;
        }
      }
    }
    return Error(root, list, fmt::format("no entry named '{}'", name));
  }

  absl::StatusOr<KubeConfig> Read(const YAML::Node& root) const {
    if (!root.IsMap()) return Error(root, "kubeconfig", "not a map");
    KubeConfig config;
    config.origin = origin_;
    ASSIGN_OR_RETURN(std::string current, String(root, "current-context", "current-context"));
    if (current.empty()) return Error(root, "current-context", "not set");
    ASSIGN_OR_RETURN(YAML::Node context, Named(root, "contexts", "context", current));
    ASSIGN_OR_RETURN(std::string cluster_name, String(context, "cluster", "context.cluster"));
    ASSIGN_OR_RETURN(std::string user_name, String(context, "user", "context.user"));
    if (cluster_name.empty()) return Error(context, "context.cluster", "not set");

    ASSIGN_OR_RETURN(YAML::Node cluster, Named(root, "clusters", "cluster", cluster_name));
    ASSIGN_OR_RETURN(std::string server, String(cluster, "server", "cluster.server"));
    if (server.empty()) return Error(cluster, "cluster.server", "not set");
    if (auto st = ParseServerUrl(server, &config); !st.ok()) {
      return Error(cluster["server"], "cluster.server", common::AsStd(st.message()));
    }
    ASSIGN_OR_RETURN(config.ca_file,
                     Path(cluster, "certificate-authority", "cluster.certificate-authority"));
    ASSIGN_OR_RETURN(config.ca_pem, Base64(cluster, "certificate-authority-data",
                                           "cluster.certificate-authority-data"));
    ASSIGN_OR_RETURN(config.insecure_skip_tls_verify,
                     Bool(cluster, "insecure-skip-tls-verify", "cluster.insecure-skip-tls-verify"));

    if (!user_name.empty()) {
      ASSIGN_OR_RETURN(YAML::Node user, Named(root, "users", "user", user_name));
      ASSIGN_OR_RETURN(config.token, String(user, "token", "user.token"));
      // client-go spells it tokenFile; token-file is accepted as well.
      ASSIGN_OR_RETURN(config.token_file, Path(user, "tokenFile", "user.tokenFile"));
      if (config.token_file.empty()) {
        ASSIGN_OR_RETURN(config.token_file, Path(user, "token-file", "user.token-file"));
      }
      ASSIGN_OR_RETURN(config.client_cert_file,
                       Path(user, "client-certificate", "user.client-certificate"));
      ASSIGN_OR_RETURN(config.client_cert_pem,
                       Base64(user, "client-certificate-data", "user.client-certificate-data"));
      ASSIGN_OR_RETURN(config.client_key_file, Path(user, "client-key", "user.client-key"));
      ASSIGN_OR_RETURN(config.client_key_pem,
                       Base64(user, "client-key-data", "user.client-key-data"));
      const bool has_cert = !config.client_cert_file.empty() || !config.client_cert_pem.empty();
      const bool has_key = !config.client_key_file.empty() || !config.client_key_pem.empty();
      if (has_cert != has_key) {
        return Error(user, "user", "a client certificate needs its key and the other way round");
      }
      const bool has_credentials = !config.token.empty() || !config.token_file.empty() || has_cert;
      for (const char* unsupported : {"exec", "auth-provider", "username"}) {
        if (!has_credentials && user[unsupported].IsDefined()) {
          return Error(user[unsupported], fmt::format("user.{}", unsupported),
                       "not supported: give the user a token, tokenFile or client certificate");
        }
      }
    }
    return config;
  }

 private:
  const std::string origin_;
  const std::string base_dir_;
};

template <class Load>
absl::Status LoadPem(const std::string& what, Load&& load) {
  try {
    load();
  } catch (const boost::system::system_error& e) {
    return absl::InvalidArgumentError(fmt::format("cannot load {}: {}", what, e.what()));
  }
  return absl::OkStatus();
}

}  // namespace

std::string KubeConfig::ServerUrl() const {
  return fmt::format("{}://{}{}", https ? "https" : "http", common::FormatHostPort(host, port),
                     path_prefix);
}

absl::StatusOr<KubeConfig> InClusterConfig(std::string_view service_host,
                                           std::string_view service_port,
                                           const std::string& account_dir) {
  if (service_host.empty() || service_port.empty()) {
    return absl::FailedPreconditionError(
        "not running in a Kubernetes pod (KUBERNETES_SERVICE_HOST/PORT unset): use --kubeconfig");
  }
  KubeConfig config;
  config.origin = "in-cluster";
  const std::string authority =
      service_host.find(':') != std::string_view::npos
          ? fmt::format("[{}]:{}", service_host, service_port)  // an IPv6 service address
          : fmt::format("{}:{}", service_host, service_port);
  RETURN_IF_ERROR(ParseServerUrl("https://" + authority, &config));
  config.token_file = account_dir + "/token";
  if (!FileExists(config.token_file)) {
    return absl::FailedPreconditionError(
        fmt::format("in-cluster: no service-account token at {}", config.token_file));
  }
  const std::string ca = account_dir + "/ca.crt";
  if (FileExists(ca)) config.ca_file = ca;
  return config;
}

absl::StatusOr<KubeConfig> InClusterConfigFromEnvironment() {
  const char* host = std::getenv("KUBERNETES_SERVICE_HOST");
  const char* port = std::getenv("KUBERNETES_SERVICE_PORT");
  return InClusterConfig(host ? host : "", port ? port : "");
}

absl::StatusOr<KubeConfig> ParseKubeConfig(std::string_view yaml, const std::string& base_dir,
                                           std::string_view origin) {
  YAML::Node root;
  try {
    root = YAML::Load(std::string(yaml));
  } catch (const YAML::Exception& e) {
    return absl::InvalidArgumentError(
        fmt::format("{}:{}: malformed YAML: {}", origin, e.mark.line + 1, e.msg));
  }
  try {
    return KubeConfigReader(origin, base_dir).Read(root);
  } catch (const YAML::Exception& e) {
    return absl::InvalidArgumentError(fmt::format("{}:{}: {}", origin, e.mark.line + 1, e.msg));
  }
}

absl::StatusOr<KubeConfig> LoadKubeConfig(const std::string& path) {
  ASSIGN_OR_RETURN(std::string text, ReadFile(path));
  const size_t slash = path.rfind('/');
  const std::string dir = slash == std::string::npos ? "." : path.substr(0, slash);
  return ParseKubeConfig(text, dir.empty() ? "/" : dir, path);
}

absl::StatusOr<std::shared_ptr<ssl::context>> MakeTlsContext(const KubeConfig& config) {
  if (!config.https) return std::shared_ptr<ssl::context>();
  auto context = std::make_shared<ssl::context>(ssl::context::tls_client);
  const std::string& origin = config.origin;
  if (config.insecure_skip_tls_verify) {
    context->set_verify_mode(ssl::verify_none);
  } else {
    context->set_verify_mode(ssl::verify_peer);
    if (config.ca_file.empty() && config.ca_pem.empty()) {
      RETURN_IF_ERROR(LoadPem(origin + ": the system's trusted CAs",
                              [&] { context->set_default_verify_paths(); }));
    }
    if (!config.ca_file.empty()) {
      RETURN_IF_ERROR(LoadPem(origin + ": certificate-authority " + config.ca_file,
                              [&] { context->load_verify_file(config.ca_file); }));
    }
    if (!config.ca_pem.empty()) {
      RETURN_IF_ERROR(LoadPem(origin + ": certificate-authority-data", [&] {
        context->add_certificate_authority(boost::asio::buffer(config.ca_pem));
      }));
    }
  }
  if (!config.client_cert_file.empty()) {
    RETURN_IF_ERROR(LoadPem(origin + ": client-certificate " + config.client_cert_file,
                            [&] { context->use_certificate_chain_file(config.client_cert_file); }));
  }
  if (!config.client_cert_pem.empty()) {
    RETURN_IF_ERROR(LoadPem(origin + ": client-certificate-data", [&] {
      context->use_certificate_chain(boost::asio::buffer(config.client_cert_pem));
    }));
  }
  if (!config.client_key_file.empty()) {
    RETURN_IF_ERROR(LoadPem(origin + ": client-key " + config.client_key_file, [&] {
      context->use_private_key_file(config.client_key_file, ssl::context::pem);
    }));
  }
  if (!config.client_key_pem.empty()) {
    RETURN_IF_ERROR(LoadPem(origin + ": client-key-data", [&] {
      context->use_private_key(boost::asio::buffer(config.client_key_pem), ssl::context::pem);
    }));
  }
  return context;
}

TokenSource::TokenSource(std::string token, std::string token_file, const common::Clock& clock,
                         std::chrono::nanoseconds max_age)
    : file_(std::move(token_file)), clock_(clock), max_age_(max_age), token_(std::move(token)) {}

const std::string& TokenSource::Get() {
  if (file_.empty()) return token_;
  struct stat st {};
  FileId id;
  if (::stat(file_.c_str(), &st) == 0) {
    id = FileId{st.st_ino, st.st_size,
                int64_t{st.st_mtim.tv_sec} * 1'000'000'000 + st.st_mtim.tv_nsec};
  }
  const auto now = clock_.Now();
  if (reads_ > 0 && id == read_id_ && now - read_at_ < max_age_) return token_;
  auto text = ReadFile(file_);
  read_at_ = now;
  read_id_ = id;
  ++reads_;
  if (!text.ok()) {
    static common::RateLimiter limiter;
    common::WarnLimited(limiter, "discovery",
                        "cannot read the token file {}: keeping the last token", file_);
    return token_;
  }
  token_ = std::string(TrimSpace(*text));
  return token_;
}

}  // namespace aibrix::discovery
