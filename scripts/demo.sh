#!/usr/bin/env bash
# Demo of the main job on the embedded default (Airflow 2.11 with SQLite): a real scheduler,
# backfilld, and one backfill of the example DAG `sales` submitted with backfillctl and
# followed to success. Everything lives under target/demo and is stopped on exit.
# Installs missing system packages first (scripts/setup-host.sh).
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)

scripts/setup-host.sh demo
scripts/airflow-venvs.sh af2
venv="${BACKFILLD_VENV_DIR:-$HOME/.cache/backfilld/venvs}/af2"
cargo build --quiet --bins
bin="$root/target/debug"

demo="$root/target/demo"
rm -rf "$demo"
mkdir -p "$demo/airflow/dags" "$demo/backfilld"
cp dags/*.py "$demo/airflow/dags/"
chmod 755 "$demo" "$demo/backfilld"

export AIRFLOW_HOME="$demo/airflow"
export AIRFLOW__CORE__LOAD_EXAMPLES=False
export AIRFLOW__CORE__EXECUTOR=SequentialExecutor
export AIRFLOW__SCHEDULER__SCHEDULER_HEARTBEAT_SEC=2
export PYTHONWARNINGS=ignore
export PATH="$venv/bin:$PATH"

pids=()
cleanup() {
    for pid in "${pids[@]}"; do kill -TERM -- "-$pid" 2>/dev/null || true; done
    wait 2>/dev/null || true
}
trap cleanup EXIT

echo "== migrating a fresh Airflow metadata DB (SQLite) in $AIRFLOW_HOME"
airflow db migrate >"$demo/migrate.log" 2>&1

me=$(id -un)
echo "== creating the Airflow user '$me' (role User: may edit DAGs, so may backfill them)"
airflow sync-perm >"$demo/sync-perm.log" 2>&1
airflow users create -u "$me" -p "demo-$RANDOM$RANDOM" -f Demo -l User -e "$me@demo.invalid" \
    -r User >"$demo/users.log" 2>&1

echo "== starting the Airflow scheduler (log: $demo/scheduler.log)"
setsid airflow scheduler >"$demo/scheduler.log" 2>&1 &
pids+=($!)

# backfilld accepts a DAG once its row is active and its serialized form is stored.
echo "== waiting for Airflow to parse the example DAG 'sales'"
for _ in $(seq 1 180); do
    if python3 -c "import sqlite3,sys; c=sqlite3.connect('$AIRFLOW_HOME/airflow.db'); sys.exit(0 if c.execute(\"select count(*) from dag d join serialized_dag s on s.dag_id = d.dag_id where d.dag_id = 'sales' and d.is_active = 1\").fetchone()[0] else 1)" 2>/dev/null; then
        break
    fi
    sleep 1
done

cat >"$demo/backfilld/backfilld.toml" <<CONF
[airflow]
home = "$AIRFLOW_HOME"

[spool]
dir = "$demo/backfilld/spool"

[reconcile]
interval_secs = 2
CONF

echo "== starting backfilld (log: $demo/backfilld.log)"
setsid "$bin/backfilld" --config "$demo/backfilld/backfilld.toml" >"$demo/backfilld.log" 2>&1 &
pids+=($!)
for _ in $(seq 1 50); do [ -S "$demo/backfilld/spool/public/control.sock" ] && break; sleep 0.2; done

ctl() { "$bin/backfillctl" --config "$demo/backfilld/backfilld.toml" "$@"; }

echo "== backfillctl submit --dag sales --start 2024-01-01 --end 2024-01-03 --param region=eu --max-active-runs 2"
id=$(ctl submit --dag sales --start 2024-01-01 --end 2024-01-03 --param region=eu --max-active-runs 2 \
    --description "demo: recompute three days for region eu")
echo "accepted as $id; the DAG copy is $AIRFLOW_HOME/dags/backfill_user_dags/$id.py"

echo "== backfillctl status $id --watch"
ctl status "$id" --watch
echo
echo "== backfillctl list"
ctl list
echo
echo "== what the task printed (param region=eu reached it):"
grep -rh "region=" "$AIRFLOW_HOME/logs/dag_id=$id" | grep -o "extract .*region=[a-z]*" | sort -u
state=$(ctl status "$id" --json | python3 -c "import json,sys; print(json.load(sys.stdin)['state'])")
echo "== final state: $state"
[ "$state" = success ]
