// FileWatcher: tells when a file may have a new version, through inotify on its directory, so
// every way of replacing a file is seen:
//  * written in place and closed (IN_CLOSE_WRITE of the file);
//  * replaced by a rename, as editors and `mv` do (IN_MOVED_TO of the file);
//  * re-pointed as a symbolic link (IN_CREATE of the file when it is a link);
//  * a Kubernetes ConfigMap or Secret volume update: the kubelet writes a new timestamped
//    directory and renames the `..data` symlink over the old one (IN_MOVED_TO of `..data`);
//    the file itself is a symlink through `..data` and sees no event of its own.
// A deleted file raises nothing (its last version stays in use). If the directory itself is
// deleted, watching ends with a warning (a new directory of the same name is not watched). Events
// come in bursts (an editor's save is several), so the callback runs once the directory has been
// quiet for `debounce`; an inotify queue overflow counts as a change. The callback may find the
// same bytes as before (another key of a ConfigMap changed): callers compare.
//
// Thread safety: the callback runs on the watcher's own thread, one call at a time. Stop()
// (also run by the destructor) is called by the owner's thread, never from the callback.
#pragma once

#include <chrono>
#include <functional>
#include <memory>
#include <string>
#include <thread>

#include "absl/status/statusor.h"

namespace aibrix::discovery {

class FileWatcher {
 public:
  // Starts watching the directory of `path`. Errors: the directory cannot be watched (missing,
  // no permission, inotify limits), with the reason.
  static absl::StatusOr<std::unique_ptr<FileWatcher>> Start(
      const std::string& path, std::function<void()> on_change,
      std::chrono::milliseconds debounce = std::chrono::milliseconds(100));
  ~FileWatcher();
  FileWatcher(const FileWatcher&) = delete;
  FileWatcher& operator=(const FileWatcher&) = delete;

  // Stops the thread (a callback in progress finishes first). Idempotent.
  void Stop();

 private:
  FileWatcher(std::string dir, std::string name, int inotify_fd, int stop_fd,
              std::function<void()> on_change, std::chrono::milliseconds debounce);
  void Run();
  // Reads the pending events; true if one of them concerns the file.
  bool Drain();

  // Constant after construction; the descriptors are closed by the destructor.
  const std::string dir_;
  const std::string name_;  // the file's name in dir_
  const int inotify_fd_;
  const int stop_fd_;  // eventfd written by Stop()
  const std::function<void()> on_change_;
  const std::chrono::milliseconds debounce_;
  std::thread thread_;
};

}  // namespace aibrix::discovery
