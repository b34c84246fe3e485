"""Example DAG without a schedule: backfilld refuses it (there are no logical dates to run)."""

import datetime

try:
    from airflow.sdk import DAG
except ImportError:  # Airflow 2
    from airflow import DAG

try:
    from airflow.providers.standard.operators.empty import EmptyOperator
except ImportError:  # Airflow 2
    from airflow.operators.empty import EmptyOperator

with DAG(
    dag_id="manual_only",
    schedule=None,
    start_date=datetime.datetime(2024, 1, 1, tzinfo=datetime.timezone.utc),
    tags=["example"],
):
    EmptyOperator(task_id="noop")
