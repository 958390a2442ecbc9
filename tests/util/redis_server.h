// A real redis-server for tests and benchmarks, started on a unix socket in a TempDir of its
// own (redis-server cannot bind port 0 and report the port, and a probed TCP port races with
// everyone; a socket path in a private directory cannot collide), without persistence.
//
//   auto redis = testing::RedisServer::Start();          // ASSERT_TRUE(redis.ok())
//   options.address = *redis::ParseAddress((*redis)->address());   // "unix:/tmp/.../redis.sock"
//   (*redis)->Kill();  ... (*redis)->Restart();          // an outage, then the same socket again
//   (*redis)->Pause(); ... (*redis)->Resume();           // SIGSTOP/SIGCONT: a server that hangs
//
// Thread safety: one owner thread.
#pragma once

#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "tests/util/subprocess.h"
#include "tests/util/temp_dir.h"

namespace aibrix::testing {

class RedisServer {
 public:
  struct Options {
    std::string password;  // requirepass when non-empty
  };
  // Starts redis-server (found in $PATH) and waits until it accepts connections. Errors: no
  // redis-server, or it did not become ready (the message carries its output).
  static absl::StatusOr<std::unique_ptr<RedisServer>> Start(Options options = {});
  ~RedisServer();  // kills the server; the directory goes with it
  RedisServer(const RedisServer&) = delete;
  RedisServer& operator=(const RedisServer&) = delete;

  // "unix:<socket path>", the form --redis and redis::ParseAddress take.
  std::string address() const { return "unix:" + socket_; }
  const std::string& socket_path() const { return socket_; }

  // Kills the server at once (SIGKILL): connections break, the data is lost.
  void Kill();
  // Starts it again on the same socket (after Kill, or kills it first).
  absl::Status Restart();
  // Stops / continues the process: connections stay open and commands hang meanwhile.
  void Pause();
  void Resume();

 private:
  RedisServer(Options options, std::unique_ptr<TempDir> dir);
  absl::Status Launch();

  const Options options_;
  std::unique_ptr<TempDir> dir_;
  std::string socket_;
  std::unique_ptr<Subprocess> process_;
};

}  // namespace aibrix::testing
