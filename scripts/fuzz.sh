#!/usr/bin/env bash
# Run the request fuzz target (parsing + validation + overlay rendering) for a bounded time,
# starting from the corpus kept in fuzz/corpus/request. Usage: scripts/fuzz.sh [SECONDS]
# cargo-fuzz needs nightly-only rustc flags; RUSTC_BOOTSTRAP=1 lets the stable toolchain accept
# them (libFuzzer and the sanitizer runtimes ship with stable rust-std on x86_64 Linux).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup-host.sh fuzz
cd fuzz
seconds="${1:-60}"
# New inputs go to a scratch directory, so the committed corpus changes only on purpose.
scratch="$(mktemp -d)"
trap 'rm -rf "$scratch"' EXIT
RUSTC_BOOTSTRAP=1 cargo fuzz run request "$scratch" corpus/request -- \
    -max_total_time="$seconds" -max_len=70000 -timeout=10 -rss_limit_mb=2048
