#!/usr/bin/env bash
# Build (once) the Python venvs holding the real Airflow releases the tests run against, and
# schemathesis (the HTTP API's OpenAPI fuzzer) in a venv of its own.
# Idempotent: a venv whose stamp matches its pinned spec is kept as it is.
# BACKFILLD_VENV_DIR overrides the cache directory (default ~/.cache/backfilld/venvs).
# Usage: scripts/airflow-venvs.sh [af2|af3|schemathesis ...]   (no argument: all of them)
set -euo pipefail

dir="${BACKFILLD_VENV_DIR:-$HOME/.cache/backfilld/venvs}"
python="${PYTHON:-python3}"
mkdir -p "$dir"
wanted=("$@")

build() {
    local name=$1 program=$2; shift 2
    if [ "${#wanted[@]}" -gt 0 ] && [[ " ${wanted[*]} " != *" $name "* ]]; then
        return
    fi
    local spec="$*"
    if [ -x "$dir/$name/bin/$program" ] && [ "$(cat "$dir/$name/.spec" 2>/dev/null)" = "$spec" ]; then
        echo "venv $name: up to date ($spec)"
        return
    fi
    echo "venv $name: installing $spec"
    rm -rf "$dir/$name"
    "$python" -m venv "$dir/$name"
    "$dir/$name/bin/pip" install --quiet --upgrade pip
    # shellcheck disable=SC2086
    "$dir/$name/bin/pip" install --quiet $spec
    echo "$spec" > "$dir/$name/.spec"
}

build af2 airflow "apache-airflow[postgres,mysql]==2.11.2"
build af3 airflow "apache-airflow[postgres,mysql]==3.1.8 apache-airflow-providers-fab==3.10.2"
build schemathesis schemathesis "schemathesis==4.32.5"
