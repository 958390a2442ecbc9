#include "aibrix/server/http_server.h"

#include <sys/socket.h>

#include <chrono>

#include "aibrix/common/logging.h"
#include "fmt/format.h"
#include "prometheus/counter.h"
#include "prometheus/histogram.h"

namespace aibrix::server {
namespace {

std::string_view ErrorType(int status) {
  switch (status) {
    case 404:
      return "not_found_error";
    case 413:
      return "request_too_large";
    case 503:
      return "service_unavailable";
    default:
      return status >= 500 ? "internal_error" : "invalid_request_error";
  }
}

}  // namespace

void SendError(Response& res, int status, std::string_view message, std::string_view type) {
  nlohmann::json body = {{"error", {{"message", message}, {"type", type}, {"code", status}}}};
  SendJson(res, body, status);
}

void SendJson(Response& res, const nlohmann::json& body, int status) {
  res.status = status;
  res.set_content(body.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace),
                  "application/json");
}

std::optional<nlohmann::json> ParseJsonBody(const Request& req, Response& res) {
  nlohmann::json body = nlohmann::json::parse(req.body, nullptr, /*allow_exceptions=*/false);
  if (body.is_discarded()) {
    SendError(res, 400, "malformed JSON in request body");
    return std::nullopt;
  }
  if (!body.is_object()) {
    SendError(res, 400, "request body must be a JSON object");
    return std::nullopt;
  }
  return body;
}

HttpServer::HttpServer(HttpServerOptions options, prometheus::Registry& registry)
    : options_(std::move(options)),
      requests_(prometheus::BuildCounter()
                    .Name("aibrix_cache_http_requests_total")
                    .Help("HTTP requests served, by route and status code")
                    .Register(registry)),
      latency_(prometheus::BuildHistogram()
                   .Name("aibrix_cache_http_request_duration_seconds")
                   .Help("HTTP request handling time, by route")
                   .Register(registry)) {
  const int threads = std::max(1, options_.threads);
  server_.new_task_queue = [threads] { return new httplib::ThreadPool(threads); };
  server_.set_payload_max_length(options_.max_body_bytes);
  server_.set_keep_alive_max_count(10000);
  // Without TCP_NODELAY, Nagle plus delayed ACKs stall each keep-alive response ~40 ms.
  server_.set_tcp_nodelay(true);
  // httplib's default also sets SO_REUSEPORT, which would let a second process bind the same
  // port silently; keep only SO_REUSEADDR so "address in use" is reported.
  server_.set_socket_options([](socket_t sock) {
    int yes = 1;
    setsockopt(sock, SOL_SOCKET, SO_REUSEADDR, &yes, sizeof(yes));
  });
  server_.set_error_handler([this](const Request& req, Response& res) {
    if (!res.body.empty()) return;  // a handler already wrote its own error
    if (res.status == 404) {
      SendError(res, 404, fmt::format("no route for {} {}", req.method, req.path), ErrorType(404));
    } else if (res.status == 413) {
      SendError(res, 413,
                fmt::format("request body exceeds the limit of {} bytes", options_.max_body_bytes),
                ErrorType(413));
    } else {
      SendError(res, res.status, fmt::format("HTTP {}", res.status), ErrorType(res.status));
    }
    if (res.status == 404 || res.status == 413) {
      requests_.Add({{"route", "unmatched"}, {"code", std::to_string(res.status)}}).Increment();
    }
  });
  server_.set_exception_handler([](const Request& req, Response& res, std::exception_ptr ep) {
    std::string what = "unknown error";
    try {
      std::rethrow_exception(ep);
    } catch (const std::exception& e) {
      what = e.what();
    } catch (...) {
    }
    common::Logger("http")->error("{} {} failed: {}", req.method, req.path, what);
    SendError(res, 500, fmt::format("internal error: {}", what), "internal_error");
  });
}

HttpServer::~HttpServer() { Stop(); }

Handler HttpServer::Instrument(const std::string& route, Handler handler) {
  auto& histogram =
      latency_.Add({{"route", route}}, prometheus::Histogram::BucketBoundaries{
                                           0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005,
                                           0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30});
  return
      [this, route, &histogram, handler = std::move(handler)](const Request& req, Response& res) {
        const auto start = std::chrono::steady_clock::now();
        handler(req, res);
        histogram.Observe(
            std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count());
        requests_.Add({{"route", route}, {"code", std::to_string(res.status)}}).Increment();
      };
}

void HttpServer::Get(const std::string& pattern, const std::string& route, Handler handler) {
  server_.Get(pattern, Instrument(route, std::move(handler)));
}

void HttpServer::Post(const std::string& pattern, const std::string& route, Handler handler) {
  server_.Post(pattern, Instrument(route, std::move(handler)));
}

absl::Status HttpServer::Start() {
  if (options_.port == 0) {
    port_ = server_.bind_to_any_port(options_.host);
  } else {
    port_ = server_.bind_to_port(options_.host, options_.port) ? options_.port : -1;
  }
  if (port_ <= 0) {
    return absl::UnavailableError(fmt::format(
        "cannot listen on {}:{} (address in use or not local?)", options_.host, options_.port));
  }
  listener_done_.store(false);
  listener_ = std::thread([this] {
    server_.listen_after_bind();
    listener_done_.store(true);
  });
  // httplib's stop() is a no-op until the listener runs: wait for it, so Stop() never hangs.
  while (!server_.is_running() && !listener_done_.load()) {
    std::this_thread::sleep_for(std::chrono::microseconds(100));
  }
  return absl::OkStatus();
}

void HttpServer::Stop() {
  server_.stop();
  if (listener_.joinable()) listener_.join();
}

}  // namespace aibrix::server
