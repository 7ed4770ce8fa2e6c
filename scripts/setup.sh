#!/usr/bin/env bash
# Installs what building and testing Aula needs on a fresh Debian, and nothing that is already there.
# Safe to run again: every step checks first. Needs root (or sudo) only when something is missing.
set -euo pipefail
cd "$(dirname "$0")/.."

sudo=""
[ "$(id -u)" -eq 0 ] || sudo="sudo"

# Debian package for each command the build and the tests call:
# cmake + pkg-config build the bundled libopus; chromium runs the browser tests under node/npm;
# ip (iproute2) makes the network namespace that plays a second computer in lan.test.js;
# redis-server backs the cluster directory tests (signaling/tests/cluster.rs).
declare -A package_of=(
  [cmake]=cmake
  [pkg-config]=pkg-config
  [cc]=build-essential
  [chromium]=chromium
  [node]=nodejs
  [npm]=npm
  [ip]=iproute2
  [redis-server]=redis-server
)
missing=()
for cmd in "${!package_of[@]}"; do
  command -v "$cmd" >/dev/null 2>&1 || missing+=("${package_of[$cmd]}")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "setup: installing ${missing[*]}"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

# The browser tests' node modules, reinstalled only when package-lock.json changed.
lock_sum=$(sha256sum tests/browser/package-lock.json | cut -d' ' -f1)
stamp=tests/browser/node_modules/.aula-lock-sha256
if [ "$(cat "$stamp" 2>/dev/null)" != "$lock_sum" ]; then
  echo "setup: npm ci in tests/browser"
  (cd tests/browser && npm ci --no-audit --no-fund --loglevel=error >/dev/null)
  echo "$lock_sum" >"$stamp"
fi
