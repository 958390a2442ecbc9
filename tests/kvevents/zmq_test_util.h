// Test helpers for raw ZMQ clients of a Publisher: a SUB that is known to be subscribed
// (handshake with probe messages instead of sleeping), and multipart receive with a deadline.
#pragma once

#include <chrono>
#include <optional>
#include <string>
#include <vector>

#include "aibrix/kvpublish/publisher.h"
#include "zmq.hpp"

namespace aibrix::kvevents::testing {

using kvpublish::Publisher;

// Receives one multipart message within `timeout`; nullopt on timeout.
inline std::optional<std::vector<std::string>> RecvMultipart(
    zmq::socket_t& s, std::chrono::milliseconds timeout = std::chrono::seconds(5)) {
  zmq::pollitem_t item{s.handle(), 0, ZMQ_POLLIN, 0};
  if (zmq::poll(&item, 1, timeout) <= 0) return std::nullopt;
  std::vector<std::string> frames;
  while (true) {
    zmq::message_t m;
    if (!s.recv(m, zmq::recv_flags::none)) break;
    frames.push_back(m.to_string());
    if (!m.more()) break;
  }
  return frames;
}

inline void SendMultipart(zmq::socket_t& s, const std::vector<std::string>& frames) {
  for (size_t i = 0; i < frames.size(); ++i) {
    s.send(zmq::buffer(frames[i]),
           i + 1 < frames.size() ? zmq::send_flags::sndmore : zmq::send_flags::none);
  }
}

// Sends probe messages ("probe" single frame, no sequence number) until `sub` receives one,
// then drains the rest. Returns false if nothing arrived within 5 s.
inline bool WaitSubscribed(Publisher& pub, zmq::socket_t& sub) {
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(5);
  while (std::chrono::steady_clock::now() < deadline) {
    if (!pub.SendRawMultipart({"probe"}).ok()) return false;
    if (RecvMultipart(sub, std::chrono::milliseconds(20))) {
      while (RecvMultipart(sub, std::chrono::milliseconds(20))) {
      }
      return true;
    }
  }
  return false;
}

inline std::string Seq8(uint64_t seq) {
  std::string s(8, '\0');
  for (int i = 0; i < 8; ++i) s[i] = static_cast<char>(seq >> (8 * (7 - i)));
  return s;
}

}  // namespace aibrix::kvevents::testing
