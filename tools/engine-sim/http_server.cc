#include "http_server.h"

#include <httplib.h>
#include <sys/socket.h>

#include <ctime>
#include <limits>
#include <optional>

#include "aibrix/common/logging.h"
#include "aibrix/common/status_macros.h"
#include "aibrix/common/strings.h"
#include "aibrix/tokenizer/byte_tokenizer.h"
#include "aibrix/tokenizer/chat_json.h"
#include "fmt/format.h"
#include "nlohmann/json.hpp"

namespace aibrix::enginesim {
namespace {

using json = nlohmann::json;
using tokenizer::ByteTokenizer;

std::string Dump(const json& j) { return j.dump(-1, ' ', false, json::error_handler_t::replace); }

int HttpStatus(absl::StatusCode code) {
  switch (code) {
    case absl::StatusCode::kInvalidArgument:
    case absl::StatusCode::kOutOfRange:
      return 400;
    case absl::StatusCode::kNotFound:
      return 404;
    case absl::StatusCode::kFailedPrecondition:
    case absl::StatusCode::kAlreadyExists:
      return 409;
    case absl::StatusCode::kResourceExhausted:
      return 413;
    case absl::StatusCode::kUnimplemented:
      return 501;
    case absl::StatusCode::kUnavailable:
      return 503;
    default:
      return 500;
  }
}

std::string_view ErrorType(int status) {
  switch (status) {
    case 400:
      return "BadRequestError";
    case 404:
      return "NotFoundError";
    case 405:
      return "MethodNotAllowedError";
    case 409:
      return "ConflictError";
    case 413:
      return "RequestEntityTooLargeError";
    case 501:
      return "NotImplementedError";
    case 503:
      return "ServiceUnavailableError";
    default:
      return status >= 500 ? "InternalServerError" : "BadRequestError";
  }
}

json ErrorBody(int status, std::string_view message, const json& param = nullptr) {
  return {
      {"error",
       {{"message", message}, {"type", ErrorType(status)}, {"param", param}, {"code", status}}}};
}

void SendError(httplib::Response& res, int status, std::string_view message,
               const json& param = nullptr) {
  res.status = status;
  res.set_content(Dump(ErrorBody(status, message, param)), "application/json");
}

void SendStatus(httplib::Response& res, const absl::Status& st) {
  const int status = HttpStatus(st.code());
  json param = nullptr;
  if (st.code() == absl::StatusCode::kNotFound) param = "model";
  SendError(res, status, common::AsStd(st.message()), param);
}

void SendJson(httplib::Response& res, const json& body) {
  res.status = 200;
  res.set_content(Dump(body), "application/json");
}

absl::StatusOr<json> ParseBody(const httplib::Request& req) {
  json body = json::parse(req.body, nullptr, /*allow_exceptions=*/false);
  if (body.is_discarded()) return absl::InvalidArgumentError("Request body is not valid JSON");
  if (!body.is_object()) return absl::InvalidArgumentError("Request body must be a JSON object");
  return body;
}

// The model a request names: the served model (lora_id 0) or one of its LoRA adapters.
struct ModelRef {
  std::string name;
  std::string lora_name;  // empty for the base model
  int64_t lora_id = 0;
};

absl::StatusOr<ModelRef> ResolveModel(const json& body, const EngineOptions& eo) {
  auto it = body.find("model");
  if (it == body.end() || it->is_null()) return ModelRef{eo.model, "", 0};
  if (!it->is_string()) return absl::InvalidArgumentError("`model` must be a string");
  const std::string& name = it->get_ref<const std::string&>();
  if (name == eo.model) return ModelRef{name, "", 0};
  for (size_t i = 0; i < eo.lora_modules.size(); ++i) {
    if (eo.lora_modules[i] == name) return ModelRef{name, name, static_cast<int64_t>(i + 1)};
  }
  return absl::NotFoundError(fmt::format("The model `{}` does not exist.", name));
}

absl::Status CheckModel(const json& body, const EngineOptions& eo) {
  return ResolveModel(body, eo).status();
}

// Optional boolean field; `fallback` when absent or null.
absl::StatusOr<bool> BoolField(const json& body, const char* name, bool fallback) {
  auto it = body.find(name);
  if (it == body.end() || it->is_null()) return fallback;
  if (!it->is_boolean())
    return absl::InvalidArgumentError(fmt::format("`{}` must be a boolean", name));
  return it->get<bool>();
}

absl::StatusOr<std::vector<uint32_t>> ParseTokenArray(const json& arr, std::string_view field) {
  std::vector<uint32_t> out;
  out.reserve(arr.size());
  for (const json& v : arr) {
    if (!v.is_number_integer()) {
      return absl::InvalidArgumentError(fmt::format("`{}` must contain only integers", field));
    }
    const bool ok =
        v.is_number_unsigned()
            ? v.get<uint64_t>() <= std::numeric_limits<uint32_t>::max()
            : (v.get<int64_t>() >= 0 && v.get<int64_t>() <= std::numeric_limits<uint32_t>::max());
    if (!ok) {
      return absl::InvalidArgumentError(
          fmt::format("`{}` contains the token id {}, outside 0..4294967295", field, Dump(v)));
    }
    out.push_back(static_cast<uint32_t>(v.get<uint64_t>()));
  }
  return out;
}

absl::StatusOr<std::vector<uint32_t>> ParseCompletionPrompt(const json& body) {
  auto it = body.find("prompt");
  if (it == body.end() || it->is_null()) return absl::InvalidArgumentError("`prompt` is required");
  const json& p = *it;
  if (p.is_string()) return ByteTokenizer::Encode(p.get_ref<const std::string&>());
  if (p.is_array()) {
    if (p.empty()) return absl::InvalidArgumentError("`prompt` must not be empty");
    if (p[0].is_number()) return ParseTokenArray(p, "prompt");
    if (p.size() > 1) {
      return absl::InvalidArgumentError(
          "batched prompts (more than one prompt per request) are not supported by engine-sim");
    }
    if (p[0].is_string()) return ByteTokenizer::Encode(p[0].get_ref<const std::string&>());
    if (p[0].is_array()) return ParseTokenArray(p[0], "prompt");
  }
  return absl::InvalidArgumentError(
      "`prompt` must be a string, an array of token ids, or a one-element array of either");
}

absl::StatusOr<std::vector<uint32_t>> ParseChatPrompt(const json& body) {
  auto it = body.find("messages");
  if (it == body.end() || it->is_null()) {
    return absl::InvalidArgumentError("`messages` is required");
  }
  tokenizer::ChatOptions opts;
  ASSIGN_OR_RETURN(opts.add_generation_prompt, BoolField(body, "add_generation_prompt", true));
  ASSIGN_OR_RETURN(opts.continue_final_message, BoolField(body, "continue_final_message", false));
  ASSIGN_OR_RETURN(const std::vector<tokenizer::ChatMessage> messages,
                   tokenizer::ParseChatMessages(*it));
  return ByteTokenizer().TokenizeChat(messages, opts);
}

struct GenParams {
  std::optional<int64_t> max_tokens;
  bool stream = false;
  bool include_usage = false;
};

absl::StatusOr<GenParams> ParseGenParams(const json& body, bool chat) {
  GenParams g;
  ASSIGN_OR_RETURN(g.stream, BoolField(body, "stream", false));
  if (auto so = body.find("stream_options"); so != body.end() && !so->is_null()) {
    if (!so->is_object()) return absl::InvalidArgumentError("`stream_options` must be an object");
    ASSIGN_OR_RETURN(g.include_usage, BoolField(*so, "include_usage", false));
  }
  if (auto n = body.find("n"); n != body.end() && !n->is_null()) {
    if (!n->is_number_integer() || n->get<int64_t>() < 1) {
      return absl::InvalidArgumentError("`n` must be a positive integer");
    }
    if (n->get<int64_t>() != 1) {
      return absl::InvalidArgumentError("engine-sim supports only n = 1");
    }
  }
  for (const char* name : {"max_tokens", "max_completion_tokens"}) {
    if (!chat && std::string_view(name) == "max_completion_tokens") continue;
    auto it = body.find(name);
    if (it == body.end() || it->is_null()) continue;
    if (!it->is_number_integer()) {
      return absl::InvalidArgumentError(fmt::format("`{}` must be an integer", name));
    }
    const int64_t v = it->is_number_unsigned()
                          ? static_cast<int64_t>(std::min<uint64_t>(it->get<uint64_t>(), INT64_MAX))
                          : it->get<int64_t>();
    if (v < 1) {
      return absl::InvalidArgumentError(fmt::format("{} must be at least 1, got {}.", name, v));
    }
    // Anything this large fails the context-length check anyway; capping keeps the
    // prompt + max_tokens arithmetic far from overflow.
    g.max_tokens = std::min<int64_t>(
        v, int64_t{1} << 40);  // max_completion_tokens (read last) wins, as in vLLM
  }
  return g;
}

template <typename F>
absl::Status AsStatus(F&& f) {
  if constexpr (std::is_void_v<decltype(f())>) {
    f();
    return absl::OkStatus();
  } else {
    return f();
  }
}

std::string HexId(std::string_view prefix, uint64_t n) {
  return fmt::format("{}{:016x}{:08x}", prefix, n, static_cast<uint32_t>(std::time(nullptr)));
}

json Usage(int prompt, int completion, int cached) {
  return {{"prompt_tokens", prompt},
          {"total_tokens", prompt + completion},
          {"completion_tokens", completion},
          {"prompt_tokens_details", {{"cached_tokens", cached}}}};
}

// A submitted request and what its response names (a streaming response keeps it between
// provider calls).
struct StreamState {
  std::shared_ptr<RequestHandle> handle;
  std::string id;
  std::string model;
  int64_t created = 0;
  bool chat = false;
  bool include_usage = false;
  size_t seen = 0;
  bool role_sent = false;
};

void AppendSse(std::string* out, const json& chunk) {
  *out += "data: ";
  *out += Dump(chunk);
  *out += "\n\n";
}

json StreamChunk(const StreamState& st, json choice) {
  return {{"id", st.id},
          {"object", st.chat ? "chat.completion.chunk" : "text_completion"},
          {"created", st.created},
          {"model", st.model},
          {"choices", json::array({std::move(choice)})}};
}

json TextChoice(const StreamState& st, std::string_view text, const json& finish_reason) {
  if (st.chat) {
    return {{"index", 0},
            {"delta", {{"content", text}}},
            {"logprobs", nullptr},
            {"finish_reason", finish_reason}};
  }
  return {{"index", 0},
          {"text", text},
          {"logprobs", nullptr},
          {"finish_reason", finish_reason},
          {"stop_reason", nullptr}};
}

bool StreamStep(StreamState& st, httplib::DataSink& sink) {
  std::string out;
  if (st.chat && !st.role_sent) {
    AppendSse(&out, StreamChunk(st, {{"index", 0},
                                     {"delta", {{"role", "assistant"}, {"content", ""}}},
                                     {"logprobs", nullptr},
                                     {"finish_reason", nullptr}}));
    st.role_sent = true;
  }
  RequestHandle::Progress p = st.handle->Wait(st.seen, std::chrono::milliseconds(200));
  const json reason = std::string(FinishReasonName(p.reason));
  for (size_t i = 0; i < p.new_text.size(); ++i) {
    const bool last = p.finished && p.error.ok() && i + 1 == p.new_text.size();
    AppendSse(&out, StreamChunk(st, TextChoice(st, std::string_view(&p.new_text[i], 1),
                                               last ? reason : json(nullptr))));
  }
  st.seen += p.new_text.size();
  if (p.finished) {
    if (!p.error.ok()) {
      AppendSse(&out, ErrorBody(HttpStatus(p.error.code()), common::AsStd(p.error.message())));
    } else if (p.new_text.empty()) {
      AppendSse(&out, StreamChunk(st, TextChoice(st, "", reason)));
    }
    if (st.include_usage) {
      json chunk = StreamChunk(st, nullptr);
      chunk["choices"] = json::array();
      chunk["usage"] =
          Usage(st.handle->prompt_tokens(), static_cast<int>(st.seen), st.handle->cached_tokens());
      AppendSse(&out, chunk);
    }
    out += "data: [DONE]\n\n";
  }
  if (!out.empty() && !sink.write(out.data(), out.size())) {
    st.handle->Abort();
    return false;
  }
  if (p.finished) sink.done();
  return true;
}

// A validated /v1/completions or /v1/chat/completions request.
struct GenerateRequest {
  RequestArgs args;
  std::string model;  // as the request named it (the served model or a LoRA adapter)
  bool include_usage = false;
};

// vLLM's context-length checks: the prompt must leave room, and so must max_tokens.
absl::Status CheckContextLength(int64_t plen, const std::optional<int64_t>& max_tokens,
                                int64_t max_len) {
  if (plen == 0)
    return absl::InvalidArgumentError("The prompt is empty (it tokenizes to 0 tokens).");
  if (plen > max_len || (plen == max_len && !max_tokens.has_value())) {
    return absl::InvalidArgumentError(
        fmt::format("This model's maximum context length is {} tokens. However, your request "
                    "has {} input tokens. Please reduce the length of the input messages.",
                    max_len, plen));
  }
  if (max_tokens.has_value() && plen + *max_tokens > max_len) {
    return absl::InvalidArgumentError(
        fmt::format("This model's maximum context length is {} tokens. However, you requested "
                    "{} tokens ({} in the messages, {} in the completion). Please reduce the "
                    "length of the messages or completion.",
                    max_len, plen + *max_tokens, plen, *max_tokens));
  }
  return absl::OkStatus();
}

// Parses and validates a generate request. Errors: InvalidArgument (400), NotFound (an
// unknown model: 404).
absl::StatusOr<GenerateRequest> ParseGenerate(const httplib::Request& req, bool chat,
                                              const EngineOptions& eo, int default_max_tokens) {
  ASSIGN_OR_RETURN(json body, ParseBody(req));
  ASSIGN_OR_RETURN(ModelRef model_ref, ResolveModel(body, eo));
  ASSIGN_OR_RETURN(std::vector<uint32_t> prompt,
                   chat ? ParseChatPrompt(body) : ParseCompletionPrompt(body));
  ASSIGN_OR_RETURN(GenParams params, ParseGenParams(body, chat));
  const int64_t max_len = eo.max_model_len;
  const int64_t plen = static_cast<int64_t>(prompt.size());
  RETURN_IF_ERROR(CheckContextLength(plen, params.max_tokens, max_len));
  GenerateRequest g;
  if (params.max_tokens.has_value()) {
    g.args.max_tokens = static_cast<int>(*params.max_tokens);
    g.args.max_tokens_given = true;
  } else {
    g.args.max_tokens = static_cast<int>(std::min<int64_t>(default_max_tokens, max_len - plen));
  }
  g.args.prompt = std::move(prompt);
  g.args.stream = params.stream;
  g.args.lora_name = model_ref.lora_name;
  g.args.lora_id = model_ref.lora_id;
  g.model = model_ref.name;
  g.include_usage = params.include_usage;
  return g;
}

// The whole (non-streamed) answer of a finished request.
json FinishedResponse(const StreamState& st, const RequestHandle::Progress& p) {
  const std::string reason(FinishReasonName(p.reason));
  json choice;
  if (st.chat) {
    choice = {{"index", 0},
              {"message",
               {{"role", "assistant"}, {"content", p.new_text}, {"tool_calls", json::array()}}},
              {"logprobs", nullptr},
              {"finish_reason", reason},
              {"stop_reason", nullptr}};
  } else {
    choice = {{"index", 0},
              {"text", p.new_text},
              {"logprobs", nullptr},
              {"finish_reason", reason},
              {"stop_reason", nullptr},
              {"prompt_logprobs", nullptr}};
  }
  const int completion = static_cast<int>(p.new_text.size());
  return {{"id", st.id},
          {"object", st.chat ? "chat.completion" : "text_completion"},
          {"created", st.created},
          {"model", st.model},
          {"choices", json::array({std::move(choice)})},
          {"usage", Usage(st.handle->prompt_tokens(), completion, st.handle->cached_tokens())}};
}

// GET /v1/models: the served model and one card per LoRA adapter.
json ModelList(const std::string& model, int64_t max_len, const std::vector<std::string>& loras) {
  const int64_t now = std::time(nullptr);
  json data = json::array();
  json card = {{"id", model},
               {"object", "model"},
               {"created", now},
               {"owned_by", "vllm"},
               {"root", model},
               {"parent", nullptr},
               {"max_model_len", max_len},
               {"permission", json::array({{{"id", "modelperm-engine-sim"},
                                            {"object", "model_permission"},
                                            {"created", now},
                                            {"allow_create_engine", false},
                                            {"allow_sampling", true},
                                            {"allow_logprobs", true},
                                            {"allow_search_indices", false},
                                            {"allow_view", true},
                                            {"allow_fine_tuning", false},
                                            {"organization", "*"},
                                            {"group", nullptr},
                                            {"is_blocking", false}}})}};
  data.push_back(card);
  for (const std::string& lora : loras) {
    json adapter = card;
    adapter["id"] = lora;
    adapter["root"] = lora;
    adapter["parent"] = model;
    data.push_back(std::move(adapter));
  }
  return {{"object", "list"}, {"data", std::move(data)}};
}

// The blocks of GET /sim/cache.
json CacheBlocks(const CacheView& v, bool with_tokens) {
  json blocks = json::array();
  for (const CachedBlock& b : v.blocks) {
    json jb = {{"block_id", b.block_id},
               {"hash", b.hash},
               {"parent", b.parent.has_value() ? json(*b.parent) : json(nullptr)},
               {"block_index", b.block_index},
               {"ref_cnt", b.ref_cnt}};
    if (with_tokens) jb["tokens"] = b.tokens;
    jb["lora_name"] = b.lora_name.empty() ? json(nullptr) : json(b.lora_name);
    blocks.push_back(std::move(jb));
  }
  return blocks;
}

// The publisher's counters in GET /sim/cache (null without a publisher).
json KvEventsView(KvEventOutput* events) {
  if (events == nullptr) return nullptr;
  kvpublish::Publisher& p = events->publisher();
  // Batches of finished requests are already queued; let the publisher thread number and
  // send them so next_seq counts them (bounded: a paused publisher never drains).
  p.Flush(std::chrono::milliseconds(500));
  return {{"endpoint", p.endpoint()},
          {"replay_endpoint", p.replay_endpoint()},
          {"next_seq", p.next_seq()},
          {"sent", p.sent()},
          {"dropped", p.dropped()},
          {"replay_requests", p.replay_requests()},
          {"publish_errors", events->publish_errors()}};
}

bool IsPublisherFault(const std::string& action) {
  return action == "drop_batches" || action == "pause_publisher" || action == "resume_publisher" ||
         action == "corrupt_next_payload" || action == "ignore_replay";
}

// The publisher faults of POST /sim/fault. REQUIRES: IsPublisherFault(action).
absl::Status ApplyPublisherFault(KvEventOutput* events, const std::string& action, int64_t count,
                                 const json& body) {
  if (events == nullptr) {
    return absl::FailedPreconditionError("no KV event publisher (start with --kv-events-endpoint)");
  }
  kvpublish::Publisher& p = events->publisher();
  if (action == "drop_batches") {
    // DropNext returns Status in newer kvevents revisions and void in older ones.
    return AsStatus([&] { return p.DropNext(static_cast<int>(count)); });
  } else if (action == "pause_publisher") {
    p.Pause();
  } else if (action == "resume_publisher") {
    p.Resume();
  } else if (action == "corrupt_next_payload") {
    events->CorruptNext(static_cast<int>(count));
  } else {
    ASSIGN_OR_RETURN(bool on, BoolField(body, "enabled", true));
    p.SetIgnoreReplay(on);
  }
  return absl::OkStatus();
}

// `count` of POST /sim/fault: 1 when absent.
absl::StatusOr<int64_t> FaultCount(const json& body) {
  auto c = body.find("count");
  if (c == body.end()) return 1;
  if (!c->is_number_integer() || c->get<int64_t>() < 1 || c->get<int64_t>() > 1000000) {
    return absl::InvalidArgumentError("`count` must be an integer in 1..1000000");
  }
  return c->get<int64_t>();
}

}  // namespace

SimHttpServer::SimHttpServer(HttpOptions options, Engine* engine, KvEventOutput* events)
    : options_(std::move(options)),
      engine_(engine),
      events_(events),
      server_(std::make_unique<httplib::Server>()) {
  const int threads = std::max(options_.threads, 1);
  server_->new_task_queue = [threads] { return new httplib::ThreadPool(threads); };
  server_->set_keep_alive_max_count(std::numeric_limits<int>::max());
  server_->set_payload_max_length(options_.max_body_bytes);
  server_->set_tcp_nodelay(true);
  // httplib's default sets SO_REUSEPORT, which lets a second process bind a busy port
  // silently; SO_REUSEADDR alone makes that a clear start-up error. The callback also
  // hands us the listening socket so Bind() can raise httplib's backlog of 5.
  server_->set_socket_options([this](int sock) {
    int yes = 1;
    setsockopt(sock, SOL_SOCKET, SO_REUSEADDR, &yes, sizeof yes);
    listen_fd_.store(sock);
  });
  Register();
}

SimHttpServer::~SimHttpServer() { Stop(); }

absl::StatusOr<int> SimHttpServer::Bind() {
  int port = options_.port;
  if (port == 0) {
    port = server_->bind_to_any_port(options_.host);
    if (port <= 0) {
      return absl::UnavailableError(fmt::format("cannot bind {}:<any port>", options_.host));
    }
  } else if (!server_->bind_to_port(options_.host, port)) {
    return absl::UnavailableError(fmt::format("cannot bind {}:{}", options_.host, port));
  }
  // A burst of connections (a proxy warming its pool, a benchmark's clients) overflows a
  // 5-deep accept queue; on Linux a second listen() just resizes it.
  if (const int fd = listen_fd_.load(); fd >= 0) ::listen(fd, 1024);
  return port;
}

void SimHttpServer::Serve() { server_->listen_after_bind(); }

void SimHttpServer::Stop() { server_->stop(); }

void SimHttpServer::Register() {
  RegisterErrorHandlers();
  RegisterInfoRoutes();
  RegisterGenerateRoutes();
  RegisterTokenizerRoutes();
  RegisterCacheRoutes();
  server_->Post("/sim/fault", [this](const httplib::Request& req, httplib::Response& res) {
    HandleFault(req, res);
  });
}

void SimHttpServer::RegisterErrorHandlers() {
  server_->set_error_handler([](const httplib::Request& req, httplib::Response& res) {
    if (!res.body.empty()) return;
    std::string message;
    switch (res.status) {
      case 404:
        message = fmt::format("Not Found: {} {}", req.method, req.path);
        break;
      case 413:
        message = "Request body too large";
        break;
      default:
        message = fmt::format("HTTP {}", res.status);
    }
    SendError(res, res.status, message);
  });
  server_->set_exception_handler(
      [](const httplib::Request&, httplib::Response& res, std::exception_ptr ep) {
        std::string what = "internal error";
        try {
          if (ep) std::rethrow_exception(ep);
        } catch (const std::exception& e) {
          what = e.what();
        } catch (...) {
        }
        SendError(res, 500, what);
      });
}

void SimHttpServer::RegisterInfoRoutes() {
  httplib::Server& s = *server_;
  s.Get("/health", [this](const httplib::Request&, httplib::Response& res) {
    if (!healthy_.load()) {
      SendError(res, 503, "engine-sim marked unhealthy by /sim/fault");
      return;
    }
    res.status = 200;
  });
  s.Get("/version", [](const httplib::Request&, httplib::Response& res) {
    SendJson(res, {{"version", "0.0.0-engine-sim"}});
  });
  const EngineOptions& eo = engine_->options();
  s.Get("/v1/models", [model = eo.model, max_len = eo.max_model_len, loras = eo.lora_modules](
                          const httplib::Request&, httplib::Response& res) {
    SendJson(res, ModelList(model, max_len, loras));
  });
}

void SimHttpServer::RegisterGenerateRoutes() {
  server_->Post("/v1/completions", [this](const httplib::Request& req, httplib::Response& res) {
    HandleGenerate(req, res, /*chat=*/false);
  });
  server_->Post("/v1/chat/completions",
                [this](const httplib::Request& req, httplib::Response& res) {
                  HandleGenerate(req, res, /*chat=*/true);
                });
}

void SimHttpServer::RegisterTokenizerRoutes() {
  server_->Post("/tokenize", [this](const httplib::Request& req, httplib::Response& res) {
    HandleTokenize(req, res);
  });
  server_->Post("/detokenize", [this](const httplib::Request& req, httplib::Response& res) {
    HandleDetokenize(req, res);
  });
}

void SimHttpServer::RegisterCacheRoutes() {
  httplib::Server& s = *server_;
  s.Post("/reset_prefix_cache", [this](const httplib::Request&, httplib::Response& res) {
    if (!engine_->ResetPrefixCache()) {
      return SendError(res, 409,
                       "prefix cache not reset: KV blocks are still in use by running requests");
    }
    res.status = 200;
  });
  s.Get("/metrics", [this](const httplib::Request&, httplib::Response& res) {
    std::string text;
    text.reserve(48 << 10);
    engine_->RenderMetrics(&text);
    res.status = 200;
    res.set_content(std::move(text), "text/plain; version=0.0.4; charset=utf-8");
  });
  s.Get("/sim/cache", [this](const httplib::Request& req, httplib::Response& res) {
    const bool with_tokens = req.get_param_value("tokens") != "0";
    CacheView v = engine_->CacheSnapshot();
    json out = {{"block_size", v.block_size},
                {"num_gpu_blocks", v.num_gpu_blocks},
                {"num_free_blocks", v.num_free_blocks},
                {"num_cached_blocks", v.blocks.size()},
                {"kv_cache_usage", v.usage},
                {"blocks", CacheBlocks(v, with_tokens)}};
    out["kv_events"] = KvEventsView(events_);
    SendJson(res, out);
  });
}

void SimHttpServer::HandleGenerate(const httplib::Request& req, httplib::Response& res, bool chat) {
  absl::StatusOr<GenerateRequest> g =
      ParseGenerate(req, chat, engine_->options(), options_.default_max_tokens);
  if (!g.ok()) return SendStatus(res, g.status());
  auto st = std::make_shared<StreamState>();
  st->id = HexId(chat ? "chatcmpl-" : "cmpl-", next_id_.fetch_add(1));
  st->model = g->model;
  st->created = std::time(nullptr);
  st->chat = chat;
  st->include_usage = g->include_usage;
  const bool stream = g->args.stream;
  st->handle = engine_->Submit(std::move(g->args));
  if (!stream) {
    RequestHandle::Progress p = st->handle->WaitFinished();
    if (!p.error.ok()) return SendStatus(res, p.error);
    return SendJson(res, FinishedResponse(*st, p));
  }
  res.status = 200;
  res.set_header("Cache-Control", "no-cache");
  res.set_chunked_content_provider(
      "text/event-stream; charset=utf-8",
      [st](size_t, httplib::DataSink& sink) { return StreamStep(*st, sink); },
      [handle = st->handle](bool) { handle->Abort(); });
}

void SimHttpServer::HandleTokenize(const httplib::Request& req, httplib::Response& res) {
  absl::StatusOr<json> body = ParseBody(req);
  if (!body.ok()) return SendStatus(res, body.status());
  if (absl::Status st = CheckModel(*body, engine_->options()); !st.ok()) {
    return SendStatus(res, st);
  }
  absl::StatusOr<bool> strs = BoolField(*body, "return_token_strs", false);
  if (!strs.ok()) return SendStatus(res, strs.status());
  if (auto st = BoolField(*body, "add_special_tokens", true); !st.ok()) {
    return SendStatus(res, st.status());
  }
  absl::StatusOr<std::vector<uint32_t>> ids;
  if (body->contains("messages")) {
    ids = ParseChatPrompt(*body);
  } else if (auto p = body->find("prompt"); p != body->end()) {
    if (!p->is_string()) return SendError(res, 400, "`prompt` must be a string");
    ids = ByteTokenizer::Encode(p->get_ref<const std::string&>());
  } else {
    return SendError(res, 400, "Either `prompt` or `messages` is required");
  }
  if (!ids.ok()) return SendStatus(res, ids.status());
  json token_strs = nullptr;
  if (*strs) {
    token_strs = json::array();
    for (uint32_t id : *ids) token_strs.push_back(ByteTokenizer::TokenString(id));
  }
  SendJson(res, {{"count", ids->size()},
                 {"max_model_len", engine_->options().max_model_len},
                 {"tokens", *ids},
                 {"token_strs", std::move(token_strs)}});
}

void SimHttpServer::HandleDetokenize(const httplib::Request& req, httplib::Response& res) {
  absl::StatusOr<json> body = ParseBody(req);
  if (!body.ok()) return SendStatus(res, body.status());
  if (absl::Status st = CheckModel(*body, engine_->options()); !st.ok()) {
    return SendStatus(res, st);
  }
  auto it = body->find("tokens");
  if (it == body->end() || !it->is_array()) {
    return SendError(res, 400, "`tokens` (an array of token ids) is required");
  }
  absl::StatusOr<std::vector<uint32_t>> ids = ParseTokenArray(*it, "tokens");
  if (!ids.ok()) return SendStatus(res, ids.status());
  absl::StatusOr<std::string> text = ByteTokenizer().Detokenize(*ids);
  if (!text.ok()) return SendStatus(res, text.status());
  SendJson(res, {{"prompt", *text}});
}

void SimHttpServer::HandleFault(const httplib::Request& req, httplib::Response& res) {
  absl::StatusOr<json> body = ParseBody(req);
  if (!body.ok()) return SendStatus(res, body.status());
  auto a = body->find("action");
  if (a == body->end() || !a->is_string()) return SendError(res, 400, "`action` is required");
  const std::string action = a->get<std::string>();
  absl::StatusOr<int64_t> count = FaultCount(*body);
  if (!count.ok()) return SendStatus(res, count.status());
  if (action == "restart") {
    engine_->Restart();
    if (events_ != nullptr) events_->publisher().Flush(std::chrono::seconds(5));
  } else if (action == "set_health") {
    auto h = BoolField(*body, "healthy", true);
    if (!h.ok()) return SendStatus(res, h.status());
    healthy_.store(*h);
  } else if (IsPublisherFault(action)) {
    if (absl::Status st = ApplyPublisherFault(events_, action, *count, *body); !st.ok()) {
      return SendStatus(res, st);
    }
  } else {
    return SendError(res, 400,
                     fmt::format("unknown action `{}` (drop_batches, restart, pause_publisher, "
                                 "resume_publisher, corrupt_next_payload, ignore_replay, "
                                 "set_health)",
                                 action));
  }
  SendJson(res, {{"ok", true}, {"action", action}});
}

}  // namespace aibrix::enginesim
