#!/usr/bin/env bash
# Build celtrace and run the whole test suite with ctest.
#   scripts/test.sh              warnings as errors, build in build/
#   scripts/test.sh --sanitize   the same under AddressSanitizer + UBSan, in build-asan/
# Installs the Debian packages it needs first (scripts/install-deps.sh).
set -euo pipefail
cd "$(dirname "$0")/.."

sanitize=OFF
builddir=build
for a in "$@"; do
  case "$a" in
    --sanitize) sanitize=ON; builddir=build-asan ;;
    -h|--help) sed -n '2,5p' "$0"; exit 0 ;;
    *) echo "test.sh: unknown argument $a" >&2; exit 2 ;;
  esac
done

scripts/install-deps.sh
cmake -S . -B "$builddir" -DCELTRACE_WERROR=ON -DCELTRACE_SANITIZE=$sanitize -DCMAKE_BUILD_TYPE=RelWithDebInfo
cmake --build "$builddir" -j"$(nproc)"
if [ "$sanitize" = ON ]; then
  # Leaks are errors too; abort on the first report so ctest sees a failure.
  export ASAN_OPTIONS=detect_leaks=1:abort_on_error=1
  export UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1
fi
cd "$builddir"
ctest --output-on-failure -j"$(nproc)"
