#include "tests/util/temp_dir.h"

#include <stdlib.h>

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>

namespace aibrix::testing {
namespace {

std::string BaseDir() {
  for (const char* var : {"TEST_TMPDIR", "TMPDIR"}) {
    const char* value = std::getenv(var);
    if (value != nullptr && value[0] != '\0') return value;
  }
  return "/tmp";
}

[[noreturn]] void Die(const std::string& what) {
  std::fprintf(stderr, "TempDir: %s: %s\n", what.c_str(), std::strerror(errno));
  std::abort();
}

}  // namespace

TempDir::TempDir(std::string_view prefix) {
  std::string pattern = BaseDir() + "/aibrix-" + std::string(prefix) + "-XXXXXX";
  if (mkdtemp(pattern.data()) == nullptr) Die("cannot create " + pattern);
  path_ = std::move(pattern);
}

TempDir::~TempDir() {
  std::error_code ignored;  // best effort: a leftover directory must not fail a test
  std::filesystem::remove_all(path_, ignored);
}

std::string TempDir::File(std::string_view name) const { return path_ + "/" + std::string(name); }

std::string TempDir::Write(std::string_view name, std::string_view content) const {
  const std::string file = File(name);
  std::ofstream out(file, std::ios::binary | std::ios::trunc);
  out.write(content.data(), static_cast<std::streamsize>(content.size()));
  out.close();
  if (!out) Die("cannot write " + file);
  return file;
}

}  // namespace aibrix::testing
