#include "aibrix/discovery/file_watcher.h"

#include <unistd.h>

#include <atomic>
#include <cstdio>
#include <filesystem>
#include <thread>

#include "gtest/gtest.h"
#include "tests/util/poll.h"
#include "tests/util/temp_dir.h"

namespace aibrix::discovery {
namespace {

using std::chrono::milliseconds;
using testing::Eventually;

constexpr milliseconds kDebounce{20};
// Long enough after a change for a wrongly raised callback to have run (only used to check
// that something did not happen; never as a bound on how fast something happens).
constexpr milliseconds kSettle{300};

class FileWatcherTest : public ::testing::Test {
 protected:
  void Watch(const std::string& path) {
    auto watcher = FileWatcher::Start(
        path, [this] { ++changes_; }, kDebounce);
    ASSERT_TRUE(watcher.ok()) << watcher.status();
    watcher_ = std::move(*watcher);
  }
  // Waits for the count to reach `n`, then checks it stays there.
  void ExpectChanges(int n) {
    EXPECT_TRUE(Eventually([&] { return changes_.load() >= n; }));
    std::this_thread::sleep_for(kSettle);
    EXPECT_EQ(changes_.load(), n);
  }

  testing::TempDir dir_{"file-watcher"};
  std::atomic<int> changes_{0};
  std::unique_ptr<FileWatcher> watcher_;
};

TEST_F(FileWatcherTest, WriteInPlaceIsOneChange) {
  const std::string path = dir_.Write("static.yaml", "a");
  Watch(path);
  // Truncate, write in two parts, close: one burst, one callback.
  FILE* f = std::fopen(path.c_str(), "w");
  ASSERT_NE(f, nullptr);
  std::fputs("models:", f);
  std::fflush(f);
  std::fputs(" []\n", f);
  std::fclose(f);
  ExpectChanges(1);
}

TEST_F(FileWatcherTest, RenameOverTheFileIsAChange) {
  const std::string path = dir_.Write("static.yaml", "a");
  Watch(path);
  const std::string tmp = dir_.Write(".static.yaml.swp", "b");  // an editor's temporary file
  ASSERT_EQ(std::rename(tmp.c_str(), path.c_str()), 0);
  ExpectChanges(1);
}

TEST_F(FileWatcherTest, OtherFilesAndDeletionAreNotChanges) {
  const std::string path = dir_.Write("static.yaml", "a");
  Watch(path);
  dir_.Write("other.yaml", "x");
  ASSERT_EQ(std::rename(dir_.File("other.yaml").c_str(), dir_.File("moved.yaml").c_str()), 0);
  ASSERT_EQ(unlink(path.c_str()), 0);
  std::this_thread::sleep_for(kSettle);
  EXPECT_EQ(changes_.load(), 0);
  dir_.Write("static.yaml", "back");  // created again: a change
  ExpectChanges(1);
}

TEST_F(FileWatcherTest, SymlinkRepointedIsAChange) {
  const std::string v1 = dir_.Write("v1.yaml", "1");
  const std::string v2 = dir_.Write("v2.yaml", "2");
  const std::string path = dir_.File("static.yaml");
  ASSERT_EQ(symlink(v1.c_str(), path.c_str()), 0);
  Watch(path);
  // `ln -sf`: unlink, then a new link.
  ASSERT_EQ(unlink(path.c_str()), 0);
  ASSERT_EQ(symlink(v2.c_str(), path.c_str()), 0);
  ExpectChanges(1);
}

// The layout of a Kubernetes ConfigMap volume: static.yaml -> ..data/static.yaml, ..data ->
// ..<timestamp>; the kubelet publishes a version by renaming a new ..data link over the old.
TEST_F(FileWatcherTest, ConfigMapDataSwapIsAChange) {
  namespace fs = std::filesystem;
  const fs::path root(dir_.path());
  fs::create_directory(root / "..2024_01_01_00_00_00.1");
  dir_.Write("..2024_01_01_00_00_00.1/static.yaml", "1");
  fs::create_directory_symlink("..2024_01_01_00_00_00.1", root / "..data");
  fs::create_symlink("..data/static.yaml", root / "static.yaml");
  Watch((root / "static.yaml").string());

  fs::create_directory(root / "..2024_01_01_00_01_00.2");
  dir_.Write("..2024_01_01_00_01_00.2/static.yaml", "2");
  fs::create_directory_symlink("..2024_01_01_00_01_00.2", root / "..data_tmp");
  fs::rename(root / "..data_tmp", root / "..data");
  fs::remove_all(root / "..2024_01_01_00_00_00.1");
  ExpectChanges(1);
}

TEST(FileWatcherStartTest, MissingDirectoryIsAnErrorAndStopIsIdempotent) {
  auto missing = FileWatcher::Start("/nonexistent-aibrix-dir/static.yaml", [] {});
  EXPECT_EQ(missing.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_NE(missing.status().message().find("/nonexistent-aibrix-dir/"), std::string::npos);

  testing::TempDir dir("file-watcher-stop");
  auto watcher = FileWatcher::Start(dir.File("x.yaml"), [] {});
  ASSERT_TRUE(watcher.ok());
  (*watcher)->Stop();
  (*watcher)->Stop();
}

}  // namespace
}  // namespace aibrix::discovery
