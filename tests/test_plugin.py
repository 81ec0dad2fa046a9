"""The shipped pytest plugin makes ``lane_system`` work in a project without ``trio_mode``.

Each test runs a tiny project with pytest's own ``pytester`` (in a subprocess, so the plugin
is loaded the way a user's pytest loads it: from the ``pytest11`` entry point).
"""

from __future__ import annotations

import pathlib
import re

import pytest

pytest_plugins = ["pytester"]

TESTING_MD = pathlib.Path(__file__).resolve().parent.parent / "docs" / "testing.md"
NO_TRIO_MODE = "[pytest]\naddopts = -p no:cacheprovider\n"


def docs_block(first_line: str) -> str:
    """The python block of docs/testing.md whose first line is ``first_line``."""
    blocks = re.findall(r"```python\n(.*?)```", TESTING_MD.read_text(encoding="utf-8"), re.S)
    found = [block for block in blocks if block.startswith(first_line + "\n")]
    assert len(found) == 1, f"docs/testing.md has {len(found)} blocks starting {first_line!r}"
    return found[0]


def test_the_docs_test_module_and_conftest_pass_without_trio_mode(
    pytester: pytest.Pytester,
) -> None:
    pytester.makeini(NO_TRIO_MODE)
    pytester.makeconftest(docs_block("# conftest.py"))
    pytester.makepyfile(test_my_lanes=docs_block("# test_my_lanes.py"))
    result = pytester.runpytest_subprocess("-q")
    result.assert_outcomes(passed=1)
    assert "pytest-trio" not in result.stdout.str()


def test_the_fixture_checks_the_rules_and_reports_a_broken_test(
    pytester: pytest.Pytester,
) -> None:
    pytester.makeini(NO_TRIO_MODE)
    pytester.makepyfile(
        """
        import trio
        from lanes import LaneConfig

        LANES = (LaneConfig("a", 0, max_concurrency=1),)

        async def test_passes(lane_system, autojump_clock):
            async with lane_system(LANES) as system:
                await system.run("a", trio.sleep, 5)
            assert trio.current_time() == 5
            assert [type(e).__name__ for e in lane_system.log.events][:2] == [
                "Submitted", "Started"
            ]

        async def test_fails(lane_system, autojump_clock):
            async with lane_system(LANES) as system:
                await system.run("a", trio.sleep, 1)
            assert False, "the body ran under trio"

        async def test_without_the_fixture_is_left_alone():
            pass
        """
    )
    result = pytester.runpytest_subprocess("-q", "-p", "no:anyio")
    outcomes = result.parseoutcomes()
    assert outcomes.get("passed") == 1
    assert outcomes.get("failed") == 2
    result.stdout.fnmatch_lines(["*AssertionError: the body ran under trio*"])
    # the plugin marks only the tests that take its fixtures: pytest refuses the others
    result.stdout.fnmatch_lines(
        ["*test_without_the_fixture_is_left_alone*", "async def functions are not natively*"]
    )


def test_hypothesis_tests_that_take_the_fixture_run_under_trio(
    pytester: pytest.Pytester,
) -> None:
    pytester.makeini(NO_TRIO_MODE)
    pytester.makeconftest(docs_block("# conftest.py"))
    pytester.makepyfile(
        """
        import trio
        from hypothesis import given, settings, strategies as st
        from lanes import LaneConfig

        LANES = (LaneConfig("a", 0, max_concurrency=2),)

        @settings(max_examples=5)
        @given(st.integers(1, 4))
        async def test_runs(lane_system, autojump_clock, n):
            start = trio.current_time()
            async with lane_system(LANES) as system:
                for _ in range(n):
                    await system.submit("a", trio.sleep, 1)
            assert trio.current_time() - start == (n + 1) // 2
        """
    )
    result = pytester.runpytest_subprocess("-q")
    result.assert_outcomes(passed=1)


def test_in_trio_mode_nothing_changes(pytester: pytest.Pytester) -> None:
    pytester.makeini(NO_TRIO_MODE + "trio_mode = true\n")
    pytester.makepyfile(
        """
        import trio

        async def test_plain():
            await trio.sleep(0)

        async def test_fixture(lane_system, autojump_clock):
            async with lane_system() as system:
                await system.run("query", trio.sleep, 1)
        """
    )
    pytester.runpytest_subprocess("-q").assert_outcomes(passed=2)
