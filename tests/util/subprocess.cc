#include "tests/util/subprocess.h"

#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstring>
#include <sstream>

#include "fmt/format.h"

extern char** environ;

namespace aibrix::testing {

absl::StatusOr<std::unique_ptr<Subprocess>> Subprocess::Start(std::vector<std::string> argv,
                                                              std::vector<std::string> env) {
  int pipe_fds[2];
  if (pipe2(pipe_fds, O_CLOEXEC) != 0) return absl::InternalError("pipe failed");
  std::vector<std::string> environment;
  for (char** e = environ; *e != nullptr; ++e) environment.emplace_back(*e);
  for (std::string& extra : env) environment.push_back(std::move(extra));
  std::vector<char*> args;
  for (std::string& arg : argv) args.push_back(arg.data());
  args.push_back(nullptr);
  std::vector<char*> envp;
  for (std::string& e : environment) envp.push_back(e.data());
  envp.push_back(nullptr);

  pid_t pid = fork();
  if (pid < 0) return absl::InternalError("fork failed");
  if (pid == 0) {
    dup2(pipe_fds[1], STDOUT_FILENO);
    dup2(pipe_fds[1], STDERR_FILENO);
    setpgid(0, 0);
    execve(args[0], args.data(), envp.data());
    _exit(127);
  }
  close(pipe_fds[1]);
  return std::unique_ptr<Subprocess>(new Subprocess(pid, pipe_fds[0]));
}

Subprocess::Subprocess(pid_t pid, int out_fd) : pid_(pid), out_fd_(out_fd) {
  reader_ = std::thread([this] { ReadLoop(); });
}

Subprocess::~Subprocess() {
  if (!reaped_) {
    kill(pid_, SIGKILL);
    int status = 0;
    waitpid(pid_, &status, 0);
  }
  if (reader_.joinable()) reader_.join();
  close(out_fd_);
}

void Subprocess::ReadLoop() {
  char buffer[4096];
  while (true) {
    ssize_t n = read(out_fd_, buffer, sizeof(buffer));
    if (n <= 0) {
      if (n < 0 && errno == EINTR) continue;
      return;
    }
    std::lock_guard<std::mutex> lock(mu_);
    output_.append(buffer, static_cast<size_t>(n));
  }
}

void Subprocess::MarkReaped(int status) {
  reaped_ = true;
  exit_code_ = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
  // The child is gone, so its end of the pipe is closed: read everything it printed.
  if (reader_.joinable()) reader_.join();
}

std::string Subprocess::Output() const {
  std::lock_guard<std::mutex> lock(mu_);
  return output_;
}

absl::StatusOr<std::string> Subprocess::WaitForLine(const std::string& pattern,
                                                    std::chrono::milliseconds timeout) {
  const std::regex re(pattern);
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  auto find = [&]() -> std::optional<std::string> {
    std::istringstream lines(Output());
    std::string line;
    while (std::getline(lines, line)) {
      std::smatch match;
      if (std::regex_search(line, match, re)) return match.size() > 1 ? match[1].str() : line;
    }
    return std::nullopt;
  };
  while (std::chrono::steady_clock::now() < deadline) {
    if (auto found = find()) return *found;
    int status = 0;
    if (!reaped_ && waitpid(pid_, &status, WNOHANG) == pid_) {
      MarkReaped(status);  // drains the output: the line may have come just before the exit
      if (auto found = find()) return *found;
      return absl::FailedPreconditionError(
          fmt::format("process exited before printing /{}/; output:\n{}", pattern, Output()));
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  return absl::DeadlineExceededError(fmt::format("no line matching /{}/ within {} ms; output:\n{}",
                                                 pattern, timeout.count(), Output()));
}

absl::StatusOr<int> Subprocess::Wait(std::chrono::milliseconds timeout) {
  if (reaped_) return exit_code_;
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  while (std::chrono::steady_clock::now() < deadline) {
    int status = 0;
    if (waitpid(pid_, &status, WNOHANG) == pid_) {
      MarkReaped(status);
      return exit_code_;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  return absl::DeadlineExceededError("process did not exit in time");
}

absl::StatusOr<int> Subprocess::WaitForListeningPort(std::chrono::milliseconds timeout) {
  absl::StatusOr<std::string> port =
      WaitForLine(R"(listening on http://127\.0\.0\.1:(\d+))", timeout);
  if (!port.ok()) return port.status();
  return std::stoi(*port);
}

absl::StatusOr<int> Subprocess::Stop(int signal, std::chrono::milliseconds timeout) {
  if (!reaped_) kill(pid_, signal);
  return Wait(timeout);
}

std::string BinaryPath(const std::string& name) { return std::string(AIBRIX_BIN_DIR) + "/" + name; }

std::map<std::string, std::string> LineFields(const std::string& line) {
  std::map<std::string, std::string> fields;
  std::istringstream words(line);
  std::string word;
  while (words >> word) {
    const size_t eq = word.find('=');
    if (eq != std::string::npos && eq > 0) fields[word.substr(0, eq)] = word.substr(eq + 1);
  }
  return fields;
}

}  // namespace aibrix::testing
