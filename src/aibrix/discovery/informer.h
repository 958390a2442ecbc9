// Informer: keeps a handler in step with one Kubernetes resource through LIST and WATCH
// (protocols §6.2), as client-go's reflector does:
//
//   LIST  GET <collection>?limit=N[&continue=T][&labelSelector=S], page after page; the
//         objects of all pages are handed over at once (OnList) with the keys the informer
//         held that the new list no longer has (deleted while we were not watching).
//   WATCH GET <collection>?watch=true&resourceVersion=RV&allowWatchBookmarks=true
//         &timeoutSeconds=T (T drawn from [t, 2t)), read as newline-delimited JSON split at
//         any byte; the events of each received chunk are handed over together (OnEvents);
//         bookmarks and events advance RV.
//   - The server ending the watch (its timeout): watch again from RV.
//   - A dropped connection, a timeout, an answer other than 200, an ERROR event other than
//     410, a line over the cap (cut off): counted, then watch again from RV after a jittered
//     exponential backoff (reset after a success).
//   - 410 Gone (as the HTTP status or an ERROR event with code 410, or reason Expired):
//     LIST again and reconcile. A LIST page that fails (expired continue token, bad body,
//     over the cap) restarts the LIST after the backoff.
//   - Bad lines (malformed JSON, unknown event types, objects of another kind, missing
//     fields) are skipped and counted; the watch goes on.
// A 404 on the LIST of a resource whose API is not installed (no ModelAdapter CRD) counts
// as an empty list (the informer is synced, with nothing) and is retried after the backoff.
//
// Thread safety: every method and every handler call runs on the thread of the io_context
// given at construction (the discovery thread), except synced(), which any thread may call.
#pragma once

#include <atomic>
#include <boost/asio/io_context.hpp>
#include <boost/asio/steady_timer.hpp>
#include <chrono>
#include <cstdint>
#include <memory>
#include <random>
#include <string>
#include <vector>

#include "absl/container/flat_hash_set.h"
#include "aibrix/discovery/backoff.h"
#include "aibrix/discovery/discovery_metrics.h"
#include "aibrix/discovery/k8s_decoder.h"
#include "aibrix/discovery/k8s_objects.h"
#include "aibrix/discovery/kube_client.h"
#include "aibrix/discovery/line_assembler.h"

namespace aibrix::discovery {

struct InformerOptions {
  Resource resource = Resource::kPods;
  std::string ns;              // "" = all namespaces
  std::string label_selector;  // "" = every object
  int page_size = 500;         // LIST limit
  // timeoutSeconds of a watch: drawn from [watch_timeout, 2 * watch_timeout).
  std::chrono::seconds watch_timeout{300};
  size_t max_line_bytes = 16 << 20;  // one watch event
  size_t max_page_bytes = 64 << 20;  // one LIST page
  std::chrono::milliseconds backoff_initial{500};
  std::chrono::milliseconds backoff_max{30000};
  DecodeOptions decode;
};

// Receives the informer's view of the resource, on the discovery thread.
class InformerHandler {
 public:
  virtual ~InformerHandler() = default;
  // After every complete LIST: `objects` is the whole current state; `deleted` are the
  // keys ("namespace/name") held before that are not in it.
  virtual void OnList(Resource resource, std::vector<K8sObject> objects,
                      std::vector<std::string> deleted) = 0;
  // ADDED, MODIFIED and DELETED events, in arrival order (never empty).
  virtual void OnEvents(Resource resource, std::vector<WatchEvent> events) = 0;
};

class Informer {
 public:
  // `client`, `handler`, `metrics` and `io` must outlive the informer.
  Informer(boost::asio::io_context& io, KubeClient& client, InformerOptions options,
           InformerHandler& handler, ResourceMetrics& metrics);
  ~Informer();
  Informer(const Informer&) = delete;
  Informer& operator=(const Informer&) = delete;

  // Starts the first LIST. Discovery thread.
  void Start();
  // Aborts the request in flight and the pending retry; nothing is called afterwards.
  // Discovery thread. Idempotent.
  void Stop();
  // True once the first LIST was handed over (stays true).
  bool synced() const { return synced_.load(std::memory_order_acquire); }

 private:
  class Observer;
  enum class Phase { kIdle, kListing, kWatching };

  void StartList();
  void RequestPage();
  void StartWatch();
  // After the backoff: the LIST again from its first page, or the WATCH from RV.
  void RetryLater(Phase phase);
  // Abandons the call in flight (its callbacks are ignored from now on).
  void AbortCall();
  void Count(ErrorReason reason, std::string_view detail);

  // Observer callbacks for the call of generation `generation`.
  void OnHead(int status);
  void OnBody(std::string_view data);
  void OnEnd(http::ClientError error, std::string_view detail);
  void OnListPageDone();
  // Hands the listed objects over (synced from then on); then watches when `start_watch`.
  void FinishList(bool start_watch);
  void OnWatchEnded(http::ClientError error, std::string_view detail);
  // One watch line; false stops reading the stream (an ERROR event).
  bool OnWatchLine(std::string_view line, std::vector<WatchEvent>& batch);
  // A non-200 answer, with its (capped) body read.
  void OnErrorAnswer();

  // Constant after construction.
  boost::asio::io_context& io_;
  KubeClient& client_;
  const InformerOptions options_;
  InformerHandler& handler_;
  ResourceMetrics& metrics_;
  const std::string path_;

  // Discovery thread.
  boost::asio::steady_timer retry_timer_;
  std::mt19937_64 rng_;
  Backoff backoff_;
  K8sDecoder decoder_;
  LineAssembler lines_;
  uint64_t generation_ = 0;  // of the call in flight; bumped to abandon it
  std::shared_ptr<http::ClientCall> call_;
  Phase phase_ = Phase::kIdle;
  bool stopped_ = false;
  int status_ = 0;    // HTTP status of the call in flight (0 before its head)
  std::string body_;  // a LIST page, or the body of an error answer
  std::string continue_token_;
  std::string list_version_;
  std::vector<K8sObject> listed_;
  std::string resource_version_;
  absl::flat_hash_set<std::string> keys_;  // objects held, "namespace/name"
  std::chrono::steady_clock::time_point watch_started_{};
  bool watch_delivered_ = false;  // the watch in flight brought an event or bookmark
  bool relist_ = false;           // the watch in flight ended with 410: list again
  bool watch_failed_ = false;     // the watch in flight ended with another ERROR event

  std::atomic<bool> synced_{false};
};

}  // namespace aibrix::discovery
