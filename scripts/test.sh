#!/usr/bin/env bash
# The whole test suite: unit tests, and end-to-end tests against real Airflow releases.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/airflow-venvs.sh
# diesel and rusqlite must share one SQLite library build.
n=$(cargo tree -e normal,build,dev --prefix none 2>/dev/null | grep -oE '^libsqlite3-sys v[0-9.]+' | sort -u | wc -l)
if [ "$n" -ne 1 ]; then
    echo "expected exactly one libsqlite3-sys in the dependency graph, found $n" >&2
    cargo tree -d >&2
    exit 1
fi
# Packages are installed on this machine by their test: only in CI or when asked.
if [ "${CI:-}" = "true" ] || [ "${BACKFILLD_TEST_PACKAGES:-}" = "1" ]; then
    packaging/test-packages.sh
fi
cargo test --all-targets -- --test-threads=2
