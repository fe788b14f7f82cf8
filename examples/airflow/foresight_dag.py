"""Foresight's predictive engine on Airflow: every tenant's assets scored hourly, every tenant
with failure records retrained weekly, by the `foresight` command line.

Copy this file into the DAGs folder of an Airflow (2.4 or later) whose workers have Foresight
installed (`pip install foresight`, or the image) and can reach its database. Set the Airflow
Variable ``foresight_database_url`` (e.g. ``postgresql+psycopg://user:pw@db:5432/foresight``),
and turn the API's own schedule off so the two do not both do the work on their own clocks:
``FORESIGHT_SCHEDULE_EMBEDDED=false`` on the API processes.

- ``foresight predict --all-tenants`` scores every asset of every tenant and stores the
  predictions (the rows it prints are not needed here); a tenant that fails is reported and the
  others are scored, and the task fails (exit 1) so Airflow retries it.
- ``foresight train --all-tenants`` trains every tenant with failure records; each new version
  becomes champion only if it beats the champion on the held-out window.

Either task could be ``foresight schedule run --once`` instead, which does only what is due
(when each was last done is read from the database), like the API's own schedule.

Foresight does not depend on Airflow; its tests parse this file (``ast``) and check every
command against the real command line without importing Airflow.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from airflow import DAG

try:  # Airflow 3
    from airflow.providers.standard.operators.bash import BashOperator
except ImportError:  # Airflow 2
    from airflow.operators.bash import BashOperator

# The command line reads its settings from the environment (FORESIGHT_*), like every process.
ENV = {"FORESIGHT_DATABASE_URL": "{{ var.value.foresight_database_url }}"}
DEFAULT_ARGS = {
    "owner": "maintenance",
    "retries": 2,
    "retry_delay": timedelta(minutes=5),
}

with DAG(
    dag_id="foresight_scoring",
    description="Score every asset of every tenant and store the predictions",
    schedule="@hourly",
    start_date=datetime(2026, 1, 1),
    catchup=False,  # a missed hour is caught up by the next run, not replayed
    max_active_runs=1,
    default_args=DEFAULT_ARGS,
    tags=["foresight"],
):
    BashOperator(
        task_id="score_all_tenants",
        bash_command="foresight predict --all-tenants --format csv > /dev/null",
        env=ENV,
        append_env=True,
        execution_timeout=timedelta(minutes=50),
    )

with DAG(
    dag_id="foresight_retraining",
    description="Retrain every tenant with failure records (champion/challenger)",
    schedule="@weekly",
    start_date=datetime(2026, 1, 1),
    catchup=False,
    max_active_runs=1,
    default_args=DEFAULT_ARGS,
    tags=["foresight"],
):
    BashOperator(
        task_id="retrain_all_tenants",
        bash_command="foresight train --all-tenants",
        env=ENV,
        append_env=True,
        execution_timeout=timedelta(hours=6),
    )
