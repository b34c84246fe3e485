"""Example DAG for backfilld's life-cycle tests (cancel, pause/resume, delete, retry).

Daily, catchup off, paused at creation (Airflow's default): every run comes from a backfill.
`work` sleeps `params.sleep` seconds (default 0), so a test can catch runs mid-way. `check`
fails when a file named after the logical date (`YYYY-MM-DD`) exists in `params.fail_dir`
(default empty: never fails), so a test chooses which dates fail, and by removing the file
lets a retry of them succeed.
"""

import datetime

try:
    from airflow.sdk import DAG
except ImportError:  # Airflow 2
    from airflow import DAG

try:
    from airflow.providers.standard.operators.bash import BashOperator
except ImportError:  # Airflow 2
    from airflow.operators.bash import BashOperator

with DAG(
    dag_id="lifecycle_demo",
    schedule="@daily",
    start_date=datetime.datetime(2024, 1, 1, tzinfo=datetime.timezone.utc),
    catchup=False,
    params={"sleep": 0, "fail_dir": ""},
    default_args={"retries": 0},
    tags=["example"],
) as dag:
    work = BashOperator(
        task_id="work",
        bash_command='sleep "{{ params.sleep }}"; echo "worked on {{ ds }}"',
    )
    check = BashOperator(
        task_id="check",
        bash_command=(
            'test -z "{{ params.fail_dir }}" || test ! -e "{{ params.fail_dir }}/{{ ds }}" '
            '|| { echo "{{ ds }} is marked to fail"; exit 1; }'
        ),
    )
    work >> check
