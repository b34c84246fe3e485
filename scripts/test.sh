#!/usr/bin/env bash
# The whole test suite: unit tests, and end-to-end tests against real Airflow releases and
# real PostgreSQL and MariaDB servers. Installs missing system packages first
# (scripts/setup-host.sh), finds or starts the database servers (scripts/test-dbs.sh: our own
# ones keep their data and logs under target/test-dbs/ and are stopped on exit).
# The benchmark (benches/daemon.rs) is not a test: it runs only with BACKFILLD_TEST_BENCH=1, or
# on its own with `cargo bench --bench daemon`.
# Usage: scripts/test.sh [--dbs-only]   (--dbs-only: set up, bring up the databases, check
# each with one create/drop database, stop; no venvs, no cargo)
set -euo pipefail
cd "$(dirname "$0")/.."

dbs_only=0
case "${1:-}" in
    "") ;;
    --dbs-only) dbs_only=1 ;;
    *) echo "usage: scripts/test.sh [--dbs-only]" >&2; exit 2 ;;
esac

# Packages are installed on this machine by their test: only in CI or when asked.
test_packages=0
if [ "${CI:-}" = "true" ] || [ "${BACKFILLD_TEST_PACKAGES:-}" = "1" ]; then
    test_packages=1
fi
if [ "$test_packages" -eq 1 ]; then
    scripts/setup-host.sh test packages
else
    scripts/setup-host.sh test
fi

# shellcheck source=scripts/test-dbs.sh
. scripts/test-dbs.sh
trap test_dbs_down EXIT
test_dbs_up
if [ "$dbs_only" -eq 1 ]; then
    test_dbs_check
    exit 0
fi

scripts/airflow-venvs.sh
# diesel and rusqlite must share one SQLite library build.
n=$(cargo tree -e normal,build,dev --prefix none 2>/dev/null | grep -oE '^libsqlite3-sys v[0-9.]+' | sort -u | wc -l)
if [ "$n" -ne 1 ]; then
    echo "expected exactly one libsqlite3-sys in the dependency graph, found $n" >&2
    cargo tree -d >&2
    exit 1
fi
if [ "$test_packages" -eq 1 ]; then
    packaging/test-packages.sh
fi
# Every target but the bench: `--all-targets` would also run benches/daemon.rs (harness =
# false), the whole benchmark in a debug build.
cargo test --lib --bins --tests -- --test-threads=2
if [ "${BACKFILLD_TEST_BENCH:-}" = "1" ]; then
    cargo bench --bench daemon
fi
