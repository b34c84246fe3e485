"""Example DAG: weekly (Sundays 00:00 UTC), for tests of ranges with no logical date."""

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
    dag_id="weekly_report",
    schedule="@weekly",
    start_date=datetime.datetime(2024, 1, 1, tzinfo=datetime.timezone.utc),
    catchup=False,
    tags=["example"],
):
    EmptyOperator(task_id="report")
