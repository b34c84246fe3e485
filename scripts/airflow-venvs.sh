#!/usr/bin/env bash
# Build (once) the Python venvs holding the real Airflow releases the tests run against,
# schemathesis (the HTTP API's OpenAPI fuzzer) in a venv of its own, and two package
# directories that only one test puts on its Airflow's PYTHONPATH (the shared venvs are not
# touched, so Airflow's version cannot change): the seed plugin (li-airflow-backfill-plugin
# from PyPI, for the import-seed test, on af2) and python-ldap (FAB's AUTH_LDAP, for the LDAP
# sign-in test, on af2 and af33; built from source against libldap-dev and libsasl2-dev).
# Idempotent: a venv whose stamp matches its pinned spec is kept as it is.
# BACKFILLD_VENV_DIR overrides the cache directory (default ~/.cache/backfilld/venvs).
# Usage: scripts/airflow-venvs.sh [af2|af30|af3|af32|af33|schemathesis|seedplugin|pyldap ...]   (no argument: all of them)
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
# Every Airflow 3 minor: 3.0 and 3.2 run the SQLite core scenario and schema detection only.
# 3.0.6 needs SQLAlchemy 1.4 (sqlalchemy<2.0); the newest alembic, sqlalchemy-utils and
# Flask-SQLAlchemy need SQLAlchemy 2, and pip backtracks for longer than CI can wait before it
# finds the older ones, so their bounds are given here (the FAB provider 3.10.2 declares
# apache-airflow>=3.0.2 and installs with them). 3.0.6 declares no upper bound on FastAPI, and
# with a newer one its execution API refuses every task start (422 "Input should be a valid
# dictionary" on PATCH .../run): it gets the bound 3.1.8 declares, fastapi<0.118.0.
build af30 airflow "apache-airflow[postgres,mysql]==3.0.6 apache-airflow-providers-fab==3.10.2 sqlalchemy<2.0 alembic<1.20 sqlalchemy-utils<0.43 flask-sqlalchemy<3.1 fastapi<0.118.0"
build af3 airflow "apache-airflow[postgres,mysql]==3.1.8 apache-airflow-providers-fab==3.10.2"
# 3.2.2 declares no upper bound on FastAPI, and its api-server dies at start with FastAPI 0.137+
# (pydantic "needs a discriminator field" on the execution API's routes); 3.3.2 declares
# fastapi<0.137.0 itself, so 3.2 gets the same bound here.
build af32 airflow "apache-airflow[postgres,mysql]==3.2.2 apache-airflow-providers-fab==3.10.2 fastapi<0.137.0"
# The newest Airflow 3 release: the core scenarios, the schedule oracle and the corpus run on it too.
build af33 airflow "apache-airflow[postgres,mysql]==3.3.2 apache-airflow-providers-fab==3.10.2"
build schemathesis schemathesis "schemathesis==4.32.5"

# A pip --target install without dependencies (the seed plugin declares none, python-ldap's
# two are pinned beside it; Airflow comes from the venv): the packages and their dist-info
# (the seed plugin's with its airflow.plugins entry point) land in one directory, stamped like
# the venvs.
install_target() {
    local name=$1 marker=$2 pip=$3; shift 3
    if [ "${#wanted[@]}" -gt 0 ] && [[ " ${wanted[*]} " != *" $name "* ]]; then
        return
    fi
    local spec="$*"
    if [ -e "$dir/$name/$marker" ] && [ "$(cat "$dir/$name/.spec" 2>/dev/null)" = "$spec" ]; then
        echo "package dir $name: up to date ($spec)"
        return
    fi
    echo "package dir $name: installing $spec"
    rm -rf "$dir/$name"
    # shellcheck disable=SC2086
    "$pip" install --quiet --no-deps --target "$dir/$name" $spec
    echo "$spec" > "$dir/$name/.spec"
}

install_target seedplugin linkedin/airflow/backfill/__init__.py "$dir/af2/bin/pip" "li-airflow-backfill-plugin==1.0.4"
# One build serves af2 and af33: both venvs run the same python3 (the extension is built for it).
install_target pyldap ldap/__init__.py "$dir/af2/bin/pip" "python-ldap==3.4.8 pyasn1==0.6.5 pyasn1-modules==0.4.2"
