"""Recurring schedules on Redis: every replica may run the same schedule; each slot fires once.

A schedule is defined once for the deployment (``<prefix>:schedule:<key>``: its definition,
its anchor and the last slot dealt with). Each replica that schedules the same key runs a
task asleep until the next slot; at the slot, one script (``FIRE``) compares the slot with
the last one dealt with and, in the same atomic step, records it and queues the firing. The
first replica to run it fires; the others find the slot dealt with. The state lives in Redis
only, so a Redis restart with ``appendonly`` loses no slot and repeats none.
"""

from __future__ import annotations

import hashlib
import json
import random
import time
import uuid
from collections.abc import Mapping
from datetime import datetime
from types import MappingProxyType
from typing import TYPE_CHECKING, Any

import trio

from .._boundary import check_key
from .._errors import LaneConfigError, ShutdownInProgress, StorageError
from .._schedule import GRACE, MISFIRE, Timing, decide, make_timing
from . import _scripts_api
from ._redis import Lua, fields_list
from ._wire import Envelope

if TYPE_CHECKING:
    from ._handle import RemoteHandle
    from ._protocol import Submitting

__all__ = ["RemoteSchedule", "RemoteScheduler"]

_BACKOFF = (0.05, 2.0)
_OVERLAP = ("skip", "allow")


class RemoteSchedule:
    """A recurring schedule on Redis. Made by ``await system.schedule(...)``.

    ``pause()``, ``resume()`` and ``cancel()`` are synchronous and reach Redis in the
    background; they hold for every replica (each learns of them at its next slot).
    """

    def __init__(self, owner: RemoteScheduler, key: str, spec: dict[str, Any], timing: Timing):
        self._owner = owner
        self._key = key
        self._spec = spec
        self._digest = hashlib.sha1(json.dumps(spec, sort_keys=True).encode()).hexdigest()
        self._timing = timing
        self._horizon = timing.anchor  # every slot up to here is dealt with
        self._paused = False
        self._cancelled = False
        self._problem: str | None = None
        self._last: RemoteHandle[Any] | None = None
        self._scope = trio.CancelScope()
        self._offset = 0.0
        self._target: float | None = None
        self.fired = 0
        """Firings submitted by this process."""
        self.skipped = 0
        """Slots this process dealt with without firing (misfire policy, overlap, paused)."""

    def __repr__(self) -> str:
        return f"<RemoteSchedule {self._key!r} lane={self.lane!r} next_run={self.next_run}>"

    @property
    def key(self) -> str:
        """The schedule's key (the same in every replica)."""
        return self._key

    @property
    def lane(self) -> str:
        """The lane its firings are submitted to."""
        return str(self._spec["lane"])

    @property
    def paused(self) -> bool:
        """Whether the schedule is paused, as this process last learnt."""
        return self._paused

    @property
    def cancelled(self) -> bool:
        """Whether the schedule was cancelled (here, or by another process: learnt at its
        next slot)."""
        return self._cancelled

    @property
    def problem(self) -> str | None:
        """Why this process stopped running the schedule (redefined elsewhere), or None."""
        return self._problem

    @property
    def last(self) -> RemoteHandle[Any] | None:
        """The handle of the latest firing submitted by this process, or None."""
        return self._last

    @property
    def next_run(self) -> datetime | None:
        """When the next slot is due (aware, in the schedule's time zone; UTC for
        intervals), without jitter; None when paused, cancelled or without more slots."""
        if self._paused or self._cancelled or self._problem is not None:
            return None
        slot = self._timing.next_after(self._horizon)
        return None if slot is None else datetime.fromtimestamp(slot, self._timing.zone)

    def pause(self) -> None:
        """Stop firing, in every replica; slots passing meanwhile are skipped."""
        if not (self._cancelled or self._paused):
            self._paused = True
            self._owner.change(self, "pause")

    def resume(self) -> None:
        """Fire again from the next slot on, in every replica."""
        if not self._cancelled and self._paused:
            self._paused = False
            self._owner.change(self, "resume")

    def cancel(self) -> None:
        """Delete the schedule for every replica (a firing already queued still runs)."""
        if not self._cancelled:
            self._cancelled = True
            self._scope.cancel()
            self._owner.change(self, "cancel")


class RemoteScheduler:
    """The schedules one submitting system runs (its replica's share)."""

    def __init__(self, system: Submitting) -> None:
        self._system = system
        self.entries: dict[str, RemoteSchedule] = {}
        self._define = Lua(_scripts_api.DEFINE_SCHEDULE)
        self._fire = Lua(_scripts_api.FIRE)
        self._state = Lua(_scripts_api.SCHEDULE_STATE)
        self._random = random.Random()

    @property
    def view(self) -> Mapping[str, RemoteSchedule]:
        return MappingProxyType(self.entries)

    def _keys(self, key: str) -> list[str]:
        backend = self._system.backend
        return [backend.key(f"schedule:{key}"), backend.key("schedules")]

    async def add(
        self,
        lane: str,
        command: Any,
        every: object,
        cron: object,
        tz: object,
        key: object,
        jitter: object,
        misfire: object,
        misfire_limit: object,
        overlap: object,
    ) -> RemoteSchedule:
        system = self._system
        nursery = system._nursery
        if nursery is None or not system._accepting:
            msg = "schedule: the lane system is closing and accepts no new schedules"
            raise ShutdownInProgress(msg)
        system._check_lane(lane, "schedule")
        if key is None:
            msg = (
                "schedule: key=... is required on Redis: it names the schedule for every "
                "replica, so that each slot fires once however many replicas schedule it"
            )
            raise LaneConfigError(msg)
        check_key(key, "schedule")
        assert isinstance(key, str)
        timing = make_timing(every, cron, tz, time.time())
        type_name, payload = system._encode(command)
        spec = {
            "lane": lane,
            "type": type_name,
            "payload": payload,
            "every": timing.every,
            "cron": timing.cron,
            "tz": timing.tz,
            "jitter": _seconds("jitter", jitter),
            "misfire": _choice("misfire", misfire, MISFIRE),
            "misfire_limit": _count("misfire_limit", misfire_limit),
            "overlap": _overlap(overlap),
        }
        old = self.entries.get(key)
        schedule = RemoteSchedule(self, key, spec, timing)
        if old is not None and old._digest == schedule._digest and old._problem is None:
            await trio.lowlevel.checkpoint()
            return old
        every_text = "" if timing.every is None else repr(timing.every)
        args = [key, json.dumps(spec, sort_keys=True), schedule._digest]
        args += [repr(timing.anchor), every_text]
        anchor, last, paused = await system._batcher.call(self._define, self._keys(key), args)
        schedule._timing = Timing(timing.every, timing.cron, timing.tz, float(anchor))
        schedule._horizon = float(last)
        schedule._paused = paused == "1"
        if old is not None:
            old._scope.cancel()  # replaced here: the new definition runs
        self.entries[key] = schedule
        nursery.start_soon(self._run, schedule, name=f"schedule {key}")
        return schedule

    def change(self, schedule: RemoteSchedule, what: str) -> None:
        """Send a pause, resume or cancel to Redis in the background."""
        system = self._system
        if what == "cancel" and self.entries.get(schedule.key) is schedule:
            del self.entries[schedule.key]
        if system._nursery is None:
            return
        keys, args = self._keys(schedule.key), [schedule.key, what]
        system._nursery.start_soon(
            system._until_taken, lambda: system._batcher.call(self._state, keys, args)
        )

    # -- the task -------------------------------------------------------------------------------

    async def _run(self, schedule: RemoteSchedule) -> None:
        """Sleep until each slot, then deal with it; ends when the schedule is cancelled,
        redefined elsewhere, out of slots, or the system closes."""
        pause = _BACKOFF[0]
        with schedule._scope:
            while True:
                due = self._due(schedule)
                if due is None:
                    return
                await _wall_sleep_until(due)
                try:
                    await self._wake(schedule)
                except StorageError:  # the slot stays due: dealt with once Redis is back
                    await trio.sleep(pause)
                    pause = min(pause * 2, _BACKOFF[1])
                    continue
                pause = _BACKOFF[0]
                if schedule._cancelled or schedule._problem is not None:
                    return

    def _due(self, schedule: RemoteSchedule) -> float | None:
        slot = schedule._timing.next_after(schedule._horizon)
        if slot is None:
            return None
        if slot != schedule._target:
            schedule._target = slot
            schedule._offset = self._random.uniform(0.0, schedule._spec["jitter"])
        return slot + schedule._offset

    async def _wake(self, schedule: RemoteSchedule) -> None:
        spec = schedule._spec
        lateness = GRACE + spec["jitter"]
        decision = decide(
            schedule._timing,
            schedule._horizon,
            time.time(),
            spec["misfire"],
            spec["misfire_limit"],
            lateness,
        )
        if decision.handled is None:  # the wall clock went back meanwhile
            await trio.lowlevel.checkpoint()
            return
        for slot in decision.fire:
            if not await self._deal(schedule, slot, fire=True):
                return
        unrecorded = not decision.fire or decision.fire[-1] != decision.handled
        if unrecorded and not await self._deal(schedule, decision.handled, fire=False):
            return
        schedule.skipped += decision.skipped
        schedule._horizon = decision.handled

    async def _deal(self, schedule: RemoteSchedule, slot: float, *, fire: bool) -> bool:
        """Fire ``slot`` (or record it dealt with); False: stop dealing with this wake-up.

        Raises:
            StorageError: Redis cannot be reached (nothing was recorded).
        """
        system = self._system
        spec = schedule._spec
        handle: RemoteHandle[Any] | None = None
        use_key = spec["overlap"] == "skip"
        overlap = f"schedule:{schedule.key}"
        args: list[Any] = [schedule._digest, repr(slot), int(system.backend.key_ttl * 1000)]
        args += ["1" if use_key else "0"]
        if fire:
            envelope = Envelope(
                id=uuid.uuid4().hex,
                lane=spec["lane"],
                type=spec["type"],
                payload=spec["payload"],
                reply=system.reply_stream,
                key=overlap if use_key else None,
                attempt=1,
                timeout=None,
                submitted=time.time(),
            )
            args += [envelope.id, *fields_list(envelope.fields(system._registry.converter))]
            handle = system._register(envelope.id, envelope.lane, envelope.type)
        else:
            args += [""]
        stream = system._stream(spec["lane"], None)
        keys = [
            self._keys(schedule.key)[0],
            stream,
            system.backend.key(f"key:{overlap}"),
            system.backend.key(f"stats:{spec['lane']}"),
            *system._events_keys,
        ]
        try:
            # shielded: a firing Redis queued is counted and its handle kept, even when the
            # schedule is cancelled or the system closes meanwhile (a frozen Redis: 5 s)
            with trio.CancelScope(shield=True), trio.fail_after(5):
                code, detail, paused = await system._batcher.call(self._fire, keys, args)
        except trio.TooSlowError:
            if handle is not None:
                system._unregister(handle)
            msg = f"schedule {schedule.key!r}: Redis did not answer the firing in 5 s"
            raise StorageError(msg) from None
        except BaseException:
            if handle is not None:
                system._unregister(handle)
            raise
        code = int(code)
        if handle is not None and code != 1:
            system._unregister(handle)
        if handle is not None and code == 1:
            handle._stream, handle._entry = stream, str(detail)
            handle._key = overlap if use_key else None
        if code >= 0:  # what the deployment says, also when another replica was first
            schedule._paused = paused == "1"
        return self._outcome(schedule, code, str(detail), handle)

    def _outcome(
        self,
        schedule: RemoteSchedule,
        code: int,
        detail: str,
        handle: RemoteHandle[Any] | None,
    ) -> bool:
        if code == 1:
            schedule._last = handle
            schedule.fired += 1
            return True
        if code == 0:  # another replica was first: follow it
            schedule._horizon = max(schedule._horizon, float(detail))
            return False
        if code in (3, 4):
            schedule.skipped += 1
            return True
        if code == -1:
            schedule._cancelled = True
            if self.entries.get(schedule.key) is schedule:
                del self.entries[schedule.key]
            return False
        if code == -2:
            schedule._problem = (
                "another process redefined this schedule; schedule it again here with the "
                "same arguments to run it"
            )
            return False
        return True  # 2: recorded


async def _wall_sleep_until(due: float) -> None:
    """Sleep until the wall clock reaches ``due`` (looked at again: it may be set)."""
    while (left := due - time.time()) > 0:
        with trio.move_on_after(left):
            await trio.sleep_forever()


def _choice(field: str, value: object, allowed: tuple[str, ...]) -> Any:
    if value not in allowed:
        options = ", ".join(repr(a) for a in allowed)
        msg = f"schedule: {field}={value!r} is invalid; expected one of {options}"
        raise LaneConfigError(msg)
    return value


def _overlap(value: object) -> str:
    if value == "queue":
        msg = (
            "schedule: overlap='queue' is not offered on Redis (a firing may run on any "
            "worker); use 'skip' (no firing while the previous one is queued or running) "
            "or 'allow'"
        )
        raise LaneConfigError(msg)
    return str(_choice("overlap", value, _OVERLAP))


def _count(field: str, value: object) -> int:
    if isinstance(value, int) and not isinstance(value, bool) and value >= 1:
        return value
    msg = f"schedule: {field}={value!r} is invalid; expected an integer >= 1"
    raise LaneConfigError(msg)


def _seconds(field: str, value: object) -> float:
    number = isinstance(value, int | float) and not isinstance(value, bool)
    if number and 0 <= value < float("inf"):  # type: ignore[operator]
        return float(value)  # type: ignore[arg-type]
    msg = f"schedule: {field}={value!r} is invalid; expected a number of seconds >= 0"
    raise LaneConfigError(msg)
