#include "aibrix/kvpublish/fleet.h"

#include <arpa/inet.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <charconv>
#include <chrono>
#include <cstring>
#include <fstream>
#include <random>
#include <utility>

#include "aibrix/common/logging.h"
#include "aibrix/kvpublish/msgpack_writer.h"
#include "fmt/format.h"
#include "zmq.hpp"

namespace aibrix::kvpublish {
namespace {

using Clock = std::chrono::steady_clock;

constexpr int kFaultKinds = 6;
constexpr const char* kFaultNames[kFaultKinds] = {"gap",     "restart", "malformed",
                                                  "garbage", "huge",    "hostile"};

double WallSeconds() {
  return std::chrono::duration<double>(std::chrono::system_clock::now().time_since_epoch()).count();
}

uint64_t Mix(uint64_t x) {
  x += 0x9e3779b97f4a7c15ULL;
  x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ULL;
  x = (x ^ (x >> 27)) * 0x94d049bb133111ebULL;
  return x ^ (x >> 31);
}

// A BlockRemoved of `bytes` bytes (about) whose hashes are positive fixints, 1 byte each,
// as one batch in `format`. Written directly: the decoded form would be 8x larger.
std::string HugeRemovedPayload(size_t bytes, WireFormat format) {
  std::string out;
  out.reserve(bytes + 64);
  MsgpackWriter w(&out);
  const bool has_rank = format != WireFormat::kV0_9_0;
  w.Array(has_rank ? 3 : 2);
  w.Double(WallSeconds());
  w.Array(1);
  const size_t hashes = bytes > 64 ? bytes - 64 : 1;
  if (format == WireFormat::kMap) {
    w.Map(3);
    w.Str("type");
    w.Str("BlockRemoved");
    w.Str("block_hashes");
  } else {
    int fields = 2;
    if (format >= WireFormat::kMedium) ++fields;
    if (format >= WireFormat::kGroupIdx) ++fields;
    w.Array(fields);
    w.Str("BlockRemoved");
  }
  w.Array(hashes);
  const size_t at = out.size();
  out.resize(at + hashes);
  for (size_t i = 0; i < hashes; ++i) out[at + i] = static_cast<char>(1 + i % 127);
  if (format == WireFormat::kMap) {
    w.Str("medium");
    w.Nil();
  } else {
    if (format >= WireFormat::kMedium) w.Nil();
    if (format >= WireFormat::kGroupIdx) w.Nil();
  }
  if (has_rank) w.Uint(0);
  return out;
}

const std::shared_ptr<spdlog::logger>& Log() {
  static const auto* log = new std::shared_ptr<spdlog::logger>(common::Logger("kv-fleet"));
  return *log;
}

}  // namespace

std::string_view FaultKindName(FaultKind kind) { return kFaultNames[static_cast<int>(kind)]; }

absl::StatusOr<Fault> ParseFault(std::string_view spec) {
  const size_t colon = spec.find(':');
  if (colon == std::string_view::npos) {
    return absl::InvalidArgumentError(fmt::format("fault '{}': expected KIND:ENGINE_INDEX", spec));
  }
  const std::string_view kind = spec.substr(0, colon);
  const std::string_view index = spec.substr(colon + 1);
  Fault fault;
  bool known = false;
  for (int k = 0; k < kFaultKinds; ++k) {
    if (kind == kFaultNames[k]) {
      fault.kind = static_cast<FaultKind>(k);
      known = true;
    }
  }
  if (!known) {
    return absl::InvalidArgumentError(fmt::format(
        "fault '{}': unknown kind '{}' (gap, restart, malformed, garbage, huge, hostile)", spec,
        kind));
  }
  int engine = -1;
  auto [p, ec] = std::from_chars(index.data(), index.data() + index.size(), engine);
  if (ec != std::errc() || p != index.data() + index.size() || engine < 0) {
    return absl::InvalidArgumentError(
        fmt::format("fault '{}': engine index '{}' is not a non-negative integer", spec, index));
  }
  fault.engine = engine;
  return fault;
}

absl::Status EnsureFdLimit(uint64_t needed) {
  rlimit limit{};
  if (getrlimit(RLIMIT_NOFILE, &limit) != 0) {
    return absl::InternalError(fmt::format("getrlimit(RLIMIT_NOFILE): {}", std::strerror(errno)));
  }
  if (limit.rlim_cur != RLIM_INFINITY && limit.rlim_cur >= needed) return absl::OkStatus();
  if (limit.rlim_max != RLIM_INFINITY && limit.rlim_max < needed) {
    return absl::FailedPreconditionError(fmt::format(
        "{} file descriptors needed but the hard RLIMIT_NOFILE is {} (raise it, e.g. ulimit -Hn, "
        "or use fewer engines)",
        needed, limit.rlim_max));
  }
  limit.rlim_cur = limit.rlim_max;  // as far as allowed: the rest of the process needs some too
  if (setrlimit(RLIMIT_NOFILE, &limit) != 0) {
    return absl::FailedPreconditionError(
        fmt::format("setrlimit(RLIMIT_NOFILE, {}): {}", needed, std::strerror(errno)));
  }
  return absl::OkStatus();
}

std::string EngineInfo::endpoint() const { return fmt::format("tcp://{}:{}", address, pub_port); }
std::string EngineInfo::replay_endpoint() const {
  return fmt::format("tcp://{}:{}", address, replay_port);
}

struct Fleet::Engine {
  Engine(const FleetOptions& o, int i)
      : index(i),
        workload(o.workload, i),
        buffer(o.buffer_steps, o.buffer_bytes),
        rng(Mix(o.workload.seed ^ 0xfa17) ^ Mix(static_cast<uint64_t>(i))) {}

  const int index;
  EngineWorkload workload;
  ReplayBuffer buffer;
  std::mt19937_64 rng;
  uint64_t seq = 0;
  uint64_t batches = 0;  // normal batches published (drives the periodic faults)
  bool faults[kFaultKinds] = {};
  uint64_t huge_sent_bytes = 0;
  int64_t hostile_built = 0;
  Clock::time_point hostile_next{};
};

// The routers are watched through one level-triggered epoll set over their ZMQ_FDs: the
// descriptor is readable while commands (such as "a message arrived") wait for the socket,
// and ServeReplayRequests always ends on a receive that processes them. zmq_poll over a
// thousand routers would cost two system calls per router per look.
struct Fleet::Sockets {
  explicit Sockets(int io_threads) : context(io_threads), epoll_fd(epoll_create1(EPOLL_CLOEXEC)) {}
  ~Sockets() {
    if (epoll_fd >= 0) close(epoll_fd);
  }
  Sockets(const Sockets&) = delete;
  Sockets& operator=(const Sockets&) = delete;
  zmq::context_t context;
  std::vector<zmq::socket_t> pubs;
  std::vector<zmq::socket_t> routers;
  int epoll_fd;
};

struct Fleet::Counters {
  std::atomic<uint64_t> batches{0}, blocks_stored{0}, blocks_removed{0}, clears{0},
      payload_bytes{0}, gaps{0}, restarts{0}, malformed{0}, garbage{0}, huge_messages{0},
      huge_bytes{0}, hostile_chain_blocks{0}, hostile_pairs{0}, replay_requests{0},
      replayed_batches{0}, errors{0};
};

Fleet::Fleet(FleetOptions options)
    : options_(std::move(options)),
      rate_(options_.blocks_per_s),
      counters_(std::make_unique<Counters>()),
      next_seq_(new std::atomic<uint64_t>[std::max(options_.engines, 1)]) {
  for (int i = 0; i < std::max(options_.engines, 1); ++i) next_seq_[i] = 0;
}

Fleet::~Fleet() { Stop(); }

absl::Status Fleet::Start() {
  std::lock_guard<std::mutex> l(mu_);
  if (started_ || stopped_) return absl::FailedPreconditionError("fleet already started");
  const int n = options_.engines;
  if (n <= 0) return absl::InvalidArgumentError("fleet: --engines must be at least 1");
  for (const Fault& f : options_.faults) {
    if (f.engine < 0 || f.engine >= n) {
      return absl::InvalidArgumentError(fmt::format("fault {}:{}: engine out of range (0..{})",
                                                    FaultKindName(f.kind), f.engine, n - 1));
    }
  }
  if (options_.workload.block_size <= 0 || options_.workload.prompts <= 0 ||
      options_.workload.max_prompt_blocks <= 0 || options_.workload.min_blocks_per_event <= 0 ||
      options_.workload.max_blocks_per_event < options_.workload.min_blocks_per_event ||
      options_.workload.max_events_per_batch <= 0) {
    return absl::InvalidArgumentError("fleet: invalid workload options");
  }
  in_addr first{};
  if (inet_pton(AF_INET, options_.first_address.c_str(), &first) != 1 ||
      (ntohl(first.s_addr) >> 24) != 127) {
    return absl::InvalidArgumentError(
        fmt::format("fleet: first address '{}' is not an IPv4 loopback address (127/8)",
                    options_.first_address));
  }
  // Per socket: its mailbox eventfd and a listener; per engine two accepted connections
  // (the service's SUB and DEALER); some slack for the rest of the process.
  if (auto st = EnsureFdLimit(static_cast<uint64_t>(n) * 6 + 256); !st.ok()) {
    return absl::FailedPreconditionError(
        fmt::format("fleet of {} engines: {}", n, std::string(st.message())));
  }
  auto sockets = std::make_unique<Sockets>(options_.io_threads);
  const int max_sockets = 2 * n + 16;
  const int socket_limit = zmq_ctx_get(sockets->context.handle(), ZMQ_SOCKET_LIMIT);
  if (socket_limit > 0 && max_sockets > socket_limit) {
    return absl::FailedPreconditionError(
        fmt::format("fleet of {} engines needs {} ZMQ sockets; this libzmq allows at most {}", n,
                    max_sockets, socket_limit));
  }
  if (zmq_ctx_set(sockets->context.handle(), ZMQ_MAX_SOCKETS, max_sockets) != 0) {
    return absl::FailedPreconditionError(fmt::format("zmq_ctx_set(ZMQ_MAX_SOCKETS, {}): {}",
                                                     max_sockets, zmq_strerror(zmq_errno())));
  }
  std::vector<EngineInfo> engines;
  uint32_t addr = ntohl(first.s_addr);
  std::string where;
  try {
    for (int i = 0; i < n; ++i) {
      while ((addr & 0xff) == 0 || (addr & 0xff) == 0xff) ++addr;
      if ((addr >> 24) != 127) {
        return absl::InvalidArgumentError(fmt::format(
            "fleet: {} engines do not fit in 127/8 from {}", n, options_.first_address));
      }
      in_addr a{htonl(addr++)};
      char text[INET_ADDRSTRLEN];
      inet_ntop(AF_INET, &a, text, sizeof(text));
      EngineInfo info;
      info.address = text;
      auto port_text = [](int port) {
        return port == 0 ? std::string("*") : fmt::format("{}", port);
      };
      zmq::socket_t pub(sockets->context, zmq::socket_type::pub);
      pub.set(zmq::sockopt::sndhwm, options_.hwm);
      pub.set(zmq::sockopt::rcvhwm, options_.hwm);
      pub.set(zmq::sockopt::linger, 0);
      where = fmt::format("tcp://{}:{}", info.address, port_text(options_.pub_port));
      pub.bind(where);
      info.pub_port = EndpointPort(UnmapEndpoint(pub.get(zmq::sockopt::last_endpoint)));
      zmq::socket_t router(sockets->context, zmq::socket_type::router);
      router.set(zmq::sockopt::linger, 0);
      router.set(zmq::sockopt::sndhwm, 0);  // a replay of the whole buffer must not be cut
      where = fmt::format("tcp://{}:{}", info.address, port_text(options_.replay_port));
      router.bind(where);
      info.replay_port = EndpointPort(UnmapEndpoint(router.get(zmq::sockopt::last_endpoint)));
      sockets->pubs.push_back(std::move(pub));
      sockets->routers.push_back(std::move(router));
      engines.push_back(std::move(info));
    }
  } catch (const zmq::error_t& e) {
    return absl::UnavailableError(
        fmt::format("fleet engine {} on {}: {}{}", engines.size(), where, e.what(),
                    e.num() == EMFILE ? " (socket or file descriptor limit)" : ""));
  }
  if (sockets->epoll_fd < 0) {
    return absl::InternalError(fmt::format("fleet: epoll_create1: {}", std::strerror(errno)));
  }
  for (size_t i = 0; i < sockets->routers.size(); ++i) {
    epoll_event ev{};
    ev.events = EPOLLIN;
    ev.data.u64 = i;
    const int fd = sockets->routers[i].get(zmq::sockopt::fd);
    if (epoll_ctl(sockets->epoll_fd, EPOLL_CTL_ADD, fd, &ev) != 0) {
      return absl::InternalError(fmt::format("fleet: epoll_ctl: {}", std::strerror(errno)));
    }
  }
  for (int i = 0; i < n; ++i) state_.push_back(std::make_unique<Engine>(options_, i));
  for (const Fault& f : options_.faults) state_[f.engine]->faults[static_cast<int>(f.kind)] = true;
  engines_ = std::move(engines);
  sockets_ = std::move(sockets);
  started_ = true;
  thread_ = std::thread([this] { Run(); });
  Log()->info("fleet of {} engines bound ({} .. {}, ports {} / {})", n, engines_.front().address,
              engines_.back().address, engines_.front().pub_port, engines_.front().replay_port);
  return absl::OkStatus();
}

void Fleet::Stop() {
  {
    std::lock_guard<std::mutex> l(mu_);
    if (stopped_) return;
    stopped_ = true;
  }
  stop_ = true;
  if (thread_.joinable()) thread_.join();
  sockets_.reset();
}

std::string Fleet::DiscoveryYaml() const {
  std::string yaml =
      fmt::format("# {} simulated vLLM engines (aibrix::kvpublish::Fleet)\n", engines_.size());
  yaml +=
      fmt::format("models:\n  - name: \"{}\"\n    engine: vllm\n    endpoints:\n", options_.model);
  for (const EngineInfo& e : engines_) {
    yaml += fmt::format(
        "      - address: \"{}:{}\"\n        kv_events: true\n        kv_events_port: {}\n"
        "        replay_port: {}\n",
        e.address, options_.serving_port, e.pub_port, e.replay_port);
  }
  return yaml;
}

absl::Status Fleet::WriteDiscoveryFile(const std::string& path) const {
  const std::string tmp = path + ".tmp";
  {
    std::ofstream out(tmp, std::ios::trunc);
    out << DiscoveryYaml();
    out.close();
    if (!out) return absl::UnavailableError(fmt::format("cannot write {}", tmp));
  }
  if (std::rename(tmp.c_str(), path.c_str()) != 0) {
    return absl::UnavailableError(
        fmt::format("cannot rename {} to {}: {}", tmp, path, std::strerror(errno)));
  }
  return absl::OkStatus();
}

absl::Status Fleet::AddFault(Fault fault) {
  if (fault.engine < 0 || fault.engine >= options_.engines) {
    return absl::InvalidArgumentError(fmt::format("fault {}:{}: engine out of range (0..{})",
                                                  FaultKindName(fault.kind), fault.engine,
                                                  options_.engines - 1));
  }
  std::lock_guard<std::mutex> l(mu_);
  commands_.push_back(Command{Command::Kind::kAdd, fault});
  return absl::OkStatus();
}

void Fleet::ClearFaults(int engine) {
  std::lock_guard<std::mutex> l(mu_);
  commands_.push_back(Command{Command::Kind::kClear, Fault{FaultKind::kGap, engine}});
}

FleetStats Fleet::stats() const {
  const Counters& c = *counters_;
  FleetStats s;
  s.batches = c.batches;
  s.blocks_stored = c.blocks_stored;
  s.blocks_removed = c.blocks_removed;
  s.clears = c.clears;
  s.payload_bytes = c.payload_bytes;
  s.gaps = c.gaps;
  s.restarts = c.restarts;
  s.malformed = c.malformed;
  s.garbage = c.garbage;
  s.huge_messages = c.huge_messages;
  s.huge_bytes = c.huge_bytes;
  s.hostile_chain_blocks = c.hostile_chain_blocks;
  s.hostile_pairs = c.hostile_pairs;
  s.replay_requests = c.replay_requests;
  s.replayed_batches = c.replayed_batches;
  s.errors = c.errors;
  return s;
}

uint64_t Fleet::next_seq(int engine) const {
  if (engine < 0 || engine >= options_.engines) return 0;
  return next_seq_[engine].load();
}

void Fleet::ApplyCommands() {
  std::vector<Command> commands;
  {
    std::lock_guard<std::mutex> l(mu_);
    commands.swap(commands_);
  }
  for (const Command& c : commands) {
    Engine& e = *state_[c.fault.engine];
    if (c.kind == Command::Kind::kClear) {
      std::fill(std::begin(e.faults), std::end(e.faults), false);
      continue;
    }
    e.faults[static_cast<int>(c.fault.kind)] = true;
    if (c.fault.kind == FaultKind::kHuge) e.huge_sent_bytes = 0;
  }
}

void Fleet::Emit(Engine& e, Payload payload, bool send) {
  const uint64_t seq = e.seq++;
  next_seq_[e.index] = e.seq;
  counters_->batches.fetch_add(1, std::memory_order_relaxed);
  counters_->payload_bytes.fetch_add(payload->size(), std::memory_order_relaxed);
  if (send) SendLive(sockets_->pubs[e.index], options_.topic, seq, payload);
  e.buffer.Add(seq, std::move(payload));
}

uint64_t Fleet::PublishNormal(Engine& e) {
  Counters& c = *counters_;
  const bool periodic = options_.fault.every_batches > 0 &&
                        (e.batches + 1) % static_cast<uint64_t>(options_.fault.every_batches) == 0;
  ++e.batches;
  if (periodic && e.faults[static_cast<int>(FaultKind::kRestart)]) {
    e.seq = 0;
    next_seq_[e.index] = 0;
    e.buffer.Clear();
    e.workload.Restart();
    c.restarts.fetch_add(1, std::memory_order_relaxed);
  }
  const uint64_t stored_before = e.workload.blocks_stored();
  const uint64_t removed_before = e.workload.blocks_removed();
  const uint64_t clears_before = e.workload.clears();
  const kv::EventBatch batch = e.workload.NextBatch(WallSeconds());
  const uint64_t stored = e.workload.blocks_stored() - stored_before;
  c.blocks_stored.fetch_add(stored, std::memory_order_relaxed);
  c.blocks_removed.fetch_add(e.workload.blocks_removed() - removed_before,
                             std::memory_order_relaxed);
  c.clears.fetch_add(e.workload.clears() - clears_before, std::memory_order_relaxed);
  auto payload = std::make_shared<const std::string>(EncodeBatch(batch, options_.format));
  const bool drop = periodic && e.faults[static_cast<int>(FaultKind::kGap)];
  if (drop) c.gaps.fetch_add(1, std::memory_order_relaxed);
  Emit(e, std::move(payload), /*send=*/!drop);
  if (periodic && e.faults[static_cast<int>(FaultKind::kMalformed)]) {
    zmq::socket_t& pub = sockets_->pubs[e.index];
    const std::string seq8 = Seq8(e.seq);
    switch (c.malformed.fetch_add(1, std::memory_order_relaxed) % 3) {
      case 0:  // a 4-byte sequence frame
        pub.send(zmq::buffer(options_.topic), zmq::send_flags::sndmore);
        pub.send(zmq::buffer(seq8.data() + 4, 4), zmq::send_flags::sndmore);
        pub.send(zmq::str_buffer("\x91\x00"), zmq::send_flags::none);
        break;
      case 1:  // two frames
        pub.send(zmq::buffer(options_.topic), zmq::send_flags::sndmore);
        pub.send(zmq::buffer(seq8), zmq::send_flags::none);
        break;
      default:  // four frames
        pub.send(zmq::buffer(options_.topic), zmq::send_flags::sndmore);
        pub.send(zmq::buffer(seq8), zmq::send_flags::sndmore);
        pub.send(zmq::str_buffer("\x92\x00\x90"), zmq::send_flags::sndmore);
        pub.send(zmq::str_buffer("extra"), zmq::send_flags::none);
        break;
    }
  }
  if (periodic && e.faults[static_cast<int>(FaultKind::kGarbage)]) {
    // 0xc1 is the one byte msgpack never uses: no decoder can take this for a batch.
    std::string garbage(64 + e.rng() % 512, '\0');
    for (char& ch : garbage) ch = static_cast<char>(e.rng());
    garbage[0] = static_cast<char>(0xc1);
    Emit(e, std::make_shared<const std::string>(std::move(garbage)));
    c.garbage.fetch_add(1, std::memory_order_relaxed);
  }
  return std::max<uint64_t>(stored, 1);
}

void Fleet::HugeStep(Engine& e) {
  const FaultOptions& f = options_.fault;
  if (e.huge_sent_bytes >= f.huge_total_bytes) return;
  if (!huge_payload_ || huge_payload_->size() < f.huge_message_bytes / 2) {
    huge_payload_ = std::make_shared<const std::string>(
        HugeRemovedPayload(f.huge_message_bytes, options_.format));
  }
  Emit(e, huge_payload_);
  e.huge_sent_bytes += f.huge_message_bytes;  // nominal: total / size messages, rounded up
  counters_->huge_messages.fetch_add(1, std::memory_order_relaxed);
  counters_->huge_bytes.fetch_add(huge_payload_->size(), std::memory_order_relaxed);
}

void Fleet::HostileStep(Engine& e, Clock::time_point now) {
  const FaultOptions& f = options_.fault;
  const int bs = options_.workload.block_size;
  // The chain is its own prompt (far above the shared pool), hashed per engine.
  const int prompt = 1'000'000 + e.index;
  auto hash = [&](int64_t block) {
    const uint64_t h = Mix(Mix(options_.workload.seed ^ 0x4057) ^ Mix(e.index) ^
                           Mix(static_cast<uint64_t>(block) + 7));
    return h == 0 ? uint64_t{1} : h;
  };
  auto stored_run = [&](int64_t first, int64_t count) {
    kv::BlockStored s;
    for (int64_t b = first; b < first + count; ++b) s.block_hashes.push_back(hash(b));
    if (first > 0) s.parent_block_hash = hash(first - 1);
    s.token_ids.reserve(static_cast<size_t>(count * bs));
    for (int64_t t = first * bs; t < (first + count) * bs; ++t) {
      s.token_ids.push_back(PromptToken(options_.workload.seed, prompt, static_cast<int>(t)));
    }
    s.block_size = bs;
    s.medium = "GPU";
    return s;
  };
  kv::EventBatch batch;
  batch.ts = WallSeconds();
  batch.data_parallel_rank = 0;
  if (e.hostile_built < f.hostile_chain_blocks) {
    for (int ev = 0; ev < 4 && e.hostile_built < f.hostile_chain_blocks; ++ev) {
      const int64_t count =
          std::min<int64_t>(f.hostile_blocks_per_event, f.hostile_chain_blocks - e.hostile_built);
      batch.events.emplace_back(stored_run(e.hostile_built, count));
      e.hostile_built += count;
      counters_->hostile_chain_blocks.fetch_add(static_cast<uint64_t>(count),
                                                std::memory_order_relaxed);
      counters_->blocks_stored.fetch_add(static_cast<uint64_t>(count), std::memory_order_relaxed);
    }
  } else {
    if (now < e.hostile_next) return;
    if (f.hostile_batches_per_s > 0) {
      e.hostile_next = now + std::chrono::duration_cast<Clock::duration>(
                                 std::chrono::duration<double>(1.0 / f.hostile_batches_per_s));
    }
    for (int p = 0; p < f.hostile_pairs_per_batch; ++p) {
      kv::BlockRemoved removed;
      removed.block_hashes.push_back(hash(0));
      removed.medium = "GPU";
      batch.events.emplace_back(std::move(removed));
      batch.events.emplace_back(stored_run(0, 1));
    }
    counters_->hostile_pairs.fetch_add(static_cast<uint64_t>(f.hostile_pairs_per_batch),
                                       std::memory_order_relaxed);
  }
  Emit(e, std::make_shared<const std::string>(EncodeBatch(batch, options_.format)));
}

void Fleet::ServeReplays(std::chrono::milliseconds timeout) {
  epoll_event events[64];
  const int n = epoll_wait(sockets_->epoll_fd, events, 64, static_cast<int>(timeout.count()));
  for (int k = 0; k < n; ++k) {
    const size_t i = events[k].data.u64;
    const ReplayCounts counts = ServeReplayRequests(sockets_->routers[i], state_[i]->buffer,
                                                    options_.reply_layout, options_.topic);
    counters_->replay_requests.fetch_add(counts.requests, std::memory_order_relaxed);
    counters_->replayed_batches.fetch_add(counts.replayed_batches, std::memory_order_relaxed);
  }
}

void Fleet::Run() {
  static common::RateLimiter limiter;
  const auto slice = std::chrono::milliseconds(5);
  const size_t n = state_.size();
  size_t next = 0;    // round-robin position
  double credit = 0;  // stored blocks we may publish now
  auto last = Clock::now();
  while (!stop_.load(std::memory_order_relaxed)) {
    try {
      ApplyCommands();
      const auto start = Clock::now();
      const double rate = rate_.load(std::memory_order_relaxed);
      const double dt = std::chrono::duration<double>(start - last).count();
      last = start;
      if (rate > 0) credit = std::min(credit + rate * dt, std::max(rate * 0.05, 64.0));
      // Normal batches, round robin, until the credit or the time slice is used up.
      const auto slice_end = start + slice;
      size_t visited = 0;
      bool published = false;
      while ((rate <= 0 || credit > 0) && Clock::now() < slice_end) {
        Engine& e = *state_[next];
        next = (next + 1) % n;
        if (++visited > n && !published) break;  // every engine is hostile
        if (e.faults[static_cast<int>(FaultKind::kHostile)]) continue;
        published = true;
        for (int b = 0; b < options_.batches_per_turn && (rate <= 0 || credit > 0); ++b) {
          credit -= static_cast<double>(PublishNormal(e));
        }
        if (stop_.load(std::memory_order_relaxed)) break;
      }
      if (rate <= 0) credit = 0;
      // The engines with a streaming fault, one step each per loop.
      const auto now = Clock::now();
      for (auto& e : state_) {
        if (e->faults[static_cast<int>(FaultKind::kHuge)]) HugeStep(*e);
        if (e->faults[static_cast<int>(FaultKind::kHostile)]) HostileStep(*e, now);
      }
      // Replay requests; when rate-limited and out of credit, this is also the sleep.
      std::chrono::milliseconds wait(0);
      if (rate > 0 && credit <= 0) {
        wait = std::chrono::milliseconds(
            std::clamp(static_cast<int>(1000.0 * (1.0 - credit) / rate), 1, 5));
      }
      ServeReplays(wait);
    } catch (const zmq::error_t& e) {
      if (e.num() == ETERM) break;
      counters_->errors.fetch_add(1, std::memory_order_relaxed);
      common::WarnLimited(limiter, "kv-fleet", "fleet thread: {}", e.what());
    }
  }
}

}  // namespace aibrix::kvpublish
