// A fresh directory per test: every file a test writes (configs, traces) goes in one, so
// tests running at the same time, repeated, or in parallel processes never share a path.
//
//   testing::TempDir dir("proxy");  // e.g. /tmp/aibrix-proxy-Xk3b9Q, removed at scope exit
//   const std::string config = dir.Write("config.yaml", "models: ...");
//
// Thread safety: one owner; Write() of different names from different threads is fine.
#pragma once

#include <string>
#include <string_view>

namespace aibrix::testing {

class TempDir {
 public:
  // Creates <base>/aibrix-<prefix>-XXXXXX (mkdtemp), where <base> is $TEST_TMPDIR, else
  // $TMPDIR, else /tmp. Aborts with a message if it cannot (a broken test machine, not a
  // test result).
  explicit TempDir(std::string_view prefix = "test");
  // Removes the directory and everything in it.
  ~TempDir();
  TempDir(const TempDir&) = delete;
  TempDir& operator=(const TempDir&) = delete;

  const std::string& path() const { return path_; }
  // The path of `name` inside the directory (not created).
  std::string File(std::string_view name) const;
  // Writes `content` to `name` inside the directory (replacing it) and returns its path.
  // Aborts with a message if the file cannot be written.
  std::string Write(std::string_view name, std::string_view content) const;

 private:
  std::string path_;
};

}  // namespace aibrix::testing
