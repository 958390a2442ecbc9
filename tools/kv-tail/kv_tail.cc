#include "tools/kv-tail/kv_tail.h"

#include <chrono>
#include <iostream>
#include <memory>
#include <variant>
#include <vector>

#include "aibrix/common/strings.h"
#include "aibrix/kvevents/decoder.h"
#include "fmt/format.h"
#include "zmq.hpp"

namespace aibrix::kvtail {
namespace {

using kvevents::DecodeBatch;

constexpr uint64_t kEndSeq = ~uint64_t{0};

std::string Dump(const nlohmann::json& j) {
  return j.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
}

template <typename T>
nlohmann::json Opt(const std::optional<T>& v) {
  return v ? nlohmann::json(*v) : nlohmann::json(nullptr);
}

bool FromHex(std::string_view text, std::string* out) {
  out->clear();
  auto digit = [](char c) -> int {
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    return -1;
  };
  std::string compact;
  for (char c : text) {
    if (c == ' ' || c == '\t' || c == '\r' || c == '\n') continue;
    compact.push_back(c);
  }
  if (compact.size() % 2 != 0) return false;
  for (size_t i = 0; i < compact.size(); i += 2) {
    const int hi = digit(compact[i]);
    const int lo = digit(compact[i + 1]);
    if (hi < 0 || lo < 0) return false;
    out->push_back(static_cast<char>((hi << 4) | lo));
  }
  return true;
}

uint64_t Seq(const zmq::message_t& m) {
  const auto* p = static_cast<const unsigned char*>(m.data());
  uint64_t v = 0;
  for (size_t i = 0; i < 8; ++i) v = (v << 8) | p[i];
  return v;
}

std::vector<zmq::message_t> Recv(zmq::socket_t& s) {
  std::vector<zmq::message_t> frames;
  while (true) {
    zmq::message_t m;
    if (!s.recv(m, zmq::recv_flags::none)) break;
    const bool more = m.more();
    frames.push_back(std::move(m));
    if (!more) break;
  }
  return frames;
}

nlohmann::json Message(uint64_t seq, std::string_view topic, std::string_view payload,
                       bool replayed) {
  auto batch = DecodeBatch(payload);
  nlohmann::json j;
  j["seq"] = seq;
  j["topic"] = std::string(topic);
  if (replayed) j["replayed"] = true;
  if (!batch.ok()) {
    j["error"] = std::string(common::AsStd(batch.status().message()));
    return j;
  }
  nlohmann::json body = BatchToJson(*batch);
  j["ts"] = std::move(body["ts"]);
  j["events"] = std::move(body["events"]);
  j["data_parallel_rank"] = std::move(body["data_parallel_rank"]);
  return j;
}

int DecodeHex(std::istream& in, std::ostream& out) {
  int rc = 0;
  std::string line, bytes;
  while (std::getline(in, line)) {
    if (line.find_first_not_of(" \t\r") == std::string::npos) continue;
    if (!FromHex(line, &bytes)) {
      out << Dump({{"error", "not a hex string"}}) << "\n";
      rc = 2;
      continue;
    }
    auto batch = DecodeBatch(bytes);
    if (!batch.ok()) {
      out << Dump({{"error", std::string(common::AsStd(batch.status().message()))}}) << "\n";
      rc = 2;
      continue;
    }
    out << Dump(BatchToJson(*batch)) << "\n";
  }
  out.flush();
  return rc;
}

int Tail(const KvTailOptions& o, std::ostream& out) {
  try {
    zmq::context_t ctx;
    zmq::socket_t sub(ctx, zmq::socket_type::sub);
    sub.set(zmq::sockopt::linger, 0);
    sub.set(zmq::sockopt::ipv6, 1);
    sub.set(zmq::sockopt::subscribe, o.topic);
    sub.connect(o.endpoint);
    uint64_t printed = 0;
    auto done = [&] { return o.count > 0 && printed >= o.count; };
    if (o.from_seq && !o.replay_endpoint.empty()) {
      zmq::socket_t dealer(ctx, zmq::socket_type::dealer);
      dealer.set(zmq::sockopt::linger, 0);
      dealer.set(zmq::sockopt::ipv6, 1);
      dealer.set(zmq::sockopt::rcvtimeo, o.replay_timeout_ms);
      dealer.connect(o.replay_endpoint);
      std::string seq8(8, '\0');
      for (int i = 0; i < 8; ++i) seq8[i] = static_cast<char>(*o.from_seq >> (8 * (7 - i)));
      dealer.send(zmq::const_buffer(nullptr, 0), zmq::send_flags::sndmore);
      dealer.send(zmq::buffer(seq8), zmq::send_flags::none);
      while (!done()) {
        auto f = Recv(dealer);
        if (f.empty()) {
          out << Dump({{"error", "replay timed out"}}) << "\n";
          break;
        }
        const size_t n = f.size();
        if ((n != 3 && n != 4) || f[0].size() != 0 || f[n - 2].size() != 8) {
          out << Dump({{"error", fmt::format("malformed replay reply ({} frames)", n)}}) << "\n";
          break;
        }
        const uint64_t seq = Seq(f[n - 2]);
        if (seq == kEndSeq && f[n - 1].size() == 0) break;
        out << Dump(Message(seq, n == 4 ? f[1].to_string_view() : "", f[n - 1].to_string_view(),
                            true))
            << "\n";
        ++printed;
      }
      out.flush();
    }
    while (!done()) {
      auto f = Recv(sub);
      if (f.size() != 3 || f[1].size() != 8) {
        out << Dump({{"error", fmt::format("malformed message ({} frames)", f.size())}}) << "\n";
      } else {
        out << Dump(Message(Seq(f[1]), f[0].to_string_view(), f[2].to_string_view(), false))
            << "\n";
      }
      out.flush();
      ++printed;
    }
  } catch (const zmq::error_t& e) {
    out << Dump({{"error", fmt::format("{}: {}", o.endpoint, e.what())}}) << "\n";
    return 1;
  }
  return 0;
}

}  // namespace

nlohmann::json BatchToJson(const kv::EventBatch& batch) {
  nlohmann::json events = nlohmann::json::array();
  for (const auto& e : batch.events) {
    nlohmann::json j;
    if (const auto* s = std::get_if<kv::BlockStored>(&e)) {
      j["type"] = "BlockStored";
      j["block_hashes"] = s->block_hashes;
      j["parent_block_hash"] = Opt(s->parent_block_hash);
      j["token_ids"] = s->token_ids;
      j["block_size"] = s->block_size;
      j["lora_id"] = Opt(s->lora_id);
      j["medium"] = Opt(s->medium);
      j["lora_name"] = Opt(s->lora_name);
      if (s->extra_keys_json) {
        j["extra_keys"] = nlohmann::json::parse(*s->extra_keys_json, nullptr, false);
      }
      if (s->group_idx) j["group_idx"] = *s->group_idx;
      if (s->kv_cache_spec_kind) j["kv_cache_spec_kind"] = *s->kv_cache_spec_kind;
      if (s->kv_cache_spec_sliding_window) {
        j["kv_cache_spec_sliding_window"] = *s->kv_cache_spec_sliding_window;
      }
    } else if (const auto* r = std::get_if<kv::BlockRemoved>(&e)) {
      j["type"] = "BlockRemoved";
      j["block_hashes"] = r->block_hashes;
      j["medium"] = Opt(r->medium);
      if (r->group_idx) j["group_idx"] = *r->group_idx;
    } else {
      j["type"] = "AllBlocksCleared";
    }
    events.push_back(std::move(j));
  }
  nlohmann::json out;
  out["ts"] = batch.ts;
  out["events"] = std::move(events);
  out["data_parallel_rank"] = Opt(batch.data_parallel_rank);
  return out;
}

int RunKvTail(const KvTailOptions& options, std::istream& in, std::ostream& out) {
  if (options.decode_hex) return DecodeHex(in, out);
  if (options.endpoint.empty()) {
    out << Dump({{"error", "--endpoint or --decode-hex is required"}}) << "\n";
    return 1;
  }
  return Tail(options, out);
}

}  // namespace aibrix::kvtail
