# Logical dates of one timetable, computed by Airflow itself (backfilld's helper).
#
# backfilld runs this constant script with the Airflow host's Python when a DAG's timetable
# is not one it computes natively (e.g. a timetable registered by an Airflow plugin). The
# request arrives as one JSON document on standard input, never on the command line:
#   {"timetable": <serialized timetable>, "start": "<ISO 8601>", "end": "<ISO 8601>",
#    "limit": <most runs wanted>}
# The answer is one JSON document on standard output:
#   {"runs": [{"logical_date", "interval_start", "interval_end", "run_after"}...],
#    "more": <true when the range holds more than "limit" runs>}
# or {"error": "<why>"}. Everything else Airflow or a plugin prints goes to standard error.
#
# The runs are those Airflow's scheduler creates for a copy of the DAG with start_date=start,
# end_date=end and catchup=True: the timetable is asked for its next run after the previous one
# under TimeRestriction(start, end, catchup=True), as the scheduler and
# DAG.iter_dagrun_infos_between do, until it has none or one lies past `end`.
# Works on Airflow 2.11 (serialized_objects.decode_timetable, next_dagrun_info) and 3.x
# (serialization.decoders.decode_timetable and next_dagrun_info_v2 from 3.2 on).
import json
import os
import sys


def _answer_stream():
    out = os.fdopen(os.dup(1), "w", encoding="utf-8")
    os.dup2(2, 1)
    sys.stdout = sys.stderr
    return out


def _utc(text):
    import datetime

    import pendulum

    parsed = datetime.datetime.fromisoformat(text)
    if parsed.tzinfo is None:
        raise ValueError(f"date {text!r} has no UTC offset")
    return pendulum.instance(parsed).in_timezone("UTC")


def _iso(value):
    import pendulum

    return pendulum.instance(value).in_timezone("UTC").isoformat()


def _decode_timetable():
    try:
        from airflow.serialization.decoders import decode_timetable
    except ImportError:
        from airflow.serialization.serialized_objects import decode_timetable
    return decode_timetable


def _runs(request):
    from airflow.timetables.base import TimeRestriction

    timetable = _decode_timetable()(request["timetable"])
    start = _utc(request["start"])
    end = _utc(request["end"])
    limit = int(request["limit"])
    if getattr(timetable, "partitioned", False):
        return {
            "error": f"{type(timetable).__name__} is a partitioned timetable: its runs have "
            "partition dates, not logical dates"
        }
    restriction = TimeRestriction(earliest=start, latest=end, catchup=True)
    use_v2 = hasattr(timetable, "next_dagrun_info_v2")
    runs = []
    last = None
    while True:
        if use_v2:
            info = timetable.next_dagrun_info_v2(last_dagrun_info=last, restriction=restriction)
        else:
            info = timetable.next_dagrun_info(
                last_automated_data_interval=last.data_interval if last else None,
                restriction=restriction,
            )
        if info is None:
            break
        interval = info.data_interval
        if interval is None:
            return {"error": "the timetable returned a run without a data interval"}
        if interval.start > end:
            break
        if len(runs) >= limit:
            return {"runs": runs, "more": True}
        runs.append(
            {
                "logical_date": _iso(interval.start),
                "interval_start": _iso(interval.start),
                "interval_end": _iso(interval.end),
                "run_after": _iso(info.run_after),
            }
        )
        last = info
    return {"runs": runs, "more": False}


def main():
    out = _answer_stream()
    try:
        request = json.loads(sys.stdin.read())
        answer = _runs(request)
    except Exception as error:  # every failure becomes the answer's reason
        answer = {"error": f"{type(error).__name__}: {error}"}
    out.write(json.dumps(answer))
    out.flush()


main()
