"""sessions: the cost of many lane systems in one process (issue 11, "Cost per session").

An agent platform opens one lane system per session, thousands at once. Every measurement
runs in a fresh interpreter (``python -m bench.sessions --child KIND N``, printing JSON) so
that memory freed by an earlier one cannot hide anything.

Cost (KIND ``lanes``, ``bare``, ``a3s-lane``): N systems entered one after the other with a
``contextlib.AsyncExitStack`` in one task, then closed by leaving the stack. Reported per
system: RSS delta (``VmRSS`` of ``/proc/self/status``, after a ``gc.collect()``) / N, open
time (until every task of every system has started and blocked:
``trio.testing.wait_all_tasks_blocked()``), close time, OS threads added (``Threads``), and
the CPU the process uses while every system is open and idle (process time over a 2 s
sleep of the measuring task: a share of one CPU).

- ``lanes``: ``lanes.open_lane_system()`` on the default lanes.
- ``bare``: the least a supervisor and six lane actors can cost: a nursery with seven tasks,
  each waiting on its own trio memory channel (``start_soon``); closed by cancelling the
  nursery, as a lane system's exit does after its drain.
- ``a3s-lane``: a3s-lane's Python bindings (``pip install a3s-lane==0.4.0``, the ``bench``
  extra): one ``PyLane()`` (its default lanes, the same six) per system, ``start()`` to
  open, ``shutdown()``, ``drain()`` and dropping it to close. Fewer systems (it starts two OS
  threads per system), so its figures are per system at a smaller N. Its child also times a
  few ``submit("control", ...)`` round trips (the bindings run no Python in the command, and
  ``submit`` blocks until completion: that is all it shows). Skipped, with a note, if the
  bindings cannot be imported.

Control latency (KIND ``latency:lanes``, ``latency:lanes-shared``, ``latency:bare``): N
systems open, every tenth with a saturated prompt lane (``max_concurrency`` commands
sleeping an hour, and ``max_concurrency + 1`` more queued), then control commands are
submitted one at a time, each awaited, to systems picked at random; latency is
``trio.current_time()`` on the command's first line minus ``trio.current_time()`` just
before ``submit``. ``lanes-shared``: the prompt lanes of all systems share one
``lanes.SharedLimit(20)``, so the saturated prompt lanes wait on it. ``bare``: the control
task of a random bare system receives ``(fn, reply)`` on its channel and replies (no
saturation: it has no lanes). Samples during which a GC ran or the OS preempted the thread
are flagged, as in control_latency.

Targets (issue 11): memory per idle system <= 1.5x bare; open and close <= 3x bare; no OS
thread per system; control p99 < 1 ms with 10% of the systems saturated.

``python -m bench.sessions --tracemalloc N`` prints what one idle lane system allocates
(by source line, averaged over N systems), next to a bare one.
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import importlib
import importlib.util
import json
import math
import os
import random
import subprocess
import sys
import time
import tracemalloc
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from types import ModuleType
from typing import Any

import attrs
import trio
import trio.testing

import lanes

from ._harness import Options, Result, code_root, median, paired_ratio, print_table
from .control_latency import Sample, _GcCounter, _involuntary_switches, summary

NAME = "sessions"
SYSTEMS = 10_000
QUICK_SYSTEMS = 1_000
A3S_SYSTEMS = 1_000
QUICK_A3S_SYSTEMS = 200
A3S_ROUND_TRIPS = 30
SAMPLES = 1_000
QUICK_SAMPLES = 300
SATURATED_EVERY = 10  # every tenth system has a saturated prompt lane: 10%
SHARED_SLOTS = 20
LONG = 3600.0  # seconds a saturating prompt command sleeps
ACTORS = 7  # a supervisor and six lane actors
SEED = 11
IDLE_WINDOW = 2.0  # seconds of idleness over which the cost children read their CPU time

MEMORY_LIMIT = 1.5
TIME_LIMIT = 3.0
LIMIT_P99_US = 1000.0

COST_KINDS = ("lanes", "bare", "a3s-lane")
LATENCY_KINDS = ("latency:lanes", "latency:lanes-shared", "latency:bare")
LABELS = {
    "lanes": "trio-lanes (default lanes)",
    "bare": "bare: nursery + 7 tasks on channels",
    "a3s-lane": "a3s-lane 0.4.0 PyLane()",
    "latency:lanes": "trio-lanes, 10% prompt saturated",
    "latency:lanes-shared": "trio-lanes + SharedLimit(20) on prompt",
    "latency:bare": "bare: 7 tasks on channels, idle",
}


# -- what the children read ------------------------------------------------------------------------


def status() -> dict[str, int]:
    """VmRSS (KiB) and the OS thread count of this process."""
    values = {}
    for line in Path("/proc/self/status").read_text().splitlines():
        key, _, rest = line.partition(":")
        if key in ("VmRSS", "Threads"):
            values[key] = int(rest.split()[0])
    return values


def count_tasks() -> int:
    """Every task of this trio run (walked from the root task)."""
    total = 0
    tasks = [trio.lowlevel.current_root_task()]
    while tasks:
        task = tasks.pop()
        total += 1
        for nursery in task.child_nurseries:
            tasks.extend(nursery.child_tasks)
    return total


def _emit(data: dict[str, Any]) -> None:
    data["lanes"] = lanes.__file__
    print(json.dumps(data), flush=True)


# -- the systems -----------------------------------------------------------------------------------

Message = tuple[Callable[[], Awaitable[Any]], trio.MemorySendChannel[Any]]


async def _bare_actor(receive: trio.MemoryReceiveChannel[Message]) -> None:
    async for fn, reply in receive:
        reply.send_nowait(await fn())


@contextlib.asynccontextmanager
async def bare_system() -> AsyncIterator[list[trio.MemorySendChannel[Message]]]:
    """Seven tasks, each waiting on its own memory channel; cancelled on exit."""
    async with trio.open_nursery() as nursery:
        inboxes = []
        for _ in range(ACTORS):
            send, receive = trio.open_memory_channel[Message](math.inf)
            nursery.start_soon(_bare_actor, receive)
            inboxes.append(send)
        yield inboxes
        nursery.cancel_scope.cancel()


def prompt_configs(shared: lanes.SharedLimit | None) -> tuple[lanes.LaneConfig, ...]:
    """The default lanes; with ``shared``, the prompt lane uses that shared limit."""
    if shared is None:
        return lanes.DEFAULT_LANES
    return tuple(
        attrs.evolve(c, shared_limit=shared) if c.name == "prompt" else c
        for c in lanes.DEFAULT_LANES
    )


# -- cost children ---------------------------------------------------------------------------------


async def _cost_child(kind: str, n: int) -> None:
    def opener() -> contextlib.AbstractAsyncContextManager[Any]:
        return lanes.open_lane_system() if kind == "lanes" else bare_system()

    await trio.testing.wait_all_tasks_blocked()
    gc.collect()
    before = status()
    tasks_before = count_tasks()
    stack = contextlib.AsyncExitStack()
    t0, cpu0 = time.perf_counter(), time.process_time()
    for _ in range(n):
        await stack.enter_async_context(opener())
    await trio.testing.wait_all_tasks_blocked()
    open_s, open_cpu = time.perf_counter() - t0, time.process_time() - cpu0
    gc.collect()
    after = status()
    tasks = count_tasks() - tasks_before
    cpu0 = time.process_time()
    await trio.sleep(IDLE_WINDOW)  # every system open and idle
    idle_cpu = (time.process_time() - cpu0) / IDLE_WINDOW
    t0, cpu0 = time.perf_counter(), time.process_time()
    await stack.aclose()
    close_s, close_cpu = time.perf_counter() - t0, time.process_time() - cpu0
    _emit(
        {
            "n": n,
            "rss_kib_per_system": (after["VmRSS"] - before["VmRSS"]) / n,
            "open_us": open_s / n * 1e6,
            "close_us": close_s / n * 1e6,
            "open_cpu_us": open_cpu / n * 1e6,
            "close_cpu_us": close_cpu / n * 1e6,
            "threads_added": after["Threads"] - before["Threads"],
            "tasks_per_system": tasks / n,
            "idle_cpu_share": idle_cpu,
        }
    )


def a3s_module() -> ModuleType | None:
    """a3s-lane's bindings (the 0.4.0 wheel installs them as ``_a3s_lane``), or None."""
    for name in ("a3s_lane", "_a3s_lane"):
        if importlib.util.find_spec(name) is not None:
            return importlib.import_module(name)
    return None


def _a3s_child(n: int) -> None:
    a3s = a3s_module()
    if a3s is None:
        raise SystemExit("a3s-lane is not installed")
    gc.collect()
    before = status()
    t0, cpu0 = time.perf_counter(), time.process_time()
    systems = []
    for _ in range(n):
        system = a3s.PyLane()
        system.start()
        systems.append(system)
    open_s, open_cpu = time.perf_counter() - t0, time.process_time() - cpu0
    gc.collect()
    after = status()
    cpu0 = time.process_time()
    time.sleep(IDLE_WINDOW)  # every system open and idle
    idle_cpu = (time.process_time() - cpu0) / IDLE_WINDOW
    rng = random.Random(SEED)
    trips = []
    for _ in range(A3S_ROUND_TRIPS):
        system = systems[rng.randrange(n)]
        start = time.perf_counter()
        system.submit("control", "noop", None)
        trips.append(time.perf_counter() - start)
    t0, cpu0 = time.perf_counter(), time.process_time()
    for system in systems:
        system.shutdown()
        system.drain(timeout_secs=30.0)
    systems.clear()  # dropping the last reference stops its runtime and threads
    close_s, close_cpu = time.perf_counter() - t0, time.process_time() - cpu0
    trips.sort()
    _emit(
        {
            "n": n,
            "rss_kib_per_system": (after["VmRSS"] - before["VmRSS"]) / n,
            "open_us": open_s / n * 1e6,
            "close_us": close_s / n * 1e6,
            "open_cpu_us": open_cpu / n * 1e6,
            "close_cpu_us": close_cpu / n * 1e6,
            "threads_added": after["Threads"] - before["Threads"],
            "threads_left": status()["Threads"] - before["Threads"],
            "idle_cpu_share": idle_cpu,
            "round_trip_p50_us": trips[len(trips) // 2] * 1e6,
            "round_trip_max_us": trips[-1] * 1e6,
        }
    )


# -- latency children ------------------------------------------------------------------------------


async def started_at() -> float:
    """A control command: its first line reads trio's clock."""
    return trio.current_time()


async def sample(
    targets: list[int], one: Callable[[int], Awaitable[float]]
) -> tuple[list[Sample], list[bool]]:
    """Time ``one(i)`` (which returns its command's start) for each target, in sequence."""
    collections = _GcCounter()
    gc.callbacks.append(collections)
    samples = []
    try:
        for i in targets:
            gcs, switches = collections.count, _involuntary_switches()
            before = trio.current_time()
            latency = await one(i) - before
            disturbed = collections.count != gcs
            samples.append(Sample(latency, disturbed, _involuntary_switches() != switches))
    finally:
        gc.callbacks.remove(collections)
    return samples, [i % SATURATED_EVERY == 0 for i in targets]


async def _latency_lanes_child(n: int, count: int, shared: bool) -> None:
    llm = lanes.SharedLimit(SHARED_SLOTS, name="llm") if shared else None
    configs = prompt_configs(llm)
    slots = next(c.max_concurrency for c in configs if c.name == "prompt")
    stack = contextlib.AsyncExitStack()
    systems = [await stack.enter_async_context(lanes.open_lane_system(configs)) for _ in range(n)]
    saturated = systems[::SATURATED_EVERY]
    for system in saturated:
        for _ in range(2 * slots + 1):  # ``slots`` running, ``slots + 1`` queued behind them
            system.submit_nowait("prompt", trio.sleep, LONG)
    await trio.testing.wait_all_tasks_blocked()
    check = _check_saturation(saturated, slots, llm)

    async def one(i: int) -> float:
        handle = await systems[i].submit("control", started_at)
        return await handle.result()

    rng = random.Random(SEED)
    samples, hits = await sample([rng.randrange(n) for _ in range(count)], one)
    if _check_saturation(saturated, slots, llm) != check:
        raise AssertionError("the prompt lanes' saturation changed while sampling")
    _emit_latency(n, samples, hits, {**check, "threads": status()["Threads"]})
    # Closing means cancelling thousands of hour-long commands: it measures nothing. Leave.
    os._exit(0)


def _check_saturation(
    saturated: list[lanes.LaneSystem], slots: int, llm: lanes.SharedLimit | None
) -> dict[str, int]:
    prompt = [system.statistics().lanes["prompt"] for system in saturated]
    active = sum(p.active for p in prompt)
    pending = sum(p.pending for p in prompt)
    commands = len(saturated) * (2 * slots + 1)
    if llm is None:
        if any((p.active, p.pending) != (slots, slots + 1) for p in prompt):
            raise AssertionError("a prompt lane is not saturated")
    else:
        stats = llm.statistics()
        if active != min(SHARED_SLOTS, commands) or stats.in_use != active:
            raise AssertionError(f"the shared limit is not saturated: {stats}")
    if active + pending != commands:
        raise AssertionError("prompt commands went missing")
    waiting = llm.statistics().waiting if llm is not None else 0
    return {"prompt_active": active, "prompt_pending": pending, "shared_waiting": waiting}


async def _latency_bare_child(n: int, count: int) -> None:
    stack = contextlib.AsyncExitStack()
    systems = [await stack.enter_async_context(bare_system()) for _ in range(n)]
    await trio.testing.wait_all_tasks_blocked()

    async def one(i: int) -> float:
        reply_send, reply_receive = trio.open_memory_channel[float](1)
        await systems[i][1].send((started_at, reply_send))  # the "control" task
        return await reply_receive.receive()

    rng = random.Random(SEED)
    samples, _ = await sample([rng.randrange(n) for _ in range(count)], one)
    no_saturation = [False] * len(samples)  # bare systems have no prompt lane to saturate
    _emit_latency(n, samples, no_saturation, {"threads": status()["Threads"]})
    os._exit(0)


def _emit_latency(n: int, samples: list[Sample], hits: list[bool], extra: dict[str, int]) -> None:
    data: dict[str, Any] = {"n": n, **summary(samples), **extra}
    on_saturated = [s for s, hit in zip(samples, hits, strict=True) if hit]
    data["saturated_samples"] = len(on_saturated)
    data["p99_on_saturated"] = summary(on_saturated)["p99"] if on_saturated else math.nan
    _emit(data)


def child(kind: str, n: int, count: int) -> None:
    if kind in ("lanes", "bare"):
        trio.run(_cost_child, kind, n)
    elif kind == "a3s-lane":
        _a3s_child(n)
    elif kind == "latency:bare":
        trio.run(_latency_bare_child, n, count)
    else:
        trio.run(_latency_lanes_child, n, count, kind == "latency:lanes-shared")


# -- the parent ------------------------------------------------------------------------------------


def measure(kind: str, n: int, count: int = 0) -> dict[str, Any] | str:
    """One measurement in a fresh interpreter that imports the same lanes package as we do.

    Returns the child's figures, or why it failed (its last line of stderr).
    """
    bench_root = str(Path(__file__).resolve().parent.parent)
    paths = [bench_root, os.environ.get("PYTHONPATH", "")]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in paths if p)}
    command = [sys.executable, "-m", "bench.sessions", "--child", kind, str(n), str(count)]
    out = subprocess.run(command, capture_output=True, text=True, cwd=code_root(), env=env)
    if out.returncode != 0:
        lines = out.stderr.strip().splitlines() or [f"exit status {out.returncode}"]
        return lines[-1]
    data: dict[str, Any] = json.loads(out.stdout.strip().splitlines()[-1])
    if data.pop("lanes") != lanes.__file__:
        raise AssertionError("the child imported another lanes package")
    return data


def run(options: Options) -> Result:
    result = Result(NAME)
    n = QUICK_SYSTEMS if options.quick else SYSTEMS
    a3s_n = QUICK_A3S_SYSTEMS if options.quick else A3S_SYSTEMS
    count = QUICK_SAMPLES if options.quick else SAMPLES
    print(
        f"{NAME}: {n:,} systems in one process via AsyncExitStack (a3s-lane: {a3s_n:,}, two "
        f"OS threads each); control latency: {count:,} control commands to random systems "
        f"of {n:,}, every {SATURATED_EVERY}th with a saturated prompt lane; a fresh process "
        "per measurement"
    )
    kinds = list(COST_KINDS)
    if a3s_module() is None:
        kinds.remove("a3s-lane")
        result.note("a3s-lane is not installed (pip install a3s-lane==0.4.0): baseline skipped")
    sizes = {"a3s-lane": a3s_n}
    runs: dict[str, list[dict[str, Any]]] = {kind: [] for kind in (*kinds, *LATENCY_KINDS)}
    for round_ in range(options.repeat):
        for group in (kinds, list(LATENCY_KINDS)):
            shift = round_ % len(group)
            for kind in group[shift:] + group[:shift]:
                if kind not in runs:
                    continue  # dropped after a failure
                got = measure(kind, sizes.get(kind, n), count)
                if isinstance(got, str):
                    result.note(f"{kind} failed ({got}): dropped")
                    del runs[kind]
                    continue
                runs[kind].append(got)
                print(f"  round {round_ + 1}: {kind}: {_brief(got)}", flush=True)
    _cost_table(result, runs, options.repeat)
    _latency_table(result, runs, options.repeat, n, count)
    return result


def _brief(data: dict[str, Any]) -> str:
    if "p99" in data:
        return f"p50 {data['p50'] * 1e6:.0f} us, p99 {data['p99'] * 1e6:.0f} us"
    return (
        f"{data['rss_kib_per_system']:.1f} KiB, open {data['open_us']:.0f} us, "
        f"close {data['close_us']:.0f} us, +{data['threads_added']} threads"
    )


COST_FIELDS = ("rss_kib_per_system", "open_us", "close_us")


def _cost_table(result: Result, runs: dict[str, list[dict[str, Any]]], repeat: int) -> None:
    lanes_runs, bare_runs = runs.get("lanes"), runs.get("bare")
    if not lanes_runs or not bare_runs:
        result.note("no lanes/bare cost figures: nothing to compare")
        return
    rows = []
    for kind in ("lanes", "bare", "a3s-lane"):
        got = runs.get(kind)
        if not got:
            continue
        mid = {
            key: median([r.get(key, math.nan) for r in got])
            for key in (*COST_FIELDS, "threads_added", "idle_cpu_share")
        }
        to_bare = {
            key: paired_ratio([r[key] for r in got], [r[key] for r in bare_runs])
            if kind != "a3s-lane"
            else mid[key] / median([r[key] for r in bare_runs])
            for key in COST_FIELDS
        }
        row: dict[str, Any] = {"system": LABELS[kind], "kind": kind, "n": got[0]["n"], **mid}
        row.update({f"{key}_ratio_to_bare": value for key, value in to_bare.items()})
        if kind == "lanes" and runs.get("a3s-lane"):
            a3s = runs["a3s-lane"]
            row.update(
                {
                    f"{key}_ratio_to_a3s": mid[key] / median([r[key] for r in a3s])
                    for key in COST_FIELDS
                }
            )
        if kind == "a3s-lane":
            row["round_trip_p50_us"] = median([r["round_trip_p50_us"] for r in got])
        if "tasks_per_system" in got[0]:
            row["tasks_per_system"] = median([r["tasks_per_system"] for r in got])
        row["runs"] = got
        result.rows.append(row)
        rows.append(
            (
                LABELS[kind],
                got[0]["n"],
                mid["rss_kib_per_system"],
                to_bare["rss_kib_per_system"],
                mid["open_us"],
                to_bare["open_us"],
                mid["close_us"],
                to_bare["close_us"],
                mid["threads_added"] / got[0]["n"],
                row.get("tasks_per_system", "-"),
                f"{mid['idle_cpu_share']:.1%}",
            )
        )
    print_table(
        f"cost per idle system (median of {repeat} fresh processes; x bare = median of "
        "per-round ratios; a3s-lane at its own N, ratio of medians)",
        (
            "system",
            "N",
            "KiB",
            "x bare",
            "open us",
            "x bare",
            "close us",
            "x bare",
            "threads/sys",
            "tasks/sys",
            "idle CPU",
        ),
        rows,
    )
    lanes_row = result.rows[0]
    if "rss_kib_per_system_ratio_to_a3s" in lanes_row:
        print(
            "  trio-lanes / a3s-lane: memory "
            f"{lanes_row['rss_kib_per_system_ratio_to_a3s']:.2f}x, open "
            f"{lanes_row['open_us_ratio_to_a3s']:.2f}x, close "
            f"{lanes_row['close_us_ratio_to_a3s']:.2f}x"
        )
    result.target(
        f"memory per idle system <= {MEMORY_LIMIT}x bare",
        lanes_row["rss_kib_per_system_ratio_to_bare"],
        MEMORY_LIMIT,
        unit="x",
    )
    result.target(
        f"open time per system <= {TIME_LIMIT}x bare",
        lanes_row["open_us_ratio_to_bare"],
        TIME_LIMIT,
        unit="x",
    )
    result.target(
        f"close time per system <= {TIME_LIMIT}x bare",
        lanes_row["close_us_ratio_to_bare"],
        TIME_LIMIT,
        unit="x",
    )
    result.target(
        "OS threads added by the systems (no thread per system)",
        lanes_row["threads_added"],
        0,
    )


def _latency_table(
    result: Result, runs: dict[str, list[dict[str, Any]]], repeat: int, n: int, count: int
) -> None:
    bare = runs.get("latency:bare")
    base = median([r["p99"] for r in bare]) if bare else math.nan
    rows = []
    p99 = {}
    for kind in LATENCY_KINDS:
        got = runs.get(kind)
        if not got:
            continue
        keys = ("p50", "p99", "max", "clean_p99", "p99_on_saturated")
        mid = {key: median([r[key] for r in got]) for key in keys}
        total = {
            key: int(sum(r[key] for r in got))
            for key in ("count", "over_1ms", "with_gc", "preempted")
        }
        p99[kind] = mid["p99"] * 1e6
        row: dict[str, Any] = {
            "system": LABELS[kind],
            "kind": kind,
            "n": got[0]["n"],
            "control_commands": count,
            **{f"{key}_us": value * 1e6 for key, value in mid.items()},
            "p99_ratio_to_bare": mid["p99"] / base,
            "samples_over_1ms": total["over_1ms"],
            "samples_with_gc": total["with_gc"],
            "samples_preempted_by_os": total["preempted"],
            "runs": got,
        }
        result.rows.append(row)
        rows.append(
            (
                LABELS[kind],
                mid["p50"] * 1e6,
                mid["p99"] * 1e6,
                mid["p99"] / base,
                mid["clean_p99"] * 1e6,
                "-" if kind == "latency:bare" else mid["p99_on_saturated"] * 1e6,
                mid["max"] * 1e6,
                f"{total['over_1ms']}/{total['with_gc']}/{total['preempted']} of {total['count']}",
            )
        )
    print_table(
        f"control submit->start with {n:,} systems open "
        f"(median over {repeat} runs of each run's percentiles)",
        (
            "system",
            "p50 us",
            "p99 us",
            "p99 x bare",
            "undisturbed p99",
            "p99 saturated",
            "max us",
            ">1ms/gc/os",
        ),
        rows,
    )
    for kind in ("latency:lanes", "latency:lanes-shared"):
        if kind in p99:
            result.target(
                f"control p99 submit->start, {LABELS[kind]}, < {LIMIT_P99_US:.0f} us",
                p99[kind],
                LIMIT_P99_US,
                unit=" us",
            )


# -- what one system allocates ---------------------------------------------------------------------


async def _allocations(kind: str, n: int, top: int) -> None:
    def opener() -> contextlib.AbstractAsyncContextManager[Any]:
        return lanes.open_lane_system() if kind == "lanes" else bare_system()

    async with contextlib.AsyncExitStack() as warm:  # caches, interned strings, code objects
        await warm.enter_async_context(opener())
        await trio.testing.wait_all_tasks_blocked()
    gc.collect()
    tracemalloc.start(20)
    before = _by_site(tracemalloc.take_snapshot())
    stack = contextlib.AsyncExitStack()
    for _ in range(n):
        await stack.enter_async_context(opener())
    await trio.testing.wait_all_tasks_blocked()
    gc.collect()
    after = _by_site(tracemalloc.take_snapshot())
    tracemalloc.stop()
    diff = {
        site: (size - before.get(site, (0, 0))[0], blocks - before.get(site, (0, 0))[1])
        for site, (size, blocks) in after.items()
    }
    total = sum(size for size, _ in diff.values())
    print(
        f"{kind}: {total / n:,.0f} B allocated per idle system (tracemalloc, N={n:,}), by the "
        "innermost lanes/actors line that caused it (and the module that allocated)"
    )
    by_size = sorted(diff.items(), key=lambda item: -item[1][0])
    for site, (size, blocks) in by_size[:top]:
        print(f"  {size / n:8,.0f} B {blocks / n:6.1f} blocks  {site}")
    sys.stdout.flush()
    os._exit(0)  # closing the systems measures nothing here


def _by_site(snapshot: tracemalloc.Snapshot) -> dict[str, tuple[int, int]]:
    """Bytes and blocks by the innermost lanes/, actors/ or bench/ frame that allocated them."""
    root = str(code_root()) + os.sep
    sites: dict[str, list[int]] = {}
    for trace in snapshot.traces:
        frames = list(reversed(trace.traceback))  # the most recent first
        inner = _short(frames[0].filename, root)
        site = f"{inner}:{frames[0].lineno}"
        for frame in frames:
            where = _short(frame.filename, root)
            if where.startswith(("lanes" + os.sep, "actors" + os.sep, "bench" + os.sep)):
                site = f"{where}:{frame.lineno}"
                if where != inner:
                    site += f" (in {inner.split(os.sep)[0]})"
                break
        entry = sites.setdefault(site, [0, 0])
        entry[0] += trace.size
        entry[1] += 1
    return {site: (size, blocks) for site, (size, blocks) in sites.items()}


def _short(filename: str, root: str) -> str:
    for marker in ("site-packages" + os.sep, "python3.11" + os.sep):
        if marker in filename:
            return filename.split(marker, 1)[1]
    return filename.removeprefix(root)


def main() -> None:
    parser = argparse.ArgumentParser(description="sessions benchmark: child process and tools")
    group = parser.add_mutually_exclusive_group(required=True)
    group.add_argument("--child", nargs=3, metavar=("KIND", "N", "SAMPLES"))
    group.add_argument(
        "--tracemalloc",
        type=int,
        metavar="N",
        help="print what one idle system allocates (lanes and bare), averaged over N",
    )
    parser.add_argument("--top", type=int, default=25, help="lines shown by --tracemalloc")
    args = parser.parse_args()
    if args.tracemalloc is not None:
        for kind in ("lanes", "bare"):
            pid = os.fork()
            if pid == 0:
                trio.run(_allocations, kind, args.tracemalloc, args.top)
            os.waitpid(pid, 0)
        return
    kind, n, count = args.child
    if kind not in (*COST_KINDS, *LATENCY_KINDS):
        parser.error(f"unknown kind {kind!r}; expected one of {COST_KINDS + LATENCY_KINDS}")
    child(kind, int(n), int(count))


if __name__ == "__main__":
    main()
