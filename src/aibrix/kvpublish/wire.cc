#include "aibrix/kvpublish/wire.h"

#include <charconv>
#include <utility>
#include <vector>

#include "zmq.hpp"

namespace aibrix::kvpublish {

std::string Seq8(uint64_t seq) {
  std::string s(8, '\0');
  for (int i = 0; i < 8; ++i) s[i] = static_cast<char>(seq >> (8 * (7 - i)));
  return s;
}

std::string UnmapEndpoint(std::string endpoint) {
  const std::string mapped = "tcp://[::ffff:";
  if (endpoint.rfind(mapped, 0) == 0) {
    const size_t close = endpoint.find(']');
    if (close != std::string::npos && endpoint.find('.') < close) {
      return "tcp://" + endpoint.substr(mapped.size(), close - mapped.size()) +
             endpoint.substr(close + 1);
    }
  }
  return endpoint;
}

int EndpointPort(const std::string& endpoint) {
  if (endpoint.rfind("tcp://", 0) != 0) return 0;
  const size_t colon = endpoint.rfind(':');
  if (colon == std::string::npos || colon < 6) return 0;
  int port = 0;
  const char* b = endpoint.data() + colon + 1;
  const char* e = endpoint.data() + endpoint.size();
  auto [p, ec] = std::from_chars(b, e, port);
  if (ec != std::errc() || p != e) return 0;
  return port;
}

zmq::message_t SharedMessage(const Payload& payload) {
  // libzmq copies messages below its "very small message" size anyway; zero-copy only pays
  // for larger ones and costs an allocation of the hint for small ones.
  if (payload->size() <= 64) return zmq::message_t(payload->data(), payload->size());
  auto* hint = new Payload(payload);
  return zmq::message_t(
      const_cast<char*>(payload->data()), payload->size(),
      [](void*, void* h) { delete static_cast<Payload*>(h); }, hint);
}

void SendLive(zmq::socket_t& pub, std::string_view topic, uint64_t seq, const Payload& payload) {
  const std::string seq8 = Seq8(seq);
  pub.send(zmq::buffer(topic), zmq::send_flags::sndmore);
  pub.send(zmq::buffer(seq8), zmq::send_flags::sndmore);
  pub.send(SharedMessage(payload), zmq::send_flags::none);
}

void ReplayBuffer::Add(uint64_t seq, Payload payload) {
  if (max_steps_ == 0) return;
  bytes_ += payload->size();
  entries_.push_back(Entry{seq, std::move(payload)});
  while (entries_.size() > max_steps_ ||
         (max_bytes_ > 0 && bytes_ > max_bytes_ && entries_.size() > 1)) {
    bytes_ -= entries_.front().payload->size();
    entries_.pop_front();
  }
}

void ReplayBuffer::Clear() {
  entries_.clear();
  bytes_ = 0;
}

ReplayCounts ServeReplayRequests(zmq::socket_t& router, const ReplayBuffer& buffer,
                                 ReplyLayout layout, std::string_view topic, bool ignore,
                                 std::atomic<uint64_t>* answered) {
  ReplayCounts counts;
  const bool post = layout == ReplyLayout::kPost45177;
  while (true) {
    std::vector<zmq::message_t> frames;
    while (true) {
      zmq::message_t msg;
      if (!router.recv(msg, zmq::recv_flags::dontwait)) break;
      const bool more = msg.more();
      frames.push_back(std::move(msg));
      if (!more) break;
    }
    if (frames.empty()) return counts;
    if (ignore) continue;
    // vLLM: exactly [identity, "", start_seq(8)], anything else is ignored without a reply.
    if (frames.size() != 3 || frames[1].size() != 0 || frames[2].size() != 8) {
      ++counts.malformed;
      continue;
    }
    uint64_t start = 0;
    const auto* p = static_cast<const unsigned char*>(frames[2].data());
    for (int i = 0; i < 8; ++i) start = (start << 8) | p[i];
    ++counts.requests;
    if (answered != nullptr) answered->fetch_add(1);
    const std::string identity = frames[0].to_string();
    for (const auto& entry : buffer.entries()) {
      if (entry.seq < start) continue;
      router.send(zmq::buffer(identity), zmq::send_flags::sndmore);
      router.send(zmq::const_buffer(nullptr, 0), zmq::send_flags::sndmore);
      if (post) router.send(zmq::buffer(topic), zmq::send_flags::sndmore);
      router.send(zmq::buffer(Seq8(entry.seq)), zmq::send_flags::sndmore);
      router.send(SharedMessage(entry.payload), zmq::send_flags::none);
      ++counts.replayed_batches;
    }
    router.send(zmq::buffer(identity), zmq::send_flags::sndmore);
    router.send(zmq::const_buffer(nullptr, 0), zmq::send_flags::sndmore);
    if (post) router.send(zmq::const_buffer(nullptr, 0), zmq::send_flags::sndmore);
    router.send(zmq::buffer(Seq8(~uint64_t{0})), zmq::send_flags::sndmore);
    router.send(zmq::const_buffer(nullptr, 0), zmq::send_flags::none);
  }
}

}  // namespace aibrix::kvpublish
