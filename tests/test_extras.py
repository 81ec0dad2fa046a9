"""A missing optional dependency gives one line saying what to install, right for a checkout."""

from __future__ import annotations

import os
import pathlib
import subprocess
import sys

import pytest

from lanes import _extras

ROOT = pathlib.Path(__file__).resolve().parent.parent


def test_the_hint_in_a_checkout_and_in_an_install(
    tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _extras.checkout_root.cache_clear()
    assert _extras.checkout_root() == ROOT  # the tests run from a checkout
    assert _extras.install_hint("redis").startswith("pip install -e '.[redis]'")
    installed = tmp_path / "site-packages" / "lanes"
    installed.mkdir(parents=True)
    monkeypatch.setattr(_extras, "_PACKAGE_DIR", installed)
    _extras.checkout_root.cache_clear()
    try:
        assert _extras.install_hint("redis") == "pip install 'trio-lanes[redis]'"
        (installed.parent / "pyproject.toml").write_text('[project]\nname = "other"\n')
        _extras.checkout_root.cache_clear()
        assert _extras.checkout_root() is None  # somebody else's project
    finally:
        _extras.checkout_root.cache_clear()


def run_without(modules: list[str], code: str) -> subprocess.CompletedProcess[str]:
    """Run ``code`` with ``modules`` made unimportable (as if not installed)."""
    block = "".join(f"sys.modules[{name!r}] = None\n" for name in modules)
    return subprocess.run(
        [sys.executable, "-c", f"import sys\n{block}{code}"],
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        capture_output=True,
        text=True,
        timeout=120,
    )


RUN_EXAMPLE = "import runpy; runpy.run_path({!r}, run_name='__main__')"


@pytest.mark.parametrize(
    ("example", "missing", "extra"),
    [
        ("observability", "opentelemetry", "prometheus,otel,top"),
        ("observability", "prometheus_client", "prometheus,otel,top"),
        ("property_testing", "hypothesis", "test"),
    ],
)
def test_examples_name_the_missing_extra(example: str, missing: str, extra: str) -> None:
    path = str(ROOT / "examples" / f"{example}.py")
    done = run_without([missing], RUN_EXAMPLE.format(path))
    assert done.returncode == 1
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    assert f"pip install -e '.[{extra}]'" in lines[0]
    assert missing in lines[0]


def test_lanes_top_without_rich() -> None:
    done = run_without(["rich"], "from lanes.__main__ import main; sys.exit(main(['top']))")
    assert done.returncode == 1
    assert done.stderr.strip() == (
        "lanes top needs rich and prometheus_client: " + _extras.install_hint("top")
    )


def test_lanes_worker_without_coredis() -> None:
    code = "from lanes.__main__ import main; sys.exit(main(['worker', '--redis', 'redis://x', "
    code += "'--commands', 'tests.distributed_commands:Step']))"
    done = run_without(["coredis"], code)
    assert done.returncode == 1
    assert "lanes.distributed needs coredis: pip install -e '.[redis]'" in done.stderr
    assert "Traceback" not in done.stderr
