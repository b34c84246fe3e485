"""A DAG with per-DAG access control, for backfilld's permission tests.

Not in the top-level dags/ on purpose: `access_control` names the role `ledger_editor`, which
must exist before Airflow parses this file (else Airflow records an import error), so only the
tests that create the role copy it into their DAGs folder.
"""

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
    dag_id="ledger",
    schedule="@daily",
    start_date=datetime.datetime(2024, 1, 1, tzinfo=datetime.timezone.utc),
    catchup=False,
    access_control={"ledger_editor": {"can_read", "can_edit"}},
    tags=["example"],
) as dag:
    EmptyOperator(task_id="close_books")
