"""The web console in a real headless browser: the system's Chromium, driven by Playwright.

Hypercorn serves the console in the test's ``trio.run``; Playwright's synchronous API runs in
a worker thread (``trio.to_thread``) and calls back into Trio with ``trio.from_thread`` to
submit commands and read the systems. ``.ci/run`` installs Chromium (Debian's package);
Playwright never downloads a browser of its own.
"""

from __future__ import annotations

import os
import pathlib
import secrets
import shutil
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

import attrs
import pytest
import trio

import lanes
import lanes.web

sync_api = pytest.importorskip("playwright.sync_api")
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
pytestmark = pytest.mark.skipif(CHROMIUM is None, reason="no chromium (.ci/run installs it)")

DOCS_SCREENSHOT = pathlib.Path(__file__).parent.parent / "docs" / "images" / "web-console.png"
# The docs' picture is refreshed only when asked (LANES_UPDATE_SCREENSHOT=1 pytest
# tests/test_web_browser.py), so that a test run leaves the checkout as it was.
UPDATE_SCREENSHOT = os.environ.get("LANES_UPDATE_SCREENSHOT") == "1"
HOSTILE = "<img src=x onerror=window.pwned=1><script>window.pwned=2</script>"
TOKEN = secrets.token_urlsafe(18)
WAIT_MS = 10_000


@asynccontextmanager
async def served(console: lanes.web.LiveConsole) -> AsyncIterator[str]:
    async with trio.open_nursery() as nursery:
        server = await nursery.start(lanes.web.serve_console, console, 0)
        yield server.url
        nursery.cancel_scope.cancel()


async def in_browser(steps: Callable[[Any], None]) -> None:
    """Run ``steps(page)`` with a fresh headless Chromium page, in a worker thread."""

    def run() -> None:
        with sync_api.sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path=CHROMIUM, headless=True)
            try:
                page = browser.new_page(viewport={"width": 1280, "height": 900})
                page.set_default_timeout(WAIT_MS)
                steps(page)
            finally:
                browser.close()

    await trio.to_thread.run_sync(run)


async def blocker(event: trio.Event) -> None:
    await event.wait()


def hostile_job() -> Callable[[trio.Event], Any]:
    async def job(event: trio.Event) -> None:
        await event.wait()

    job.__qualname__ = HOSTILE
    return job


async def fail_once(system: lanes.LaneSystem) -> None:
    async def flaky_upload() -> None:
        raise ConnectionError("upload refused: HTTP 503")

    with pytest.raises(lanes.CommandFailed):
        await system.run("query", flaky_upload)


async def test_page_loads_counts_change_live_and_names_stay_text(
    tmp_path: pathlib.Path,
) -> None:
    console = lanes.web.console(interval=0.2)
    release = trio.Event()
    async with lanes.open_lane_system() as system, served(console) as url:
        console.add(system, label=HOSTILE)
        await system.submit("prompt", hostile_job(), release)

        def steps(page: Any) -> None:
            page.goto(url)
            page.wait_for_function("() => document.getElementById('live').textContent === 'live'")
            assert page.text_content("#tot-systems") == "1"
            assert page.text_content("#systems td.name") == HOSTILE
            assert page.text_content("#tot-active") == "1"
            for _ in range(4):
                trio.from_thread.run(system.submit, "prompt", blocker, release)
            page.wait_for_function(
                "() => document.getElementById('tot-pending').textContent === '3'"
            )
            page.click("#systems tr[data-id]")
            page.wait_for_selector("#running td.name")
            assert page.text_content("#running td.name") == HOSTILE
            page.click("#lanes tr[data-lane='prompt'] button[data-action='queue']")
            page.wait_for_function("() => document.querySelectorAll('#queue tr').length === 3")
            assert page.evaluate("window.pwned") is None
            for _ in range(15):  # some throughput and latency for the chart
                trio.from_thread.run(system.run, "query", trio.sleep, 0.05)
            trio.from_thread.run(fail_once, system)
            page.wait_for_function(
                "() => document.getElementById('letters-total').textContent === '1'"
            )
            page.wait_for_selector("#chart polyline")
            shot = DOCS_SCREENSHOT if UPDATE_SCREENSHOT else tmp_path / "web-console.png"
            page.screenshot(path=str(shot), full_page=True)
            assert shot.stat().st_size > 10_000  # a page was drawn

        await in_browser(steps)
        release.set()


async def test_pause_resume_and_cancel_from_the_page() -> None:
    console = lanes.web.console(token=TOKEN, interval=0.2)
    release = trio.Event()
    async with lanes.open_lane_system() as system, served(console) as url:
        console.add(system, label="session")
        running = await system.submit("prompt", blocker, release)

        def paused() -> bool:
            return trio.from_thread.run_sync(lambda: system.statistics().lanes["prompt"].paused)

        def steps(page: Any) -> None:
            page.goto(f"{url}#token={TOKEN}")
            page.click("#systems tr[data-id]")
            pause = "#lanes tr[data-lane='prompt'] button[data-action='pause']"
            page.click(pause)
            page.wait_for_function(
                "() => document.getElementById('message').textContent.includes('paused')"
            )
            assert paused()
            page.click("#lanes tr[data-lane='prompt'] button[data-action='resume']")
            page.wait_for_selector(pause)
            assert not paused()
            page.click(f"#running button[data-target='{running.id}']")
            page.wait_for_function(
                "() => document.getElementById('running-total').textContent === '0'"
            )

        await in_browser(steps)
        assert running.status == lanes.CommandStatus.CANCELLED
        release.set()


async def test_an_action_without_the_token_is_refused() -> None:
    console = lanes.web.console(token=TOKEN, interval=0.2)
    async with lanes.open_lane_system() as system, served(console) as url:
        sid = console.add(system, label="session")

        def steps(page: Any) -> None:
            page.goto(url)  # no token given
            page.click("#systems tr[data-id]")
            page.click("#lanes tr[data-lane='query'] button[data-action='pause']")
            page.wait_for_function(
                "() => document.getElementById('message').textContent.includes('wrong token')"
            )
            assert page.get_attribute("#message", "class") == "error"
            # A forged request from the page's own origin with the token but no CSRF header:
            status = page.evaluate(
                """async ([sid, token]) => (await fetch("api/systems/" + sid + "/pause", {
                    method: "POST", headers: {"Content-Type": "application/json",
                    "Authorization": "Bearer " + token}, body: '{"target": "query"}'})).status""",
                [sid, TOKEN],
            )
            assert status == 403

        await in_browser(steps)
        assert not system.statistics().lanes["query"].paused


@lanes.command(name="browser-hostile-fails")
@attrs.define
class HostileFails:
    async def execute(self) -> None:
        try:
            raise ValueError(HOSTILE)
        except ValueError as error:  # raised: it has a traceback
            raise lanes.Permanent(error) from None


async def stepper(steps: trio.MemoryReceiveChannel[int]) -> None:
    """Reports progress each time the test sends a step, done after 4."""
    lanes.report_progress(0, 4, message="starting")
    async for step in steps:
        lanes.report_progress(step, 4, message=f"step {step}: {HOSTILE}")
        if step == 4:
            return


async def test_a_letter_shows_its_traceback_and_progress_shows_live(
    tmp_path: pathlib.Path,
) -> None:
    path = str(tmp_path / "lanes.db")
    async with lanes.open_lane_system(storage=path, commands=[HostileFails]) as system:
        with pytest.raises(lanes.CommandFailed):
            await system.run("query", HostileFails())
    console = lanes.web.console(interval=0.2)
    send, receive = trio.open_memory_channel[int](0)
    async with (
        lanes.open_lane_system(storage=path, commands=[HostileFails]) as durable,
        lanes.open_lane_system() as plain,
        served(console) as url,
    ):
        [letter] = durable.dead_letters.list()
        assert letter.traceback is not None  # recovered from the file
        stored = console.add(durable, label="stored")
        running = console.add(plain, label="running")
        handle = await plain.submit("prompt", stepper, receive)

        def steps(page: Any) -> None:
            page.goto(url)
            page.click(f"#systems tr[data-id='{stored}']")
            page.wait_for_selector("#letters details.tb summary")
            assert page.text_content("#letters td.err").startswith(letter.error)
            page.click("#letters details.tb summary")
            shown = page.text_content("#letters details.tb pre")
            assert shown == letter.traceback
            assert HOSTILE in shown and "Traceback (most recent call last)" in shown
            page.wait_for_timeout(600)  # a few live updates: the traceback stays open
            assert page.evaluate("document.querySelector('#letters details.tb').open")
            assert page.evaluate("window.pwned") is None
            page.click(f"#systems tr[data-id='{running}']")
            page.wait_for_function(
                "() => (document.querySelector('#running td.progress') || {}).textContent"
                "?.includes('0 of 4 (0%)')"
            )
            for step in (1, 2, 3):
                trio.from_thread.run(send.send, step)
                page.wait_for_function(
                    "(want) => document.querySelector('#running td.progress')"
                    "?.textContent.includes(want)",
                    arg=f"{step} of 4 ({step * 25}%)",
                )
                assert page.evaluate(
                    "document.querySelector('#running td.progress progress').value"
                ) == pytest.approx(step / 4)
                log = page.text_content("#running td.progress div.muted")
                assert log == f"step {step}: {HOSTILE}"
            assert page.evaluate("window.pwned") is None
            trio.from_thread.run(send.send, 4)
            page.wait_for_function(
                "() => document.getElementById('running-total').textContent === '0'"
            )

        await in_browser(steps)
        await handle.result()
