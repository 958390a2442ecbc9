// The engine side of vLLM's KV event transport (../shared/protocols/README.md §1.3, §1.4),
// shared by Publisher (one engine, its own thread) and Fleet (many engines, one thread):
// the live message [topic, seq (8 bytes BE), payload], the bounded replay buffer and the
// ROUTER replay service answering [identity, "", start_seq] in the pre- or post-PR #45177
// layout.
//
// Payloads are held as shared immutable strings and sent zero-copy, so a batch that sits in
// the replay buffer and in the PUB queue (or a 60 MB message sent many times) is stored once.
//
// Thread safety: ReplayBuffer is a plain value (one owner thread). The functions take a
// socket, which must only be used by the calling thread.
#pragma once

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <deque>
#include <memory>
#include <string>
#include <string_view>

namespace zmq {
class socket_t;
class message_t;
}  // namespace zmq

namespace aibrix::kvpublish {

// Layout of replay replies as a DEALER receives them (§1.4).
enum class ReplyLayout {
  kPre45177,   // ["", seq8, payload] ... end ["", ff*8, ""]
  kPost45177,  // ["", topic, seq8, payload] ... end ["", "", ff*8, ""]
};

using Payload = std::shared_ptr<const std::string>;

// The 8-byte big-endian sequence frame.
std::string Seq8(uint64_t seq);

// ZMQ reports an IPv4 address bound on an IPv6-enabled socket as tcp://[::ffff:a.b.c.d]:p;
// returns tcp://a.b.c.d:p for those and `endpoint` unchanged otherwise.
std::string UnmapEndpoint(std::string endpoint);

// "tcp://host:port" → port; 0 when absent or not numeric.
int EndpointPort(const std::string& endpoint);

// A zero-copy message holding a reference to `payload` until libzmq is done with it.
zmq::message_t SharedMessage(const Payload& payload);

// Sends one live message [topic, seq8, payload] on `pub`. Throws zmq::error_t like cppzmq.
void SendLive(zmq::socket_t& pub, std::string_view topic, uint64_t seq, const Payload& payload);

// The last batches of an engine, oldest first, bounded by a count (vLLM's buffer_steps) and,
// unlike vLLM, optionally by bytes (0 = no byte bound; the newest batch is always kept).
class ReplayBuffer {
 public:
  ReplayBuffer(size_t max_steps, size_t max_bytes) : max_steps_(max_steps), max_bytes_(max_bytes) {}

  // Appends (seq, payload) and evicts the oldest entries beyond the bounds. No-op when
  // max_steps is 0.
  void Add(uint64_t seq, Payload payload);
  void Clear();
  size_t size() const { return entries_.size(); }
  size_t bytes() const { return bytes_; }

  struct Entry {
    uint64_t seq;
    Payload payload;
  };
  const std::deque<Entry>& entries() const { return entries_; }

 private:
  size_t max_steps_;
  size_t max_bytes_;
  size_t bytes_ = 0;
  std::deque<Entry> entries_;
};

struct ReplayCounts {
  uint64_t requests = 0;          // well-formed requests answered
  uint64_t malformed = 0;         // requests ignored (vLLM: logged, no reply)
  uint64_t replayed_batches = 0;  // data messages sent
};

// Reads every replay request waiting on `router` (never blocks) and answers each one: every
// buffered batch with seq >= start_seq, oldest first, then the end marker, in `layout`.
// Malformed requests (not exactly [identity, "", 8-byte seq]) get no reply. With `ignore`,
// requests are read and dropped (a replay timeout as the client sees it). `answered`, when
// given, counts each well-formed request before its reply is sent (a client that has the
// reply sees the count). Throws zmq::error_t like cppzmq.
ReplayCounts ServeReplayRequests(zmq::socket_t& router, const ReplayBuffer& buffer,
                                 ReplyLayout layout, std::string_view topic, bool ignore = false,
                                 std::atomic<uint64_t>* answered = nullptr);

}  // namespace aibrix::kvpublish
