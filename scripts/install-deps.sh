#!/usr/bin/env bash
# Install every Debian 12 package that celtrace's build, tests, demo and
# benchmarks need. Idempotent and non-interactive; run as root (or via sudo).
set -euo pipefail

PKGS=(
  # build
  build-essential cmake pkg-config
  # libraries (headers + runtime)
  libsodium-dev libpng-dev zlib1g-dev libdeflate-dev libjpeg62-turbo-dev
  libavformat-dev libavcodec-dev libavutil-dev libswscale-dev
  libsqlite3-dev libjansson-dev libfftw3-dev
  # tests, demo and benchmarks: real attack tools and helpers
  imagemagick webp ffmpeg jq sqlite3 gnuplot-nox time
  # sanitizer runtimes
  libasan8 libubsan1
)

SUDO=""
if [ "$(id -u)" != 0 ]; then
  if command -v sudo >/dev/null 2>&1; then
    SUDO="sudo"
  else
    echo "install-deps: run as root (or install sudo)" >&2
    exit 2
  fi
fi

missing=()
for p in "${PKGS[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then
    missing+=("$p")
  fi
done

if [ ${#missing[@]} -eq 0 ]; then
  echo "install-deps: all ${#PKGS[@]} packages already installed"
  exit 0
fi

echo "install-deps: installing ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
echo "install-deps: done"
