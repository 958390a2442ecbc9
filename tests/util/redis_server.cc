#include "tests/util/redis_server.h"

#include <signal.h>
#include <unistd.h>

#include <chrono>
#include <cstdlib>
#include <sstream>
#include <vector>

#include "fmt/format.h"

namespace aibrix::testing {
namespace {

// The first executable `name` in $PATH, or "".
std::string FindInPath(const std::string& name) {
  const char* path = std::getenv("PATH");
  std::stringstream dirs(path != nullptr ? path : "/usr/local/bin:/usr/bin:/bin");
  std::string dir;
  while (std::getline(dirs, dir, ':')) {
    const std::string candidate = (dir.empty() ? "." : dir) + "/" + name;
    if (access(candidate.c_str(), X_OK) == 0) return candidate;
  }
  return "";
}

}  // namespace

absl::StatusOr<std::unique_ptr<RedisServer>> RedisServer::Start(Options options) {
  std::unique_ptr<RedisServer> server(
      new RedisServer(std::move(options), std::make_unique<TempDir>("redis")));
  if (absl::Status st = server->Launch(); !st.ok()) return st;
  return server;
}

RedisServer::RedisServer(Options options, std::unique_ptr<TempDir> dir)
    : options_(std::move(options)), dir_(std::move(dir)), socket_(dir_->File("redis.sock")) {}

RedisServer::~RedisServer() { Kill(); }

absl::Status RedisServer::Launch() {
  const std::string binary = FindInPath("redis-server");
  if (binary.empty()) return absl::NotFoundError("redis-server is not in $PATH");
  std::vector<std::string> argv = {binary,
                                   "--port",
                                   "0",  // no TCP listener at all
                                   "--unixsocket",
                                   socket_,
                                   "--unixsocketperm",
                                   "700",
                                   "--dir",
                                   dir_->path(),
                                   "--save",
                                   "",
                                   "--appendonly",
                                   "no",
                                   "--daemonize",
                                   "no",
                                   "--loglevel",
                                   "notice"};
  if (!options_.password.empty()) {
    argv.push_back("--requirepass");
    argv.push_back(options_.password);
  }
  auto process = Subprocess::Start(std::move(argv));
  if (!process.ok()) return process.status();
  process_ = std::move(*process);
  auto ready = process_->WaitForLine("[Rr]eady to accept connections", std::chrono::seconds(20));
  if (!ready.ok()) {
    return absl::UnavailableError(
        fmt::format("redis-server did not start: {}", ready.status().ToString()));
  }
  return absl::OkStatus();
}

void RedisServer::Kill() {
  if (!process_) return;
  Resume();  // a stopped process still dies of SIGKILL, but reap it cleanly
  (void)process_->Stop(SIGKILL, std::chrono::seconds(10));
  process_.reset();
}

absl::Status RedisServer::Restart() {
  Kill();
  return Launch();
}

void RedisServer::Pause() {
  if (process_) kill(process_->pid(), SIGSTOP);
}

void RedisServer::Resume() {
  if (process_) kill(process_->pid(), SIGCONT);
}

}  // namespace aibrix::testing
