// Starting the project's binaries in tests: a child process whose stdout+stderr are read by
// a background thread, so a test can wait (with a deadline) for a line such as
// "listening on http://127.0.0.1:41234" and is never blocked by a full pipe.
//
// Thread safety: one owner thread; the output buffer is internally synchronised.
#pragma once

#include <sys/types.h>

#include <chrono>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <regex>
#include <string>
#include <thread>
#include <vector>

#include "absl/status/statusor.h"

namespace aibrix::testing {

class Subprocess {
 public:
  // Starts `argv[0]` (a path) with the arguments; `env` entries ("K=V") are added to the
  // environment. Error if the program cannot be started.
  static absl::StatusOr<std::unique_ptr<Subprocess>> Start(std::vector<std::string> argv,
                                                           std::vector<std::string> env = {});
  ~Subprocess();  // kills (SIGKILL) and reaps if still running

  // Waits for an output line matching `pattern`; returns its first capture group (or the
  // whole line when the pattern has none). DeadlineExceeded on timeout, with the output so far.
  absl::StatusOr<std::string> WaitForLine(const std::string& pattern,
                                          std::chrono::milliseconds timeout);
  // Waits for the "listening on http://127.0.0.1:PORT" line that aibrix-cache and engine-sim
  // print once their HTTP port is bound (they bind port 0); returns PORT.
  absl::StatusOr<int> WaitForListeningPort(std::chrono::milliseconds timeout);
  // Sends `signal` and waits up to `timeout` for the exit; returns the exit code, or
  // 128+signal when killed by a signal. DeadlineExceeded if it does not exit.
  absl::StatusOr<int> Stop(int signal, std::chrono::milliseconds timeout);
  // Waits for the process to exit by itself.
  absl::StatusOr<int> Wait(std::chrono::milliseconds timeout);
  // Everything the process printed so far.
  std::string Output() const;
  pid_t pid() const { return pid_; }

 private:
  Subprocess(pid_t pid, int out_fd);
  void ReadLoop();
  // Records the exit status of the reaped child and drains its output.
  void MarkReaped(int status);

  pid_t pid_;
  int out_fd_;
  bool reaped_ = false;
  int exit_code_ = 0;
  mutable std::mutex mu_;
  std::string output_;
  std::thread reader_;
};

// The path of a binary built by this project (build/bin/<name>).
std::string BinaryPath(const std::string& name);

// The `key=value` words of a line, such as the one engine-sim prints once bound:
//   "engine-sim listening on http://127.0.0.1:41234 port=41234 ... kv_events_port=41235"
// gives {"port": "41234", ..., "kv_events_port": "41235"}. Servers under test bind port 0
// and report the ports they got this way; tests never probe for a free port.
std::map<std::string, std::string> LineFields(const std::string& line);

}  // namespace aibrix::testing
