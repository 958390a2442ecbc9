#include "tests/util/fake_envoy.h"

#include <algorithm>

#include "fmt/format.h"
#include "grpc/health/v1/health.grpc.pb.h"

namespace aibrix::testing {

namespace {

using Response = ext_proc_v3::ProcessingResponse;

bool StartsWith(const std::string& s, std::string_view prefix) {
  return s.size() >= prefix.size() && std::equal(prefix.begin(), prefix.end(), s.begin());
}

void Set(HeaderList& headers, const std::string& key, const std::string& value) {
  for (auto& [k, v] : headers) {
    if (k == key) {
      v = value;
      return;
    }
  }
  headers.emplace_back(key, value);
}

void Remove(HeaderList& headers, const std::string& key) {
  headers.erase(
      std::remove_if(headers.begin(), headers.end(), [&](const auto& h) { return h.first == key; }),
      headers.end());
}

// Envoy's mutation checker (mutation_utils.cc): returns false when the mutation is rejected
// (the caller answers 500); disallowed headers are skipped.
bool ApplyMutation(HeaderList& headers, const ext_proc_v3::HeaderMutation& mutation, bool request) {
  for (const auto& option : mutation.set_headers()) {
    const auto& h = option.header();
    if (!h.value().empty() && !h.raw_value().empty()) return false;
    const std::string& key = h.key();
    if (StartsWith(key, "x-envoy-") || key == "host" || key == ":authority" || key == ":scheme" ||
        key == ":method" || (!request && key == ":path")) {
      continue;
    }
    // The deprecated `append` is the only append flag ext_proc honours (append_action is
    // ignored: Envoy issue #36982).
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wdeprecated-declarations"
    const bool append = option.has_append() && option.append().value();
#pragma GCC diagnostic pop
    const std::string value = h.raw_value();  // value-only ⇒ empty (Envoy ≥ 1.32)
    if (append) {
      headers.emplace_back(key, value);
    } else {
      Set(headers, key, value);
    }
  }
  for (const std::string& key : mutation.remove_headers()) {
    if (StartsWith(key, ":") || key == "host") continue;
    Remove(headers, key);
  }
  return true;
}

// A "host:port" Envoy's ORIGINAL_DST accepts (IPv6 only bracketed).
bool ValidHostPort(const std::string& target) {
  if (target.empty()) return false;
  if (target.front() == '[') return target.find("]:") != std::string::npos;
  return std::count(target.begin(), target.end(), ':') == 1;
}

std::string MetadataEndpoint(const Response& response) {
  const auto& fields = response.dynamic_metadata().fields();
  auto lb = fields.find("envoy.lb");
  if (lb == fields.end()) return {};
  auto endpoint = lb->second.struct_value().fields().find("x-gateway-destination-endpoint");
  if (endpoint == lb->second.struct_value().fields().end()) return {};
  return endpoint->second.string_value();
}

void LocalReply(EnvoyOutcome& out, int status, std::string details) {
  out.kind = EnvoyOutcome::Kind::kLocalReply;
  out.status = status;
  out.details = std::move(details);
  out.body.clear();
}

}  // namespace

std::string Find(const HeaderList& headers, const std::string& key) {
  for (const auto& [k, v] : headers) {
    if (k == key) return v;
  }
  return {};
}

EnvoyRequest PostRequest(const std::string& path, const std::string& body,
                         const HeaderList& extra) {
  EnvoyRequest request;
  request.headers = {{":authority", "gateway.local"},
                     {":path", path},
                     {":method", "POST"},
                     {":scheme", "http"},
                     {"content-type", "application/json"},
                     {"content-length", std::to_string(body.size())},
                     {"user-agent", "fake-envoy-test"},
                     {"x-forwarded-proto", "http"},
                     {"x-request-id", "6f1c9a52-6d4e-4c62-9c3e-0d1f4ad2b001"}};
  for (const auto& [k, v] : extra) Set(request.headers, k, v);
  request.body = body;
  return request;
}

ext_proc_v3::ProcessingRequest RequestHeadersMessage(const HeaderList& headers,
                                                     bool end_of_stream) {
  ext_proc_v3::ProcessingRequest message;
  auto* h = message.mutable_request_headers();
  for (const auto& [k, v] : headers) {
    auto* header = h->mutable_headers()->add_headers();
    header->set_key(k);
    header->set_raw_value(v);
  }
  h->set_end_of_stream(end_of_stream);
  return message;
}

ext_proc_v3::ProcessingRequest BodyMessage(bool request, const std::string& body,
                                           bool end_of_stream) {
  ext_proc_v3::ProcessingRequest message;
  auto* b = request ? message.mutable_request_body() : message.mutable_response_body();
  b->set_body(body);
  b->set_end_of_stream(end_of_stream);
  return message;
}

ext_proc_v3::ProcessingRequest ResponseHeadersMessage(int status, const HeaderList& headers,
                                                      bool end_of_stream) {
  ext_proc_v3::ProcessingRequest message;
  auto* h = message.mutable_response_headers();
  auto* header = h->mutable_headers()->add_headers();
  header->set_key(":status");
  header->set_raw_value(std::to_string(status));
  for (const auto& [k, v] : headers) {
    header = h->mutable_headers()->add_headers();
    header->set_key(k);
    header->set_raw_value(v);
  }
  h->set_end_of_stream(end_of_stream);
  return message;
}

std::vector<std::string> SplitAtRandom(const std::string& text, int cuts, std::mt19937& rng) {
  std::vector<size_t> at;
  if (text.size() > 1) {
    std::uniform_int_distribution<size_t> pick(1, text.size() - 1);
    for (int i = 0; i < cuts; ++i) at.push_back(pick(rng));
  }
  std::sort(at.begin(), at.end());
  at.erase(std::unique(at.begin(), at.end()), at.end());
  std::vector<std::string> chunks;
  size_t start = 0;
  for (size_t cut : at) {
    chunks.push_back(text.substr(start, cut - start));
    start = cut;
  }
  if (start < text.size() || chunks.empty()) chunks.push_back(text.substr(start));
  return chunks;
}

FakeEnvoy::FakeEnvoy(const std::string& target)
    : channel_(grpc::CreateChannel(target, grpc::InsecureChannelCredentials())),
      stub_(ext_proc_v3::ExternalProcessor::NewStub(channel_)) {}

std::unique_ptr<FakeEnvoy::Stream> FakeEnvoy::Open(std::chrono::milliseconds deadline) {
  auto stream = std::make_unique<Stream>();
  stream->context_.set_deadline(std::chrono::system_clock::now() + deadline);
  stream->stream_ = stub_->Process(&stream->context_);
  return stream;
}

bool FakeEnvoy::Stream::Write(const ext_proc_v3::ProcessingRequest& message) {
  return stream_->Write(message);
}
bool FakeEnvoy::Stream::Read(ext_proc_v3::ProcessingResponse* response) {
  return stream_->Read(response);
}
bool FakeEnvoy::Stream::WritesDone() { return stream_->WritesDone(); }
grpc::Status FakeEnvoy::Stream::Finish() { return stream_->Finish(); }
void FakeEnvoy::Stream::Cancel() { context_.TryCancel(); }

absl::StatusOr<bool> FakeEnvoy::Check(const std::string& service) {
  auto stub = grpc::health::v1::Health::NewStub(channel_);
  grpc::ClientContext context;
  context.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(10));
  grpc::health::v1::HealthCheckRequest request;
  request.set_service(service);
  grpc::health::v1::HealthCheckResponse response;
  grpc::Status status = stub->Check(&context, request, &response);
  if (!status.ok()) {
    return absl::Status(static_cast<absl::StatusCode>(status.error_code()), status.error_message());
  }
  return response.status() == grpc::health::v1::HealthCheckResponse::SERVING;
}

EnvoyOutcome FakeEnvoy::Exchange(const EnvoyRequest& request, const Upstream& upstream,
                                 CloseMode close, bool response_eos_empty) {
  EnvoyOutcome out;
  auto stream = Open();
  bool attached = true;   // the processor still takes part
  bool finished = false;  // stream->Finish() was called
  bool sent_downstream = false;
  // The processor's end: OK ⇒ continue without it; an error ⇒ Envoy's fail-closed reply.
  auto processor_gone = [&]() -> bool {
    attached = false;
    if (!finished) {
      out.processor_status = stream->Finish();
      finished = true;
    }
    if (out.processor_status.ok()) return true;
    if (sent_downstream) {
      out.kind = EnvoyOutcome::Kind::kReset;
    } else {
      LocalReply(out, 500,
                 fmt::format("ext_proc_error_gRPC_error_{}{{{}}}",
                             static_cast<int>(out.processor_status.error_code()),
                             out.processor_status.error_message()));
    }
    return false;
  };
  // Reads the answer to the pending message; true when the exchange goes on (answered as
  // expected, or the processor left with OK), false when the outcome is final.
  auto expect = [&](Response::ResponseCase expected, Response* answer) -> bool {
    if (!stream->Read(answer)) return processor_gone();
    ++out.replies;
    out.answers.push_back(*answer);
    if (answer->has_immediate_response()) {
      const auto& immediate = answer->immediate_response();
      if (sent_downstream) {
        out.kind = EnvoyOutcome::Kind::kReset;
        return false;
      }
      HeaderList headers;
      ApplyMutation(headers, immediate.headers(), false);
      LocalReply(out, std::max(200, static_cast<int>(immediate.status().code())),
                 immediate.details());
      out.response_headers = std::move(headers);
      out.body = immediate.body();
      return false;
    }
    if (answer->response_case() != expected) {
      if (sent_downstream) {
        out.kind = EnvoyOutcome::Kind::kReset;
      } else {
        LocalReply(out, 500, "ext_proc_error_spurious_message");
      }
      return false;
    }
    return true;
  };
  auto finish_stream = [&]() {
    if (finished) return;
    stream->WritesDone();
    if (close == CloseMode::kHalfCloseThenCancel) stream->Cancel();
    out.processor_status = stream->Finish();
    finished = true;
  };

  HeaderList headers = request.headers;
  std::string body = request.body;
  std::string metadata_endpoint;
  // 1. Request headers (the body follows when there is one).
  {
    auto message = RequestHeadersMessage(headers, body.empty());
    *message.mutable_metadata_context() = request.metadata.metadata_context();
    Response answer;
    if (!stream->Write(message)) {
      if (!processor_gone()) return out;
    } else if (!expect(Response::kRequestHeaders, &answer)) {
      finish_stream();
      return out;
    } else if (attached) {
      const auto& common = answer.request_headers().response();
      if (!ApplyMutation(headers, common.header_mutation(), true)) {
        LocalReply(out, 500, "ext_proc_error_invalid_header_mutation");
        finish_stream();
        return out;
      }
      if (common.clear_route_cache() && common.has_header_mutation()) out.clear_route_cache = true;
      if (metadata_endpoint.empty()) metadata_endpoint = MetadataEndpoint(answer);
    }
  }
  // 2. The buffered body, in one message.
  if (attached && !body.empty()) {
    Response answer;
    if (!stream->Write(BodyMessage(true, body, true))) {
      if (!processor_gone()) return out;
    } else if (!expect(Response::kRequestBody, &answer)) {
      finish_stream();
      return out;
    } else if (attached) {
      const auto& common = answer.request_body().response();
      if (!ApplyMutation(headers, common.header_mutation(), true)) {
        LocalReply(out, 500, "ext_proc_error_invalid_header_mutation");
        finish_stream();
        return out;
      }
      if (common.clear_route_cache() && common.has_header_mutation()) out.clear_route_cache = true;
      if (common.body_mutation().has_body()) {
        const std::string length = Find(headers, "content-length");
        if (!length.empty() && length != std::to_string(common.body_mutation().body().size())) {
          LocalReply(out, 500,
                     "mismatch_between_content_length_and_the_length_of_the_mutated_body");
          finish_stream();
          return out;
        }
        body = common.body_mutation().body();
      }
      const std::string from_metadata = MetadataEndpoint(answer);
      if (!from_metadata.empty()) metadata_endpoint = from_metadata;
    }
  }
  // 3. The route, re-resolved on the mutated headers.
  out.route.endpoint = Find(headers, "x-gateway-destination-endpoint");
  out.route.metadata_endpoint = metadata_endpoint;
  if (!Find(headers, "routing-strategy").empty()) {
    out.route.target_pod = Find(headers, "target-pod");
    if (!ValidHostPort(out.route.target_pod)) {
      LocalReply(out, 503, "original_dst_bad_target");
      finish_stream();
      return out;
    }
  } else if (!out.route.endpoint.empty() || !metadata_endpoint.empty()) {
    if (!out.route.endpoint.empty() && !metadata_endpoint.empty() &&
        out.route.endpoint != metadata_endpoint) {
      LocalReply(out, 503, "gie_destination_mismatch");
      finish_stream();
      return out;
    }
  } else if (!Find(headers, "model").empty()) {
    out.route.model = Find(headers, "model");
  } else {
    LocalReply(out, 503, "no_route");  // AIBrix's reserved route has no real backend
    finish_stream();
    return out;
  }
  out.upstream_headers = headers;
  UpstreamResponse response = upstream(out.route, headers, body);
  // 4. Response headers.
  HeaderList response_headers = response.headers;
  const bool no_body = response.chunks.empty() && !response_eos_empty;
  if (attached) {
    Response answer;
    if (!stream->Write(ResponseHeadersMessage(response.status, response_headers, no_body))) {
      if (!processor_gone()) return out;
    } else if (!expect(Response::kResponseHeaders, &answer)) {
      finish_stream();
      return out;
    } else if (attached) {
      ApplyMutation(response_headers, answer.response_headers().response().header_mutation(),
                    false);
    }
  }
  out.kind = EnvoyOutcome::Kind::kProxied;
  out.status = response.status;
  out.response_headers = response_headers;
  sent_downstream = true;
  // 5. The streamed body: every chunk goes out at once, the answers are read afterwards.
  std::vector<ext_proc_v3::ProcessingRequest> messages;
  for (size_t i = 0; i < response.chunks.size(); ++i) {
    const bool last = i + 1 == response.chunks.size() && !response_eos_empty;
    messages.push_back(BodyMessage(false, response.chunks[i], last));
  }
  if (response_eos_empty) messages.push_back(BodyMessage(false, "", true));
  size_t written = 0;
  if (attached) {
    for (const auto& message : messages) {
      if (!stream->Write(message)) break;
      ++written;
    }
  }
  for (size_t i = 0; i < messages.size(); ++i) {
    if (attached && i < written) {
      Response answer;
      if (!expect(Response::kResponseBody, &answer)) {
        if (out.kind == EnvoyOutcome::Kind::kReset) {
          finish_stream();
          return out;
        }
      } else if (attached && answer.response_body().response().body_mutation().has_body()) {
        out.body += answer.response_body().response().body_mutation().body();
        continue;
      }
    }
    out.body += messages[i].response_body().body();
  }
  finish_stream();
  return out;
}

}  // namespace aibrix::testing
