"""The pure slot arithmetic of schedules (lanes/_schedule.py): no Trio, no clock."""

from __future__ import annotations

import itertools
from datetime import UTC, datetime
from zoneinfo import ZoneInfo

import pytest

from lanes import LaneConfigError
from lanes._schedule import Timing, decide, make_timing

BERLIN = ZoneInfo("Europe/Berlin")
NEW_YORK = ZoneInfo("America/New_York")


def slots(timing: Timing, start: float, count: int) -> list[float]:
    out = []
    t = start
    for _ in range(count):
        nxt = timing.next_after(t)
        assert nxt is not None
        out.append(nxt)
        t = nxt
    return out


def local(ts: float, zone: ZoneInfo) -> str:
    return datetime.fromtimestamp(ts, zone).isoformat()


def test_interval_slots_count_from_the_anchor() -> None:
    timing = make_timing(10, None, None, 1000.0)
    assert slots(timing, 1000.0, 3) == [1010.0, 1020.0, 1030.0]
    assert timing.next_after(1015.5) == 1020.0
    assert timing.next_after(1020.0) == 1030.0  # strictly after
    assert timing.next_after(0.0) == 1010.0  # never before the first slot


def test_interval_slots_survive_rounding() -> None:
    timing = make_timing(0.1, None, None, 0.0)
    t = 0.0
    for _ in range(1000):
        nxt = timing.next_after(t)
        assert nxt is not None and nxt > t
        t = nxt
    assert t == pytest.approx(100.0)


def test_cron_slots_in_utc() -> None:
    start = datetime(2026, 1, 5, 8, 0, tzinfo=UTC).timestamp()  # a Monday
    timing = make_timing(None, "0 9 * * MON-FRI", None, start)
    got = [local(s, ZoneInfo("UTC")) for s in slots(timing, start, 6)]
    assert got == [
        "2026-01-05T09:00:00+00:00",
        "2026-01-06T09:00:00+00:00",
        "2026-01-07T09:00:00+00:00",
        "2026-01-08T09:00:00+00:00",
        "2026-01-09T09:00:00+00:00",
        "2026-01-12T09:00:00+00:00",
    ]


def test_daily_job_on_spring_forward_day_runs_once() -> None:
    # Europe/Berlin: 2026-03-29 02:00 CET -> 03:00 CEST; 02:30 does not exist that day.
    start = datetime(2026, 3, 27, 12, 0, tzinfo=BERLIN).timestamp()
    timing = make_timing(None, "30 2 * * *", "Europe/Berlin", start)
    assert [local(s, BERLIN) for s in slots(timing, start, 4)] == [
        "2026-03-28T02:30:00+01:00",
        "2026-03-29T03:00:00+02:00",  # run once, as soon as the skipped time has passed
        "2026-03-30T02:30:00+02:00",
        "2026-03-31T02:30:00+02:00",
    ]


def test_daily_job_on_fall_back_day_runs_once() -> None:
    # America/New_York: 2026-11-01 02:00 EDT -> 01:00 EST; 01:30 happens twice that day.
    start = datetime(2026, 10, 30, 12, 0, tzinfo=NEW_YORK).timestamp()
    timing = make_timing(None, "30 1 * * *", "America/New_York", start)
    assert [local(s, NEW_YORK) for s in slots(timing, start, 3)] == [
        "2026-10-31T01:30:00-04:00",
        "2026-11-01T01:30:00-04:00",  # the first 01:30 only
        "2026-11-02T01:30:00-05:00",
    ]


def test_hourly_job_runs_every_real_hour_across_fall_back() -> None:
    start = datetime(2026, 10, 25, 0, 0, tzinfo=BERLIN).timestamp()
    timing = make_timing(None, "30 * * * *", "Europe/Berlin", start)
    got = slots(timing, start, 4)
    assert [b - a for a, b in itertools.pairwise(got)] == [3600.0] * 3
    assert [local(s, BERLIN) for s in got][2:] == [
        "2026-10-25T02:30:00+02:00",
        "2026-10-25T02:30:00+01:00",  # an hourly job does run in both 02:30s
    ]


def test_due_keeps_the_latest_and_counts_the_rest() -> None:
    interval = make_timing(10, None, None, 0.0)
    assert interval.due(0.0, 55.0, 3) == ([30.0, 40.0, 50.0], 2)
    assert interval.due(50.0, 55.0, 3) == ([], 0)
    start = datetime(2026, 1, 1, tzinfo=UTC).timestamp()
    cron = make_timing(None, "*/15 * * * *", None, start)
    kept, left_out = cron.due(start, start + 3600, 2)
    assert kept == [start + 2700, start + 3600]
    assert left_out == 2


def test_due_over_a_long_outage_of_a_frequent_cron_is_bounded() -> None:
    start = datetime(2026, 1, 1, tzinfo=UTC).timestamp()
    cron = make_timing(None, "* * * * *", None, start)
    kept, left_out = cron.due(start, start + 400 * 86400, 3)
    assert kept == [start + 400 * 86400 - 120, start + 400 * 86400 - 60, start + 400 * 86400]
    assert left_out >= 10_000


@pytest.mark.parametrize(
    ("misfire", "fire", "skipped"),
    [("skip", (), 5), ("run_once", (50.0,), 4), ("run_all", (30.0, 40.0, 50.0), 2)],
)
def test_decide_missed_slots(misfire: str, fire: tuple[float, ...], skipped: int) -> None:
    timing = make_timing(10, None, None, 0.0)
    decision = decide(timing, 0.0, 55.0, misfire, 3, lateness=1.0)  # type: ignore[arg-type]
    assert decision.fire == fire
    assert decision.skipped == skipped
    assert decision.handled == 50.0


@pytest.mark.parametrize("misfire", ["skip", "run_once", "run_all"])
def test_decide_an_on_time_slot_always_fires(misfire: str) -> None:
    timing = make_timing(10, None, None, 0.0)
    decision = decide(timing, 0.0, 10.5, misfire, 3, lateness=1.0)  # type: ignore[arg-type]
    assert decision.fire == (10.0,)
    assert decision.skipped == 0


@pytest.mark.parametrize(
    ("every", "cron", "tz", "words"),
    [
        (None, None, None, "exactly one of every"),
        (10, "* * * * *", None, "exactly one of every"),
        (0, None, None, "every=0 is invalid"),
        (-5, None, None, "every=-5 is invalid"),
        (float("nan"), None, None, "every=nan is invalid"),
        (True, None, None, "every=True is invalid"),
        ("10", None, None, "every='10' is invalid"),
        (None, "61 * * * *", None, "cron='61 * * * *' is not a valid cron expression"),
        (None, "every day", None, "cron='every day' is not a valid cron expression"),
        (None, 5, None, "cron=5 is invalid"),
        (None, "0 9 * * *", "Mars/Olympus", "tz='Mars/Olympus' is not a known time zone"),
        (None, "0 9 * * *", 3, "tz=3 is invalid"),
        (10, None, "UTC", "tz='UTC' only applies to cron"),
    ],
)
def test_bad_timing_raises_lane_config_error(
    every: object, cron: object, tz: object, words: str
) -> None:
    with pytest.raises(LaneConfigError, match=words.replace("*", r"\*").replace("(", r"\(")):
        make_timing(every, cron, tz, 0.0)
