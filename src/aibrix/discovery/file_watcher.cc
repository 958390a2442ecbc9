#include "aibrix/discovery/file_watcher.h"

#include <poll.h>
#include <sys/eventfd.h>
#include <sys/inotify.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include "absl/status/status.h"
#include "aibrix/common/logging.h"
#include "fmt/format.h"

namespace aibrix::discovery {
namespace {

// The name a ConfigMap volume's kubelet swaps to publish a new version of every key.
constexpr char kConfigMapDataLink[] = "..data";

constexpr uint32_t kEvents = IN_CLOSE_WRITE | IN_MOVED_TO | IN_CREATE;

}  // namespace

absl::StatusOr<std::unique_ptr<FileWatcher>> FileWatcher::Start(
    const std::string& path, std::function<void()> on_change, std::chrono::milliseconds debounce) {
  const size_t slash = path.rfind('/');
  const std::string dir = slash == std::string::npos ? "./" : path.substr(0, slash + 1);
  const std::string name = slash == std::string::npos ? path : path.substr(slash + 1);
  if (name.empty()) return absl::InvalidArgumentError(fmt::format("{}: not a file path", path));
  const int inotify_fd = inotify_init1(IN_NONBLOCK | IN_CLOEXEC);
  if (inotify_fd < 0) {
    return absl::InternalError(fmt::format("inotify_init1: {}", std::strerror(errno)));
  }
  if (inotify_add_watch(inotify_fd, dir.c_str(), kEvents) < 0) {
    const int err = errno;
    close(inotify_fd);
    return absl::FailedPreconditionError(
        fmt::format("cannot watch directory {}: {}", dir, std::strerror(err)));
  }
  const int stop_fd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
  if (stop_fd < 0) {
    const int err = errno;
    close(inotify_fd);
    return absl::InternalError(fmt::format("eventfd: {}", std::strerror(err)));
  }
  std::unique_ptr<FileWatcher> watcher(
      new FileWatcher(dir, name, inotify_fd, stop_fd, std::move(on_change), debounce));
  watcher->thread_ = std::thread([w = watcher.get()] { w->Run(); });
  return watcher;
}

FileWatcher::FileWatcher(std::string dir, std::string name, int inotify_fd, int stop_fd,
                         std::function<void()> on_change, std::chrono::milliseconds debounce)
    : dir_(std::move(dir)),
      name_(std::move(name)),
      inotify_fd_(inotify_fd),
      stop_fd_(stop_fd),
      on_change_(std::move(on_change)),
      debounce_(debounce) {}

FileWatcher::~FileWatcher() {
  Stop();
  close(inotify_fd_);
  close(stop_fd_);
}

void FileWatcher::Stop() {
  const uint64_t one = 1;
  // Wakes the thread; a second Stop finds it joined. Writing an eventfd cannot fail short of
  // overflowing its counter, which a few writes do not.
  [[maybe_unused]] ssize_t n = write(stop_fd_, &one, sizeof one);
  if (thread_.joinable() && thread_.get_id() != std::this_thread::get_id()) thread_.join();
}

bool FileWatcher::Drain() {
  alignas(inotify_event) char buffer[16 * 1024];
  bool relevant = false;
  while (true) {
    const ssize_t n = read(inotify_fd_, buffer, sizeof buffer);
    if (n <= 0) return relevant;  // EAGAIN: drained
    for (ssize_t at = 0; at < n;) {
      const auto* event = reinterpret_cast<const inotify_event*>(buffer + at);
      at += static_cast<ssize_t>(sizeof(inotify_event) + event->len);
      if (event->mask & IN_Q_OVERFLOW) {
        relevant = true;
        continue;
      }
      if (event->mask & IN_IGNORED) {  // the directory was deleted or unmounted
        common::Logger("discovery")
            ->warn("{} is gone: changes of {} are no longer seen (SIGHUP still reloads)", dir_,
                   name_);
        continue;
      }
      if (event->len == 0) continue;
      const std::string_view name(event->name);
      if (name == kConfigMapDataLink && (event->mask & IN_MOVED_TO)) {
        relevant = true;
      } else if (name == name_) {
        if (event->mask & IN_CREATE) {
          // A new regular file is announced again by IN_CLOSE_WRITE once written; a symlink
          // is complete when created.
          struct stat st;
          const std::string path = dir_ + name_;
          if (lstat(path.c_str(), &st) == 0 && S_ISLNK(st.st_mode)) relevant = true;
        } else {
          relevant = true;
        }
      }
    }
  }
}

void FileWatcher::Run() {
  auto log = common::Logger("discovery");
  bool pending = false;
  while (true) {
    pollfd fds[2] = {{inotify_fd_, POLLIN, 0}, {stop_fd_, POLLIN, 0}};
    // With a change pending, wait for the directory to be quiet for `debounce` first.
    const int ready = poll(fds, 2, pending ? static_cast<int>(debounce_.count()) : -1);
    if (ready < 0) {
      if (errno == EINTR) continue;
      log->error("watching {}{}: poll: {}; changes are no longer seen (SIGHUP still reloads)", dir_,
                 name_, std::strerror(errno));
      return;
    }
    if (fds[1].revents != 0) return;
    if (ready == 0) {  // quiet since the last relevant event
      pending = false;
      on_change_();
      continue;
    }
    if (Drain()) pending = true;
  }
}

}  // namespace aibrix::discovery
