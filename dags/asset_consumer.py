"""Example DAG for backfilld's asset tests: scheduled on the dataset/asset `asset_producer`
updates. Paused at creation; the asset test unpauses it and counts its runs.
"""

import datetime

try:
    from airflow.sdk import DAG, Asset
except ImportError:  # Airflow 2
    from airflow import DAG
    from airflow.datasets import Dataset as Asset

try:
    from airflow.providers.standard.operators.bash import BashOperator
except ImportError:  # Airflow 2
    from airflow.operators.bash import BashOperator

with DAG(
    dag_id="asset_consumer",
    schedule=[Asset("x-backfilld://demo/orders")],
    start_date=datetime.datetime(2024, 1, 1, tzinfo=datetime.timezone.utc),
    catchup=False,
    default_args={"retries": 0},
    tags=["example"],
):
    BashOperator(task_id="consume", bash_command='echo "consuming {{ ds }}"')
