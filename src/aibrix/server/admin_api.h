// The admin API: the service's state as JSON — GET /cache/pods, GET /cache/pods/{namespace}/
// {name}, GET /cache/models — POST /cache/match (per pod, the prompt's blocks each index
// holds) and GET /cache/models/{model}/prediction?input_tokens=N (the predicted output length
// and what the model's GPU profiles expect of such a request, for gateway plugins).
//
// Thread safety: handlers run concurrently on the HTTP server's I/O threads (none blocks: a
// remote tokenization is asynchronous); everything read is internally synchronised.
#pragma once

#include <memory>

#include "aibrix/gateway/model_tokenizers.h"
#include "aibrix/http/server.h"
#include "aibrix/kvevents/manager.h"
#include "aibrix/prefix/approx_index.h"
#include "aibrix/prefix/exact_index.h"
#include "aibrix/prefix/match.h"
#include "aibrix/routing/pending_load.h"
#include "aibrix/store/store.h"
#include "aibrix/tracking/request_tracker.h"
#include "nlohmann/json_fwd.hpp"

namespace aibrix::server {

struct AdminDeps {
  store::Store* store;
  const prefix::ExactIndex* exact_index;
  const prefix::ApproxIndex* approx_index;
  const prefix::PrefixMatcher* matcher;
  const gateway::ModelTokenizers* tokenizers;
  const kvevents::EventManager* kv_manager;
  tracking::RequestTracker* tracker;
  const routing::PendingLoadProvider* load;  // null when GPU profile caching is off
};

class AdminApi {
 public:
  // Everything in `deps` must outlive the AdminApi.
  explicit AdminApi(AdminDeps deps) : deps_(deps) {}
  // Registers the routes on `http` (before it starts).
  void Register(http::Server& http);

 private:
  void HandlePods(http::Response& res) const;
  void HandlePod(const http::Request& req, http::Response& res) const;
  void HandleModels(http::Response& res) const;
  void HandlePrediction(const http::Request& req, http::Response& res) const;
  // Answered once the prompt is tokenized (remote tokenization is asynchronous).
  void HandleMatch(std::shared_ptr<http::Exchange> exchange) const;
  // One pod of /cache/pods, with its index stats and subscription (cache_api.h).
  void AppendPod(std::string* out, const store::Pod& pod) const;

  const AdminDeps deps_;
};

}  // namespace aibrix::server
