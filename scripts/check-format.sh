#!/usr/bin/env bash
# Fails if any of our C++ files is not formatted with clang-format 14 and .clang-format.
set -euo pipefail
cd "$(dirname "$0")/.."
formatter=$(command -v clang-format-14 || command -v clang-format)
bad=$(git ls-files '*.cc' '*.h' | xargs -r "$formatter" --dry-run -Werror 2>&1 | grep -o '^[^:]*\.\(cc\|h\)' | sort -u || true)
if [ -n "$bad" ]; then
  echo "not clang-formatted (run: clang-format -i <file>):"
  echo "$bad"
  exit 1
fi
echo "format: ok"
