#include "http_server.h"

#include <httplib.h>
#include <sys/socket.h>

#include <ctime>
#include <limits>

#include "aibrix/common/logging.h"
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
  auto gen = BoolField(body, "add_generation_prompt", true);
  if (!gen.ok()) return gen.status();
  auto cont = BoolField(body, "continue_final_message", false);
  if (!cont.ok()) return cont.status();
  opts.add_generation_prompt = *gen;
  opts.continue_final_message = *cont;
  absl::StatusOr<std::vector<tokenizer::ChatMessage>> messages = tokenizer::ParseChatMessages(*it);
  if (!messages.ok()) return messages.status();
  return ByteTokenizer().TokenizeChat(*messages, opts);
}

struct GenParams {
  std::optional<int64_t> max_tokens;
  bool stream = false;
  bool include_usage = false;
};

absl::StatusOr<GenParams> ParseGenParams(const json& body, bool chat) {
  GenParams g;
  auto stream = BoolField(body, "stream", false);
  if (!stream.ok()) return stream.status();
  g.stream = *stream;
  if (auto so = body.find("stream_options"); so != body.end() && !so->is_null()) {
    if (!so->is_object()) return absl::InvalidArgumentError("`stream_options` must be an object");
    auto usage = BoolField(*so, "include_usage", false);
    if (!usage.ok()) return usage.status();
    g.include_usage = *usage;
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

// What a streaming response needs between provider calls.
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
  httplib::Server& s = *server_;
  const EngineOptions& eo = engine_->options();
  const std::string model = eo.model;

  s.set_error_handler([](const httplib::Request& req, httplib::Response& res) {
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
  s.set_exception_handler(
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

  s.Get("/v1/models", [model, max_len = eo.max_model_len, loras = eo.lora_modules](
                          const httplib::Request&, httplib::Response& res) {
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
    SendJson(res, {{"object", "list"}, {"data", std::move(data)}});
  });

  auto generate = [this](const httplib::Request& req, httplib::Response& res, bool chat) {
    absl::StatusOr<json> body = ParseBody(req);
    if (!body.ok()) return SendStatus(res, body.status());
    absl::StatusOr<ModelRef> model_ref = ResolveModel(*body, engine_->options());
    if (!model_ref.ok()) return SendStatus(res, model_ref.status());
    absl::StatusOr<std::vector<uint32_t>> prompt =
        chat ? ParseChatPrompt(*body) : ParseCompletionPrompt(*body);
    if (!prompt.ok()) return SendStatus(res, prompt.status());
    absl::StatusOr<GenParams> params = ParseGenParams(*body, chat);
    if (!params.ok()) return SendStatus(res, params.status());
    const int64_t max_len = engine_->options().max_model_len;
    const int64_t plen = static_cast<int64_t>(prompt->size());
    if (plen == 0) return SendError(res, 400, "The prompt is empty (it tokenizes to 0 tokens).");
    if (plen > max_len || (plen == max_len && !params->max_tokens.has_value())) {
      return SendError(res, 400,
                       fmt::format("This model's maximum context length is {} tokens. However, "
                                   "your request has {} input tokens. Please reduce the length "
                                   "of the input messages.",
                                   max_len, plen));
    }
    RequestArgs args;
    if (params->max_tokens.has_value()) {
      if (plen + *params->max_tokens > max_len) {
        return SendError(
            res, 400,
            fmt::format("This model's maximum context length is {} tokens. However, you "
                        "requested {} tokens ({} in the messages, {} in the completion). Please "
                        "reduce the length of the messages or completion.",
                        max_len, plen + *params->max_tokens, plen, *params->max_tokens));
      }
      args.max_tokens = static_cast<int>(*params->max_tokens);
      args.max_tokens_given = true;
    } else {
      args.max_tokens =
          static_cast<int>(std::min<int64_t>(options_.default_max_tokens, max_len - plen));
    }
    args.prompt = std::move(*prompt);
    args.stream = params->stream;
    args.lora_name = model_ref->lora_name;
    args.lora_id = model_ref->lora_id;
    const std::string model = model_ref->name;
    const std::string id = HexId(chat ? "chatcmpl-" : "cmpl-", next_id_.fetch_add(1));
    const int64_t created = std::time(nullptr);
    std::shared_ptr<RequestHandle> handle = engine_->Submit(std::move(args));

    if (!params->stream) {
      RequestHandle::Progress p = handle->WaitFinished();
      if (!p.error.ok()) return SendStatus(res, p.error);
      const int completion = static_cast<int>(p.new_text.size());
      const std::string reason(FinishReasonName(p.reason));
      json choice;
      if (chat) {
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
      SendJson(res,
               {{"id", id},
                {"object", chat ? "chat.completion" : "text_completion"},
                {"created", created},
                {"model", model},
                {"choices", json::array({std::move(choice)})},
                {"usage", Usage(handle->prompt_tokens(), completion, handle->cached_tokens())}});
      return;
    }
    auto st = std::make_shared<StreamState>();
    st->handle = handle;
    st->id = id;
    st->model = model;
    st->created = created;
    st->chat = chat;
    st->include_usage = params->include_usage;
    res.status = 200;
    res.set_header("Cache-Control", "no-cache");
    res.set_chunked_content_provider(
        "text/event-stream; charset=utf-8",
        [st](size_t, httplib::DataSink& sink) { return StreamStep(*st, sink); },
        [handle](bool) { handle->Abort(); });
  };
  s.Post("/v1/completions", [generate](const httplib::Request& req, httplib::Response& res) {
    generate(req, res, false);
  });
  s.Post("/v1/chat/completions", [generate](const httplib::Request& req, httplib::Response& res) {
    generate(req, res, true);
  });

  s.Post("/tokenize",
         [this, max_len = eo.max_model_len](const httplib::Request& req, httplib::Response& res) {
           absl::StatusOr<json> body = ParseBody(req);
           if (!body.ok()) return SendStatus(res, body.status());
           if (absl::Status st = CheckModel(*body, engine_->options()); !st.ok())
             return SendStatus(res, st);
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
                          {"max_model_len", max_len},
                          {"tokens", *ids},
                          {"token_strs", std::move(token_strs)}});
         });
  s.Post("/detokenize", [this](const httplib::Request& req, httplib::Response& res) {
    absl::StatusOr<json> body = ParseBody(req);
    if (!body.ok()) return SendStatus(res, body.status());
    if (absl::Status st = CheckModel(*body, engine_->options()); !st.ok())
      return SendStatus(res, st);
    auto it = body->find("tokens");
    if (it == body->end() || !it->is_array()) {
      return SendError(res, 400, "`tokens` (an array of token ids) is required");
    }
    absl::StatusOr<std::vector<uint32_t>> ids = ParseTokenArray(*it, "tokens");
    if (!ids.ok()) return SendStatus(res, ids.status());
    absl::StatusOr<std::string> text = ByteTokenizer().Detokenize(*ids);
    if (!text.ok()) return SendStatus(res, text.status());
    SendJson(res, {{"prompt", *text}});
  });

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
    json out = {{"block_size", v.block_size},
                {"num_gpu_blocks", v.num_gpu_blocks},
                {"num_free_blocks", v.num_free_blocks},
                {"num_cached_blocks", v.blocks.size()},
                {"kv_cache_usage", v.usage},
                {"blocks", std::move(blocks)}};
    if (events_ != nullptr) {
      kvpublish::Publisher& p = events_->publisher();
      // Batches of finished requests are already queued; let the publisher thread number
      // and send them so next_seq counts them (bounded: a paused publisher never drains).
      p.Flush(std::chrono::milliseconds(500));
      out["kv_events"] = {{"endpoint", p.endpoint()},
                          {"replay_endpoint", p.replay_endpoint()},
                          {"next_seq", p.next_seq()},
                          {"sent", p.sent()},
                          {"dropped", p.dropped()},
                          {"replay_requests", p.replay_requests()},
                          {"publish_errors", events_->publish_errors()}};
    } else {
      out["kv_events"] = nullptr;
    }
    SendJson(res, out);
  });

  s.Post("/sim/fault", [this](const httplib::Request& req, httplib::Response& res) {
    absl::StatusOr<json> body = ParseBody(req);
    if (!body.ok()) return SendStatus(res, body.status());
    auto a = body->find("action");
    if (a == body->end() || !a->is_string()) return SendError(res, 400, "`action` is required");
    const std::string action = a->get<std::string>();
    int64_t count = 1;
    if (auto c = body->find("count"); c != body->end()) {
      if (!c->is_number_integer() || c->get<int64_t>() < 1 || c->get<int64_t>() > 1000000) {
        return SendError(res, 400, "`count` must be an integer in 1..1000000");
      }
      count = c->get<int64_t>();
    }
    if (action == "restart") {
      engine_->Restart();
      if (events_ != nullptr) events_->publisher().Flush(std::chrono::seconds(5));
    } else if (action == "set_health") {
      auto h = BoolField(*body, "healthy", true);
      if (!h.ok()) return SendStatus(res, h.status());
      healthy_.store(*h);
    } else if (action == "drop_batches" || action == "pause_publisher" ||
               action == "resume_publisher" || action == "corrupt_next_payload" ||
               action == "ignore_replay") {
      if (events_ == nullptr) {
        return SendError(res, 409, "no KV event publisher (start with --kv-events-endpoint)");
      }
      kvpublish::Publisher& p = events_->publisher();
      if (action == "drop_batches") {
        // DropNext returns Status in newer kvevents revisions and void in older ones.
        absl::Status st = AsStatus([&] { return p.DropNext(static_cast<int>(count)); });
        if (!st.ok()) return SendStatus(res, st);
      } else if (action == "pause_publisher") {
        p.Pause();
      } else if (action == "resume_publisher") {
        p.Resume();
      } else if (action == "corrupt_next_payload") {
        events_->CorruptNext(static_cast<int>(count));
      } else {
        auto on = BoolField(*body, "enabled", true);
        if (!on.ok()) return SendStatus(res, on.status());
        p.SetIgnoreReplay(*on);
      }
    } else {
      return SendError(res, 400,
                       fmt::format("unknown action `{}` (drop_batches, restart, pause_publisher, "
                                   "resume_publisher, corrupt_next_payload, ignore_replay, "
                                   "set_health)",
                                   action));
    }
    SendJson(res, {{"ok", true}, {"action", action}});
  });
}

}  // namespace aibrix::enginesim
