"""Example DAG for backfilld's task-subset tests: extract >> transform >> load.

Daily, catchup off, paused at creation: every run comes from a backfill. Each task only echoes,
so a backfill with `tasks = ["^transform$"]` shows exactly which task instances ran.
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
    dag_id="etl_chain",
    schedule="@daily",
    start_date=datetime.datetime(2024, 1, 1, tzinfo=datetime.timezone.utc),
    catchup=False,
    default_args={"retries": 0},
    tags=["example"],
):
    extract = BashOperator(task_id="extract", bash_command='echo "extract {{ ds }}"')
    transform = BashOperator(task_id="transform", bash_command='echo "transform {{ ds }}"')
    load = BashOperator(task_id="load", bash_command='echo "load {{ ds }}"')
    extract >> transform >> load
