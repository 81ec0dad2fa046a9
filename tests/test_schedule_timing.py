"""The pure slot arithmetic of schedules (lanes/_schedule.py): no Trio, no clock."""

from __future__ import annotations

import itertools
import re
from datetime import UTC, datetime
from zoneinfo import ZoneInfo

import attrs
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
        (None, "every day", None, "cron='every day' has 2 fields; expected 5"),
        (None, "0 0 9 * * * 2026", None, "has 7 fields; expected 5 .* or 6 with a seconds"),
        (None, "60 * * * * *", None, "bad seconds field '60'; expected seconds 0-59"),
        (None, "-1 * * * * *", None, "bad seconds field '-1'"),
        (None, "*/0 * * * * *", None, "bad seconds field '\\*/0'"),
        (None, "0 61 * * * *", None, "cron='0 61 .* is not a valid cron expression"),
        (None, 5, None, "cron=5 is invalid"),
        (None, "0 9 * * *", "Mars/Olympus", "tz='Mars/Olympus' is not a known time zone"),
        (None, "0 9 * * *", 3, "tz=3 is invalid"),
        (10, None, "UTC", "tz='UTC' only applies to cron"),
    ],
)
def test_bad_timing_raises_lane_config_error(
    every: object, cron: object, tz: object, words: str
) -> None:
    pattern = words if "\\" in words or ".*" in words else re.escape(words)
    with pytest.raises(LaneConfigError, match=pattern):
        make_timing(every, cron, tz, 0.0)


def test_six_fields_add_a_seconds_field() -> None:
    start = datetime(2026, 1, 5, 8, 0, tzinfo=UTC).timestamp()
    timing = make_timing(None, "*/20 * * * * *", None, start)
    assert [s - start for s in slots(timing, start, 4)] == [20.0, 40.0, 60.0, 80.0]
    assert timing.next_after(start + 59.5) == start + 60.0
    every_minute_at_15 = make_timing(None, "15 * * * * *", None, start)
    assert [s - start for s in slots(every_minute_at_15, start, 2)] == [15.0, 75.0]
    five = make_timing(None, "0 9 * * *", None, start)
    six = make_timing(None, "0 0 9 * * *", None, start)
    assert slots(five, start, 5) == slots(six, start, 5)  # "0" seconds: the same slots


def test_six_fields_keep_debian_dst_rules() -> None:
    spring = datetime(2026, 3, 27, tzinfo=UTC).timestamp()
    timing = make_timing(None, "15 30 2 * * *", "Europe/Berlin", spring)
    assert [local(s, BERLIN) for s in slots(timing, spring, 3)] == [
        "2026-03-27T02:30:15+01:00",
        "2026-03-28T02:30:15+01:00",
        "2026-03-29T03:00:15+02:00",  # no 02:30 that day: once, right after the jump
    ]
    autumn = datetime(2026, 10, 24, 23, 0, tzinfo=UTC).timestamp()
    hourly = make_timing(None, "0,30 30 * * * *", "Europe/Berlin", autumn)
    assert [local(s, BERLIN) for s in slots(hourly, autumn, 6)][2:] == [
        "2026-10-25T02:30:00+02:00",
        "2026-10-25T02:30:30+02:00",
        "2026-10-25T02:30:00+01:00",  # every real hour: both 02:30s
        "2026-10-25T02:30:30+01:00",
    ]


def test_a_long_outage_of_a_per_second_cron_keeps_the_latest_slots() -> None:
    timing = make_timing(None, "*/2 * * * * *", None, 0.0)
    due, left_out = timing.due(0.0, 50_001.0, keep=3)  # 25,000 slots: more than one scan
    assert due == [49_996.0, 49_998.0, 50_000.0]
    assert left_out >= 10_000


def test_after_completion_has_one_slot_from_its_anchor() -> None:
    timing = make_timing(10, None, None, 1000.0, after_completion=True)
    assert timing.next_after(1000.0) == 1010.0
    assert timing.next_after(1010.0) is None  # the next one counts from the next completion
    assert timing.due(1000.0, 1100.0, keep=100) == ([1010.0], 0)  # never more than one
    moved = attrs.evolve(timing, anchor=1500.0)
    assert moved.next_after(1010.0) == 1510.0
    decision = decide(timing, 1000.0, 1100.0, "run_all", 100, lateness=1.0)
    assert decision.fire == (1010.0,) and decision.skipped == 0


@pytest.mark.parametrize(
    ("cron", "value", "words"),
    [
        ("0 9 * * *", True, "after_completion=True only applies to every="),
        (None, "yes", "after_completion='yes' is invalid; expected True or False"),
    ],
)
def test_bad_after_completion(cron: str | None, value: object, words: str) -> None:
    every = None if cron else 10
    with pytest.raises(LaneConfigError, match=re.escape(words)):
        make_timing(every, cron, None, 0.0, after_completion=value)
