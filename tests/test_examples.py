"""Every example and the demo run (under the mock clock, so they are quick)."""

from __future__ import annotations

import importlib.util
import os
import pathlib
import shutil
import subprocess
import sys
from types import ModuleType

import pytest
import trio
import trio.testing

from lanes import __main__ as cli
from lanes._demo import run_demo

EXAMPLES = pathlib.Path(__file__).resolve().parent.parent / "examples"


def load(name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(f"example_{name}", EXAMPLES / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def run_example(name: str) -> None:
    module = load(name)
    trio.run(module.main, clock=trio.testing.MockClock(autojump_threshold=0))


def test_basic_usage(capsys: pytest.CaptureFixture[str]) -> None:
    run_example("basic_usage")
    out = capsys.readouterr().out
    assert "query: <html>https://example.org</html>" in out
    assert "was cancelled" in out
    assert "timed out after 0.5 s" in out
    assert "session while paused: pending" in out
    assert "query    completed=2" in out


def test_demo(capsys: pytest.CaptureFixture[str]) -> None:
    lines = trio.run(run_demo, 1, clock=trio.testing.MockClock(autojump_threshold=0))
    text = "\n".join(lines)
    assert "control cancelled 6 prompt commands" in text
    assert "all 30 queries answered" in text
    assert any(line.startswith("prompt") and " 6 " in line for line in lines)


def test_cli_rejects_unknown_commands(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        cli.main(["nope"])
    assert info.value.code == 2
    assert "invalid choice" in capsys.readouterr().err


def test_reliability(capsys: pytest.CaptureFixture[str]) -> None:
    run_example("reliability")
    out = capsys.readouterr().out
    assert "flaky: 200 OK" in out
    assert "failed: 400 Bad Request" in out
    assert "timed out after 2.0 s on attempt 4" in out
    assert "api: completed=1 failed=2 retried=5 timed_out=4 dead_lettered=2" in out
    assert "requeued bad_request failed again; letters: 2" in out


def test_scheduling(capsys: pytest.CaptureFixture[str]) -> None:
    run_example("scheduling")
    out = capsys.readouterr().out
    assert "started at 0.0, 0.0, 0.0, 0.0, 0.0, 0.2, 0.4, 0.6, 0.8, 1.0" in out
    assert "finished 0.2 s after it was submitted" in out
    assert "LLM calls preempted: 1" in out
    assert "['done', 'done', 'done']" in out
    assert "effective priority after 6 s: 3" in out
    assert "with an urgent summary just queued ahead of it: 3" in out
    assert "positions retry 0, search 1, prefetch 2" in out
    assert "started in the order ['retry', 'search', 'prefetch']" in out


def test_durable(tmp_path: pathlib.Path, capsys: pytest.CaptureFixture[str]) -> None:
    module = load("durable")
    path = str(tmp_path / "demo.db")
    with pytest.raises(SystemExit):
        trio.run(module.main, path)
    assert "submitted 5 emails" in capsys.readouterr().out
    trio.run(module.main, path)
    out = capsys.readouterr().out
    assert "recovered 3 unfinished command(s)" in out
    assert out.count("sent 'hello'") == 3


def test_schedules(capsys: pytest.CaptureFixture[str]) -> None:
    run_example("schedules")
    out = capsys.readouterr().out
    assert "heartbeats in the first hour: Fri 27 Mar 08:15 CET, Fri 27 Mar 08:30 CET" in out
    assert "Sun 29 Mar 03:00 CEST: report 'sales'" in out  # no 02:30 that day: once, at 03:00
    assert out.count("report 'sales'") == 4  # three slots, and one triggered by hand
    assert "heartbeat resumed: 288 slots skipped while paused" in out
    assert "report triggered by hand: fired 4, slots run 3" in out
    assert "Mon 30 Mar 16:00 CEST: report 'hourly'" in out
    assert "missed slots fired once (misfire='run_once'), 4 coalesced" in out
    warm = [line.split()[0] for line in out.splitlines() if line.endswith(": warm-up")]
    assert warm == ["16:00:20:", "16:00:40:", "16:01:00:"]  # cron "*/20 * * * * *", times=3
    assert "+10 s: poll starts" in out and "+24 s: poll starts" in out  # 10 s after the end
    assert "warm-up finished after 3 firings; poller after 3" in out


def test_flows(capsys: pytest.CaptureFixture[str]) -> None:
    run_example("flows")
    out = capsys.readouterr().out
    assert "turn 1: [\"results for 'trio'\", \"results for 'lanes'\"] after 2 s" in out
    assert "turn 2 failed: searches done 3, failed 1, cancelled 1" in out
    assert "turn 3 stopped: query lane cancelled 3 searches in all" in out


def test_agent_sessions(capsys: pytest.CaptureFixture[str]) -> None:
    module = load("agent_sessions")
    clock = trio.testing.MockClock(autojump_threshold=0)
    clock.jump(1000)  # like a real run, Trio's clock does not start at 0
    trio.run(module.main, 150, clock=clock)
    out = capsys.readouterr().out
    assert "sessions: 150" in out
    assert "LLM calls at once: at most 20 (limit 20)" in out
    assert "cancelled 0)" not in out  # some interrupts cancelled model calls
    assert "after all sessions left: llm in use 0, members 0" in out
    assert "simulated time: 3.2 s" in out  # seconds since the start, not since Trio's origin


@pytest.mark.skipif(
    shutil.which("redis-server") is None and not os.environ.get("CI"),
    reason="redis-server is not installed (apt-get install -y redis-server); CI must have it",
)
def test_distributed(capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sys, "argv", ["distributed.py"])  # no URL: a private redis-server
    trio.run(load("distributed").main)  # the real clock: Redis is another process
    out = capsys.readouterr().out
    assert "interactive: cat.png@128px" in out
    assert "same key, same command: True" in out
    assert "batch: 9 thumbnails" in out
    assert "failed: ValueError: size 10000 is too large" in out
    assert "dead letters: [('batch', 2)]" in out
    assert "kept key, same result: True\nreleased: True\nreplaced: True" in out
    assert "the newest ran: v2.png@64px" in out
    assert "batch commands completed by the two workers: 9" in out


def test_process_lanes() -> None:
    """Worker processes run in real time and import the script again: run it as a program.

    This also checks its ``if __name__ == "__main__":`` guard (without one, every spawned
    worker would start the example again).
    """
    done = subprocess.run(
        [sys.executable, str(EXAMPLES / "process_lanes.py"), "20000"],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    out = done.stdout
    assert "primes below 20000: 2262" in out
    assert "runaway: command" in out
    assert "timed out after 0.5 s on attempt 1" in out
    assert "check_positive: ValueError('expected a positive number, got -1')" in out
    assert "cpu lane: completed=4 failed=2 timed_out=1" in out


def test_live_system(capsys: pytest.CaptureFixture[str]) -> None:
    run_example("live_system")
    out = capsys.readouterr().out
    lines = out.splitlines()
    raised = lines.index("  alert: lane.alert.raised warning depth=6 at 5")  # after lowering
    assert lines.index("lowering the warning to 5 on the running monitor") < raised
    assert "  shipped events received: A-0, A-1, A-2" in lines
    assert "  alert: lane.alert.cleared warning depth=0 at 4" in lines
    assert "shipped by shop: {'eu': 2.0, 'us': 1.0}" in lines
    assert "exported: lanes ['orders', 'reports'], 2 configs" in lines
    assert "read back equal: True" in lines


def test_lanes_at_runtime(capsys: pytest.CaptureFixture[str]) -> None:
    run_example("lanes_at_runtime")
    lines = capsys.readouterr().out.splitlines()
    assert lines == [
        "lanes: ['shared', 'tenant-a']",
        "again: LaneConfigError",
        "retired tenant-a: ['tenant-a done after 1 s', 'tenant-a done after 1 s'] cancelled 0",
        "tenant-a is gone: ['shared']",
        "retired tenant-b: first tenant-b done after 1 s | cancelled 1",
        "lanes in statistics: ['shared']",
    ]


def test_web_console(capsys: pytest.CaptureFixture[str]) -> None:
    run_example("web_console")
    out = capsys.readouterr().out
    assert "console shows 50 sessions" in out
    assert "GET /lanes/: 200 text/html" in out
    assert "  session-006: 4 pending, 2 running" in out
    assert "pause: 200 lane 'prompt' paused" in out
    assert "without the token: 401" in out
    assert "unknown lane: 404 UnknownLaneError" in out
    assert "ConnectionError('tool server refused the call')" in out
    assert "paused sessions: 1" in out
    assert "console shows 0 sessions once they closed" in out


def test_streaming(capsys: pytest.CaptureFixture[str]) -> None:
    run_example("streaming")
    out = capsys.readouterr().out.splitlines()
    assert out[:6] == [f"token: hello-{i}" for i in range(5)] + ["result: 5"]
    assert out[6:] == ["first token only: bye-0", "result after an early stop: 5"]
