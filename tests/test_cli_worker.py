"""``lanes worker`` finds the user's modules in the current directory and takes lists of
command classes, with errors that name the flag."""

from __future__ import annotations

import os
import pathlib
import shutil
import signal
import subprocess
import sys
from collections.abc import Iterator

import pytest

from lanes import DEFAULT_LANES, LaneConfigError
from lanes._cli_worker import load_commands, load_lanes

ROOT = pathlib.Path(__file__).resolve().parent.parent

TASKS = """
import attrs
import lanes

LANES = (lanes.LaneConfig("jobs", 0, max_concurrency=2),)


@lanes.command(name="resize")
@attrs.define
class Resize:
    path: str

    async def execute(self) -> str:
        return self.path


@lanes.command(name="crop")
@attrs.define
class Crop:
    path: str

    async def execute(self) -> str:
        return self.path


ALL = [Resize, Crop]
NOT_A_COMMAND = int
"""


@pytest.fixture
def project(tmp_path: pathlib.Path) -> pathlib.Path:
    """A user's project directory holding ``myapp/tasks.py``."""
    package = tmp_path / "project" / "myapp"
    package.mkdir(parents=True)
    (package / "__init__.py").write_text("")
    (package / "tasks.py").write_text(TASKS)
    return package.parent


@pytest.fixture
def on_path(project: pathlib.Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[pathlib.Path]:
    monkeypatch.syspath_prepend(str(project))
    yield project
    for name in [m for m in sys.modules if m == "myapp" or m.startswith("myapp.")]:
        del sys.modules[name]


def console_script(directory: pathlib.Path) -> pathlib.Path:
    """A stand-in for the installed ``lanes`` script: its own directory is ``sys.path[0]``,
    not the current directory (as for any console script)."""
    directory.mkdir()
    script = directory / "lanes"
    script.write_text("import sys\nfrom lanes.__main__ import main\nsys.exit(main())\n")
    return script


def run_script(script: pathlib.Path, cwd: pathlib.Path, *args: str) -> subprocess.Popen[str]:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.Popen(
        [sys.executable, str(script), "worker", *args],
        cwd=cwd,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


@pytest.mark.skipif(shutil.which("redis-server") is None, reason="needs redis-server")
@pytest.mark.parametrize(
    "commands",
    [
        ["--commands", "myapp.tasks:Resize", "--commands", "myapp.tasks:Crop"],
        ["--commands", "myapp.tasks:Resize,myapp.tasks:Crop"],
        ["--commands", "myapp.tasks:ALL"],
    ],
)
def test_worker_imports_from_the_current_directory(
    project: pathlib.Path, tmp_path: pathlib.Path, commands: list[str]
) -> None:
    from lanes.distributed import local_redis_server

    script = console_script(tmp_path / "bin")
    with local_redis_server() as server:
        args = ["--redis", server.url, *commands, "--lanes", "myapp.tasks:LANES"]
        process = run_script(script, project, *args)
        try:
            assert process.stdout is not None
            line = process.stdout.readline()
            assert "serving" in line, process.stderr.read() if process.stderr else ""
        finally:
            process.send_signal(signal.SIGTERM)
            _, err = process.communicate(timeout=20)
    assert process.returncode == 0, err


def test_worker_reports_a_missing_module_naming_the_flag(
    project: pathlib.Path, tmp_path: pathlib.Path
) -> None:
    script = console_script(tmp_path / "bin")
    process = run_script(
        script, project, "--redis", "redis://127.0.0.1:1", "--commands", "myapp.nope:Resize"
    )
    _, err = process.communicate(timeout=30)
    assert process.returncode == 1
    assert "--commands 'myapp.nope:Resize': cannot import 'myapp.nope'" in err
    assert "Traceback" not in err


def test_commands_accept_repeated_flags_comma_lists_and_list_attributes(
    on_path: pathlib.Path,
) -> None:
    from myapp.tasks import Crop, Resize  # type: ignore[import-not-found]

    assert load_commands(["myapp.tasks:Resize", "myapp.tasks:Crop"]) == [Resize, Crop]
    assert load_commands(["myapp.tasks:Resize, myapp.tasks:Crop"]) == [Resize, Crop]
    assert load_commands(["myapp.tasks:ALL", "myapp.tasks:Resize"]) == [Resize, Crop]


@pytest.mark.parametrize(
    ("values", "message"),
    [
        (["myapp.tasks"], "--commands 'myapp.tasks' is invalid; expected MODULE:NAME"),
        (["myapp.tasks:Nope"], "--commands 'myapp.tasks:Nope': module 'myapp.tasks' has no"),
        (["myapp.tasks:NOT_A_COMMAND"], "--commands 'myapp.tasks:NOT_A_COMMAND' names <class"),
        (["myapp.tasks:LANES"], "names a LaneConfig (LaneConfig(name='jobs', priority=0, max_"),
        ([","], "--commands names no command class"),
    ],
)
def test_bad_commands_name_the_flag(on_path: pathlib.Path, values: list[str], message: str) -> None:
    with pytest.raises(LaneConfigError) as info:
        load_commands(values)
    assert message in str(info.value)
    assert "open_lane_system" not in str(info.value)


def test_lanes_flag(on_path: pathlib.Path) -> None:
    from myapp.tasks import LANES

    assert load_lanes(None) == DEFAULT_LANES
    assert load_lanes("myapp.tasks:LANES") == LANES
    with pytest.raises(LaneConfigError, match=r"--lanes 'myapp.tasks:ALL' names \["):
        load_lanes("myapp.tasks:ALL")
