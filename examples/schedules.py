"""Recurring schedules: an interval, a cron job in a time zone, a restart with a misfire, and
a repeat limit, an interval after completion and a cron expression with seconds.

Run it with ``python examples/schedules.py``. It follows a simulated wall clock that starts on
Friday 2026-03-27 08:00 in Berlin and runs with Trio's clock, so under a mock clock (as the
tests run it) three simulated days pass in a moment; run for real, it waits as long.
"""

from __future__ import annotations

from datetime import datetime
from zoneinfo import ZoneInfo

import attrs
import trio

import lanes
from lanes import LaneConfig
from lanes.storage import MemoryStorage

BERLIN = ZoneInfo("Europe/Berlin")
START = datetime(2026, 3, 27, 8, 0, tzinfo=BERLIN).timestamp()
LANES = (LaneConfig("ops", 1, max_concurrency=2), LaneConfig("reports", 4))


def clock() -> float:
    """The wall clock the schedules follow: real seconds since the epoch, simulated."""
    return START + trio.current_time()


def now() -> str:
    return datetime.fromtimestamp(clock(), BERLIN).strftime("%a %d %b %H:%M %Z")


@lanes.command(name="daily-report")
@attrs.define
class DailyReport:
    """A durable command: a schedule of it survives restarts."""

    title: str

    async def execute(self) -> None:
        print(f"  {now()}: report {self.title!r}")


async def intervals_and_cron() -> None:
    beats: list[str] = []

    async def heartbeat() -> None:
        beats.append(now())

    async with lanes.open_lane_system(LANES, clock=clock) as system:
        beat = await system.schedule("ops", heartbeat, every=15 * 60)
        report = await system.schedule(
            "reports", DailyReport("sales"), cron="30 2 * * *", tz="Europe/Berlin"
        )
        print(f"next report: {report.next_run}")
        await trio.sleep(60 * 60 + 1)
        print(f"heartbeats in the first hour: {', '.join(beats)}")
        beat.pause()
        # Sunday 2026-03-29 has no 02:30 in Berlin (clocks jump from 02:00 to 03:00): the
        # report runs once that day, at 03:00.
        await trio.sleep(3 * 24 * 60 * 60)
        beat.resume()
        print(f"heartbeat resumed: {beat.skipped} slots skipped while paused")
        extra = await report.trigger()  # run now, outside the slots
        await extra.result()
        print(f"report triggered by hand: fired {report.fired}, slots run {report.runs}")
        print(f"next heartbeat: {beat.next_run}, next report: {report.next_run}")


async def restart() -> None:
    store = MemoryStorage(clock=clock)  # the same object twice: a simulated restart
    async with lanes.open_lane_system(LANES, storage=store, commands=[DailyReport]) as system:
        await system.schedule(
            "reports",
            DailyReport("hourly"),
            cron="0 * * * *",
            tz="Europe/Berlin",
            key="hourly",
            misfire="run_once",
        )
        await trio.sleep(60 * 60 + 1)
    print(f"  {now()}: stopped; down for 5 hours")
    await trio.sleep(5 * 60 * 60)
    async with lanes.open_lane_system(LANES, storage=store, commands=[DailyReport]) as system:
        hourly = system.schedules["hourly"]  # restored from storage by itself
        await trio.sleep(1)
        print(f"  missed slots fired once (misfire='run_once'), {hourly.skipped} coalesced")
        print(f"  next run: {hourly.next_run}")


async def limits_and_seconds() -> None:
    started = clock()

    async def warm_up() -> None:
        second = datetime.fromtimestamp(clock(), BERLIN).strftime("%H:%M:%S")
        print(f"  {second}: warm-up")

    async def poll() -> None:
        print(f"  +{clock() - started:.0f} s: poll starts (takes 4 s)")
        await trio.sleep(4)

    async with lanes.open_lane_system(LANES, clock=clock) as system:
        # Cron with a seconds field (six fields), ending after three firings.
        warm = await system.schedule("ops", warm_up, cron="*/20 * * * * *", times=3)
        # Every 10 s counted from the end of the previous poll: polls never overlap.
        poller = await system.schedule("ops", poll, every=10, after_completion=True, times=3)
        for schedule in (warm, poller):
            await schedule.wait_finished()  # its last firing is submitted
            assert schedule.last is not None
            await schedule.last.result()  # and has run
        print(f"  warm-up finished after {warm.runs} firings; poller after {poller.runs}")


async def main() -> None:
    print("-- an interval and a cron job across a DST change")
    await intervals_and_cron()
    print("-- a durable schedule across a restart")
    await restart()
    print("-- a repeat limit, an interval after completion, cron with seconds")
    await limits_and_seconds()


if __name__ == "__main__":
    trio.run(main)
