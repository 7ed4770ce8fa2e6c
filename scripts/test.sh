#!/usr/bin/env bash
# The one test command: setup, build everything, Rust tests, then the browser end-to-end tests.
# Exits non-zero if any step fails; later test suites still run after an earlier one fails, so
# one run reports everything.
set -uo pipefail
cd "$(dirname "$0")/.."

scripts/setup.sh || exit 1
cargo build --workspace --all-targets || exit 1
# The server as the README's run command builds it (`cargo run --release --bin aula`).
cargo build --release --bin aula || exit 1

status=0
if cargo nextest --version >/dev/null 2>&1; then
  cargo nextest run --workspace --no-fail-fast || status=1
else
  cargo test --workspace --no-fail-fast || status=1
fi

# The browser tests start target/release/aula, built above.
# One file at a time: each starts a server and several Chromium pages on a 2-core machine.
(cd tests/browser && node --test --test-concurrency=1 class.test.js grants.test.js classroom.test.js lan.test.js support.test.js reconnect.test.js weak-network.test.js fec.test.js playback.test.js recording.test.js relay.test.js failover.test.js outage.test.js) || status=1

exit $status
