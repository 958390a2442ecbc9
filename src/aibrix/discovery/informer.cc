#include "aibrix/discovery/informer.h"

#include <random>

#include "aibrix/common/logging.h"
#include "aibrix/common/strings.h"
#include "fmt/format.h"

namespace aibrix::discovery {
namespace {

constexpr size_t kMaxErrorBodyBytes = 64 << 10;
// A watch the server ends sooner than this without delivering anything is retried after the
// backoff rather than at once (a server that closes every watch must not make us spin).
constexpr std::chrono::seconds kHealthyWatch{1};
// A LIST body buffer grown past this is released once the list is handed over.
constexpr size_t kKeepBodyCapacity = 4 << 20;
// Objects reserved for a whole list at most, from the first page's remainingItemCount (a
// hint from the server; the vector still grows past it).
constexpr uint64_t kMaxReserveObjects = 1 << 20;

ErrorReason ReasonOf(http::ClientError error) {
  switch (error) {
    case http::ClientError::kTimeout:
      return ErrorReason::kTimeout;
    case http::ClientError::kConnect:
    case http::ClientError::kSendReset:
      return ErrorReason::kConnect;
    case http::ClientError::kBadResponse:
      return ErrorReason::kBadResponse;
    default:
      return ErrorReason::kReset;
  }
}

uint64_t RandomSeed() {
  std::random_device device;
  return (uint64_t{device()} << 32) ^ device();
}

}  // namespace

// Forwards one call's callbacks to the informer while that call is the current one.
class Informer::Observer : public http::ResponseObserver,
                           public std::enable_shared_from_this<Observer> {
 public:
  Observer(Informer* informer, uint64_t generation)
      : informer_(informer), generation_(generation) {}

  void OnHead(int status, const http::Headers&) override {
    auto self = shared_from_this();  // the informer may cancel the call from in here
    if (Current()) informer_->OnHead(status);
  }
  void OnBody(std::string_view data) override {
    auto self = shared_from_this();
    if (Current()) informer_->OnBody(data);
  }
  void OnEnd(http::ClientError error, std::string_view detail) override {
    auto self = shared_from_this();
    if (Current()) informer_->OnEnd(error, detail);
  }

 private:
  bool Current() const { return !informer_->stopped_ && informer_->generation_ == generation_; }

  Informer* const informer_;
  const uint64_t generation_;
};

Informer::Informer(boost::asio::io_context& io, KubeClient& client, InformerOptions options,
                   InformerHandler& handler, ResourceMetrics& metrics)
    : io_(io),
      client_(client),
      options_(std::move(options)),
      handler_(handler),
      metrics_(metrics),
      path_(CollectionPath(options_.resource, options_.ns)),
      retry_timer_(io),
      rng_(RandomSeed()),
      backoff_(options_.backoff_initial, options_.backoff_max, rng_()),
      decoder_(options_.resource, options_.decode),
      lines_(options_.max_line_bytes) {}

Informer::~Informer() { Stop(); }

void Informer::Start() { StartList(); }

void Informer::Stop() {
  if (stopped_) return;
  stopped_ = true;
  AbortCall();
  retry_timer_.cancel();
  phase_ = Phase::kIdle;
}

void Informer::AbortCall() {
  ++generation_;
  if (auto call = std::move(call_)) call->Cancel();
}

void Informer::Count(ErrorReason reason, std::string_view detail) {
  metrics_.error(reason).Increment();
  static common::RateLimiter limiter;
  common::WarnLimited(limiter, "discovery", "{}: {}: {}", ResourceName(options_.resource),
                      ErrorReasonName(reason), detail);
}

void Informer::RetryLater(Phase phase) {
  phase_ = phase;
  retry_timer_.expires_after(backoff_.Next());
  retry_timer_.async_wait([this, phase](const boost::system::error_code& ec) {
    if (ec || stopped_) return;
    if (phase == Phase::kListing) {
      StartList();
    } else {
      StartWatch();
    }
  });
}

void Informer::StartList() {
  if (stopped_) return;
  phase_ = Phase::kListing;
  listed_.clear();
  continue_token_.clear();
  list_version_.clear();
  RequestPage();
}

void Informer::RequestPage() {
  std::string target = fmt::format("{}?limit={}", path_, options_.page_size);
  if (!continue_token_.empty()) target += "&continue=" + QueryEscape(continue_token_);
  if (!options_.label_selector.empty()) {
    target += "&labelSelector=" + QueryEscape(options_.label_selector);
  }
  status_ = 0;
  body_.clear();
  AbortCall();
  call_ = client_.Get(io_, target, CallKind::kList, std::make_shared<Observer>(this, generation_));
}

void Informer::StartWatch() {
  if (stopped_) return;
  phase_ = Phase::kWatching;
  const int64_t base = options_.watch_timeout.count();
  const int64_t timeout =
      base + std::uniform_int_distribution<int64_t>(0, std::max<int64_t>(base - 1, 0))(rng_);
  std::string target =
      fmt::format("{}?watch=true&resourceVersion={}&allowWatchBookmarks=true&timeoutSeconds={}",
                  path_, QueryEscape(resource_version_), timeout);
  if (!options_.label_selector.empty()) {
    target += "&labelSelector=" + QueryEscape(options_.label_selector);
  }
  status_ = 0;
  body_.clear();
  lines_.Reset();
  watch_delivered_ = false;
  relist_ = false;
  watch_failed_ = false;
  watch_started_ = std::chrono::steady_clock::now();
  metrics_.watches->Increment();
  AbortCall();
  call_ = client_.Get(io_, target, CallKind::kWatch, std::make_shared<Observer>(this, generation_));
}

void Informer::OnHead(int status) { status_ = status; }

void Informer::OnBody(std::string_view data) {
  if (status_ != 200) {
    if (body_.size() < kMaxErrorBodyBytes) {
      body_.append(data.substr(0, kMaxErrorBodyBytes - body_.size()));
    }
    call_->ReadMore();
    return;
  }
  if (phase_ == Phase::kListing) {
    if (body_.size() + data.size() > options_.max_page_bytes) {
      Count(ErrorReason::kListTooLarge,
            fmt::format("a LIST page passed {} bytes; listing again", options_.max_page_bytes));
      AbortCall();
      body_ = std::string();
      RetryLater(Phase::kListing);
      return;
    }
    body_.append(data);
    call_->ReadMore();
    return;
  }
  std::vector<WatchEvent> batch;
  const LineAssembler::FeedResult fed =
      lines_.Feed(data, [&](std::string_view line) { return OnWatchLine(line, batch); });
  if (!batch.empty()) {
    handler_.OnEvents(options_.resource, std::move(batch));
    metrics_.objects->Set(static_cast<double>(keys_.size()));
  }
  if (fed.outcome == LineAssembler::Outcome::kLineTooLong) {
    Count(ErrorReason::kLineTooLong,
          fmt::format("a watch line passed {} bytes: cut off, watching again from {}",
                      options_.max_line_bytes, resource_version_));
    AbortCall();
    RetryLater(Phase::kWatching);
    return;
  }
  if (relist_) {
    AbortCall();
    StartList();
    return;
  }
  if (watch_failed_) {
    AbortCall();
    RetryLater(Phase::kWatching);
    return;
  }
  if (watch_delivered_) backoff_.Reset();
  call_->ReadMore();
}

bool Informer::OnWatchLine(std::string_view line, std::vector<WatchEvent>& batch) {
  absl::StatusOr<WatchEvent> event = decoder_.DecodeEvent(line);
  if (!event.ok()) {
    Count(ReasonOf(DecodeErrorOf(event.status())),
          fmt::format("watch line skipped: {}", common::AsStd(event.status().message())));
    return true;
  }
  metrics_.event(event->type).Increment();
  switch (event->type) {
    case EventType::kBookmark:
      resource_version_ = std::move(event->resource_version);
      watch_delivered_ = true;
      return true;
    case EventType::kError:
      if (event->status.Expired()) {
        Count(ErrorReason::kExpired, fmt::format("watch from {} expired ({}); listing again",
                                                 resource_version_, event->status.message));
        relist_ = true;
      } else {
        Count(ErrorReason::kWatchError, fmt::format("ERROR event {} {}: {}", event->status.code,
                                                    event->status.reason, event->status.message));
        watch_failed_ = true;
      }
      return false;
    case EventType::kDeleted:
      keys_.erase(ObjectKey(*event->object));
      break;
    default:
      keys_.insert(ObjectKey(*event->object));
      break;
  }
  if (!event->resource_version.empty()) resource_version_ = event->resource_version;
  watch_delivered_ = true;
  batch.push_back(std::move(*event));
  return true;
}

void Informer::OnEnd(http::ClientError error, std::string_view detail) {
  call_.reset();
  if (status_ != 0 && status_ != 200) {
    OnErrorAnswer();
  } else if (phase_ == Phase::kListing) {
    if (error != http::ClientError::kNone) {
      Count(ReasonOf(error), fmt::format("LIST: {}", detail));
      RetryLater(Phase::kListing);
    } else {
      OnListPageDone();
    }
  } else if (phase_ == Phase::kWatching) {
    OnWatchEnded(error, detail);
  }
}

void Informer::OnErrorAnswer() {
  const size_t size = body_.size();
  body_.append(kJsonPadding, '\0');
  const std::optional<ApiStatus> status =
      decoder_.DecodeStatus(std::string_view(body_.data(), size));
  const std::string message =
      status ? status->message : body_.substr(0, std::min<size_t>(size, 200));
  const bool listing = phase_ == Phase::kListing;
  const char* request = listing ? "LIST" : "WATCH";
  if (status_ == 410 || (status && status->Expired())) {
    Count(ErrorReason::kExpired,
          fmt::format("{}: {} ({}); listing again", request, status_, message));
    if (listing && continue_token_.empty()) {
      RetryLater(Phase::kListing);
    } else {
      StartList();  // an expired continue token, or a watch from a compacted version
    }
    return;
  }
  Count(ErrorReason::kHttpStatus, fmt::format("{}: HTTP {}: {}", request, status_, message));
  if (listing && status_ == 404) {
    // The resource's API is not installed (e.g. no ModelAdapter CRD): nothing to serve.
    listed_.clear();
    FinishList(/*start_watch=*/false);
    RetryLater(Phase::kListing);
    return;
  }
  RetryLater(phase_);
}

void Informer::OnListPageDone() {
  const size_t size = body_.size();
  body_.append(kJsonPadding, '\0');
  absl::StatusOr<ListPage> page = decoder_.DecodeList(std::string_view(body_.data(), size));
  body_.clear();
  if (!page.ok()) {
    Count(ReasonOf(DecodeErrorOf(page.status())),
          fmt::format("LIST page unusable: {}; listing again",
                      common::AsStd(page.status().message())));
    RetryLater(Phase::kListing);
    return;
  }
  for (const absl::Status& skipped : page->skipped) {
    Count(ReasonOf(DecodeErrorOf(skipped)),
          fmt::format("LIST item skipped: {}", common::AsStd(skipped.message())));
  }
  list_version_ = std::move(page->resource_version);
  if (listed_.empty()) {
    listed_ = std::move(page->items);
    // The whole list in one allocation (the objects are moved once, not at each growth).
    listed_.reserve(listed_.size() + std::min<uint64_t>(page->remaining_items, kMaxReserveObjects));
  } else {
    listed_.insert(listed_.end(), std::make_move_iterator(page->items.begin()),
                   std::make_move_iterator(page->items.end()));
  }
  continue_token_ = std::move(page->continue_token);
  if (!continue_token_.empty()) {
    RequestPage();
    return;
  }
  FinishList(/*start_watch=*/true);
}

void Informer::FinishList(bool start_watch) {
  absl::flat_hash_set<std::string> keys;
  keys.reserve(listed_.size());
  for (const K8sObject& object : listed_) keys.insert(ObjectKey(object));
  std::vector<std::string> deleted;
  for (const std::string& key : keys_) {
    if (!keys.contains(key)) deleted.push_back(key);
  }
  keys_ = std::move(keys);
  const size_t count = listed_.size();
  const bool relist = synced();
  handler_.OnList(options_.resource, std::move(listed_), deleted);
  listed_.clear();
  if (body_.capacity() > kKeepBodyCapacity) body_ = std::string();
  resource_version_ = list_version_;
  metrics_.lists->Increment();
  metrics_.objects->Set(static_cast<double>(keys_.size()));
  metrics_.synced->Set(1);
  synced_.store(true, std::memory_order_release);
  common::Logger("discovery")
      ->info("{}: {} {} objects at resourceVersion '{}'{}", ResourceName(options_.resource),
             relist ? "relisted" : "listed", count, resource_version_,
             deleted.empty() ? "" : fmt::format(", {} gone since", deleted.size()));
  if (!start_watch) return;
  backoff_.Reset();
  StartWatch();
}

void Informer::OnWatchEnded(http::ClientError error, std::string_view detail) {
  if (error != http::ClientError::kNone) {
    Count(ReasonOf(error),
          fmt::format("WATCH from {}: {}; watching again", resource_version_, detail));
    RetryLater(Phase::kWatching);
    return;
  }
  if (lines_.buffered() > 0) {
    Count(ErrorReason::kMalformed, "the watch stream ended inside a line");
  }
  if (watch_delivered_ || std::chrono::steady_clock::now() - watch_started_ >= kHealthyWatch) {
    StartWatch();
  } else {
    RetryLater(Phase::kWatching);
  }
}

}  // namespace aibrix::discovery
