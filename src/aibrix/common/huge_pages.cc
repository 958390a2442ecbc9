#include "aibrix/common/huge_pages.h"

#include <unistd.h>

#include <cstdlib>
#include <fstream>
#include <string>

namespace aibrix::common {
namespace {

constexpr char kTunable[] = "glibc.malloc.hugetlb=1";

}  // namespace

std::string TransparentHugePageMode() {
  std::ifstream in("/sys/kernel/mm/transparent_hugepage/enabled");
  std::string line;
  std::getline(in, line);
  const auto open = line.find('['), close = line.find(']');
  if (open == std::string::npos || close == std::string::npos || close < open) return "";
  return line.substr(open + 1, close - open - 1);
}

void UseHugePagesForMalloc(char** argv) {
  if (const char* opt = std::getenv("AIBRIX_HUGEPAGES");
      opt != nullptr && std::string(opt) == "0") {
    return;
  }
  const char* tunables = std::getenv("GLIBC_TUNABLES");
  if (tunables != nullptr &&
      std::string(tunables).find("glibc.malloc.hugetlb") != std::string::npos) {
    return;  // set already (by us before the exec, or by the user)
  }
  if (TransparentHugePageMode() != "madvise") return;  // "always": every page may be huge already
  std::string value = tunables != nullptr && *tunables != '\0'
                          ? std::string(tunables) + ":" + kTunable
                          : std::string(kTunable);
  // The program's own path (not /proc/self/exe, which would rename the process "exe").
  char path[4096];
  const ssize_t len = readlink("/proc/self/exe", path, sizeof(path) - 1);
  if (len <= 0) return;
  path[len] = '\0';
  if (setenv("GLIBC_TUNABLES", value.c_str(), 1) != 0) return;
  execv(path, argv);
  // The exec failed: carry on with small pages (and do not pass the tunable on).
  if (tunables != nullptr) {
    setenv("GLIBC_TUNABLES", tunables, 1);
  } else {
    unsetenv("GLIBC_TUNABLES");
  }
}

}  // namespace aibrix::common
