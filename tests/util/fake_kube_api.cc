#include "tests/util/fake_kube_api.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <random>

#include "fmt/format.h"

namespace aibrix::testing {

using nlohmann::json;
using namespace std::chrono_literals;

namespace {

[[noreturn]] void Die(const std::string& what) {
  std::fprintf(stderr, "FakeKubeApi: %s: %s\n", what.c_str(), std::strerror(errno));
  std::abort();
}

// The collection a request path names, and the namespace it is scoped to ("" = all).
std::pair<std::string, std::string> SplitNamespace(const std::string& path) {
  const std::string marker = "/namespaces/";
  const size_t at = path.find(marker);
  if (at == std::string::npos) return {path, ""};
  const size_t ns_start = at + marker.size();
  const size_t ns_end = path.find('/', ns_start);
  if (ns_end == std::string::npos) return {path, ""};
  return {path.substr(0, at) + path.substr(ns_end), path.substr(ns_start, ns_end - ns_start)};
}

bool IsPods(const std::string& path) {
  return path.size() >= 5 && path.compare(path.size() - 5, 5, "/pods") == 0;
}
std::string KindOf(const std::string& path) { return IsPods(path) ? "Pod" : "ModelAdapter"; }
std::string ApiVersionOf(const std::string& path) {
  return IsPods(path) ? "v1" : "model.aibrix.ai/v1alpha1";
}

std::string Unescape(const std::string& text) {
  std::string out;
  for (size_t i = 0; i < text.size(); ++i) {
    if (text[i] == '%' && i + 2 < text.size()) {
      out.push_back(static_cast<char>(std::stoi(text.substr(i + 1, 2), nullptr, 16)));
      i += 2;
    } else if (text[i] == '+') {
      out.push_back(' ');
    } else {
      out.push_back(text[i]);
    }
  }
  return out;
}

std::map<std::string, std::string> ParseQuery(const std::string& query) {
  std::map<std::string, std::string> out;
  size_t start = 0;
  while (start < query.size()) {
    size_t end = query.find('&', start);
    if (end == std::string::npos) end = query.size();
    const std::string pair = query.substr(start, end - start);
    const size_t eq = pair.find('=');
    if (eq != std::string::npos) out[pair.substr(0, eq)] = Unescape(pair.substr(eq + 1));
    start = end + 1;
  }
  return out;
}

// Equality terms of a label selector ("k=v,k2==v2") against an object's labels; other
// forms are ignored.
bool MatchesSelector(const json& labels, const std::string& selector) {
  size_t start = 0;
  while (start < selector.size()) {
    size_t end = selector.find(',', start);
    if (end == std::string::npos) end = selector.size();
    std::string term = selector.substr(start, end - start);
    start = end + 1;
    const size_t eq = term.find('=');
    if (eq == std::string::npos || (eq > 0 && term[eq - 1] == '!')) continue;
    const std::string key = term.substr(0, eq);
    const std::string value = term.substr(term[eq + 1] == '=' ? eq + 2 : eq + 1);
    if (!labels.is_object() || !labels.contains(key) || labels[key] != value) return false;
  }
  return true;
}

json LabelsOf(const json& object) { return object["metadata"].value("labels", json::object()); }

std::string KeyOf(const json& object) {
  const json& meta = object.at("metadata");
  return meta.value("namespace", "") + "/" + meta.value("name", "");
}

}  // namespace

struct FakeKubeApi::Connection {
  explicit Connection(int fd) : fd(fd) {}
  ~Connection() { ::close(fd); }
  // Sends everything; false once the peer is gone.
  bool Send(std::string_view data) {
    while (!data.empty()) {
      const ssize_t n = ::send(fd, data.data(), data.size(), MSG_NOSIGNAL);
      if (n <= 0) return false;
      data.remove_prefix(static_cast<size_t>(n));
    }
    return true;
  }
  bool SendChunk(std::string_view data) {
    if (data.empty()) return true;
    return Send(fmt::format("{:x}\r\n", data.size())) && Send(data) && Send("\r\n");
  }
  // True once the peer has closed or reset the connection (no request bytes are expected
  // while a watch streams).
  bool PeerClosed() {
    char byte;
    const ssize_t n = ::recv(fd, &byte, 1, MSG_PEEK | MSG_DONTWAIT);
    return n == 0 || (n < 0 && errno != EAGAIN && errno != EWOULDBLOCK);
  }
  // Resets the connection (RST) instead of closing it cleanly.
  void Reset() {
    linger option{1, 0};
    ::setsockopt(fd, SOL_SOCKET, SO_LINGER, &option, sizeof(option));
    ::shutdown(fd, SHUT_RDWR);
  }
  const int fd;
  std::string input;  // bytes read past the last request head
};

json SimplePod(const std::string& name, const std::string& model, const std::string& ip, bool ready,
               const std::string& ns) {
  return {{"metadata",
           {{"name", name},
            {"namespace", ns},
            {"uid", "uid-" + ns + "-" + name},
            {"labels", {{"model.aibrix.ai/name", model}}}}},
          {"spec", {{"nodeName", "node-1"}, {"containers", {{{"name", "vllm"}}}}}},
          {"status",
           {{"phase", "Running"},
            {"podIP", ip},
            {"conditions", {{{"type", "Ready"}, {"status", ready ? "True" : "False"}}}}}}};
}

json ModelAdapter(const std::string& name, const std::vector<std::string>& instances,
                  const std::string& ns) {
  return {{"metadata", {{"name", name}, {"namespace", ns}, {"uid", "uid-adapter-" + name}}},
          {"spec",
           {{"baseModel", "llama"},
            {"podSelector", {{"matchLabels", {{"model.aibrix.ai/name", "llama"}}}}},
            {"artifactURL", "huggingface://yard1/llama-2-7b-sql-lora-test"}}},
          {"status", {{"phase", "Running"}, {"instances", instances}}}};
}

json RealisticPod(int index, const std::string& model, const std::string& ns, bool ready) {
  const std::string hash =
      fmt::format("{:010x}", 0x7d9c6b5f8dULL + static_cast<uint64_t>(index / 64));
  const std::string name = fmt::format("{}-{}-{:05x}", model, hash, index);
  const std::string ip =
      fmt::format("10.{}.{}.{}", 100 + index / 65536, (index / 256) % 256, index % 256);
  const std::string time = "2026-09-01T10:00:00Z";
  const json condition_true = {
      {"status", "True"}, {"lastProbeTime", nullptr}, {"lastTransitionTime", time}};
  auto condition = [&](const std::string& type, bool value) {
    json c = condition_true;
    c["type"] = type;
    c["status"] = value ? "True" : "False";
    return c;
  };
  json env = json::array();
  for (auto [k, v] :
       std::vector<std::pair<std::string, std::string>>{{"PYTHONHASHSEED", "0"},
                                                        {"VLLM_USE_V1", "1"},
                                                        {"HF_HOME", "/models/cache"},
                                                        {"MODEL_NAME", model},
                                                        {"NCCL_DEBUG", "WARN"},
                                                        {"VLLM_LOGGING_LEVEL", "INFO"}}) {
    env.push_back({{"name", k}, {"value", v}});
  }
  env.push_back({{"name", "HF_TOKEN"},
                 {"valueFrom", {{"secretKeyRef", {{"name", "hf-token"}, {"key", "token"}}}}}});
  return {
      {"metadata",
       {{"name", name},
        {"generateName", model + "-" + hash + "-"},
        {"namespace", ns},
        {"uid", fmt::format("6f1c2a0e-3b4d-4c1e-9a7f-{:012x}", index)},
        {"creationTimestamp", time},
        {"labels",
         {{"app", model},
          {"app.kubernetes.io/name", model},
          {"model.aibrix.ai/name", model},
          {"model.aibrix.ai/port", "8000"},
          {"model.aibrix.ai/metric-port", "8000"},
          {"model.aibrix.ai/engine", "vllm"},
          {"adapter.model.aibrix.ai/enabled", "true"},
          {"pod-template-hash", hash}}},
        {"annotations",
         {{"prometheus.io/scrape", "true"},
          {"prometheus.io/port", "8000"},
          {"prometheus.io/path", "/metrics"},
          {"kubectl.kubernetes.io/restartedAt", time}}},
        {"ownerReferences",
         {{{"apiVersion", "apps/v1"},
           {"kind", "ReplicaSet"},
           {"name", model + "-" + hash},
           {"uid", "0b7c1d2e-4f5a-4b6c-8d9e-0f1a2b3c4d5e"},
           {"controller", true},
           {"blockOwnerDeletion", true}}}},
        {"managedFields",
         {{{"manager", "kube-controller-manager"},
           {"operation", "Update"},
           {"apiVersion", "v1"},
           {"time", time},
           {"fieldsType", "FieldsV1"},
           {"fieldsV1",
            {{"f:metadata",
              {{"f:generateName", json::object()},
               {"f:labels", {{".", json::object()}, {"f:app", json::object()}}},
               {"f:ownerReferences", {{".", json::object()}}}}}}}}}}}},
      {"spec",
       {{"volumes",
         {{{"name", "model-cache"}, {"persistentVolumeClaim", {{"claimName", "model-cache"}}}},
          {{"name", "kube-api-access"},
           {"projected",
            {{"sources",
              {{{"serviceAccountToken", {{"expirationSeconds", 3607}, {"path", "token"}}}},
               {{"configMap",
                 {{"name", "kube-root-ca.crt"},
                  {"items", {{{"key", "ca.crt"}, {"path", "ca.crt"}}}}}}}}},
             {"defaultMode", 420}}}}}},
        {"containers",
         {{{"name", "vllm-openai"},
           {"image", "vllm/vllm-openai:v0.11.0"},
           {"command", {"python3", "-m", "vllm.entrypoints.openai.api_server"}},
           {"args",
            {"--host", "0.0.0.0", "--port", "8000", "--model", "meta-llama/Llama-3.1-8B-Instruct",
             "--served-model-name", model, "--enable-prefix-caching", "--kv-events-config",
             R"({"enable_kv_cache_events":true,"publisher":"zmq","endpoint":"tcp://*:5557","replay_endpoint":"tcp://*:5558","buffer_steps":10000,"topic":""})"}},
           {"ports",
            {{{"name", "http"}, {"containerPort", 8000}, {"protocol", "TCP"}},
             {{"name", "kv-events"}, {"containerPort", 5557}, {"protocol", "TCP"}},
             {{"name", "kv-replay"}, {"containerPort", 5558}, {"protocol", "TCP"}}}},
           {"env", env},
           {"resources",
            {{"limits", {{"nvidia.com/gpu", "1"}, {"memory", "64Gi"}}},
             {"requests", {{"nvidia.com/gpu", "1"}, {"cpu", "8"}, {"memory", "64Gi"}}}}},
           {"volumeMounts",
            {{{"name", "model-cache"}, {"mountPath", "/models/cache"}},
             {{"name", "kube-api-access"},
              {"readOnly", true},
              {"mountPath", "/var/run/secrets/kubernetes.io/serviceaccount"}}}},
           {"readinessProbe",
            {{"httpGet", {{"path", "/health"}, {"port", 8000}, {"scheme", "HTTP"}}},
             {"periodSeconds", 5},
             {"timeoutSeconds", 1},
             {"successThreshold", 1},
             {"failureThreshold", 3}}},
           {"terminationMessagePath", "/dev/termination-log"},
           {"terminationMessagePolicy", "File"},
           {"imagePullPolicy", "IfNotPresent"}}}},
        {"restartPolicy", "Always"},
        {"terminationGracePeriodSeconds", 30},
        {"dnsPolicy", "ClusterFirst"},
        {"serviceAccountName", "default"},
        {"nodeName", fmt::format("gpu-node-{}", index % 512)},
        {"schedulerName", "default-scheduler"},
        {"tolerations",
         {{{"key", "nvidia.com/gpu"}, {"operator", "Exists"}, {"effect", "NoSchedule"}},
          {{"key", "node.kubernetes.io/not-ready"},
           {"operator", "Exists"},
           {"effect", "NoExecute"},
           {"tolerationSeconds", 300}}}}}},
      {"status",
       {{"phase", "Running"},
        {"conditions",
         {condition("PodReadyToStartContainers", true), condition("Initialized", true),
          condition("Ready", ready), condition("ContainersReady", ready),
          condition("PodScheduled", true)}},
        {"hostIP", "10.128.0.7"},
        {"hostIPs", {{{"ip", "10.128.0.7"}}}},
        {"qosClass", "Burstable"},
        {"startTime", time},
        {"podIP", ip},
        {"podIPs", {{{"ip", ip}}}},
        {"containerStatuses",
         {{{"name", "vllm-openai"},
           {"ready", ready},
           {"restartCount", 0},
           {"started", true},
           {"image", "vllm/vllm-openai:v0.11.0"},
           {"imageID",
            "docker.io/vllm/vllm-openai@sha256:"
            "abababababababababababababababababababababababababababababababab"},
           {"containerID",
            "containerd://cdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcd"},
           {"state", {{"running", {{"startedAt", time}}}}}}}}}}};
}

FakeKubeApi::FakeKubeApi(uint16_t port, bool serve) {
  listen_fd_ = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (listen_fd_ < 0) Die("socket");
  const int one = 1;
  ::setsockopt(listen_fd_, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  addr.sin_port = htons(port);
  if (::bind(listen_fd_, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) != 0) Die("bind");
  if (::listen(listen_fd_, 64) != 0) Die("listen");
  socklen_t len = sizeof(addr);
  ::getsockname(listen_fd_, reinterpret_cast<sockaddr*>(&addr), &len);
  port_ = ntohs(addr.sin_port);
  if (serve) Serve();
}

void FakeKubeApi::Serve() {
  accept_thread_ = std::thread([this] { AcceptLoop(); });
}

FakeKubeApi::~FakeKubeApi() {
  stopping_ = true;
  ::shutdown(listen_fd_, SHUT_RDWR);
  if (accept_thread_.joinable()) accept_thread_.join();
  ::close(listen_fd_);
  std::vector<std::thread> threads;
  {
    std::lock_guard lock(mu_);
    for (const auto& connection : connections_) ::shutdown(connection->fd, SHUT_RDWR);
    threads.swap(threads_);
  }
  cv_.notify_all();
  for (std::thread& thread : threads) thread.join();
}

std::string FakeKubeApi::url() const { return fmt::format("http://127.0.0.1:{}", port_); }

void FakeKubeApi::AcceptLoop() {
  while (!stopping_) {
    const int fd = ::accept4(listen_fd_, nullptr, nullptr, SOCK_CLOEXEC);
    if (fd < 0) {
      if (stopping_) return;
      continue;
    }
    const int one = 1;
    ::setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    auto connection = std::make_shared<Connection>(fd);
    std::lock_guard lock(mu_);
    if (stopping_) return;
    connections_.push_back(connection);
    threads_.emplace_back([this, connection] { Serve(connection); });
  }
}

void FakeKubeApi::Serve(std::shared_ptr<Connection> connection) {
  ServeRequests(*connection);
  ::shutdown(connection->fd, SHUT_RDWR);  // the descriptor itself is closed with the server
}

void FakeKubeApi::ServeRequests(Connection& connection_ref) {
  Connection* connection = &connection_ref;
  char buffer[4096];
  while (!stopping_) {
    size_t end;
    while ((end = connection->input.find("\r\n\r\n")) == std::string::npos) {
      const ssize_t n = ::recv(connection->fd, buffer, sizeof(buffer), 0);
      if (n <= 0) return;
      connection->input.append(buffer, static_cast<size_t>(n));
    }
    const std::string head = connection->input.substr(0, end);
    connection->input.erase(0, end + 4);
    const size_t first_space = head.find(' ');
    const size_t second_space = head.find(' ', first_space + 1);
    if (first_space == std::string::npos || second_space == std::string::npos) return;
    const std::string target = head.substr(first_space + 1, second_space - first_space - 1);
    std::string authorization;
    const size_t auth = head.find("\r\nAuthorization: ");
    if (auth != std::string::npos) {
      const size_t value = auth + 17;
      authorization = head.substr(value, head.find("\r\n", value) - value);
    }
    {
      std::unique_lock lock(mu_);
      requests_.push_back(target);
      last_authorization_ = authorization;
      if (hang_) {
        cv_.wait(lock, [&] { return stopping_.load(); });
        return;
      }
    }
    if (!Handle(*connection, target)) return;
  }
}

bool FakeKubeApi::Handle(Connection& connection, const std::string& target) {
  const size_t question = target.find('?');
  const auto [path, ns] = SplitNamespace(target.substr(0, question));
  const auto query = ParseQuery(question == std::string::npos ? "" : target.substr(question + 1));
  int fail = 0;
  {
    std::lock_guard lock(mu_);
    if (fail_count_ > 0) {
      --fail_count_;
      fail = fail_status_;
    } else if (!collections_.contains(path) && path != kPodsPath && path != kModelAdaptersPath) {
      fail = 404;
    }
  }
  if (fail == 404) {
    return SendStatus(connection, 404, "NotFound",
                      "the server could not find the requested resource");
  }
  if (fail != 0) return SendStatus(connection, fail, "InternalError", "injected failure");
  auto watch = query.find("watch");
  if (watch != query.end() && (watch->second == "true" || watch->second == "1")) {
    return ServeWatch(connection, path, ns, query);
  }
  return ServeList(connection, path, ns, query);
}

bool FakeKubeApi::SendStatus(Connection& connection, int status, const std::string& reason,
                             const std::string& message) {
  const std::string body = json{
      {"kind", "Status"},    {"apiVersion", "v1"}, {"metadata", json::object()},
      {"status", "Failure"}, {"message", message}, {"reason", reason},
      {"code", status}}.dump();
  return connection.Send(fmt::format(
      "HTTP/1.1 {} {}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{}", status,
      reason, body.size(), body));
}

bool FakeKubeApi::ServeList(Connection& connection, const std::string& path, const std::string& ns,
                            const std::map<std::string, std::string>& query) {
  std::string body;
  {
    std::unique_lock lock(mu_);
    int64_t list_rv = rv_;
    size_t offset = 0;
    if (auto it = query.find("continue"); it != query.end() && !it->second.empty()) {
      long long rv = 0;
      unsigned long long at = 0;
      const bool expire = expire_next_continue_;
      expire_next_continue_ = false;
      if (std::sscanf(it->second.c_str(), "c%lld-%llu", &rv, &at) != 2 || expire) {
        lock.unlock();
        return SendStatus(connection, 410, "Expired",
                          "The provided continue parameter is too old to display a consistent "
                          "list result. You can start a new list without the continue parameter.");
      }
      list_rv = rv;
      offset = at;
    }
    size_t limit = SIZE_MAX;
    if (auto it = query.find("limit"); it != query.end()) limit = std::stoul(it->second);
    if (max_page_ > 0) limit = std::min<size_t>(limit, static_cast<size_t>(max_page_));
    const std::string selector = query.contains("labelSelector") ? query.at("labelSelector") : "";
    std::vector<const Stored*> matching;
    for (const auto& [key, stored] : collections_[path].objects) {
      if (!ns.empty() && stored.object["metadata"].value("namespace", "") != ns) continue;
      if (!selector.empty() && !MatchesSelector(LabelsOf(stored.object), selector)) continue;
      matching.push_back(&stored);
    }
    body = fmt::format(R"({{"kind":"{}List","apiVersion":"{}","metadata":{{"resourceVersion":"{}")",
                       KindOf(path), ApiVersionOf(path), list_rv);
    const size_t end = std::min(matching.size(), offset + std::min(limit, matching.size()));
    if (end < matching.size()) {
      body += fmt::format(R"(,"continue":"c{}-{}","remainingItemCount":{})", list_rv, end,
                          matching.size() - end);
    }
    body += R"(},"items":[)";
    for (size_t i = offset; i < end; ++i) {
      if (i > offset) body += ',';
      body += matching[i]->text;
    }
    body += "]}";
  }
  return connection.Send(fmt::format(
             "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
             body.size())) &&
         connection.Send(body);
}

bool FakeKubeApi::ServeWatch(Connection& connection, const std::string& path, const std::string& ns,
                             const std::map<std::string, std::string>& query) {
  const int64_t from = query.contains("resourceVersion") && !query.at("resourceVersion").empty()
                           ? std::stoll(query.at("resourceVersion"))
                           : 0;
  const int timeout = query.contains("timeoutSeconds") ? std::stoi(query.at("timeoutSeconds")) : 60;
  const std::string selector = query.contains("labelSelector") ? query.at("labelSelector") : "";
  std::unique_lock lock(mu_);
  if (!scripted_watch_.empty()) {
    const std::string raw = std::move(scripted_watch_);
    scripted_watch_.clear();
    lock.unlock();
    connection.Send(raw);
    return false;
  }
  const bool expired = from < compacted_rv_;
  if (expired && expiry_ == Expiry::kHttp410) {
    lock.unlock();
    return SendStatus(connection, 410, "Expired",
                      fmt::format("too old resource version: {} ({})", from, compacted_rv_));
  }
  const std::string head =
      "HTTP/1.1 200 OK\r\nCache-Control: no-cache, private\r\nContent-Type: "
      "application/json\r\nTransfer-Encoding: chunked\r\n\r\n";
  if (expired) {
    const std::string line =
        json{{"type", "ERROR"},
             {"object",
              {{"kind", "Status"},
               {"apiVersion", "v1"},
               {"metadata", json::object()},
               {"status", "Failure"},
               {"message", fmt::format("too old resource version: {} ({})", from, compacted_rv_)},
               {"reason", "Expired"},
               {"code", 410}}}}
            .dump() +
        "\n";
    lock.unlock();
    return connection.Send(head) && connection.SendChunk(line) && connection.Send("0\r\n\r\n");
  }
  // Events after `from`, then live entries from here on.
  size_t cursor = 0;
  while (cursor < history_.size() && history_[cursor].rv <= from) ++cursor;
  const size_t live_from = history_.size();
  const uint64_t drop = drop_generation_;
  const uint64_t end = end_generation_;
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(timeout);
  std::mt19937_64 rng(chunking_.seed);
  ++open_watches_[path];
  lock.unlock();
  bool ok = connection.Send(head);
  lock.lock();
  while (ok && !stopping_) {
    std::string out;
    std::vector<uint64_t> huge;
    for (; cursor < history_.size(); ++cursor) {
      const Entry& entry = history_[cursor];
      if (entry.path != path) continue;
      if (entry.kind != Entry::Kind::kEvent && cursor < live_from) continue;
      if (entry.kind == Entry::Kind::kEvent &&
          ((!ns.empty() && entry.ns != ns) ||
           (!selector.empty() && !MatchesSelector(entry.labels, selector)))) {
        continue;
      }
      if (entry.kind == Entry::Kind::kHuge) {
        huge.push_back(entry.huge);
        continue;
      }
      out += entry.bytes;
    }
    const ChunkingOptions chunking = chunking_;
    if (drop_generation_ != drop) {
      lock.unlock();
      // A chunk announced longer than what follows, then a reset.
      connection.Send("100\r\n{\"type\":\"MODIFIED\",\"obj");
      connection.Reset();
      lock.lock();
      ok = false;
      break;
    }
    lock.unlock();
    if (!out.empty()) {
      if (chunking.max_chunk == 0) {
        ok = connection.SendChunk(out);
      } else {
        std::string_view rest = out;
        while (ok && !rest.empty()) {
          const size_t size = std::min<size_t>(
              rest.size(), std::uniform_int_distribution<size_t>(1, chunking.max_chunk)(rng));
          ok = connection.SendChunk(rest.substr(0, size));
          rest.remove_prefix(size);
          if (chunking.pause.count() > 0) std::this_thread::sleep_for(chunking.pause);
        }
      }
    }
    for (uint64_t bytes : huge) {
      const std::string piece(64 << 10, 'x');
      for (uint64_t sent = 0; ok && sent < bytes; sent += piece.size()) {
        const size_t size = static_cast<size_t>(std::min<uint64_t>(piece.size(), bytes - sent));
        ok = connection.SendChunk(std::string_view(piece).substr(0, size));
        if (ok) huge_bytes_sent_ += size;
      }
      if (ok) ok = connection.SendChunk("\n");
    }
    lock.lock();
    if (!ok) break;
    if (end_generation_ != end || std::chrono::steady_clock::now() >= deadline) {
      lock.unlock();
      ok = connection.Send("0\r\n\r\n");
      lock.lock();
      break;
    }
    // Woken by news, or every 20 ms to notice a peer that went away.
    cv_.wait_until(lock, std::min(deadline, std::chrono::steady_clock::now() + 20ms), [&] {
      return stopping_ || cursor < history_.size() || drop_generation_ != drop ||
             end_generation_ != end;
    });
    if (connection.PeerClosed()) {
      ok = false;
      break;
    }
  }
  --open_watches_[path];
  return ok && !stopping_;
}

int64_t FakeKubeApi::AppendLocked(Entry entry) {
  history_.push_back(std::move(entry));
  cv_.notify_all();
  return rv_;
}

int64_t FakeKubeApi::Upsert(const std::string& path, json object) {
  std::lock_guard lock(mu_);
  const int64_t rv = ++rv_;
  object["metadata"]["resourceVersion"] = std::to_string(rv);
  const std::string key = KeyOf(object);
  auto& objects = collections_[path].objects;
  const bool existed = objects.contains(key);
  objects[key] = Stored{object, object.dump()};
  json event_object = object;
  event_object["kind"] = KindOf(path);
  event_object["apiVersion"] = ApiVersionOf(path);
  Entry entry{
      Entry::Kind::kEvent,
      path,
      object["metadata"].value("namespace", ""),
      rv,
      json{{"type", existed ? "MODIFIED" : "ADDED"}, {"object", event_object}}.dump() + "\n",
      0,
      LabelsOf(object)};
  AppendLocked(std::move(entry));
  return rv;
}

bool FakeKubeApi::Remove(const std::string& path, const std::string& ns, const std::string& name) {
  std::lock_guard lock(mu_);
  auto& objects = collections_[path].objects;
  auto it = objects.find(ns + "/" + name);
  if (it == objects.end()) return false;
  json object = std::move(it->second.object);
  objects.erase(it);
  const int64_t rv = ++rv_;
  object["metadata"]["resourceVersion"] = std::to_string(rv);
  json event_object = object;
  event_object["kind"] = KindOf(path);
  event_object["apiVersion"] = ApiVersionOf(path);
  AppendLocked(Entry{Entry::Kind::kEvent, path, ns, rv,
                     json{{"type", "DELETED"}, {"object", event_object}}.dump() + "\n", 0,
                     LabelsOf(object)});
  return true;
}

void FakeKubeApi::SetResourceVersion(int64_t rv) {
  std::lock_guard lock(mu_);
  rv_ = rv;
}

int64_t FakeKubeApi::resource_version() const {
  std::lock_guard lock(mu_);
  return rv_;
}

void FakeKubeApi::Compact() {
  std::lock_guard lock(mu_);
  compacted_rv_ = rv_;
}

void FakeKubeApi::SetMaxPage(int items) {
  std::lock_guard lock(mu_);
  max_page_ = items;
}

void FakeKubeApi::SetChunking(ChunkingOptions options) {
  std::lock_guard lock(mu_);
  chunking_ = options;
}

void FakeKubeApi::ExpiryAs(Expiry expiry) {
  std::lock_guard lock(mu_);
  expiry_ = expiry;
}

void FakeKubeApi::Bookmark(const std::string& path) {
  std::lock_guard lock(mu_);
  const std::string line =
      json{{"type", "BOOKMARK"},
           {"object",
            {{"kind", KindOf(path)},
             {"apiVersion", ApiVersionOf(path)},
             {"metadata",
              {{"resourceVersion", std::to_string(rv_)}, {"creationTimestamp", nullptr}}}}}}
          .dump() +
      "\n";
  AppendLocked(Entry{Entry::Kind::kBookmark, path, "", rv_, line, 0, json()});
}

void FakeKubeApi::SendRaw(const std::string& path, std::string bytes) {
  std::lock_guard lock(mu_);
  AppendLocked(Entry{Entry::Kind::kRaw, path, "", rv_, std::move(bytes), 0, json()});
}

void FakeKubeApi::SendHugeLine(const std::string& path, uint64_t bytes) {
  std::lock_guard lock(mu_);
  AppendLocked(Entry{Entry::Kind::kHuge, path, "", rv_, "", bytes, json()});
}

void FakeKubeApi::DropWatches() {
  std::lock_guard lock(mu_);
  ++drop_generation_;
  cv_.notify_all();
}

void FakeKubeApi::EndWatches() {
  std::lock_guard lock(mu_);
  ++end_generation_;
  cv_.notify_all();
}

void FakeKubeApi::ExpireNextContinue() {
  std::lock_guard lock(mu_);
  expire_next_continue_ = true;
}

bool FakeKubeApi::RemoveSilently(const std::string& path, const std::string& ns,
                                 const std::string& name) {
  std::lock_guard lock(mu_);
  ++rv_;
  return collections_[path].objects.erase(ns + "/" + name) > 0;
}

void FakeKubeApi::ScriptNextWatch(std::string raw_response) {
  std::lock_guard lock(mu_);
  scripted_watch_ = std::move(raw_response);
}

void FakeKubeApi::FailNext(int status, int count) {
  std::lock_guard lock(mu_);
  fail_status_ = status;
  fail_count_ = count;
}

void FakeKubeApi::Hang(bool hang) {
  std::lock_guard lock(mu_);
  hang_ = hang;
}

std::vector<std::string> FakeKubeApi::Requests() const {
  std::lock_guard lock(mu_);
  return requests_;
}

int FakeKubeApi::OpenWatches(const std::string& path) const {
  std::lock_guard lock(mu_);
  auto it = open_watches_.find(path);
  return it == open_watches_.end() ? 0 : it->second;
}

std::string FakeKubeApi::LastAuthorization() const {
  std::lock_guard lock(mu_);
  return last_authorization_;
}

}  // namespace aibrix::testing
