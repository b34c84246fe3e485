"""Example DAG for backfilld's asset tests: `produce` updates a dataset (Airflow 2) / asset
(Airflow 3) that `asset_consumer` is scheduled on.

Daily, catchup off, paused at creation: every run comes from a backfill. A backfill copy emits
no dataset/asset event unless the request sets `emit_asset_events = true`. `mark_consumer`, an
ExternalTaskMarker (it does nothing when it runs), makes backfilld warn that the DAG is tied to
another DAG's runs of the same logical dates.
"""

import datetime

try:
    from airflow.sdk import DAG, Asset
except ImportError:  # Airflow 2
    from airflow import DAG
    from airflow.datasets import Dataset as Asset

try:
    from airflow.providers.standard.operators.bash import BashOperator
    from airflow.providers.standard.sensors.external_task import ExternalTaskMarker
except ImportError:  # Airflow 2
    from airflow.operators.bash import BashOperator
    from airflow.sensors.external_task import ExternalTaskMarker

ORDERS = Asset("x-backfilld://demo/orders")

with DAG(
    dag_id="asset_producer",
    schedule="@daily",
    start_date=datetime.datetime(2024, 1, 1, tzinfo=datetime.timezone.utc),
    catchup=False,
    default_args={"retries": 0},
    tags=["example"],
):
    produce = BashOperator(
        task_id="produce", bash_command='echo "orders of {{ ds }}"', outlets=[ORDERS]
    )
    mark = ExternalTaskMarker(
        task_id="mark_consumer", external_dag_id="asset_consumer", external_task_id="consume"
    )
    produce >> mark
