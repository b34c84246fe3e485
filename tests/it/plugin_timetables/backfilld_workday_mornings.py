"""An Airflow plugin registering a custom timetable, for backfilld's plugin-timetable test.

Runs at 06:00 UTC on Mondays to Fridays; each run's data interval spans to the next one.
"""

from datetime import timedelta

import pendulum

from airflow.plugins_manager import AirflowPlugin
from airflow.timetables.base import DagRunInfo, DataInterval, Timetable


def _slot_on_or_after(at):
    at = pendulum.instance(at).in_timezone("UTC")
    slot = at.start_of("day") + timedelta(hours=6)
    if slot < at:
        slot += timedelta(days=1)
    while slot.weekday() >= 5:
        slot += timedelta(days=1)
    return slot


class WorkdayMorningTimetable(Timetable):
    description = "Mondays to Fridays at 06:00 UTC"

    def infer_manual_data_interval(self, *, run_after):
        return DataInterval.exact(run_after)

    def next_dagrun_info(self, *, last_automated_data_interval, restriction):
        if last_automated_data_interval is not None:
            start = _slot_on_or_after(last_automated_data_interval.start + timedelta(minutes=1))
        elif restriction.earliest is None:
            return None
        elif not restriction.catchup:
            start = _slot_on_or_after(max(restriction.earliest, pendulum.now("UTC")))
        else:
            start = _slot_on_or_after(restriction.earliest)
        if restriction.latest is not None and start > restriction.latest:
            return None
        end = _slot_on_or_after(start + timedelta(minutes=1))
        return DagRunInfo.interval(start=start, end=end)


class WorkdayMorningPlugin(AirflowPlugin):
    name = "backfilld_workday_mornings"
    timetables = [WorkdayMorningTimetable]
