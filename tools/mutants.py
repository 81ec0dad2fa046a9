"""Mutation testing of the scheduling policy and the command life cycle.

Each mutant is a small, named source patch (one or more exact replacements) that breaks one
rule the property tests promise to check. ``python -m tools.mutants`` applies each mutant to
a temporary copy of the project (the real files are never touched), runs the property tests
against it (each test module in its own process, in parallel; the first failure kills the
mutant), and prints per mutant whether it was killed, by which test, how long the failure
(found and shrunk) took, and the score. ``nox -s mutants`` runs it; ``tests/test_mutants.py``
runs the fast subset (:data:`QUICK`) in the normal test suite.

Options: ``--only NAME`` (repeatable), ``--seed N`` (Hypothesis seed, default 0),
``--timeout S`` (per mutant, default 120 s), ``--list``, ``--quick`` (the fast subset, each
mutant against the module that kills it), ``--json PATH`` (also write the results, for
``python -m bench.report``: docs/bench/mutants.json feeds the table of docs/testing.md).
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterable, Sequence

import attrs

ROOT = pathlib.Path(__file__).resolve().parent.parent
PROPERTY_TESTS = (
    "tests/test_policy_model.py",
    "tests/test_policy_preemption.py",
    "tests/test_properties_e2e.py",
)
_COPIED = ("lanes", "actors", "tests", "pyproject.toml")


@attrs.frozen
class Mutant:
    """One bug: ``edits`` are (file, old, new) exact replacements, each matching once."""

    name: str
    description: str
    edits: tuple[tuple[str, str, str], ...]

    def apply(self, root: pathlib.Path) -> None:
        """Patch the copy of the project at ``root``.

        Raises:
            ValueError: an edit's ``old`` text does not occur exactly once (the source
                changed: update the mutant).
        """
        for path, old, new in self.edits:
            file = root / path
            text = file.read_text(encoding="utf-8")
            if text.count(old) != 1:
                msg = f"mutant {self.name}: {old!r} occurs {text.count(old)} times in {path}"
                raise ValueError(msg)
            file.write_text(text.replace(old, new), encoding="utf-8")


def _mutant(name: str, description: str, *edits: tuple[str, str, str]) -> Mutant:
    return Mutant(name, description, edits)


POLICY = "lanes/_policy.py"
CORE = "lanes/_core.py"
SUBMISSION = "lanes/_submission.py"
OUTCOME = "lanes/_outcome.py"
DISPATCHER = "lanes/_dispatcher.py"

MUTANTS: tuple[Mutant, ...] = (
    _mutant(
        "fifo-among-equals",
        "ties of effective priority go to the later submission",
        (
            POLICY,
            "priority == best_priority and job.seq < best_seq",
            "priority == best_priority and job.seq > best_seq",
        ),
    ),
    _mutant(
        "lane-lifo",
        "a lane's queue is LIFO: new commands join at its head",
        (
            POLICY,
            "                    last.after = job\n                    state.last = job",
            "                    job.after = state.first\n                    state.first = job",
        ),
    ),
    _mutant(
        "reservations-ignored",
        "the global cap ignores the other lanes' unmet reservations",
        (
            POLICY,
            "        return self.active_total + self._unmet_total() < cap",
            "        return True",
        ),
    ),
    _mutant(
        "cap-plus-one",
        "the global cap lets one command too many start",
        (
            POLICY,
            "        if self.active_total >= cap:\n            return False",
            "        if self.active_total > cap:\n            return False",
        ),
        (
            POLICY,
            "        return self.active_total + self._unmet_total() < cap",
            "        return self.active_total + self._unmet_total() <= cap",
        ),
        (
            POLICY,
            "if capped and self.active_total >= self.cap:",
            "if capped and self.active_total > self.cap:",
        ),
    ),
    _mutant(
        "boost-never-applied",
        "priority boosts are never applied",
        (
            POLICY,
            "        if job is None or self.boost is None:\n            return priority",
            "        if True:\n            return priority",
        ),
    ),
    _mutant(
        "boost-applied-twice",
        "each boost point passed raises the priority by two levels",
        (
            POLICY,
            "priority - self.boost.levels(now - job.pending_since)",
            "priority - 2 * self.boost.levels(now - job.pending_since)",
        ),
    ),
    _mutant(
        "boost-clock-of-the-head",
        "a lane's boost counts from its head's wait, not its longest-waiting command's",
        (
            POLICY,
            "        if self.boost is None or not self.waiting:\n            return head\n"
            "        oldest = head",
            "        if True:\n            return head\n        oldest = head",
        ),
    ),
    _mutant(
        "preempted-requeued-at-back",
        "the policy requeues a preempted command at the tail of its lane",
        (
            POLICY,
            "        self._front -= 1\n        state.enqueue(job, self._front)",
            "        self._order += 1\n        state.enqueue(job, self._order)",
        ),
    ),
    _mutant(
        "retry-count-off-by-one",
        "a failed command is retried max_retries + 1 times",
        (
            OUTCOME,
            "if permanent or attempt > retry.max_retries:",
            "if permanent or attempt > retry.max_retries + 1:",
        ),
    ),
    _mutant(
        "timeout-not-set",
        "an attempt's deadline is never set: timeouts never fire",
        (
            CORE,
            "cmd.deadline = now + cmd.timeout if cmd.timeout is not None else math.inf",
            "cmd.deadline = math.inf",
        ),
    ),
    _mutant(
        "dead-letter-on-success",
        "a command that returned is dead-lettered",
        (
            CORE,
            "        self._resolve(cmd, DONE, None)\n        if following",
            "        self._failed(cmd, RuntimeError('returned'), False, now)\n        if following",
        ),
    ),
    _mutant(
        "non-preemptible-preempted",
        "the policy picks victims in lanes that are not preemptible",
        (
            POLICY,
            "if not config.preemptible or state is waiting or config.priority <= priority:",
            "if state is waiting or config.priority <= priority:",
        ),
    ),
    _mutant(
        "permanent-retried",
        "a Permanent error is retried like any other",
        (
            OUTCOME,
            "if permanent or attempt > retry.max_retries:",
            "if attempt > retry.max_retries:",
        ),
    ),
    _mutant(
        "retry-skips-backoff",
        "a retry is queued at once, without its backoff delay",
        (
            OUTCOME,
            "return Step(Next.RETRY, delay=retry.delay(attempt, draw()), error=reported)",
            "return Step(Next.RETRY, delay=0.0, error=reported)",
        ),
    ),
    _mutant(
        "shell-requeues-preempted-at-back",
        "the life cycle requeues a preempted command at the tail of its lane (as a retry)",
        (
            CORE,
            "        self.policy.requeue_front(cmd, now)\n",
            "        self.policy.retry(cmd, now, now)\n",
        ),
    ),
    _mutant(
        "shell-never-requeues-preempted",
        "the life cycle frees a preempted command's slot but never requeues it",
        (
            CORE,
            "        self.policy.requeue_front(cmd, now)\n",
            "        self.policy.finish(cmd)\n",
        ),
    ),
    _mutant(
        "command-priority-ignored",
        "a command submitted with a priority joins its lane's plain FIFO (the priority ignored)",
        (
            POLICY,
            "if job.priority == 0 and job.entry is None:  # LaneState.enqueue, inlined",
            "if job.entry is None:  # LaneState.enqueue, inlined",
        ),
    ),
    _mutant(
        "command-priority-sign",
        "any prioritized command starts before the lane's plain ones, even a larger number",
        (
            POLICY,
            "if job is None or entry[0] < 0 or (entry[0] == 0 and entry[1] < job.order):",
            "if job is None or entry[0] != 0 or (entry[0] == 0 and entry[1] < job.order):",
        ),
    ),
    _mutant(
        "command-priority-lifo-among-equals",
        "among commands of one (non-zero) priority the one queued last starts first",
        (POLICY, "entry = (job.priority, order, job)", "entry = (job.priority, -order, job)"),
    ),
    _mutant(
        "reprioritize-to-the-back",
        "a reprioritized command goes to the back of its new priority (FIFO by queueing lost)",
        (
            POLICY,
            "            entry = (priority, job.order, job)\n",
            "            self._order += 1\n"
            "            job.order = self._order\n"
            "            entry = (priority, job.order, job)\n",
        ),
    ),
    _mutant(
        "reprioritize-running-accepted",
        "reprioritize of a running command is accepted (it says True and changes the priority)",
        (
            POLICY,
            "        if job.state is DELAYED:\n"
            "            job.priority = priority  # it takes its place when it is due",
            "        if job.state is DELAYED or job.state is ACTIVE:\n"
            "            job.priority = priority  # it takes its place when it is due",
        ),
    ),
    _mutant(
        "reprioritize-delayed-dropped",
        "reprioritize of a delayed command says True but the command keeps its old priority",
        (
            POLICY,
            "            job.priority = priority  # it takes its place when it is due",
            "            pass  # it takes its place when it is due",
        ),
    ),
    _mutant(
        "shell-submit-drops-priority",
        "submit(priority=) is checked but every command is queued with priority 0",
        (
            SUBMISSION,
            "    cmd = core.new_command(lane, call, args, type_name, key, timeout)\n"
            "    cmd.priority = priority\n",
            "    cmd = core.new_command(lane, call, args, type_name, key, timeout)\n",
        ),
    ),
    _mutant(
        "shell-reprioritize-says-yes",
        "handle.reprioritize answers True for a command that started or ended (nothing changes)",
        (
            CORE,
            "        if not self.policy.reprioritize(cmd, priority):\n            return False\n",
            "        self.policy.reprioritize(cmd, priority)\n",
        ),
    ),
    _mutant(
        "shell-preempts-latest-of-any-lane",
        "the dispatcher preempts the latest started command of any lane, not the policy's victim",
        (
            DISPATCHER,
            "        for job in decision.preempt:\n"
            "            assert isinstance(job, Command)\n"
            "            core.preempt(job)",
            "        for job in decision.preempt:\n"
            "            assert isinstance(job, Command)\n"
            "            running = [j for s in core.policy.lanes.values() for j in s.running]\n"
            "            core.preempt(max(running, key=lambda j: j.start_seq))",
        ),
    ),
    _mutant(
        "quiet-with-pending-work",
        "a completion skips its decision round though commands are pending (quiet() ignores them)",
        (
            POLICY,
            "        for state in self._by_priority:\n"
            "            if state.pending:\n"
            "                return False\n",
            "",
        ),
    ),
    _mutant(
        "timer-round-only-when-poked",
        "the dispatcher's timer task decides only when poked: a due timer (delay, backoff) "
        "wakes it without a round",
        (
            DISPATCHER,
            "if self._owed or core.now() >= self._armed:",
            "if self._owed:",
        ),
    ),
)


QUICK: dict[str, str] = {
    "cap-plus-one": "tests/test_policy_preemption.py",
    "reservations-ignored": "tests/test_policy_preemption.py",
    "non-preemptible-preempted": "tests/test_policy_preemption.py",
    "retry-count-off-by-one": "tests/test_properties_e2e.py",
    "dead-letter-on-success": "tests/test_properties_e2e.py",
    "reprioritize-to-the-back": "tests/test_policy_model.py",
}
"""The fast subset ``--quick`` runs, each mutant against the one test module that kills it
(in 5-9 CPU s, seed 0; docs/bench/mutants.json): the cap, the reservations, preemption,
retries, outcomes and command priorities. ``tests/test_mutants.py`` runs it in the normal
test suite (under a minute), so CI notices a weakened property test."""


@attrs.frozen
class Result:
    """How one mutant fared."""

    mutant: str
    killed: bool
    seconds: float  # CPU seconds until the failure (found and shrunk), see cpu_seconds
    by: str  # the test module that failed first ("" when it survived)
    detail: str = ""


def copy_project(dest: pathlib.Path, source: pathlib.Path = ROOT) -> pathlib.Path:
    """Copy what the property tests need (the packages, the tests, pyproject) to ``dest``."""
    ignore = shutil.ignore_patterns("__pycache__", ".hypothesis", "*.pyc")
    for name in _COPIED:
        path = source / name
        if path.is_dir():
            shutil.copytree(path, dest / name, ignore=ignore)
        else:
            shutil.copy2(path, dest / name)
    return dest


def pytest_command(tests: Iterable[str], seed: int) -> list[str]:
    """The pytest run of ``tests`` used against a mutant (default Hypothesis profile)."""
    return [
        sys.executable,
        "-m",
        "pytest",
        "-x",
        "-q",
        "-p",
        "no:cacheprovider",
        f"--hypothesis-seed={seed}",
        *tests,
    ]


def cpu_seconds(pid: int) -> float | None:
    """CPU seconds (user + system) a running process has used (None: not known here).

    Time to failure is measured in CPU seconds: on a shared machine wall time mostly measures
    the neighbours; one test process is single-threaded, so its CPU time is the wall time it
    would take on an idle core.
    """
    try:
        fields = pathlib.Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def run_tests(
    root: pathlib.Path, tests: Sequence[str], *, seed: int = 0, timeout: float = 120.0
) -> Result:
    """Run each test module of ``tests`` in its own process at ``root``; stop at a failure.

    Returns a result named ``""``: ``killed`` if some module failed (``by`` names the first),
    with the CPU seconds that module took (until all passed: the slowest one's). ``timeout``
    bounds each module's CPU seconds (wall seconds where those cannot be read).
    """
    env = {**os.environ, "PYTHONPATH": str(root), "PYTHONDONTWRITEBYTECODE": "1"}
    begin = time.perf_counter()
    logs = {test: root / f"pytest-{i}.log" for i, test in enumerate(tests)}
    procs = {}
    for test in tests:
        with logs[test].open("w") as log:  # a file, not a pipe: failures print a lot
            procs[test] = subprocess.Popen(
                pytest_command([test], seed), cwd=root, env=env, stdout=log, stderr=log
            )
    used = dict.fromkeys(tests, 0.0)
    try:
        while procs:
            for test, proc in list(procs.items()):
                pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
                if pid == 0:
                    cpu = cpu_seconds(proc.pid)
                    used[test] = time.perf_counter() - begin if cpu is None else cpu
                    if used[test] > timeout:
                        return Result("", False, used[test], "", f"{test} timed out")
                    continue
                proc.returncode = os.waitstatus_to_exitcode(status)
                used[test] = usage.ru_utime + usage.ru_stime
                del procs[test]
                if proc.returncode != 0:
                    output = logs[test].read_text(errors="replace")
                    return Result("", True, used[test], test, _summary(output))
            time.sleep(0.05)
        return Result("", False, max(used.values()), "")
    finally:
        for proc in procs.values():
            proc.kill()
            proc.wait()


def _summary(output: str) -> str:
    """The line of pytest's output that names the failure."""
    for line in output.splitlines():
        if line.startswith(("FAILED", "ERROR")):
            return line
    return output.strip().splitlines()[-1] if output.strip() else ""


def run_mutant(
    mutant: Mutant, tests: Sequence[str] = PROPERTY_TESTS, *, seed: int = 0, timeout: float = 120.0
) -> Result:
    """Apply ``mutant`` to a temporary copy of the project and run ``tests`` against it."""
    with tempfile.TemporaryDirectory(prefix=f"mutant-{mutant.name}-") as tmp:
        root = copy_project(pathlib.Path(tmp))
        try:
            mutant.apply(root)
        except ValueError as exc:  # a stale snippet: report it, run the other mutants
            return Result(mutant.name, False, 0.0, "", f"NOT APPLIED: {exc}")
        result = run_tests(root, tests, seed=seed, timeout=timeout)
    return attrs.evolve(result, mutant=mutant.name)


def _baseline_passes(tests: Sequence[str], seed: int) -> bool:
    with tempfile.TemporaryDirectory(prefix="mutant-none-") as tmp:
        baseline = run_tests(copy_project(pathlib.Path(tmp)), tests, seed=seed, timeout=600.0)
    if baseline.killed or baseline.detail:
        print(f"the unmutated project fails its property tests: {baseline.detail}")
        return False
    print(
        f"unmutated: the property tests pass; the slowest module takes {baseline.seconds:.1f} "
        "CPU s (the baseline)"
    )
    return True


def git_revision(root: pathlib.Path = ROOT) -> str:
    """The short commit of ``root``'s checkout (``"unknown"`` outside a git checkout)."""
    try:
        done = subprocess.run(
            ["git", "-C", str(root), "rev-parse", "--short", "HEAD"],
            capture_output=True,
            text=True,
            check=True,
        )
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return done.stdout.strip()


def write_json(
    path: pathlib.Path,
    results: Sequence[Result],
    *,
    seed: int,
    timeout: float,
    git: str | None = None,
) -> None:
    """Write ``results`` and the machine and code they were measured on to ``path`` as JSON.

    ``python -m bench.report`` renders it into the ``bench:mutants`` region of
    docs/testing.md. ``git`` is the commit measured (default: this checkout's).
    """
    descriptions = {m.name: m.description for m in MUTANTS}
    data = {
        "machine": {
            "python": platform.python_version(),
            "platform": platform.platform(),
            "cpus": os.cpu_count(),
            "git": git or git_revision(),
        },
        "seed": seed,
        "timeout": timeout,
        "killed": sum(r.killed for r in results),
        "total": len(results),
        "mutants": [
            {**attrs.asdict(r), "description": descriptions.get(r.mutant, "")} for r in results
        ],
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=2) + "\n", encoding="utf-8")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tools.mutants", description=__doc__)
    parser.add_argument("--only", action="append", default=[], help="run this mutant only")
    parser.add_argument("--seed", type=int, default=0, help="the Hypothesis seed")
    parser.add_argument("--timeout", type=float, default=120.0, help="seconds per mutant")
    parser.add_argument("--list", action="store_true", help="list the mutants and exit")
    parser.add_argument("--tests", nargs="*", default=list(PROPERTY_TESTS))
    parser.add_argument("--no-baseline", action="store_true", help="skip the unmutated run")
    parser.add_argument("--quick", action="store_true", help="the fast subset CI runs")
    parser.add_argument("--json", type=pathlib.Path, help="also write the results here")
    args = parser.parse_args(argv)
    only = set(args.only) | (set(QUICK) if args.quick else set())
    chosen = [m for m in MUTANTS if not only or m.name in only]
    if args.list or not chosen:
        for mutant in MUTANTS:
            print(f"{mutant.name:38} {mutant.description}")
        return 0 if args.list else 2
    if not args.no_baseline and not _baseline_passes(args.tests, args.seed):
        return 1
    results = []
    for mutant in chosen:
        tests = args.tests
        if args.quick and tests == list(PROPERTY_TESTS) and mutant.name in QUICK:
            tests = [QUICK[mutant.name]]  # the module that kills it: one process, not three
        result = run_mutant(mutant, tests, seed=args.seed, timeout=args.timeout)
        results.append(result)
        verdict = "killed" if result.killed else "SURVIVED"
        print(
            f"{mutant.name:38} {verdict:8} {result.seconds:6.1f} CPU s  "
            f"{result.by or result.detail}",
            flush=True,
        )
    killed = sum(r.killed for r in results)
    print(f"score: {killed}/{len(results)} mutants killed")
    if args.json is not None:
        write_json(args.json, results, seed=args.seed, timeout=args.timeout)
    return 0 if killed == len(results) else 1


if __name__ == "__main__":
    sys.exit(main())
