// A fake Kubernetes API server for tests and benchmarks: plain HTTP/1.1 on 127.0.0.1 (port 0
// by default, or a given port to come back on after a "restart"), speaking the list/watch
// protocol byte for byte (protocols §6.2) for any collection path a test fills:
//
//   GET <path>?limit=N[&continue=T][&labelSelector=k=v,...]
//       LIST pages in key order: {"kind":"<Kind>List","apiVersion":...,"metadata":
//       {"resourceVersion","continue","remainingItemCount"},"items":[...]}, Content-Length
//       framed, keep-alive. Items carry no kind/apiVersion, as the real server sends them.
//   GET <path>?watch=true&resourceVersion=RV&allowWatchBookmarks=true&timeoutSeconds=T
//       200, Transfer-Encoding: chunked, one {"type","object"} line per event after RV, then
//       live ones; ended after T seconds with the last chunk. A RV older than the history
//       (Compact) gets an ERROR event with code 410 (or HTTP 410, see ExpiryAs).
//   Namespaced paths (/api/v1/namespaces/NS/pods) see the objects of NS.
//
// Faults a test can inject: chunk boundaries anywhere (SetChunking: random chunk sizes, a
// pause between chunks, events coalesced before splitting so chunks also span lines), raw
// bytes into open watches (malformed lines, a huge line produced lazily), bookmarks, abrupt
// disconnects in the middle of a chunk, clean ends, expired continue tokens, lost events, scripted
// raw responses, error statuses, and requests that are never answered (Hang).
//
// Thread safety: every method may be called from any thread. Each connection is served by
// a thread of its own (a test server: a handful of connections).
#pragma once

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "nlohmann/json.hpp"

namespace aibrix::testing {

inline constexpr char kPodsPath[] = "/api/v1/pods";
inline constexpr char kModelAdaptersPath[] = "/apis/model.aibrix.ai/v1alpha1/modeladapters";

// A realistic vLLM pod as the API server sends it (~5 KB of JSON, the shape of
// protocols/vectors/k8s/pod_sample.json): AIBrix labels, owner ReplicaSet, one container
// with ports, env, resources and probes, five conditions. `index` makes name, uid and IP
// unique.
nlohmann::json RealisticPod(int index, const std::string& model, const std::string& ns = "default",
                            bool ready = true);
// A minimal pod: name, namespace, model label, IP, phase Running, Ready as given.
nlohmann::json SimplePod(const std::string& name, const std::string& model, const std::string& ip,
                         bool ready = true, const std::string& ns = "default");
// A ModelAdapter with status.instances.
nlohmann::json ModelAdapter(const std::string& name, const std::vector<std::string>& instances,
                            const std::string& ns = "default");

struct ChunkingOptions {
  size_t max_chunk = 0;  // 0: one chunk per write as it comes; else random sizes in [1, max]
  uint64_t seed = 1;
  std::chrono::microseconds pause{0};  // between two chunks
};

class FakeKubeApi {
 public:
  // Listens on 127.0.0.1:`port` (0: any) with SO_REUSEADDR. Aborts if it cannot. With
  // `serve` false, clients connect (they wait in the listen backlog) but nothing is read or
  // answered until Serve(): state set up meanwhile is all there for the first request.
  explicit FakeKubeApi(uint16_t port = 0, bool serve = true);
  // Starts answering (a server built with `serve` false). Once.
  void Serve();
  ~FakeKubeApi();  // closes every connection and joins the threads
  FakeKubeApi(const FakeKubeApi&) = delete;
  FakeKubeApi& operator=(const FakeKubeApi&) = delete;

  uint16_t port() const { return port_; }
  std::string url() const;

  // --- State ---------------------------------------------------------------------------
  // Adds or replaces the object (key metadata.namespace/metadata.name) in collection
  // `path` (kPodsPath, kModelAdaptersPath): the server's resource version goes up by one,
  // is written into metadata.resourceVersion, and watchers get ADDED or MODIFIED. Returns
  // the new version.
  int64_t Upsert(const std::string& path, nlohmann::json object);
  // Removes the object; watchers get DELETED with its last state. False if absent.
  bool Remove(const std::string& path, const std::string& ns, const std::string& name);
  // Starts the version counter at `rv` (a restarted server keeps counting up).
  void SetResourceVersion(int64_t rv);
  int64_t resource_version() const;
  // Forgets the event history: watches from an older version are expired.
  void Compact();
  // LIST page size the server uses when the request asks for more (0: as asked).
  void SetMaxPage(int items);

  // --- Faults --------------------------------------------------------------------------
  void SetChunking(ChunkingOptions options);
  // How an expired watch is answered: an ERROR event (what the API server does) or HTTP 410.
  enum class Expiry { kErrorEvent, kHttp410 };
  void ExpiryAs(Expiry expiry);
  // A BOOKMARK at the current version to every open watch of `path`.
  void Bookmark(const std::string& path);
  // Bytes written as they are into every open watch of `path` (chunked like events).
  void SendRaw(const std::string& path, std::string bytes);
  // A line of `bytes` bytes ('x'…) followed by '\n', produced while it is written, so a
  // test can send a 1 GB line without holding it; the write stops when the peer goes away.
  void SendHugeLine(const std::string& path, uint64_t bytes);
  // Every open watch: cut off in the middle of a chunk (the connection reset), or ended
  // cleanly with the last chunk.
  void DropWatches();
  void EndWatches();
  // The next LIST request with a continue token is answered 410 Expired (once).
  void ExpireNextContinue();
  // Removes the object without telling watchers (its event lost, as if compacted away).
  bool RemoveSilently(const std::string& path, const std::string& ns, const std::string& name);
  // The next WATCH request is answered with exactly these bytes (status line, headers and
  // body as given), then the connection is closed.
  void ScriptNextWatch(std::string raw_response);
  // The next `count` requests are answered `status` with a Status body.
  void FailNext(int status, int count = 1);
  // While true, requests are read and never answered (connections stay open).
  void Hang(bool hang);

  // --- Observations --------------------------------------------------------------------
  // Every request target received, in order.
  std::vector<std::string> Requests() const;
  // Watches currently streaming on `path`.
  int OpenWatches(const std::string& path) const;
  // Bytes of huge lines written so far (how much of it the peer took before going away).
  uint64_t huge_bytes_sent() const { return huge_bytes_sent_.load(); }
  // The Authorization header of the last request ("" when it had none).
  std::string LastAuthorization() const;

 private:
  struct Entry {
    enum class Kind { kEvent, kRaw, kHuge, kBookmark };
    Kind kind;
    std::string path;
    std::string ns;
    int64_t rv = 0;
    std::string bytes;      // the line (with '\n') or raw bytes
    uint64_t huge = 0;      // kHuge: length of the line
    nlohmann::json labels;  // kEvent: the object's labels, for label selection
  };
  struct Stored {
    nlohmann::json object;
    std::string text;  // as a LIST item (rendered once)
  };
  struct Collection {
    std::map<std::string, Stored> objects;  // by ns/name
  };
  struct Connection;

  void AcceptLoop();
  void Serve(std::shared_ptr<Connection> connection);
  void ServeRequests(Connection& connection);
  // Answers one request; false when the connection must close.
  bool Handle(Connection& connection, const std::string& target);
  bool ServeList(Connection& connection, const std::string& path, const std::string& ns,
                 const std::map<std::string, std::string>& query);
  bool ServeWatch(Connection& connection, const std::string& path, const std::string& ns,
                  const std::map<std::string, std::string>& query);
  bool SendStatus(Connection& connection, int status, const std::string& reason,
                  const std::string& message);
  int64_t AppendLocked(Entry entry);

  uint16_t port_ = 0;
  int listen_fd_ = -1;
  std::thread accept_thread_;
  std::atomic<bool> stopping_{false};
  std::atomic<uint64_t> huge_bytes_sent_{0};

  mutable std::mutex mu_;
  std::condition_variable cv_;
  std::vector<std::shared_ptr<Connection>> connections_;
  std::vector<std::thread> threads_;
  std::map<std::string, Collection> collections_;
  std::vector<Entry> history_;
  int64_t rv_ = 1000;
  int64_t compacted_rv_ = 0;
  int max_page_ = 0;
  ChunkingOptions chunking_;
  Expiry expiry_ = Expiry::kErrorEvent;
  uint64_t drop_generation_ = 0;
  uint64_t end_generation_ = 0;
  bool expire_next_continue_ = false;
  std::string scripted_watch_;
  int fail_status_ = 0;
  int fail_count_ = 0;
  bool hang_ = false;
  std::vector<std::string> requests_;
  std::string last_authorization_;
  std::map<std::string, int> open_watches_;
};

}  // namespace aibrix::testing
