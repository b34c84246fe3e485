"""A DAG scheduled by the plugin timetable of backfilld_workday_mornings (plugins folder)."""

import datetime

from backfilld_workday_mornings import WorkdayMorningTimetable

try:
    from airflow.sdk import DAG
except ImportError:  # Airflow 2
    from airflow import DAG

try:
    from airflow.providers.standard.operators.empty import EmptyOperator
except ImportError:  # Airflow 2
    from airflow.operators.empty import EmptyOperator

with DAG(
    dag_id="workday_mornings",
    schedule=WorkdayMorningTimetable(),
    start_date=datetime.datetime(2024, 1, 1, tzinfo=datetime.timezone.utc),
    catchup=False,
    tags=["example"],
):
    EmptyOperator(task_id="noop")
