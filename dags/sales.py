"""Example DAG for the backfilld demo and tests.

Daily, catchup off, paused at creation: the scheduler never runs it by itself, so every run
you see comes from a backfill. `extract` prints the `region` param; `transform` fails for any
logical date in 2023 ("the 2023 source data is gone"), which gives the tests a failing range.
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
    dag_id="sales",
    schedule="@daily",
    start_date=datetime.datetime(2024, 1, 1, tzinfo=datetime.timezone.utc),
    catchup=False,
    params={"region": "us"},
    default_args={"retries": 0},
    tags=["example"],
) as dag:
    extract = BashOperator(
        task_id="extract",
        bash_command='echo "extract {{ ds }} region={{ params.region }}"',
    )
    transform = BashOperator(
        task_id="transform",
        bash_command='test "{{ ds[:4] }}" != "2023" || { echo "no source data for {{ ds }}"; exit 1; }',
    )
    extract >> transform
