"""Example DAG with a validated param: `region` must be one of "us" or "eu".

A backfill asking for another region gets a DAG copy that Airflow refuses to import (the
param's schema rejects the override), and backfilld fails it with Airflow's own message.
"""

import datetime

try:
    from airflow.sdk import DAG, Param
except ImportError:  # Airflow 2
    from airflow import DAG
    from airflow.models.param import Param

try:
    from airflow.providers.standard.operators.bash import BashOperator
except ImportError:  # Airflow 2
    from airflow.operators.bash import BashOperator

with DAG(
    dag_id="regional_report",
    schedule="@daily",
    start_date=datetime.datetime(2024, 1, 1, tzinfo=datetime.timezone.utc),
    catchup=False,
    params={"region": Param("us", enum=["us", "eu"])},
    tags=["example"],
):
    BashOperator(task_id="report", bash_command='echo "report {{ ds }} for {{ params.region }}"')
