"""agent_server: examples/agent_server.py against its plain-Trio twin, on the real stack (issue 20).

One process tree: a fake streaming LLM (``--llm``: the example's ``FakeLLM`` on hypercorn's
Trio worker, a token every 20 ms), the agent server under test (``--serve lanes``: the
example's app, imported from examples/; ``--serve plain``: ``bench/_plain_agent.py``, a
nursery per session, a task and a CancelScope per turn, a ``trio.CapacityLimiter`` for the
LLM), each served by hypercorn's Trio worker in a process of its own, and the load generator
(this process: trio-websocket clients). Both servers speak the same protocol and get the same
load, round after round, alternating which goes first. A ``/debug`` route added around each
app reports the server process's CPU time, ``VmRSS`` and trio task count.

The load, per session (N = 100 and 500; ``--quick``: 20 and 100): connect; a prompt of 20
tokens read to the end; a prompt of 200 tokens cancelled after 1-5 tokens ("stop this
turn": cancel sent -> ``cancelled`` acknowledged, timed by the client); a prompt paused after
2 tokens, resumed 100 ms later and read to the end; then idle (figures read 1.5 s after the
last session went idle: trio-lanes reaps parked workers after 1 s); then ``close``. The LLM
limit has 50 slots.

Newcomers (a second pair of server processes): 5 busy sessions, each with 16 turns at
once (parallel tool calls), queue 40 prompts of 20 tokens each on an LLM limit of 10 slots;
once it is saturated, 10 newcomers send one prompt each, timed from sending to their
first token. ``SharedLimit`` hands a freed slot to the member holding fewest;
``CapacityLimiter`` serves in arrival order, behind every busy session's queued calls.

Figures, as ratios trio-lanes / plain of the same round (median over rounds): CPU seconds
of the server process, cancel->ack p50 and p99, RSS per idle session, trio tasks per idle
session (every task of the server process, hypercorn's per-connection tasks included),
code lines of each app (without docstrings, comments and blank lines), newcomers' median and
worst wait. Targets (issue 20): CPU, cancel p99, RSS, tasks <= 1.0; newcomers' wait <= 0.2.

To look inside a round (no figure depends on these): ``$AGENT_BENCH_PROFILE`` (a folder)
writes each main round's server cProfile; ``$AGENT_BENCH_MEMORY`` (a folder) writes the
servers' allocator statistics at each ``/debug?gc=1`` (the base and the idle figures), and
with ``$AGENT_BENCH_TRACEMALLOC`` (a number of frames) tracemalloc snapshots too.
"""

from __future__ import annotations

import argparse
import ast
import cProfile
import gc
import importlib.util
import io
import json
import os
import random
import signal
import subprocess
import sys
import time
import tokenize
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from types import ModuleType
from typing import Any

import trio

from ._harness import BENCH_ROOT, Options, Result, median, print_table

NAME = "agent_server"
SIZES = (100, 500)
QUICK_SIZES = (20, 100)
MAIN_SLOTS = 50
TOKEN_DELAY = 0.02  # seconds between two tokens of the fake LLM
SHORT_TOKENS = 20
LONG_TOKENS = 200
PAUSE_FOR = 0.1
REAP_WAIT = 1.5  # seconds idle before the idle figures (lanes reaps parked workers after 1 s)
STUCK_AFTER = 120.0
CONNECTING = 50  # websocket handshakes at once
BUSY = 5  # fewer busy sessions than slots: each holds some, a newcomer holds none
QUICK_BUSY = 5
BUSY_PROMPTS = 40
NEWCOMERS = 10
FAIR_SLOTS = 10
FAIR_TURNS = 16
SEED = 20
VARIANTS = ("lanes", "plain")
LABELS = {"lanes": "trio-lanes (examples/agent_server.py)", "plain": "plain Trio twin"}
EXAMPLE = BENCH_ROOT / "examples" / "agent_server.py"
PLAIN = Path(__file__).resolve().parent / "_plain_agent.py"
APP_MARKER = "# -- running it on its own"


def example() -> ModuleType:
    """examples/agent_server.py (examples/ is not a package: loaded from its file)."""
    spec = importlib.util.spec_from_file_location("agent_server_example", EXAMPLE)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


# -- the server processes --------------------------------------------------------------------------


def debug_figures(collect: bool) -> dict[str, Any]:
    from .sessions import count_tasks, status

    if collect:
        gc.collect()
        _trace_snapshot()
    times = os.times()
    return {
        "cpu": time.process_time(),
        "user": times.user,
        "system": times.system,
        "rss_kib": status()["VmRSS"],
        "tasks": count_tasks(),
    }


def _trace_snapshot() -> None:
    """Where the server's memory goes, for a look at a round (no figure depends on it).

    ``$AGENT_BENCH_MEMORY`` names a folder; each ``/debug?gc=1`` then writes there
    ``<pid>-<k>.malloc`` (``sys._debugmallocstats()``: pymalloc's arenas, pools and free
    blocks by size class) and, with ``$AGENT_BENCH_TRACEMALLOC`` set to a number of frames,
    ``<pid>-<k>.snap`` (a ``tracemalloc`` snapshot of what was allocated since the first
    one and is still live; read it with ``tracemalloc.Snapshot.load``) and ``<pid>-<k>.peak``
    (tracemalloc's current and peak traced bytes). The figures of a traced round are those
    of a slowed-down, bigger server.
    """
    folder = os.environ.get("AGENT_BENCH_MEMORY")
    if not folder:
        return
    k = len(list(Path(folder).glob(f"{os.getpid()}-*.malloc")))
    saved = os.dup(2)  # the stats are written to the C level stderr
    try:
        with open(Path(folder) / f"{os.getpid()}-{k}.malloc", "w") as out:
            os.dup2(out.fileno(), 2)
            sys._debugmallocstats()
    finally:
        os.dup2(saved, 2)
        os.close(saved)
    frames = int(os.environ.get("AGENT_BENCH_TRACEMALLOC") or 0)
    if frames:
        import tracemalloc

        if not tracemalloc.is_tracing():
            tracemalloc.start(frames)
        tracemalloc.take_snapshot().dump(str(Path(folder) / f"{os.getpid()}-{k}.snap"))
        current, peak = tracemalloc.get_traced_memory()
        (Path(folder) / f"{os.getpid()}-{k}.peak").write_text(f"{current} {peak}")


def with_debug(app: Any) -> Any:
    """``app`` with ``GET /debug`` (``?gc=1`` collects first) and a count of open sessions."""
    sessions = 0

    async def wrapped(scope: dict[str, Any], receive: Any, send: Any) -> None:
        nonlocal sessions
        if scope["type"] == "http" and scope["path"] == "/debug":
            figures = debug_figures(scope["query_string"] == b"gc=1")
            figures["sessions"] = sessions
            await send({"type": "http.response.start", "status": 200, "headers": []})
            await send({"type": "http.response.body", "body": json.dumps(figures).encode()})
            return
        if scope["type"] != "websocket":
            await app(scope, receive, send)
            return
        sessions += 1
        try:
            await app(scope, receive, send)
        finally:
            sessions -= 1

    return wrapped


async def _serve(kind: str, llm_url: str, slots: int, turns: int) -> None:
    ex = example()
    if kind == "llm":
        app = ex.FakeLLM(TOKEN_DELAY)
    else:
        settings = ex.Settings(llm_url, llm_slots=slots, turns=turns)
        if kind == "lanes":
            app = with_debug(ex.create_app(settings))
        else:
            from . import _plain_agent

            app = with_debug(_plain_agent.create_app(settings, ex.check))
    from hypercorn.config import Config
    from hypercorn.trio import serve

    config = Config()
    config.keep_alive_timeout = 3600  # no keep-alive race with httpx's pool (the LLM)
    config.bind = ["127.0.0.1:0"]
    config.backlog = 1024
    config.loglevel = "WARNING"
    with trio.open_signal_receiver(signal.SIGTERM) as stop:
        async with trio.open_nursery() as nursery:
            binds = await nursery.start(serve, app, config)
            print(json.dumps({"url": binds[0]}), flush=True)
            async for _ in stop:  # Child.stop(): leave cleanly (a profile is then written)
                nursery.cancel_scope.cancel()
                break


class Child:
    """A server process (``python -m bench.agent_server --serve KIND``) and its URL."""

    def __init__(
        self,
        kind: str,
        llm_url: str = "",
        slots: int = 0,
        turns: int = 1,
        profile: Path | None = None,
    ) -> None:
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join([str(BENCH_ROOT), env.get("PYTHONPATH", "")])
        args = [sys.executable, "-m", "bench.agent_server", "--serve", kind]
        args += ["--llm-url", llm_url, "--slots", str(slots), "--turns", str(turns)]
        if profile is not None:
            args += ["--profile", str(profile)]
        self.process = subprocess.Popen(args, stdout=subprocess.PIPE, text=True, env=env)
        assert self.process.stdout is not None
        line = self.process.stdout.readline()
        if not line:
            raise RuntimeError(f"the {kind} server did not start (exit {self.process.wait()})")
        self.url: str = json.loads(line)["url"]

    def stop(self) -> None:
        self.process.terminate()
        self.process.wait(timeout=30)


# -- the load ------------------------------------------------------------------------------------


async def debug(url: str, collect: bool = False) -> dict[str, Any]:
    import httpx

    async with httpx.AsyncClient() as client:
        response = await client.get(url + "/debug" + ("?gc=1" if collect else ""))
        figures: dict[str, Any] = response.json()
        return figures


class Session:
    """One client: a websocket and its frames, read by a task of its own."""

    def __init__(self, ws: Any) -> None:
        self.ws = ws
        self.frames: list[dict[str, Any]] = []  # the last few, to tell where it got stuck

    async def send(self, **message: Any) -> None:
        await self.ws.send_message(json.dumps(message))

    async def next(self, kind: str, turn: int | None = None) -> dict[str, Any]:
        """The next frame of type ``kind`` (and of ``turn``, if given); others are skipped."""
        while True:
            frame: dict[str, Any] = json.loads(await self.ws.get_message())
            self.frames = [*self.frames[-5:], frame]
            if frame["type"] == "error":
                raise RuntimeError(f"the server answered an error: {frame}")
            if frame["type"] == kind and turn in (None, frame.get("turn")):
                return frame


async def main_load(url: str, n: int) -> dict[str, Any]:
    """Drive ``n`` sessions through the script of the module docstring; the figures."""
    from trio_websocket import ConnectionClosed, connect_websocket_url

    rng = random.Random(SEED)
    cancel_after = [rng.randint(1, 5) for _ in range(n)]
    connecting = trio.CapacityLimiter(CONNECTING)
    idle = trio.Semaphore(0)
    leave = trio.Event()
    latencies: list[float] = []
    stage = ["connecting"] * n  # where each session is (named if the load gets stuck)
    sessions: list[Session | None] = [None] * n
    base = await debug(url, collect=True)

    async def one(i: int, connections: trio.Nursery) -> None:
        async with connecting:
            ws = await connect_websocket_url(connections, url.replace("http", "ws") + "/session")
        try:
            s = sessions[i] = Session(ws)
            stage[i] = "turn 1"
            await s.send(type="prompt", text=f"s{i} hello", tokens=SHORT_TOKENS)
            _completed(await s.next("done", 1))
            stage[i] = "turn 2 (cancel)"
            await s.send(type="prompt", text=f"s{i} long", tokens=LONG_TOKENS)
            for _ in range(cancel_after[i]):
                await s.next("token", 2)
            stage[i] = "turn 2: cancel sent"
            sent = time.perf_counter()
            await s.send(type="cancel")
            await s.next("cancelled")  # the turn's "done" may come first: skipped
            latencies.append(time.perf_counter() - sent)
            stage[i] = "turn 3 (pause)"
            await s.send(type="prompt", text=f"s{i} pause", tokens=SHORT_TOKENS)
            for _ in range(2):
                await s.next("token", 3)
            await s.send(type="pause")
            await s.next("paused")
            await trio.sleep(PAUSE_FOR)
            await s.send(type="resume")
            _completed(await s.next("done", 3))
            stage[i] = "idle"
            idle.release()
            await leave.wait()
            stage[i] = "closing"
            await s.send(type="close")
            try:
                while True:
                    await ws.get_message()
            except ConnectionClosed:
                stage[i] = "closed"
        finally:
            await ws.aclose()

    idle_figures: dict[str, Any] = {}
    with trio.move_on_after(STUCK_AFTER) as watchdog:
        async with trio.open_nursery() as connections:
            async with trio.open_nursery() as nursery:
                for i in range(n):
                    nursery.start_soon(one, i, connections)
                if os.environ.get("AGENT_BENCH_DEBUG"):
                    connections.start_soon(_progress, stage)
                for _ in range(n):
                    await idle.acquire()
                await trio.sleep(REAP_WAIT)
                idle_figures = await debug(url, collect=True)
                if idle_figures["sessions"] != n:
                    raise AssertionError(f"{idle_figures['sessions']} sessions open, expected {n}")
                leave.set()
                stage[:] = [x if x != "idle" else "told to leave" for x in stage]
            # Some closed connections' reader tasks wait for a TCP close: not ours to wait.
            connections.cancel_scope.cancel()
    if watchdog.cancelled_caught:
        stuck = [
            f"{i}: {sessions[i].frames if sessions[i] else None}"  # type: ignore[union-attr]
            for i, where in enumerate(stage)
            if where not in ("idle", "told to leave", "closing", "closed")
        ]
        raise RuntimeError(
            f"the load is stuck after {STUCK_AFTER} s: {Counter(stage)}; last frames of "
            f"the stuck sessions: {stuck[:5]}"
        )
    # The server is another process: poll its count of open sessions until they all ended.
    while (end := await debug(url))["sessions"]:  # noqa: ASYNC110
        await trio.sleep(0.05)
    latencies.sort()
    return {
        "cpu_s": end["cpu"] - base["cpu"],
        "user_s": end["user"] - base["user"],
        "system_s": end["system"] - base["system"],
        "cancel_p50_ms": latencies[len(latencies) // 2] * 1e3,
        "cancel_p99_ms": latencies[min(len(latencies) - 1, int(len(latencies) * 0.99))] * 1e3,
        "rss_kib_per_session": (idle_figures["rss_kib"] - base["rss_kib"]) / n,
        "tasks_per_session": (idle_figures["tasks"] - base["tasks"]) / n,
    }


def _completed(frame: dict[str, Any]) -> None:
    if frame["status"] != "completed":
        raise RuntimeError(f"a turn did not complete: {frame} (see the server's log above)")


async def _progress(stage: list[str]) -> None:
    while True:
        await trio.sleep(5)
        print(f"  sessions: {dict(Counter(stage))}", file=sys.stderr, flush=True)


async def newcomers_load(url: str, busy: int) -> dict[str, Any]:
    """Busy sessions saturate the LLM limit; the newcomers' waits for their first token."""
    from trio_websocket import open_websocket_url

    waits: list[float] = []
    saturated = trio.Event()
    measured = trio.Event()
    streaming = trio.Semaphore(0)

    async def client(i: int, prompts: int, timed: bool) -> None:
        async with open_websocket_url(url.replace("http", "ws") + "/session") as ws:
            s = Session(ws)
            if timed:
                await saturated.wait()
            sent = time.perf_counter()
            for p in range(prompts):
                await s.send(type="prompt", text=f"c{i}p{p}", tokens=SHORT_TOKENS)
            await s.next("token")
            if timed:
                waits.append(time.perf_counter() - sent)
                if len(waits) == NEWCOMERS:
                    measured.set()
            else:
                streaming.release()
                await measured.wait()  # stay busy until every newcomer got its first token
            await s.send(type="close")

    async with trio.open_nursery() as nursery:
        for i in range(busy):
            nursery.start_soon(client, i, BUSY_PROMPTS, False)
        for _ in range(busy):
            await streaming.acquire()  # every busy session streams: the limit is full
        await trio.sleep(0.5)  # every busy session has queued its calls
        for i in range(NEWCOMERS):
            nursery.start_soon(client, busy + i, 1, True)
        saturated.set()
    while (await debug(url))["sessions"]:  # noqa: ASYNC110  (another process: poll)
        await trio.sleep(0.05)
    waits.sort()
    return {"newcomer_wait_p50_s": median(waits), "newcomer_wait_max_s": waits[-1]}


# -- lines of code ---------------------------------------------------------------------------------


def code_lines(path: Path, stop: str | None = None) -> int:
    """Lines holding code in ``path`` (up to the line ``stop`` starts), docstrings left out."""
    source = path.read_text()
    if stop is not None:
        source = source[: source.index(stop)]
    docstrings: set[int] = set()
    for node in ast.walk(ast.parse(source)):
        body = getattr(node, "body", None)
        if isinstance(body, list) and body and isinstance(body[0], ast.Expr):
            value = body[0].value
            if isinstance(value, ast.Constant) and isinstance(value.value, str):
                docstrings.update(range(body[0].lineno, (body[0].end_lineno or 0) + 1))
    lines: set[int] = set()
    for token in tokenize.generate_tokens(io.StringIO(source).readline):
        if token.type in (tokenize.COMMENT, tokenize.NL, tokenize.NEWLINE):
            continue
        if token.type in (tokenize.INDENT, tokenize.DEDENT, tokenize.ENDMARKER):
            continue
        lines.update(range(token.start[0], token.end[0] + 1))
    return len(lines - docstrings)


# -- the parent ------------------------------------------------------------------------------------


def rounds_of(
    options: Options, measure: Callable[[str], dict[str, Any]]
) -> dict[str, list[dict[str, Any]]]:
    """``measure(variant)`` for both variants, round after round, alternating the order."""
    rounds = 1 if options.quick else min(options.repeat, 5)
    samples: dict[str, list[dict[str, Any]]] = {v: [] for v in VARIANTS}
    for round_ in range(rounds):
        order = VARIANTS if round_ % 2 == 0 else VARIANTS[::-1]
        for variant in order:
            samples[variant].append(measure(variant))
    return samples


def _profile(variant: str, n: int) -> Path | None:
    """Where a main round's server writes its cProfile: ``$AGENT_BENCH_PROFILE/<variant>-<n>.prof``
    (unset: no profile). Read it with ``python -m pstats``; the figures of a profiled round
    are those of a slowed-down server."""
    folder = os.environ.get("AGENT_BENCH_PROFILE")
    return None if not folder else Path(folder) / f"{variant}-{n}.prof"


def run(options: Options) -> Result:
    result = Result(NAME)
    llm = Child("llm")
    try:
        sizes = QUICK_SIZES if options.quick else SIZES
        busy = QUICK_BUSY if options.quick else BUSY
        for n in sizes:

            def main_round(variant: str, n: int = n) -> dict[str, Any]:
                server = Child(variant, llm.url, MAIN_SLOTS, profile=_profile(variant, n))
                try:
                    return trio.run(main_load, server.url, n)
                finally:
                    server.stop()

            samples = rounds_of(options, main_round)
            _report(result, n, samples)

        def fair_round(variant: str) -> dict[str, Any]:
            server = Child(variant, llm.url, FAIR_SLOTS, FAIR_TURNS)
            try:
                return trio.run(newcomers_load, server.url, busy)
            finally:
                server.stop()

        _report_newcomers(result, busy, rounds_of(options, fair_round))
    finally:
        llm.stop()
    lanes_lines, plain_lines = code_lines(EXAMPLE, APP_MARKER), code_lines(PLAIN)
    result.rows.append(_row("code lines of the app", None, lanes_lines, plain_lines, None))
    print(f"  code lines: trio-lanes {lanes_lines}, plain {plain_lines}")
    result.note(
        "tasks and RSS per idle session count the whole server process (hypercorn's tasks "
        "per websocket included), measured 1.5 s after the last session went idle"
    )
    return result


FIGURES = (
    # (key, label, target: ratio limit or None)
    ("cpu_s", "server CPU s", 1.0),
    ("user_s", "  of which user s", None),
    ("system_s", "  of which kernel s", None),
    ("cancel_p50_ms", "cancel -> ack p50 ms", None),
    ("cancel_p99_ms", "cancel -> ack p99 ms", 1.0),
    ("rss_kib_per_session", "RSS KiB per idle session", 1.0),
    ("tasks_per_session", "trio tasks per idle session", 1.0),
)


def _row(
    figure: str, n: int | None, lanes: float, plain: float, limit: float | None
) -> dict[str, Any]:
    ratio = lanes / plain if plain else float("nan")
    return {
        "figure": figure,
        "n": n,
        "lanes": lanes,
        "plain": plain,
        "ratio": ratio,
        "target": None if limit is None else f"<= {limit:g}",
        "holds": None if limit is None else bool(ratio <= limit),
    }


def _paired(samples: dict[str, list[dict[str, Any]]], key: str) -> tuple[float, float, float]:
    lanes = [s[key] for s in samples["lanes"]]
    plain = [s[key] for s in samples["plain"]]
    ratios = [a / b if b else float("nan") for a, b in zip(lanes, plain, strict=True)]
    return median(lanes), median(plain), median(ratios)


def _report(result: Result, n: int, samples: dict[str, list[dict[str, Any]]]) -> None:
    table = []
    for key, label, limit in FIGURES:
        lanes, plain, ratio = _paired(samples, key)
        row = _row(label, n, lanes, plain, limit)
        row["ratio"] = ratio
        row["holds"] = None if limit is None else bool(ratio <= limit)
        row["runs"] = samples_of(samples, key)
        result.rows.append(row)
        table.append([label, lanes, plain, row["ratio"], row["target"]])
        if limit is not None:
            result.target(f"{label} at {n} sessions, x plain", ratio, limit)
    print_table(
        f"{n} sessions ({len(samples['lanes'])} rounds; medians)",
        ["figure", "trio-lanes", "plain", "ratio", "target"],
        table,
    )


def samples_of(samples: dict[str, list[dict[str, Any]]], key: str) -> dict[str, list[float]]:
    return {variant: [s[key] for s in runs] for variant, runs in samples.items()}


def _report_newcomers(result: Result, busy: int, samples: dict[str, list[dict[str, Any]]]) -> None:
    table = []
    for key, label in (
        ("newcomer_wait_p50_s", "newcomers' wait, median s"),
        ("newcomer_wait_max_s", "newcomers' wait, worst s"),
    ):
        lanes, plain, ratio = _paired(samples, key)
        row = _row(label, busy, lanes, plain, 0.2)
        row["ratio"] = ratio
        row["holds"] = bool(ratio <= 0.2)
        row["runs"] = samples_of(samples, key)
        result.rows.append(row)
        table.append([label, lanes, plain, ratio, row["target"]])
        result.target(f"{label} (SharedLimit x CapacityLimiter)", ratio, 0.2)
    print_table(
        f"newcomers: {busy} busy sessions x {BUSY_PROMPTS} prompts on {FAIR_SLOTS} LLM slots, "
        f"{NEWCOMERS} newcomers (SharedLimit vs CapacityLimiter)",
        ["figure", "trio-lanes", "plain", "ratio", "target"],
        table,
    )


def main() -> None:
    parser = argparse.ArgumentParser(description="agent_server benchmark: its server processes")
    parser.add_argument("--serve", choices=("llm", *VARIANTS), required=True)
    parser.add_argument("--llm-url", default="")
    parser.add_argument("--slots", type=int, default=MAIN_SLOTS)
    parser.add_argument("--turns", type=int, default=1)
    parser.add_argument("--profile", type=Path, help="write a cProfile of the server here")
    args = parser.parse_args()
    # On CPU time (not wall time): the server shares two cores with the LLM and the load
    # generator, and a wall-time profile charges their time to whatever it preempted.
    profile = cProfile.Profile(time.process_time) if args.profile else None
    if profile is not None:
        profile.enable()
    trio.run(_serve, args.serve, args.llm_url, args.slots, args.turns)
    if profile is not None:
        profile.disable()
        profile.dump_stats(args.profile)


if __name__ == "__main__":
    main()
