"""Recurring schedules: one task per schedule, asleep until its next slot, in the system's nursery.

Each firing is submitted to the schedule's lane like any command (priorities, limits, retries
and the dead-letter queue apply). With storage, a firing's command and the schedule's new last
slot are written in the same batch (one transaction), so a crash never fires a slot twice and
never loses one silently: a slot not recorded is due again at the next start, where the
schedule's misfire policy decides.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Mapping
from types import MappingProxyType
from typing import Any

import attrs
import trio

from . import _submission as submission
from ._boundary import check_key
from ._command import Command, CommandHandle, command_name, is_command
from ._core import Core
from ._errors import LaneConfigError, LaneError, ShutdownInProgress, StorageError
from ._journal import Journal
from ._schedule import GRACE, MISFIRE, OVERLAP, Misfire, Overlap, Timing, decide, make_timing
from ._schedule_handle import (
    ScheduleHandle,
    ScheduleSpec,
    check_choice,
    check_count,
    check_overlap,
    check_seconds,
    check_times,
)
from .storage import StoredCommand, StoredSchedule

__all__ = ["Scheduler"]


class Scheduler:
    """The schedules of one lane system (its ``ScheduleHandle``s' owner)."""

    def __init__(self, core: Core) -> None:
        self._core = core
        self._nursery: trio.Nursery | None = None
        self._named = 0  # schedules named so far
        self.entries: dict[str, ScheduleHandle] = {}
        self.wall: Callable[[], float] = _unset_clock

    @property
    def view(self) -> Mapping[str, ScheduleHandle]:
        return MappingProxyType(self.entries)

    def start(self, nursery: trio.Nursery, wall: Callable[[], float]) -> None:
        """Run the stored schedules (read at recovery) in ``nursery`` from now on."""
        self._nursery = nursery
        self.wall = wall
        durable = self._core.durable
        if durable is None:
            return
        live = {cmd.id: cmd for cmd in self._core.live}
        for row in durable.schedules:
            self._restore(row, live)

    def close(self) -> None:
        """Stop every schedule's task (the system is closing); nothing is forgotten."""
        self._nursery = None
        for handle in self.entries.values():
            handle._scope.cancel()

    # -- creating -----------------------------------------------------------------------------

    async def add(
        self,
        lane: str,
        target: Any,
        every: object,
        cron: object,
        tz: object,
        key: object,
        jitter: object,
        misfire: object,
        misfire_limit: object,
        overlap: object,
        durable: object,
        times: object = None,
        after_completion: object = False,
    ) -> ScheduleHandle:
        spec = self._spec(
            lane,
            target,
            every,
            cron,
            tz,
            key,
            jitter,
            misfire,
            misfire_limit,
            durable,
            after_completion,
        )
        spec = attrs.evolve(
            spec, overlap=check_overlap(overlap, spec.timing), times=check_times(times)
        )
        if isinstance(key, str):
            name = key
        else:
            self._named += 1
            name = f"schedule-{self._named}"
        handle = self.entries.get(name)
        if handle is not None and handle._spec.same_as(spec) and handle._problem is None:
            await trio.lowlevel.checkpoint()
            return handle
        new = handle is None
        was_stored = handle is not None and handle._spec.stored
        if handle is None:
            handle = ScheduleHandle(self, name, spec)
            self.entries[name] = handle
        else:
            self._redefine(handle, spec)
        journal = self._journal(handle)
        if journal is None and was_stored:
            assert self._core.durable is not None
            self._core.durable.journal.delete_schedule(name)  # now a memory-only schedule
        if journal is not None:
            journal.save_schedule(self._row(handle))
            try:
                await self._core.commit()
            except StorageError:
                if new and self.entries.get(name) is handle:
                    del self.entries[name]  # not stored: it does not exist
                raise
        self._launch(handle)
        return handle

    def _spec(
        self,
        lane: str,
        target: Any,
        every: object,
        cron: object,
        tz: object,
        key: object,
        jitter: object,
        misfire: object,
        misfire_limit: object,
        durable: object,
        after_completion: object = False,
    ) -> ScheduleSpec:
        core = self._core
        if not core.accepting or self._nursery is None:
            raise submission.shutdown_error()
        submission.check_lane(core.configs, lane, "schedule")
        if key is not None:
            check_key(key, "schedule")
        timing = make_timing(every, cron, tz, self.wall(), after_completion=after_completion)
        jitter_s = check_seconds("jitter", jitter)
        chosen = check_choice("misfire", misfire, MISFIRE)
        limit = check_count("misfire_limit", misfire_limit)
        if durable not in (None, True, False):
            msg = f"schedule: durable={durable!r} is invalid; expected True, False or None"
            raise LaneConfigError(msg)
        if durable and self._core.durable is None:
            msg = "schedule: durable=True needs a storage: open_lane_system(storage=...)"
            raise LaneConfigError(msg)
        payload = submission.payload(core, target, durable, where="schedule")
        if payload is not None and key is None:
            msg = (
                "schedule: a durable schedule needs key=..., so that the next start finds it "
                "again instead of adding a second one (or pass durable=False)"
            )
            raise LaneConfigError(msg)
        if payload is None:
            submission.validate(core, lane, target, (), None, None, None, "schedule")
            if is_command(target):
                type_name = command_name(target)
            else:
                type_name = getattr(target, "__qualname__", None) or type(target).__qualname__
            stored = False
            return ScheduleSpec(
                lane, target, type_name, timing, jitter_s, chosen, limit, "skip", stored
            )
        name = command_name(target)
        return ScheduleSpec(lane, payload, name, timing, jitter_s, chosen, limit, "skip", True)

    def _redefine(self, handle: ScheduleHandle, spec: ScheduleSpec) -> None:
        was_finished = handle.finished
        old = handle._spec.timing
        new = spec.timing
        if new.every is None or (new.every, new.after_completion) != (
            old.every,
            old.after_completion,
        ):
            anchor = handle._horizon  # the new rhythm starts after the last slot dealt with
        else:
            anchor = old.anchor
        handle._spec = attrs.evolve(spec, timing=attrs.evolve(spec.timing, anchor=anchor))
        handle._problem = None
        handle._target = None
        if was_finished and not handle.finished:  # a higher repeat limit
            handle._skip_passed()  # as for a resume: what passed while it had ended is skipped
            handle._ended = trio.Event()
        self.changed(handle, record=False)

    def _restore(self, row: StoredSchedule, live: dict[str, Command]) -> None:
        problem = None
        target: Any = row.payload
        try:
            if row.lane not in self._core.configs:
                msg = f"its lane {row.lane!r} no longer exists"
                raise StorageError(msg)
            assert self._core.durable is not None
            self._core.durable.registry.decode(row.type, row.payload)
            timing = make_timing(
                row.every,
                row.cron,
                row.tz,
                row.anchor,
                f"schedule {row.key!r}",
                after_completion=row.after_completion,
            )
        except (StorageError, LaneConfigError) as exc:
            problem = str(exc)
            timing = Timing(row.every, row.cron, row.tz, row.anchor, row.after_completion)
        misfire: Misfire = row.misfire if row.misfire in MISFIRE else "run_once"
        overlap: Overlap = row.overlap if row.overlap in OVERLAP else "skip"
        spec = ScheduleSpec(
            row.lane,
            target,
            row.type,
            timing,
            row.jitter,
            misfire,
            row.misfire_limit,
            overlap,
            True,
            row.times,
        )
        handle = ScheduleHandle(self, row.key, spec)
        handle._runs = row.runs
        handle._horizon = row.anchor if row.last_slot is None else row.last_slot
        handle._recorded = row.last_slot
        handle._paused = row.paused
        handle._problem = problem
        handle._last_id = row.last_command
        previous = live.get(row.last_command or "")
        handle._last = None if previous is None else previous.handle
        self.entries[row.key] = handle
        if problem is None:
            self._launch(handle)

    def _launch(self, handle: ScheduleHandle) -> None:
        if self._nursery is not None and not handle._scope.cancel_called and not handle._running:
            handle._scope = trio.CancelScope()  # a task that ended (finished) used the old one
            handle._running = True
            self._nursery.start_soon(self._run, handle, name=f"schedule {handle.key}")

    # -- state changes ------------------------------------------------------------------------

    def changed(self, handle: ScheduleHandle, *, record: bool) -> None:
        """Wake the schedule's task to look again; write its new state if ``record``."""
        handle._changed.set()
        handle._changed = trio.Event()
        journal = self._journal(handle)
        if record and journal is not None and not handle._cancelled:
            journal.save_schedule(self._row(handle))

    def forget(self, handle: ScheduleHandle) -> None:
        if self.entries.get(handle.key) is handle:
            del self.entries[handle.key]
            journal = self._journal(handle)
            if journal is not None:
                journal.delete_schedule(handle.key)

    async def trigger(self, handle: ScheduleHandle) -> CommandHandle[Any]:
        """Submit one firing of ``handle`` now: no slot, no schedule row written."""
        spec = handle._spec
        durable = self._core.durable
        if durable is None or not spec.stored:
            target, stored = spec.target, False
        else:
            target, stored = durable.registry.decode(spec.type, spec.target), None
        cmd = submission.prepare(self._core, spec.lane, target, (), None, None, None, stored)
        assert isinstance(cmd, Command)  # no key: always a new command
        return await submission.accept(self._core, cmd, None)

    def _journal(self, handle: ScheduleHandle) -> Journal | None:
        """Where the schedule is written: None for a memory-only one."""
        durable = self._core.durable
        return durable.journal if durable is not None and handle._spec.stored else None

    def _row(self, handle: ScheduleHandle, command_id: str | None = None) -> StoredSchedule:
        spec = handle._spec
        if command_id is not None:
            handle._last_id = command_id
        return StoredSchedule(
            handle.key,
            spec.lane,
            spec.type,
            spec.target,
            spec.timing.every,
            spec.timing.cron,
            spec.timing.tz,
            spec.jitter,
            spec.misfire,
            spec.misfire_limit,
            spec.overlap,
            spec.timing.anchor,
            handle._paused,
            handle._recorded,
            handle._last_id,
            spec.times,
            handle._runs,
            spec.timing.after_completion,
        )

    # -- the task -----------------------------------------------------------------------------

    async def _run(self, handle: ScheduleHandle) -> None:
        """Sleep until each slot, then fire it; ends when cancelled, when the system closes,
        or when the repeat limit is reached."""
        with handle._scope, contextlib.suppress(ShutdownInProgress):
            try:
                while not handle.finished:
                    changed = handle._changed
                    waits = not handle._paused and handle._spec.timing.after_completion
                    if waits and not await self._after_previous(handle, changed):
                        continue  # changed (paused, redefined) while the firing ran
                    due = None if handle._paused else self._due(handle)
                    if due is None:
                        await changed.wait()
                    elif await self._sleep_until(due, changed):
                        await self._wake(handle)
                handle._ended.set()
            finally:
                handle._running = False

    async def _after_previous(self, handle: ScheduleHandle, changed: trio.Event) -> bool:
        """For ``after_completion``: wait for the previous firing to end, then count the next
        slot from then. False if ``changed`` was set first (look again)."""
        last = handle._last
        if last is not None and not last.done() and not await _ends_first(last, changed):
            return False
        if handle._spec.timing.next_after(handle._horizon) is None:
            # The firing ended (now, or before a restart, or its slot was skipped): the
            # next slot is ``every`` from now, never from an earlier guess.
            self._anchor(handle, self.wall())
        return True

    def _anchor(self, handle: ScheduleHandle, at: float) -> None:
        handle._reanchor(at)
        journal = self._journal(handle)
        if journal is not None and not handle._cancelled:
            journal.save_schedule(self._row(handle))  # written by the next batch

    def _due(self, handle: ScheduleHandle) -> float | None:
        """The wall-clock time of the next firing (its slot plus jitter), or None."""
        slot = handle._spec.timing.next_after(handle._horizon)
        if slot is None:
            return None
        if slot != handle._target:
            handle._target = slot
            handle._offset = self._core.random.uniform(0.0, handle._spec.jitter)
        return slot + handle._offset

    async def _sleep_until(self, due: float, changed: trio.Event) -> bool:
        """Sleep until the wall clock reaches ``due``: True, or False if ``changed`` is set."""
        while (left := due - self.wall()) > 0:
            with trio.move_on_after(left):
                await changed.wait()
                return False
        return True

    async def _wake(self, handle: ScheduleHandle) -> None:
        spec = handle._spec
        lateness = GRACE + spec.jitter
        decision = decide(
            spec.timing, handle._horizon, self.wall(), spec.misfire, spec.misfire_limit, lateness
        )
        if decision.handled is None:  # the wall clock went back meanwhile
            await trio.lowlevel.checkpoint()
            return
        handle._horizon = decision.handled
        handle.skipped += decision.skipped
        for index, slot in enumerate(decision.fire):
            if handle.finished:  # the repeat limit was reached by an earlier slot
                handle.skipped += 1
                continue
            await self._fire(handle, slot, catching_up=index > 0)
        if handle._recorded != decision.handled:  # slots left out: record them as dealt with
            await self._record(handle, decision.handled)

    async def _fire(self, handle: ScheduleHandle, slot: float, *, catching_up: bool) -> None:
        """Submit one firing, after the previous one if it still runs and overlap says so.

        Missed slots fired together by ``"run_all"`` run one after another (unless overlap
        is ``"allow"``): ``"skip"`` would drop the very slots run_all asks for.
        """
        previous = handle._last
        overlap = handle._spec.overlap
        if catching_up and overlap == "skip":
            overlap = "queue"
        if previous is not None and not previous.done():
            if overlap == "skip":
                handle.skipped += 1
                await self._record(handle, slot)
                return
            if overlap == "queue":
                with contextlib.suppress(LaneError):
                    await previous.result()
        if handle._paused or handle._cancelled:  # while it waited
            handle.skipped += 1
            await self._record(handle, slot)
            return
        try:
            new = await self._submit(handle, slot)
        except StorageError:
            handle.skipped += 1  # not recorded: it is due again at the next start
            return
        handle._last = new
        handle.fired += 1
        if not handle._spec.stored:
            handle._runs += 1  # a stored one counts in the batch that writes its command
        if handle.finished:
            handle._ended.set()

    async def _submit(self, handle: ScheduleHandle, slot: float) -> CommandHandle[Any]:
        spec = handle._spec
        durable = self._core.durable
        core = self._core
        if durable is None or not spec.stored:
            handle._recorded = slot
            target, stored = spec.target, False
        else:
            target, stored = durable.registry.decode(spec.type, spec.target), None
        cmd = submission.prepare(core, spec.lane, target, (), None, None, None, stored)
        assert isinstance(cmd, Command)  # no key: always a new command
        previous, runs = handle._recorded, handle._runs

        def write(journal: Journal, row: StoredCommand) -> None:
            # One synchronous step: the command, the slot and the count of firings go into
            # the same batch.
            handle._recorded = slot
            handle._runs = runs + 1
            journal.save(row)
            journal.save_schedule(self._row(handle, cmd.id))

        try:
            return await submission.accept(core, cmd, None, write=write)
        except StorageError:
            handle._recorded, handle._runs = previous, runs
            raise

    async def _record(self, handle: ScheduleHandle, slot: float) -> None:
        """Write that every slot up to ``slot`` is dealt with (no command fired for it)."""
        handle._recorded = slot
        journal = self._journal(handle)
        if journal is not None and not handle._cancelled:
            journal.save_schedule(self._row(handle))
            with contextlib.suppress(StorageError):  # counted by the journal; due again later
                await self._core.commit()
        else:
            await trio.lowlevel.checkpoint()


async def _ends_first(last: CommandHandle[Any], changed: trio.Event) -> bool:
    """Wait until the command of ``last`` ends (True) or ``changed`` is set (False).

    Does not count as observing the command's result. Cancellation leaves both as they are.
    """
    async with trio.open_nursery() as nursery:

        async def watch() -> None:
            await changed.wait()
            nursery.cancel_scope.cancel()

        nursery.start_soon(watch)
        await last._command.wait_done()
        nursery.cancel_scope.cancel()
    return last.done()


def _unset_clock() -> float:
    msg = "the lane system's schedules are not running (use `async with open_lane_system()`)"
    raise ShutdownInProgress(msg)
