"""What Airflow's own backfill would do for every serialized DAG (the tests' oracle).

Reads {"start": ISO, "end": ISO, "max_runs": N} on standard input; writes one JSON object by
dag_id: {"class": timetable class, "periodic": bool, "partitioned": bool, "runs": [logical dates, UTC ISO; at most
N + 1, so more than N means "more than N"], "error": text}.
The runs are DAG.iter_dagrun_infos_between(start, end) of the deserialized DAG, which both
`airflow dags backfill` (2.x) and the native backfill (3.x) use.
"""

import json
import os
import sys

out = os.fdopen(os.dup(1), "w")
os.dup2(2, 1)
sys.stdout = sys.stderr

import pendulum  # noqa: E402

from airflow.models.serialized_dag import SerializedDagModel  # noqa: E402

request = json.loads(sys.stdin.read())
start = pendulum.parse(request["start"])
end = pendulum.parse(request["end"])
answer = {}
for dag_id, dag in sorted(SerializedDagModel.read_all_dags().items()):
    timetable = dag.timetable
    entry = {
        "class": f"{type(timetable).__module__}.{type(timetable).__qualname__}",
        "periodic": bool(getattr(timetable, "periodic", True)),
        "partitioned": bool(getattr(timetable, "partitioned", False)),
        "runs": [],
        "error": None,
    }
    try:
        for info in dag.iter_dagrun_infos_between(start, end):
            if info.data_interval is None:
                entry["error"] = "run without a data interval (partitioned)"
                break
            entry["runs"].append(pendulum.instance(info.logical_date).in_timezone("UTC").isoformat())
            if len(entry["runs"]) > request["max_runs"]:
                break
    except Exception as error:
        entry["error"] = f"{type(error).__name__}: {error}"
    answer[dag_id] = entry
out.write(json.dumps(answer))
out.flush()
