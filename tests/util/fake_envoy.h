// A fake Envoy for the ext_proc tests and benchmark: a C++ gRPC client that drives
// envoy.service.ext_proc.v3.ExternalProcessor/Process streams as Envoy's ext_proc filter does
// with AIBrix's configuration (request headers SEND, request body BUFFERED, response headers
// SEND, response body STREAMED, trailers SKIP; ../shared/protocols/ext_proc.md §4.2), and
// applies the answers with Envoy's rules:
//  * each reply must match the pending message (else "spurious": local 500);
//  * header mutations: raw_value only (value and raw_value both set ⇒ local 500; value only ⇒
//    the header becomes empty), overwrite, x-envoy-*/:authority/:method/:scheme/host not
//    settable and pseudo-headers/host not removable (ignored); clear_route_cache counts only
//    with a header mutation in the request direction;
//  * immediate_response ⇒ local reply (status < 200 ⇒ 200); after the response headers went
//    downstream ⇒ the stream is reset;
//  * the processor closing OK ⇒ the rest passes through untouched; closing with an error ⇒
//    local 500 with details ext_proc_error_gRPC_error_<code> (reset once headers are out);
//  * routing after the body reply: routing-strategy present ⇒ ORIGINAL_DST to target-pod
//    ("ip:port", IPv6 only in brackets); else model ⇒ the model's route; GIE ⇒
//    x-gateway-destination-endpoint (which must equal the envoy.lb metadata when both are set).
// Response bodies are sent chunk by chunk without waiting for the replies (Envoy queues them),
// then the replies are read.
//
// Thread safety: a FakeEnvoy may be used from many threads at once (gRPC stubs are); a Stream
// belongs to one thread.
#pragma once

#include <chrono>
#include <functional>
#include <memory>
#include <random>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/statusor.h"
#include "envoy/service/ext_proc/v3/external_processor.grpc.pb.h"
#include "grpcpp/grpcpp.h"

namespace aibrix::testing {

namespace ext_proc_v3 = ::envoy::service::ext_proc::v3;

// Headers as Envoy holds them: lower-case keys, pseudo-headers first.
using HeaderList = std::vector<std::pair<std::string, std::string>>;
// The first value of `key` in `headers`; "" when absent.
std::string Find(const HeaderList& headers, const std::string& key);

struct EnvoyRequest {
  HeaderList headers;  // with :path, :method, ...
  std::string body;
  // Envoy's metadata_context (GIE's subset hint) as given.
  ext_proc_v3::ProcessingRequest metadata;
};
// A POST of `body` to `path` with the headers Envoy forwards (x-request-id, content-type,
// content-length, ...) plus `extra`.
EnvoyRequest PostRequest(const std::string& path, const std::string& body,
                         const HeaderList& extra = {});

// Where the fake Envoy sends the request after the body reply.
struct Route {
  std::string target_pod;         // ORIGINAL_DST: the target-pod header ("ip:port") when routed
  std::string model;              // the model header, when Envoy routes by model
  std::string endpoint;           // GIE: x-gateway-destination-endpoint
  std::string metadata_endpoint;  // GIE: dynamic metadata envoy.lb
};

// The upstream's answer as Envoy reads it (the chunks are the reads Envoy would make).
struct UpstreamResponse {
  int status = 200;
  HeaderList headers;  // without :status
  std::vector<std::string> chunks;
};
using Upstream = std::function<UpstreamResponse(const Route& route, const HeaderList& headers,
                                                const std::string& body)>;

// One exchange as the downstream client sees it.
struct EnvoyOutcome {
  enum class Kind {
    kProxied,     // the upstream answered through the processor
    kLocalReply,  // Envoy answered itself (immediate_response, ext_proc error, no route)
    kReset,       // the downstream stream was reset after its headers went out
  };
  Kind kind = Kind::kLocalReply;
  int status = 0;
  std::string details;          // a local reply's %RESPONSE_CODE_DETAILS%
  HeaderList upstream_headers;  // the request headers as sent upstream
  HeaderList response_headers;  // as sent downstream
  std::string body;             // as sent downstream
  Route route;
  bool clear_route_cache = false;  // honoured on a request-direction reply
  grpc::Status processor_status;   // how the processor ended the stream
  int replies = 0;                 // answers read
  // The answers, in order (for the tests' closer checks).
  std::vector<ext_proc_v3::ProcessingResponse> answers;
};

// How Envoy ends a stream that is still open when the exchange is over.
enum class CloseMode {
  kGraceful,             // half-close, then wait for the processor's status
  kHalfCloseThenCancel,  // half-close, then reset at once (older Envoy)
};

class FakeEnvoy {
 public:
  // Connects (lazily) to the processor at `target` ("127.0.0.1:port"), plaintext HTTP/2.
  explicit FakeEnvoy(const std::string& target);

  // Runs `request` through the processor and `upstream` the way Envoy does.
  // `response_eos_empty`: end the response with an empty end-of-stream chunk (HTTP/1.1
  // chunked upstreams do) instead of flagging the last chunk.
  EnvoyOutcome Exchange(const EnvoyRequest& request, const Upstream& upstream,
                        CloseMode close = CloseMode::kGraceful, bool response_eos_empty = false);

  // A raw stream for scripted tests (bad input, cancel, half-close).
  class Stream {
   public:
    bool Write(const ext_proc_v3::ProcessingRequest& message);
    // The next answer; false at the end of the stream.
    bool Read(ext_proc_v3::ProcessingResponse* response);
    bool WritesDone();
    grpc::Status Finish();
    void Cancel();
    grpc::ClientContext& context() { return context_; }

   private:
    friend class FakeEnvoy;
    grpc::ClientContext context_;
    std::unique_ptr<
        grpc::ClientReaderWriter<ext_proc_v3::ProcessingRequest, ext_proc_v3::ProcessingResponse>>
        stream_;
  };
  // Opens a Process stream with a whole-stream deadline of `deadline`.
  std::unique_ptr<Stream> Open(std::chrono::milliseconds deadline = std::chrono::seconds(30));

  // grpc.health.v1.Health/Check of `service`: true for SERVING, false for NOT_SERVING; the
  // gRPC error otherwise.
  absl::StatusOr<bool> Check(const std::string& service);

 private:
  std::shared_ptr<grpc::Channel> channel_;
  std::unique_ptr<ext_proc_v3::ExternalProcessor::Stub> stub_;
};

// Messages as Envoy builds them.
ext_proc_v3::ProcessingRequest RequestHeadersMessage(const HeaderList& headers, bool end_of_stream);
ext_proc_v3::ProcessingRequest BodyMessage(bool request, const std::string& body,
                                           bool end_of_stream);
ext_proc_v3::ProcessingRequest ResponseHeadersMessage(int status, const HeaderList& headers,
                                                      bool end_of_stream);

// `text` cut at `cuts` random places (chunks may be single bytes; none empty).
std::vector<std::string> SplitAtRandom(const std::string& text, int cuts, std::mt19937& rng);

}  // namespace aibrix::testing
